//! Binary module packages (`mkbmdeb`): a module built once, shipped as an ordinary Debian package
//! `NAME-modules-KVER` that installs with plain dpkg/apt on hosts without rdkms, compilers or
//! headers; plus the reader of the dpkg database that lets `status` show such packages.
//!
//! Coexistence with a DKMS-built copy: both put the same file name into
//! `/lib/modules/KVER/updates/dkms/`. The binary package wins for its kernel: dpkg owns the file
//! (installing the package over an unowned DKMS copy replaces it silently, as dpkg does), and
//! rdkms must neither overwrite nor delete a file a package owns (`owner` tells it which).

use std::fs;
use std::path::{Path, PathBuf};

use memchr::memmem;

use crate::base::error::{Error, IoContext, Result};
use crate::cmd::cli::Invocation;
use crate::ops::lifecycle;
use crate::package::copyright::{self, Notices};
use crate::package::deb::{self, Content, Entry, Package, Plan};
use crate::state::lock::{self, TreeLock};
use crate::state::registered::{Build, Registered};
use crate::system::config::Paths;
use crate::system::kernel::KernelFacts;

/// Where the package puts the modules, below `/lib/modules/KVER` (DKMS's Debian location).
pub const MODULE_DIR: &str = "updates/dkms";

/// Everything a binary module package is made from, read from the tree beforehand.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub module: String,
    pub version: String,
    pub kernel: String,
    /// Kernel architecture (`uname -m` spelling).
    pub arch: String,
    /// Built module files and their sizes.
    pub modules: Vec<(PathBuf, u64)>,
    pub remake_initrd: bool,
    /// Copyright lines and licenses of the sources, for the copyright file.
    pub notices: Notices,
    pub maintainer: String,
    pub epoch: u64,
}

/// The package for one module build; pure, so that tests can check every byte of the plan.
pub fn plan(i: &Inputs) -> Result<Plan> {
    let name = deb::name_part(&i.module)?;
    let package = format!("{name}-modules-{}", i.kernel);
    deb::check_package_name(&package)?;
    deb::check_version(&package, &i.version)?;
    let debarch = deb::debian_arch(&i.arch).ok_or_else(|| Error::Packaging {
        package: package.clone(),
        problem: format!(
            "no Debian architecture is known for '{}'; pass -a with a kernel architecture such as x86_64 or aarch64.",
            i.arch
        ),
    })?;
    let module_dir = PathBuf::from("lib/modules")
        .join(&i.kernel)
        .join(MODULE_DIR);
    let mut entries: Vec<Entry> = i
        .modules
        .iter()
        .map(|(from, size)| Entry {
            path: module_dir.join(from.file_name().unwrap_or_default()),
            content: Content::File {
                from: from.clone(),
                size: *size,
            },
            mode: 0o644,
        })
        .collect();
    let doc = PathBuf::from("usr/share/doc").join(&package);
    let change = format!(
        "Binary modules of {} {} for Linux {} ({}), built by rdkms mkbmdeb.",
        i.module, i.version, i.kernel, i.arch
    );
    let changelog = deb::changelog_text(&package, &i.version, &change, &i.maintainer, i.epoch);
    entries.push(Entry {
        path: doc.join(deb::changelog_name(&i.version)),
        content: Content::Bytes(deb::gzip(changelog.as_bytes())?),
        mode: 0o644,
    });
    entries.push(Entry {
        path: doc.join("copyright"),
        content: Content::Bytes(copyright(i).into_bytes()),
        mode: 0o644,
    });
    let fields = vec![
        ("Package", package.clone()),
        ("Source", format!("{name}-dkms-bin")),
        ("Version", i.version.clone()),
        ("Architecture", debarch.to_string()),
        ("Maintainer", i.maintainer.clone()),
        ("Installed-Size", deb::installed_size(&entries).to_string()),
        ("Depends", format!("linux-image-{}", i.kernel)),
        ("Provides", format!("{name}-modules")),
        ("Section", "misc".to_string()),
        ("Priority", "optional".to_string()),
        (
            "Description",
            deb::description(
                &format!("{name} binary drivers for linux-image-{}", i.kernel),
                &[
                    &format!(
                        "This package contains {name} drivers for the {} Linux kernel,",
                        i.kernel
                    ),
                    &format!("built from {name}-dkms for the {debarch} architecture."),
                ],
            ),
        ),
    ];
    Ok(Plan {
        file_name: format!("{package}_{}_{debarch}.deb", i.version),
        package: Package {
            fields,
            entries,
            scripts: vec![
                ("postinst", postinst(&i.kernel, i.remake_initrd)),
                ("postrm", postrm(&i.kernel, i.remake_initrd)),
            ],
            epoch: i.epoch,
        },
    })
}

