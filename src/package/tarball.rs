//! DKMS tarballs (`mktarball`, `ldtarball`): a module's sources and/or builds in one archive,
//! laid out as DKMS lays them out (`dkms_main_tree/KVER/ARCH/`, `dkms_source_tree/`,
//! `dkms_binaries_only/`), so archives move between rdkms and DKMS in both directions. Loading
//! checks every member first, extracts into a private directory, then swaps each result into
//! place with one rename.

use std::fs;
use std::path::{Path, PathBuf};

use crate::base::error::{Error, IoContext, Result};
use crate::ops::add::{self, AddOptions};
use crate::package::archive::{self, Builder, TarCompression};
use crate::package::deb;
use crate::state::atomic;
use crate::state::lock::{self, TreeLock};
use crate::state::registered::{self, Registered};
use crate::state::tree::Tree;
use crate::system::config::Paths;
use crate::system::console::Console;
use crate::system::options::Options;

/// Above this length the kernel list in the default name becomes `manykernels` (as in DKMS).
const MAX_KERNEL_LIST: usize = 200;

/// The default archive name: `M-V-kernelK-A[-kernelK2-A2…].dkms.tar.gz`, or `…-source-only…`.
pub fn default_name(module: &str, version: &str, builds: &[(String, String)]) -> String {
    let list = if builds.is_empty() {
        "source-only".to_string()
    } else {
        let l = builds
            .iter()
            .map(|(k, a)| format!("kernel{k}-{a}"))
            .collect::<Vec<_>>()
            .join("-");
        if l.len() >= MAX_KERNEL_LIST {
            "manykernels".to_string()
        } else {
            l
        }
    };
    format!("{module}-{version}-{list}.dkms.tar.gz")
}

/// `rdkms mktarball NAME/VERSION [-k KVER]... [--all] [--source-only | --binaries-only]
/// [--archive [DIR/]NAME]`: writes the archive (default in `<dkmstree>/NAME/VERSION/tarball/`)
/// and prints its path on stdout.
pub fn make(opts: &Options) -> Result<i32> {
    if opts.binaries_only && opts.source_only {
        return Err(Error::TarballKinds);
    }
    let reg = Registered::from_options(opts, "mktarball")?;
    let _lock = TreeLock::acquire(&reg.paths, lock::timeout(opts.lock_timeout))?;
    let builds = if opts.source_only {
        Vec::new()
    } else {
        reg.requested_builds(opts)?
    };
    let mut b = Builder::new();
    b.dir("dkms_main_tree");
    for build in &builds {
        let dir = reg.dir().join(&build.kernel).join(&build.arch);
        if !dir.is_dir() {
            return Err(Error::NotBuilt {
                module: reg.module.clone(),
                version: reg.version.clone(),
                kernel: build.kernel.clone(),
                arch: build.arch.clone(),
            });
        }
        b.tree(
            Path::new("dkms_main_tree")
                .join(&build.kernel)
                .join(&build.arch),
            &dir,
            false,
        )?;
    }
    if opts.binaries_only {
        let conf = match &opts.conf {
            Some(c) => c.clone(),
            None => reg.source_dir()?.join("dkms.conf"),
        };
        let bin = Path::new("dkms_binaries_only");
        b.bytes(
            bin.join("PACKAGE_NAME"),
            format!("{}\n", reg.module).into_bytes(),
        );
        b.bytes(
            bin.join("PACKAGE_VERSION"),
            format!("{}\n", reg.version).into_bytes(),
        );
        b.bytes(bin.join("dkms.conf"), fs::read(&conf).ctx("read", &conf)?);
    } else {
        b.tree("dkms_source_tree", &reg.source_dir()?, true)?;
    }
    let pairs: Vec<(String, String)> = builds
        .iter()
        .map(|b| (b.kernel.clone(), b.arch.clone()))
        .collect();
    let mut name = default_name(&reg.module, &reg.version, &pairs);
    let mut dir = reg.dir().join("tarball");
    if let Some(a) = &opts.archive {
        if let Some(n) = a.file_name() {
            name = n.to_string_lossy().into_owned();
        }
        if a.to_string_lossy().contains('/') {
            dir = a.parent().map(Path::to_path_buf).unwrap_or(dir);
        }
    }
    let epoch = deb::source_date_epoch()?.unwrap_or_else(|| b.newest_mtime());
    let dest = dir.join(&name);
    b.write(&dest, TarCompression::for_name(&name), epoch)?;
    Console::plain(opts.quiet).say(format!("Tarball location: {}", dest.display()));
    println!("{}", dest.display());
    Ok(0)
}

