//! The processes of one private build, found after rdkms itself is gone. make, the patches and
//! the build scripts start with `RDKMS_BUILD=<private dir>` in their environment, which every
//! descendant inherits (a shell's `cmd &` loses its standard input but not its environment).
//! When rdkms is killed, its make and compilers go on writing into the directory: the next
//! command (under the tree lock, so no live rdkms owns a build) kills them and only then
//! removes the directory, which would otherwise reappear or keep changing under it.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The variable that marks a build's processes.
const VAR: &str = "RDKMS_BUILD";

/// How long the next command keeps killing a dead build's processes (they may still fork).
const DRAIN: Duration = Duration::from_secs(10);

/// Marks `cmd`, and so everything it starts, as a process of the build in `dir`.
pub fn mark(cmd: &mut Command, dir: &Path) {
    cmd.env(VAR, canonical(dir));
}

/// One spelling of `dir`, whatever `--root` the command was given.
fn canonical(dir: &Path) -> std::path::PathBuf {
    fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Removes the private build directory `dir` that a killed command left, after killing the
/// processes of that build. Returns false when some were still found after [`DRAIN`]: the
/// directory is then left for a later command.
pub fn clear(dir: &Path) -> bool {
    let entry = format!("{VAR}={}", canonical(dir).display()).into_bytes();
    let deadline = Instant::now() + DRAIN;
    while kill_marked(&entry) > 0 {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    fs::remove_dir_all(dir).is_ok()
}

/// Sends SIGKILL to every process whose environment holds `entry`; returns how many it found
/// (a killed process counts until its parent, or init, reaps it).
fn kill_marked(entry: &[u8]) -> usize {
    let Ok(procs) = fs::read_dir("/proc") else {
        return 0;
    };
    let me = std::process::id();
    let mut found = 0;
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(environ) = fs::read(p.path().join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|e| e == entry) {
            found += 1;
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    found
}
