//! The fleet workflow, end to end: a build host compiles `examples/hello-dkms` and Debian's
//! acpi-call against the installed headers, packages them with `rdkms mkbmdeb`, publishes them
//! in a flat apt repository (apt-ftparchive) served from a `file:` URI; a target host (a sandbox
//! root driven by the real apt-get and dpkg, no rdkms, no compiler) installs and removes them.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::deb::*;
use common::{need_tool, repo, skip_unless, Sandbox};
use rdkms::state::dpkg;
use rdkms::system::config::Paths;

/// A target host: its own apt configuration, lists, cache and dpkg database under `root`.
/// dpkg gets `--root` and runs the maintainer scripts chrootless with `DPKG_ROOT` set, so the
/// real apt-get → dpkg → postinst → depmod chain runs without touching this machine.
struct Target {
    dir: tempfile::TempDir,
}

impl Target {
    fn new(repo: &Path) -> Target {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        for d in [
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "etc/apt/sources.list.d",
            "etc/apt/trusted.gpg.d",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
            "var/log/apt",
        ] {
            fs::create_dir_all(t.join(d)).unwrap();
        }
        dpkg_root(t);
        fs::write(
            t.join("etc/apt/sources.list"),
            format!("deb [trusted=yes] file:{} ./\n", repo.display()),
        )
        .unwrap();
        let r = t.display();
        fs::write(
            t.join("etc/apt/apt.conf"),
            format!(
                "Dir \"{r}/\";\n\
                 Dir::State::status \"{r}/var/lib/dpkg/status\";\n\
                 APT::Architecture \"amd64\";\n\
                 APT::Architectures {{ \"amd64\"; }};\n\
                 APT::Sandbox::User \"root\";\n\
                 Acquire::Languages \"none\";\n\
                 Dpkg::Use-Pty \"false\";\n\
                 DPkg::Options {{ \"--root={r}\"; \"--force-script-chrootless\"; \"--log={r}/var/log/dpkg.log\"; }};\n"
            ),
        )
        .unwrap();
        Target { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn apt_get(&self, args: &[&str]) -> String {
        let mut c = Command::new("apt-get");
        c.args(["-q", "-y"])
            .args(args)
            .env("APT_CONFIG", self.root().join("etc/apt/apt.conf"))
            .env("DEBIAN_FRONTEND", "noninteractive");
        stdout(&mut c)
    }

    fn module(&self, kernel: &str, file: &str) -> PathBuf {
        self.root()
            .join("lib/modules")
            .join(kernel)
            .join("updates/dkms")
            .join(file)
    }
}

/// The acpi-call sources fetched by tests/fetch-corpus.sh.
fn acpi_call_source() -> Option<(PathBuf, String)> {
    let src = repo("tests/corpus/work/src");
    let dir = fs::read_dir(&src)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("acpi-call-")
        });
    match dir {
        Some(d) => {
            let version = d
                .file_name()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("acpi-call-")
                .to_string();
            Some((d, version))
        }
        None => {
            skip_unless(
                false,
                "the corpus is not fetched (run tests/fetch-corpus.sh)",
            );
            None
        }
    }
}

#[test]
fn build_once_publish_install_everywhere() {
    let Some(k) = real_kernel() else { return };
    for tool in ["dpkg-deb", "apt-get", "apt-ftparchive", "depmod", "modinfo"] {
        if !need_tool(tool) {
            return;
        }
    }
    let Some((acpi_src, acpi_ver)) = acpi_call_source() else {
        return;
    };

    // Build host: rdkms builds hello explicitly; mkbmdeb builds acpi-call itself. Both are
    // packaged into the repository's pool.
    let build = Sandbox::empty();
    let work = build.root().join("work");
    fs::create_dir_all(&work).unwrap();
    let headers = format!("/lib/modules/{k}/build");
    let hello_kos = build.add_and_build("hello", "1.0", &repo("examples/hello-dkms"), &k);
    build
        .rdkms_cmd()
        .arg("add")
        .arg(&acpi_src)
        .assert()
        .success();

    let repo_dir = tempfile::tempdir().unwrap();
    let pool = repo_dir.path().join("pool");
    for mv in ["hello/1.0".to_string(), format!("acpi-call/{acpi_ver}")] {
        build
            .rdkms_cmd()
            .args(["mkbmdeb", &mv, "-k", &k, "--kernelsourcedir", &headers])
            .args(["--output", pool.to_str().unwrap()])
            .assert()
            .success();
    }
    // The kernel package the modules depend on (on a real fleet it comes from Debian).
    let kimg = fake_kernel_package(&work, &k);
    fs::copy(&kimg, pool.join(kimg.file_name().unwrap())).unwrap();

    // Publish: a flat repository indexed by apt-ftparchive.
    let packages = stdout(
        Command::new("apt-ftparchive")
            .args(["packages", "pool"])
            .current_dir(repo_dir.path()),
    );
    assert!(packages.contains(&format!("Package: hello-modules-{k}\n")));
    assert!(packages.contains(&format!("Package: acpi-call-modules-{k}\n")));
    fs::write(repo_dir.path().join("Packages"), &packages).unwrap();
    let release = stdout(
        Command::new("apt-ftparchive")
            .args(["release", "."])
            .current_dir(repo_dir.path()),
    );
    fs::write(repo_dir.path().join("Release"), release).unwrap();

    // Target host: apt-get install pulls the kernel dependency and runs the postinst (depmod).
    let target = Target::new(repo_dir.path());
    target.apt_get(&["update"]);
    let out = target.apt_get(&[
        "install",
        &format!("hello-modules-{k}"),
        &format!("acpi-call-modules-{k}"),
    ]);
    assert!(
        out.contains(&format!("Setting up hello-modules-{k} (1.0)")),
        "{out}"
    );
    let hello = target.module(&k, "hello.ko");
    let acpi = target.module(&k, "acpi_call.ko");
    assert_eq!(fs::read(&hello).unwrap(), fs::read(&hello_kos[0]).unwrap());
    assert!(acpi.is_file());
    let vermagic = stdout(Command::new("modinfo").args(["-F", "vermagic"]).arg(&acpi));
    assert!(vermagic.starts_with(&format!("{k} ")), "{vermagic}");
    let deps = depmod_lists(target.root(), &k);
    assert!(
        deps.contains(&"updates/dkms/hello.ko".to_string()),
        "{deps:?}"
    );
    assert!(
        deps.contains(&"updates/dkms/acpi_call.ko".to_string()),
        "{deps:?}"
    );
    assert_eq!(
        status_lines(target.root(), &[]),
        [
            format!("acpi-call/{acpi_ver}, {k}, x86_64: installed (binary package acpi-call-modules-{k})"),
            format!("hello/1.0, {k}, x86_64: installed (binary package hello-modules-{k})"),
        ]
    );

    // apt-get remove takes the module away and refreshes the index.
    target.apt_get(&["remove", &format!("hello-modules-{k}")]);
    assert!(!hello.exists());
    assert!(acpi.is_file());
    let deps = depmod_lists(target.root(), &k);
    assert!(!deps.iter().any(|d| d.contains("hello")), "{deps:?}");
    assert!(deps.contains(&"updates/dkms/acpi_call.ko".to_string()));
    let left = dpkg::installed_packages(&Paths::under(target.root())).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].name, "acpi-call");
}
