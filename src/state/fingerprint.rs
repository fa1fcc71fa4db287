//! The apt hook's no-op fast path. apt runs `DPkg::Post-Invoke` after every dpkg call
//! (unattended-upgrades: once per package), so "nothing changed since the last reconcile" must
//! be decided from a few `stat()` calls: no shell, no dkms.conf, no lock, no directory walk
//! beyond `/lib/modules`.
//!
//! Watched: `/lib/modules`, each `/lib/modules/K` and `K/build` (followed into the headers),
//! `/boot`, `/usr/src`, the dkms tree directory and its lock file, `/etc/dkms` and its
//! framework files. Module directories inside the tree are not stat'ed one by one: at 1000
//! modules that alone costs about 1 ms on a VM; instead every mutating rdkms command takes
//! the tree lock, which rewrites the lock file and so changes its stat.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::base::error::{IoContext, Result};
use crate::system::config::Paths;

/// Name of the stored fingerprint inside the dkms tree.
pub const FILE: &str = ".rdkms-fingerprint";

/// Timestamps younger than this may still change within the same filesystem tick (coarse
/// clocks, 1 s or 2 s granularity on some filesystems), so such a fingerprint is not stored.
pub const RACY: Duration = Duration::from_secs(2);

/// Files in the dkms tree whose stat is part of the fingerprint (the tree lock's file).
pub const TREE_FILES: &[&str] = &[crate::state::lock::LOCK_FILE];

const RECORD_PREFIX: &str = "rdkms-fingerprint-1 ";

/// A digest of the stat data of every watched path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub hash: u64,
    /// The newest mtime seen, to tell whether the digest can be trusted yet: a later change
    /// in the same timestamp tick would leave an mtime equal to it (an older mtime always
    /// moves, and ctime moves with it).
    pub newest: SystemTime,
}

impl Fingerprint {
    /// The fixed-length text stored on disk.
    fn record(&self) -> String {
        format!("{RECORD_PREFIX}{:016x}\n", self.hash)
    }

    /// True when a change could still land in the same timestamp tick as what was observed.
    pub fn is_racy(&self, now: SystemTime) -> bool {
        match now.duration_since(self.newest) {
            Ok(age) => age < RACY,
            Err(_) => true,
        }
    }
}

/// Where the fingerprint is stored.
pub fn path(paths: &Paths) -> PathBuf {
    paths.dkms_tree.join(FILE)
}

/// Computes the fingerprint of the watched paths.
pub fn compute(paths: &Paths) -> Fingerprint {
    let mut h = Hasher::new();
    h.bytes(env!("CARGO_PKG_VERSION").as_bytes());
    let mut newest = UNIX_EPOCH;
    let mut stat = |h: &mut Hasher, p: &Path, watch_age: bool| {
        h.bytes(p.as_os_str().as_encoded_bytes());
        match std::fs::metadata(p) {
            Ok(m) => {
                for v in [
                    m.dev(),
                    m.ino(),
                    m.mode() as u64,
                    m.size(),
                    m.mtime() as u64,
                    m.mtime_nsec() as u64,
                    m.ctime() as u64,
                    m.ctime_nsec() as u64,
                ] {
                    h.u64(v);
                }
                let t = timestamp(m.mtime(), m.mtime_nsec());
                if watch_age && t > newest {
                    newest = t;
                }
            }
            Err(_) => h.u64(u64::MAX),
        }
    };
    for p in [
        &paths.install_tree,
        &paths.boot,
        &paths.source_tree,
        &paths.dkms_tree,
        &paths.etc_dkms,
    ] {
        stat(&mut h, p, true);
    }
    for f in ["framework.conf", "framework.conf.d"] {
        stat(&mut h, &paths.etc_dkms.join(f), true);
    }
    // The lock file is always fresh right after a run released it; its age is not checked. A
    // command that took and released the lock since still changes its size and times, unless
    // it ran entirely within the tick of that release.
    for f in TREE_FILES {
        stat(&mut h, &paths.dkms_tree.join(f), false);
    }
    let mut kernels: Vec<_> = std::fs::read_dir(&paths.install_tree)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    kernels.sort();
    for k in kernels {
        let dir = paths.install_tree.join(&k);
        stat(&mut h, &dir, true);
        stat(&mut h, &dir.join("build"), true);
    }
    Fingerprint {
        hash: h.finish(),
        newest,
    }
}

fn timestamp(secs: i64, nsecs: i64) -> SystemTime {
    if secs < 0 {
        return UNIX_EPOCH;
    }
    UNIX_EPOCH + Duration::new(secs as u64, nsecs.clamp(0, 999_999_999) as u32)
}

/// The fast path: true when the stored fingerprint equals the current one.
pub fn matches(paths: &Paths) -> bool {
    let mut buf = [0u8; 64];
    let n = match File::open(path(paths)).and_then(|mut f| f.read(&mut buf)) {
        Ok(n) => n,
        Err(_) => return false,
    };
    let stored = &buf[..n];
    stored.starts_with(RECORD_PREFIX.as_bytes()) && stored == compute(paths).record().as_bytes()
}

