//! Installing built modules into `<installtree>/K` and taking them out again: every file
//! written under a temporary name, fsynced and renamed; destinations checked to stay inside the
//! kernel's module directory; the `kernel-K-A` marker moved atomically.
//!
//! A module file that an installed binary module package (`mkbmdeb`) owns belongs to dpkg:
//! `install` leaves it in place with a warning and counts the module as handled, as DKMS does
//! with a module its version check keeps (exit 0, the version is marked installed; `--force`
//! overwrites it), and `uninstall` never deletes it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::base::error::{Error, IoContext, Result};
use crate::base::files;
use crate::base::version::ver_cmp;
use crate::conf::{DkmsConf, ModuleEntry};
use crate::effects::original::Originals;
use crate::effects::script::{Output, Script};
use crate::state::atomic;
use crate::state::dpkg::{self, BinaryPackage};
use crate::state::journal::{self, InstallIntent};
use crate::state::module_files::{find_module_file, same_named};
use crate::state::tree::Tree;
use crate::system::config::Paths;
use crate::system::console::Console;
use crate::system::kernel::{module_file_name, Compression, KernelFacts};

/// One module version on one kernel, as install and uninstall see it.
pub struct Placement<'a> {
    pub module: &'a str,
    pub version: &'a str,
    pub tree: &'a Tree,
    pub facts: &'a KernelFacts,
    pub conf: &'a DkmsConf,
    /// The module's source directory (where PRE_INSTALL/POST_INSTALL/POST_REMOVE run).
    pub source_dir: &'a Path,
    pub console: &'a Console,
    /// The system paths (for the files dpkg lists) and the installed binary module packages.
    pub paths: &'a Paths,
    pub packages: &'a [BinaryPackage],
}

/// How install treats an existing same-named module.
#[derive(Debug, Clone, Copy, Default)]
pub struct InstallOptions {
    /// `--force`: install even if PRE_INSTALL fails or a newer/equal module exists.
    pub force: bool,
    /// `--force-version-override`: skip the version check only.
    pub version_override: bool,
    /// Completing an install a killed command began: its PRE_INSTALL ran already.
    pub resume: bool,
}

