//! Live progress of running builds, on a terminal only: one line per running build with the
//! module, kernel and elapsed time, so a long make is visibly alive and concurrent builds in a
//! reconcile show which modules are building. Off on a non-terminal, with `-q` and in hooks;
//! then output is exactly the plain DKMS-like lines.

use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cmd::cli::Cli;

/// The display, when this process shows one (decided once, before any output).
static DISPLAY: OnceLock<Option<MultiProgress>> = OnceLock::new();

/// Decides whether this command shows progress: stderr is a terminal, the terminal is not
/// `dumb`, and neither `-q` nor a hook run (`--hook`, `--from-apt`) asked for silence.
pub fn init(cli: &Cli) {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("TERM").is_some_and(|t| t != "dumb");
    let enabled = terminal && !cli.quiet && !cli.hook && !cli.from_apt;
    let _ = DISPLAY.set(
        enabled.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10))),
    );
}

fn display() -> Option<&'static MultiProgress> {
    DISPLAY.get().and_then(Option::as_ref)
}

/// Whether progress lines are being drawn (framed steps then print whole lines).
pub fn active() -> bool {
    display().is_some()
}

/// Writes `text` (whole lines) to stderr without tearing the progress lines.
pub fn write_stderr(text: &str) {
    let write = || {
        let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
    };
    match display() {
        Some(multi) => multi.suspend(write),
        None => write(),
    }
}

/// One running build's line; removed when dropped.
pub struct Line(Option<ProgressBar>);

/// Starts a line `⠋ building NAME/VERSION for KERNEL (ARCH)  00:00:12`, if progress is shown.
pub fn building(module: &str, version: &str, kernel: &str, arch: &str) -> Line {
    let Some(multi) = display() else {
        return Line(None);
    };
    let style = ProgressStyle::with_template("{spinner} building {msg}  {elapsed_precise}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bar = multi.add(
        ProgressBar::new_spinner()
            .with_style(style)
            .with_message(format!("{module}/{version} for {kernel} ({arch})")),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    Line(Some(bar))
}

impl Drop for Line {
    fn drop(&mut self) {
        if let (Some(bar), Some(multi)) = (self.0.take(), display()) {
            bar.finish_and_clear();
            multi.remove(&bar);
        }
    }
}
