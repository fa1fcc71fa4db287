//! Durable records of work that must not be lost when a command dies halfway (reliability
//! invariant (c)): each is written and synced before the work starts and removed once it is
//! done, so the next command that takes the tree lock finishes it.
//!
//! - [`Marks`]: one empty file per kernel (a pending depmod, initramfs update or hook run).
//! - [`begin_removal`]: the files an uninstall is about to delete, after its `kernel-K-A`
//!   link is gone (so nothing calls the version installed any more); [`replay`] deletes what
//!   is left.
//! - [`begin_install`]: a module version being installed on a kernel, recorded before the
//!   first file is set aside or copied and forgotten once its `kernel-K-A` link is written;
//!   the next command installs it again (see `lifecycle::recover`).

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::base::error::{Error, IoContext, Result};
use crate::base::files;
use crate::state::atomic;

/// A set of kernels with a pending piece of work, kept as empty files in one directory of the
/// dkms tree. The directory goes with the last mark, so a tree with nothing pending holds
/// exactly what DKMS's would.
pub struct Marks {
    dir: PathBuf,
    /// Keep the directory when empty (the initramfs marks: see `initramfs::clear`).
    keep_dir: bool,
}

impl Marks {
    /// The marks kept in `<dkms_tree>/<name>`.
    pub fn new(dkms_tree: &Path, name: &str) -> Marks {
        Marks {
            dir: dkms_tree.join(name),
            keep_dir: false,
        }
    }

    /// Marks whose directory stays when the last one is cleared.
    pub fn keeping_dir(dkms_tree: &Path, name: &str) -> Marks {
        Marks {
            keep_dir: true,
            ..Marks::new(dkms_tree, name)
        }
    }

    /// Kernels with a mark.
    pub fn pending(&self) -> BTreeSet<String> {
        fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Records (and syncs to disk) a mark for `kernel`.
    pub fn record(&self, kernel: &str) -> Result<()> {
        let file = self.dir.join(kernel);
        // A hook postponing its work records without the lock: the lock holder may remove
        // the (empty) directory in between, so try again.
        let mut tries = 0;
        loop {
            fs::create_dir_all(&self.dir).ctx("create", &self.dir)?;
            match File::create(&file).and_then(|f| f.sync_all()) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 3 => tries += 1,
                Err(e) => return Err(Error::io("write", &file, e)),
            }
        }
        atomic::sync_dir(&self.dir)?;
        if let Some(parent) = self.dir.parent() {
            atomic::sync_dir(parent)?;
        }
        Ok(())
    }

    /// Forgets the mark of `kernel` (done, or no longer needed), and the directory with the
    /// last one unless it is kept.
    pub fn clear(&self, kernel: &str) -> Result<()> {
        let file = self.dir.join(kernel);
        if !files::remove_file(&file, "remove")? {
            return Ok(());
        }
        if !self.keep_dir && fs::remove_dir(&self.dir).is_ok() {
            return Ok(());
        }
        atomic::sync_dir(&self.dir)
    }
}

/// Directory of the pending removals.
const REMOVALS_DIR: &str = ".rdkms-removals";

/// A piece of work in progress, recorded durably as one file in a directory of the dkms tree
/// and forgotten when it ends; the directory goes with its last record.
pub struct Record {
    path: PathBuf,
}

impl Record {
    /// Writes (and syncs) `text` as `<dkms_tree>/<dir>/<name>`.
    fn write(dkms_tree: &Path, dir: &str, name: &str, text: &str) -> Result<Record> {
        let dir = dkms_tree.join(dir);
        fs::create_dir_all(&dir).ctx("create", &dir)?;
        let path = dir.join(name.replace('/', "_"));
        atomic::write_file(&path, text.as_bytes())?;
        Ok(Record { path })
    }

    /// The work ended: forget it (and the directory with the last record).
    pub fn finish(self) -> Result<()> {
        files::remove_file(&self.path, "remove")?;
        if let Some(dir) = self.path.parent() {
            let _ = fs::remove_dir(dir);
        }
        Ok(())
    }
}

/// Records an uninstall in progress: `files` (one absolute path per line), the installed
/// files it deletes, under a name unique to this uninstall, before its `kernel-K-A` link goes.
pub fn begin_removal(dkms_tree: &Path, key: &str, files: &[PathBuf]) -> Result<Record> {
    let mut text = String::new();
    for f in files {
        let line = f.to_string_lossy();
        if !line.contains('\n') {
            text.push_str(&line);
            text.push('\n');
        }
    }
    Record::write(dkms_tree, REMOVALS_DIR, key, &text)
}

/// Finishes the removals an interrupted uninstall recorded: deletes each listed file that is
/// still there (only regular files below `install_tree`), then the record. Called under the
/// tree lock before anything else changes.
pub fn replay(dkms_tree: &Path, install_tree: &Path) {
    let dir = dkms_tree.join(REMOVALS_DIR);
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            // A record killed while being written: its uninstall never started.
            if name.ends_with(atomic::TMP_MARK) {
                let _ = fs::remove_file(e.path());
            }
            continue;
        }
        let text = fs::read_to_string(e.path()).unwrap_or_default();
        for line in text.lines() {
            let p = Path::new(line);
            let inside = p.is_absolute()
                && p.starts_with(install_tree)
                && !p.components().any(|c| c == std::path::Component::ParentDir);
            if inside && fs::symlink_metadata(p).is_ok_and(|m| m.is_file()) {
                let _ = fs::remove_file(p);
            }
        }
        let _ = fs::remove_file(e.path());
    }
    let _ = fs::remove_dir(&dir);
}

