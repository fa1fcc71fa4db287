//! Sandbox builder shared by the integration tests: a temporary root with module sources,
//! fake or real kernels and an optional recording `depmod`, driving the real `rdkms` binary.
#![allow(dead_code)]

pub mod fake_kernel;

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

/// Whether a prerequisite is missing: panics under CI, else prints "skipped" and returns true.
pub fn skip_unless(ok: bool, why: &str) -> bool {
    if ok {
        return false;
    }
    if std::env::var_os("CI").is_some() {
        panic!("prerequisite missing in CI: {why}");
    }
    eprintln!("skipped: {why}");
    true
}

/// A temporary system root.
pub struct Sandbox {
    dir: tempfile::TempDir,
    /// Directory put first in PATH (holds the depmod stub when recording).
    bin: Option<PathBuf>,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("usr/src")).unwrap();
        Sandbox { dir, bin: None }
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

    /// The recorded depmod calls.
    pub fn depmod_calls(&self) -> Vec<String> {
        fs::read_to_string(self.root().join("depmod.log"))
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
        let mut cmd = assert_cmd::Command::cargo_bin("rdkms").unwrap();
        cmd.arg("--root").arg(self.root()).args(args);
        cmd.env_remove("RDKMS_ROOT");
        if let Some(bin) = &self.bin {
            let path = std::env::var("PATH").unwrap_or_default();
            cmd.env("PATH", format!("{}:{path}", bin.display()));
        }
        cmd
    }

    /// The same command as a plain `std::process::Command` (for tests that kill it).
    pub fn rdkms_std<I, S>(&self, args: I) -> std::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("rdkms"));
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
