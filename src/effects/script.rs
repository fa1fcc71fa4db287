//! The hook scripts a dkms.conf names (PRE_BUILD, POST_BUILD, PRE_INSTALL, POST_INSTALL,
//! POST_REMOVE): run the way DKMS runs them — a path relative to the build or source directory
//! whose first word must be executable, word-split arguments, started in that directory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::base::error::{Error, IoContext, Result};
use crate::system::console::Console;

/// Environment variables DKMS unsets before building (they would override kbuild's choices).
pub const SCRUBBED_ENV: [&str; 5] = ["CC", "CXX", "CFLAGS", "CXXFLAGS", "LDFLAGS"];

/// Where a script's output goes.
pub enum Output<'a> {
    /// Appended to a log file (build scripts, as upstream DKMS does).
    Log(&'a File),
    /// Shown live on stderr (install and remove scripts), hidden by `-q`.
    Console,
}

/// A script named by a dkms.conf directive.
pub struct Script<'a> {
    /// `pre_build`, `post_install`, ... as DKMS names it in messages.
    pub kind: &'a str,
    /// The directive's value: `path [args...]`, relative to `dir`.
    pub line: &'a str,
    /// The build copy (build scripts) or the source directory (the others).
    pub dir: &'a Path,
    /// The dkms.conf it comes from, for errors.
    pub conf: &'a Path,
}

impl Script<'_> {
    /// The program and its arguments; refuses a program path that leaves `dir`.
    pub fn argv(&self) -> Result<(PathBuf, Vec<String>)> {
        let mut words = self.line.split_whitespace();
        let program = words.next().unwrap_or("");
        let rel = program.trim_start_matches('/');
        if rel.is_empty() || rel.split('/').any(|c| c == "..") {
            return Err(Error::PathEscape {
                file: self.conf.to_path_buf(),
                what: self.kind.to_uppercase(),
                value: self.line.to_string(),
            });
        }
        Ok((self.dir.join(rel), words.map(str::to_string).collect()))
    }

    /// Runs the script. Returns `None` when it is not executable (DKMS warns and goes on),
    /// otherwise its exit status (`-1` when killed by a signal).
    pub fn run(&self, out: Output<'_>, console: &Console) -> Result<Option<i32>> {
        self.run_as(out, console, &|_| {})
    }

    /// [`Script::run`] with the command adjusted by the build first (its user, its process
    /// marker).
    pub fn run_as(
        &self,
        out: Output<'_>,
        console: &Console,
        prepare: &dyn Fn(&mut Command),
    ) -> Result<Option<i32>> {
        let (program, args) = self.argv()?;
        if !is_executable(&program) {
            console.say("");
            console.warn(format!("The {} script is not executable.", self.kind));
            return Ok(None);
        }
        let logged = matches!(out, Output::Log(_));
        if !logged {
            console.say(format!("Running the {} script:", self.kind));
        }
        console.command(format!("cd {} && {}", self.dir.display(), self.line));
        let mut cmd = Command::new(&program);
        cmd.args(&args).current_dir(self.dir).stdin(Stdio::null());
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
        prepare(&mut cmd);
        match out {
            Output::Log(file) => {
                cmd.stdout(file.try_clone().ctx("duplicate log handle", &program)?);
                cmd.stderr(file.try_clone().ctx("duplicate log handle", &program)?);
            }
            Output::Console if console.quiet => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
            Output::Console => {
                cmd.stdout(std::io::stderr()).stderr(Stdio::inherit());
            }
        }
        let status = cmd.status().ctx("run", &program)?;
        let code = status.code().unwrap_or(-1);
        // A logged (build) script is one framed step, as DKMS shows it; the line is written
        // whole afterwards so that concurrent builds cannot tear it.
        if logged {
            let end = match code {
                0 => " done.".to_string(),
                c => format!("(bad exit status: {c})"),
            };
            console.say(format!("Running the {} script...{end}", self.kind));
        }
        Ok(Some(code))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_paths_stay_in_their_directory() {
        let s = |line| Script {
            kind: "pre_build",
            line,
            dir: Path::new("/b"),
            conf: Path::new("/s/dkms.conf"),
        };
        let (p, args) = s("./configure --x=1 y").argv().unwrap();
        assert_eq!(p, PathBuf::from("/b/./configure"));
        assert_eq!(args, vec!["--x=1", "y"]);
        assert_eq!(s("/abs/x").argv().unwrap().0, PathBuf::from("/b/abs/x"));
        assert_eq!(s("../x").argv().unwrap_err().exit_code(), 8);
        assert!(s("a/../../x").argv().is_err());
    }
}
