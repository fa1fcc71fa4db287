//! Running depmod for a kernel once per command (DKMS runs it once per module), against the
//! install tree actually in use: `-b BASEDIR` when that is not the system's `/lib/modules`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::base::error::{Error, IoContext, Result};
use crate::state::journal::Marks;
use crate::system::config::Paths;
use crate::system::console::Console;
use crate::system::kernel::KernelFacts;

/// The depmod command line for a kernel, plus a temporary base directory it needs to keep
/// alive (when the install tree does not end in `lib/modules`).
pub struct DepmodCall {
    pub command: Command,
    _base: Option<tempfile::TempDir>,
}

/// Plans `depmod -a [-b BASE] [-F System.map] K` for `install_tree`.
pub fn call_for(install_tree: &Path, facts: &KernelFacts) -> Result<DepmodCall> {
    let mut command = Command::new("depmod");
    command.arg("-a");
    let mut base_dir = None;
    if install_tree != Path::new("/lib/modules") {
        let base = match base_of(install_tree) {
            Some(b) => b,
            None => {
                // depmod only knows <base>/lib/modules: give it one that points at the tree.
                let tmp = tempfile::tempdir().ctx("create a temporary directory", "/tmp")?;
                let lib = tmp.path().join("lib");
                std::fs::create_dir(&lib).ctx("create", &lib)?;
                let tree = std::path::absolute(install_tree).ctx("resolve", install_tree)?;
                std::os::unix::fs::symlink(&tree, lib.join("modules"))
                    .ctx("create symlink", lib.join("modules"))?;
                let p = tmp.path().to_path_buf();
                base_dir = Some(tmp);
                p
            }
        };
        command.arg("-b").arg(base);
    }
    if let Some(map) = &facts.system_map {
        command.arg("-F").arg(map);
    }
    command.arg(&facts.kernel);
    Ok(DepmodCall {
        command,
        _base: base_dir,
    })
}

/// `X` when the install tree is `X/lib/modules`.
fn base_of(install_tree: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(install_tree).ok()?;
    let lib = abs.parent()?;
    (abs.file_name()? == "modules" && lib.file_name()? == "lib")
        .then(|| lib.parent().map(Path::to_path_buf))
        .flatten()
}

/// Directory in the dkms tree holding one empty file per kernel whose depmod is still owed.
pub const PENDING_DIR: &str = ".rdkms-depmod-pending";

/// The kernels whose modules changed without a successful depmod since (a run was killed or
/// depmod failed); the next run that takes the lock runs it.
pub fn pending(paths: &Paths) -> BTreeSet<String> {
    Marks::new(&paths.dkms_tree, PENDING_DIR).pending()
}

/// Records durably, before a kernel's modules change, that it needs depmod.
pub fn record(paths: &Paths, kernel: &str) -> Result<()> {
    Marks::new(&paths.dkms_tree, PENDING_DIR).record(kernel)
}

/// The one depmod policy of every command and hook, for a kernel recorded (`record`) before
/// its modules changed: a kernel without a module directory has nothing to index and its
/// record goes; otherwise depmod runs and a success forgets the record. A failure removes
/// nothing (rolling an install back, as DKMS does, would leave fewer working modules than
/// before): the record stays, so the next command that takes the lock runs depmod again, and
/// the failure comes back as `Error::Depmod` (DKMS's exit 6) for the caller to report.
pub fn settle(paths: &Paths, facts: &KernelFacts, console: &Console) -> Result<()> {
    if !facts.modules_dir.is_dir() {
        return forget(paths, &facts.kernel);
    }
    run(&paths.install_tree, facts, console)?;
    forget(paths, &facts.kernel)
}

/// Forgets a record without running depmod (the kernel is gone, or `--no-depmod`).
pub fn forget(paths: &Paths, kernel: &str) -> Result<()> {
    Marks::new(&paths.dkms_tree, PENDING_DIR).clear(kernel)
}

/// Runs depmod for one kernel; a failure is `Error::Depmod` (exit 6) carrying depmod's last
/// line.
pub fn run(install_tree: &Path, facts: &KernelFacts, console: &Console) -> Result<()> {
    let mut call = call_for(install_tree, facts)?;
    console.command(format!("{:?}", call.command));
    console.begin("Running depmod");
    let out = call
        .command
        .stdin(Stdio::null())
        .output()
        .ctx("run", "depmod")?;
    let code = out.status.code().unwrap_or(-1);
    console.done(Some(code));
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(Error::Depmod {
        kernel: facts.kernel.clone(),
        code,
        detail: stderr.lines().last().unwrap_or("no message").to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(kernel: &str, map: Option<&str>) -> KernelFacts {
        KernelFacts {
            kernel: kernel.into(),
            arch: "x86_64".into(),
            modules_dir: PathBuf::new(),
            source_dir: PathBuf::new(),
            headers_present: true,
            config: PathBuf::new(),
            compression: crate::system::kernel::Compression::None,
            system_map: map.map(PathBuf::from),
        }
    }

    fn args(c: &DepmodCall) -> Vec<String> {
        c.command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn system_tree_needs_no_base() {
        let c = call_for(
            Path::new("/lib/modules"),
            &facts("6.1", Some("/boot/System.map-6.1")),
        )
        .unwrap();
        assert_eq!(args(&c), ["-a", "-F", "/boot/System.map-6.1", "6.1"]);
    }

    #[test]
    fn rooted_tree_uses_the_root_as_base() {
        let c = call_for(Path::new("/tmp/r/lib/modules"), &facts("6.1", None)).unwrap();
        assert_eq!(args(&c), ["-a", "-b", "/tmp/r", "6.1"]);
    }

    #[test]
    fn other_trees_get_a_linked_base() {
        let t = tempfile::tempdir().unwrap();
        let c = call_for(t.path(), &facts("6.1", None)).unwrap();
        let a = args(&c);
        assert_eq!(a[1], "-b");
        let link = Path::new(&a[2]).join("lib/modules");
        assert_eq!(std::fs::read_link(link).unwrap(), t.path());
    }
}
