//! The dkms.conf engine. dkms.conf is bash: DKMS sources it in a subshell, keeps only a
//! whitelist of names and evaluates each value a second time. A static evaluator handles the
//! plain files quickly; anything it does not fully understand goes to an exact bash fallback.
//! Layer 1 (see `lib.rs`): may use `base` only.

pub mod bash;
pub mod directives;
pub mod lexer;
pub mod listing;
pub mod model;
pub mod static_eval;
pub mod strict;

pub use directives::Directives;
pub use model::{DkmsConf, ModuleEntry, Target};

use std::path::{Path, PathBuf};

/// The names DKMS 3.0.10 exports back from a dkms.conf (plus the newer upstream ones).
pub const DKMS_CONF_NAMES: &[&str] = &[
    "CLEAN",
    "PACKAGE_NAME",
    "PACKAGE_VERSION",
    "POST_ADD",
    "POST_BUILD",
    "POST_INSTALL",
    "POST_REMOVE",
    "PRE_BUILD",
    "PRE_INSTALL",
    "BUILD_DEPENDS",
    "BUILD_DEPENDS_REBUILD",
    "BUILD_EXCLUSIVE_KERNEL",
    "BUILD_EXCLUSIVE_KERNEL_MIN",
    "BUILD_EXCLUSIVE_KERNEL_MAX",
    "BUILD_EXCLUSIVE_ARCH",
    "BUILD_EXCLUSIVE_CONFIG",
    "OBSOLETE_BY",
    "MAKE",
    "MAKE_MATCH",
    "PATCH",
    "PATCH_MATCH",
    "BUILT_MODULE_NAME",
    "BUILT_MODULE_LOCATION",
    "DEST_MODULE_NAME",
    "DEST_MODULE_LOCATION",
    "STRIP",
    "AUTOINSTALL",
    "NO_WEAK_MODULES",
    "SIGN_FILE",
    "MOK_SIGNING_KEY",
    "MOK_CERTIFICATE",
    "REMAKE_INITRD",
    "MODULES_CONF",
    "MODULES_CONF_OBSOLETES",
    "MODULES_CONF_ALIAS_TYPE",
    "MODULES_CONF_OBSOLETE_ONLY",
];

/// The names DKMS accepts from `/etc/dkms/framework.conf`.
pub const FRAMEWORK_NAMES: &[&str] = &[
    "source_tree",
    "dkms_tree",
    "install_tree",
    "tmp_location",
    "verbose",
    "symlink_modules",
    "autoinstall_all_kernels",
    "modprobe_on_install",
    "parallel_jobs",
    "post_transaction",
    "sign_file",
    "mok_signing_key",
    "mok_certificate",
];

/// The shell variables visible while a dkms.conf is sourced (`$kernelver`, `$dkms_tree`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvalContext {
    /// Name/value pairs set as bash globals before sourcing, in this order.
    pub vars: Vec<(String, String)>,
    /// Working directory of the evaluation (affects globbing and relative `source`).
    pub cwd: PathBuf,
}

/// Which evaluator produced a result (reported by `conf show` and the corpus test).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalPath {
    Static,
    Bash,
}

/// How to evaluate: let the engine choose, or force one path (tests compare both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalMode {
    Auto,
    BashOnly,
    StaticOnly,
}

/// The result of evaluating a conf: the directives, which evaluator produced them, and what
/// the files wrote to stderr (the bash path only).
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub directives: Directives,
    pub path: EvalPath,
    pub stderr: String,
    /// DKMS 3.2.2's notices for deprecated directives (filled by [`read`]).
    pub deprecated: Vec<crate::base::error::ConfWarning>,
}

/// Evaluates `files` in order (a dkms.conf followed by its /etc/dkms overrides), keeping only
/// `names`, with DKMS's semantics: each file in its own subshell, values evaluated twice.
/// `Auto` tries the static evaluator and falls back to bash when it declines a file.
/// Whatever the files write to stderr is passed on, as DKMS does.
pub fn evaluate(
    files: &[PathBuf],
    names: &[&str],
    ctx: &EvalContext,
    mode: EvalMode,
) -> crate::Result<(Directives, EvalPath)> {
    let e = evaluate_captured(files, names, ctx, mode)?;
    pass_on(&e.stderr);
    Ok((e.directives, e.path))
}

