//! Where a module's files are: the one place that knows a module's file names (`NAME.ko`,
//! `.ko.xz`, …) and finds them in a build directory or anywhere in a kernel's module tree.
//! Where a module is installed (`<installtree>/KVER/<DEST_MODULE_LOCATION>`) is decided by
//! `effects::install::Placement`; whether an installation is whole, by `state::presence`.

use std::path::{Path, PathBuf};

use crate::system::kernel::{module_file_name, Compression};

/// Finds the built file of a module in `dir`: uncompressed first, then the kernel's
/// compression, then any other (DKMS's `compressed_or_uncompressed`).
pub fn find_module_file(dir: &Path, name: &str, preferred: Compression) -> Option<PathBuf> {
    std::iter::once(Compression::None)
        .chain(std::iter::once(preferred))
        .chain(Compression::ALL)
        .map(|c| dir.join(module_file_name(name, c)))
        .find(|p| p.is_file())
}

/// Whether the kernel's module tree holds any `<name>.ko*` (not following symlinks).
pub fn kernel_has_module(kernel_dir: &Path, name: &str) -> bool {
    !same_named(kernel_dir, name).is_empty()
}

/// Every `<name>.ko[.gz|.xz|.zst]` below a kernel's module directory (not following the
/// `build`/`source` links).
pub fn same_named(kernel_dir: &Path, name: &str) -> Vec<PathBuf> {
    let wanted: Vec<String> = Compression::ALL
        .iter()
        .map(|c| module_file_name(name, *c))
        .collect();
    walkdir::WalkDir::new(kernel_dir)
        .follow_links(false)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter(|e| wanted.iter().any(|w| e.file_name() == w.as_str()))
        .map(|e| e.into_path())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn finds_uncompressed_before_compressed() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("a.ko.xz"), "").unwrap();
        assert_eq!(
            find_module_file(t.path(), "a", Compression::None),
            Some(t.path().join("a.ko.xz"))
        );
        fs::write(t.path().join("a.ko"), "").unwrap();
        assert_eq!(
            find_module_file(t.path(), "a", Compression::Xz),
            Some(t.path().join("a.ko"))
        );
        assert_eq!(find_module_file(t.path(), "b", Compression::Xz), None);
    }

    #[test]
    fn same_named_skips_the_build_link() {
        let t = tempfile::tempdir().unwrap();
        let k = t.path().join("K");
        fs::create_dir_all(k.join("kernel/x")).unwrap();
        fs::write(k.join("kernel/x/foo.ko.xz"), "").unwrap();
        let ext = t.path().join("ext");
        fs::create_dir_all(&ext).unwrap();
        fs::write(ext.join("foo.ko"), "").unwrap();
        std::os::unix::fs::symlink(&ext, k.join("build")).unwrap();
        assert_eq!(same_named(&k, "foo"), vec![k.join("kernel/x/foo.ko.xz")]);
    }
}
