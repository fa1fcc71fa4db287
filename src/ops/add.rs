//! `rdkms add`: registers a module version in the dkms tree as DKMS does
//! (`<dkmstree>/NAME/VERSION/source -> <sourcetree>/NAME-VERSION`), from `/usr/src`, from a
//! source directory (copied in) or from its dkms.conf. Every change appears by one rename.
//!
//! Deliberate deviations from DKMS 3.0.10: `--force` re-adds an added version (DKMS refuses
//! even with it); an existing `<sourcetree>/NAME-VERSION` is replaced, not merged into, when
//! adding from another directory; the dkms tree is created if missing; names with `/` or
//! `..` are refused; symlinks are copied as links, never followed. Like DKMS, top-level dot files of
//! a source directory are not copied (`cp -r SRC/*`), and the exit status is POST_ADD's.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use crate::base::error::{Error, IoContext, Result};
use crate::conf::{self, DkmsConf, EvalMode, LoadRequest, Target};
use crate::state::atomic;
use crate::state::lock::{self, TreeLock};
use crate::state::tree::Tree;
use crate::state::trust::Trust;
use crate::system::config::Paths;
use crate::system::console::Console;
use crate::system::host;
use crate::system::options::Options;

/// How to add.
#[derive(Debug, Clone, Default)]
pub struct AddOptions {
    /// Re-create the `source` link (and re-run POST_ADD) even if already added.
    pub force: bool,
    /// `-c FILE`: the dkms.conf to validate instead of the source's own.
    pub conf: Option<PathBuf>,
    /// The kernel and arch dkms.conf is evaluated for (DKMS: `uname -r`, `uname -m`).
    pub kernel: String,
    pub arch: String,
    /// `--kernelsourcedir` (for `$kernel_source_dir` in dkms.conf).
    pub kernel_source_dir: Option<PathBuf>,
    /// `-q`: print nothing, POST_ADD output included.
    pub quiet: bool,
    /// `--allow-untrusted-sources` (see `trust`).
    pub allow_untrusted: bool,
}

impl AddOptions {
    /// Options from a command line.
    pub fn from_options(opts: &Options) -> AddOptions {
        let first = opts.kernels.first();
        AddOptions {
            force: opts.force,
            conf: opts.conf.clone(),
            kernel: first
                .map(|k| k.kernel.clone())
                .unwrap_or_else(host::running_kernel),
            arch: first
                .and_then(|k| k.arch.clone())
                .or_else(|| opts.archs.first().cloned())
                .unwrap_or_else(host::machine_arch),
            kernel_source_dir: opts.kernel_source_dir.clone(),
            quiet: opts.quiet,
            allow_untrusted: opts.allow_untrusted_sources,
        }
    }
}

/// What `ensure_added` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// It was already added; nothing changed.
    Already,
    /// The `source` link was (re)created; POST_ADD exited with this status (0 without one).
    New { post_add_status: i32 },
}

