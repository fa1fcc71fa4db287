//! The reliability suite, part 2 (README "Reliability guarantees"): one regression test per
//! defect of issue 16, hostile inputs, hooks under faults (failing depmod and update-initramfs,
//! a busy lock, a read-only /boot), the root-trust checks and build_user, and a property test
//! of the static dkms.conf evaluator. Prints the figures (inputs tried, states lost).
// Both support modules include tests/common/skip.rs, the one skip helper.
#![allow(clippy::duplicate_mod)]

mod common;
mod conf_support;

use std::cell::Cell;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::reliability::{converged, figure, violations, world, K1, K2, K3};
use common::{skip_unless, Sandbox};
use predicates::prelude::PredicateBooleanExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rdkms::conf::{bash, static_eval, DKMS_CONF_NAMES};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

// --- defect 1: installed means the file is there ---------------------------------------------

#[test]
fn a_module_installed_without_its_file_is_repaired_by_the_next_run() {
    let sb = world(true);
    let ko = sb.installed_ko(K1, "m1");
    fs::remove_file(&ko).unwrap();
    // status keeps DKMS 3.2.2's wording for the damage; the planner no longer trusts the link.
    assert!(sb
        .status()
        .contains("(Differences between built and installed modules)"));
    let plan = String::from_utf8_lossy(&sb.rdkms(["plan"]).output().unwrap().stdout).into_owned();
    assert!(plan.contains("multi/3") && plan.contains(K1), "{plan}");
    sb.rdkms(["reconcile", "--hook"]).assert().success();
    assert!(ko.is_file());
    assert!(converged(&sb));

    fs::remove_file(&ko).unwrap();
    sb.rdkms(["install", "multi/3", "-k", K1])
        .assert()
        .success()
        .stderr(predicates::str::contains("already installed").not());
    assert!(ko.is_file());

    fs::remove_file(&ko).unwrap();
    sb.rdkms(["autoinstall", "--hook", "-k", K1])
        .assert()
        .success();
    assert!(ko.is_file());
    assert_eq!(violations(&sb), Vec::<String>::new());
}

// --- defect 2: replacement by rename, no rollback below the previous state -----------------

