//! External tools rdkms relies on instead of reimplementing them (dpkg-deb, gzip, xz, md5sum):
//! run with captured output, so a failure becomes one error line naming the tool and its message.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::base::error::{Error, Result};

/// The program name of a command, for messages.
fn program(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

/// Turns a finished command into its output, or an error quoting the last line it printed.
fn checked(cmd: &Command, output: Output) -> Result<Output> {
    if output.status.success() {
        return Ok(output);
    }
    let text = String::from_utf8_lossy(&output.stderr);
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message")
        .trim()
        .to_string();
    Err(Error::ToolFailed {
        tool: program(cmd),
        status: output
            .status
            .code()
            .map_or_else(|| "killed by a signal".to_string(), |c| format!("exit {c}")),
        message: last,
    })
}

/// Error for a tool that could not be started at all (usually: not installed).
fn not_started(cmd: &Command, e: std::io::Error) -> Error {
    Error::ToolFailed {
        tool: program(cmd),
        status: "not started".into(),
        message: format!("{e}; install the package that provides it"),
    }
}

/// Runs `cmd` to completion with stdin closed and output captured.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| not_started(cmd, e))?;
    checked(cmd, output)
}

/// Runs `cmd` as a filter: `input` on its stdin, its stdout returned. The input is written from
/// a second thread so that a filter which answers before reading everything cannot deadlock.
pub fn filter(cmd: &mut Command, input: Vec<u8>) -> Result<Vec<u8>> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| not_started(cmd, e))?;
    let mut stdin = child.stdin.take();
    let writer = std::thread::spawn(move || match stdin.as_mut() {
        Some(s) => s.write_all(&input),
        None => Ok(()),
    });
    let output = child.wait_with_output().map_err(|e| not_started(cmd, e))?;
    let written = writer.join().unwrap_or(Ok(()));
    let output = checked(cmd, output)?;
    written.map_err(|e| Error::ToolFailed {
        tool: program(cmd),
        status: "input refused".into(),
        message: e.to_string(),
    })?;
    Ok(output.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_round_trips_through_a_tool() {
        let out = filter(&mut Command::new("tr"), b"abc".to_vec());
        // `tr` without operands fails: the error names the tool and its message.
        let err = out.unwrap_err().to_string();
        assert!(err.contains("tr"), "{err}");
        let out = filter(Command::new("tr").args(["a-z", "A-Z"]), b"abc".to_vec()).unwrap();
        assert_eq!(out, b"ABC");
    }

    #[test]
    fn missing_program_is_reported_as_not_started() {
        let err = run(&mut Command::new("/nonexistent/rdkms-tool")).unwrap_err();
        assert!(err.to_string().contains("not started"), "{err}");
    }
}