/// Adds NAME/VERSION from `<sourcetree>/NAME-VERSION` unless it is already added (or always,
/// with `force`). For build and install, which add first; they hold the tree lock already.
pub fn ensure_added(
    paths: &Paths,
    _lock: &TreeLock,
    module: &str,
    version: &str,
    opts: &AddOptions,
) -> Result<Added> {
    check_name("module name", module)?;
    check_name("module version", version)?;
    let tree = Tree::new(&paths.dkms_tree);
    if tree.is_added(module, version) && !opts.force {
        return Ok(Added::Already);
    }
    let source_dir = std::path::absolute(paths.source_tree.join(format!("{module}-{version}")))
        .ctx("resolve", &paths.source_tree)?;
    if !source_dir.is_dir() {
        return Err(Error::SourceMissing { path: source_dir });
    }
    let conf_file = opts
        .conf
        .clone()
        .unwrap_or_else(|| source_dir.join("dkms.conf"));
    // POST_ADD runs as root from the sources: they must be root's alone.
    let trust = Trust::new(paths, opts.allow_untrusted);
    trust.check_file(&conf_file)?;
    trust.check_tree(&source_dir)?;
    let conf = load_conf(paths, &conf_file, module, version, opts)?;
    let console = Console::plain(opts.quiet);
    conf::strict::check(&conf, &opts.kernel, &opts.arch, |l| console.say(l))?;

    let version_dir = tree.version_dir(module, version);
    fs::create_dir_all(version_dir.join("build")).ctx("create", &version_dir)?;
    let link = tree.source_link(module, version);
    console.say(format!(
        "Creating symlink {} -> {}",
        link.display(),
        source_dir.display()
    ));
    let staged = version_dir.join(format!(".source.rdkms-{}", std::process::id()));
    let _ = fs::remove_file(&staged);
    let target = link_target(paths, &version_dir, &source_dir);
    std::os::unix::fs::symlink(&target, &staged).ctx("create symlink", &staged)?;
    if let Err(e) = fs::rename(&staged, &link) {
        let _ = fs::remove_file(&staged);
        return Err(Error::io("replace", &link, e));
    }
    atomic::sync_dir(&version_dir)?;
    let post_add_status = match &conf.post_add {
        Some(script) => run_post_add(&link, script, opts.quiet)?,
        None => 0,
    };
    Ok(Added::New { post_add_status })
}

/// What the `source` link points at. On the real system DKMS's absolute path. Under `--root`,
/// a relative path when both ends lie inside the root: it resolves to the same directory from
/// the host and inside the root used as a chroot or image (an absolute path with the root in
/// it would break there). Falls back to the absolute path if a symlink in the dkms tree's path
/// would make `..` lead elsewhere.
fn link_target(paths: &Paths, version_dir: &Path, source_dir: &Path) -> PathBuf {
    if paths.root == Path::new("/")
        || !source_dir.starts_with(&paths.root)
        || !version_dir.starts_with(&paths.root)
        || fs::canonicalize(version_dir).ok().as_deref() != Some(version_dir)
    {
        return source_dir.to_path_buf();
    }
    let from: Vec<Component> = version_dir.components().collect();
    let to: Vec<Component> = source_dir.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..from.len() {
        rel.push("..");
    }
    for c in &to[common..] {
        rel.push(c);
    }
    rel
}

/// A source directory given on the command line (or its dkms.conf), with the NAME and VERSION
/// its PACKAGE_NAME/PACKAGE_VERSION give it.
#[derive(Debug, Clone)]
pub struct SourcePath {
    /// The directory, resolved.
    pub dir: PathBuf,
    pub module: String,
    pub version: String,
}

impl SourcePath {
    /// Reads the dkms.conf of the directory `p` names (directly or as its dkms.conf).
    pub fn read(paths: &Paths, p: &Path, opts: &AddOptions) -> Result<SourcePath> {
        let dir = source_dir_of(p)?;
        let conf_file = dir.join("dkms.conf");
        let conf = load_conf(paths, &conf_file, "", "", opts)?;
        for (what, value) in [
            ("PACKAGE_NAME", &conf.package_name),
            ("PACKAGE_VERSION", &conf.package_version),
        ] {
            if !is_plain_name(value) {
                return Err(Error::PathEscape {
                    file: conf_file.clone(),
                    what: what.to_string(),
                    value: value.clone(),
                });
            }
        }
        Ok(SourcePath {
            dir,
            module: conf.package_name,
            version: conf.package_version,
        })
    }

    /// `<sourcetree>/NAME-VERSION`, where the copy goes.
    fn dest(&self, paths: &Paths) -> PathBuf {
        paths
            .source_tree
            .join(format!("{}-{}", self.module, self.version))
    }

    /// Copies the directory to `<sourcetree>/NAME-VERSION` unless it is that directory.
    fn copy_to_source_tree(&self, paths: &Paths, quiet: bool) -> Result<()> {
        let dest = self.dest(paths);
        if fs::canonicalize(&dest).is_ok_and(|d| d == self.dir) {
            return Ok(());
        }
        copy_source(&self.dir, &dest, quiet)
    }

