//! `rdkms plan` on sandbox roots: the snapshot is read from a real dkms tree, real kernel
//! directories and real dkms.conf files, and the plan is printed without touching anything.

use std::fs;
use std::path::PathBuf;

use serde_json::Value;

const K1: &str = "6.1.0-1-amd64";
const K2: &str = "6.1.0-2-amd64";

fn arch() -> String {
    nix::sys::utsname::uname()
        .unwrap()
        .machine()
        .to_string_lossy()
        .into_owned()
}

struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Root {
        let dir = tempfile::tempdir().unwrap();
        for d in ["usr/src", "boot", "etc/dkms", "var/lib/dkms"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Root { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// An installed kernel (image), with or without headers.
    fn kernel(&self, k: &str, headers: bool) -> &Self {
        fs::write(self.path(&format!("boot/vmlinuz-{k}")), "").unwrap();
        fs::create_dir_all(self.path(&format!("lib/modules/{k}/kernel"))).unwrap();
        if headers {
            let build = self.path(&format!("lib/modules/{k}/build"));
            fs::create_dir_all(&build).unwrap();
            fs::write(build.join("Makefile"), "all:\n").unwrap();
        }
        self
    }

    /// `/usr/src/NAME-VERSION` with a dkms.conf (AUTOINSTALL=yes plus `extra` lines), added.
    fn module(&self, name: &str, version: &str, extra: &[&str]) -> &Self {
        let src = self.path(&format!("usr/src/{name}-{version}"));
        fs::create_dir_all(&src).unwrap();
        let mut conf = format!(
            "PACKAGE_NAME=\"{name}\"\nPACKAGE_VERSION=\"{version}\"\nBUILT_MODULE_NAME[0]=\"{name}\"\nDEST_MODULE_LOCATION[0]=\"/updates/dkms\"\nAUTOINSTALL=\"yes\"\n"
        );
        for l in extra {
            conf.push_str(l);
            conf.push('\n');
        }
        fs::write(src.join("dkms.conf"), conf).unwrap();
        self.rdkms(&["add", &format!("{name}/{version}"), "-k", K1, "-q"])
            .assert()
            .success();
        self
    }

    fn built(&self, name: &str, version: &str, k: &str) -> &Self {
        let a = arch();
        let dir = self.path(&format!("var/lib/dkms/{name}/{version}/{k}/{a}/module"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("{name}.ko")), "ko").unwrap();
        self
    }

    fn installed(&self, name: &str, version: &str, k: &str) -> &Self {
        self.built(name, version, k);
        let a = arch();
        let link = self.path(&format!("var/lib/dkms/{name}/kernel-{k}-{a}"));
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(format!("{version}/{k}/{a}"), link).unwrap();
        let dest = self.path(&format!("lib/modules/{k}/updates/dkms"));
        fs::create_dir_all(&dest).unwrap();
        fs::write(dest.join(format!("{name}.ko")), "ko").unwrap();
        self
    }

    fn rdkms(&self, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::cargo_bin("rdkms").unwrap();
        cmd.arg("--root").arg(self.dir.path()).args(args);
        cmd.env_remove("RDKMS_ROOT");
        cmd
    }

    fn plan(&self, args: &[&str]) -> Value {
        let mut all = vec!["plan", "--json"];
        all.extend_from_slice(args);
        let out = self.rdkms(&all).assert().success().get_output().clone();
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn listing(&self) -> Vec<(String, Option<std::time::SystemTime>)> {
        let mut out: Vec<_> = walkdir::WalkDir::new(self.dir.path())
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e.path().display().to_string(),
                    e.metadata().ok().and_then(|m| m.modified().ok()),
                )
            })
            .collect();
        out.sort();
        out
    }
}

/// Steps as compact strings: `build alpha/1.0 K`, `depmod K`, ...
fn steps(plan: &Value) -> Vec<String> {
    plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let kind = s["step"].as_str().unwrap();
            let k = s["kernel"].as_str().unwrap_or("");
            match s.get("module") {
                Some(m) => format!(
                    "{kind} {}/{} {k}",
                    m.as_str().unwrap(),
                    s["version"].as_str().unwrap()
                ),
                None => format!("{kind} {k}"),
            }
        })
        .collect()
}

#[test]
fn new_module_is_planned_for_every_kernel_with_headers_and_missing_headers_are_named() {
    let r = Root::new();
    r.kernel(K1, true)
        .kernel(K2, false)
        .module("alpha", "1.0", &[]);
    let p = r.plan(&[]);
    assert_eq!(
        steps(&p),
        [
            format!("build alpha/1.0 {K1}"),
            format!("install alpha/1.0 {K1}"),
            format!("depmod {K1}"),
            format!("no_headers {K2}"),
        ]
    );
    assert_eq!(p["steps"][3]["package"], format!("linux-headers-{K2}"));
    // plan -k scopes to one kernel.
    assert_eq!(steps(&r.plan(&["-k", K2])), [format!("no_headers {K2}")]);
}

