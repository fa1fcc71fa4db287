//! DKMS 3.2.2's `read_conf_strict`: what add, build and install (not uninstall or remove) check
//! on top of reading a dkms.conf. It warns about deprecated directives and about a package with
//! no module, and refuses a module listed twice.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::base::error::{ConfWarning, Result};
use crate::conf::{Directives, DkmsConf};

/// The directives DKMS 3.2.2 ignores and names, in the order of its notices (CLEAN first,
/// which counts only when it is not a no-op).
const DEPRECATED: [&str; 5] = [
    "REMAKE_INITRD",
    "MODULES_CONF",
    "MODULES_CONF_OBSOLETES",
    "MODULES_CONF_ALIAS_TYPE",
    "MODULES_CONF_OBSOLETE_ONLY",
];

/// The deprecated directives set in `d` (set at all, even to an empty value, as DKMS counts).
fn deprecated_in(d: &Directives) -> Vec<&'static str> {
    let clean = d.count("CLEAN") > 0
        && !matches!(d.scalar("CLEAN"), "true" | "/bin/true" | "/usr/bin/true");
    clean
        .then_some("CLEAN")
        .into_iter()
        .chain(DEPRECATED.into_iter().filter(|n| d.count(n) > 0))
        .collect()
}

/// The notices DKMS prints while it sources `files` (a dkms.conf, then its /etc/dkms
/// overrides): after each file, one per deprecated directive set so far. `all` is what every
/// file gives; `first(n)` evaluates the first `n` files, needed only when a directive is
/// deprecated and there are overrides.
pub fn deprecated(
    files: &[PathBuf],
    all: &Directives,
    first: impl Fn(usize) -> Result<Directives>,
) -> Result<Vec<ConfWarning>> {
    if deprecated_in(all).is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let so_far = if i + 1 == files.len() {
            all.clone()
        } else {
            first(i + 1)?
        };
        out.extend(
            deprecated_in(&so_far)
                .into_iter()
                .map(|directive| ConfWarning::Deprecated {
                    directive,
                    file: file.clone(),
                }),
        );
    }
    Ok(out)
}

/// The conf files and kernels whose notices this process printed. DKMS reads a conf again,
/// and warns again, only when the module, kernel, arch or file changes: `dkms install` warns
/// once although it builds first.
static NOTICED: Mutex<Vec<(PathBuf, String, String)>> = Mutex::new(Vec::new());

/// Whether the deprecation notices of `file` for this kernel are still to be printed (and
/// from now on, printed).
fn first_notice(file: &Path, kernel: &str, arch: &str) -> bool {
    let key = (
        std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf()),
        kernel.to_string(),
        arch.to_string(),
    );
    let mut noticed = NOTICED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if noticed.contains(&key) {
        return false;
    }
    noticed.push(key);
    true
}

/// rdkms still honours REMAKE_INITRD (its hooks regenerate the initramfs for such modules),
/// so only `dkms`, which prints DKMS 3.2.2's text, calls it deprecated.
fn shown(w: &ConfWarning) -> bool {
    crate::base::persona::as_dkms()
        || !matches!(
            w,
            ConfWarning::Deprecated {
                directive: "REMAKE_INITRD",
                ..
            }
        )
}

/// DKMS's strict read of `conf` for `kernel`/`arch`: `say` gets the warnings (the deprecation
/// notices once per file and kernel in a process, then the zero-modules warning), and a
/// module listed twice is refused.
pub fn check(conf: &DkmsConf, kernel: &str, arch: &str, say: impl Fn(&str)) -> Result<()> {
    if !conf.deprecated.is_empty() && first_notice(&conf.file, kernel, arch) {
        conf.deprecated
            .iter()
            .filter(|w| shown(w))
            .for_each(|w| say(&w.to_string()));
    }
    if conf.modules.is_empty() {
        say(&ConfWarning::ZeroModules.to_string());
    }
    conf.duplicates()
}
