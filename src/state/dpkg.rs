//! dpkg's database, read: which binary module packages (`mkbmdeb`'s `NAME-modules-KVER`) are
//! installed and which module files they own, so that `install` and `uninstall` never replace
//! or delete a file dpkg owns and `status` can list them.

use std::fs;
use std::path::{Path, PathBuf};

use memchr::memmem;

use crate::base::arch::kernel_arch;
use crate::base::error::{Error, Result};
use crate::system::config::Paths;

/// A binary module package recorded in the dpkg database.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BinaryPackage {
    /// `NAME-modules-KVER`.
    pub package: String,
    /// NAME as in the package name (a DKMS module name with `_` reads as `-`).
    pub name: String,
    pub kernel: String,
    pub version: String,
    /// Kernel architecture (`x86_64`), from the package's Debian architecture.
    pub arch: String,
    /// dpkg's state word: `installed`, `unpacked`, `half-configured`, ...
    pub state: String,
    /// Module files the package owns, as system paths (`/lib/modules/...`).
    pub modules: Vec<PathBuf>,
}

/// The paragraphs of a dpkg status file that mention `-dkms-bin`, as field name → value
/// (continuations dropped). One SIMD substring scan finds them; the other packages (a host has
/// a thousand or more) are never split into lines, so `status` stays fast.
fn paragraphs(text: &[u8]) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut done = 0;
    for hit in memmem::find_iter(text, b"-dkms-bin") {
        if hit < done {
            continue;
        }
        let start = memmem::rfind(&text[..hit], b"\n\n").map_or(0, |i| i + 2);
        let end = memmem::find(&text[hit..], b"\n\n").map_or(text.len(), |i| hit + i);
        done = end;
        let fields: Vec<(String, String)> = String::from_utf8_lossy(&text[start..end])
            .lines()
            .filter(|l| !l.starts_with([' ', '\t']))
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        if !fields.is_empty() {
            out.push(fields);
        }
    }
    out
}

/// The binary module packages dpkg has on disk under `--root` (`<root>/var/lib/dpkg/status`):
/// packages `*-modules-*` whose Source is `*-dkms-bin`, in a state that has files unpacked.
pub fn installed_packages(paths: &Paths) -> Result<Vec<BinaryPackage>> {
    let admin = paths.system("/var/lib/dpkg");
    let status = admin.join("status");
    let text = match fs::read(&status) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", status, e)),
    };
    let mut out = Vec::new();
    for p in paragraphs(&text) {
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let (Some(package), Some(source)) = (get("Package"), get("Source")) else {
            continue;
        };
        let source = source.split_whitespace().next().unwrap_or_default();
        let Some(name) = source.strip_suffix("-dkms-bin") else {
            continue;
        };
        let Some(kernel) = package.strip_prefix(&format!("{name}-modules-")) else {
            continue;
        };
        let state = get("Status")
            .and_then(|s| s.split_whitespace().nth(2))
            .unwrap_or("not-installed");
        if matches!(state, "not-installed" | "config-files") {
            continue;
        }
        let debarch = get("Architecture").unwrap_or_default();
        let modules = owned_modules(&admin, package, debarch)?;
        out.push(BinaryPackage {
            package: package.into(),
            name: name.into(),
            kernel: kernel.into(),
            version: get("Version").unwrap_or_default().into(),
            arch: kernel_arch(debarch).into(),
            state: state.into(),
            modules,
        });
    }
    out.sort_by(|a, b| a.package.cmp(&b.package));
    Ok(out)
}

/// The module files listed in `info/PKG.list` (or `PKG:ARCH.list`).
fn owned_modules(admin: &Path, package: &str, debarch: &str) -> Result<Vec<PathBuf>> {
    let info = admin.join("info");
    for name in [
        format!("{package}.list"),
        format!("{package}:{debarch}.list"),
    ] {
        let list = info.join(name);
        match fs::read_to_string(&list) {
            Ok(text) => {
                return Ok(text
                    .lines()
                    .filter(|l| l.ends_with(".ko") || l.contains(".ko."))
                    .map(PathBuf::from)
                    .collect())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("read", list, e)),
        }
    }
    Ok(Vec::new())
}

/// The package that owns `file` (a path as rdkms writes it, i.e. under `--root`), if any: the
/// check `install` and `uninstall` make before they replace or delete a module file.
pub fn owner<'a>(
    paths: &Paths,
    packages: &'a [BinaryPackage],
    file: &Path,
) -> Option<&'a BinaryPackage> {
    if packages.is_empty() {
        return None;
    }
    let real = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let file = real(file);
    packages
        .iter()
        .find(|p| p.modules.iter().any(|m| real(&paths.system(m)) == file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_file_yields_binary_module_packages() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths::under(tmp.path());
        let admin = tmp.path().join("var/lib/dpkg");
        fs::create_dir_all(admin.join("info")).unwrap();
        fs::write(
            admin.join("status"),
            "Package: hello-modules-6.1.0-56-amd64\nStatus: install ok installed\n\
             Source: hello-dkms-bin (1.0)\nVersion: 1.0\nArchitecture: amd64\n\
             Description: x\n long text\n\n\
             Package: other-modules-6.1.0-56-amd64\nStatus: deinstall ok config-files\n\
             Source: other-dkms-bin\nVersion: 2\nArchitecture: amd64\n\n\
             Package: linux-modules-6.1.0-56-amd64\nStatus: install ok installed\n\
             Source: linux\nVersion: 6.1\nArchitecture: amd64\n",
        )
        .unwrap();
        fs::write(
            admin.join("info/hello-modules-6.1.0-56-amd64.list"),
            "/.\n/lib\n/lib/modules/6.1.0-56-amd64/updates/dkms/hello.ko\n/usr/share/doc\n",
        )
        .unwrap();
        let pkgs = installed_packages(&paths).unwrap();
        assert_eq!(pkgs.len(), 1);
        let p = &pkgs[0];
        assert_eq!(p.kernel, "6.1.0-56-amd64");
        assert_eq!(p.arch, "x86_64");
        assert_eq!(
            (p.name.as_str(), p.version.as_str(), p.state.as_str()),
            ("hello", "1.0", "installed")
        );
        let owned = paths.system("/lib/modules/6.1.0-56-amd64/updates/dkms/hello.ko");
        assert_eq!(
            owner(&paths, &pkgs, &owned).map(|p| p.name.as_str()),
            Some("hello")
        );
        let other = paths.system("/lib/modules/6.1.0-56-amd64/updates/dkms/x.ko");
        assert!(owner(&paths, &pkgs, &other).is_none());
    }
}
