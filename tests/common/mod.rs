//! Sandbox builder shared by the integration tests: a temporary root with module sources,
//! fake or real kernels and an optional recording `depmod`, driving the real `rdkms` binary.
#![allow(dead_code)]

pub mod deb;
pub mod fake_kernel;
pub mod fake_tree;
pub mod reliability;
pub mod skip;

#[allow(unused_imports)] // not every test binary that includes this module skips
pub use skip::skip_unless;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The architecture rdkms defaults to (`uname -m`).
pub fn arch() -> String {
    nix::sys::utsname::uname()
        .unwrap()
        .machine()
        .to_string_lossy()
        .into_owned()
}

/// A file of this repository.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Whether a command is on PATH.
pub fn have_tool(name: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether `tool` is on PATH; otherwise the skip line (see `skip_unless`) and false.
pub fn need_tool(tool: &str) -> bool {
    !skip_unless(have_tool(tool), &format!("{tool} is not installed"))
}

/// The newest kernel with installed headers (`/usr/src/linux-headers-K` holding a Makefile).
pub fn headers_kernel() -> Option<String> {
    let mut kernels: Vec<String> = fs::read_dir("/usr/src")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let k = name.strip_prefix("linux-headers-")?.to_string();
            (k.ends_with("-amd64") && e.path().join("Makefile").is_file()).then_some(k)
        })
        .collect();
    kernels.sort_by(|a, b| rdkms::base::version::ver_cmp(a, b));
    kernels.pop()
}

/// `<root>/lib/modules/K` as a host with that kernel has it for the real tier: `build` pointing
/// at the installed headers, and the files depmod reads. Returns the directory.
pub fn real_kernel_dir(root: &Path, kernel: &str) -> PathBuf {
    let kdir = root.join("lib/modules").join(kernel);
    fs::create_dir_all(&kdir).unwrap();
    std::os::unix::fs::symlink(
        format!("/usr/src/linux-headers-{kernel}"),
        kdir.join("build"),
    )
    .unwrap();
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        fs::write(kdir.join(f), "").unwrap();
    }
    kdir
}