/// Marks the stored fingerprint invalid (at the start of a run, so an interrupted run never
/// leaves a matching one behind).
pub fn invalidate(paths: &Paths) -> Result<()> {
    write_record(paths, |_| Some("invalid\n".to_string())).map(|_| ())
}

/// Stores the current fingerprint after a complete reconcile, once the tree lock is released
/// (releasing rewrites the lock file, which is watched). Returns false (and leaves the
/// stored one invalid) when the observed timestamps are too recent to be trusted; the next
/// run then reconciles once more and stores it.
pub fn store(paths: &Paths) -> Result<bool> {
    write_record(paths, |paths| {
        let fp = compute(paths);
        (!fp.is_racy(SystemTime::now())).then(|| fp.record())
    })
}

/// Writes the record in place, padded to a fixed length. Not by rename: a rename would change
/// the dkms tree directory's own stat, which the fingerprint watches. A torn or stale record
/// only ever causes a mismatch, that is one full reconcile, so in-place writing is safe.
fn write_record(paths: &Paths, record: impl FnOnce(&Paths) -> Option<String>) -> Result<bool> {
    let file_path = path(paths);
    std::fs::create_dir_all(&paths.dkms_tree).ctx("create", &paths.dkms_tree)?;
    // Create the file before computing, so its creation is part of what is observed.
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&file_path)
        .ctx("open", &file_path)?;
    let (text, stored) = match record(paths) {
        Some(r) => (r, true),
        None => ("invalid\n".to_string(), false),
    };
    let mut padded = text.into_bytes();
    padded.resize(RECORD_PREFIX.len() + 17, b'\n');
    file.write_all_at(&padded, 0).ctx("write", &file_path)?;
    file.set_len(padded.len() as u64).ctx("write", &file_path)?;
    file.sync_data().ctx("sync", &file_path)?;
    Ok(stored)
}

/// The whole apt no-op path, run by `main` before anything else: true when the arguments are
/// exactly `reconcile --from-apt [--root DIR]` and the stored fingerprint still matches.
pub fn apt_noop<I: IntoIterator<Item = std::ffi::OsString>>(args: I) -> bool {
    let mut root = std::env::var_os("RDKMS_ROOT").filter(|r| !r.is_empty());
    let (mut reconcile, mut from_apt) = (false, false);
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("reconcile") if !reconcile => reconcile = true,
            Some("--from-apt") if !from_apt => from_apt = true,
            Some("--root") => root = Some(args.next().unwrap_or_default()),
            Some(s) if s.starts_with("--root=") => root = Some(s["--root=".len()..].into()),
            _ => return false,
        }
    }
    let root = root
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    reconcile && from_apt && matches(&Paths::under(root))
}

/// FNV-1a, 64 bit: tiny, stable across Rust versions, plenty for change detection.
struct Hasher(u64);

impl Hasher {
    fn new() -> Hasher {
        Hasher(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= x as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.u64(b.len() as u64);
    }
    fn u64(&mut self, v: u64) {
        for &x in &v.to_le_bytes() {
            self.0 ^= x as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::fs::FileTimes;

    const K: &str = "6.1.0-1-amd64";

    /// A small root whose directories all carry an old mtime, so that any change is visible
    /// whatever the filesystem's timestamp granularity.
    fn root() -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        let p = Paths::under(dir.path());
        for d in [
            p.install_tree.join(K).join("kernel"),
            p.system("/usr/src/linux-headers-6.1.0-1-amd64"),
            p.boot.clone(),
            p.dkms_tree.join("hello/1.0"),
            p.etc_dkms.clone(),
        ] {
            fs::create_dir_all(d).unwrap();
        }
        // Like a real system, `build` is a symlink into the headers package's directory.
        std::os::unix::fs::symlink(
            p.system("/usr/src/linux-headers-6.1.0-1-amd64"),
            p.install_tree.join(K).join("build"),
        )
        .unwrap();
        age(&p);
        (dir, p)
    }

    fn age(p: &Paths) {
        let old = SystemTime::now() - Duration::from_secs(3600);
        for d in walkdir::WalkDir::new(&p.root).follow_links(false) {
            let d = d.unwrap();
            if d.file_type().is_symlink() {
                continue;
            }
            File::open(d.path())
                .unwrap()
                .set_times(FileTimes::new().set_modified(old).set_accessed(old))
                .unwrap();
        }
    }

    fn changed(p: &Paths, change: impl FnOnce(&Paths)) -> bool {
        let before = compute(p);
        change(p);
        compute(p).hash != before.hash
    }

    #[test]
    fn unchanged_state_gives_the_same_fingerprint() {
        let (_d, p) = root();
        assert_eq!(compute(&p), compute(&p));
    }

    #[test]
    fn every_relevant_change_changes_the_fingerprint() {
        type Change = Box<dyn Fn(&Paths)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "new kernel dir",
                Box::new(|p| fs::create_dir(p.install_tree.join("6.1.0-2-amd64")).unwrap()),
            ),
            (
                "new source dir",
                Box::new(|p| fs::create_dir(p.source_tree.join("foo-1.0")).unwrap()),
            ),
            (
                "headers removed",
                Box::new(|p| {
                    fs::remove_dir(p.system("/usr/src/linux-headers-6.1.0-1-amd64")).unwrap()
                }),
            ),
            (
                "headers content arrives",
                Box::new(|p| {
                    fs::write(
                        p.system("/usr/src/linux-headers-6.1.0-1-amd64/Makefile"),
                        "",
                    )
                    .unwrap()
                }),
            ),
            (
                "new kernel image",
                Box::new(|p| fs::write(p.boot.join("vmlinuz-6.1.0-2-amd64"), "").unwrap()),
            ),
            (
                "kernel modules removed",
                Box::new(|p| fs::remove_dir(p.install_tree.join(K).join("kernel")).unwrap()),
            ),
            (
                "new module in the tree",
                Box::new(|p| fs::create_dir(p.dkms_tree.join("bar")).unwrap()),
            ),
            (
                "tree lock taken by a mutating command",
                Box::new(|p| fs::write(p.dkms_tree.join(TREE_FILES[0]), "1 build").unwrap()),
            ),
            (
                "no-autoinstall switch",
                Box::new(|p| fs::write(p.etc_dkms.join("no-autoinstall"), "").unwrap()),
            ),
            (
                "framework.conf edited in place",
                Box::new(|p| fs::write(p.etc_dkms.join("framework.conf"), "x=1\n").unwrap()),
            ),
        ];
        for (what, change) in cases {
            let (_d, p) = root();
            assert!(changed(&p, change), "{what} did not change the fingerprint");
        }
    }

