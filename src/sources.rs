//! Whether a module's sources changed since a build: each build records a fingerprint of the
//! sources it was made from (every file's path, size and modification time), so `build` and
//! `install` rebuild after `add DIR --force` replaced the sources of an already built version
//! instead of keeping the old modules.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The file in a build's `log/` directory that holds the fingerprint.
pub const FINGERPRINT_FILE: &str = ".rdkms-sources";

/// A fingerprint of the directory tree at `dir` (symlinks not followed), as 16 hex digits.
pub fn fingerprint(dir: &Path) -> String {
    let mut entries: Vec<(PathBuf, u64, i64, i64)> = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .flatten()
        .filter(|e| !e.file_type().is_dir())
        .filter_map(|e| {
            let md = e.path().symlink_metadata().ok()?;
            let rel = e.path().strip_prefix(dir).ok()?.to_path_buf();
            Some((rel, md.size(), md.mtime(), md.mtime_nsec()))
        })
        .collect();
    entries.sort();
    // FNV-1a: stable across Rust versions, unlike std's DefaultHasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (path, size, secs, nsecs) in &entries {
        feed(path.as_os_str().as_encoded_bytes());
        feed(&[0]);
        feed(&size.to_le_bytes());
        feed(&secs.to_le_bytes());
        feed(&nsecs.to_le_bytes());
    }
    format!("{hash:016x}")
}

/// Whether the build whose log directory is `log_dir` was made from other sources than the ones
/// in `source_dir` now. A build without a recorded fingerprint (made by DKMS or an older rdkms)
/// counts as current.
pub fn changed_since_build(log_dir: &Path, source_dir: &Path) -> bool {
    match fs::read_to_string(log_dir.join(FINGERPRINT_FILE)) {
        Ok(recorded) => recorded.trim() != fingerprint(source_dir),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_changes_the_fingerprint() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("a.c"), "int a;").unwrap();
        let before = fingerprint(t.path());
        assert_eq!(before, fingerprint(t.path()));
        fs::write(t.path().join("a.c"), "int a; int b;").unwrap();
        assert_ne!(before, fingerprint(t.path()));
    }

    #[test]
    fn builds_without_a_record_count_as_current() {
        let t = tempfile::tempdir().unwrap();
        assert!(!changed_since_build(&t.path().join("log"), t.path()));
        fs::write(t.path().join(FINGERPRINT_FILE), "0000000000000000\n").unwrap();
        assert!(changed_since_build(t.path(), t.path()));
    }
}