/// [`evaluate`], keeping the files' stderr in the result instead of passing it on.
pub fn evaluate_captured(
    files: &[PathBuf],
    names: &[&str],
    ctx: &EvalContext,
    mode: EvalMode,
) -> crate::Result<Evaluation> {
    let by_bash = || -> crate::Result<Evaluation> {
        let timeout = bash::timeout_from_env()?;
        let (directives, stderr) = bash::evaluate_captured(files, names, ctx, timeout)?;
        Ok(Evaluation {
            directives,
            path: EvalPath::Bash,
            stderr,
            deprecated: Vec::new(),
        })
    };
    if mode == EvalMode::BashOnly {
        return by_bash();
    }
    match static_eval::evaluate(files, names, ctx)? {
        Ok(directives) => Ok(Evaluation {
            directives,
            path: EvalPath::Static,
            stderr: String::new(),
            deprecated: Vec::new(),
        }),
        Err(_) if mode == EvalMode::Auto => by_bash(),
        Err(declined) => Err(crate::Error::ConfEval {
            file: declined.file,
            problem: format!(
                "the static evaluator does not understand {}",
                declined.reason
            ),
            fix: "unset RDKMS_CONF_EVAL (or set it to bash) so bash reads the file".into(),
        }),
    }
}

fn pass_on(stderr: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stderr(), stderr.as_bytes());
}

/// The override files DKMS sources after a package's dkms.conf, in order, that exist (only
/// listed names are stat'ed: most packages have none).
pub fn override_files(
    etc_dkms: &Path,
    module: &str,
    version: &str,
    kernel: &str,
    arch: &str,
) -> Vec<PathBuf> {
    let listed = listing::of(etc_dkms);
    [
        format!("{module}.conf"),
        format!("{module}-{version}.conf"),
        format!("{module}-{version}-{kernel}.conf"),
        format!("{module}-{version}-{kernel}-{arch}.conf"),
    ]
    .into_iter()
    .filter(|f| {
        listed
            .as_ref()
            .as_ref()
            .is_ok_and(|names| names.contains(f))
    })
    .map(|f| etc_dkms.join(f))
    .filter(|p| p.is_file())
    .collect()
}

/// Everything needed to read one module's dkms.conf for one kernel/arch.
#[derive(Debug, Clone)]
pub struct LoadRequest {
    /// The package's dkms.conf.
    pub conf_file: PathBuf,
    /// `$module` / `$module_version` (from the tree or the source directory name).
    pub module: String,
    pub module_version: String,
    pub target: model::Target,
    /// `/etc/dkms` (under the root) for override files; `None` skips overrides.
    pub etc_dkms: Option<PathBuf>,
    pub dkms_tree: PathBuf,
    pub source_tree: PathBuf,
    pub install_tree: PathBuf,
    /// `--directive NAME=VALUE` overrides, applied after evaluation.
    pub directive_overrides: Vec<String>,
    pub mode: EvalMode,
}

impl LoadRequest {
    /// The shell variables DKMS has set while it sources a dkms.conf.
    pub fn context(&self) -> EvalContext {
        let t = &self.target;
        let vars = [
            ("kernelver", t.kernel.clone()),
            ("arch", t.arch.clone()),
            (
                "kernel_source_dir",
                t.kernel_source_dir.display().to_string(),
            ),
            ("kernel_config", t.kernel_config.display().to_string()),
            ("module", self.module.clone()),
            ("module_version", self.module_version.clone()),
            ("dkms_tree", self.dkms_tree.display().to_string()),
            ("source_tree", self.source_tree.display().to_string()),
            ("install_tree", self.install_tree.display().to_string()),
            ("tmp_location", std::env::temp_dir().display().to_string()),
        ];
        EvalContext {
            vars: vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            cwd: PathBuf::from("/"),
        }
    }
}