    /// For `build PATH` and `install PATH`, under the lock the command holds: registers the
    /// directory as `add PATH` would unless the version is added already, from these sources
    /// or a copy of them (so running the command again works; DKMS 3.0.10 fails then). An
    /// added version whose sources differ is refused (exit 3, as DKMS refuses adding it
    /// again), so that a build never silently uses other sources than the ones named.
    pub fn ensure_added(&self, paths: &Paths, lock: &TreeLock, opts: &AddOptions) -> Result<()> {
        let tree = Tree::new(&paths.dkms_tree);
        if tree.is_added(&self.module, &self.version) {
            let link = tree.source_link(&self.module, &self.version);
            let registered = fs::canonicalize(&link).unwrap_or(link);
            if registered == self.dir || same_copy(&self.dir, &registered) {
                return Ok(());
            }
            return Err(Error::AddedFromElsewhere {
                module: self.module.clone(),
                version: self.version.clone(),
                registered,
                given: self.dir.clone(),
            });
        }
        self.copy_to_source_tree(paths, opts.quiet)?;
        ensure_added(paths, lock, &self.module, &self.version, opts).map(|_| ())
    }
}

/// Runs `add`: NAME/VERSION (`-m/-v`), or a source directory / dkms.conf path whose
/// PACKAGE_NAME/PACKAGE_VERSION name the copy in the source tree.
pub fn run(opts: &Options) -> Result<i32> {
    let paths = opts.paths.clone();
    let add_opts = AddOptions::from_options(opts);
    let from_dir = match (&opts.source_path, &opts.module, &opts.version) {
        (Some(p), None, None) => Some(SourcePath::read(&paths, p, &add_opts)?),
        _ => None,
    };
    let (module, version) = match &from_dir {
        Some(sp) => (sp.module.clone(), sp.version.clone()),
        None => module_args(opts)?,
    };
    check_name("module name", &module)?;
    check_name("module version", &version)?;

    let lock = TreeLock::acquire(&paths, lock::timeout(opts.lock_timeout))?;
    let tree = Tree::new(&paths.dkms_tree);
    if tree.is_added(&module, &version) && !add_opts.force {
        return Err(Error::AlreadyAdded { module, version });
    }
    if let Some(sp) = &from_dir {
        sp.copy_to_source_tree(&paths, add_opts.quiet)?;
    }
    match ensure_added(&paths, &lock, &module, &version, &add_opts)? {
        Added::New { post_add_status } => Ok(post_add_status),
        Added::Already => Ok(0),
    }
}

/// NAME and VERSION from the command line; a path-like word without dkms.conf is exit 9.
fn module_args(opts: &Options) -> Result<(String, String)> {
    match (&opts.module, &opts.version) {
        (Some(m), Some(v)) if !m.is_empty() => Ok((m.clone(), v.clone())),
        (Some(m), v) => {
            let word = match v {
                Some(v) => format!("{m}/{v}"),
                None => m.clone(),
            };
            let looks_like_path = m.is_empty() || m == "." || m == "..";
            if looks_like_path && Path::new(&word).is_dir() {
                return Err(Error::NoConfInSource {
                    path: PathBuf::from(word),
                });
            }
            Err(Error::MissingModule {
                action: "add".into(),
            })
        }
        _ => Err(Error::MissingModule {
            action: "add".into(),
        }),
    }
}

