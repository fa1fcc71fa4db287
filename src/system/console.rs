//! Human output of the mutating commands: DKMS-like progress lines on stderr, silenced by `-q`,
//! with the exact commands shown under `--verbose`. Kept apart so the engine never prints directly.

use std::cell::RefCell;
use std::io::Write;

thread_local! {
    /// The description of a step begun while progress lines are drawn (see `Console::begin`).
    static PENDING: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Where progress messages go and how chatty they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct Console {
    pub quiet: bool,
    pub verbose: bool,
    /// The signing lines and the empty line after them were printed already: DKMS's
    /// autoinstall prepares signing once per kernel, not once per module it builds.
    pub signing_shown: bool,
}

impl Console {
    /// A console for commands without `-v` (add, packaging), quiet with `-q`.
    pub fn plain(quiet: bool) -> Console {
        Console {
            quiet,
            verbose: false,
            signing_shown: false,
        }
    }

    /// One line of progress, in one write (stderr is unbuffered, and `writeln!` would write
    /// the text and its newline apart: twice the syscalls when a hook uninstalls hundreds of
    /// modules, and a torn line next to concurrent output).
    pub fn say(&self, line: impl AsRef<str>) {
        if !self.quiet {
            let line = line.as_ref();
            let mut text = String::with_capacity(line.len() + 1);
            text.push_str(line);
            text.push('\n');
            crate::system::progress::write_stderr(&text);
        }
    }

    /// A command line, shown only with `--verbose`.
    pub fn command(&self, line: impl AsRef<str>) {
        if self.verbose {
            self.say(line);
        }
    }

    /// A `Warning: ...` line.
    pub fn warn(&self, line: impl AsRef<str>) {
        self.say(format!("Warning: {}", line.as_ref()));
    }

    /// An `Error! ...` line for a failure that does not end the command (e.g. one kernel of
    /// several), after an empty line as DKMS prints every error; always printed unless `-q`.
    pub fn error(&self, line: impl AsRef<str>) {
        self.say(format!("\nError! {}", line.as_ref()));
    }

    /// [`Console::error`] for `e`, after what DKMS lists before such an error as `dkms` (each
    /// problem of a bad dkms.conf).
    pub fn fail(&self, e: &crate::base::error::Error) {
        if crate::base::persona::as_dkms() {
            e.findings().iter().for_each(|l| self.say(l));
        }
        self.error(e.to_string());
    }

    /// Starts a step printed as `Description...` and finished by [`Console::done`].
    /// While progress lines are drawn the step is printed whole when it ends, as one line.
    pub fn begin(&self, description: impl AsRef<str>) {
        if crate::system::progress::active() {
            PENDING.with(|p| *p.borrow_mut() = Some(description.as_ref().to_string()));
        } else if !self.quiet {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "{}...", description.as_ref());
            let _ = err.flush();
        }
    }

    /// Ends a step started by [`Console::begin`] with ` done.` or the bad exit status.
    pub fn done(&self, status: Option<i32>) {
        let begun = PENDING
            .with(|p| p.borrow_mut().take())
            .map(|d| format!("{d}..."))
            .unwrap_or_default();
        match status {
            None | Some(0) => self.say(format!("{begun} done.")),
            Some(code) => self.say(format!("{begun}(bad exit status: {code})")),
        }
    }
}
