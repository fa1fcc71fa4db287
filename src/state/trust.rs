//! Refusing, as root, module sources that a non-root user could have changed. A dkms.conf is
//! bash and its MAKE line a command: whoever can write either, or replace a directory on the
//! way to them, runs code as root at the next kernel upgrade. So before evaluating a dkms.conf
//! or building, every path component from `/` (or the `--root` sandbox) down to it, and every
//! entry of the source tree, must be owned by root and writable by nobody else. A root-owned
//! directory with the sticky bit (such as `/tmp`) is fine on the way: others may create entries
//! there but cannot rename or delete root's.
//!
//! The check only applies when rdkms runs as root. `--allow-untrusted-sources`, or
//! `rdkms_trust_sources=any` in framework.conf, turns it off.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::base::error::{Error, Result};
use crate::system::config::Paths;
use crate::system::report;

/// The framework.conf setting: `root` (default) or `any`.
pub const SETTING: &str = "rdkms_trust_sources";

/// Whether sources are checked, and from where.
#[derive(Debug)]
pub struct Trust {
    /// Off when not root or when overridden.
    enabled: bool,
    /// Where the walk up stops: `/`, or the sandbox root.
    top: PathBuf,
    /// Directories above sources already found fine by this command (checked once each).
    checked: Mutex<HashSet<PathBuf>>,
}

impl Trust {
    /// The policy for this process: checked when running as root, unless `allow` (the option)
    /// or framework.conf says `rdkms_trust_sources=any`.
    pub fn new(paths: &Paths, allow: bool) -> Trust {
        let any = report::framework_value(paths, SETTING).is_some_and(|(v, _)| v == "any");
        Trust {
            enabled: nix::unistd::geteuid().is_root() && !allow && !any,
            top: std::fs::canonicalize(&paths.root).unwrap_or_else(|_| paths.root.clone()),
            checked: Mutex::new(HashSet::new()),
        }
    }

    /// Checks a file (a dkms.conf) and every directory above it.
    pub fn check_file(&self, file: &Path) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let Ok(real) = std::fs::canonicalize(file) else {
            return Ok(());
        };
        self.check_up(&real)
    }

    /// Checks a source directory, everything in it and every directory above it.
    pub fn check_tree(&self, dir: &Path) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let Ok(real) = std::fs::canonicalize(dir) else {
            return Ok(());
        };
        self.check_up(&real)?;
        for entry in walkdir::WalkDir::new(&real)
            .min_depth(1)
            .follow_links(false)
            .into_iter()
            .flatten()
        {
            if entry.file_type().is_symlink() {
                continue;
            }
            if let Ok(meta) = entry.metadata() {
                verdict(entry.path(), &meta, false, true)?;
            }
        }
        Ok(())
    }

    /// `path` and its ancestors up to the top (each directory checked once per process).
    fn check_up(&self, path: &Path) -> Result<()> {
        let mut cur = Some(path);
        let mut first = true;
        while let Some(p) = cur {
            if !p.starts_with(&self.top) {
                break;
            }
            let known = !first && self.checked.lock().is_ok_and(|s| s.contains(p));
            if !known {
                let meta = std::fs::symlink_metadata(p).map_err(|e| Error::io("stat", p, e))?;
                verdict(p, &meta, !first, false)?;
                if let Ok(mut s) = self.checked.lock() {
                    s.insert(p.to_path_buf());
                }
            }
            first = false;
            if p == self.top {
                break;
            }
            cur = p.parent();
        }
        Ok(())
    }
}

/// Refuses an entry a non-root user owns or may write. `ancestor`: a sticky root-owned
/// directory is acceptable; `in_tree`: the fix is recursive.
fn verdict(path: &Path, meta: &std::fs::Metadata, ancestor: bool, in_tree: bool) -> Result<()> {
    let r = if in_tree { " -R" } else { "" };
    if meta.uid() != 0 {
        return Err(untrusted(
            path,
            &format!("is owned by uid {}, not root", meta.uid()),
            &format!("chown{r} root:root {}", path.display()),
        ));
    }
    let sticky_dir = meta.is_dir() && meta.mode() & 0o1000 != 0;
    if meta.mode() & 0o022 != 0 && !(ancestor && sticky_dir) {
        return Err(untrusted(
            path,
            &format!(
                "is writable by group or others (mode {:o})",
                meta.mode() & 0o7777
            ),
            &format!("chmod{r} go-w {}", path.display()),
        ));
    }
    Ok(())
}

fn untrusted(path: &Path, problem: &str, fix: &str) -> Error {
    Error::Untrusted {
        path: path.to_path_buf(),
        problem: problem.to_string(),
        fix: format!(
            "{fix} (or, if every user who can write there is trusted: --allow-untrusted-sources, or {SETTING}=any in /etc/dkms/framework.conf)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn trust(top: &Path) -> Trust {
        Trust {
            enabled: true,
            top: std::fs::canonicalize(top).unwrap(),
            checked: Mutex::new(HashSet::new()),
        }
    }

    #[test]
    fn writable_entries_are_refused_and_sticky_ancestors_allowed() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: ownership checks need root");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let top = t.path().join("root");
        let src = top.join("usr/src/m-1");
        std::fs::create_dir_all(&src).unwrap();
        let conf = src.join("dkms.conf");
        std::fs::write(&conf, "").unwrap();
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(trust(&top).check_tree(&src).is_ok());

        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = trust(&top).check_file(&conf).unwrap_err().to_string();
        assert!(e.contains("chmod go-w") && e.contains("dkms.conf"), "{e}");
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();

        // A sticky world-writable directory on the way is fine, a plain one is not.
        let usr_src = top.join("usr/src");
        std::fs::set_permissions(&usr_src, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(trust(&top).check_file(&conf).is_ok());
        std::fs::set_permissions(&usr_src, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = trust(&top).check_file(&conf).unwrap_err().to_string();
        assert!(e.contains("usr/src"), "{e}");
        std::fs::set_permissions(&usr_src, std::fs::Permissions::from_mode(0o755)).unwrap();

        std::os::unix::fs::chown(src.join("dkms.conf"), Some(65534), None).unwrap();
        let e = trust(&top).check_tree(&src).unwrap_err().to_string();
        assert!(
            e.contains("uid 65534") && e.contains("chown -R root:root"),
            "{e}"
        );
    }
}
