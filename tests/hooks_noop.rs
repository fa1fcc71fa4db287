//! The kernel hooks' cheap paths: a no-op `autoinstall -k K` (kernel postinst, headers
//! postinst) plans without the tree lock and writes nothing, yet never misses work added
//! since; `kernel_prerm` removes every build of the kernel in one batch that leaves nothing
//! half-removed.

mod common;

use std::fs::{self, OpenOptions};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use common::{arch, Sandbox};
use nix::fcntl::{Flock, FlockArg};

const K1: &str = "6.1.0-1-amd64";
const K2: &str = "6.1.0-2-amd64";

/// A sandbox with recording depmod and update-initramfs stubs and the kernels given, each an
/// installed image with headers.
fn sandbox(kernels: &[&str]) -> Sandbox {
    let mut sb = Sandbox::new();
    sb.record_initramfs();
    for d in ["boot", "etc/dkms"] {
        fs::create_dir_all(sb.root().join(d)).unwrap();
    }
    for k in kernels {
        sb.kernel_image(k).fake_kernel(k);
    }
    sb
}

fn lock_file(sb: &Sandbox) -> PathBuf {
    sb.tree().join(".rdkms.lock")
}

fn modified(path: &PathBuf) -> SystemTime {
    fs::metadata(path).unwrap().modified().unwrap()
}

#[test]
fn noop_autoinstall_takes_no_lock_and_writes_nothing() {
    let sb = sandbox(&[K1]);
    sb.added_module("alpha", "1.0");
    sb.rdkms(["autoinstall", "-k", K1]).assert().success();
    assert!(sb.installed_ko(K1, "alpha").is_file());
    // A stored fingerprint: a run that takes the lock marks it invalid first.
    let fingerprint = sb.tree().join(".rdkms-fingerprint");
    let record = "rdkms-fingerprint-1 0123456789abcdef\n";
    fs::write(&fingerprint, record).unwrap();
    let lock_before = modified(&lock_file(&sb));
    std::thread::sleep(Duration::from_millis(100));
    for args in [
        ["autoinstall", "--hook", "-k", K1],
        ["kernel_postinst", "--hook", "-k", K1],
    ] {
        sb.rdkms(args).assert().success().stdout("");
    }
    assert_eq!(fs::read_to_string(&fingerprint).unwrap(), record);
    assert_eq!(
        modified(&lock_file(&sb)),
        lock_before,
        "the lock file (watched by the apt fingerprint) was rewritten"
    );
    assert_eq!(sb.depmod_calls().len(), 1, "{:?}", sb.depmod_calls());
}

#[test]
fn module_added_after_a_noop_run_is_built_by_the_next_one() {
    let sb = sandbox(&[K1]);
    sb.added_module("alpha", "1.0");
    sb.rdkms(["kernel_postinst", "--hook", "-k", K1])
        .assert()
        .success();
    sb.rdkms(["kernel_postinst", "--hook", "-k", K1])
        .assert()
        .success();
    sb.added_module("beta", "2.0");
    let fingerprint = sb.tree().join(".rdkms-fingerprint");
    let _ = fs::remove_file(&fingerprint);
    sb.rdkms(["autoinstall", "--hook", "-k", K1])
        .assert()
        .success();
    assert!(sb.installed_ko(K1, "beta").is_file());
    assert!(sb
        .status()
        .contains(&format!("beta/2.0, {K1}, {}: installed", arch())));
    // A run with work still takes the lock and invalidates the fingerprint.
    assert!(fs::read_to_string(&fingerprint)
        .unwrap()
        .starts_with("invalid"));
}

