//! Crash-safe file system changes: everything rdkms writes into the dkms tree or the kernel's
//! module tree is prepared under a hidden temporary name and made visible by one rename, so a
//! kill -9 or power loss leaves either the old state or the new one, never a half-written file.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::fcntl::{renameat2, RenameFlags};

use crate::base::error::{Error, IoContext, Result};

/// The marker in every temporary name rdkms creates, so leftovers can be recognised and removed.
pub const TMP_MARK: &str = "rdkms-tmp";

/// Flushes a directory entry change (rename, create) to disk.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("sync directory", dir)
}

/// Copies `from` to `dir/name` through a temporary file in `dir` (fsynced, mode set, renamed).
pub fn copy_file(from: &Path, dir: &Path, name: &str, mode: u32) -> Result<PathBuf> {
    let dest = dir.join(name);
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(&format!(".{TMP_MARK}"))
        .tempfile_in(dir)
        .ctx("create a temporary file in", dir)?;
    let mut src = File::open(from).ctx("open", from)?;
    // A failure here is nearly always the destination (a full disk): name it.
    io::copy(&mut src, tmp.as_file_mut()).ctx("write", &dest)?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .ctx("set permissions of", tmp.path())?;
    tmp.as_file().sync_all().ctx("sync", tmp.path())?;
    tmp.persist(&dest)
        .map_err(|e| e.error)
        .ctx("rename into place", &dest)?;
    sync_dir(dir)?;
    Ok(dest)
}

/// Writes `bytes` to `path` through a temporary file next to it.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(&format!(".{TMP_MARK}"))
        .tempfile_in(dir)
        .ctx("create a temporary file in", dir)?;
    io::Write::write_all(tmp.as_file_mut(), bytes).ctx("write", tmp.path())?;
    tmp.as_file().sync_all().ctx("sync", tmp.path())?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .ctx("rename into place", path)?;
    sync_dir(dir)
}

/// `path`'s directory and the hidden temporary name beside it (`.NAME.PID.rdkms-tmp`), which
/// every reader skips and `sweep` removes.
fn hidden_sibling(path: &Path) -> (&Path, PathBuf) {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (
        dir,
        dir.join(format!(".{name}.{}.{TMP_MARK}", std::process::id())),
    )
}

/// Points the symlink `link` at `target`, replacing any previous link in one rename.
pub fn symlink(target: &Path, link: &Path) -> Result<()> {
    let (dir, tmp) = hidden_sibling(link);
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).ctx("create symlink", &tmp)?;
    fs::rename(&tmp, link).ctx("rename symlink into place", link)?;
    sync_dir(dir)
}

/// Moves the complete directory `staged` to `dest`. An existing `dest` is swapped out in the
/// same atomic step (RENAME_EXCHANGE) and then deleted, so readers always see a whole directory.
pub fn replace_dir(staged: &Path, dest: &Path) -> Result<()> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    if fs::symlink_metadata(dest).is_ok() {
        renameat2(None, staged, None, dest, RenameFlags::RENAME_EXCHANGE)
            .map_err(io::Error::from)
            .ctx("swap into place", dest)?;
        sync_dir(parent)?;
        fs::remove_dir_all(staged).ctx("remove the replaced", staged)?;
    } else {
        fs::rename(staged, dest).ctx("rename into place", dest)?;
        sync_dir(parent)?;
    }
    Ok(())
}

/// Deletes a directory tree so that it disappears at once: renamed to a hidden name first,
/// then removed. Symlinks inside (such as `source`) are removed, never followed.
pub fn remove_dir(dir: &Path) -> Result<()> {
    let mut removals = Removals::default();
    removals.hide(dir)?;
    removals.finish()
}

/// A batch of directory removals. `hide` renames each directory to a hidden name at once, so
/// readers never see it again; `finish` makes the renames durable with one flush per parent
/// directory (not one per removal) and only then deletes the contents, so a crash leaves each
/// directory either whole under its name or hidden (and removed by `sweep`).
#[derive(Debug, Default)]
pub struct Removals {
    hidden: Vec<PathBuf>,
    parents: BTreeSet<PathBuf>,
}

impl Removals {
    /// Renames `dir` (if it exists) to a hidden name in the same directory.
    pub fn hide(&mut self, dir: &Path) -> Result<()> {
        if fs::symlink_metadata(dir).is_err() {
            return Ok(());
        }
        let (parent, doomed) = hidden_sibling(dir);
        fs::rename(dir, &doomed).ctx("rename for removal", dir)?;
        self.parents.insert(parent.to_path_buf());
        self.hidden.push(doomed);
        Ok(())
    }

    /// Flushes every renamed-from directory once, then deletes the hidden trees. A directory
    /// hidden inside one hidden later is gone with it (and needs no flush of its own).
    pub fn finish(self) -> Result<()> {
        for parent in &self.parents {
            match File::open(parent) {
                Ok(d) => d.sync_all().ctx("sync directory", parent)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("sync directory", parent, e)),
            }
        }
        for doomed in self.hidden.iter().rev() {
            match fs::remove_dir_all(doomed) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", doomed, e)),
            }
        }
        Ok(())
    }
}

