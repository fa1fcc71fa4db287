//! Whether an installation marked by `kernel-K-A` really has its module files on disk
//! (reliability invariant (a)). The link alone is not proof: a file deleted by hand, or by an
//! older version of rdkms killed halfway through an uninstall, would otherwise stay "installed"
//! for ever. The planner asks this for every installed build so that the next run reinstalls.

use std::path::Path;

use crate::conf::{self, model::Target, DkmsConf, EvalMode, LoadRequest};
use crate::effects::install::find_module_file;
use crate::state::tree::Tree;
use crate::system::config::Paths;
use crate::system::host;
use crate::system::kernel::Compression;

/// Every module the dkms.conf names is present in its install location (or its raw
/// DEST_MODULE_LOCATION, or anywhere in the kernel's tree when the version check kept the
/// kernel's own copy). When the conf cannot be read statically, the built files are looked up
/// in the distribution's install location; if that cannot be decided either, the link is
/// trusted.
pub fn installed_files_present(paths: &Paths, m: &str, v: &str, k: &str, a: &str) -> bool {
    let tree = Tree::new(&paths.dkms_tree);
    let kernel_dir = paths.install_tree.join(k);
    match static_conf(paths, &tree, m, v, k, a) {
        Some(conf) => conf.modules.iter().all(|e| {
            [&e.install_location, &e.dest_location]
                .iter()
                .any(|loc| in_dir(&kernel_dir.join(loc.trim_start_matches('/')), &e.dest_name))
                || crate::effects::install::kernel_has_module(&kernel_dir, &e.dest_name)
        }),
        None => {
            let Some(files) = tree.built_module_files(m, v, k, a) else {
                return true;
            };
            let location = host::location_override(paths).unwrap_or_else(|| "/updates/dkms".into());
            let dir = kernel_dir.join(location.trim_start_matches('/'));
            files
                .iter()
                .filter(|f| f.contains(".ko"))
                .all(|f| dir.join(f).is_file())
        }
    }
}

fn in_dir(dir: &Path, name: &str) -> bool {
    find_module_file(dir, name, Compression::None).is_some()
}

/// The dkms.conf of `M/V` for `K/A`, read with the static evaluator only (never a shell: the
/// planner asks this for every installed build).
fn static_conf(paths: &Paths, tree: &Tree, m: &str, v: &str, k: &str, a: &str) -> Option<DkmsConf> {
    let kernel_source_dir = paths.kernel_build_dir(k);
    conf::load(&LoadRequest {
        conf_file: tree.source_link(m, v).join("dkms.conf"),
        module: m.to_string(),
        module_version: v.to_string(),
        target: Target {
            kernel: k.to_string(),
            arch: a.to_string(),
            kernel_config: kernel_source_dir.join(".config"),
            kernel_source_dir,
            build_dir: tree.version_dir(m, v).join("build"),
            location_override: host::location_override(paths),
        },
        etc_dkms: Some(paths.etc_dkms.clone()),
        dkms_tree: paths.dkms_tree.clone(),
        source_tree: paths.source_tree.clone(),
        install_tree: paths.install_tree.clone(),
        directive_overrides: Vec::new(),
        mode: EvalMode::StaticOnly,
    })
    .ok()
}
