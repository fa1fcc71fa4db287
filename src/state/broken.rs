//! DKMS 3.2.2's "broken" module version: `<tree>/M/V` exists but its sources are gone (the
//! `source` link dangles) or unreachable (no link while `/usr/src/M-V` exists). Nothing can
//! be done with it safely, so every action but `add` refuses it and `status` says so.

use crate::base::error::{Error, Result};
use crate::state::tree::{Source, Tree};
use crate::system::config::Paths;

/// Whether `module/version` is broken in DKMS 3.2.2's sense.
pub fn is_broken(paths: &Paths, tree: &Tree, module: &str, version: &str) -> bool {
    if !tree.version_dir(module, version).is_dir() {
        return false;
    }
    match tree.source(module, version) {
        Source::Link { resolves, .. } => !resolves,
        Source::Dir => false,
        Source::Missing => paths
            .source_tree
            .join(format!("{module}-{version}"))
            .is_dir(),
    }
}

/// Refuses a broken version (exit 4), as DKMS does before any action but `add`.
pub fn refuse(paths: &Paths, tree: &Tree, module: &str, version: &str) -> Result<()> {
    if is_broken(paths, tree, module, version) {
        return Err(Error::Broken {
            module: module.to_string(),
            version: version.to_string(),
        });
    }
    Ok(())
}

/// What autoinstall prints for a broken version before going on with the others.
pub fn autoinstall_text(module: &str, version: &str) -> String {
    format!(
        "{module}/{version} is broken! Missing the source directory or the symbolic link pointing to it.\nManual intervention is required!"
    )
}

/// What `status` prints on stderr after a broken version's line.
pub fn status_text(module: &str, version: &str) -> String {
    format!(
        "{module}/{version}: Missing the module source directory or the symbolic link pointing to it.\nManual intervention is required!"
    )
}