/// The directory of a source path given as a directory or as its dkms.conf, resolved.
fn source_dir_of(p: &Path) -> Result<PathBuf> {
    let dir = match p.parent() {
        _ if p.is_dir() => p.to_path_buf(),
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = fs::canonicalize(&dir).ctx("resolve", &dir)?;
    if !dir.join("dkms.conf").is_file() {
        return Err(Error::NoConfInSource { path: dir });
    }
    Ok(dir)
}

/// Reads a dkms.conf the way add does (DKMS sources it; any evaluator may be used).
fn load_conf(
    paths: &Paths,
    conf_file: &Path,
    module: &str,
    version: &str,
    opts: &AddOptions,
) -> Result<DkmsConf> {
    if !conf_file.is_file() {
        return Err(Error::ConfNotFound {
            path: conf_file.to_path_buf(),
        });
    }
    let kernel_source_dir = opts
        .kernel_source_dir
        .clone()
        .unwrap_or_else(|| paths.kernel_build_dir(&opts.kernel));
    conf::load(&LoadRequest {
        conf_file: conf_file.to_path_buf(),
        module: module.to_string(),
        module_version: version.to_string(),
        target: Target {
            kernel: opts.kernel.clone(),
            arch: opts.arch.clone(),
            kernel_config: kernel_source_dir.join(".config"),
            kernel_source_dir,
            build_dir: paths.dkms_tree.join(module).join(version).join("build"),
            location_override: host::location_override(paths),
        },
        etc_dkms: Some(paths.etc_dkms.clone()),
        dkms_tree: paths.dkms_tree.clone(),
        source_tree: paths.source_tree.clone(),
        install_tree: paths.install_tree.clone(),
        directive_overrides: Vec::new(),
        mode: EvalMode::Auto,
    })
}

/// A name usable as one path component.
fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\0'])
}

fn check_name(what: &str, s: &str) -> Result<()> {
    if is_plain_name(s) {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "'{s}' is not a valid {what}: it must be a single path component (no '/', not '.' or '..')"
        )))
    }
}

/// DKMS's `run_build_script post_add`: `<dkmstree>/M/V/source/SCRIPT ARGS...` split on
/// blanks, run from the source directory, output shown live (on stderr here).
fn run_post_add(source: &Path, script: &str, quiet: bool) -> Result<i32> {
    let cmdline = format!("{}/{}", source.display(), script);
    let mut words = cmdline.split_whitespace();
    let Some(program) = words.next() else {
        return Ok(0);
    };
    let executable = fs::metadata(program)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    if !executable {
        Console::plain(quiet).warn("The post_add script is not executable.");
        return Ok(0);
    }
    let (out, err) = if quiet {
        (Stdio::null(), Stdio::null())
    } else {
        Console::plain(quiet).say("Running the post_add script:");
        (
            Stdio::from(std::io::stderr().as_fd_owned()?),
            Stdio::inherit(),
        )
    };
    let status = Command::new(program)
        .args(words)
        .current_dir(source)
        .env("PWD", source)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .ctx("run", program)?;
    Ok(exit_status(status))
}

/// A child's exit status as a shell reports it (128+signal when killed).
fn exit_status(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// Duplicates stderr so a child's stdout can go there.
trait DupFd {
    fn as_fd_owned(&self) -> Result<std::os::fd::OwnedFd>;
}

impl DupFd for std::io::Stderr {
    fn as_fd_owned(&self) -> Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.as_fd()
            .try_clone_to_owned()
            .ctx("duplicate", "standard error")
    }
}

/// Copies a source directory to `dest` (in the source tree) through a hidden staging copy that
/// replaces `dest` in one rename (an exchange when `dest` exists). Copies symlinks as links;
/// skips top-level dot files and special files, as `cp -r SRC/*` would not copy
/// them usefully.
fn copy_source(from: &Path, dest: &Path, quiet: bool) -> Result<()> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).ctx("create", parent)?;
    let real_parent = fs::canonicalize(parent).ctx("resolve", parent)?;
    if real_parent.starts_with(from) {
        return Err(Error::Usage(format!(
            "The source tree {} lies inside {}, which is being copied into it; use a source tree outside it (--sourcetree).",
            real_parent.display(),
            from.display()
        )));
    }
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let staging = parent.join(format!(".rdkms-add-{name}-{}", std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging).ctx("remove", &staging)?;
    }
    let result = copy_tree(from, &staging).and_then(|()| {
        if dest.exists() {
            // DKMS copies over the old tree silently.
            if !crate::base::persona::as_dkms() {
                Console::plain(quiet).say(format!(
                    "Replacing {} with a copy of {}",
                    dest.display(),
                    from.display()
                ));
            }
        }
        atomic::replace_dir(&staging, dest)
    });
    if staging.exists() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