/// Evaluates a module's dkms.conf (plus /etc/dkms overrides) for a target into the directives
/// DKMS would hold afterwards, `--directive` overrides included; stderr is kept for [`model`].
pub fn read(req: &LoadRequest) -> crate::Result<Evaluation> {
    if !req.conf_file.is_file() {
        return Err(crate::Error::ConfNotFound {
            path: req.conf_file.clone(),
        });
    }
    refuse_outward_link(&req.conf_file)?;
    let mut files = vec![req.conf_file.clone()];
    if let Some(etc) = &req.etc_dkms {
        files.extend(override_files(
            etc,
            &req.module,
            &req.module_version,
            &req.target.kernel,
            &req.target.arch,
        ));
    }
    let mut e = evaluate_captured(&files, DKMS_CONF_NAMES, &req.context(), req.mode)?;
    e.deprecated = strict::deprecated(&files, &e.directives, |upto| {
        evaluate_captured(&files[..upto], DKMS_CONF_NAMES, &req.context(), req.mode)
            .map(|prefix| prefix.directives)
    })?;
    for d in &req.directive_overrides {
        let (name, value) = d
            .split_once('=')
            .ok_or_else(|| crate::Error::Usage(format!("--directive '{d}' is not NAME=VALUE")))?;
        // DKMS exports NAME=VALUE: element 0 changes, other elements stay.
        e.directives.set(name, 0, value.to_string());
    }
    Ok(e)
}

/// A dkms.conf that is a symlink out of its own directory to a file not everyone may read
/// (`/etc/shadow`, say) is not read: its first line would be quoted in the error, and so in
/// syslog.
fn refuse_outward_link(conf: &Path) -> crate::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let private = std::fs::metadata(conf).is_ok_and(|m| m.permissions().mode() & 0o004 == 0);
    if !conf.is_symlink() || !private {
        return Ok(());
    }
    let dir = conf.parent().unwrap_or(Path::new("."));
    let (Ok(real), Ok(real_dir)) = (std::fs::canonicalize(conf), std::fs::canonicalize(dir)) else {
        return Ok(());
    };
    if real.starts_with(&real_dir) {
        return Ok(());
    }
    Err(model::bad(
        conf,
        "dkms.conf",
        format!(
            "is a symbolic link to {}, a private file outside the module's sources",
            real.display()
        ),
        "replace the link with the file itself",
    ))
}

/// The typed model of an evaluation. On success the files' stderr is passed on (as DKMS
/// does); on failure its first line joins the first problem's line, since it often says why
/// (`line 2: PACKAGE_NAME: command not found` for `PACKAGE_NAME = x`).
pub fn model(req: &LoadRequest, e: &Evaluation) -> crate::Result<DkmsConf> {
    match DkmsConf::from_directives(&e.directives, &req.conf_file, &req.target, e.path) {
        Ok(mut conf) => {
            pass_on(&e.stderr);
            conf.deprecated = e.deprecated.clone();
            Ok(conf)
        }
        Err(crate::Error::BadConf { file, mut problems }) => {
            if let (Some(said), Some(first)) = (first_line(&e.stderr, &file), problems.first_mut())
            {
                first.problem.push_str(&format!(" (bash reported: {said})"));
            }
            Err(crate::Error::BadConf { file, problems })
        }
        Err(other) => Err(other),
    }
}

/// The first non-empty stderr line, without the file name bash puts in front.
fn first_line(stderr: &str, file: &Path) -> Option<String> {
    let line = stderr.lines().map(str::trim).find(|l| !l.is_empty())?;
    let abs = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let line = line
        .strip_prefix(&format!("{}: ", abs.display()))
        .unwrap_or(line);
    Some(line.to_string())
}

/// Reads, evaluates and validates a module's dkms.conf (plus /etc/dkms overrides) for a target.
pub fn load(req: &LoadRequest) -> crate::Result<DkmsConf> {
    model(req, &read(req)?)
}