/// Removes rdkms's leftover temporary entries (from an interrupted run) directly inside `dir`,
/// if this process has not swept it yet. Leftovers come only from
/// an interrupted run, and every writer holds the tree lock, so none appear while this
/// process runs: uninstalling a thousand modules from one `updates/dkms` lists it once, not
/// a thousand times.
pub fn clean_leftovers_once(dir: &Path) {
    static SWEPT: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let mut swept = SWEPT.lock().unwrap_or_else(|p| p.into_inner());
    if swept
        .get_or_insert_with(HashSet::new)
        .insert(dir.to_path_buf())
    {
        sweep(dir);
    }
}

/// Removes rdkms's leftovers directly inside `dir`; returns the names of the subdirectories
/// that are not hidden, from the same listing.
pub fn sweep(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut subdirs = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if name.starts_with('.') && name.ends_with(TMP_MARK) {
            let p = e.path();
            if is_dir {
                let _ = fs::remove_dir_all(&p);
            } else {
                let _ = fs::remove_file(&p);
            }
        } else if is_dir && !name.starts_with('.') {
            subdirs.push(name.into_owned());
        }
    }
    subdirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_dir_swaps_and_removes_the_old_one() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("A");
        fs::create_dir_all(dest.join("module")).unwrap();
        fs::write(dest.join("module/old.ko"), "old").unwrap();
        let staged = t.path().join(".tmp_A_x");
        fs::create_dir_all(staged.join("module")).unwrap();
        fs::write(staged.join("module/new.ko"), "new").unwrap();
        replace_dir(&staged, &dest).unwrap();
        assert!(dest.join("module/new.ko").is_file());
        assert!(!dest.join("module/old.ko").exists());
        assert!(!staged.exists());
    }

    #[test]
    fn removals_hide_at_once_and_delete_on_finish_even_when_nested() {
        let t = tempfile::tempdir().unwrap();
        let k = t.path().join("1.0/K");
        for a in ["A1", "A2"] {
            fs::create_dir_all(k.join(a).join("module")).unwrap();
            fs::write(k.join(a).join("module/m.ko"), "ko").unwrap();
        }
        let other = t.path().join("2.0/K");
        fs::create_dir_all(&other).unwrap();
        let mut removals = Removals::default();
        removals.hide(&k.join("A1")).unwrap();
        removals.hide(&k).unwrap();
        removals.hide(&other).unwrap();
        removals.hide(&t.path().join("missing")).unwrap();
        // Gone from view before the batch is finished; a crash here leaves hidden leftovers.
        assert!(!k.exists() && !other.exists());
        let hidden = |dir: &str| {
            fs::read_dir(t.path().join(dir))
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(TMP_MARK))
                .count()
        };
        assert_eq!((hidden("1.0"), hidden("2.0")), (1, 1));
        removals.finish().unwrap();
        assert_eq!((hidden("1.0"), hidden("2.0")), (0, 0));
    }

    #[test]
    fn sweep_lists_visible_subdirectories_and_removes_leftovers() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("K")).unwrap();
        fs::create_dir(t.path().join(".hidden")).unwrap();
        fs::create_dir(t.path().join(format!(".K.9.{TMP_MARK}"))).unwrap();
        fs::write(t.path().join("file"), "").unwrap();
        assert_eq!(sweep(t.path()), ["K"]);
        assert!(!t.path().join(format!(".K.9.{TMP_MARK}")).exists());
        assert!(t.path().join(".hidden").exists());
    }

    #[test]
    fn copy_file_leaves_no_temporary_behind() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src.ko");
        fs::write(&src, "data").unwrap();
        let out = t.path().join("out");
        fs::create_dir(&out).unwrap();
        let dest = copy_file(&src, &out, "x.ko", 0o644).unwrap();
        assert_eq!(fs::read_to_string(&dest).unwrap(), "data");
        assert_eq!(fs::read_dir(&out).unwrap().count(), 1);
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn leftovers_are_cleaned_and_others_kept() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join(format!(".x.ko.abc.{TMP_MARK}")), "").unwrap();
        fs::create_dir(t.path().join(format!(".A.1.{TMP_MARK}"))).unwrap();
        fs::write(t.path().join("keep.ko"), "").unwrap();
        clean_leftovers_once(t.path());
        let left: Vec<_> = fs::read_dir(t.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1);
    }

    #[test]
    fn symlink_replaces_an_existing_link() {
        let t = tempfile::tempdir().unwrap();
        let link = t.path().join("kernel-K-A");
        symlink(Path::new("1.0/K/A"), &link).unwrap();
        symlink(Path::new("2.0/K/A"), &link).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), PathBuf::from("2.0/K/A"));
    }
}
