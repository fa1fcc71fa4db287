//! Which kernels exist in a root and what they offer (image, modules, headers), read from the
//! disk the same way by every hook, so "installed", "has headers" and "gone" mean one thing.

use std::collections::BTreeSet;
use std::path::Path;

use crate::base::version::ver_cmp;
use crate::system::config::Paths;

/// What the disk says about one kernel version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Kernel {
    pub version: String,
    /// `/boot/vmlinuz-K` exists.
    pub has_image: bool,
    /// `/lib/modules/K/kernel` is a directory (the kernel's own modules).
    pub has_modules: bool,
    /// `/lib/modules/K/build` holds a Makefile (a usable header or source tree).
    pub has_headers: bool,
}

impl Kernel {
    /// A kernel is installed when its image or its own modules are on disk; builds for any
    /// other kernel belong to a kernel that is gone.
    pub fn installed(&self) -> bool {
        self.has_image || self.has_modules
    }

    /// Installed and buildable: the kernels that get every AUTOINSTALL module.
    pub fn buildable(&self) -> bool {
        self.installed() && self.has_headers
    }
}

/// Reads the facts for one kernel version.
pub fn kernel(paths: &Paths, version: &str) -> Kernel {
    let modules_dir = paths.install_tree.join(version);
    Kernel {
        version: version.to_string(),
        has_image: paths.boot.join(format!("vmlinuz-{version}")).exists(),
        has_modules: modules_dir.join("kernel").is_dir(),
        has_headers: paths.kernel_build_dir(version).join("Makefile").is_file(),
    }
}

/// Every kernel version that has a `/lib/modules/K` entry or a `/boot/vmlinuz-K` image, plus
/// `extra` (versions known from elsewhere, such as the dkms tree, which may be gone), in DKMS's
/// VER order.
pub fn kernels<'a>(paths: &Paths, extra: impl IntoIterator<Item = &'a str>) -> Vec<Kernel> {
    let mut versions: BTreeSet<String> = extra.into_iter().map(str::to_string).collect();
    versions.extend(dir_names(&paths.install_tree));
    versions.extend(
        dir_names(&paths.boot)
            .into_iter()
            .filter_map(|n| n.strip_prefix("vmlinuz-").map(str::to_string)),
    );
    versions.retain(|v| !v.is_empty() && v != "." && v != ".." && !v.contains('/'));
    let mut list: Vec<Kernel> = versions.iter().map(|v| kernel(paths, v)).collect();
    list.sort_by(|a, b| ver_cmp(&a.version, &b.version).then(a.version.cmp(&b.version)));
    list
}

/// Entry names of a directory; a missing or unreadable directory has none.
fn dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn root() -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        (dir, paths)
    }

    #[test]
    fn image_modules_and_headers_are_told_apart() {
        let (_d, p) = root();
        fs::create_dir_all(p.install_tree.join("6.1.0-1-amd64/kernel")).unwrap();
        fs::create_dir_all(p.install_tree.join("6.1.0-1-amd64/build")).unwrap();
        fs::write(p.install_tree.join("6.1.0-1-amd64/build/Makefile"), "").unwrap();
        fs::create_dir_all(&p.boot).unwrap();
        fs::write(p.boot.join("vmlinuz-6.1.0-2-amd64"), "").unwrap();
        fs::create_dir_all(p.install_tree.join("6.1.0-3-amd64/build")).unwrap();
        fs::create_dir_all(p.install_tree.join("6.1.0-4-amd64/updates/dkms")).unwrap();

        let ks = kernels(&p, ["6.1.0-5-amd64"]);
        let names: Vec<_> = ks.iter().map(|k| k.version.as_str()).collect();
        assert_eq!(
            names,
            [
                "6.1.0-1-amd64",
                "6.1.0-2-amd64",
                "6.1.0-3-amd64",
                "6.1.0-4-amd64",
                "6.1.0-5-amd64"
            ]
        );
        assert!(ks[0].installed() && ks[0].has_headers && ks[0].buildable());
        assert!(ks[1].installed() && ks[1].has_image && !ks[1].has_headers);
        // A build dir without a Makefile is not usable headers; no image, no modules: gone.
        assert!(!ks[2].has_headers && !ks[2].installed());
        // Leftover dkms files alone do not make a kernel installed.
        assert!(!ks[3].installed());
        assert!(!ks[4].installed() && !ks[4].has_headers);
    }

    #[test]
    fn versions_are_in_ver_order() {
        let (_d, p) = root();
        for k in ["6.1.0-10-amd64", "6.1.0-9-amd64", "5.10.0-30-amd64"] {
            fs::create_dir_all(p.install_tree.join(k).join("kernel")).unwrap();
        }
        let names: Vec<_> = kernels(&p, []).into_iter().map(|k| k.version).collect();
        assert_eq!(
            names,
            ["5.10.0-30-amd64", "6.1.0-9-amd64", "6.1.0-10-amd64"]
        );
    }

    #[test]
    fn empty_root_has_no_kernels() {
        let (_d, p) = root();
        assert!(kernels(&p, []).is_empty());
    }
}