#[test]
fn install_force_with_failing_depmod_keeps_the_module_and_depmod_is_retried() {
    let sb = world(true);
    let before = fs::read(sb.installed_ko(K1, "m1")).unwrap();
    fs::write(sb.root().join("depmod.exit"), "1").unwrap();
    let out = sb
        .rdkms(["install", "multi/3", "-k", K1, "--force"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("runs depmod for"), "{}", stderr(&out));
    assert_eq!(fs::read(sb.installed_ko(K1, "m1")).unwrap(), before);
    assert!(sb.tree().join(".rdkms-depmod-pending").join(K1).exists());
    fs::remove_file(sb.root().join("depmod.exit")).unwrap();
    let calls = sb.depmod_calls().len();
    sb.rdkms(["reconcile", "--hook"]).assert().success();
    assert!(sb.depmod_calls()[calls..].iter().any(|c| c.ends_with(K1)));
    assert!(!sb.tree().join(".rdkms-depmod-pending").join(K1).exists());
    assert!(converged(&sb));
}

#[test]
fn install_force_replaces_the_file_in_one_rename() {
    use std::os::unix::fs::MetadataExt;
    let sb = world(true);
    let ko = sb.installed_ko(K1, "m1");
    let old_inode = fs::metadata(&ko).unwrap().ino();
    // Keep the old file open: a delete-then-copy would leave it unlinked (nlink 0) and the
    // name missing for a moment; a rename leaves a new inode under the name at once.
    let held = fs::File::open(&ko).unwrap();
    sb.rdkms(["install", "multi/3", "-k", K1, "--force"])
        .assert()
        .success();
    assert_ne!(fs::metadata(&ko).unwrap().ino(), old_inode);
    assert_eq!(held.metadata().unwrap().nlink(), 0);
}

// --- defect 3 and invariant (d): hooks and a busy lock --------------------------------------

/// Holds the tree lock with `flock` until killed.
fn hold_lock(sb: &Sandbox) -> Child {
    let lock = sb.tree().join(".rdkms.lock");
    let child = Command::new("flock")
        .arg(&lock)
        .args(["sleep", "120"])
        .spawn()
        .unwrap();
    // Wait until it really holds the lock.
    let t = Instant::now();
    while Command::new("flock")
        .args(["-n"])
        .arg(&lock)
        .arg("true")
        .status()
        .unwrap()
        .success()
    {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn hooks_postpone_their_work_when_the_lock_stays_busy_and_never_fail() {
    let sb = world(true);
    sb.rdkms(["reconcile", "--from-apt"]).assert().success();
    let mut holder = hold_lock(&sb);
    for args in [
        &["kernel_prerm", "--hook", "-k", K2, "--lock-timeout", "1"][..],
        &["kernel_postinst", "--hook", "-k", K1, "--lock-timeout", "1"],
        &["autoinstall", "--hook", "-k", K1, "--lock-timeout", "1"],
    ] {
        let t = Instant::now();
        let out = sb.rdkms(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?} wrote to stdout");
        assert!(stderr(&out).contains("recorded"), "{}", stderr(&out));
        assert!(t.elapsed() < Duration::from_secs(15));
    }
    // Without --lock-timeout, a removal hook waits 30 s, not the 900 s of other commands.
    let t = Instant::now();
    let out = sb
        .rdkms(["kernel_prerm", "--hook", "-k", K2])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("recorded"), "{}", stderr(&out));
    assert!(
        (Duration::from_secs(29)..Duration::from_secs(90)).contains(&t.elapsed()),
        "kernel_prerm waited {:?}",
        t.elapsed()
    );
    // Outside hooks the busy lock is still an error (DKMS's exit 75 after the timeout).
    let out = sb
        .rdkms(["install", "base/1", "-k", K1, "--lock-timeout", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(75));
    let _ = holder.kill();
    let _ = holder.wait();
    // The kernel goes away; apt's next Post-Invoke must not take its no-op shortcut.
    fs::remove_file(sb.root().join(format!("boot/vmlinuz-{K2}"))).unwrap();
    fs::remove_dir_all(sb.modules_dir(K2).join("kernel")).unwrap();
    fs::remove_dir_all(sb.modules_dir(K2).join("build")).unwrap();
    sb.rdkms(["reconcile", "--from-apt"]).assert().success();
    assert!(
        !sb.built("multi", "3", K2).exists(),
        "purged by the next reconcile"
    );
    assert!(!sb.installed_ko(K2, "m1").exists());
    let postponed = sb.tree().join(".rdkms-hooks-postponed");
    assert_eq!(fs::read_dir(&postponed).map(|d| d.count()).unwrap_or(0), 0);
}

// --- defect 4: depmod failures in hooks are recorded and retried ---------------------------

#[test]
fn a_failed_depmod_in_a_hook_is_recorded_and_retried() {
    let sb = world(false);
    fs::write(sb.root().join("depmod.exit"), "1").unwrap();
    let out = sb
        .rdkms(["kernel_postinst", "--hook", "-k", K1])
        .output()
        .unwrap();
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("depmod failed"), "{}", stderr(&out));
    assert!(sb.tree().join(".rdkms-depmod-pending").join(K1).exists());
    // Still failing: every run tries again, and says so.
    let out = sb.rdkms(["reconcile", "--hook"]).output().unwrap();
    assert!(stderr(&out).contains("depmod failed"), "{}", stderr(&out));
    fs::remove_file(sb.root().join("depmod.exit")).unwrap();
    let calls = sb.depmod_calls().len();
    sb.rdkms(["reconcile", "--hook"]).assert().success();
    assert!(sb.depmod_calls()[calls..].iter().any(|c| c.ends_with(K1)));
    assert!(!sb.tree().join(".rdkms-depmod-pending").join(K1).exists());
    assert!(converged(&sb));
}

// --- defect 5: remove --all after mkbmdeb --------------------------------------------------

#[test]
fn remove_all_after_mkbmdeb_deletes_the_version() {
    let sb = world(true);
    sb.rdkms(["mkbmdeb", "multi/3", "-k", K1])
        .assert()
        .success();
    assert!(sb.tree().join("multi/3/bmdeb").is_dir());
    sb.rdkms(["remove", "multi/3", "--all"]).assert().success();
    assert!(!sb.tree().join("multi").exists());
    assert!(!sb.status().contains("multi"));
}

// --- defect 6: add DIR with a link out of the sources ---------------------------------------

#[test]
fn add_dir_copies_an_outward_link_as_a_link_and_builds_without_reading_it() {
    let sb = world(false);
    let dir = tempfile::tempdir().unwrap();
    let src = sb.source_in(&dir.path().join("nf"), "nf", "2.0").create();
    std::os::unix::fs::symlink("../../share/doc/nf-dkms/README.gz", src.join("README.gz")).unwrap();
    sb.rdkms(["add", src.to_str().unwrap()]).assert().success();
    let copied = sb.root().join("usr/src/nf-2.0/README.gz");
    assert_eq!(
        fs::read_link(&copied).unwrap(),
        Path::new("../../share/doc/nf-dkms/README.gz")
    );
    sb.rdkms(["install", "nf/2.0", "-k", K1]).assert().success();
}

// --- defect 7: root never builds what others can change; build_user -----------------------

#[test]
fn as_root_sources_others_can_change_are_refused_with_the_fix() {
    if skip_unless(is_root(), "ownership checks apply only to root") {
        return;
    }
    let sb = world(false);
    let src = sb.root().join("usr/src/base-1");
    let refused = |args: &[&str], needle: &str| {
        let out = sb.rdkms(args).output().unwrap();
        assert_eq!(out.status.code(), Some(8), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(needle), "{needle:?} in {err}");
    };
    // Owned by nobody.
    std::os::unix::fs::chown(src.join("Makefile"), Some(65534), Some(65534)).unwrap();
    refused(&["install", "base/1", "-k", K1], "chown -R root:root");
    std::os::unix::fs::chown(src.join("Makefile"), Some(0), Some(0)).unwrap();
    // chmod -R 0777.
    Command::new("chmod")
        .args(["-R", "0777"])
        .arg(&src)
        .status()
        .unwrap();
    refused(&["install", "base/1", "-k", K1], "chmod go-w");
    Command::new("chmod")
        .args(["-R", "go-w"])
        .arg(&src)
        .status()
        .unwrap();
    // A world-writable dkms.conf in a 1777 directory.
    let usr_src = sb.root().join("usr/src");
    fs::set_permissions(&usr_src, fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(src.join("dkms.conf"), fs::Permissions::from_mode(0o666)).unwrap();
    refused(&["install", "base/1", "-k", K1], "dkms.conf");
    // The hook reports it as that module's failure and goes on with the others.
    let out = sb
        .rdkms(["autoinstall", "--hook", "-k", K1])
        .output()
        .unwrap();
    assert!(stderr(&out).contains("chmod go-w"), "{}", stderr(&out));
    assert!(sb.installed_ko(K1, "m1").is_file());
    assert!(!sb.installed_ko(K1, "base").exists());
    // The overrides.
    sb.rdkms(["install", "base/1", "-k", K1, "--allow-untrusted-sources"])
        .assert()
        .success();
    fs::create_dir_all(sb.root().join("etc/dkms")).unwrap();
    fs::write(
        sb.root().join("etc/dkms/framework.conf"),
        "rdkms_trust_sources=any\n",
    )
    .unwrap();
    sb.rdkms(["install", "base/1", "-k", K2]).assert().success();
    // A sticky directory with root's files in it is fine.
    fs::remove_file(sb.root().join("etc/dkms/framework.conf")).unwrap();
    fs::set_permissions(src.join("dkms.conf"), fs::Permissions::from_mode(0o644)).unwrap();
    sb.rdkms(["install", "base/1", "-k", K1, "--force"])
        .assert()
        .success();
}

#[test]
fn build_user_compiles_unprivileged_and_install_stays_root() {
    use std::os::unix::fs::MetadataExt;
    if skip_unless(is_root(), "build_user needs root") {
        return;
    }
    let sb = world(false);
    // Every directory down to the private build dir must be reachable by the user.
    fs::set_permissions(sb.root(), fs::Permissions::from_mode(0o755)).unwrap();
    sb.source("who", "1")
        .make("id -u && make -C ${kernel_source_dir} M=${dkms_tree}/${PACKAGE_NAME}/${PACKAGE_VERSION}/build modules")
        .create();
    fs::create_dir_all(sb.root().join("etc/dkms")).unwrap();
    fs::write(
        sb.root().join("etc/dkms/framework.conf"),
        "build_user=nobody\n",
    )
    .unwrap();
    sb.rdkms(["install", "who/1", "-k", K1]).assert().success();
    let log = fs::read_to_string(sb.built("who", "1", K1).join("log/make.log")).unwrap();
    assert!(
        log.lines().any(|l| l == "65534"),
        "make ran as nobody: {log}"
    );
    let ko = sb.installed_ko(K1, "who");
    assert_eq!(fs::metadata(&ko).unwrap().uid(), 0);
    assert_eq!(
        fs::metadata(sb.built("who", "1", K1).join("module/who.ko"))
            .unwrap()
            .uid(),
        0
    );
    // The option names the user too; an unknown one is one clear line.
    let out = sb
        .rdkms([
            "build",
            "who/1",
            "-k",
            K2,
            "--build-user",
            "no-such-user-rdkms",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no such user"), "{}", stderr(&out));
}

// --- defect 8: the smaller ones ------------------------------------------------------------

#[test]
fn kernel_versions_are_validated_and_plus_stays_valid() {
    let sb = world(true);
    for k in ["..", "/abs", "a/../b", "", ".", "x\ny", "k/a/b"] {
        let out = sb.rdkms(["status", "-k", k]).output().unwrap();
        assert!(out.stdout.is_empty(), "status -k {k:?} printed a line");
        for cmd in ["install", "uninstall", "build"] {
            let out = sb.rdkms([cmd, "base/1", "-k", k]).output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(2),
                "{cmd} -k {k:?}: {}",
                stderr(&out)
            );
            let err = stderr(&out);
            assert!(
                err.contains("invalid kernel version") || err.contains("invalid architecture"),
                "{err}"
            );
        }
    }
    sb.installed_kernel(K3);
    sb.rdkms(["install", "base/1", "-k", K3]).assert().success();
    assert!(sb.status().contains(&format!("base/1, {K3}, ")));
}

#[test]
fn smaller_defects_absolute_patch_script_escape_initramfs_message_private_conf() {
    let sb = world(false);
    // An absolute PATCH says so.
    sb.source("p", "1")
        .conf("PATCH[0]=\"/etc/passwd\"")
        .create();
    let out = sb.rdkms(["build", "p/1", "-k", K1]).output().unwrap();
    assert!(stderr(&out).contains("absolute"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("'..'"), "{}", stderr(&out));
    // A POST_INSTALL that escapes is refused before anything is installed.
    sb.source("s", "1")
        .conf("POST_INSTALL=\"../../../bin/true\"")
        .create();
    let out = sb.rdkms(["install", "s/1", "-k", K1]).output().unwrap();
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(!sb.installed_ko(K1, "s").exists());
    assert!(!sb
        .status()
        .contains("s/1, 6.1.0-1-amd64, x86_64: installed"));
    // The initramfs failure line has no empty field.
    fs::write(sb.root().join("initramfs.log.exit"), "1").unwrap();
    let out = sb
        .rdkms(["autoinstall", "--hook", "-k", K1])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(err.contains("boot-critical failure"), "{err}");
    assert!(!err.contains(": ;"), "{err}");
    // A dkms.conf linked to a private file is not read, so not quoted.
    let secret = sb.root().join("secret");
    fs::write(&secret, "TOPSECRET-LINE\n").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let leak = sb.root().join("usr/src/leak-1");
    fs::create_dir_all(&leak).unwrap();
    std::os::unix::fs::symlink(&secret, leak.join("dkms.conf")).unwrap();
    let out = sb.rdkms(["add", "leak/1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(!stderr(&out).contains("TOPSECRET"), "{}", stderr(&out));
}

// --- hooks under faults ------------------------------------------------------------------

#[test]
fn failing_initramfs_and_a_read_only_boot_are_recorded_and_retried() {
    let mut sb = world(true);
    sb.record_initramfs();
    // update-initramfs that really writes /boot (the stub only records otherwise).
    let stub = sb.root().join("stub-bin/update-initramfs");
    fs::write(
        &stub,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{log}'\necho new > \"$RDKMS_ROOT/boot/initrd.img-$3\" || exit 1\n",
            log = sb.root().join("initramfs.log").display()
        ),
    )
    .unwrap();
    fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).unwrap();
    let boot = sb.root().join("boot");
    let ro = is_root()
        && Command::new("mount")
            .arg("--bind")
            .arg(&boot)
            .arg(&boot)
            .status()
            .is_ok_and(|s| s.success())
        && Command::new("mount")
            .args(["-o", "remount,ro,bind"])
            .arg(&boot)
            .status()
            .is_ok_and(|s| s.success());
    if !ro {
        eprintln!(
            "skipped the read-only /boot part: needs root and mount; failing the tool instead"
        );
        fs::write(sb.root().join("initramfs.log.exit"), "1").unwrap();
        fs::write(&stub, "#!/bin/sh\nexit 1\n").unwrap();
    }
    sb.rdkms(["uninstall", "zfs/2", "-k", K1])
        .assert()
        .success();
    let out = sb.rdkms(["reconcile", "--hook"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(11), "boot-critical: {err}");
    assert!(out.stdout.is_empty());
    assert!(err.contains("boot-critical failure"), "{err}");
    let pending = sb.tree().join(".rdkms-initramfs-pending").join(K1);
    assert!(pending.exists());
    if ro {
        Command::new("umount").arg(&boot).status().unwrap();
    } else {
        sb.record_initramfs();
    }
    sb.rdkms(["reconcile", "--hook"]).assert().success();
    assert!(!pending.exists());
    if ro {
        assert_eq!(
            fs::read_to_string(boot.join(format!("initrd.img-{K1}"))).unwrap(),
            "new\n"
        );
    }
    assert!(converged(&sb));
    assert_eq!(violations(&sb), Vec::<String>::new());
}

// --- hostile inputs ------------------------------------------------------------------------

/// The name every escape attempt uses, so anything written outside the sandbox shows.
const MARK: &str = "rdkms-hostile-mark";

fn outside_marks(sb: &Sandbox) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in [
        sb.root().parent().unwrap().to_path_buf(),
        PathBuf::from("/"),
        PathBuf::from("/etc"),
        PathBuf::from("/lib/modules"),
        PathBuf::from("/usr/src"),
        PathBuf::from("/var/lib/dkms"),
    ] {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().contains(MARK) {
                found.push(e.path());
            }
        }
    }
    found
}

/// A source with a dkms.conf made of `extra` lines after a valid base.
fn hostile_source(sb: &Sandbox, name: &str, extra: &str) {
    sb.source(name, "1").conf(extra).create();
}

/// A tarball whose members python's tarfile writes exactly as given.
fn hostile_tarball(dir: &Path, name: &str, script: &str) -> PathBuf {
    let path = dir.join(format!("{name}.dkms.tar.gz"));
    let py = format!(
        "import tarfile, io\nt = tarfile.open({p:?}, 'w:gz')\ndef f(n, data=b'x', **kw):\n    i = tarfile.TarInfo(n)\n    for k, v in kw.items(): setattr(i, k, v)\n    i.size = len(data) if i.type == tarfile.REGTYPE else 0\n    t.addfile(i, io.BytesIO(data) if i.type == tarfile.REGTYPE else None)\n{script}\nt.close()\n",
        p = path.display().to_string()
    );
    let ok = Command::new("python3").arg("-c").arg(py).status().unwrap();
    assert!(ok.success());
    path
}

#[test]
fn hostile_inputs_are_refused_without_harm() {
    let sb = world(true);
    let before = sb.status();
    let work = tempfile::tempdir().unwrap();
    let mut tried = 0;
    let mut harmed = 0;
    let mut check = |args: Vec<String>, must_fail: bool| {
        tried += 1;
        let out = sb.rdkms(&args).output().unwrap();
        let err = stderr(&out);
        let bad = out.status.code() == Some(101)
            || err.contains("panicked")
            || (must_fail && out.status.success())
            || !outside_marks(&sb).is_empty()
            || !violations(&sb).is_empty();
        if bad {
            harmed += 1;
            eprintln!("hostile {args:?}: exit {:?}: {err}", out.status.code());
        }
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let m = format!("../../../{MARK}");
    // Names and versions.
    for (name, version) in [
        (m.as_str(), "1"),
        ("ok", m.as_str()),
        ("", "1"),
        ("a/b", "1"),
        (".", "1"),
        ("..", "1"),
        ("a\nb", "1"),
        ("ok", ".."),
        ("ok", "1\u{1}"),
        ("-rf", "1"),
    ] {
        check(s(&["add", "-m", name, "-v", version]), true);
        check(s(&["install", "-m", name, "-v", version, "-k", K1]), true);
        check(s(&["remove", "-m", name, "-v", version, "--all"]), true);
    }
    check(s(&["add", &format!("{m}/1")]), true);
    // Kernel versions, on every command that takes one.
    for k in ["..", "/abs", "a/../b", "", ".", "x\ny", "k/a/b", m.as_str()] {
        for cmd in [
            &["status", "-k", k][..],
            &["install", "base/1", "-k", k],
            &["uninstall", "base/1", "-k", k],
            &["remove", "base/1", "-k", k],
            &["build", "base/1", "-k", k],
            &["autoinstall", "--hook", "-k", k],
            &["kernel_prerm", "--hook", "-k", k],
            &["kernel_postinst", "--hook", "-k", k],
        ] {
            // status exits 0 by contract; hooks never fail a kernel's package.
            let fails = !matches!(cmd[0], "status");
            check(s(cmd), fails && !cmd.contains(&"--hook"));
        }
    }
    // dkms.conf directives that try to leave their directories.
    let confs = [
        format!("DEST_MODULE_LOCATION[0]=\"/../../../../{MARK}\""),
        format!("BUILT_MODULE_NAME[0]=\"../{MARK}\""),
        format!("DEST_MODULE_NAME[0]=\"../../{MARK}\""),
        "BUILT_MODULE_LOCATION[0]=\"../../../\"".to_string(),
        "PATCH[0]=\"/etc/passwd\"".to_string(),
        format!("PATCH[0]=\"../../{MARK}.patch\""),
        format!("POST_INSTALL=\"../../{MARK}\""),
        format!("PRE_INSTALL=\"../{MARK}\""),
        format!("POST_REMOVE=\"../{MARK}\""),
        format!("PRE_BUILD=\"../../{MARK}\""),
        format!("POST_BUILD=\"../../{MARK}\""),
    ];
    for (i, line) in confs.iter().enumerate() {
        let name = format!("hc{i}");
        hostile_source(&sb, &name, line);
        check(s(&["install", &format!("{name}/1"), "-k", K1]), true);
    }
    // A source directory naming itself with `..` or `/`.
    for (i, name) in [format!("../{MARK}"), "a/b".to_string(), "..".to_string()]
        .iter()
        .enumerate()
    {
        let d = work.path().join(format!("pn-{i}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join("dkms.conf"),
            format!("PACKAGE_NAME=\"{name}\"\nPACKAGE_VERSION=\"1\"\nBUILT_MODULE_NAME[0]=\"x\"\nDEST_MODULE_LOCATION[0]=\"/updates/dkms\"\n"),
        )
        .unwrap();
        check(s(&["add", d.to_str().unwrap()]), true);
    }
    // Tarballs.
    let tarballs = [
        ("abs", format!("f('/tmp/{MARK}')")),
        ("dotdot", format!("f('dkms_source_tree/../../{MARK}')")),
        (
            "link-out",
            format!("f('dkms_source_tree/l', type=tarfile.SYMTYPE, linkname='/tmp')\nf('dkms_source_tree/l/{MARK}')"),
        ),
        (
            "hardlink",
            "f('dkms_source_tree/h', type=tarfile.LNKTYPE, linkname='/etc/passwd')".to_string(),
        ),
        (
            "device",
            "f('dkms_source_tree/dev', type=tarfile.CHRTYPE, devmajor=1, devminor=3)".to_string(),
        ),
        ("duplicate", "f('dkms_source_tree/dkms.conf')\nf('dkms_source_tree/dkms.conf')".to_string()),
    ];
    for (name, script) in &tarballs {
        let t = hostile_tarball(work.path(), name, script);
        check(s(&["ldtarball", t.to_str().unwrap()]), true);
    }
    // Symlinks.
    let src = sb.root().join("usr/src");
    fs::create_dir_all(src.join("shadow-1")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", src.join("shadow-1/dkms.conf")).unwrap();
    check(s(&["add", "shadow/1"]), true);
    std::os::unix::fs::symlink("/", src.join("rootlink-1")).unwrap();
    check(s(&["add", "rootlink/1"]), true);
    let outside = work.path().join("outside");
    fs::create_dir_all(outside.join("1")).unwrap();
    fs::write(outside.join("1/keep"), "keep").unwrap();
    std::os::unix::fs::symlink(&outside, sb.tree().join("linked")).unwrap();
    check(s(&["remove", "linked/1", "--all"]), true);
    assert_eq!(fs::read_to_string(outside.join("1/keep")).unwrap(), "keep");
    // The install directory replaced by a link out of the kernel's tree.
    let dest = sb.modules_dir(K2).join("updates");
    fs::rename(&dest, work.path().join("updates-saved")).unwrap();
    std::os::unix::fs::symlink(&outside, &dest).unwrap();
    tried += 1;
    let out = sb
        .rdkms(["install", "base/1", "-k", K2, "--force"])
        .output()
        .unwrap();
    if out.status.success() || outside.join("dkms").exists() {
        harmed += 1;
        eprintln!(
            "install followed a link out of the kernel dir: {}",
            stderr(&out)
        );
    }
    fs::remove_file(&dest).unwrap();
    fs::rename(work.path().join("updates-saved"), &dest).unwrap();

    let ours = |t: String| -> String {
        t.lines()
            .filter(|l| ["base/", "multi/", "zfs/"].iter().any(|p| l.starts_with(p)))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    assert_eq!(
        ours(sb.status()),
        ours(before),
        "the installed modules are untouched"
    );
    figure(
        "hostile_inputs_are_refused_without_harm",
        &format!("hostile inputs: {tried} tried, {harmed} did harm (panic, success, a write outside, a broken invariant)"),
    );
    assert!(tried >= 50);
    assert_eq!(harmed, 0);
}

// --- the static dkms.conf evaluator ----------------------------------------------------------

/// A dkms.conf line: mostly assignments (so that the evaluator often accepts and the
/// comparison with bash means something), with shell syntax it must decline mixed in.
fn conf_line() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec![
        "MAKE=",
        "CLEAN=",
        "PATCH[1]=",
        "BUILT_MODULE_NAME[0]=",
        "AUTOINSTALL=",
        "X=",
        "MAKE=(",
        "DEST_MODULE_LOCATION[0]=",
        "# ",
        "export X=",
        "",
        "if ",
        "X+=",
    ]);
    let value = prop::sample::select(vec![
        "a",
        "1",
        "'x y'",
        "\"q $kernelver\"",
        "\\ ",
        "$module",
        "${PACKAGE_NAME}",
        "${X}",
        "\"",
        "'",
        "$",
        "*",
        "é",
        "\t",
        " ",
        "(",
        ")",
        ";",
        "$(",
        "`",
        "${X:-y}",
        "~",
        " #c",
        "\"${BUILT_MODULE_NAME[0]}\"",
        "$'n'",
        "\\\n",
        "&&",
        "|",
        "?",
        "[a]",
        "=",
        "\r",
    ]);
    (name, prop::collection::vec(value, 0..6)).prop_map(|(n, v)| format!("{n}{}", v.concat()))
}

#[test]
fn static_evaluator_never_panics_and_agrees_with_bash_when_it_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello-1.0");
    fs::create_dir_all(&dir).unwrap();
    let kernel = conf_support::real_kernel();
    let ksrc = PathBuf::from(format!("/lib/modules/{kernel}/build"));
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let (accepted, total) = (Cell::new(0usize), Cell::new(0usize));
    let strategy = prop::collection::vec(conf_line(), 1..6);
    runner
        .run(&strategy, |lines| {
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let conf = conf_support::write(&dir, "dkms.conf", &text);
            let ctx = conf_support::context(&conf, &kernel, &ksrc);
            let files = [conf];
            total.set(total.get() + 1);
            if let Ok(Ok(d)) = static_eval::evaluate(&files, DKMS_CONF_NAMES, &ctx) {
                accepted.set(accepted.get() + 1);
                let by_bash = bash::evaluate(&files, DKMS_CONF_NAMES, &ctx)
                    .map_err(|e| TestCaseError::fail(format!("bash on {text:?}: {e}")))?;
                prop_assert_eq!(d, by_bash, "conf {:?}", text);
            }
            Ok(())
        })
        .unwrap();
    figure(
        "static_evaluator_never_panics_and_agrees_with_bash_when_it_accepts",
        &format!(
            "static evaluator: {} random confs, {} accepted and equal to bash, 0 panics",
            total.get(),
            accepted.get()
        ),
    );
}
