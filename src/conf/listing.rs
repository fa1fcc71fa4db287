//! Directory listings the conf engine consults on every evaluation (the working directory for
//! bash's glob check, `/etc/dkms` for override files). `status` evaluates a dkms.conf per
//! build; listing or probing those directories each time cost more syscalls than the rest of
//! a status line. So a listing is kept for the process: reused without a look for a moment
//! after it was checked, then while the directory's mtime is unchanged, and only once that
//! mtime is old enough that a change in the same clock tick cannot hide behind it.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// The names in a directory, or why it cannot be listed.
pub type Listing = Result<Vec<String>, ErrorKind>;

/// A directory's mtime must be this much older than now before its listing is kept
/// (directory timestamps can be as coarse as a clock tick).
const SETTLED: Duration = Duration::from_secs(2);

/// How long a kept listing is trusted without checking the mtime again: far shorter than
/// anyone editing /etc/dkms while a command runs, far longer than one status line.
const TRUSTED: Duration = Duration::from_millis(200);

struct Kept {
    mtime: SystemTime,
    checked: Instant,
    listing: Arc<Listing>,
}

static CACHE: Mutex<Option<HashMap<PathBuf, Kept>>> = Mutex::new(None);

/// The entries of `dir` (lossy UTF-8), from the cache while the directory is unchanged.
pub fn of(dir: &Path) -> Arc<Listing> {
    of_at(dir, Instant::now())
}

fn of_at(dir: &Path, now: Instant) -> Arc<Listing> {
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(kept) = cache.get(dir) {
        if now.saturating_duration_since(kept.checked) < TRUSTED {
            return Arc::clone(&kept.listing);
        }
    }
    let Ok(mtime) = std::fs::metadata(dir).and_then(|m| m.modified()) else {
        cache.remove(dir);
        return Arc::new(read(dir));
    };
    if let Some(kept) = cache.get_mut(dir) {
        if kept.mtime == mtime {
            kept.checked = now;
            return Arc::clone(&kept.listing);
        }
    }
    let listing = Arc::new(read(dir));
    let settled = SystemTime::now()
        .duration_since(mtime)
        .is_ok_and(|age| age >= SETTLED);
    if settled {
        let kept = Kept {
            mtime,
            checked: now,
            listing: Arc::clone(&listing),
        };
        cache.insert(dir.to_path_buf(), kept);
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

    fn contains(dir: &Path, name: &str, now: Instant) -> bool {
        of_at(dir, now)
            .as_ref()
            .as_ref()
            .is_ok_and(|names| names.iter().any(|n| n == name))
    }

    #[test]
    fn fresh_directories_are_listed_again() {
        let d = tempfile::tempdir().unwrap();
        assert!(!contains(d.path(), "a.conf", Instant::now()));
        std::fs::write(d.path().join("a.conf"), "").unwrap();
        assert!(
            contains(d.path(), "a.conf", Instant::now()),
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
        let start = Instant::now();
        let first = of_at(d.path(), start);
        let later = start + TRUSTED * 3;
        assert!(
            Arc::ptr_eq(&first, &of_at(d.path(), later)),
            "unchanged: reused"
        );
        std::fs::write(d.path().join("b.conf"), "").unwrap();
        set_mtime(old + Duration::from_secs(1));
        assert!(
            !contains(d.path(), "b.conf", later + TRUSTED / 2),
            "trusted for a moment after a check"
        );
        assert!(
            contains(d.path(), "b.conf", later + TRUSTED * 2),
            "then a new mtime: re-read"
        );
    }
}
