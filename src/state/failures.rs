//! Failures remembered in the dkms tree (`.rdkms-failures/`), one record per module, kernel
//! and arch, until the module builds or its kernel goes: `rdkms plan` shows them and a hook
//! that would only repeat them changes nothing. Written through `atomic` (fsynced).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use crate::base::error::{Error, IoContext, Result};
use crate::state::atomic;
use crate::system::config::Paths;

/// Directory in the dkms tree with one record per failed module build.
pub const FAILURES_DIR: &str = ".rdkms-failures";

/// A failure remembered in the tree until the module builds or its kernel goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureNote {
    pub module: String,
    pub version: String,
    pub kernel: String,
    pub arch: String,
    pub code: i32,
    pub reason: String,
    pub critical: bool,
}

fn failure_file(paths: &Paths, module: &str, version: &str, kernel: &str, arch: &str) -> PathBuf {
    paths
        .dkms_tree
        .join(FAILURES_DIR)
        .join(format!("{module}@{version}@{kernel}@{arch}"))
}

/// Remembers a failed build (replacing an older note for the same module/version/kernel/arch).
pub fn remember_failure(paths: &Paths, note: &FailureNote) -> Result<()> {
    let dir = paths.dkms_tree.join(FAILURES_DIR);
    std::fs::create_dir_all(&dir).ctx("create", &dir)?;
    let file = failure_file(paths, &note.module, &note.version, &note.kernel, &note.arch);
    let text = serde_json::to_string(note).map_err(|e| Error::io("encode", &file, e.into()))?;
    atomic::write_file(&file, text.as_bytes())
}

/// Forgets the failure notes of a module on a kernel (it built, or was purged), or of every
/// module of `kernel` when `module` is None.
pub fn forget_failures(paths: &Paths, module: Option<&str>, kernel: &str) -> Result<()> {
    for note in failures(paths) {
        if note.kernel == kernel && module.is_none_or(|m| m == note.module) {
            let f = failure_file(paths, &note.module, &note.version, &note.kernel, &note.arch);
            crate::base::files::remove_file(&f, "remove")?;
        }
    }
    Ok(())
}

/// Every remembered failure, sorted by kernel then module.
pub fn failures(paths: &Paths) -> Vec<FailureNote> {
    let mut out: Vec<FailureNote> = std::fs::read_dir(paths.dkms_tree.join(FAILURES_DIR))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_none_or(|x| x != "tmp"))
                .filter(|e| !e.file_name().to_string_lossy().contains(atomic::TMP_MARK))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter_map(|t| serde_json::from_str(&t).ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| (&a.kernel, &a.module).cmp(&(&b.kernel, &b.module)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        let p = Paths::under(dir.path());
        (dir, p)
    }

    #[test]
    fn failures_are_remembered_until_forgotten() {
        let (_d, p) = root();
        let note = |m: &str, k: &str| FailureNote {
            module: m.into(),
            version: "1".into(),
            kernel: k.into(),
            arch: "x86_64".into(),
            code: 10,
            reason: "make failed".into(),
            critical: false,
        };
        remember_failure(&p, &note("b", "k1")).unwrap();
        remember_failure(&p, &note("a", "k1")).unwrap();
        remember_failure(&p, &note("a", "k2")).unwrap();
        remember_failure(&p, &note("a", "k2")).unwrap();
        assert_eq!(
            failures(&p),
            vec![note("a", "k1"), note("b", "k1"), note("a", "k2")]
        );
        forget_failures(&p, Some("a"), "k1").unwrap();
        assert_eq!(failures(&p), vec![note("b", "k1"), note("a", "k2")]);
        forget_failures(&p, None, "k2").unwrap();
        assert_eq!(failures(&p), vec![note("b", "k1")]);
    }
}