#[test]
fn current_state_plans_nothing_and_plan_changes_nothing() {
    let r = Root::new();
    r.kernel(K1, true)
        .module("alpha", "1.0", &[])
        .installed("alpha", "1.0", K1);
    let before = r.listing();
    let out = r.rdkms(&["plan"]).assert().success().get_output().clone();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Nothing to do.\n");
    assert_eq!(r.plan(&[])["steps"], serde_json::json!([]));
    assert_eq!(r.listing(), before, "plan wrote to the root");
}

#[test]
fn builds_of_a_removed_kernel_are_purged() {
    let r = Root::new();
    r.kernel(K2, true)
        .module("alpha", "1.0", &[])
        .installed("alpha", "1.0", K1)
        .installed("alpha", "1.0", K2);
    let p = r.plan(&[]);
    assert_eq!(
        steps(&p),
        [
            format!("purge alpha/1.0 {K1}"),
            format!("clean_kernel {K1}")
        ]
    );
    assert_eq!(p["steps"][0]["installed"], true);
}

#[test]
fn package_upgrade_replaces_the_installed_version() {
    let r = Root::new();
    r.kernel(K1, true)
        .module("alpha", "1.9", &[])
        .installed("alpha", "1.9", K1)
        .module("alpha", "1.10", &[]);
    let p = r.plan(&[]);
    assert_eq!(
        steps(&p),
        [
            format!("build alpha/1.10 {K1}"),
            format!("install alpha/1.10 {K1}"),
            format!("depmod {K1}"),
        ]
    );
    assert_eq!(p["steps"][1]["replaces"], "1.9");
}

#[test]
fn dkms_conf_decides_order_skips_and_initramfs() {
    let r = Root::new();
    r.kernel(K1, true)
        .module("zz-base", "1", &["REMAKE_INITRD=\"yes\""])
        .module("aa-top", "1", &["BUILD_DEPENDS=\"zz-base\""])
        .module("mm-old", "1", &["BUILD_EXCLUSIVE_KERNEL=\"^5\\.\""])
        .module("bb-user", "1", &["BUILD_DEPENDS=\"mm-old\""])
        .module("cc-manual", "1", &["AUTOINSTALL=\"\""])
        .module("dd-x", "1", &["BUILD_DEPENDS=\"ee-y\""])
        .module("ee-y", "1", &["BUILD_DEPENDS=\"dd-x\""]);
    let p = r.plan(&[]);
    let s = steps(&p);
    let pos = |x: &str| {
        s.iter()
            .position(|l| l == &format!("{x} {K1}"))
            .unwrap_or_else(|| panic!("{x} missing in {s:?}"))
    };
    assert!(pos("install zz-base/1") < pos("build aa-top/1"));
    assert!(pos("install bb-user/1") > 0);
    pos("skip mm-old/1");
    pos("skip cc-manual/1");
    pos("fail dd-x/1");
    pos("fail ee-y/1");
    assert!(pos("depmod") < pos("update_initramfs"));
    let text = String::from_utf8_lossy(&r.rdkms(&["plan"]).assert().success().get_output().stdout)
        .into_owned();
    assert!(
        text.contains("circular BUILD_DEPENDS: dd-x -> ee-y -> dd-x"),
        "{text}"
    );
    assert!(
        text.contains("skip       mm-old/1 for 6.1.0-1-amd64: BUILD_EXCLUSIVE"),
        "{text}"
    );
    assert!(text.contains("skip       cc-manual/1 for 6.1.0-1-amd64: AUTOINSTALL is not set"));
    assert!(text.contains("[REMAKE_INITRD]"));
}

#[test]
fn no_autoinstall_file_is_honoured() {
    let r = Root::new();
    r.kernel(K1, true).module("alpha", "1.0", &[]);
    fs::write(r.path("etc/dkms/no-autoinstall"), "").unwrap();
    let p = r.plan(&[]);
    assert_eq!(p["autoinstall_disabled"], true);
    assert_eq!(p["steps"], serde_json::json!([]));
}

#[test]
fn plan_does_not_wait_for_the_tree_lock() {
    let r = Root::new();
    r.kernel(K1, true).module("alpha", "1.0", &[]);
    let lock = fs::File::create(r.path("var/lib/dkms/.rdkms.lock")).unwrap();
    let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let start = std::time::Instant::now();
    let p = r.plan(&["--lock-timeout", "1"]);
    assert!(start.elapsed() < std::time::Duration::from_secs(1));
    assert_eq!(steps(&p).len(), 3);
    drop(lock);
}

#[test]
fn single_kernel_commands_need_exactly_one_kernel() {
    let r = Root::new();
    for action in ["kernel_postinst", "kernel_prerm"] {
        r.rdkms(&[action]).assert().code(4);
        r.rdkms(&[action, "-k", K1, "-k", K2]).assert().code(4);
    }
    r.rdkms(&["plan", "-k", ""]).assert().code(2);
}
