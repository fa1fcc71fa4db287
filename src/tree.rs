//! The DKMS state tree (`/var/lib/dkms`) layout, shared by every command so that rdkms and
//! DKMS read and write the same places:
//! `<tree>/M/V/source -> <sourcetree>/M-V`, `<tree>/M/V/K/A/{module,log}`,
//! `<tree>/M/kernel-K-A -> V/K/A` (the "installed" marker).

use std::path::{Path, PathBuf};

/// Paths inside one dkms tree.
#[derive(Debug, Clone)]
pub struct Tree {
    pub root: PathBuf,
}

impl Tree {
    pub fn new(root: impl Into<PathBuf>) -> Tree {
        Tree { root: root.into() }
    }

    /// `<tree>/M`.
    pub fn module_dir(&self, module: &str) -> PathBuf {
        self.root.join(module)
    }

    /// `<tree>/M/V`.
    pub fn version_dir(&self, module: &str, version: &str) -> PathBuf {
        self.module_dir(module).join(version)
    }

    /// `<tree>/M/V/source`, the symlink to the sources.
    pub fn source_link(&self, module: &str, version: &str) -> PathBuf {
        self.version_dir(module, version).join("source")
    }

    /// `<tree>/M/V/K/A`, one build.
    pub fn build_dir(&self, module: &str, version: &str, kernel: &str, arch: &str) -> PathBuf {
        self.version_dir(module, version).join(kernel).join(arch)
    }

    /// `<tree>/M/V/K/A/module`, the built `.ko` files.
    pub fn built_modules_dir(
        &self,
        module: &str,
        version: &str,
        kernel: &str,
        arch: &str,
    ) -> PathBuf {
        self.build_dir(module, version, kernel, arch).join("module")
    }

    /// `<tree>/M/V/K/A/log/make.log`.
    pub fn make_log(&self, module: &str, version: &str, kernel: &str, arch: &str) -> PathBuf {
        self.build_dir(module, version, kernel, arch)
            .join("log")
            .join("make.log")
    }

    /// `<tree>/M/kernel-K-A`, whose presence (pointing at `V/K/A`) marks V as installed for K/A.
    pub fn installed_link(&self, module: &str, kernel: &str, arch: &str) -> PathBuf {
        self.module_dir(module)
            .join(format!("kernel-{kernel}-{arch}"))
    }

    /// The relative target DKMS writes into the `kernel-K-A` symlink.
    pub fn installed_link_target(version: &str, kernel: &str, arch: &str) -> PathBuf {
        Path::new(version).join(kernel).join(arch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_dkms() {
        let t = Tree::new("/var/lib/dkms");
        assert_eq!(
            t.built_modules_dir("hello", "1.0", "6.1.0-1-amd64", "x86_64"),
            PathBuf::from("/var/lib/dkms/hello/1.0/6.1.0-1-amd64/x86_64/module")
        );
        assert_eq!(
            t.installed_link("hello", "6.1.0-1-amd64", "x86_64"),
            PathBuf::from("/var/lib/dkms/hello/kernel-6.1.0-1-amd64-x86_64")
        );
        assert_eq!(
            Tree::installed_link_target("1.0", "6.1.0-1-amd64", "x86_64"),
            PathBuf::from("1.0/6.1.0-1-amd64/x86_64")
        );
    }
}
