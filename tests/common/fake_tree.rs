//! The status/add tests' part of the harness: dkms trees built by hand (any state, instantly),
//! and a fake kernel build tree (`ksrc/`) that lets Debian's real `dkms` add/build/install
//! without compiling, so rdkms can be compared with it byte for byte. Both tools are given the
//! sandbox's trees explicitly (`--dkmstree`, `--sourcetree`, `--installtree`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{skip_unless, Sandbox};

/// The Debian dkms the compatibility tests compare with.
pub const DKMS: &str = "/usr/sbin/dkms";

/// Whether Debian's dkms can run here (installed, and root); otherwise the skip line and false.
pub fn need_debian_dkms() -> bool {
    !skip_unless(
        Path::new(DKMS).exists(),
        &format!("{DKMS} is not installed (apt-get install dkms)"),
    ) && !skip_unless(
        nix::unistd::geteuid().is_root(),
        "Debian's dkms install needs root",
    )
}

impl Sandbox {
    /// A sandbox whose source tree, install tree and `ksrc/` (the fake kbuild) exist.
    pub fn with_trees() -> Sandbox {
        let s = Sandbox::new();
        for d in [s.tree(), s.src(), s.inst(), s.ksrc().join("include")] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(s.ksrc().join("Makefile"), FAKE_KBUILD).unwrap();
        s
    }

    /// The source tree, `<root>/usr/src`.
    pub fn src(&self) -> PathBuf {
        self.root().join("usr/src")
    }

    /// The install tree, `<root>/lib/modules`.
    pub fn inst(&self) -> PathBuf {
        self.root().join("lib/modules")
    }

    /// The fake kernel build tree Debian's dkms builds against.
    pub fn ksrc(&self) -> PathBuf {
        self.root().join("ksrc")
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
    pub fn kbuild_source(
        &self,
        name: &str,
        version: &str,
        modules: &[&str],
        location: &str,
    ) -> PathBuf {
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
    pub fn build_by_hand(
        &self,
        name: &str,
        version: &str,
        kernel: &str,
        arch: &str,
        files: &[&str],
    ) {
        let m = self.module_dir(name, version, kernel, arch);
        std::fs::create_dir_all(&m).unwrap();
        for f in files {
            std::fs::write(m.join(f), format!("fake {f} for {kernel}\n")).unwrap();
        }
    }

    /// By hand: marks K/A installed and copies the built files to `<inst>/K<location>/`.
    pub fn install_by_hand(
        &self,
        name: &str,
        version: &str,
        kernel: &str,
        arch: &str,
        location: &str,
    ) {
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

    /// Runs rdkms with the sandbox's trees, and `--root` at an empty `<root>/root`, so no file
    /// of the machine (/etc/dkms, /etc/os-release) is read and the trees stay outside the
    /// root, as the machine's trees are for the Debian dkms run beside it.
    pub fn rdkms_out(&self, args: &[&str]) -> Output {
        self.rdkms_trees_cmd(args).output().expect("run rdkms")
    }

    /// The rdkms command `rdkms_out()` runs, for tests that spawn it.
    pub fn rdkms_trees_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rdkms"));
        c.args(args)
            .args(self.tree_args())
            .arg(format!("--root={}", self.root().join("root").display()));
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
    pub fn inst_kernel(&self, kernel: &str) {
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