/// `cp -a FROM TO`.
pub fn copy_dir(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

/// The prerequisites of a real tier (root, installed headers, the named tools): the kernel to
/// build for, or `None` after the "skipped" line.
pub fn real_tier(tools: &[&str]) -> Option<String> {
    if skip_unless(nix::unistd::geteuid().is_root(), "the real tier needs root") {
        return None;
    }
    let kernel = headers_kernel();
    if skip_unless(
        kernel.is_some(),
        "no /usr/src/linux-headers-*-amd64 (install linux-headers-amd64)",
    ) {
        return None;
    }
    for t in tools {
        if skip_unless(have_tool(t), &format!("{t} is not installed")) {
            return None;
        }
    }
    kernel
}

/// A temporary system root.
pub struct Sandbox {
    dir: tempfile::TempDir,
    /// Directory put first in PATH (holds the depmod stub when recording).
    bin: Option<PathBuf>,
}

impl Sandbox {
    /// A root holding the (empty) source tree `usr/src`.
    pub fn new() -> Sandbox {
        let sb = Sandbox::empty();
        fs::create_dir_all(sb.root().join("usr/src")).unwrap();
        sb
    }

    /// A root with nothing in it (for tests that check nothing was written there).
    pub fn empty() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().unwrap(),
            bin: None,
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn tree(&self) -> PathBuf {
        self.root().join("var/lib/dkms")
    }

    pub fn modules_dir(&self, kernel: &str) -> PathBuf {
        self.root().join("lib/modules").join(kernel)
    }

    /// `<tree>/M/V`.
    pub fn version_dir(&self, module: &str, version: &str) -> PathBuf {
        self.tree().join(module).join(version)
    }

    /// Where install puts module `name` for `kernel`: `updates/dkms/NAME.ko`.
    pub fn installed_ko(&self, kernel: &str, name: &str) -> PathBuf {
        self.modules_dir(kernel)
            .join("updates/dkms")
            .join(format!("{name}.ko"))
    }

    /// `rdkms status`, which must succeed.
    pub fn status(&self) -> String {
        let out = self
            .rdkms(["status"])
            .assert()
            .success()
            .get_output()
            .clone();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `<tree>/M/V/K/<arch>`.
    pub fn built(&self, module: &str, version: &str, kernel: &str) -> PathBuf {
        self.tree()
            .join(module)
            .join(version)
            .join(kernel)
            .join(arch())
    }

    /// Adds a fake kernel with headers.
    pub fn fake_kernel(&self, kernel: &str) -> &Self {
        fake_kernel::install(self.root(), kernel);
        self
    }

    /// The installed headers of `kernel` as its `lib/modules/K/build`, with the files depmod
    /// reads (`real_kernel_dir`), for the real tier.
    pub fn real_headers(&self, kernel: &str) -> &Self {
        real_kernel_dir(self.root(), kernel);
        self
    }

    /// A kernel installed as Debian's packages leave it: image, its own modules directory,
    /// an initramfs and (fake) headers. The hooks' planner builds for such a kernel.
    pub fn installed_kernel(&self, kernel: &str) -> &Self {
        self.kernel_image(kernel)
            .initramfs(kernel)
            .fake_kernel(kernel)
    }

    /// Only the kernel's image package: `/boot/vmlinuz-K` and `lib/modules/K/kernel` (no
    /// headers, no initramfs).
    pub fn kernel_image(&self, kernel: &str) -> &Self {
        let boot = self.root().join("boot");
        fs::create_dir_all(&boot).unwrap();
        fs::write(boot.join(format!("vmlinuz-{kernel}")), "").unwrap();
        fs::create_dir_all(self.modules_dir(kernel).join("kernel")).unwrap();
        self
    }

    /// The kernel's initramfs, `/boot/initrd.img-K`.
    pub fn initramfs(&self, kernel: &str) -> &Self {
        let boot = self.root().join("boot");
        fs::create_dir_all(&boot).unwrap();
        fs::write(boot.join(format!("initrd.img-{kernel}")), "").unwrap();
        self
    }

    /// Removes a kernel the way its packages do: image, initramfs, its own modules and
    /// headers go; what rdkms installed stays.
    pub fn remove_kernel_package(&self, kernel: &str) -> &Self {
        let boot = self.root().join("boot");
        fs::remove_file(boot.join(format!("vmlinuz-{kernel}"))).unwrap();
        let _ = fs::remove_file(boot.join(format!("initrd.img-{kernel}")));
        fs::remove_dir_all(self.modules_dir(kernel).join("kernel")).unwrap();
        let _ = fs::remove_dir_all(self.modules_dir(kernel).join("build"));
        self
    }

    /// Writes `source` and registers it with `rdkms add NAME/VERSION -q`.
    pub fn added(&self, source: Source) -> &Self {
        let module = format!("{}/{}", source.name, source.version);
        source.create();
        self.rdkms(["add", module.as_str(), "-q"])
            .assert()
            .success();
        self
    }

    /// An AUTOINSTALL module `<root>/usr/src/NAME-VERSION` building NAME.ko, registered.
    pub fn added_module(&self, name: &str, version: &str) -> &Self {
        self.added(self.source(name, version))
    }

    /// Puts a `depmod` first in PATH that records each call's arguments (one line per call) in
    /// `depmod.log` and exits with the number in `depmod.exit` if that file exists.
    pub fn record_depmod(&mut self) -> &mut Self {
        let bin = self.root().join("stub-bin");
        fs::create_dir_all(&bin).unwrap();
        let log = self.root().join("depmod.log");
        let exit = self.root().join("depmod.exit");
        let script = format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\n[ -f '{}' ] && exit \"$(cat '{}')\"\nexit 0\n",
            log.display(),
            exit.display(),
            exit.display()
        );
        let stub = bin.join("depmod");
        fs::write(&stub, script).unwrap();
        fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).unwrap();
        self.bin = Some(bin);
        self
    }

    /// `record_depmod`, plus an `update-initramfs` stub beside it that records each call's
    /// arguments in `initramfs.log` and exits with the number in `initramfs.log.exit` if that
    /// file exists.
    pub fn record_initramfs(&mut self) -> &mut Self {
        self.record_depmod();
        let log = self.root().join("initramfs.log");
        let stub = self.root().join("stub-bin/update-initramfs");
        fs::write(
            &stub,
            format!(
                "#!/bin/sh\necho \"$*\" >> '{l}'\n[ -f '{l}.exit' ] && exit \"$(cat '{l}.exit')\"\nexit 0\n",
                l = log.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).unwrap();
        self
    }

    /// The recorded depmod calls.
    pub fn depmod_calls(&self) -> Vec<String> {
        self.log_lines("depmod.log")
    }

    /// The recorded update-initramfs calls.
    pub fn initramfs_calls(&self) -> Vec<String> {
        self.log_lines("initramfs.log")
    }

    fn log_lines(&self, log: &str) -> Vec<String> {
        fs::read_to_string(self.root().join(log))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Starts a module source `<root>/usr/src/NAME-VERSION`.
    pub fn source(&self, name: &str, version: &str) -> Source {
        self.source_in(
            &self
                .root()
                .join("usr/src")
                .join(format!("{name}-{version}")),
            name,
            version,
        )
    }

    /// Starts a module source in `dir` (e.g. a vendor's unpacked driver outside the source tree).
    pub fn source_in(&self, dir: &Path, name: &str, version: &str) -> Source {
        Source::new(dir.to_path_buf(), name, version)
    }

    /// `rdkms --root ROOT ARGS...`, with the depmod stub first in PATH when recording.
    pub fn rdkms<I, S>(&self, args: I) -> assert_cmd::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        assert_cmd::Command::from_std(self.rdkms_std(args))
    }

    /// The same command as a plain `std::process::Command` (for tests that kill it).
    pub fn rdkms_std<I, S>(&self, args: I) -> std::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command(assert_cmd::cargo::cargo_bin("rdkms"), args)
    }

    /// [`Sandbox::rdkms_std`] through a link named `dkms` (in `stub-bin/`), as maintainer
    /// scripts call it: DKMS's text and exit codes.
    pub fn dkms_std<I, S>(&self, args: I) -> std::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let link = self.root().join("stub-bin/dkms");
        if !link.exists() {
            fs::create_dir_all(link.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(assert_cmd::cargo::cargo_bin("rdkms"), &link).unwrap();
        }
        self.command(link, args)
    }

    /// `PROGRAM --root ROOT ARGS` with the sandbox's stubs first in PATH.
    fn command<I, S>(&self, program: PathBuf, args: I) -> std::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = std::process::Command::new(program);
        cmd.arg("--root").arg(self.root()).args(args);
        cmd.env_remove("RDKMS_ROOT");
        if let Some(bin) = &self.bin {
            let path = std::env::var("PATH").unwrap_or_default();
            cmd.env("PATH", format!("{}:{path}", bin.display()));
        }
        cmd
    }

    /// Every path below `dir`, relative and sorted (for "nothing left behind" checks).
    pub fn listing(&self, dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = walkdir::WalkDir::new(dir)
            .min_depth(1)
            .follow_links(false)
            .into_iter()
            .flatten()
            .map(|e| e.path().strip_prefix(dir).unwrap().display().to_string())
            .collect();
        out.sort();
        out
    }
}

