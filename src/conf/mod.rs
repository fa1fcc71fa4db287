//! The dkms.conf engine. dkms.conf is bash: DKMS sources it in a subshell, keeps only a
//! whitelist of names and evaluates each value a second time. A static evaluator handles the
//! plain files quickly; anything it does not fully understand goes to an exact bash fallback.

pub mod bash;
pub mod directives;
pub mod lexer;
pub mod model;
pub mod show;
pub mod static_eval;

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

/// Evaluates `files` in order (a dkms.conf followed by its /etc/dkms overrides), keeping only
/// `names`, with DKMS's semantics: each file in its own subshell, values evaluated twice.
/// `Auto` tries the static evaluator and falls back to bash when it declines a file.
pub fn evaluate(
    files: &[PathBuf],
    names: &[&str],
    ctx: &EvalContext,
    mode: EvalMode,
) -> crate::Result<(Directives, EvalPath)> {
    if mode == EvalMode::BashOnly {
        return Ok((bash::evaluate(files, names, ctx)?, EvalPath::Bash));
    }
    match static_eval::evaluate(files, names, ctx)? {
        Ok(d) => Ok((d, EvalPath::Static)),
        Err(_) if mode == EvalMode::Auto => {
            Ok((bash::evaluate(files, names, ctx)?, EvalPath::Bash))
        }
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

/// The override files DKMS sources after a package's dkms.conf, in order, that exist.
pub fn override_files(
    etc_dkms: &Path,
    module: &str,
    version: &str,
    kernel: &str,
    arch: &str,
) -> Vec<PathBuf> {
    [
        format!("{module}.conf"),
        format!("{module}-{version}.conf"),
        format!("{module}-{version}-{kernel}.conf"),
        format!("{module}-{version}-{kernel}-{arch}.conf"),
    ]
    .into_iter()
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
/// DKMS would hold afterwards, `--directive` overrides included.
pub fn read(req: &LoadRequest) -> crate::Result<(Directives, EvalPath)> {
    if !req.conf_file.is_file() {
        return Err(crate::Error::ConfNotFound {
            path: req.conf_file.clone(),
        });
    }
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
    let (mut directives, path) = evaluate(&files, DKMS_CONF_NAMES, &req.context(), req.mode)?;
    for d in &req.directive_overrides {
        let (name, value) = d
            .split_once('=')
            .ok_or_else(|| crate::Error::Usage(format!("--directive '{d}' is not NAME=VALUE")))?;
        // DKMS exports NAME=VALUE: element 0 changes, other elements stay.
        directives.set(name, 0, value.to_string());
    }
    Ok((directives, path))
}

/// Reads, evaluates and validates a module's dkms.conf (plus /etc/dkms overrides) for a target.
pub fn load(req: &LoadRequest) -> crate::Result<DkmsConf> {
    let (directives, path) = read(req)?;
    DkmsConf::from_directives(&directives, &req.conf_file, &req.target, path)
}
