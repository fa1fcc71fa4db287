//! What one command was asked to do, typed once by the command layer from the parsed command
//! line (ripgrep's low-level flags → high-level arguments). Everything below `cmd/` reads
//! `Options`, never flags, so a change to the grammar stops at the command layer.

use std::path::PathBuf;

use crate::system::config::Paths;

/// A kernel target: version plus optional architecture from `-k KVER/ARCH` or `-a`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelTarget {
    pub kernel: String,
    pub arch: Option<String>,
}

/// The options of one command, with its paths resolved under `--root`.
#[derive(Debug, Clone)]
pub struct Options {
    pub paths: Paths,
    pub module: Option<String>,
    pub version: Option<String>,
    /// A source directory or dkms.conf given as a bare word.
    pub source_path: Option<PathBuf>,
    pub kernels: Vec<KernelTarget>,
    pub archs: Vec<String>,
    pub all: bool,
    pub force: bool,
    pub quiet: bool,
    pub verbose: bool,
    pub jobs: Option<u32>,
    pub lock_timeout: Option<u64>,
    pub kernel_source_dir: Option<PathBuf>,
    pub kernel_config: Option<PathBuf>,
    pub conf: Option<PathBuf>,
    pub directives: Vec<String>,
    pub archive: Option<PathBuf>,
    pub output: Option<PathBuf>,
    pub binaries_only: bool,
    pub source_only: bool,
    pub force_version_override: bool,
    pub no_depmod: bool,
    pub allow_untrusted_sources: bool,
    pub build_user: Option<String>,
}
