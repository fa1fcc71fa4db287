//! Initramfs regeneration for boot-critical (REMAKE_INITRD) modules: recorded durably before
//! the modules are installed, run once per kernel after all of them, retried by the next run
//! when a run was killed in between, and never run against the wrong system.
//!
//! Sandbox roots (`--root` other than `/`): the tool is taken from `PATH` only if it lives
//! inside the root (a test stub, or the tool of a mounted image); the host's own
//! `update-initramfs` is never run for a sandbox kernel. It is run directly (not chrooted) with
//! `RDKMS_ROOT` set; to regenerate the initramfs of a real mounted system, run rdkms inside
//! `chroot` instead of using `--root`.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::base::error::{Error, Result};
use crate::state::journal::Marks;
use crate::system::config::Paths;

/// Directory in the dkms tree holding one empty file per kernel with a pending update.
pub const PENDING_DIR: &str = ".rdkms-initramfs-pending";

fn marks(paths: &Paths) -> Marks {
    Marks::keeping_dir(&paths.dkms_tree, PENDING_DIR)
}

/// Kernels whose initramfs update was recorded and not yet done.
pub fn pending(paths: &Paths) -> BTreeSet<String> {
    marks(paths).pending()
}

/// Records (and syncs to disk) that `kernel` needs a new initramfs, before its modules change.
pub fn record(paths: &Paths, kernel: &str) -> Result<()> {
    marks(paths).record(kernel)
}

/// Forgets a recorded update (done, or no longer needed). The directory stays, so the dkms
/// tree directory (watched by the fingerprint) does not change.
pub fn clear(paths: &Paths, kernel: &str) -> Result<()> {
    marks(paths).clear(kernel)
}

/// True when a kernel's own `postinst.d` initramfs hook (initramfs-tools or dracut) runs after
/// ours, so `kernel_postinst` leaves the initramfs of that kernel to it.
pub fn kernel_hook_follows(paths: &Paths) -> bool {
    ["initramfs-tools", "dracut"]
        .iter()
        .any(|n| paths.system("/etc/kernel/postinst.d").join(n).exists())
}

/// The initramfs generator of the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tool {
    /// Debian's initramfs-tools: `update-initramfs -u -k K`.
    UpdateInitramfs(PathBuf),
    /// `dracut -f --kver K`.
    Dracut(PathBuf),
}

impl Tool {
    fn command(&self, kernel: &str) -> Command {
        match self {
            Tool::UpdateInitramfs(p) => {
                let mut c = Command::new(p);
                c.args(["-u", "-k", kernel]);
                c
            }
            Tool::Dracut(p) => {
                let mut c = Command::new(p);
                c.args(["-f", "--kver", kernel]);
                c
            }
        }
    }

    /// The command line, for messages.
    pub fn describe(&self, kernel: &str) -> String {
        match self {
            Tool::UpdateInitramfs(_) => format!("update-initramfs -u -k {kernel}"),
            Tool::Dracut(_) => format!("dracut -f --kver {kernel}"),
        }
    }
}

