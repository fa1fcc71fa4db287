//! File-system helpers every layer needs, written once: listing a directory's subdirectories
//! and deleting a file that may already be gone. Writes into the trees go through
//! `state::atomic`.

use std::fs;
use std::io;
use std::path::Path;

use crate::base::error::{Error, Result};

/// The names of the real (not symlinked) directories directly in `dir`, sorted; an entry that
/// vanishes while it is read is left out.
pub fn subdirs(dir: &Path) -> io::Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(dir)?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Deletes `path`; one that is already gone is fine (a rerun after an interruption). Returns
/// whether it was there; an error names `op` and the file.
pub fn remove_file(path: &Path, op: &'static str) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(op, path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdirs_are_real_directories_sorted() {
        let t = tempfile::tempdir().unwrap();
        for d in ["b", "a", ".hidden"] {
            fs::create_dir(t.path().join(d)).unwrap();
        }
        fs::write(t.path().join("file"), "").unwrap();
        std::os::unix::fs::symlink(t.path().join("a"), t.path().join("link")).unwrap();
        assert_eq!(subdirs(t.path()).unwrap(), [".hidden", "a", "b"]);
        assert!(subdirs(&t.path().join("missing")).is_err());
    }

    #[test]
    fn removing_a_missing_file_is_fine() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        fs::write(&f, "").unwrap();
        assert!(remove_file(&f, "delete").unwrap());
        assert!(!remove_file(&f, "delete").unwrap());
        assert!(remove_file(t.path(), "delete").is_err());
    }
}
