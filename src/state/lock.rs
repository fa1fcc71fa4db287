//! One exclusive lock per dkms tree, so two mutating rdkms commands never interleave their
//! writes (DKMS has none, which is how two `dkms autoinstall` runs break each other).
//! Readers (`status`) never take it: writers stage and rename, so every read sees a whole state.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::base::error::{Error, IoContext, Result};
use crate::system::config::Paths;
use crate::system::console::Console;

/// How long a command waits for the lock unless told otherwise (`--lock-timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// How long `kernel_prerm` and `kernel_preinst` hooks wait unless told otherwise: their work
/// (clearing a leaving kernel's modules) can wait for apt's next reconcile, while the kernel's
/// package should not wait for a long build to finish.
pub const REMOVAL_HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// Name of the lock file inside the dkms tree (hidden from DKMS's `*` globs).
pub const LOCK_FILE: &str = ".rdkms.lock";

/// The held lock; released when dropped (or when the process dies: it is an flock).
#[derive(Debug)]
pub struct TreeLock {
    file: Flock<File>,
    path: PathBuf,
}

impl TreeLock {
    /// Takes the tree's lock, waiting at most `timeout`. While waiting it says once on stderr
    /// who holds it. The lock file then records this process's pid and command line.
    pub fn acquire(paths: &Paths, timeout: Duration) -> Result<TreeLock> {
        let path = Self::path(paths);
        std::fs::create_dir_all(&paths.dkms_tree).ctx("create", &paths.dkms_tree)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .ctx("open", &path)?;
        let start = Instant::now();
        let mut told = false;
        let mut pause = Duration::from_millis(10);
        // nix's flock rather than `File::try_lock`, which needs Rust 1.89 (Debian 13 has 1.85).
        let mut file = loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(locked) => break locked,
                Err((_, e)) if e != Errno::EWOULDBLOCK => {
                    return Err(Error::io("lock", &path, e.into()))
                }
                Err((mut unlocked, _)) => {
                    let waited = start.elapsed();
                    if waited >= timeout {
                        return Err(Error::LockTimeout {
                            holder: holder(&mut unlocked),
                            path,
                            waited_secs: waited.as_secs(),
                        });
                    }
                    // A holder that recorded nothing is a `ReadLock`, gone in a moment.
                    if !told && holder_record(&mut unlocked).is_some() {
                        Console::default().say(format!(
                            "rdkms: waiting for {} (held by {})",
                            path.display(),
                            holder(&mut unlocked)
                        ));
                        told = true;
                    }
                    std::thread::sleep(pause.min(timeout - waited));
                    pause = (pause * 2).min(Duration::from_millis(250));
                    file = unlocked;
                }
            }
        };
        record_holder(&mut file).ctx("write", &path)?;
        Ok(TreeLock { file, path })
    }

    /// `<dkmstree>/.rdkms.lock`.
    pub fn path(paths: &Paths) -> PathBuf {
        paths.dkms_tree.join(LOCK_FILE)
    }

    /// The lock file this lock holds.
    pub fn file_path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TreeLock {
    fn drop(&mut self) {
        // Clear the holder record while still holding the lock; the flock goes with the fd.
        let _ = self.file.set_len(0);
    }
}

/// A shared hold on the tree's lock, for a command that first reads and plans and changes
/// nothing unless it has work: no `TreeLock` holder can be half-way through a change while it
/// is held. It writes nothing to the lock file, so the apt fingerprint (which watches that
/// file) stays valid.
#[derive(Debug)]
pub struct ReadLock {
    _file: Flock<File>,
}

impl ReadLock {
    /// Takes the shared lock without waiting; None when a writer holds the lock or the lock
    /// file does not exist yet (the caller then takes the `TreeLock`).
    pub fn try_acquire(paths: &Paths) -> Option<ReadLock> {
        let file = File::open(TreeLock::path(paths)).ok()?;
        let file = Flock::lock(file, FlockArg::LockSharedNonblock).ok()?;
        Some(ReadLock { _file: file })
    }
}

/// The lock timeout from `--lock-timeout SECONDS` (or `RDKMS_LOCK_TIMEOUT`).
pub fn timeout(seconds: Option<u64>) -> Duration {
    seconds.map(Duration::from_secs).unwrap_or(DEFAULT_TIMEOUT)
}

/// Replaces the lock file's content with "pid N: command line".
fn record_holder(file: &mut File) -> std::io::Result<()> {
    let cmdline: Vec<String> = std::env::args().collect();
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    writeln!(file, "pid {}: {}", std::process::id(), cmdline.join(" "))?;
    file.sync_data()
}

/// What the lock file says about its holder, for messages.
fn holder(file: &mut File) -> String {
    holder_record(file).unwrap_or_else(|| "an unknown process".to_string())
}

/// The holder's "pid N: command line", if one is recorded.
fn holder_record(file: &mut File) -> Option<String> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_string(&mut text))
        .ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_times_out_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let held = TreeLock::acquire(&paths, Duration::from_secs(1)).unwrap();
        let content = std::fs::read_to_string(held.file_path()).unwrap();
        assert!(content.starts_with(&format!("pid {}:", std::process::id())));
        let err = TreeLock::acquire(&paths, Duration::from_millis(200)).unwrap_err();
        assert_eq!(err.exit_code(), 75);
        assert!(err
            .to_string()
            .contains(&format!("pid {}", std::process::id())));
        drop(held);
        let again = TreeLock::acquire(&paths, Duration::from_millis(200)).unwrap();
        drop(again);
        assert_eq!(std::fs::read_to_string(TreeLock::path(&paths)).unwrap(), "");
    }

    #[test]
    fn waiter_gets_the_lock_when_the_holder_releases_it() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let held = TreeLock::acquire(&paths, Duration::from_secs(1)).unwrap();
        let p2 = paths.clone();
        let waiter = std::thread::spawn(move || {
            let t = Instant::now();
            let lock = TreeLock::acquire(&p2, Duration::from_secs(10)).map(|_| ());
            (lock, t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
        let (lock, waited) = waiter.join().unwrap();
        lock.unwrap();
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
    }
}
