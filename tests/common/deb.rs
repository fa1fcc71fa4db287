//! The packaging tests' part of the harness (deb, bmdeb, mkdeb, tarballs, the fleet): a dkms
//! tree made by hand for fast tests or by `rdkms add`/`build` against the installed headers,
//! and dpkg/apt sandboxes that never touch the host's package database.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use assert_cmd::Command as BinCommand;

use super::{copy_dir, real_tier, Sandbox};

/// The architecture the packaging tests' hand-made builds use.
pub const ARCH: &str = "x86_64";

/// The kernel to build real modules for (root, installed headers, make and gcc), or `None`
/// after the skip line.
pub fn real_kernel() -> Option<String> {
    real_tier(&["make", "gcc"])
}

/// Runs a command, panicking with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

impl Sandbox {
    /// Registers sources as `add` leaves them, quickly (no dkms.conf evaluation, no POST_ADD):
    /// `<root>/usr/src/M-V` plus the `source` symlink to it.
    pub fn added_by_hand(&self, m: &str, v: &str, src: &Path) {
        let dest = self.root().join("usr/src").join(format!("{m}-{v}"));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        copy_dir(src, &dest);
        let vd = self.version_dir(m, v);
        fs::create_dir_all(&vd).unwrap();
        std::os::unix::fs::symlink(&dest, vd.join("source")).unwrap();
    }

    /// `rdkms add SRC` then `rdkms build M/V -k K` against the real headers: the lifecycle's
    /// own build, as on a build host.
    pub fn add_and_build(&self, m: &str, v: &str, src: &Path, kernel: &str) -> Vec<PathBuf> {
        self.rdkms_cmd().arg("add").arg(src).assert().success();
        self.rdkms_cmd()
            .args(["build", &format!("{m}/{v}"), "-k", kernel])
            .arg("--kernelsourcedir")
            .arg(format!("/lib/modules/{kernel}/build"))
            .assert()
            .success();
        self.built_modules(m, v, kernel)
    }

    /// The `.ko` files the tree holds for a build, sorted.
    pub fn built_modules(&self, m: &str, v: &str, kernel: &str) -> Vec<PathBuf> {
        let dir = self
            .version_dir(m, v)
            .join(kernel)
            .join(ARCH)
            .join("module");
        let mut kos: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        kos.sort();
        kos
    }

    /// A fake module M/V (a `fake_source` with the `extra` dkms.conf lines), added and built
    /// for `kernel` with one `size`-byte `.ko`, as `rdkms build` leaves it.
    pub fn fake_built(&self, m: &str, v: &str, extra: &str, kernel: &str, size: usize) {
        let src = fake_source(self.root(), m, v, extra);
        self.added_by_hand(m, v, &src);
        self.built_by_hand(m, v, kernel, ARCH, &[fake_ko(self.root(), m, size)]);
    }

    /// Records a build as `build` leaves it: `<tree>/M/V/K/A/module/*.ko` and a make.log.
    pub fn built_by_hand(&self, m: &str, v: &str, kernel: &str, arch: &str, kos: &[PathBuf]) {
        let kd = self.version_dir(m, v).join(kernel).join(arch);
        fs::create_dir_all(kd.join("module")).unwrap();
        fs::create_dir_all(kd.join("log")).unwrap();
        fs::write(kd.join("log/make.log"), "make: ok\n").unwrap();
        for ko in kos {
            fs::copy(ko, kd.join("module").join(ko.file_name().unwrap())).unwrap();
        }
    }

    /// `rdkms --root <root>` without arguments yet, and without the caller's
    /// SOURCE_DATE_EPOCH (packaging tests add theirs).
    pub fn rdkms_cmd(&self) -> BinCommand {
        rdkms_in(self.root())
    }
}

/// `rdkms --root ROOT ...` (on any root, e.g. a dpkg sandbox), without the caller's
/// SOURCE_DATE_EPOCH.
pub fn rdkms_in(root: &Path) -> BinCommand {
    let mut c = BinCommand::cargo_bin("rdkms").unwrap();
    c.arg("--root")
        .arg(root)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("RDKMS_ROOT");
    c
}

/// Runs an rdkms command that must succeed; its stdout.
pub fn rdkms_stdout(mut cmd: BinCommand) -> String {
    let out = cmd.assert().success().get_output().stdout.clone();
    String::from_utf8(out).unwrap()
}

/// The files an rdkms command that must succeed prints on stdout, one a line (mkbmdeb, mkdeb,
/// mktarball).
pub fn printed_paths(cmd: BinCommand) -> Vec<PathBuf> {
    rdkms_stdout(cmd).lines().map(PathBuf::from).collect()
}

/// `rdkms --root ROOT status ARGS`: its stdout lines.
pub fn status_lines(root: &Path, args: &[&str]) -> Vec<String> {
    let mut cmd = rdkms_in(root);
    cmd.arg("status").args(args);
    rdkms_stdout(cmd).lines().map(String::from).collect()
}

