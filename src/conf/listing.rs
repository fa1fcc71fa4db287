//! Directory listings the conf engine consults on every evaluation (the working directory for
//! bash's glob check, `/etc/dkms` for override files). `status` evaluates a dkms.conf per
//! build; listing or probing those directories each time cost more syscalls than the rest of
//! a status line, so a listing is kept for the process and reused while the directory's mtime
//! is unchanged and old enough that a same-tick change cannot hide behind it.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The names in a directory, or why it cannot be listed.
pub type Listing = Result<Vec<String>, ErrorKind>;

/// A directory's mtime must be this much older than now before its listing is reused
/// (directory timestamps can be as coarse as a clock tick).
const SETTLED: Duration = Duration::from_secs(2);

/// Directory → its mtime when listed, and the listing.
type Cache = HashMap<PathBuf, (SystemTime, Arc<Listing>)>;

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// The entries of `dir` (lossy UTF-8), from the cache while the directory is unchanged.
pub fn of(dir: &Path) -> Arc<Listing> {
    let Ok(mtime) = std::fs::metadata(dir).and_then(|m| m.modified()) else {
        return Arc::new(read(dir));
    };
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some((seen, listing)) = cache.get(dir) {
        if *seen == mtime {
            return Arc::clone(listing);
        }
    }
    let listing = Arc::new(read(dir));
    let settled = SystemTime::now()
        .duration_since(mtime)
        .is_ok_and(|age| age >= SETTLED);
    if settled {
        cache.insert(dir.to_path_buf(), (mtime, Arc::clone(&listing)));
    } else {
        cache.remove(dir);
    }
    listing
}

fn read(dir: &Path) -> Listing {
    let rd = std::fs::read_dir(dir).map_err(|e| e.kind())?;
    rd.map(|e| {
        e.map(|e| e.file_name().to_string_lossy().into_owned())
            .map_err(|e| e.kind())
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(dir: &Path, name: &str) -> bool {
        of(dir)
            .as_ref()
            .as_ref()
            .is_ok_and(|names| names.iter().any(|n| n == name))
    }

    #[test]
    fn fresh_directories_are_listed_again() {
        let d = tempfile::tempdir().unwrap();
        assert!(!contains(d.path(), "a.conf"));
        std::fs::write(d.path().join("a.conf"), "").unwrap();
        assert!(
            contains(d.path(), "a.conf"),
            "a just-changed directory is re-read"
        );
        assert!(of(&d.path().join("missing")).is_err());
    }

    #[test]
    fn settled_directories_are_reused_until_they_change() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.conf"), "").unwrap();
        let old = SystemTime::now() - Duration::from_secs(60);
        let set_mtime = |t: SystemTime| {
            std::fs::File::open(d.path())
                .unwrap()
                .set_modified(t)
                .unwrap()
        };
        set_mtime(old);
        let first = of(d.path());
        assert!(Arc::ptr_eq(&first, &of(d.path())), "unchanged: reused");
        std::fs::write(d.path().join("b.conf"), "").unwrap();
        set_mtime(old + Duration::from_secs(1));
        assert!(contains(d.path(), "b.conf"), "a new mtime: re-read");
    }
}