/// Directory of the installs in progress.
const INSTALLS_DIR: &str = ".rdkms-installs";

/// What an install in progress was asked to do: enough to do it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallIntent {
    pub module: String,
    pub version: String,
    pub kernel: String,
    pub arch: String,
    /// `--force` and `--force-version-override`, as the interrupted command had them.
    pub force: bool,
    pub version_override: bool,
}

impl InstallIntent {
    fn key(&self) -> String {
        format!(
            "{}-{}-{}-{}",
            self.module, self.version, self.kernel, self.arch
        )
    }

    fn to_text(&self) -> String {
        let flag = |on: bool, word: &str| {
            if on {
                word.to_string()
            } else {
                "-".to_string()
            }
        };
        format!(
            "{}\n{}\n{}\n{}\n{} {}\n",
            self.module,
            self.version,
            self.kernel,
            self.arch,
            flag(self.force, "force"),
            flag(self.version_override, "version-override")
        )
    }

    fn from_text(text: &str) -> Option<InstallIntent> {
        let mut lines = text.lines();
        let mut next = || lines.next().filter(|l| !l.is_empty()).map(str::to_string);
        let (module, version, kernel, arch, flags) = (next()?, next()?, next()?, next()?, next()?);
        Some(InstallIntent {
            module,
            version,
            kernel,
            arch,
            force: flags.split(' ').any(|w| w == "force"),
            version_override: flags.split(' ').any(|w| w == "version-override"),
        })
    }
}

/// Records an install in progress (reliability invariant (c)) before it changes anything;
/// it is finished when it ended, done or failed with its error reported.
pub fn begin_install(dkms_tree: &Path, intent: &InstallIntent) -> Result<Record> {
    Record::write(dkms_tree, INSTALLS_DIR, &intent.key(), &intent.to_text())
}

/// The install records in the tree, each with what it says (`None`: killed while it was
/// written, so its install never started). Reads only.
fn install_records(dkms_tree: &Path) -> Vec<(PathBuf, Option<InstallIntent>)> {
    let Ok(entries) = fs::read_dir(dkms_tree.join(INSTALLS_DIR)) else {
        return Vec::new();
    };
    let mut found: Vec<_> = entries
        .flatten()
        .map(|e| {
            let intent = Some(e.file_name())
                .filter(|n| !n.to_string_lossy().starts_with('.'))
                .and_then(|_| fs::read_to_string(e.path()).ok())
                .and_then(|t| InstallIntent::from_text(&t));
            (e.path(), intent)
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// The installs a killed command left unfinished (for `doctor`, which changes nothing).
pub fn pending_installs(dkms_tree: &Path) -> Vec<InstallIntent> {
    install_records(dkms_tree)
        .into_iter()
        .filter_map(|(_, intent)| intent)
        .collect()
}

/// The installs a killed command left unfinished, each with the handle that forgets it;
/// records that never became complete are removed. Under the tree lock only.
pub fn interrupted_installs(dkms_tree: &Path) -> Vec<(InstallIntent, Record)> {
    let mut found = Vec::new();
    for (record, intent) in install_records(dkms_tree) {
        match intent {
            Some(intent) => found.push((intent, Record { path: record })),
            None => {
                let _ = fs::remove_file(&record);
            }
        }
    }
    if found.is_empty() {
        let _ = fs::remove_dir(dkms_tree.join(INSTALLS_DIR));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip() {
        let t = tempfile::tempdir().unwrap();
        let m = Marks::new(t.path(), ".pending");
        assert!(m.pending().is_empty());
        m.record("6.12.117+deb13-amd64").unwrap();
        assert_eq!(
            m.pending().into_iter().collect::<Vec<_>>(),
            ["6.12.117+deb13-amd64"]
        );
        m.clear("6.12.117+deb13-amd64").unwrap();
        m.clear("gone").unwrap();
        assert!(m.pending().is_empty());
        assert!(!t.path().join(".pending").exists());
    }

    #[test]
    fn replay_deletes_only_files_inside_the_install_tree() {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("tree");
        let inst = t.path().join("inst");
        fs::create_dir_all(inst.join("K/updates")).unwrap();
        fs::create_dir_all(&tree).unwrap();
        let inside = inst.join("K/updates/a.ko");
        let outside = t.path().join("keep.ko");
        fs::write(&inside, "x").unwrap();
        fs::write(&outside, "x").unwrap();
        let r = begin_removal(&tree, "a/K/x", &[inside.clone(), outside.clone()]).unwrap();
        replay(&tree, &inst);
        assert!(!inside.exists());
        assert!(outside.exists());
        r.finish().unwrap();
        assert!(!tree.join(REMOVALS_DIR).exists());
    }

    #[test]
    fn an_install_record_round_trips_and_goes_with_finish() {
        let t = tempfile::tempdir().unwrap();
        let intent = InstallIntent {
            module: "hello".into(),
            version: "1.0".into(),
            kernel: "6.12.117+deb13-amd64".into(),
            arch: "x86_64".into(),
            force: true,
            version_override: false,
        };
        let rec = begin_install(t.path(), &intent).unwrap();
        fs::write(t.path().join(INSTALLS_DIR).join(".x.rdkms-tmp"), "half").unwrap();
        assert_eq!(pending_installs(t.path()), std::slice::from_ref(&intent));
        let found = interrupted_installs(t.path());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, intent);
        rec.finish().unwrap();
        assert!(interrupted_installs(t.path()).is_empty());
        assert!(!t.path().join(INSTALLS_DIR).exists());
    }
}
