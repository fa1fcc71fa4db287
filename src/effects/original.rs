//! The kernel's own module that a DKMS module replaces, set aside as DKMS 3.2.2 does (Debian 13,
//! e.g. tp-smapi-dkms's hdaps): on the first install for a kernel it moves to
//! `<tree>/M/original_module/K/A/` next to a `NAME.ko*.origin` file naming where it came from,
//! and goes back there when the module is uninstalled. `status` reports the directory.

use std::fs;
use std::path::{Path, PathBuf};

use crate::base::error::{Error, IoContext, Result};
use crate::system::console::Console;
use crate::system::kernel::{module_file_name, Compression};

/// Where the originals of one module live for one kernel and how their paths are recorded.
pub struct Originals<'a> {
    /// `<tree>/M/original_module/K/A`.
    pub backup: PathBuf,
    /// `<installtree>/K`.
    pub modules_dir: &'a Path,
    /// The `--root` the recorded paths are relative to (DKMS records system paths).
    pub root: &'a Path,
}

impl Originals<'_> {
    /// Moves the first same-named module DKMS 3.2.2 would archive: from `extra/`, `updates/`,
    /// the module's install location, or the only one anywhere in the kernel's tree
    /// (`same_named`). Several and none of the preferred places: left in place (DKMS moves them
    /// all to `collisions/` and never restores them; rdkms keeps the kernel intact).
    /// A file in the module's own install location with the bytes of `ours` is this module's
    /// copy left by a run killed before it recorded the install, not an original: it stays.
    pub fn set_aside(
        &self,
        name: &str,
        install_location: &str,
        same_named: &[PathBuf],
        ours: &Path,
        console: &Console,
    ) -> Result<()> {
        let own_dir = self
            .modules_dir
            .join(install_location.trim_start_matches('/'));
        let preferred = ["extra", "updates", install_location.trim_start_matches('/')]
            .into_iter()
            .flat_map(|dir| {
                Compression::ALL
                    .iter()
                    .map(move |c| self.modules_dir.join(dir).join(module_file_name(name, *c)))
            })
            .find(|p| p.is_file());
        let Some(found) = preferred.or_else(|| match same_named {
            [only] => Some(only.clone()),
            _ => None,
        }) else {
            return Ok(());
        };
        if found.parent() == Some(own_dir.as_path()) && same_bytes(&found, ours) {
            return Ok(());
        }
        let record = self.recorded(&found);
        console.say(format!(
            "Found pre-existing {}, archiving for uninstallation",
            record.display()
        ));
        fs::create_dir_all(&self.backup).ctx("create", &self.backup)?;
        let file_name = found.file_name().unwrap_or_default().to_os_string();
        let origin = self
            .backup
            .join(format!("{}.origin", file_name.to_string_lossy()));
        crate::state::atomic::write_file(&origin, format!("{}\n", record.display()).as_bytes())?;
        move_file(&found, &self.backup.join(&file_name))
    }

    /// Puts back every archived original of `name` whose `.origin` points into this kernel's
    /// module tree, then removes the empty archive directories.
    pub fn restore(&self, name: &str, console: &Console) -> Result<()> {
        let Ok(entries) = fs::read_dir(&self.backup) else {
            return Ok(());
        };
        let prefix = format!("{name}.ko");
        for entry in entries.flatten() {
            let origin = entry.path();
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let Some(module_file) = file_name.strip_suffix(".origin") else {
                continue;
            };
            if !module_file.starts_with(&prefix) {
                continue;
            }
            let archived = self.backup.join(module_file);
            if !archived.is_file() {
                continue;
            }
            let text = fs::read_to_string(&origin).ctx("read", &origin)?;
            let record = PathBuf::from(text.lines().next().unwrap_or("").trim());
            let target = crate::system::config::rooted(self.root, &record);
            if !target.starts_with(self.modules_dir) || !lexically_inside(&target) {
                console.warn(format!(
                    "Bad original location '{}' in {}",
                    record.display(),
                    origin.display()
                ));
                continue;
            }
            console.say(format!(
                "Restoring archived original module {}",
                record.display()
            ));
            if let Some(dir) = target.parent() {
                fs::create_dir_all(dir).ctx("create", dir)?;
            }
            move_file(&archived, &target)?;
            fs::remove_file(&origin).ctx("delete", &origin)?;
        }
        Ok(())
    }

    /// Deletes this kernel's archive (after the last uninstall) and its empty parents up to the
    /// module's directory, as DKMS does.
    pub fn forget(&self) -> Result<()> {
        match fs::remove_dir_all(&self.backup) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("delete", &self.backup, e)),
        }
        let mut dir = self.backup.parent();
        for _ in 0..2 {
            match dir {
                Some(d) if fs::remove_dir(d).is_ok() => dir = d.parent(),
                _ => break,
            }
        }
        Ok(())
    }

    /// The system path DKMS records for a file under the root.
    fn recorded(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(self.root) {
            Ok(rel) => Path::new("/").join(rel),
            Err(_) => path.to_path_buf(),
        }
    }
}

/// Whether two files hold the same bytes (unreadable counts as different).
pub fn same_bytes(a: &Path, b: &Path) -> bool {
    fs::read(a).is_ok_and(|x| fs::read(b).is_ok_and(|y| x == y))
}

/// A recorded path must not climb out with `..`.
fn lexically_inside(path: &Path) -> bool {
    !path
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
}

/// `mv -f`: a rename, or a copy and delete across file systems (`/var` and `/lib` may differ).
fn move_file(from: &Path, to: &Path) -> Result<()> {
    if fs::rename(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to).ctx("copy", from)?;
    fs::remove_file(from).ctx("delete", from)
}
