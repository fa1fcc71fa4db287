//! Helpers shared by the dkms.conf test crates: the evaluation context production code builds
//! for a kernel, the corpus locations, and the rule for missing prerequisites.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rdkms::conf::model::Target;
use rdkms::conf::{EvalContext, EvalMode, LoadRequest};

/// The kernel every conf is read for first: the newest one whose headers are installed
/// (`/lib/modules/K/build/Makefile`), so confs that read the kernel's `.config` see a real one.
/// Kernel ABIs move every few weeks, so it is looked up, never written down. Without headers it
/// is a made-up name: the evaluation tests only need a string, and tests that need the headers
/// check for them.
pub fn real_kernel() -> String {
    let mut kernels: Vec<String> = std::fs::read_dir("/lib/modules")
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join("build/Makefile").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    kernels.sort_by(|a, b| rdkms::base::version::ver_cmp(a, b));
    kernels.pop().unwrap_or_else(|| "6.1.0-0-amd64".to_string())
}

#[path = "../common/skip.rs"]
mod skip;
#[allow(unused_imports)] // not every test binary that includes this module skips
pub use skip::skip_unless;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real packages' confs, `tests/corpus/work/src/*/dkms.conf`, sorted.
pub fn real_confs() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(repo().join("tests/corpus/work/src"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("dkms.conf"))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The request production code builds for `conf` and `kernel` (module and version from the
/// directory name, as `conf show` does), with DKMS's default trees.
pub fn request(conf: &Path, kernel: &str, kernel_source_dir: &Path) -> LoadRequest {
    let (module, module_version) =
        rdkms::cmd::conf_show::name_version_from_dir(conf.parent().unwrap_or(Path::new("")));
    let dkms_tree = PathBuf::from("/var/lib/dkms");
    LoadRequest {
        conf_file: conf.to_path_buf(),
        target: Target {
            kernel: kernel.to_string(),
            arch: "x86_64".into(),
            kernel_source_dir: kernel_source_dir.to_path_buf(),
            kernel_config: kernel_source_dir.join(".config"),
            build_dir: dkms_tree.join(&module).join(&module_version).join("build"),
            location_override: Some("/updates/dkms".into()),
        },
        module,
        module_version,
        etc_dkms: None,
        dkms_tree,
        source_tree: PathBuf::from("/usr/src"),
        install_tree: PathBuf::from("/lib/modules"),
        directive_overrides: Vec::new(),
        mode: EvalMode::Auto,
    }
}

pub fn context(conf: &Path, kernel: &str, kernel_source_dir: &Path) -> EvalContext {
    request(conf, kernel, kernel_source_dir).context()
}

/// Writes `text` as `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write test file");
    p
}
