//! Where everything lives: the system paths DKMS uses, each taken under `--root` so tests and
//! demos never touch the real machine, with `--dkmstree`/`--sourcetree`/`--installtree` winning.

use std::path::{Path, PathBuf};

use crate::cmd::cli::Cli;

/// Resolved locations of every tree and file rdkms reads or writes.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The sandbox root (`/` on a real system).
    pub root: PathBuf,
    /// Module sources: `/usr/src`.
    pub source_tree: PathBuf,
    /// State tree: `/var/lib/dkms`.
    pub dkms_tree: PathBuf,
    /// Kernel modules: `/lib/modules`.
    pub install_tree: PathBuf,
    /// Configuration: `/etc/dkms`.
    pub etc_dkms: PathBuf,
    /// Kernel images: `/boot`.
    pub boot: PathBuf,
    /// Runtime state: `/run`.
    pub run: PathBuf,
}

impl Paths {
    /// The default layout under `root`.
    pub fn under(root: impl Into<PathBuf>) -> Paths {
        let root = root.into();
        Paths {
            source_tree: rooted(&root, "/usr/src"),
            dkms_tree: rooted(&root, "/var/lib/dkms"),
            install_tree: rooted(&root, "/lib/modules"),
            etc_dkms: rooted(&root, "/etc/dkms"),
            boot: rooted(&root, "/boot"),
            run: rooted(&root, "/run"),
            root,
        }
    }

    /// The layout for a command line: `--root` (or `RDKMS_ROOT`) first, then explicit tree options,
    /// which are taken as given (relative to the working directory), not under the root.
    /// Relative paths are made absolute first: builds run make in other directories.
    pub fn from_cli(cli: &Cli) -> Paths {
        let root = cli
            .root
            .as_deref()
            .map_or_else(|| PathBuf::from("/"), absolute);
        let mut paths = Paths::under(root);
        if let Some(d) = &cli.dkms_tree {
            paths.dkms_tree = absolute(d);
        }
        if let Some(d) = &cli.source_tree {
            paths.source_tree = absolute(d);
        }
        if let Some(d) = &cli.install_tree {
            paths.install_tree = absolute(d);
        }
        paths
    }

    /// A system path (absolute, as DKMS spells it) mapped under the root.
    pub fn system(&self, path: impl AsRef<Path>) -> PathBuf {
        rooted(&self.root, path)
    }

    /// The kernel build tree DKMS expects: `<installtree>/KVER/build`.
    pub fn kernel_build_dir(&self, kernel: &str) -> PathBuf {
        self.install_tree.join(kernel).join("build")
    }
}

/// `dir` made absolute against the working directory, `.`/`..` and trailing slashes resolved
/// lexically (symlinks are kept: `--root` may be a link to where the tree lives).
fn absolute(dir: &Path) -> PathBuf {
    lexical(&std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()))
}

/// `path` with `.` and `..` resolved without following links.
pub fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Joins an absolute system path under `root` (`/` stays a no-op prefix).
pub fn rooted(root: &Path, path: impl AsRef<Path>) -> PathBuf {
    let rel = path.as_ref().strip_prefix("/").unwrap_or(path.as_ref());
    root.join(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_system_path_is_under_the_root() {
        let p = Paths::under("/tmp/sandbox");
        for dir in [
            &p.source_tree,
            &p.dkms_tree,
            &p.install_tree,
            &p.etc_dkms,
            &p.boot,
            &p.run,
        ] {
            assert!(dir.starts_with("/tmp/sandbox"), "{}", dir.display());
        }
        assert_eq!(p.dkms_tree, PathBuf::from("/tmp/sandbox/var/lib/dkms"));
        assert_eq!(
            p.system("/etc/os-release"),
            PathBuf::from("/tmp/sandbox/etc/os-release")
        );
    }

    #[test]
    fn plain_root_gives_the_real_paths() {
        let p = Paths::under("/");
        assert_eq!(p.install_tree, PathBuf::from("/lib/modules"));
        assert_eq!(
            p.kernel_build_dir("6.1.0-1-amd64"),
            PathBuf::from("/lib/modules/6.1.0-1-amd64/build")
        );
    }
}
