//! Whether a module's sources changed since a build: each build records a fingerprint of the
//! sources it was made from (every file's path and content) as a trailer line of its make.log
//! (the tree keeps DKMS's layout), so `build` and `install` rebuild after `add DIR --force`
//! replaced the sources of an already built version instead of keeping the old modules.
//! Content, not times: identical sources give identical trees.

use std::fs;
use std::path::Path;

/// The make.log line that records the fingerprint.
const TRAILER: &str = "# rdkms sources:";

/// The make.log trailer line for a fingerprint.
pub fn trailer(fingerprint: &str) -> String {
    format!("{TRAILER} {fingerprint}")
}

/// FNV-1a, 64 bits: stable across Rust versions, unlike std's DefaultHasher.
struct Fnv(u64);

impl Fnv {
    fn feed(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A fingerprint of the files below `dir` (symlinks by their target), as 16 hex digits.
pub fn fingerprint(dir: &Path) -> String {
    let mut hash = Fnv(0xcbf2_9ce4_8422_2325);
    let walk = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name();
    for e in walk.into_iter().flatten() {
        let Ok(rel) = e.path().strip_prefix(dir) else {
            continue;
        };
        let kind = e.file_type();
        let content = if kind.is_file() {
            fs::read(e.path()).unwrap_or_default()
        } else if kind.is_symlink() {
            fs::read_link(e.path())
                .map(|t| t.into_os_string().into_encoded_bytes())
                .unwrap_or_default()
        } else {
            continue;
        };
        hash.feed(rel.as_os_str().as_encoded_bytes());
        hash.feed(&[0]);
        hash.feed(&(content.len() as u64).to_le_bytes());
        hash.feed(&content);
    }
    format!("{:016x}", hash.0)
}

/// Whether the build whose make.log is `log` was made from other sources than the ones in
/// `source_dir` now. A build without a recorded fingerprint (made by DKMS or an older rdkms)
/// counts as current.
pub fn changed_since_build(log: &Path, source_dir: &Path) -> bool {
    let Ok(text) = fs::read_to_string(log) else {
        return false;
    };
    match text.lines().rev().find_map(|l| l.strip_prefix(TRAILER)) {
        Some(recorded) => recorded.trim() != fingerprint(source_dir),
        None => false,
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
        let src = t.path().join("src");
        fs::create_dir(&src).unwrap();
        let log = t.path().join("make.log");
        assert!(!changed_since_build(&log, &src));
        fs::write(&log, "make output\n").unwrap();
        assert!(!changed_since_build(&log, &src));
        fs::write(&log, format!("{}\n", trailer(&fingerprint(&src)))).unwrap();
        assert!(!changed_since_build(&log, &src));
        fs::write(&log, format!("{}\n", trailer("0000000000000000"))).unwrap();
        assert!(changed_since_build(&log, &src));
    }
}
