//! The exact evaluator: runs bash with DKMS's own `safe_source` construction (subshell, stdout
//! discarded, whitelist echoed back as `NAME[i]="value"` and sourced again), bounded in time.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::base::error::{Error, Result};
use crate::conf::{Directives, EvalContext};

/// How long one evaluation may run before it is killed (a conf with an endless loop).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The driver script. Positional parameters: number of files, the files, then the names.
/// For each file: unset nothing (DKMS unsets once before the first file), source it in a
/// subshell with stdout discarded, echo the whitelist back the way DKMS does (unquoted, so
/// word splitting collapses whitespace), and evaluate that text in this shell. At the end,
/// print every element as NAME NUL INDEX NUL VALUE NUL on the original stdout (fd 3), which
/// nothing the conf runs can write to. It is one function so that a syntax error in the
/// echoed text (a value ending in a backslash) cannot derail parsing of the driver itself.
const DRIVER: &str = r#"
__rdkms_main() {
exec 3>&1 >/dev/null
__rdkms_n=$1; shift
__rdkms_files=("${@:1:$__rdkms_n}"); shift "$__rdkms_n"
__rdkms_names=("$@")
for __rdkms_v in "${__rdkms_names[@]}"; do unset "$__rdkms_v"; done
for __rdkms_f in "${__rdkms_files[@]}"; do
    __rdkms_out=$(
        . "$__rdkms_f" >/dev/null 3>&-
        for _export_env in "${__rdkms_names[@]}"; do
            for _i in $(eval echo \${!$_export_env[@]}); do
                eval echo '$_export_env[$_i]=\"${'$_export_env'[$_i]}\"'
            done
        done
    )
    eval "$__rdkms_out"
done
for __rdkms_v in "${__rdkms_names[@]}"; do
    eval '__rdkms_idx=("${!'"$__rdkms_v"'[@]}")'
    for __rdkms_i in "${__rdkms_idx[@]}"; do
        eval '__rdkms_val=${'"$__rdkms_v"'[$__rdkms_i]}'
        printf '%s\0%s\0%s\0' "$__rdkms_v" "$__rdkms_i" "$__rdkms_val" >&3
    done
done
}
__rdkms_main "$@"
"#;

/// Environment variable overriding [`DEFAULT_TIMEOUT`], in seconds (tests use 1).
pub const TIMEOUT_ENV: &str = "RDKMS_CONF_TIMEOUT";

/// Evaluates `files` in order with bash, keeping `names`; values get a trailing CR stripped.
/// The time limit is [`DEFAULT_TIMEOUT`] unless `RDKMS_CONF_TIMEOUT` gives one in seconds.
/// What the files write to stderr is passed on, as DKMS does.
pub fn evaluate(files: &[PathBuf], names: &[&str], ctx: &EvalContext) -> Result<Directives> {
    let (directives, stderr) = evaluate_captured(files, names, ctx, timeout_from_env()?)?;
    let _ = std::io::Write::write_all(&mut std::io::stderr(), stderr.as_bytes());
    Ok(directives)
}

/// The time limit from `RDKMS_CONF_TIMEOUT` (seconds, fractions allowed), else the default.
pub fn timeout_from_env() -> Result<Duration> {
    let Some(raw) = std::env::var_os(TIMEOUT_ENV) else {
        return Ok(DEFAULT_TIMEOUT);
    };
    let raw = raw.to_string_lossy();
    raw.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 86_400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            Error::Usage(format!(
                "{TIMEOUT_ENV}='{raw}' is not a number of seconds; set it to e.g. 10 or unset it"
            ))
        })
}