/// Copies a checked, extracted tree (files, directories, symlinks) to `to`, which must not exist.
/// Not add's copier: every member was already checked by `archive::extract`, and the archive's
/// tree is restored whole, hidden entries included.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).ctx("create", to)?;
    for entry in walkdir::WalkDir::new(from).min_depth(1).follow_links(false) {
        let entry = entry.map_err(|e| Error::walk(from, e))?;
        let rel = entry.path().strip_prefix(from).unwrap_or(entry.path());
        let dest = to.join(rel);
        let ft = entry.file_type();
        if ft.is_dir() {
            fs::create_dir_all(&dest).ctx("create", &dest)?;
        } else if ft.is_symlink() {
            let t = fs::read_link(entry.path()).ctx("read", entry.path())?;
            std::os::unix::fs::symlink(t, &dest).ctx("create the symlink", &dest)?;
        } else {
            fs::copy(entry.path(), &dest).ctx("copy", entry.path())?;
        }
    }
    Ok(())
}

/// Puts a copy of `from` at `to` in one step: the copy is made next to `to` and exchanged with
/// it (or renamed, if `to` does not exist yet), so readers see the old or the new tree, never a
/// half-written one.
fn place(from: &Path, to: &Path) -> Result<()> {
    let parent = to.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).ctx("create", parent)?;
    let staging = tempfile::Builder::new()
        .prefix(".rdkms-load-")
        .tempdir_in(parent)
        .ctx("create a staging directory in", parent)?;
    let new = staging.path().join("new");
    copy_tree(from, &new)?;
    atomic::replace_dir(&new, to)
}

/// Registers M/V with `add` (the `source` link to `<sourcetree>/M-V`, POST_ADD), as DKMS's
/// ldtarball ends with add_module.
fn register(paths: &Paths, lock: &TreeLock, opts: &Options, m: &str, v: &str) -> Result<()> {
    add::ensure_added(paths, lock, m, v, &AddOptions::from_options(opts))?;
    Ok(())
}

/// The shallowest dkms.conf in an extracted tree (ties broken by name), for plain archives.
fn find_conf(root: &Path) -> Option<PathBuf> {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file() && e.file_name() == "dkms.conf")
        .min_by_key(|e| e.depth())
        .map(|e| e.into_path())
}