/// The copyright file: where the modules come from, and what their sources say.
fn copyright(i: &Inputs) -> String {
    let origin = format!(
        "This package was generated by rdkms mkbmdeb from the DKMS build of {m} {v}\n\
         for Linux {k} ({a}). It contains only the compiled kernel modules.",
        m = i.module,
        v = i.version,
        k = i.kernel,
        a = i.arch
    );
    let sources = format!("/usr/src/{}-{} on the build host", i.module, i.version);
    copyright::text(&origin, &sources, &i.notices)
}

/// Shell lines refreshing the module index (and the initramfs when the module asks for it).
/// Both are skipped when the tool is absent; `DPKG_ROOT` (set by dpkg for chrootless
/// installs into another root) is honoured by depmod, and no initramfs is built for such roots.
fn refresh(remake_initrd: bool, indent: &str) -> String {
    let mut s = format!(
        "{indent}if [ -d \"$DPKG_ROOT/lib/modules/$KVER\" ] && command -v depmod >/dev/null 2>&1; then\n\
         {indent}\tdepmod ${{DPKG_ROOT:+-b \"$DPKG_ROOT\"}} -a \"$KVER\"\n\
         {indent}fi\n"
    );
    if remake_initrd {
        s.push_str(&format!(
            "{indent}if [ -z \"$DPKG_ROOT\" ] && [ -e \"/boot/initrd.img-$KVER\" ] && command -v update-initramfs >/dev/null 2>&1; then\n\
             {indent}\tupdate-initramfs -u -k \"$KVER\"\n\
             {indent}fi\n"
        ));
    }
    s
}

/// A maintainer script that refreshes the module index (see `refresh`) for the dpkg actions
/// `verbs` (a `case` pattern).
fn refresh_script(why: &str, verbs: &str, kernel: &str, remake_initrd: bool) -> String {
    format!(
        "#!/bin/sh\n\
         # Written by rdkms mkbmdeb: {why}.\n\
         set -e\n\n\
         KVER='{kernel}'\n\n\
         case \"$1\" in\n\
         {verbs})\n\
         {}\t;;\n\
         esac\n\n\
         exit 0\n",
        refresh(remake_initrd, "\t")
    )
}

/// `postinst`: after the files are unpacked, make them known to modprobe.
pub fn postinst(kernel: &str, remake_initrd: bool) -> String {
    refresh_script(
        "make the modules just unpacked known to modprobe",
        "configure",
        kernel,
        remake_initrd,
    )
}

/// `postrm`: after the files are gone, drop them from the module index.
pub fn postrm(kernel: &str, remake_initrd: bool) -> String {
    refresh_script(
        "drop the removed modules from the module index",
        "remove|abort-install|abort-upgrade|disappear",
        kernel,
        remake_initrd,
    )
}

/// Reads what a package for `build` is made from.
fn inputs(
    reg: &Registered,
    build: &Build,
    directives: &[String],
    env_epoch: Option<u64>,
    maintainer: &str,
) -> Result<Inputs> {
    let modules = reg.built_modules(build)?;
    let conf = reg.conf(build, directives)?;
    let mut sized = Vec::new();
    for m in &modules {
        sized.push((m.clone(), fs::metadata(m).ctx("read", m)?.len()));
    }
    let epoch = env_epoch.unwrap_or_else(|| {
        deb::newest_mtime(
            modules
                .iter()
                .map(PathBuf::as_path)
                .chain([conf.file.as_path()]),
        )
    });
    Ok(Inputs {
        module: reg.module.clone(),
        version: reg.version.clone(),
        kernel: build.kernel.clone(),
        arch: build.arch.clone(),
        modules: sized,
        remake_initrd: conf.remake_initrd,
        notices: copyright::scan(&reg.source_dir()?),
        maintainer: maintainer.to_string(),
        epoch,
    })
}

/// Builds each requested kernel that is not built yet, exactly as `rdkms build` would (adding
/// `/usr/src/NAME-VERSION` first if needed), under the lock the caller holds.
fn ensure_built(inv: &Invocation, lock: &TreeLock, module: &str, version: &str) -> Result<()> {
    let ctx = lifecycle::Ctx::from_invocation(inv);
    let job = lifecycle::Job {
        ctx: &ctx,
        module: module.to_string(),
        version: version.to_string(),
    };
    lifecycle::ensure_added(&job, lock, inv)?;
    if inv.cli.all {
        return Ok(());
    }
    for b in Registered::open(&ctx.paths, module, version)?.requested_builds(inv)? {
        let facts = KernelFacts::probe(&ctx.paths, &b.kernel, &b.arch, &ctx.kernel_overrides);
        lifecycle::ensure_built(&job, &facts)?;
    }
    Ok(())
}

