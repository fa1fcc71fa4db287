//! The reliability suite, part 1 (README "Reliability guarantees"): kill -9 at evenly spread
//! moments of six operations, 16 mixed commands at once, and a full disk. After every kill the
//! invariants must hold at once, and one more run of the same command must end exactly where
//! an undisturbed run ends. Prints the figures (kill points, trials, states lost).

mod common;

use std::fs;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use common::reliability::{
    clone, complete, converged, figure, installed_files, outcome, violations, world, K1, K2, K3,
};
use common::Sandbox;

/// One operation of the kill suite: how to prepare its starting state from the template, and
/// its command line.
struct Op {
    name: &'static str,
    prepare: fn(&Sandbox),
    args: &'static [&'static str],
    /// Modules that must keep a complete installed file on every kernel at every moment
    /// (invariant (b): the command was not asked to remove them).
    keeps: &'static [(&'static str, &'static str)],
}

fn nothing(_: &Sandbox) {}

fn new_multi_version(sb: &Sandbox) {
    sb.source("multi", "4")
        .modules(&["m1", "m2"])
        .file("stamp", "v4")
        .create();
    sb.rdkms(["add", "multi/4", "-q"]).assert().success();
}

fn new_kernel(sb: &Sandbox) {
    sb.installed_kernel(K3);
}

const OPS: [Op; 6] = [
    Op {
        name: "install --force",
        prepare: nothing,
        args: &["install", "multi/3", "-k", K1, "--force"],
        keeps: &[(K1, "m1"), (K1, "m2"), (K1, "base"), (K1, "zfs")],
    },
    Op {
        name: "upgrade (reconcile)",
        prepare: new_multi_version,
        args: &["reconcile", "--hook"],
        keeps: &[(K1, "m1"), (K1, "m2"), (K2, "m1"), (K2, "m2"), (K1, "zfs")],
    },
    Op {
        name: "autoinstall",
        prepare: new_kernel,
        args: &["autoinstall", "--hook", "-k", K3],
        keeps: &[(K1, "m1"), (K2, "m1"), (K1, "zfs"), (K2, "zfs")],
    },
    Op {
        name: "uninstall",
        prepare: nothing,
        args: &["uninstall", "multi/3", "-k", K1],
        keeps: &[(K1, "base"), (K1, "zfs"), (K2, "m1"), (K2, "m2")],
    },
    Op {
        name: "kernel_prerm",
        prepare: nothing,
        args: &["kernel_prerm", "--hook", "-k", K2],
        keeps: &[(K1, "m1"), (K1, "m2"), (K1, "base"), (K1, "zfs")],
    },
    Op {
        name: "remove --all",
        prepare: nothing,
        args: &["remove", "multi/3", "--all"],
        keeps: &[(K1, "base"), (K2, "base"), (K1, "zfs"), (K2, "zfs")],
    },
];

/// Kill points per operation (6 operations: 108 in all).
const POINTS: usize = 18;

fn kept_missing(sb: &Sandbox, keeps: &[(&str, &str)]) -> Vec<String> {
    keeps
        .iter()
        .filter(|(k, m)| !complete(&sb.installed_ko(k, m)))
        .map(|(k, m)| format!("{m} on {k}"))
        .collect()
}

