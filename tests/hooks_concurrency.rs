//! Hooks racing each other and dying midway: eight hook processes started at once on one tree
//! end in the same state as one run (20 trials), and a run killed with SIGKILL at a random
//! moment is completed by the next run.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Sandbox;

const K1: &str = "6.1.0-1-amd64";
const K2: &str = "6.1.0-2-amd64";

/// Two installed kernels with headers, four modules (one boot-critical, one depending on
/// another), recording depmod and update-initramfs stubs.
fn sandbox() -> Sandbox {
    let mut sb = Sandbox::new();
    sb.record_initramfs();
    for k in [K1, K2] {
        sb.installed_kernel(k);
    }
    sb.added_module("base", "1")
        .added(sb.source("top", "1").conf("BUILD_DEPENDS=\"base\""))
        .added(sb.source("zfs", "2").conf("REMAKE_INITRD=\"yes\""))
        .added(sb.source("multi", "3").modules(&["m1", "m2"]));
    sb
}

/// What "the same state" means: every path of the dkms tree and the module trees (rdkms's
/// own lock and fingerprint files aside), `status`, and the initramfs/depmod calls per kernel.
#[derive(Debug, PartialEq, Eq)]
struct State {
    tree: Vec<String>,
    modules: Vec<String>,
    status: String,
    pending: Vec<String>,
}

fn state(sb: &Sandbox) -> State {
    let skip = |p: &String| p.starts_with(".rdkms.lock") || p.starts_with(".rdkms-fingerprint");
    State {
        tree: sb
            .listing(&sb.tree())
            .into_iter()
            .filter(|p| !skip(p))
            .collect(),
        modules: sb.listing(&sb.root().join("lib/modules")),
        status: String::from_utf8_lossy(
            &sb.rdkms(["status"]).assert().success().get_output().stdout,
        )
        .into_owned(),
        pending: sb.listing(&sb.tree().join(".rdkms-initramfs-pending")),
    }
}

fn calls_per_kernel(lines: &[String], kernel: &str) -> usize {
    lines.iter().filter(|l| l.ends_with(kernel)).count()
}

/// The state one undisturbed run produces, and how long it took.
fn reference() -> (State, Duration) {
    let sb = sandbox();
    let t = Instant::now();
    sb.rdkms(["reconcile", "--hook"]).assert().success();
    let took = t.elapsed();
    let s = state(&sb);
    assert!(s.status.contains("installed"), "{}", s.status);
    assert_eq!(sb.initramfs_calls().len(), 2);
    (s, took)
}

#[test]
fn eight_hooks_at_once_end_like_one_run_in_every_trial() {
    let (want, _) = reference();
    let commands: [&[&str]; 8] = [
        &["reconcile", "--hook"],
        &["reconcile", "--from-apt"],
        &["autoinstall", "--hook", "-k", K1],
        &["kernel_postinst", "--hook", "-k", K2],
        &["reconcile", "--hook"],
        &["autoinstall", "--hook", "-k", K2],
        &["reconcile", "--from-apt"],
        &["kernel_postinst", "--hook", "-k", K1],
    ];
    for trial in 0..20 {
        let sb = sandbox();
        let children: Vec<_> = commands
            .iter()
            .map(|args| {
                sb.rdkms_std(*args)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for (child, args) in children.into_iter().zip(commands) {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "trial {trial}: {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.stdout.is_empty(),
                "trial {trial}: {args:?} wrote to stdout"
            );
        }
        assert_eq!(state(&sb), want, "trial {trial}");
        let depmod = sb.depmod_calls();
        let initramfs = sb.initramfs_calls();
        for k in [K1, K2] {
            assert_eq!(calls_per_kernel(&depmod, k), 1, "trial {trial}: {depmod:?}");
            assert_eq!(
                calls_per_kernel(&initramfs, k),
                1,
                "trial {trial}: {initramfs:?}"
            );
        }
    }
}

/// A small deterministic generator; the seed is printed so a failure can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn a_run_killed_at_a_random_moment_is_completed_by_the_next_run() {
    let (want, took) = reference();
    let seed = std::env::var("RDKMS_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("kill test seed {seed} (set RDKMS_KILL_SEED to replay); one run takes {took:?}");
    let mut rng = Lcg(seed);
    let span = took.as_millis() as u64 + 1;
    for trial in 0..12 {
        let sb = sandbox();
        let delay = Duration::from_millis(rng.next() % span);
        let mut child = sb
            .rdkms_std(["reconcile", "--hook"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        // The whole group: rdkms and the make, shell and depmod it runs.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        let out = sb
            .rdkms(["reconcile", "--hook"])
            .assert()
            .get_output()
            .clone();
        assert!(
            out.status.success(),
            "trial {trial} (killed after {delay:?}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(state(&sb), want, "trial {trial} (killed after {delay:?})");
        let initramfs = sb.initramfs_calls();
        for k in [K1, K2] {
            assert!(
                calls_per_kernel(&initramfs, k) >= 1,
                "trial {trial} (killed after {delay:?}): initramfs of {k} never updated: {initramfs:?}"
            );
        }
    }
}
