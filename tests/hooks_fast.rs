//! Fast tier of the hooks: the real binary on sandbox roots with the fake kbuild, a recording
//! depmod and a recording update-initramfs, for every path a kernel or package upgrade takes.

mod common;

use std::fs;
use std::time::Duration;

use common::{arch, Sandbox};
use predicates::prelude::*;

const K1: &str = "6.1.0-1-amd64";
const K2: &str = "6.1.0-2-amd64";
const K3: &str = "6.1.0-3-amd64";

/// A sandbox with recording depmod and update-initramfs stubs (both inside the root, in PATH).
fn sandbox() -> Sandbox {
    let mut sb = Sandbox::new();
    sb.record_initramfs();
    for d in ["boot", "etc/dkms"] {
        fs::create_dir_all(sb.root().join(d)).unwrap();
    }
    sb
}

/// A module source with AUTOINSTALL=yes plus `extra` dkms.conf lines, registered.
fn module(sb: &Sandbox, name: &str, version: &str, extra: &[&str]) {
    let mut src = sb.source(name, version);
    for l in extra {
        src = src.conf(l);
    }
    sb.added(src);
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn new_kernel_gets_every_module_with_one_depmod_and_no_stdout() {
    let sb = sandbox();
    sb.installed_kernel(K1);
    module(&sb, "alpha", "1.0", &[]);
    module(&sb, "beta", "2.0", &[]);
    sb.rdkms(["kernel_postinst", "--hook", "-k", K1])
        .assert()
        .success()
        .stdout("");
    sb.installed_kernel(K2);
    let out = sb
        .rdkms(["kernel_postinst", "--hook", "-k", K2])
        .assert()
        .success()
        .stdout("")
        .get_output()
        .clone();
    let err = stderr_of(&out);
    let a = arch();
    assert!(
        err.contains(&format!("rdkms: alpha/1.0 for {K2} ({a}): installed")),
        "{err}"
    );
    assert!(
        err.contains(&format!("rdkms: kernel {K2}: 2 installed")),
        "{err}"
    );
    for k in [K1, K2] {
        assert!(sb.installed_ko(k, "alpha").is_file() && sb.installed_ko(k, "beta").is_file());
    }
    let calls = sb.depmod_calls();
    assert_eq!(
        calls.iter().filter(|c| c.ends_with(K1)).count(),
        1,
        "{calls:?}"
    );
    assert_eq!(
        calls.iter().filter(|c| c.ends_with(K2)).count(),
        1,
        "{calls:?}"
    );
    // No REMAKE_INITRD module: the initramfs is left alone.
    assert!(sb.initramfs_calls().is_empty());
}

#[test]
fn removed_kernel_is_purged_and_the_module_stays_for_the_others() {
    let sb = sandbox();
    sb.installed_kernel(K1);
    sb.installed_kernel(K2);
    module(&sb, "alpha", "1.0", &[]);
    sb.rdkms(["reconcile"]).assert().success();
    assert!(sb.installed_ko(K1, "alpha").is_file());
    sb.remove_kernel_package(K1);
    let depmods_before = sb.depmod_calls().len();
    sb.rdkms(["reconcile", "--hook"])
        .assert()
        .success()
        .stdout("");
    assert!(
        !sb.modules_dir(K1).exists(),
        "{:?}",
        sb.listing(&sb.modules_dir(K1))
    );
    assert!(!sb.tree().join("alpha/1.0").join(K1).exists());
    assert!(sb.installed_ko(K2, "alpha").is_file());
    assert_eq!(
        sb.depmod_calls().len(),
        depmods_before,
        "no depmod for a gone kernel"
    );
    let st = sb.status();
    assert!(
        st.contains(&format!("alpha/1.0, {K2}, {}: installed", arch())),
        "{st}"
    );
    assert!(!st.contains(K1));
}

#[test]
fn prerm_unbuilds_that_kernel_only_keeps_the_module_and_runs_no_depmod() {
    let sb = sandbox();
    sb.installed_kernel(K1);
    sb.installed_kernel(K2);
    module(&sb, "alpha", "1.0", &[]);
    sb.rdkms(["reconcile"]).assert().success();
    let depmods = sb.depmod_calls().len();
    let out = sb
        .rdkms(["kernel_prerm", "--hook", "-k", K1])
        .assert()
        .success()
        .stdout("")
        .get_output()
        .clone();
    assert!(stderr_of(&out).contains(&format!("removing module alpha/1.0 for kernel {K1}")));
    assert!(!sb.installed_ko(K1, "alpha").exists());
    assert!(!sb.modules_dir(K1).join("updates").exists());
    assert!(
        sb.modules_dir(K1).join("kernel").is_dir(),
        "the kernel's own files stay"
    );
    assert!(sb.installed_ko(K2, "alpha").is_file());
    assert!(sb.tree().join("alpha/1.0/source").exists());
    assert_eq!(sb.depmod_calls().len(), depmods);
    // A module built for that kernel only stays registered too.
    module(&sb, "solo", "1", &[]);
    sb.rdkms(["build", "solo/1", "-k", K1, "-q"])
        .assert()
        .success();
    sb.rdkms(["kernel_prerm", "-k", K1]).assert().success();
    assert!(sb.tree().join("solo/1/source").exists());
    assert!(!sb.tree().join("solo/1").join(K1).exists());
}

#[test]
fn headers_arriving_after_the_image_build_then_and_update_that_initramfs_once() {
    let sb = sandbox();
    sb.kernel_image(K1).initramfs(K1);
    module(&sb, "zfs", "2.1", &["REMAKE_INITRD=\"yes\""]);
    module(&sb, "spl", "2.1", &["REMAKE_INITRD=\"yes\""]);
    let out = sb
        .rdkms(["kernel_postinst", "--hook", "-k", K1])
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(stderr_of(&out).contains(&format!("install linux-headers-{K1}")));
    assert!(!sb.installed_ko(K1, "zfs").exists());
    // Without --hook, DKMS's autoinstall fails with the missing-headers exit code.
    sb.rdkms(["autoinstall", "-k", K1])
        .assert()
        .code(21)
        .stderr(predicate::str::contains(format!("linux-headers-{K1}")));
    sb.fake_kernel(K1);
    sb.rdkms(["autoinstall", "--hook", "-k", K1])
        .assert()
        .success()
        .stdout("");
    assert!(sb.installed_ko(K1, "zfs").is_file() && sb.installed_ko(K1, "spl").is_file());
    assert_eq!(sb.initramfs_calls(), [format!("-u -k {K1}")]);
    assert!(sb
        .listing(&sb.tree().join(".rdkms-initramfs-pending"))
        .is_empty());
}

#[test]
fn remake_initrd_updates_each_changed_kernel_once_and_leaves_postinst_to_the_kernel_hook() {
    let sb = sandbox();
    for k in [K1, K2, K3] {
        sb.installed_kernel(k);
    }
    module(&sb, "zfs", "2.1", &["REMAKE_INITRD=\"yes\""]);
    module(&sb, "spl", "2.1", &["REMAKE_INITRD=\"yes\""]);
    module(&sb, "plain", "1", &[]);
    // K3 already has the boot-critical modules; only `plain` is new there.
    for m in ["zfs/2.1", "spl/2.1"] {
        sb.rdkms(["install", m, "-k", K3, "-q"]).assert().success();
    }
    sb.rdkms(["reconcile", "--hook"]).assert().success();
    let mut calls = sb.initramfs_calls();
    calls.sort();
    assert_eq!(calls, [format!("-u -k {K1}"), format!("-u -k {K2}")]);

    // kernel_postinst for a new kernel with initramfs-tools installed: its own hook follows.
    let hook_dir = sb.root().join("etc/kernel/postinst.d");
    fs::create_dir_all(&hook_dir).unwrap();
    fs::write(hook_dir.join("initramfs-tools"), "").unwrap();
    let k4 = "6.1.0-4-amd64";
    sb.installed_kernel(k4);
    sb.rdkms(["kernel_postinst", "--hook", "-k", k4])
        .assert()
        .success();
    assert!(sb.installed_ko(k4, "zfs").is_file());
    assert_eq!(sb.initramfs_calls().len(), 2, "no call for {k4}");
}

#[test]
fn interrupted_initramfs_update_is_finished_by_the_next_run() {
    let sb = sandbox();
    sb.installed_kernel(K1);
    module(&sb, "zfs", "2.1", &["REMAKE_INITRD=\"yes\""]);
    sb.rdkms(["reconcile"]).assert().success();
    assert_eq!(sb.initramfs_calls().len(), 1);
    // A run killed after installing, before regenerating, leaves its record behind.
    fs::write(sb.tree().join(".rdkms-initramfs-pending").join(K1), "").unwrap();
    sb.rdkms(["reconcile"]).assert().success();
    assert_eq!(sb.initramfs_calls().len(), 2);
    sb.rdkms(["reconcile"]).assert().success();
    assert_eq!(sb.initramfs_calls().len(), 2, "done once, then forgotten");
}

#[test]
fn failing_initramfs_is_critical_and_retried() {
    let sb = sandbox();
    sb.installed_kernel(K1);
    module(&sb, "zfs", "2.1", &["REMAKE_INITRD=\"yes\""]);
    fs::write(sb.root().join("initramfs.log.exit"), "1").unwrap();
    sb.rdkms(["reconcile", "--hook"])
        .assert()
        .code(11)
        .stderr(predicate::str::contains("update-initramfs -u -k"));
    fs::remove_file(sb.root().join("initramfs.log.exit")).unwrap();
    sb.rdkms(["reconcile", "--hook"]).assert().success();
    assert_eq!(sb.initramfs_calls().len(), 2);
}

#[test]
fn package_upgrade_replaces_the_old_version_on_every_kernel() {
    let sb = sandbox();
    sb.installed_kernel(K1);
    sb.installed_kernel(K2);
    module(&sb, "alpha", "1.9", &[]);
    sb.rdkms(["reconcile"]).assert().success();
    module(&sb, "alpha", "1.10", &[]);
    fs::write(sb.root().join("usr/src/alpha-1.10/stamp"), "new").unwrap();
    sb.rdkms(["reconcile"]).assert().success();
    let st = sb.status();
    let a = arch();
    for k in [K1, K2] {
        assert!(
            st.contains(&format!("alpha/1.10, {k}, {a}: installed")),
            "{st}"
        );
        assert!(
            !st.contains(&format!("alpha/1.9, {k}, {a}: installed")),
            "{st}"
        );
        let ko = common::fake_kernel::read_ko(&sb.installed_ko(k, "alpha"));
        assert_eq!(ko.stamp, "new");
    }
}

#[test]
fn common_postinst_adds_and_builds_for_every_kernel_with_headers() {
    let sb = sandbox();
    sb.installed_kernel(K1);
    sb.installed_kernel(K2);
    sb.kernel_image(K3).initramfs(K3);
    sb.source("pkg", "3.0").create();
    sb.rdkms([
        "common_postinst",
        "--hook",
        "-m",
        "pkg",
        "-v",
        "3.0",
        "--archive",
        "/usr/share/pkg-dkms/pkg-3.0.dkms.tar.gz",
    ])
    .assert()
    .success()
    .stdout("")
    .stderr(predicate::str::contains(format!("linux-headers-{K3}")));
    assert!(sb.installed_ko(K1, "pkg").is_file() && sb.installed_ko(K2, "pkg").is_file());
    sb.rdkms(["common_postinst", "--hook", "-m", "pkg", "-v", ""])
        .assert()
        .code(1);
    sb.rdkms(["common_postinst", "--hook", "-m", "nosrc", "-v", "1"])
        .assert()
        .code(2);
}

#[test]
fn common_postinst_loads_the_package_tarball_when_there_is_one() {
    let sb = sandbox();
    sb.installed_kernel(K1);
    // A package shipping its module as a source tarball instead of /usr/src.
    let src = sb.source("tarred", "1.0").create();
    let share = sb.root().join("usr/share/tarred-dkms");
    fs::create_dir_all(&share).unwrap();
    let archive = share.join("tarred-1.0.dkms.tar.gz");
    let tar = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(src.parent().unwrap())
        .arg("tarred-1.0")
        .status()
        .unwrap();
    assert!(tar.success());
    fs::remove_dir_all(&src).unwrap();
    sb.rdkms([
        "common_postinst",
        "--hook",
        "-m",
        "tarred",
        "-v",
        "1.0",
        "--archive",
    ])
    .arg(&archive)
    .assert()
    .success()
    .stdout("");
    assert!(sb.installed_ko(K1, "tarred").is_file());
    assert!(sb.root().join("usr/src/tarred-1.0/dkms.conf").is_file());
}

#[test]
fn one_failing_module_never_stops_the_others_and_the_policy_decides_the_exit() {
    let sb = sandbox();
    sb.installed_kernel(K1);
    module(&sb, "good", "1", &[]);
    sb.source("bad", "1").file("fail", "error: boom").create();
    sb.rdkms(["add", "bad/1", "-q"]).assert().success();
    let out = sb
        .rdkms(["reconcile", "--hook"])
        .assert()
        .code(0)
        .get_output()
        .clone();
    let err = stderr_of(&out);
    assert!(
        err.contains("bad/1 for") && err.contains("FAILED (exit 10)"),
        "{err}"
    );
    assert!(sb.installed_ko(K1, "good").is_file());
    // The failure is remembered and shown by plan.
    sb.rdkms(["plan"])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "last run: bad/1 for {K1} ({}) failed (exit 10)",
            arch()
        )));
    // DKMS's autoinstall reports any failure with exit 11.
    sb.rdkms(["autoinstall", "-k", K1]).assert().code(11);
    let conf = sb.root().join("etc/dkms/framework.conf");
    fs::write(&conf, "rdkms_failure_policy=always\n").unwrap();
    sb.rdkms(["reconcile", "--hook"]).assert().code(11);
    // A boot-critical module failing is an error under the default policy, not under never.
    sb.source("zfs", "2")
        .file("fail", "error: boom")
        .conf("REMAKE_INITRD=\"yes\"")
        .create();
    sb.rdkms(["add", "zfs/2", "-q"]).assert().success();
    fs::write(&conf, "").unwrap();
    sb.rdkms(["kernel_postinst", "--hook", "-k", K1])
        .assert()
        .code(11)
        .stderr(predicate::str::contains("boot-critical"));
    fs::write(&conf, "rdkms_failure_policy=\"never\"\n").unwrap();
    sb.rdkms(["reconcile", "--hook"]).assert().success();
    // Fixing the module clears the remembered failure.
    fs::remove_file(sb.root().join("usr/src/bad-1/fail")).unwrap();
    sb.rdkms(["reconcile"]).assert().success();
    let plan = sb.rdkms(["plan"]).assert().success().get_output().clone();
    assert!(!String::from_utf8_lossy(&plan.stdout).contains("bad/1"));
}