    #[test]
    fn irrelevant_changes_keep_the_fingerprint() {
        let (_d, p) = root();
        fs::write(p.dkms_tree.join("hello/1.0/notes"), "x").unwrap();
        fs::create_dir_all(p.system("/var/log")).unwrap();
        let before = compute(&p);
        fs::write(p.system("/var/log/syslog"), "x").unwrap();
        assert_eq!(compute(&p).hash, before.hash);
    }

    #[test]
    fn stored_fingerprint_matches_until_something_changes() {
        let (_d, p) = root();
        assert!(!matches(&p), "nothing stored yet");
        // Creating the file is a change of the tree dir: age it again as time would.
        invalidate(&p).unwrap();
        age(&p);
        assert!(store(&p).unwrap());
        assert!(matches(&p));
        // Storing again rewrites in place: the tree directory is untouched.
        let tree_mtime = fs::metadata(&p.dkms_tree).unwrap().modified().unwrap();
        assert!(store(&p).unwrap());
        assert_eq!(
            fs::metadata(&p.dkms_tree).unwrap().modified().unwrap(),
            tree_mtime
        );
        assert!(matches(&p));
        fs::create_dir(p.install_tree.join("6.1.0-9-amd64")).unwrap();
        assert!(!matches(&p));
    }

    #[test]
    fn invalidated_fingerprint_never_matches() {
        let (_d, p) = root();
        invalidate(&p).unwrap();
        age(&p);
        assert!(store(&p).unwrap());
        invalidate(&p).unwrap();
        assert!(!matches(&p));
    }

    #[test]
    fn apt_noop_only_for_the_exact_apt_command_line() {
        let (_d, p) = root();
        invalidate(&p).unwrap();
        age(&p);
        assert!(store(&p).unwrap());
        let args = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        let r = p.root.to_str().unwrap();
        assert!(apt_noop(args(&["reconcile", "--from-apt", "--root", r])));
        let eq = format!("--root={r}");
        assert!(apt_noop(args(&[&eq, "--from-apt", "reconcile"])));
        assert!(!apt_noop(args(&["reconcile", "--root", r])));
        assert!(!apt_noop(args(&[
            "reconcile",
            "--from-apt",
            "--root",
            r,
            "-k",
            "x"
        ])));
        assert!(!apt_noop(args(&["status", "--from-apt", "--root", r])));
        fs::create_dir(p.source_tree.join("new-1.0")).unwrap();
        assert!(!apt_noop(args(&["reconcile", "--from-apt", "--root", r])));
    }

    #[test]
    fn a_just_released_lock_does_not_make_the_fingerprint_racy() {
        let (_d, p) = root();
        invalidate(&p).unwrap();
        fs::write(p.dkms_tree.join(TREE_FILES[0]), "pid 1: rdkms reconcile").unwrap();
        age(&p);
        fs::write(p.dkms_tree.join(TREE_FILES[0]), "").unwrap();
        assert!(store(&p).unwrap());
        assert!(matches(&p));
    }

    #[test]
    fn fresh_timestamps_are_not_trusted() {
        let (_d, p) = root();
        fs::create_dir(p.source_tree.join("fresh-1.0")).unwrap();
        assert!(!store(&p).unwrap());
        assert!(!matches(&p));
        let fp = compute(&p);
        assert!(fp.is_racy(SystemTime::now()));
        assert!(!fp.is_racy(SystemTime::now() + RACY + Duration::from_secs(1)));
    }
}