#[test]
fn noop_check_waits_for_a_writer_holding_the_lock() {
    let sb = sandbox(&[K1]);
    sb.added_module("alpha", "1.0");
    sb.rdkms(["autoinstall", "-k", K1]).assert().success();
    // Another command is half-way through a change: what the tree shows cannot be trusted,
    // so even a run that looks like a no-op waits for the lock (and here gives up at once).
    let held = OpenOptions::new().write(true).open(lock_file(&sb)).unwrap();
    let held = Flock::lock(held, FlockArg::LockExclusive).unwrap();
    sb.rdkms(["autoinstall", "-k", K1, "--lock-timeout", "0"])
        .assert()
        .code(75);
    drop(held);
    sb.rdkms(["autoinstall", "-k", K1, "--lock-timeout", "0"])
        .assert()
        .success();
}

#[test]
fn prerm_removes_every_build_of_the_kernel_and_status_agrees() {
    let sb = sandbox(&[K1, K2]);
    for m in ["alpha", "beta", "gamma"] {
        sb.added_module(m, "1.0");
    }
    sb.rdkms(["reconcile"]).assert().success();
    // Built for K1 only, not installed.
    sb.added_module("solo", "3");
    sb.rdkms(["build", "solo/3", "-k", K1, "-q"])
        .assert()
        .success();
    let a = arch();
    sb.rdkms(["kernel_prerm", "--hook", "-k", K1])
        .assert()
        .success()
        .stdout("");
    for m in ["alpha", "beta", "gamma"] {
        assert!(!sb.installed_ko(K1, m).exists(), "{m}");
        assert!(sb.installed_ko(K2, m).is_file(), "{m}");
        let mdir = sb.tree().join(m);
        assert!(!mdir.join("1.0").join(K1).exists(), "{m}");
        assert!(
            fs::symlink_metadata(mdir.join(format!("kernel-{K1}-{a}"))).is_err(),
            "{m}: kernel-{K1}-{a} left"
        );
        assert!(mdir.join(format!("kernel-{K2}-{a}")).exists(), "{m}");
    }
    assert!(!sb.tree().join("solo/3").join(K1).exists());
    assert!(sb.tree().join("solo/3/source").exists());
    let leftovers: Vec<String> = sb
        .listing(&sb.tree())
        .into_iter()
        .filter(|p| p.contains("rdkms-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let st = sb.status();
    assert!(!st.contains(K1), "{st}");
    for m in ["alpha", "beta", "gamma"] {
        assert!(
            st.contains(&format!("{m}/1.0, {K2}, {a}: installed")),
            "{st}"
        );
    }
    assert!(st.contains("solo/3: added"), "{st}");
}

#[test]
fn preinst_unbuilds_only_autoinstall_modules_of_that_kernel() {
    let sb = sandbox(&[K1, K2]);
    sb.added_module("alpha", "1.0");
    sb.source("manual", "2").conf("AUTOINSTALL=").create();
    sb.rdkms(["add", "manual/2", "-q"]).assert().success();
    sb.rdkms(["reconcile"]).assert().success();
    for k in [K1, K2] {
        sb.rdkms(["install", "manual/2", "-k", k, "-q"])
            .assert()
            .success();
    }
    // The kernel package of K1 is about to be replaced by a new build of the same version.
    sb.rdkms(["kernel_preinst", "--hook", "-k", K1])
        .assert()
        .success()
        .stdout("");
    assert!(!sb.tree().join("alpha/1.0").join(K1).exists());
    assert!(!sb.installed_ko(K1, "alpha").exists());
    assert!(sb.installed_ko(K2, "alpha").is_file());
    // DKMS 3.2.2 leaves what kernel_postinst would not rebuild.
    assert!(sb.installed_ko(K1, "manual").is_file());
    // kernel_postinst then rebuilds it; a second preinst of a fresh kernel is a no-op.
    sb.rdkms(["kernel_postinst", "--hook", "-k", K1])
        .assert()
        .success();
    assert!(sb.installed_ko(K1, "alpha").is_file());
    sb.rdkms(["kernel_preinst", "--hook", "-k", "6.1.0-3-amd64"])
        .assert()
        .success()
        .stdout("");
}