/// A module source being written: a dkms.conf plus files.
pub struct Source {
    pub dir: PathBuf,
    name: String,
    version: String,
    modules: Vec<String>,
    make: String,
    extra: Vec<String>,
    files: Vec<(String, String, u32)>,
}

impl Source {
    fn new(dir: PathBuf, name: &str, version: &str) -> Source {
        Source {
            dir,
            name: name.to_string(),
            version: version.to_string(),
            modules: vec![name.to_string()],
            make: "make -C ${kernel_source_dir} M=${dkms_tree}/${PACKAGE_NAME}/${PACKAGE_VERSION}/build modules".to_string(),
            extra: Vec::new(),
            files: Vec::new(),
        }
    }

    /// The kernel modules the package builds (BUILT_MODULE_NAME[i], all in /updates/dkms).
    pub fn modules(mut self, names: &[&str]) -> Self {
        self.modules = names.iter().map(|s| s.to_string()).collect();
        self
    }

    /// MAKE[0].
    pub fn make(mut self, make: &str) -> Self {
        self.make = make.to_string();
        self
    }

    /// An extra dkms.conf line.
    pub fn conf(mut self, line: &str) -> Self {
        self.extra.push(line.to_string());
        self
    }

    /// A file in the source (mode 0644).
    pub fn file(mut self, name: &str, content: &str) -> Self {
        self.files
            .push((name.to_string(), content.to_string(), 0o644));
        self
    }

    /// An executable file in the source.
    pub fn script(mut self, name: &str, content: &str) -> Self {
        self.files
            .push((name.to_string(), content.to_string(), 0o755));
        self
    }

    /// Writes everything; returns the source directory.
    pub fn create(self) -> PathBuf {
        fs::create_dir_all(&self.dir).unwrap();
        let mut conf = format!(
            "PACKAGE_NAME=\"{}\"\nPACKAGE_VERSION=\"{}\"\nMAKE[0]=\"{}\"\nAUTOINSTALL=\"yes\"\n",
            self.name, self.version, self.make
        );
        let mut makefile = String::new();
        for (i, m) in self.modules.iter().enumerate() {
            conf.push_str(&format!(
                "BUILT_MODULE_NAME[{i}]=\"{m}\"\nDEST_MODULE_LOCATION[{i}]=\"/updates/dkms\"\n"
            ));
            makefile.push_str(&format!("obj-m += {m}.o\n"));
        }
        for l in &self.extra {
            conf.push_str(l);
            conf.push('\n');
        }
        fs::write(self.dir.join("dkms.conf"), conf).unwrap();
        fs::write(self.dir.join("Makefile"), makefile).unwrap();
        for (name, content, mode) in &self.files {
            let p = self.dir.join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, content).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
        }
        self.dir
    }
}
