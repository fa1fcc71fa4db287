//! Deletions the hooks make without a module's dkms.conf: a build whose dkms.conf cannot be
//! read (with its installed copies), and what a purged kernel leaves in `/lib/modules`. What
//! the prerm hook removes is planned in `planning::plan` (`purge_kernel`); these are the raw
//! file operations behind two of its steps.

use std::fs;
use std::path::Path;

use crate::base::error::{IoContext, Result};
use crate::state::atomic::{self, Removals};
use crate::state::tree::Tree;
use crate::system::config::Paths;
use crate::system::host;

/// Removes a build whose dkms.conf cannot be read: its installed copies (the files of its
/// `module/` directory, found in the distribution's install location) when `kernel-K-A`
/// points at it, the link, and `<tree>/M/V/K/A`.
pub fn purge_without_conf(
    paths: &Paths,
    tree: &Tree,
    (module, version, kernel, arch): (&str, &str, &str, &str),
    removals: &mut Removals,
) -> Result<()> {
    let build = tree.build_dir(module, version, kernel, arch);
    let link = tree.installed_link(module, kernel, arch);
    let points_here = matches!(
        (fs::canonicalize(&link), fs::canonicalize(&build)),
        (Ok(a), Ok(b)) if a == b
    );
    if points_here {
        let location = host::location_override(paths).unwrap_or_else(|| "/updates/dkms".into());
        let dir = paths
            .install_tree
            .join(kernel)
            .join(location.trim_start_matches('/'));
        let built = tree.built_modules_dir(module, version, kernel, arch);
        for entry in fs::read_dir(&built).into_iter().flatten().flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().contains(".ko") {
                let file = dir.join(&name);
                crate::base::files::remove_file(&file, "delete")?;
            }
        }
        fs::remove_file(&link).ctx("delete", &link)?;
    }
    let kernel_dir = tree.version_dir(module, version).join(kernel);
    let only_build = fs::read_dir(&kernel_dir).is_ok_and(|d| {
        d.flatten().all(|e| {
            e.file_name().to_str() == Some(arch)
                || e.file_name().to_string_lossy().ends_with(atomic::TMP_MARK)
        })
    });
    if only_build {
        removals.hide(&kernel_dir)
    } else {
        removals.hide(&build)
    }
}

/// After purging a kernel: removes the dkms install directories it left empty and, for a kernel
/// that is gone, the depmod files once no module file is left, then its directory if empty.
/// Never touches a kernel's own modules or its headers link.
pub fn clean_kernel(paths: &Paths, kernel: &str, gone: bool) -> Result<()> {
    let dir = paths.install_tree.join(kernel);
    let location = host::location_override(paths).unwrap_or_else(|| "/updates/dkms".into());
    let mut sub = dir.join(location.trim_start_matches('/'));
    while sub.starts_with(&dir) && sub != dir {
        if fs::remove_dir(&sub).is_err() {
            break;
        }
        sub.pop();
    }
    if !gone || has_module_files(&dir) {
        return Ok(());
    }
    for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && name.starts_with("modules.") {
            fs::remove_file(entry.path()).ctx("delete", entry.path())?;
        }
    }
    let _ = fs::remove_dir(&dir);
    Ok(())
}

/// Whether any `*.ko*` file remains below `dir` (not following symlinks such as `build`).
fn has_module_files(dir: &Path) -> bool {
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .flatten()
        .any(|e| e.file_type().is_file() && e.file_name().to_string_lossy().contains(".ko"))
}
