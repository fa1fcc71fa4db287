//! Entry point: parse argv, run the library, turn errors into one line and an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    // apt's Post-Invoke no-op must cost almost nothing: decide it before parsing anything.
    if rdkms::state::fingerprint::apt_noop(std::env::args_os().skip(1)) {
        return ExitCode::SUCCESS;
    }
    clap_complete::CompleteEnv::with_factory(rdkms::cmd::help::command)
        .var(rdkms::cmd::manpage::COMPLETE_VAR)
        .complete();
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if let Some(code) =
        rdkms::cmd::manpage::handle(&args).or_else(|| rdkms::cmd::help::handle(&args))
    {
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    let cli = match <rdkms::cmd::cli::Cli as clap::Parser>::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            eprintln!("Error! {}", rdkms::cmd::cli::usage_line(&e));
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let result = rdkms::cmd::cli::Invocation::from_cli(cli)
        .and_then(rdkms::run)
        .map_err(rdkms::Error::for_user);
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) if e.is_warning() => {
            eprintln!("Warning: {e}");
            ExitCode::from(e.exit_code().clamp(0, 255) as u8)
        }
        Err(e) => {
            // DKMS lists what it found wrong, then an empty line before its error; rdkms's own
            // error is one line (and its hints say what it found).
            if rdkms::base::persona::as_dkms() {
                e.findings().iter().for_each(|l| eprintln!("{l}"));
                eprintln!();
            }
            eprintln!("Error! {e}");
            if let Some(hint) = e.hint().filter(|_| !rdkms::base::persona::as_dkms()) {
                eprintln!("{hint}");
            }
            ExitCode::from(e.exit_code().clamp(0, 255) as u8)
        }
    }
}
