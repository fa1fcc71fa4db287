//! One error type for the whole tool: every variant knows its DKMS-compatible exit code and
//! renders as one actionable line (what went wrong, which file, what to do).

use std::path::{Path, PathBuf};

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure rdkms reports. Exit codes follow DKMS (see `exit_code`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command line (unknown option, conflicting options).
    #[error("{0}")]
    Usage(String),

    /// An action that needs NAME/VERSION was given none.
    #[error("Arguments <module> and <module-version> are not specified.\nUsage: {action} <module>/<module-version> or\n       {action} -m <module>/<module-version> or\n       {action} -m <module> -v <module-version>")]
    MissingModule { action: String },

    /// No dkms.conf where one is required.
    #[error("Could not locate dkms.conf file.\nFile: {path} does not exist.", path = .path.display())]
    ConfNotFound { path: PathBuf },

    /// A dkms.conf (or override file) is invalid: every problem found, in DKMS's order.
    #[error("Bad conf file.\nFile: {file} does not represent a valid dkms.conf file.", file = .file.display())]
    BadConf {
        file: PathBuf,
        problems: Vec<ConfProblem>,
    },

    /// Running as root, a source path a non-root user could have changed (see `trust`).
    #[error("{path}: {problem}; refusing to evaluate or build it as root. Fix: {fix}", path = .path.display())]
    Untrusted {
        path: PathBuf,
        problem: String,
        fix: String,
    },

    /// Evaluating a dkms.conf with bash failed (syntax error, timeout, crash).
    #[error("Bad conf file.\nFile: {file} does not represent a valid dkms.conf file.", file = .file.display())]
    ConfEval {
        file: PathBuf,
        problem: String,
        fix: String,
    },

    /// The module is not registered in the dkms tree.
    #[error("The module/version combo: {module}/{version} is not located in the DKMS tree.")]
    NotAdded { module: String, version: String },

    /// The module is already registered.
    #[error("DKMS tree already contains: {module}/{version}\nYou cannot add the same module/version combo more than once.")]
    AlreadyAdded { module: String, version: String },

    /// `build PATH`/`install PATH` name other sources than the ones the version was added from.
    #[error("{module}/{version} is already added from {registered}, not from {given}. Build the added sources with: rdkms build {module}/{version}; or replace them first: rdkms add {given} --force", registered = .registered.display(), given = .given.display())]
    AddedFromElsewhere {
        module: String,
        version: String,
        registered: PathBuf,
        given: PathBuf,
    },

    /// The source directory for `add` is missing.
    #[error("Could not find module source directory.\nDirectory: {path} does not exist.", path = .path.display())]
    SourceMissing { path: PathBuf },

    /// Kernel headers for the target kernel are not installed.
    #[error("Your kernel headers for kernel {kernel} cannot be found at {dir} or {source}.\nPlease install the linux-headers-{kernel} package or use the --kernelsourcedir option to tell DKMS where it's located.", dir = .dir.display(), source = .dir.with_file_name("source").display())]
    MissingHeaders { kernel: String, dir: PathBuf },

    /// BUILD_EXCLUSIVE_* says this kernel/arch/config must not get this module.
    /// DKMS prints it as a warning (`Warning: ` and no empty line before); `module` is `M/V`.
    #[error("The {conf}\nfor module {module} includes a BUILD_EXCLUSIVE directive\nwhich does not match this kernel/arch/config.\nThis indicates that it should not be built.", conf = .conf.display())]
    BuildExclusive { module: String, conf: PathBuf },

    /// The version's sources are gone (see `broken`).
    #[error("{module}/{version} is broken!\nMissing the source directory or the symbolic link pointing to it.\nManual intervention is required!")]
    Broken { module: String, version: String },

    /// The sources hold fewer than two entries (dkms.conf alone): nothing to build.
    #[error("The directory {dir} does not appear to have module source located within it.\nBuild halted.", dir = .dir.display())]
    NoModuleSource { dir: PathBuf },

    /// `install`: every module was refused (e.g. an older version than the kernel's); nothing
    /// changed.
    #[error("Installation aborted.")]
    InstallAborted,

    /// `install`: a module dkms.conf names is not in the build's `module/` directory.
    #[error("Missing module {module} in {dir}", dir = .dir.display())]
    MissingBuiltModule {
        module: String,
        dir: PathBuf,
        rebuild: String,
    },

    /// DKMS's autoinstall: a module failed or its BUILD_DEPENDS never got installed.
    #[error("One or more modules failed to install during autoinstall.\nRefer to previous errors for more information.")]
    AutoinstallFailed,

    /// DKMS's kernel_prerm: `failed` lists ` M/V(exit)` for each module that was not removed.
    #[error("dkms kernel_prerm for kernel {kernel} ({arch}) failed for module(s){failed}.")]
    PrermFailed {
        kernel: String,
        arch: String,
        failed: String,
    },

    /// A BUILD_DEPENDS module is not installed for the kernel (`build` without `--force`).
    #[error("Aborting build of module {module} for kernel {kernel} ({arch}) due to missing BUILD_DEPENDS: {missing}.\nYou may override by specifying --force.")]
    MissingBuildDepends {
        module: String,
        kernel: String,
        arch: String,
        missing: String,
    },

    /// A patch name escapes the patches dir or is missing.
    #[error("Patch {patch} as specified in dkms.conf {problem}")]
    BadPatch {
        module: String,
        patch: String,
        problem: String,
    },

    /// `patch` returned non-zero.
    #[error("Application of patch {patch} failed.\nConsult {log} for more information.", log = .log.display())]
    PatchFailed { patch: String, log: PathBuf },

    /// make (or PRE_BUILD/POST_BUILD) returned non-zero.
    #[error("Bad return status for module build on kernel: {kernel} ({arch})\nConsult {log} for more information.", log = .log.display())]
    BuildFailed {
        kernel: String,
        arch: String,
        code: i32,
        log: PathBuf,
    },

    /// make succeeded but an expected .ko is absent.
    #[error("Build of {path} failed for: {kernel} ({arch})\nMake sure the name and location of the generated module are correct,\nor consult {log} for more information.", path = .path.display(), log = .log.display())]
    BuiltModuleMissing {
        module: String,
        kernel: String,
        arch: String,
        path: PathBuf,
        log: PathBuf,
    },

    /// Installing into a kernel whose module directory is absent, or a built file is missing.
    #[error("{0}")]
    InstallFailed(String),

    /// PRE_INSTALL returned non-zero.
    #[error("pre_install failed, aborting install.\nYou may override by specifying --force.")]
    PreInstallFailed { script: String, code: i32 },

    /// A path from dkms.conf or an archive would leave its tree.
    #[error("{file}: {what} '{value}' escapes its directory. Fix: use a relative path without '..' or outside symlinks.", file = .file.display())]
    PathEscape {
        file: PathBuf,
        what: String,
        value: String,
    },

    /// A single-kernel action got no `-k`, several, or used with `--all`.
    #[error("The action {action} {}", one_kernel_rule(.action))]
    OneKernel { action: String },

    /// update-initramfs or dracut failed for a kernel.
    #[error("Regenerating the initramfs of kernel {kernel} with '{command}' failed: {problem}. It stays pending and is retried by the next rdkms reconcile; run the command by hand to see why.")]
    Initramfs {
        kernel: String,
        command: String,
        problem: String,
    },

    /// depmod failed for a kernel whose modules changed. DKMS's first sentence and exit code
    /// (6); unlike DKMS the modules stay installed and the kernel stays recorded as owing
    /// depmod, so the next command retries it (README, "depmod").
    #[error("Problems with depmod detected: depmod failed for kernel {kernel} (exit {code}): {detail}; the modules stay installed and the next command that takes the dkms tree's lock runs depmod for {kernel} again.")]
    Depmod {
        kernel: String,
        code: i32,
        detail: String,
    },

    /// `--all` given to an action that needs explicit kernels.
    #[error("The action {action} does not support the --all parameter.")]
    AllNotSupported { action: String },

    /// The architecture could not be determined.
    #[error("Could not determine architecture.")]
    UnknownArch,

    /// A packaging or tarball action needs a build that is not in the tree.
    #[error("Module {module}/{version} is not built for {kernel} ({arch}): run rdkms build {module}/{version} -k {kernel} -a {arch} first.")]
    NotBuilt {
        module: String,
        version: String,
        kernel: String,
        arch: String,
    },

    /// `mktarball` was asked for both halves to be left out.
    #[error("You specified both --binaries-only and --source-only; use at most one of them.")]
    TarballKinds,

    /// The archive given to `ldtarball` does not exist.
    #[error("{path} does not exist.", path = .path.display())]
    ArchiveMissing { path: PathBuf },

    /// The archive is not a DKMS tarball (no usable dkms.conf).
    #[error("{archive} is not a valid DKMS tarball: {problem}.", archive = .archive.display())]
    BadArchive { archive: PathBuf, problem: String },

    /// `ldtarball` of a module/version that is already registered, without --force.
    #[error("{module}-{version} is already added! Use --force to load the tarball over it.")]
    ArchiveAlreadyAdded { module: String, version: String },

    /// A value cannot go into a Debian package (name, version, architecture).
    #[error("Cannot make package {package}: {problem}")]
    Packaging { package: String, problem: String },

    /// An external tool (dpkg-deb, gzip, md5sum) failed or is missing.
    #[error("{tool} failed ({status}): {message}")]
    ToolFailed {
        tool: String,
        status: String,
        message: String,
    },

    /// A source directory given to `add` has no dkms.conf.
    /// DKMS 3.2.2 then takes the word for NAME/VERSION and finds no module named: its text.
    #[error("Arguments <module> and <module-version> are not specified.\nUsage: add <module>/<module-version> or\n       add -m <module>/<module-version> or\n       add -m <module> -v <module-version>")]
    NoConfInSource { path: PathBuf },

    /// Another rdkms command held the tree's lock for longer than the timeout.
    #[error("Timed out after {waited_secs} s waiting for {path} (held by {holder}). Wait for that command to finish, or raise --lock-timeout.", path = .path.display())]
    LockTimeout {
        path: PathBuf,
        holder: String,
        waited_secs: u64,
    },

    /// A non-root user hit a permission error on the system's trees.
    #[error("Permission denied on {path}: this command needs root. Run it with sudo, or use --root DIR on a tree you own.", path = .path.display())]
    NeedsRoot { path: PathBuf },

    /// `match` was called wrongly; DKMS's text and exit status.
    #[error("{text}")]
    Match { text: &'static str, code: i32 },

    /// `match` names a module the tree does not have.
    #[error("The module: {module} is not located in the DKMS tree.")]
    TemplateModule { module: String },

    /// An I/O operation failed; the path tells where.
    #[error("{op} {path}: {source}", path = .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The DKMS-compatible process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            Error::MissingModule { .. } => 1,
            Error::ConfNotFound { .. } => 4,
            Error::BadConf { .. } | Error::ConfEval { .. } | Error::Untrusted { .. } => 8,
            Error::NotAdded { .. } => 3,
            Error::AlreadyAdded { .. } | Error::AddedFromElsewhere { .. } => 3,
            Error::SourceMissing { .. } => 2,
            Error::MissingHeaders { .. } => 21,
            Error::BuildExclusive { .. } => 77,
            Error::MissingBuildDepends { .. } => 13,
            Error::AutoinstallFailed => 11,
            Error::Broken { .. } => 4,
            Error::NoModuleSource { .. } => 8,
            Error::InstallAborted | Error::MissingBuiltModule { .. } => 6,
            Error::PrermFailed { .. } => 14,
            Error::BadPatch { .. } => 5,
            Error::PatchFailed { .. } => 6,
            Error::BuildFailed { .. } => 10,
            Error::BuiltModuleMissing { .. } => 7,
            Error::InstallFailed(_) => 6,
            Error::PreInstallFailed { .. } => 101,
            Error::PathEscape { .. } => 8,
            Error::Initramfs { .. } => 7,
            Error::Depmod { .. } => 6,
            Error::OneKernel { .. } => 4,
            Error::AllNotSupported { .. } => 5,
            Error::UnknownArch => 12,
            Error::NotBuilt { .. } => 6,
            Error::TarballKinds => 8,
            Error::ArchiveMissing { .. } => 2,
            Error::BadArchive { .. } => 7,
            Error::ArchiveAlreadyAdded { .. } => 8,
            Error::Packaging { .. } => 1,
            Error::ToolFailed { .. } => 1,
            Error::NoConfInSource { .. } => 1,
            Error::LockTimeout { .. } => 75,
            Error::NeedsRoot { .. } => 1,
            Error::Match { code, .. } => *code,
            Error::TemplateModule { .. } => 3,
            Error::Io { .. } => 1,
        }
    }

    /// A permission error of a non-root user becomes `NeedsRoot` (one line saying what to do).
    pub fn for_user(self) -> Self {
        match self {
            Error::Io { path, source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied
                    && !nix::unistd::geteuid().is_root() =>
            {
                Error::NeedsRoot { path }
            }
            other => other,
        }
    }

    /// Printed as DKMS's `Warning: ` (a module skipped on purpose), not as an error.
    pub fn is_warning(&self) -> bool {
        matches!(self, Error::BuildExclusive { .. })
    }

    /// rdkms's one-line advice after DKMS's text: printed when invoked as `rdkms`, never as
    /// `dkms` (whose output maintainer scripts and DKMS's own tests compare byte for byte).
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::MissingModule { action } => {
                format!("Name the module: rdkms {action} NAME/VERSION (or -m NAME -v VERSION).")
            }
            Error::ConfNotFound { .. } => {
                "Point at a source directory holding dkms.conf (or use -c FILE).".to_string()
            }
            Error::BadConf { file, problems } => problems
                .iter()
                .map(|p| p.hint(file))
                .collect::<Vec<_>>()
                .join("\n"),
            Error::ConfEval { file, problem, fix } => {
                format!(
                    "{}: cannot be evaluated: {problem}. Fix: {fix}",
                    file.display()
                )
            }
            Error::MissingBuiltModule { rebuild, .. } => format!("Rebuild it: {rebuild}"),
            Error::Broken { module, version } => format!(
                "Put its sources back and run: rdkms add {module}/{version} (or delete its directory in the dkms tree by hand)."
            ),
            Error::NotAdded { module, version } => {
                format!("Add it first: rdkms add {module}/{version}")
            }
            Error::AlreadyAdded { .. } => {
                "Use --force to replace it, or remove it first.".to_string()
            }
            Error::SourceMissing { .. } => {
                "Install the module's source (e.g. its -dkms package) or give the path to it."
                    .to_string()
            }
            Error::MissingHeaders { kernel, .. } => {
                format!("Install linux-headers-{kernel} or use --kernelsourcedir DIR.")
            }
            Error::BadPatch { .. } => {
                "Ship the patch under the source's patches/ directory and name it relative to it."
                    .to_string()
            }
            Error::BuildFailed { code, .. } => format!("make exited with status {code}."),
            Error::PreInstallFailed { script, code } => {
                format!("The pre_install script {script} exited with status {code}.")
            }
            Error::Depmod { kernel, .. } => format!(
                "Run depmod -a {kernel} to see its whole error and fix it; then rdkms reconcile finishes the owed depmod."
            ),
            Error::OneKernel { .. } => "Name one kernel: -k KVER.".to_string(),
            Error::AllNotSupported { .. } => "Name the kernels with -k KVER.".to_string(),
            Error::UnknownArch => "Pass -a ARCH.".to_string(),
            Error::ArchiveMissing { .. } => {
                "Give the path of a DKMS tarball (as written by mktarball).".to_string()
            }
            Error::NoConfInSource { path } => format!(
                "{} holds no dkms.conf: point at the module's source directory (the one holding dkms.conf).",
                path.display()
            ),
            _ => return None,
        })
    }

    /// The lines DKMS prints while it finds the problems, before its `Error!` (as `dkms`).
    pub fn findings(&self) -> Vec<String> {
        match self {
            Error::BadConf { problems, .. } => problems
                .iter()
                .filter_map(|p| p.finding.as_ref())
                .map(|f| format!("dkms.conf: Error! {f}"))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A failed directory walk below `root`, naming the entry it failed on when known.
    pub fn walk(root: &Path, e: walkdir::Error) -> Self {
        let path = e.path().unwrap_or(root).to_path_buf();
        Error::io("read", path, e.into())
    }

    /// Wraps an `io::Error` with the operation and path it concerns.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// One problem of a dkms.conf: what DKMS says about it (`None` for what only rdkms checks)
/// and rdkms's hint (the directive, what is wrong, the fix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfProblem {
    pub finding: Option<ConfFinding>,
    pub directive: String,
    pub problem: String,
    pub fix: String,
}

impl ConfProblem {
    /// rdkms's one line for this problem of `file`.
    pub fn hint(&self, file: &Path) -> String {
        format!(
            "{}: {}: {}. Fix: {}",
            file.display(),
            self.directive,
            self.problem,
            self.fix
        )
    }
}

/// DKMS 3.2.2's words for each problem its `read_conf` and `read_conf_strict` report, printed
/// after `dkms.conf: Error! ` (one of them spans two lines, as DKMS's does).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfFinding {
    #[error("No '{0}' directive specified.")]
    Missing(&'static str),
    #[error("No 'BUILT_MODULE_NAME' directive specified for record #{0}.")]
    NoBuiltName(usize),
    #[error("'{array}' directive ends in '.o' or '.ko' in record #{index}.")]
    Suffix { array: &'static str, index: usize },
    #[error("No 'DEST_MODULE_LOCATION' directive specified for record #{0}.")]
    NoDestLocation(usize),
    #[error("Directive 'DEST_MODULE_LOCATION' does not begin with\n'/kernel', '/updates', or '/extra' in record #{0}.")]
    DestLocationPrefix(usize),
    #[error("Unsupported {name} value '{value}'")]
    Unsupported { name: &'static str, value: String },
    #[error("Duplicate module '{name}' in '{array}[{index}]'.")]
    Duplicate {
        name: String,
        array: &'static str,
        index: usize,
    },
}

/// What DKMS 3.2.2 warns about in a dkms.conf it accepts (add, build and install), on stderr.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfWarning {
    /// No module records: the package builds nothing, which DKMS allows.
    #[error("dkms.conf: Warning! Zero modules specified.")]
    ZeroModules,
    /// A directive DKMS 3.2.2 ignores (`CLEAN` other than `true`, `REMAKE_INITRD`,
    /// `MODULES_CONF*`), named with the file that set it.
    #[error("Deprecated feature: {directive} ({file})", file = .file.display())]
    Deprecated {
        directive: &'static str,
        file: PathBuf,
    },
}

/// How DKMS words the one-kernel rule: the kernel hooks need exactly one, other actions
/// refuse several.
fn one_kernel_rule(action: &str) -> &'static str {
    if action.starts_with("kernel_") {
        "requires exactly one kernel version parameter on the command line."
    } else {
        "does not support multiple kernel version parameters on the command line."
    }
}

/// Adds path context to `std::io::Result`s: `fs::read(p).ctx("read", p)?`.
pub trait IoContext<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}