impl Placement<'_> {
    fn built_dir(&self) -> PathBuf {
        self.tree.built_modules_dir(
            self.module,
            self.version,
            &self.facts.kernel,
            &self.facts.arch,
        )
    }

    /// `<installtree>/K/<location>`, created, and checked to be inside `<installtree>/K` once
    /// symlinks are resolved.
    fn dest_dir(&self, location: &str) -> Result<PathBuf> {
        let kernel_dir = &self.facts.modules_dir;
        let real_kernel = fs::canonicalize(kernel_dir).ctx("resolve", kernel_dir)?;
        let mut dir = kernel_dir.clone();
        for part in Path::new(location.trim_start_matches('/')).components() {
            dir.push(part);
            if fs::symlink_metadata(&dir).is_err() {
                fs::create_dir(&dir).ctx("create", &dir)?;
            }
            let real = fs::canonicalize(&dir).ctx("resolve", &dir)?;
            if !real.starts_with(&real_kernel) {
                return Err(Error::PathEscape {
                    file: self.conf.file.clone(),
                    what: "DEST_MODULE_LOCATION".to_string(),
                    value: format!("{location} (resolves to {})", real.display()),
                });
            }
        }
        Ok(dir)
    }

    /// Installs every module and marks the version installed; returns whether anything was
    /// installed (depmod then has work to do). Follows Debian 12's dkms: PRE_INSTALL first
    /// (failure aborts with 101 unless forced), a module refused by the version check counts
    /// as handled, POST_INSTALL last with its status ignored.
    pub fn install(&self, opts: InstallOptions) -> Result<()> {
        let f = self.facts;
        self.check_scripts()?;
        if !f.modules_dir.is_dir() {
            return Err(Error::InstallFailed(format!(
                "The directory {} doesn't exist. You cannot install a module onto a non-existent kernel; install the kernel or pick another with -k.",
                f.modules_dir.display()
            )));
        }
        let built_dir = self.built_dir();
        let sources: Vec<PathBuf> = self
            .conf
            .modules
            .iter()
            .map(|m| {
                find_module_file(&built_dir, &m.dest_name, f.compression).ok_or_else(|| {
                    Error::MissingBuiltModule {
                        module: m.dest_name.clone(),
                        dir: built_dir.clone(),
                        rebuild: format!(
                            "rdkms build {}/{} -k {} --force",
                            self.module, self.version, f.kernel
                        ),
                    }
                })
            })
            .collect::<Result<_>>()?;

        if let Some(line) = self.conf.pre_install.as_ref().filter(|_| !opts.resume) {
            if let Some(code) = self
                .script("pre_install", line)
                .run(Output::Console, self.console)?
            {
                if code != 0 && !opts.force {
                    return Err(Error::PreInstallFailed {
                        script: line.clone(),
                        code,
                    });
                }
            }
        }

        // From the first file set aside to the link, a kill leaves the record for the next
        // command to finish; a failure here is reported now, so its record goes.
        let record = journal::begin_install(
            &self.tree.root,
            &InstallIntent {
                module: self.module.to_string(),
                version: self.version.to_string(),
                kernel: f.kernel.clone(),
                arch: f.arch.clone(),
                force: opts.force,
                version_override: opts.version_override,
            },
        )?;
        let placed = self.place_files(opts, &sources);
        record.finish()?;
        placed?;

        if let Some(line) = &self.conf.post_install {
            self.script("post_install", line)
                .run(Output::Console, self.console)?;
        }
        Ok(())
    }

    /// Sets the kernel's own modules aside, copies the built ones in and writes the
    /// `kernel-K-A` link.
    fn place_files(&self, opts: InstallOptions, sources: &[PathBuf]) -> Result<()> {
        let f = self.facts;
        // A kernel's own same-named modules are set aside on the first install for it only.
        let had_link = self
            .tree
            .installed_link(self.module, &f.kernel, &f.arch)
            .symlink_metadata()
            .is_ok();
        let mut any_installed = false;
        for (m, src) in self.conf.modules.iter().zip(sources) {
            let file_name = src
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !opts.force {
                if let Some((file, pkg)) = self.packaged(&m.install_location, &m.dest_name) {
                    self.console.warn(format!(
                        "{} belongs to the installed package {}; it stays in place. Remove the package first, or use --force to overwrite it.",
                        file.display(),
                        pkg.package
                    ));
                    any_installed = true;
                    continue;
                }
            }
            if !(opts.force || opts.version_override || self.version_check(m, src)) {
                continue;
            }
            if !had_link {
                let same = same_named(&f.modules_dir, &m.dest_name);
                self.originals().set_aside(
                    &m.dest_name,
                    &m.install_location,
                    &same,
                    src,
                    self.console,
                )?;
            }
            let dir = self.dest_dir(&m.install_location)?;
            atomic::clean_leftovers_once(&dir);
            self.console
                .say(format!("Installing {}/{file_name}", dir.display()));
            atomic::copy_file(src, &dir, &file_name, 0o644)?;
            any_installed = true;
            for c in Compression::ALL {
                let other = dir.join(module_file_name(&m.dest_name, c));
                if other.file_name().map(|n| n.to_string_lossy().into_owned())
                    != Some(file_name.clone())
                {
                    let _ = fs::remove_file(other);
                }
            }
        }
        if !self.conf.modules.is_empty() && !any_installed {
            return Err(Error::InstallAborted);
        }

        let link = self.tree.installed_link(self.module, &f.kernel, &f.arch);
        atomic::symlink(
            &Tree::installed_link_target(self.version, &f.kernel, &f.arch),
            &link,
        )
    }

    /// Debian's version sanity check, simplified: with exactly one same-named module in the
    /// kernel tree, refuse to replace a newer one and skip an identical one (same version and
    /// srcversion; for a module with neither, as DKMS 3.2.2 decides, the same bytes — so
    /// tp-smapi-dkms's unversioned hdaps replaces the kernel's own). Returns whether to
    /// install. Unreadable modinfo means "cannot tell": install.
    fn version_check(&self, m: &ModuleEntry, ours: &Path) -> bool {
        let f = self.facts;
        // A copy of these very bytes in the module's own location is what an interrupted
        // install of this version left: not a module to compare with.
        let own_dir = f
            .modules_dir
            .join(m.install_location.trim_start_matches('/'));
        let existing: Vec<PathBuf> = same_named(&f.modules_dir, &m.dest_name)
            .into_iter()
            .filter(|p| {
                p.parent() != Some(own_dir.as_path())
                    || !crate::effects::original::same_bytes(p, ours)
            })
            .collect();
        let [theirs] = existing.as_slice() else {
            if existing.len() > 1 {
                self.console.warn(format!(
                    "Cannot do version sanity checking because multiple {}.ko modules were found in kernel {}.",
                    m.dest_name, f.kernel
                ));
            }
            return true;
        };
        let (Some(their), Some(our)) = (modinfo(theirs), modinfo(ours)) else {
            return true;
        };
        if !their.version.is_empty()
            && !our.version.is_empty()
            && ver_cmp(&their.version, &our.version).is_gt()
        {
            self.console.error(format!(
                "Module version {} for {}\nis not newer than what is already found in kernel {} ({}).\nYou may override by specifying --force.",
                our.version,
                module_file_name(&m.dest_name, f.compression),
                f.kernel,
                their.version
            ));
            return false;
        }
        let unversioned = our.version.is_empty() && our.srcversion.is_empty();
        if their == our && (!unversioned || crate::effects::original::same_bytes(theirs, ours)) {
            self.console.say(format!(
                "Module version {} for {}.ko\nexactly matches what is already found in kernel {}.\nDKMS will not replace this module.\nYou may override by specifying --force.",
                our.version, m.dest_name, f.kernel
            ));
            return false;
        }
        true
    }

    /// DKMS's first two lines of an uninstall.
    fn uninstall_header(&self) {
        let f = self.facts;
        self.console.say(format!(
            "Module {}/{} for kernel {} ({}):",
            self.module, self.version, f.kernel, f.arch
        ));
        self.console
            .say("Before uninstall, this module version was ACTIVE on this kernel.");
    }

    /// What `uninstall` would print for this installation, printed before it is replaced in
    /// place (`install --force`), where DKMS really uninstalls first.
    pub fn announce_uninstall(&self) {
        let f = self.facts;
        self.uninstall_header();
        for m in &self.conf.modules {
            if let Some(dir) = self.module_location(m) {
                self.console.say(format!(
                    "Deleting {}/{}",
                    dir.display(),
                    module_file_name(&m.dest_name, f.compression)
                ));
            }
        }
    }

    /// Removes the installed files of this version and the `kernel-K-A` marker. Only a file in
    /// the install location, or a byte-identical copy in the raw DEST_MODULE_LOCATION, is
    /// deleted — never an in-tree module that merely has the same name. The files are
    /// recorded first and the marker goes before them, so an interrupted uninstall never leaves
    /// a version "installed" without its files; the next command deletes what is left.
    pub fn uninstall(&self) -> Result<()> {
        let f = self.facts;
        self.uninstall_header();
        let found: Vec<(String, Option<PathBuf>)> = self
            .conf
            .modules
            .iter()
            .map(|m| (m.dest_name.clone(), self.module_location(m)))
            .collect();
        let doomed: Vec<PathBuf> = found
            .iter()
            .filter_map(|(name, dir)| Some((name, dir.as_ref()?)))
            .flat_map(|(name, dir)| self.deletable(dir, name))
            .collect();
        // The files are recorded and the link goes first: a kill from here on leaves a module
        // that is not installed, and the next locked command finishes the removal.
        let key = format!("{}-{}-{}-{}", self.module, self.version, f.kernel, f.arch);
        let removal = journal::begin_removal(&self.tree.root, &key, &doomed)?;
        let link = self.tree.installed_link(self.module, &f.kernel, &f.arch);
        if files::remove_file(&link, "delete")? {
            atomic::sync_dir(link.parent().unwrap_or(Path::new(".")))?;
        }
        for (name, dir) in &found {
            let file_name = module_file_name(name, f.compression);
            match dir {
                Some(dir) => {
                    self.console
                        .say(format!("Deleting {}/{file_name}", dir.display()));
                    for c in Compression::ALL {
                        let p = dir.join(module_file_name(name, c));
                        if let Some(pkg) = dpkg::owner(self.paths, self.packages, &p) {
                            self.console.say(format!(
                                "Left {} in place: it belongs to the package {}",
                                p.display(),
                                pkg.package
                            ));
                        }
                    }
                    for p in doomed.iter().filter(|p| p.parent() == Some(dir.as_path())) {
                        files::remove_file(p, "delete")?;
                    }
                    atomic::clean_leftovers_once(dir);
                    remove_empty_dirs(dir, &f.modules_dir);
                }
                None => self.console.say(format!(
                    "Module {file_name} was not found within {}/",
                    f.modules_dir.display()
                )),
            }
            if self.originals().backup.is_dir() {
                self.originals().restore(name, self.console)?;
            }
        }
        self.originals().forget()?;
        removal.finish()?;
        if let Some(line) = &self.conf.post_remove {
            if self.source_dir.is_dir() {
                self.script("post_remove", line)
                    .run(Output::Console, self.console)?;
            }
        }
        Ok(())
    }

    /// The kernel's own modules this version set aside on this kernel (DKMS 3.2.2).
    fn originals(&self) -> Originals<'_> {
        Originals {
            backup: self.tree.original_module_dir(
                self.module,
                &self.facts.kernel,
                &self.facts.arch,
            ),
            modules_dir: &self.facts.modules_dir,
            root: &self.paths.root,
        }
    }

    /// One of this module's install-time scripts, run in its source directory.
    fn script<'s>(&'s self, kind: &'s str, line: &'s str) -> Script<'s> {
        Script {
            kind,
            line,
            dir: self.source_dir,
            conf: &self.conf.file,
        }
    }

    /// Refuses, before anything changes, a PRE_INSTALL, POST_INSTALL or POST_REMOVE path that
    /// leaves the source directory (found only when it is run, the module would already be
    /// half installed).
    fn check_scripts(&self) -> Result<()> {
        let c = self.conf;
        for (kind, line) in [
            ("pre_install", &c.pre_install),
            ("post_install", &c.post_install),
            ("post_remove", &c.post_remove),
        ] {
            if let Some(line) = line {
                self.script(kind, line).argv()?;
            }
        }
        Ok(())
    }

    /// The installed module files of this version (not those a package owns): what an
    /// uninstall would delete.
    pub fn installed_files(&self) -> Vec<PathBuf> {
        self.conf
            .modules
            .iter()
            .filter_map(|m| Some((m, self.module_location(m)?)))
            .flat_map(|(m, dir)| self.deletable(&dir, &m.dest_name))
            .collect()
    }

    /// Deletes `files` except those in `keep`, and the directories that leaves empty: the
    /// files of a replaced version that the new one did not overwrite.
    pub fn remove_stale(&self, files: &[PathBuf], keep: &[PathBuf]) -> Result<()> {
        for p in files.iter().filter(|p| !keep.contains(p)) {
            files::remove_file(p, "delete")?;
            if let Some(dir) = p.parent() {
                remove_empty_dirs(dir, &self.facts.modules_dir);
            }
        }
        Ok(())
    }

    /// Where this version's copy of `m` is installed, if anywhere.
    fn module_location(&self, m: &ModuleEntry) -> Option<PathBuf> {
        let ours = find_module_file(&self.built_dir(), &m.dest_name, self.facts.compression);
        self.installed_location(m, ours.as_deref())
    }

    /// The existing `dir/NAME.ko*` files that are not a package's.
    fn deletable(&self, dir: &Path, name: &str) -> Vec<PathBuf> {
        Compression::ALL
            .iter()
            .map(|c| dir.join(module_file_name(name, *c)))
            .filter(|p| fs::symlink_metadata(p).is_ok())
            .filter(|p| dpkg::owner(self.paths, self.packages, p).is_none())
            .collect()
    }

    /// The existing `<location>/NAME.ko*` an installed binary module package owns, if any.
    fn packaged(&self, location: &str, name: &str) -> Option<(PathBuf, &BinaryPackage)> {
        if self.packages.is_empty() {
            return None;
        }
        let dir = self
            .facts
            .modules_dir
            .join(location.trim_start_matches('/'));
        Compression::ALL.iter().find_map(|c| {
            let file = dir.join(module_file_name(name, *c));
            let pkg = dpkg::owner(self.paths, self.packages, &file)?;
            Some((file, pkg))
        })
    }

    /// The directory holding this version's installed copy of `m`, if any.
    fn installed_location(&self, m: &ModuleEntry, ours: Option<&Path>) -> Option<PathBuf> {
        let kernel_dir = &self.facts.modules_dir;
        let has = |loc: &str| {
            let dir = kernel_dir.join(loc.trim_start_matches('/'));
            find_module_file(&dir, &m.dest_name, self.facts.compression).map(|p| (dir, p))
        };
        if let Some((dir, _)) = has(&m.install_location) {
            return Some(dir);
        }
        if m.dest_location != m.install_location {
            if let (Some((dir, file)), Some(ours)) = (has(&m.dest_location), ours) {
                if fs::read(&file).ok() == fs::read(ours).ok() {
                    return Some(dir);
                }
            }
        }
        None
    }
}

/// The version fields of a module file.
#[derive(Debug, PartialEq, Eq)]
struct ModInfo {
    version: String,
    srcversion: String,
}

fn modinfo(file: &Path) -> Option<ModInfo> {
    let field = |name: &str| -> Option<String> {
        let out = Command::new("modinfo")
            .args(["-F", name])
            .arg(file)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    Some(ModInfo {
        version: field("version")?,
        srcversion: field("srcversion")?,
    })
}

/// `rmdir -p --ignore-fail-on-non-empty` from `dir` up to, not including, `stop`.
fn remove_empty_dirs(dir: &Path, stop: &Path) {
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d == stop || !d.starts_with(stop) || fs::remove_dir(d).is_err() {
            break;
        }
        cur = d.parent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_dirs_are_removed_up_to_the_kernel_dir() {
        let t = tempfile::tempdir().unwrap();
        let k = t.path().join("K");
        let d = k.join("updates/dkms");
        fs::create_dir_all(&d).unwrap();
        fs::create_dir_all(k.join("kernel")).unwrap();
        remove_empty_dirs(&d, &k);
        assert!(!k.join("updates").exists());
        assert!(k.join("kernel").is_dir());
    }
}