#[test]
fn kill_9_at_108_points_loses_nothing_and_the_next_run_converges() {
    let template = world(true);
    let mut points = 0;
    let mut lost = 0;
    let mut violated = 0;
    for op in &OPS {
        // The undisturbed run: its duration spreads the kill points, its end is the target.
        let reference = clone(&template);
        (op.prepare)(&reference);
        let t = Instant::now();
        reference.rdkms(op.args).assert().success();
        let took = t.elapsed();
        let want = outcome(&reference);
        assert!(
            want.leftovers.is_empty(),
            "{}: {:?}",
            op.name,
            want.leftovers
        );
        for i in 0..POINTS {
            let sb = clone(&template);
            (op.prepare)(&sb);
            let delay = took.mul_f64((i as f64 + 0.5) / POINTS as f64);
            let mut child = sb
                .rdkms_std(op.args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(delay);
            let _ = child.kill();
            let _ = child.wait();
            points += 1;
            let bad = violations(&sb);
            let missing = kept_missing(&sb, op.keeps);
            if !bad.is_empty() {
                violated += 1;
                eprintln!("{} killed after {delay:?}: {bad:?}", op.name);
            }
            if !missing.is_empty() {
                lost += 1;
                eprintln!("{} killed after {delay:?}: lost {missing:?}", op.name);
            }
            // One more run of the same command finishes the job (a `remove` killed after its
            // last step finds nothing left to remove: DKMS's exit 3).
            let again = sb.rdkms(op.args).output().unwrap();
            let removed = op.args[0] == "remove" && again.status.code() == Some(3);
            if removed {
                // Nothing left to remove, so that command stops early: the depmod the killed
                // run owed is done by the next hook run, as apt's Post-Invoke would.
                sb.rdkms(["reconcile", "--hook"]).assert().success();
            }
            let done = again.status.success() || removed;
            assert!(
                done,
                "{} killed after {delay:?}, then run again: {}",
                op.name,
                String::from_utf8_lossy(&again.stderr)
            );
            assert_eq!(
                outcome(&sb),
                want,
                "{} killed after {delay:?}, then run again",
                op.name
            );
        }
    }
    figure(
        "kill_9_at_108_points_loses_nothing_and_the_next_run_converges",
        &format!(
            "kill -9: {points} kill points over {} operations; invariant violations {violated}; states lost {lost}",
            OPS.len()
        ),
    );
    assert!(points >= 100);
    assert_eq!((violated, lost), (0, 0));
}

/// The 16 commands started at once in every trial.
const MIXED: [&[&str]; 16] = [
    &["reconcile", "--hook"],
    &["reconcile", "--from-apt"],
    &["autoinstall", "--hook", "-k", K1],
    &["autoinstall", "--hook", "-k", K2],
    &["kernel_postinst", "--hook", "-k", K1],
    &["install", "multi/3", "-k", K1, "--force"],
    &["install", "base/1", "-k", K2, "--force"],
    &["uninstall", "zfs/2", "-k", K1],
    &["install", "zfs/2", "-k", K1],
    &["uninstall", "base/1", "-k", K2],
    &["build", "multi/3", "-k", K2],
    &["unbuild", "base/1", "-k", K1],
    &["reconcile", "--hook"],
    &["install", "base/1", "-k", K1],
    &["status"],
    &["plan"],
];

const TRIALS: usize = 20;

#[test]
fn sixteen_mixed_commands_at_once_keep_the_invariants_in_20_trials() {
    let template = world(true);
    let want = outcome(&template);
    let mut diff_lines = 0;
    let mut status_samples = 0;
    for trial in 0..TRIALS {
        let sb = Arc::new(clone(&template));
        // status, polled while the commands run, must never see a half-done install.
        let stop = Arc::new(AtomicBool::new(false));
        let diffs = Arc::new(AtomicUsize::new(0));
        let samples = Arc::new(AtomicUsize::new(0));
        let poller = {
            let (sb, stop, diffs, samples) =
                (sb.clone(), stop.clone(), diffs.clone(), samples.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let out = sb.rdkms_std(["status"]).output().unwrap();
                    let text = String::from_utf8_lossy(&out.stdout);
                    diffs.fetch_add(
                        text.matches("Differences between").count(),
                        Ordering::Relaxed,
                    );
                    samples.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let children: Vec<_> = MIXED
            .iter()
            .map(|args| {
                sb.rdkms_std(*args)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for (child, args) in children.into_iter().zip(MIXED) {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "trial {trial}: {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            if args.contains(&"--hook") || args.contains(&"--from-apt") {
                assert!(
                    out.stdout.is_empty(),
                    "trial {trial}: {args:?} wrote to stdout"
                );
            }
        }
        stop.store(true, Ordering::Relaxed);
        poller.join().unwrap();
        diff_lines += diffs.load(Ordering::Relaxed);
        status_samples += samples.load(Ordering::Relaxed);
        assert_eq!(violations(&sb), Vec::<String>::new(), "trial {trial}");
        sb.rdkms(["reconcile", "--hook"]).assert().success();
        assert!(converged(&sb), "trial {trial}");
        assert_eq!(outcome(&sb), want, "trial {trial}");
    }
    figure(
        "sixteen_mixed_commands_at_once_keep_the_invariants_in_20_trials",
        &format!(
            "concurrency: {TRIALS} trials of {} commands at once; {status_samples} status samples, {diff_lines} Diff warnings; states lost 0",
            MIXED.len()
        ),
    );
    assert_eq!(diff_lines, 0);
}

/// A tmpfs mounted at `dir` for the life of the value (needs root and mount).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }

    /// Fills the file system to the last byte; returns the filler file.
    fn fill(&self) -> std::path::PathBuf {
        let filler = self.0.join("filler");
        let mut f = fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
        let _ = f.sync_all();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

fn can_mount() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the disk-full tests mount a tmpfs and need root");
        return false;
    }
    true
}

#[test]
fn a_full_module_tree_keeps_the_working_module_and_names_the_full_destination() {
    if !can_mount() {
        return;
    }
    let template = world(true);
    let sb = Sandbox::new();
    let modules = sb.root().join("lib/modules");
    let Some(fs_) = Tmpfs::mount(&modules, "2m") else {
        eprintln!("skipped: mount -t tmpfs failed (no CAP_SYS_ADMIN?)");
        return;
    };
    // The template's tree and sources, with /lib/modules on the small tmpfs.
    let sb = {
        let c = clone(&template);
        fs::create_dir_all(sb.root().join("usr")).unwrap();
        for d in ["var", "usr/src", "boot", "stub-bin"] {
            std::process::Command::new("cp")
                .arg("-a")
                .arg(c.root().join(d))
                .arg(sb.root().join(d).parent().unwrap())
                .status()
                .unwrap();
        }
        std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", c.root().join("lib/modules").display()))
            .arg(&modules)
            .status()
            .unwrap();
        let mut sb = sb;
        sb.record_initramfs();
        for m in fs::read_dir(sb.tree()).unwrap().flatten() {
            for v in fs::read_dir(m.path()).into_iter().flatten().flatten() {
                let link = v.path().join("source");
                if let Ok(t) = fs::read_link(&link) {
                    if let Ok(rel) = t.strip_prefix(c.root()) {
                        fs::remove_file(&link).unwrap();
                        std::os::unix::fs::symlink(sb.root().join(rel), &link).unwrap();
                    }
                }
            }
        }
        sb
    };
    let before = fs::read(sb.installed_ko(K1, "m1")).unwrap();
    let filler = fs_.fill();
    // A rebuild makes the new file differ, so the install really has to write it.
    fs::write(sb.root().join("usr/src/multi-3/stamp"), "rebuilt").unwrap();
    sb.rdkms(["build", "multi/3", "-k", K1, "--force"])
        .assert()
        .success();
    let out = sb
        .rdkms(["install", "multi/3", "-k", K1, "--force"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("No space left on device") && err.contains("updates/dkms/m1.ko"),
        "the error names the full destination: {err}"
    );
    assert_eq!(
        fs::read(sb.installed_ko(K1, "m1")).unwrap(),
        before,
        "old module kept"
    );
    assert_eq!(violations(&sb), Vec::<String>::new());
    assert!(
        !sb.listing(&modules).iter().any(|p| p.contains("rdkms-tmp")),
        "no temporary file left on the full disk"
    );
    fs::remove_file(filler).unwrap();
    sb.rdkms(["install", "multi/3", "-k", K1, "--force"])
        .assert()
        .success();
    assert!(fs::read_to_string(sb.installed_ko(K1, "m1"))
        .unwrap()
        .contains("rebuilt"));
    assert_eq!(violations(&sb), Vec::<String>::new());
    figure(
        "a_full_module_tree_keeps_the_working_module_and_names_the_full_destination",
        "disk full (/lib/modules): install --force failed cleanly, old module kept; states lost 0",
    );
}

#[test]
fn a_full_dkms_tree_keeps_the_previous_build_and_installation() {
    if !can_mount() {
        return;
    }
    let template = world(true);
    let sb = clone(&template);
    // The dkms tree moves onto a small tmpfs (its content copied back in).
    let saved = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", sb.tree().display()))
        .arg(saved.path())
        .status()
        .unwrap();
    assert!(status.success());
    let Some(fs_) = Tmpfs::mount(&sb.tree(), "4m") else {
        eprintln!("skipped: mount -t tmpfs failed (no CAP_SYS_ADMIN?)");
        return;
    };
    std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", saved.path().display()))
        .arg(sb.tree())
        .status()
        .unwrap();
    let want = outcome(&sb);
    let built = fs::read(sb.built("multi", "3", K1).join("module/m1.ko")).unwrap();
    let filler = fs_.fill();
    fs::write(sb.root().join("usr/src/multi-3/stamp"), "rebuilt").unwrap();
    let out = sb
        .rdkms(["install", "multi/3", "-k", K1, "--force"])
        .output()
        .unwrap();
    let rebuild = sb
        .rdkms(["build", "multi/3", "-k", K1, "--force"])
        .output()
        .unwrap();
    assert!(
        !rebuild.status.success(),
        "a build cannot succeed on a full tree"
    );
    assert!(
        out.status.code() != Some(101) && rebuild.status.code() != Some(101),
        "no panic"
    );
    assert_eq!(
        fs::read(sb.built("multi", "3", K1).join("module/m1.ko")).unwrap(),
        built,
        "the previous build stays"
    );
    assert_eq!(violations(&sb), Vec::<String>::new());
    let hook = sb.rdkms(["reconcile", "--hook"]).output().unwrap();
    assert_ne!(hook.status.code(), Some(101));
    assert!(hook.stdout.is_empty());
    assert_eq!(
        installed_files(&sb, K1).len(),
        want.files.iter().filter(|(f, _)| f.starts_with(K1)).count()
    );
    fs::remove_file(filler).unwrap();
    sb.rdkms(["build", "multi/3", "-k", K1, "--force"])
        .assert()
        .success();
    sb.rdkms(["reconcile", "--hook"]).assert().success();
    assert!(converged(&sb));
    assert_eq!(violations(&sb), Vec::<String>::new());
    figure(
        "a_full_dkms_tree_keeps_the_previous_build_and_installation",
        "disk full (dkms tree): builds failed cleanly, previous build and installation kept; states lost 0",
    );
}

/// A few kill points on the real kernel headers: `install --force` of examples/hello-dkms.
#[test]
fn real_headers_install_force_killed_keeps_a_loadable_module() {
    let Some(k) = common::real_tier(&["make", "modinfo"]) else {
        return;
    };
    let sb = Sandbox::new();
    let kdir = common::real_kernel_dir(sb.root(), &k);
    assert!(kdir.is_dir());
    common::copy_dir(
        &common::repo("examples/hello-dkms"),
        &sb.root().join("usr/src/hello-1.0"),
    );
    sb.rdkms(["install", "hello/1.0", "-k", &k])
        .assert()
        .success();
    let ko = sb.installed_ko(&k, "hello");
    let t = Instant::now();
    sb.rdkms(["install", "hello/1.0", "-k", &k, "--force"])
        .assert()
        .success();
    let took = t.elapsed();
    let points = 8;
    for i in 0..points {
        let mut child = sb
            .rdkms_std(["install", "hello/1.0", "-k", &k, "--force"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(took.mul_f64((i as f64 + 0.5) / points as f64));
        let _ = child.kill();
        let _ = child.wait();
        let info = std::process::Command::new("modinfo")
            .args(["-F", "vermagic"])
            .arg(&ko)
            .output()
            .unwrap();
        assert!(
            info.status.success() && String::from_utf8_lossy(&info.stdout).contains(&k),
            "kill point {i}: {} is not a complete module",
            ko.display()
        );
    }
    sb.rdkms(["install", "hello/1.0", "-k", &k, "--force"])
        .assert()
        .success();
    assert!(sb.status().contains("installed\n"), "{}", sb.status());
    figure(
        "real_headers_install_force_killed_keeps_a_loadable_module",
        &format!("real headers: {points} kill points during install --force, module always loadable; states lost 0"),
    );
}

/// A killed build's make goes on running (it is not rdkms's to take down with it): the next
/// command stops it before it removes the private build directory, which would otherwise
/// reappear under it or keep changing (the leftover CI found after a killed upgrade).
#[test]
fn the_next_command_stops_a_killed_builds_processes_before_cleaning_up() {
    let sb = Sandbox::new();
    sb.installed_kernel(K1);
    let beat = sb.root().join("heartbeat");
    sb.source("slow", "1")
        .make(&format!(
            "sh -c '(while :; do date +%s%N > {}; mkdir -p again; sleep 0.02; done) & sleep 60'",
            beat.display()
        ))
        .create();
    sb.rdkms(["add", "slow/1", "-q"]).assert().success();
    let mut child = sb
        .rdkms_std(["build", "slow/1", "-k", K1])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !beat.exists() {
        assert!(t.elapsed().as_secs() < 30, "the build never started make");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    let private = sb.tree().join(".rdkms-build");
    assert!(private.exists(), "the killed build left its directory");
    sb.rdkms(["remove", "slow/1", "--all"]).assert().success();
    let before = fs::read_to_string(&beat).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        fs::read_to_string(&beat).unwrap(),
        before,
        "the killed build's make still runs"
    );
    assert!(!private.exists(), "{} is left", private.display());
}

/// Invariant (c) for installs: an install killed between its first copied file and its
/// `kernel-K-A` link is completed by the next command that takes the lock, even one that
/// would never install this module itself (`reconcile` skips a module without AUTOINSTALL).
/// The second module is large so the kill lands, by what is on disk, while it is copied.
#[test]
fn an_install_killed_halfway_is_completed_by_the_next_command() {
    install_killed_halfway_then_reconcile(&[]);
}

/// The same after `install --no-depmod`: no depmod is owed, so `reconcile` would plan
/// nothing; the pending install alone makes it take the lock and complete it.
#[test]
fn an_install_without_depmod_killed_halfway_is_completed_by_reconcile() {
    install_killed_halfway_then_reconcile(&["--no-depmod"]);
}

fn install_killed_halfway_then_reconcile(extra: &[&str]) {
    let mut sb = Sandbox::new();
    sb.record_depmod();
    sb.installed_kernel(K1);
    sb.source("manual", "1")
        .modules(&["m1", "m2"])
        .conf("AUTOINSTALL=\"\"")
        .create();
    sb.rdkms(["build", "manual/1", "-k", K1, "-q"])
        .assert()
        .success();
    let built = sb
        .version_dir("manual", "1")
        .join(K1)
        .join(common::arch())
        .join("module/m2.ko");
    let big = (0..=250u8).collect::<Vec<u8>>().repeat(1 << 18);
    fs::write(&built, &big).unwrap();
    let dest = sb.modules_dir(K1).join("updates/dkms");
    let mut child = sb
        .rdkms_std(["install", "manual/1", "-k", K1].iter().chain(extra))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let copying = || {
        fs::read_dir(&dest)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(".m2.ko.") && n.ends_with("rdkms-tmp")
            })
    };
    while !copying() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the install ended before it was killed"
        );
        assert!(t.elapsed().as_secs() < 60, "m2.ko was never copied");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(complete(&sb.installed_ko(K1, "m1")), "m1 was copied first");
    assert!(!sb.installed_ko(K1, "m2").exists());
    assert!(
        !sb.status().contains("installed"),
        "killed before its link: {}",
        sb.status()
    );
    let doctor = sb.rdkms(["doctor"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&doctor.stdout)
            .contains(&format!("installation of manual/1 on kernel {K1}")),
        "{doctor:?}"
    );
    let depmods = sb.depmod_calls().len();

    sb.rdkms(["reconcile", "--hook"]).assert().success();

    assert_eq!(fs::read(sb.installed_ko(K1, "m2")).unwrap(), big);
    assert!(complete(&sb.installed_ko(K1, "m1")));
    assert!(
        sb.status()
            .contains(&format!("manual/1, {K1}, {}: installed", common::arch())),
        "{}",
        sb.status()
    );
    assert!(
        sb.depmod_calls().len() > depmods,
        "no depmod for the completed install"
    );
    assert!(!sb.tree().join(".rdkms-installs").exists());
}