/// `rdkms mkbmdeb NAME/VERSION [-k KVER[/ARCH]]... [--all] [--output DIR]`: builds what is not
/// built yet, then writes one package per build to DIR (default
/// `<dkmstree>/NAME/VERSION/bmdeb/`) and prints each path on stdout.
pub fn run(inv: &Invocation) -> Result<i32> {
    let (Some(module), Some(version)) = (&inv.module, &inv.version) else {
        return Err(Error::MissingModule {
            action: "mkbmdeb".into(),
        });
    };
    let paths = Paths::from_cli(&inv.cli);
    fs::create_dir_all(&paths.dkms_tree).ctx("create", &paths.dkms_tree)?;
    // Held from the build to the last package, so no `remove` or rebuild runs in between.
    let lock = TreeLock::acquire(&paths, lock::timeout(inv.cli.lock_timeout))?;
    ensure_built(inv, &lock, module, version)?;
    let reg = Registered::open(&paths, module, version)?;
    let builds = reg.requested_builds(inv)?;
    let out_dir = inv
        .cli
        .output
        .clone()
        .unwrap_or_else(|| reg.dir().join("bmdeb"));
    let env_epoch = deb::source_date_epoch()?;
    let maintainer = deb::maintainer_from_env();
    let plans = builds
        .iter()
        .map(|b| {
            plan(&inputs(
                &reg,
                b,
                &inv.cli.directives,
                env_epoch,
                &maintainer,
            )?)
        })
        .collect::<Result<Vec<_>>>()?;
    for p in plans {
        deb::publish(&p, &out_dir, "Binary module package", inv.cli.quiet)?;
    }
    Ok(0)
}

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
            arch: deb::kernel_arch(debarch).into(),
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

    fn inputs(dir: &Path) -> Inputs {
        let ko = dir.join("hello.ko");
        fs::write(&ko, vec![7u8; 3000]).unwrap();
        Inputs {
            module: "hello".into(),
            version: "1.0".into(),
            kernel: "6.1.0-56-amd64".into(),
            arch: "x86_64".into(),
            modules: vec![(ko, 3000)],
            remake_initrd: false,
            notices: Notices::default(),
            maintainer: deb::DEFAULT_MAINTAINER.into(),
            epoch: 1_700_000_000,
        }
    }

    #[test]
    fn plan_has_the_documented_fields_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let p = plan(&inputs(tmp.path())).unwrap();
        assert_eq!(p.file_name, "hello-modules-6.1.0-56-amd64_1.0_amd64.deb");
        let names: Vec<&str> = p.package.fields.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "Package",
                "Source",
                "Version",
                "Architecture",
                "Maintainer",
                "Installed-Size",
                "Depends",
                "Provides",
                "Section",
                "Priority",
                "Description"
            ]
        );
        assert_eq!(p.package.field("Source"), Some("hello-dkms-bin"));
        assert_eq!(
            p.package.field("Depends"),
            Some("linux-image-6.1.0-56-amd64")
        );
        // 3 KiB module, 1 KiB each for changelog and copyright, 10 directories from `.` to
        // lib/modules/K/updates/dkms and usr/share/doc/PACKAGE.
        assert_eq!(p.package.field("Installed-Size"), Some("15"));
        let paths: Vec<_> = p.package.entries.iter().map(|e| e.path.clone()).collect();
        assert!(paths.contains(&PathBuf::from(
            "lib/modules/6.1.0-56-amd64/updates/dkms/hello.ko"
        )));
    }

    #[test]
    fn scripts_run_depmod_and_initramfs_only_when_asked() {
        let s = postinst("6.1.0-56-amd64", false);
        assert!(s.contains("KVER='6.1.0-56-amd64'"));
        assert!(s.contains("depmod ${DPKG_ROOT:+-b \"$DPKG_ROOT\"} -a \"$KVER\""));
        assert!(!s.contains("update-initramfs"));
        let s = postrm("6.1.0-56-amd64", true);
        assert!(s.contains("update-initramfs -u -k \"$KVER\""));
        assert!(s.contains("remove|abort-install"));
    }

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