/// A small source tree with a dkms.conf (no real build needed for fast tests).
pub fn fake_source(dir: &Path, name: &str, version: &str, extra_conf: &str) -> PathBuf {
    let src = dir.join(format!("src-{name}"));
    fs::create_dir_all(&src).unwrap();
    fs::write(
        src.join("dkms.conf"),
        format!(
            "PACKAGE_NAME=\"{name}\"\nPACKAGE_VERSION=\"{version}\"\nBUILT_MODULE_NAME[0]=\"{name}\"\n\
             DEST_MODULE_LOCATION[0]=\"/updates/dkms\"\nAUTOINSTALL=yes\n{extra_conf}"
        ),
    )
    .unwrap();
    fs::write(
        src.join(format!("{name}.c")),
        "/* Copyright (C) 2024 Test Author */\nMODULE_LICENSE(\"GPL\");\n",
    )
    .unwrap();
    fs::write(src.join("Makefile"), format!("obj-m := {name}.o\n")).unwrap();
    src
}

/// A fake `.ko` (any bytes will do for packaging).
pub fn fake_ko(dir: &Path, name: &str, size: usize) -> PathBuf {
    let p = dir.join(format!("{name}.ko"));
    fs::write(&p, vec![b'k'; size]).unwrap();
    p
}

/// `dpkg-deb -f DEB`: every control field, in order (continuation lines joined with `\n`).
pub fn fields(deb: &Path) -> Vec<(String, String)> {
    let text = stdout(Command::new("dpkg-deb").arg("-f").arg(deb));
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with(' ') {
            let last = out.last_mut().unwrap();
            last.1.push('\n');
            last.1.push_str(line);
        } else {
            let (k, v) = line.split_once(": ").unwrap();
            out.push((k.to_string(), v.to_string()));
        }
    }
    out
}

/// One line of `dpkg-deb -c`.
#[derive(Debug, Clone)]
pub struct Listed {
    pub mode: String,
    pub owner: String,
    pub size: u64,
    pub date: String,
    pub path: String,
}

pub fn contents(deb: &Path) -> Vec<Listed> {
    stdout(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Listed {
                mode: f[0].into(),
                owner: f[1].into(),
                size: f[2].parse().unwrap(),
                date: format!("{} {}", f[3], f[4]),
                path: f[5].into(),
            }
        })
        .collect()
}

/// Runs lintian; returns (errors, warnings) tag lines.
pub fn lintian(deb: &Path) -> (Vec<String>, Vec<String>) {
    let out = Command::new("lintian")
        .args(["--pedantic", "-I", "-E", "--no-tag-display-limit"])
        .arg(deb)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let pick = |p: &str| {
        text.lines()
            .filter(|l| l.starts_with(p))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    (pick("E:"), pick("W:"))
}

/// An empty dpkg database under `root`, for `dpkg --root` installs.
pub fn dpkg_root(root: &Path) {
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/log"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
}

/// `dpkg` acting only on `root`: `--root` confines the database and files, and
/// `--force-script-chrootless` runs the maintainer scripts on this host with
/// `DPKG_ROOT=<root>` (the packages' scripts honour it), so no shell or depmod is needed inside.
pub fn dpkg(root: &Path) -> Command {
    let mut c = Command::new("dpkg");
    c.arg(format!("--root={}", root.display()))
        .arg("--force-script-chrootless")
        .arg(format!("--log={}", root.join("var/log/dpkg.log").display()));
    c
}

/// The module names in `<root>/lib/modules/K/modules.dep`.
pub fn depmod_lists(root: &Path, kernel: &str) -> Vec<String> {
    let dep = root.join("lib/modules").join(kernel).join("modules.dep");
    fs::read_to_string(dep)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(':').next())
        .map(String::from)
        .collect()
}

/// A stand-in `linux-image-K` package: the kernel's module directory with the index inputs
/// depmod reads, so a sandbox root looks like a host with that kernel installed.
pub fn fake_kernel_package(work: &Path, kernel: &str) -> PathBuf {
    let pkg = work.join("kimage");
    let moddir = pkg.join("lib/modules").join(kernel);
    fs::create_dir_all(&moddir).unwrap();
    fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        fs::write(moddir.join(f), "").unwrap();
    }
    fs::write(
        pkg.join("DEBIAN/control"),
        format!(
            "Package: linux-image-{kernel}\nVersion: 1\nArchitecture: amd64\n\
             Maintainer: Test <test@example.org>\nDescription: stand-in for the kernel package\n"
        ),
    )
    .unwrap();
    let deb = work.join(format!("linux-image-{kernel}_1_amd64.deb"));
    run(Command::new("dpkg-deb")
        .arg("--root-owner-group")
        .arg("-b")
        .arg(&pkg)
        .arg(&deb));
    deb
}