/// The copy itself (into a fresh `to`): DKMS's `cp -r` of a user's directory, so unlike
/// `build::copy_source` top-level hidden entries stay behind, links are kept wherever they
/// point, and every file becomes root-only (see `Trust`).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir(to).ctx("create", to)?;
    let walk = walkdir::WalkDir::new(from)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() > 1 || !e.file_name().to_string_lossy().starts_with('.'));
    let mut dirs = Vec::new();
    for entry in walk {
        let entry = entry.map_err(|e| Error::walk(from, e))?;
        let rel = entry.path().strip_prefix(from).unwrap_or(entry.path());
        let target = to.join(rel);
        let ft = entry.file_type();
        if ft.is_dir() {
            fs::create_dir(&target).ctx("create", &target)?;
            dirs.push((target, entry.path().to_path_buf()));
        } else if ft.is_file() {
            fs::copy(entry.path(), &target).ctx("copy", entry.path())?;
            root_only(&target)?;
        } else if ft.is_symlink() {
            // Copied as a link, never followed, wherever it points (as DKMS's `cp -r` does:
            // packages ship links such as `README.gz -> ../../share/doc/…`). Builds never
            // read through a link that leaves the source (see `build::copy_source`).
            let link = fs::read_link(entry.path()).ctx("read link", entry.path())?;
            std::os::unix::fs::symlink(&link, &target).ctx("create symlink", &target)?;
        }
    }
    for (target, source) in dirs.iter().rev() {
        let perms = fs::metadata(source).ctx("stat", source)?.permissions();
        fs::set_permissions(target, perms).ctx("chmod", target)?;
        root_only(target)?;
    }
    Ok(())
}

/// Drops group and other write permission from a copied entry: the copy in the source tree is
/// root's alone (see `trust`), whatever the modes of the directory it came from.
fn root_only(path: &Path) -> Result<()> {
    let mode = fs::metadata(path).ctx("stat", path)?.permissions().mode();
    if mode & 0o022 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode & !0o022)).ctx("chmod", path)?;
    }
    Ok(())
}

/// Whether `copy` holds what `copy_source` would copy from `from`: the same entries (top-level
/// dot files left out), file bytes and link targets.
fn same_copy(from: &Path, copy: &Path) -> bool {
    let entries = |root: &Path| {
        walkdir::WalkDir::new(root)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() > 1 || !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.map(|e| (e.path().strip_prefix(root).map(Path::to_path_buf), e)))
            .collect::<std::result::Result<Vec<_>, _>>()
    };
    let (Ok(a), Ok(b)) = (entries(from), entries(copy)) else {
        return false;
    };
    a.len() == b.len()
        && a.iter().zip(&b).all(|((ra, ea), (rb, eb))| {
            let (ta, tb) = (ea.file_type(), eb.file_type());
            ra.as_ref().ok() == rb.as_ref().ok()
                && ta.is_dir() == tb.is_dir()
                && ta.is_symlink() == tb.is_symlink()
                && if ta.is_symlink() {
                    equal_ok(fs::read_link(ea.path()), fs::read_link(eb.path()))
                } else {
                    ta.is_dir() || equal_ok(fs::read(ea.path()), fs::read(eb.path()))
                }
        })
}

/// Two reads that both succeeded with the same value.
fn equal_ok<T: PartialEq>(a: std::io::Result<T>, b: std::io::Result<T>) -> bool {
    matches!((a, b), (Ok(a), Ok(b)) if a == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_one_component() {
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
        for good in ["foo", "1.0", "v4l2loopback", "1.0+dfsg-1"] {
            assert!(is_plain_name(good), "{good:?}");
        }
    }
}