/// Finds `update-initramfs`, else `dracut`, in `search_path` (a `PATH` value). Under a
/// sandbox root only tools inside the root count.
pub fn find_tool(paths: &Paths, search_path: &OsStr) -> Option<Tool> {
    let sandbox = paths.root != Path::new("/");
    let root = paths.root.canonicalize().ok();
    let find = |name: &str| {
        std::env::split_paths(search_path)
            .map(|d| d.join(name))
            .filter(|p| is_executable(p))
            .find(|p| {
                !sandbox
                    || matches!((p.canonicalize(), &root), (Ok(c), Some(r)) if c.starts_with(r))
            })
    };
    find("update-initramfs")
        .map(Tool::UpdateInitramfs)
        .or_else(|| find("dracut").map(Tool::Dracut))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Whether the kernel has an initramfs to update (`update-initramfs -u` and `dracut -f`
/// regenerate an existing image; creating the first one is the kernel package's job).
pub fn image_exists(paths: &Paths, kernel: &str) -> bool {
    [
        format!("initrd.img-{kernel}"),
        format!("initramfs-{kernel}.img"),
    ]
    .iter()
    .any(|n| paths.boot.join(n).exists())
}

/// What `regenerate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The tool ran and succeeded; the command line.
    Updated(String),
    /// The kernel has no initramfs yet; the kernel's own hook creates it with our modules.
    NoImage,
    /// Neither update-initramfs nor dracut is installed.
    NoTool,
}

/// Regenerates the initramfs of `kernel` once and clears its pending record unless the tool
/// failed (then it stays recorded and the next run retries). The tool's output goes to stderr:
/// hooks never write to stdout.
pub fn regenerate(paths: &Paths, kernel: &str, search_path: &OsStr) -> Result<Outcome> {
    let outcome = if !image_exists(paths, kernel) {
        Outcome::NoImage
    } else if let Some(tool) = find_tool(paths, search_path) {
        let mut cmd = tool.command(kernel);
        let stdout = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        cmd.stdin(Stdio::null()).stdout(stdout);
        if paths.root != Path::new("/") {
            cmd.env("RDKMS_ROOT", &paths.root);
        }
        let described = tool.describe(kernel);
        let status = cmd.status().map_err(|e| Error::Initramfs {
            kernel: kernel.to_string(),
            command: described.clone(),
            problem: format!("cannot be started ({e})"),
        })?;
        if !status.success() {
            return Err(Error::Initramfs {
                kernel: kernel.to_string(),
                command: described,
                problem: match status.code() {
                    Some(c) => format!("exit status {c}"),
                    None => "killed by a signal".to_string(),
                },
            });
        }
        Outcome::Updated(described)
    } else {
        Outcome::NoTool
    };
    clear(paths, kernel)?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::fs;

    const K: &str = "6.1.0-1-amd64";

    /// Held while writing a stub or running one: a process forked by another test thread while
    /// a fresh script is still open for writing makes executing it fail with "Text file busy".
    static SPAWN: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn spawn_guard() -> std::sync::MutexGuard<'static, ()> {
        SPAWN.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn regen(p: &Paths, kernel: &str, path: &OsStr) -> Result<Outcome> {
        let _guard = spawn_guard();
        regenerate(p, kernel, path)
    }

    fn root() -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        let p = Paths::under(dir.path());
        fs::create_dir_all(&p.boot).unwrap();
        (dir, p)
    }

    /// A stub tool in `<root>/usr/sbin` that appends its arguments to `<root>/calls` and
    /// prints something on stdout (which must not reach our stdout).
    fn stub(p: &Paths, name: &str, exit: i32) -> OsString {
        let dir = p.system("/usr/sbin");
        fs::create_dir_all(&dir).unwrap();
        let script = format!(
            "#!/bin/sh\necho \"{name} $*\" >> \"$RDKMS_ROOT/calls\"\necho noise\nexit {exit}\n"
        );
        let tool = dir.join(name);
        let _guard = spawn_guard();
        fs::write(&tool, script).unwrap();
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
        dir.into_os_string()
    }

    fn calls(p: &Paths) -> String {
        fs::read_to_string(p.system("/calls")).unwrap_or_default()
    }

    #[test]
    fn pending_updates_survive_until_cleared() {
        let (_d, p) = root();
        assert!(pending(&p).is_empty());
        record(&p, K).unwrap();
        record(&p, "6.1.0-2-amd64").unwrap();
        record(&p, K).unwrap();
        assert_eq!(
            pending(&p).into_iter().collect::<Vec<_>>(),
            [K, "6.1.0-2-amd64"]
        );
        clear(&p, K).unwrap();
        clear(&p, K).unwrap();
        assert_eq!(pending(&p).len(), 1);
        assert!(p.dkms_tree.join(PENDING_DIR).is_dir());
    }

    #[test]
    fn update_initramfs_is_preferred_and_gets_the_right_kernel() {
        let (_d, p) = root();
        fs::write(p.boot.join(format!("initrd.img-{K}")), "").unwrap();
        stub(&p, "dracut", 0);
        let path = stub(&p, "update-initramfs", 0);
        record(&p, K).unwrap();
        let out = regen(&p, K, &path).unwrap();
        assert_eq!(out, Outcome::Updated(format!("update-initramfs -u -k {K}")));
        assert_eq!(calls(&p), format!("update-initramfs -u -k {K}\n"));
        assert!(pending(&p).is_empty());
    }

    #[test]
    fn dracut_is_used_when_it_is_the_only_tool() {
        let (_d, p) = root();
        fs::write(p.boot.join(format!("initramfs-{K}.img")), "").unwrap();
        let path = stub(&p, "dracut", 0);
        regen(&p, K, &path).unwrap();
        assert_eq!(calls(&p), format!("dracut -f --kver {K}\n"));
    }

    #[test]
    fn failure_keeps_the_update_pending_for_the_next_run() {
        let (_d, p) = root();
        fs::write(p.boot.join(format!("initrd.img-{K}")), "").unwrap();
        let path = stub(&p, "update-initramfs", 3);
        record(&p, K).unwrap();
        let err = regen(&p, K, &path).unwrap_err();
        assert!(err.to_string().contains("exit status 3"), "{err}");
        assert!(err.to_string().contains(K));
        assert!(pending(&p).contains(K));
    }

    #[test]
    fn no_initramfs_yet_means_nothing_to_update() {
        let (_d, p) = root();
        let path = stub(&p, "update-initramfs", 0);
        record(&p, K).unwrap();
        assert_eq!(regen(&p, K, &path).unwrap(), Outcome::NoImage);
        assert_eq!(calls(&p), "");
        assert!(pending(&p).is_empty());
    }

    #[test]
    fn a_sandbox_never_runs_the_host_tool() {
        let (_d, p) = root();
        let outside = tempfile::tempdir().unwrap();
        let tool = outside.path().join("update-initramfs");
        let guard = spawn_guard();
        fs::write(&tool, "#!/bin/sh\nexit 0\n").unwrap();
        drop(guard);
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_tool(&p, outside.path().as_os_str()), None);
        let real = Paths::under("/");
        assert_eq!(
            find_tool(&real, outside.path().as_os_str()),
            Some(Tool::UpdateInitramfs(tool))
        );
        fs::write(p.boot.join(format!("initrd.img-{K}")), "").unwrap();
        assert_eq!(
            regen(&p, K, outside.path().as_os_str()).unwrap(),
            Outcome::NoTool
        );
    }

    #[test]
    fn kernel_hook_is_detected_under_the_root() {
        let (_d, p) = root();
        assert!(!kernel_hook_follows(&p));
        let dir = p.system("/etc/kernel/postinst.d");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("initramfs-tools"), "").unwrap();
        assert!(kernel_hook_follows(&p));
    }
}