#[test]
fn no_autoinstall_is_honoured_and_disabled_modules_are_skipped() {
    let sb = sandbox();
    sb.installed_kernel(K1);
    module(&sb, "manual", "1", &["AUTOINSTALL=\"\""]);
    module(&sb, "alpha", "1", &[]);
    fs::write(sb.root().join("etc/dkms/no-autoinstall"), "").unwrap();
    sb.rdkms(["reconcile", "--hook"])
        .assert()
        .success()
        .stderr(predicate::str::contains("has been disabled"));
    assert!(!sb.installed_ko(K1, "alpha").exists());
    fs::remove_file(sb.root().join("etc/dkms/no-autoinstall")).unwrap();
    sb.rdkms(["reconcile", "--hook"]).assert().success().stderr(
        predicate::str::contains("manual/1 for")
            .and(predicate::str::contains("skipped: AUTOINSTALL is not set")),
    );
    assert!(sb.installed_ko(K1, "alpha").is_file());
    assert!(!sb.installed_ko(K1, "manual").exists());
}

#[test]
fn build_exclusive_skip_satisfies_dependents_and_build_depends_orders_builds() {
    let sb = sandbox();
    sb.installed_kernel(K1);
    module(&sb, "zz-base", "1", &[]);
    module(&sb, "aa-top", "1", &["BUILD_DEPENDS=\"zz-base\""]);
    module(
        &sb,
        "arm-only",
        "1",
        &["BUILD_EXCLUSIVE_ARCH=\"^aarch64$\""],
    );
    module(&sb, "user", "1", &["BUILD_DEPENDS=\"arm-only\""]);
    let out = sb
        .rdkms(["reconcile", "--hook"])
        .assert()
        .success()
        .get_output()
        .clone();
    let err = stderr_of(&out);
    let at = |s: &str| err.find(s).unwrap_or_else(|| panic!("{s} missing: {err}"));
    assert!(at("zz-base/1 for") < at("aa-top/1 for"));
    assert!(err.contains("arm-only/1 for") && err.contains("skipped: BUILD_EXCLUSIVE"));
    for m in ["zz-base", "aa-top", "user"] {
        assert!(sb.installed_ko(K1, m).is_file(), "{m}");
    }
    assert!(!sb.installed_ko(K1, "arm-only").exists());
}

#[test]
fn apt_hook_is_a_no_op_until_something_changes() {
    let sb = sandbox();
    sb.installed_kernel(K1);
    module(&sb, "alpha", "1", &[]);
    sb.rdkms(["reconcile", "--from-apt"])
        .assert()
        .success()
        .stdout("");
    assert!(sb.installed_ko(K1, "alpha").is_file());
    // The state just changed; once it is older than the timestamp granularity, a quiet
    // reconcile stores the fingerprint and apt's calls return at once.
    std::thread::sleep(Duration::from_millis(2100));
    sb.rdkms(["reconcile", "--from-apt"]).assert().success();
    let depmods = sb.depmod_calls().len();
    sb.rdkms(["reconcile", "--from-apt"])
        .assert()
        .success()
        .stdout("")
        .stderr("");
    assert_eq!(sb.depmod_calls().len(), depmods);
    // A new kernel arrives without its hook having run: the apt hook builds for it.
    sb.installed_kernel(K2);
    sb.rdkms(["reconcile", "--from-apt"]).assert().success();
    assert!(sb.installed_ko(K2, "alpha").is_file());
}
