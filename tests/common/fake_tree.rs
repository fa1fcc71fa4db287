//! Sandboxes for status/add tests: dkms trees built by hand (any state, instantly), and a fake
//! kernel build tree that lets Debian's real `dkms` add/build/install without compiling, so
//! rdkms can be compared with it byte for byte. Everything lives in one temp dir.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "skip.rs"]
mod skip;

/// The Debian dkms the compatibility tests compare with.
pub const DKMS: &str = "/usr/sbin/dkms";

/// `Some(reason)` when Debian's dkms is not installed; tests then skip (or fail under CI).
pub fn dkms_missing() -> Option<String> {
    if !Path::new(DKMS).exists() {
        return Some(format!("{DKMS} is not installed (apt-get install dkms)"));
    }
    if !nix::unistd::geteuid().is_root() {
        return Some("Debian's dkms install needs root".into());
    }
    None
}

/// Skips a test (or panics when `CI` is set) if a prerequisite is missing.
pub fn require(missing: Option<String>) -> bool {
    missing.is_none_or(|why| !skip::skip(&why))
}

/// One temp dir with `tree/` (dkms tree), `src/` (source tree), `inst/` (install tree) and
/// `ksrc/` (a fake kernel build tree).
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let s = Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        for d in ["tree", "src", "inst", "ksrc/include"] {
            std::fs::create_dir_all(s.path().join(d)).unwrap();
        }
        std::fs::write(s.ksrc().join("Makefile"), FAKE_KBUILD).unwrap();
        s
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn tree(&self) -> PathBuf {
        self.path().join("tree")
    }
    pub fn src(&self) -> PathBuf {
        self.path().join("src")
    }
    pub fn inst(&self) -> PathBuf {
        self.path().join("inst")
    }
    pub fn ksrc(&self) -> PathBuf {
        self.path().join("ksrc")
    }

    /// The tree options both tools take.
    pub fn tree_args(&self) -> Vec<String> {
        vec![
            format!("--dkmstree={}", self.tree().display()),
            format!("--sourcetree={}", self.src().display()),
            format!("--installtree={}", self.inst().display()),
        ]
    }

    /// Writes `<src>/NAME-VERSION` with a dkms.conf for `modules` (each DEST location
    /// `location`) and the `fake-modules` list the fake kbuild reads.
    pub fn source(&self, name: &str, version: &str, modules: &[&str], location: &str) -> PathBuf {
        let dir = self.src().join(format!("{name}-{version}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("dkms.conf"),
            conf_text(name, version, modules, location),
        )
        .unwrap();
        std::fs::write(dir.join("fake-modules"), modules.join("\n") + "\n").unwrap();
        dir
    }

    /// Writes a source whose dkms.conf is given verbatim (modules listed for the fake kbuild).
    pub fn source_with_conf(
        &self,
        name: &str,
        version: &str,
        conf: &str,
        modules: &[&str],
    ) -> PathBuf {
        let dir = self.src().join(format!("{name}-{version}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("dkms.conf"), conf).unwrap();
        std::fs::write(dir.join("fake-modules"), modules.join("\n") + "\n").unwrap();
        dir
    }

    /// By hand: `<tree>/NAME/VERSION/source -> <src>/NAME-VERSION` (as `add` makes it).
    pub fn link_source(&self, name: &str, version: &str) {
        let vdir = self.tree().join(name).join(version);
        std::fs::create_dir_all(&vdir).unwrap();
        std::os::unix::fs::symlink(
            self.src().join(format!("{name}-{version}")),
            vdir.join("source"),
        )
        .unwrap();
    }

    /// `<tree>/NAME/VERSION/K/A/module`.
    pub fn module_dir(&self, name: &str, version: &str, kernel: &str, arch: &str) -> PathBuf {
        self.tree()
            .join(name)
            .join(version)
            .join(kernel)
            .join(arch)
            .join("module")
    }

    /// By hand: `module/` of K/A holding `files` (content names the kernel, as the fake kbuild).
    pub fn build(&self, name: &str, version: &str, kernel: &str, arch: &str, files: &[&str]) {
        let m = self.module_dir(name, version, kernel, arch);
        std::fs::create_dir_all(&m).unwrap();
        for f in files {
            std::fs::write(m.join(f), format!("fake {f} for {kernel}\n")).unwrap();
        }
    }

    /// By hand: marks K/A installed and copies the built files to `<inst>/K<location>/`.
    pub fn install(&self, name: &str, version: &str, kernel: &str, arch: &str, location: &str) {
        let m = self.module_dir(name, version, kernel, arch);
        let dest = self
            .inst()
            .join(kernel)
            .join(location.trim_start_matches('/'));
        std::fs::create_dir_all(&dest).unwrap();
        for e in std::fs::read_dir(&m).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dest.join(e.file_name())).unwrap();
        }
        std::os::unix::fs::symlink(
            format!("{version}/{kernel}/{arch}"),
            self.tree()
                .join(name)
                .join(format!("kernel-{kernel}-{arch}")),
        )
        .unwrap();
    }

    /// Runs rdkms with the sandbox's trees (and `--root` inside the sandbox, so no file of
    /// the machine, such as /etc/dkms or /etc/os-release, is read).
    pub fn rdkms(&self, args: &[&str]) -> Output {
        self.rdkms_cmd(args).output().expect("run rdkms")
    }

    /// The rdkms command `rdkms()` runs, for tests that spawn it.
    pub fn rdkms_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rdkms"));
        c.args(args)
            .args(self.tree_args())
            .arg(format!("--root={}", self.path().join("root").display()));
        clean_env(&mut c);
        c
    }

    /// Runs rdkms like Debian's dkms is run here: the machine's /etc, no sandbox root.
    pub fn rdkms_as_dkms(&self, args: &[&str]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rdkms"));
        c.args(args).args(self.tree_args());
        clean_env(&mut c);
        c.output().expect("run rdkms")
    }

    /// Runs Debian's dkms with the sandbox's trees, the fake kernel and no depmod.
    pub fn dkms(&self, args: &[&str]) -> Output {
        let mut c = Command::new(DKMS);
        c.args(args).args(self.tree_args()).args([
            format!("--kernelsourcedir={}", self.ksrc().display()),
            "--no-depmod".to_string(),
        ]);
        clean_env(&mut c);
        c.output().expect("run dkms")
    }

    /// Runs Debian's dkms and fails the test unless it succeeds.
    pub fn dkms_ok(&self, args: &[&str]) {
        let out = self.dkms(args);
        assert!(
            out.status.success(),
            "dkms {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A kernel directory in the install tree (dkms install requires it).
    pub fn kernel(&self, kernel: &str) {
        std::fs::create_dir_all(self.inst().join(kernel)).unwrap();
    }
}

/// The locale CI runs in (LANG unset: C collation), and no inherited rdkms settings.
fn clean_env(c: &mut Command) {
    for v in [
        "LANG",
        "LC_ALL",
        "LC_COLLATE",
        "RDKMS_ROOT",
        "RDKMS_LOCK_TIMEOUT",
    ] {
        c.env_remove(v);
    }
}

/// A dkms.conf with one record per module, STRIP off (the fake .ko files are not ELF).
pub fn conf_text(name: &str, version: &str, modules: &[&str], location: &str) -> String {
    let mut s =
        format!("PACKAGE_NAME=\"{name}\"\nPACKAGE_VERSION=\"{version}\"\nAUTOINSTALL=yes\n");
    for (i, m) in modules.iter().enumerate() {
        s.push_str(&format!(
            "BUILT_MODULE_NAME[{i}]=\"{m}\"\nDEST_MODULE_LOCATION[{i}]=\"{location}\"\nSTRIP[{i}]=no\n"
        ));
    }
    s
}

/// The fake kernel build tree's Makefile: `make -C ksrc M=DIR` writes `DIR/NAME.ko` for each
/// line of `DIR/fake-modules`, naming the kernel in the content (so builds differ per kernel).
pub const FAKE_KBUILD: &str = "\
all modules:
\t@for n in $$(cat $(M)/fake-modules); do printf 'fake %s.ko for %s\\n' \"$$n\" \"$(KERNELRELEASE)\" > \"$(M)/$$n.ko\"; done
clean:
\t@rm -f $(M)/*.ko
";

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