/// `rdkms ldtarball FILE` (or `--archive FILE`): loads a DKMS tarball (sources into
/// `<sourcetree>/M-V`, builds into `<dkmstree>/M/V/K/A`) or a plain source archive holding a
/// dkms.conf, and registers the module. Existing builds are kept unless `--force`.
pub fn load(opts: &Options) -> Result<i32> {
    let Some(archive) = opts.archive.clone() else {
        return Err(Error::Usage(
            "ldtarball needs an archive: rdkms ldtarball FILE (or --archive FILE)".into(),
        ));
    };
    if !archive.is_file() {
        return Err(Error::ArchiveMissing { path: archive });
    }
    let paths = opts.paths.clone();
    let work = tempfile::Builder::new()
        .prefix("rdkms-ldtarball-")
        .tempdir()
        .ctx("create a temporary directory in", std::env::temp_dir())?;
    let root = work.path().join("x");
    fs::create_dir(&root).ctx("create", &root)?;
    archive::extract(&archive, &root)?;
    let lock = TreeLock::acquire(&paths, lock::timeout(opts.lock_timeout))?;
    let say = |s: String| Console::plain(opts.quiet).say(s);

    let main_tree = root.join("dkms_main_tree");
    if !main_tree.is_dir() {
        let conf = find_conf(&root).ok_or_else(|| Error::BadArchive {
            archive: archive.clone(),
            problem: "no dkms.conf found within it".into(),
        })?;
        let src = conf.parent().unwrap_or(&root);
        let (m, v) = registered::identity(&paths, src, opts)?;
        say(format!("Loading source tree of {m}-{v}"));
        place(src, &paths.source_tree.join(format!("{m}-{v}")))?;
        register(&paths, &lock, opts, &m, &v)?;
        return Ok(0);
    }

    let (kind, conf_dir) = ["dkms_source_tree", "dkms_binaries_only"]
        .into_iter()
        .map(|k| (k, root.join(k)))
        .find(|(_, d)| d.join("dkms.conf").is_file())
        .ok_or_else(|| Error::BadArchive {
            archive: archive.clone(),
            problem: "no dkms.conf in dkms_source_tree or dkms_binaries_only".into(),
        })?;
    let (m, v) = registered::identity(&paths, &conf_dir, opts)?;
    let tree = Tree::new(&paths.dkms_tree);
    if tree.is_added(&m, &v) && !opts.force {
        return Err(Error::ArchiveAlreadyAdded {
            module: m,
            version: v,
        });
    }
    say(format!("Loading tarball for {m}-{v}"));
    let source = paths.source_tree.join(format!("{m}-{v}"));
    if kind == "dkms_source_tree" {
        place(&conf_dir, &source)?;
        register(&paths, &lock, opts, &m, &v)?;
    } else if source.is_dir() {
        register(&paths, &lock, opts, &m, &v)?;
    } else {
        // Binaries only and no sources here: DKMS keeps the dkms.conf in a real `source` dir.
        let stub = work.path().join("stub");
        fs::create_dir(&stub).ctx("create", &stub)?;
        fs::copy(conf_dir.join("dkms.conf"), stub.join("dkms.conf"))
            .ctx("copy", conf_dir.join("dkms.conf"))?;
        say(format!(
            "Creating {} with dkms.conf only",
            tree.source_link(&m, &v).display()
        ));
        place(&stub, &tree.source_link(&m, &v))?;
    }
    for kernel in sorted_subdirs(&main_tree)? {
        for arch in sorted_subdirs(&main_tree.join(&kernel))? {
            let to = tree.build_dir(&m, &v, &kernel, &arch);
            if to.exists() && !opts.force {
                Console::plain(false).warn(format!(
                    "{} already exists. Skipping... (use --force to replace it)",
                    to.display()
                ));
                continue;
            }
            say(format!("Loading {}...", to.display()));
            place(&main_tree.join(&kernel).join(&arch), &to)?;
        }
    }
    Ok(0)
}

/// Names of the directories directly in `dir`, sorted.
fn sorted_subdirs(dir: &Path) -> Result<Vec<String>> {
    crate::base::files::subdirs(dir).ctx("read", dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_follow_dkms() {
        assert_eq!(default_name("m", "1", &[]), "m-1-source-only.dkms.tar.gz");
        let two = [
            ("6.1.0-1-amd64".to_string(), "x86_64".to_string()),
            ("6.1.0-2-amd64".to_string(), "x86_64".to_string()),
        ];
        assert_eq!(
            default_name("m", "1", &two),
            "m-1-kernel6.1.0-1-amd64-x86_64-kernel6.1.0-2-amd64-x86_64.dkms.tar.gz"
        );
        let many: Vec<_> = (0..10)
            .map(|i| {
                (
                    format!("6.1.0-{i}-amd64-long-flavour"),
                    "x86_64".to_string(),
                )
            })
            .collect();
        assert_eq!(default_name("m", "1", &many), "m-1-manykernels.dkms.tar.gz");
    }

    #[test]
    fn place_swaps_a_whole_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b, to) = (
            tmp.path().join("a"),
            tmp.path().join("b"),
            tmp.path().join("t/x"),
        );
        fs::create_dir_all(&a).unwrap();
        fs::write(a.join("old"), "1").unwrap();
        fs::create_dir_all(b.join("sub")).unwrap();
        fs::write(b.join("sub/new"), "2").unwrap();
        std::os::unix::fs::symlink("sub/new", b.join("l")).unwrap();
        place(&a, &to).unwrap();
        assert!(to.join("old").is_file());
        place(&b, &to).unwrap();
        assert!(!to.join("old").exists());
        assert_eq!(fs::read_to_string(to.join("l")).unwrap(), "2");
        // Nothing but the result is left next to it.
        assert_eq!(fs::read_dir(tmp.path().join("t")).unwrap().count(), 1);
    }
}