/// [`evaluate`] with an explicit time limit, returning what the files wrote to stderr instead
/// of passing it on (a failure summarises its first line in the one-line error).
pub fn evaluate_captured(
    files: &[PathBuf],
    names: &[&str],
    ctx: &EvalContext,
    timeout: Duration,
) -> Result<(Directives, String)> {
    let files: Vec<PathBuf> = files
        .iter()
        .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone()))
        .collect();
    let first = files.first().cloned().unwrap_or_default();
    for f in &files {
        check_syntax(f)?;
    }
    let mut script = String::new();
    for (name, value) in &ctx.vars {
        script.push_str(name);
        script.push('=');
        script.push_str(&shell_quote(value));
        script.push('\n');
    }
    script.push_str(DRIVER);

    let mut cmd = Command::new("bash");
    cmd.arg("--noprofile")
        .arg("--norc")
        .arg("-c")
        .arg(&script)
        .arg("rdkms-conf")
        .arg(files.len().to_string())
        .args(&files)
        .args(names)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        )
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if ctx.cwd.as_os_str().is_empty() {
        cmd.current_dir("/");
    } else {
        cmd.current_dir(&ctx.cwd);
    }
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|e| Error::ConfEval {
        file: first.clone(),
        problem: format!("cannot run bash: {e}"),
        fix: "install bash".into(),
    })?;
    let reader_thread = drain(child.stdout.take());
    let stderr_thread = drain(child.stderr.take());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| Error::io("wait for bash evaluating", &first, e))?
        {
            break status;
        }
        if start.elapsed() > timeout {
            kill_group(child.id());
            let _ = child.wait();
            let _ = reader_thread.join();
            let _ = stderr_thread.join();
            return Err(Error::ConfEval {
                file: first,
                problem: format!(
                    "evaluation did not finish within {} s (limit set by {TIMEOUT_ENV})",
                    timeout.as_secs_f64()
                ),
                fix: "remove the endless loop or blocking command from the file".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    // Background jobs started by the conf may still hold the pipe: end them.
    kill_group(child.id());
    let out = reader_thread.join().unwrap_or_default();
    let err = stderr_thread.join().unwrap_or_default();
    if !status.success() {
        let text = String::from_utf8_lossy(&err);
        let first_line = text.lines().map(str::trim).find(|l| !l.is_empty());
        return Err(Error::ConfEval {
            file: first,
            problem: match first_line {
                Some(l) => format!("bash exited with {status}: {l}"),
                None => format!("bash exited with {status}"),
            },
            fix: "run `bash -n` on the file and fix the reported error".into(),
        });
    }
    Ok((
        parse_output(&out, &first)?,
        String::from_utf8_lossy(&err).into_owned(),
    ))
}

/// Reads a child's pipe to the end on a thread (so neither pipe can fill up and block bash).
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// Refuses a file bash cannot parse, naming the line, before anything in it runs.
fn check_syntax(file: &Path) -> Result<()> {
    let out = Command::new("bash")
        .arg("-n")
        .arg(file)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::ConfEval {
            file: file.to_path_buf(),
            problem: format!("cannot run bash: {e}"),
            fix: "install bash".into(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let msg = String::from_utf8_lossy(&out.stderr);
    let line = msg.lines().next().unwrap_or("syntax error").trim();
    let line = line
        .strip_prefix(&format!("{}: ", file.display()))
        .unwrap_or(line);
    Err(Error::ConfEval {
        file: file.to_path_buf(),
        problem: format!("bash syntax error: {line}"),
        fix: "correct the quoting or shell syntax at that line".into(),
    })
}

fn parse_output(out: &[u8], file: &Path) -> Result<Directives> {
    let mut d = Directives::default();
    let mut fields = out.split(|&b| b == 0);
    while let Some(name) = fields.next() {
        if name.is_empty() {
            break;
        }
        let (Some(idx), Some(value)) = (fields.next(), fields.next()) else {
            return Err(Error::ConfEval {
                file: file.to_path_buf(),
                problem: "truncated evaluation output".into(),
                fix: "report this as a bug in rdkms".into(),
            });
        };
        let name = String::from_utf8_lossy(name);
        let idx: usize = String::from_utf8_lossy(idx).parse().unwrap_or(0);
        let mut value = String::from_utf8_lossy(value).into_owned();
        if value.ends_with('\r') {
            value.pop();
        }
        d.set(&name, idx, value);
    }
    Ok(d)
}

/// Single-quotes a value for bash.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

fn kill_group(pid: u32) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}
