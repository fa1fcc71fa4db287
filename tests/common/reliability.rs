//! The reliability suite's world and its invariants (README "Reliability guarantees"):
//! a sandbox with installed kernels and modules, a way to clone it cheaply for each trial, and
//! the checks every interrupted or concurrent run must pass.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{arch, Sandbox};

pub const K1: &str = "6.1.0-1-amd64";
pub const K2: &str = "6.1.0-2-amd64";
/// A kernel installed after the template was set up (for autoinstall).
pub const K3: &str = "6.12.117+deb13-amd64";

/// Two kernels with headers and images; `base/1`, `multi/3` (two modules) and the boot-critical
/// `zfs/2` added and, with `installed`, built and installed for both kernels by `reconcile`.
pub fn world(installed: bool) -> Sandbox {
    let mut sb = Sandbox::new();
    sb.record_initramfs();
    fs::create_dir_all(sb.root().join("boot")).unwrap();
    for k in [K1, K2] {
        sb.installed_kernel(k);
    }
    sb.added_module("base", "1")
        .added(sb.source("multi", "3").modules(&["m1", "m2"]))
        .added(sb.source("zfs", "2").conf("REMAKE_INITRD=\"yes\""));
    if installed {
        sb.rdkms(["reconcile", "--hook"]).assert().success();
    }
    sb
}

/// A copy of `template` in a fresh sandbox (`cp -a`, so links and modes stay), with the stubs
/// pointing at the copy.
pub fn clone(template: &Sandbox) -> Sandbox {
    let mut sb = Sandbox::new();
    let out = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", template.root().display()))
        .arg(sb.root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // `source` links name the template's root: point them into the copy.
    for m in fs::read_dir(sb.tree()).unwrap().flatten() {
        for v in fs::read_dir(m.path()).into_iter().flatten().flatten() {
            let link = v.path().join("source");
            if let Ok(t) = fs::read_link(&link) {
                if let Ok(rel) = t.strip_prefix(template.root()) {
                    fs::remove_file(&link).unwrap();
                    std::os::unix::fs::symlink(sb.root().join(rel), &link).unwrap();
                }
            }
        }
    }
    // The stubs log to their own root: rewrite them for the copy.
    sb.record_initramfs();
    for log in ["depmod.log", "initramfs.log"] {
        let _ = fs::remove_file(sb.root().join(log));
    }
    sb
}

/// A fake module file is complete when it has its first and last line (rdkms writes through a
/// temporary file and a rename, so a torn file would show here).
pub fn complete(p: &Path) -> bool {
    fs::read_to_string(p).is_ok_and(|t| t.starts_with("FAKE-KO\n") && t.contains("\njobs="))
}

/// Module files below `<root>/lib/modules/K/updates/dkms`.
pub fn installed_files(sb: &Sandbox, k: &str) -> Vec<PathBuf> {
    let dir = sb.modules_dir(k).join("updates/dkms");
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(".ko"))
        })
        .collect();
    out.sort();
    out
}

/// The modules each `kernel-K-A` link says are installed: (module, version, kernel).
pub fn links(sb: &Sandbox) -> Vec<(String, String, String)> {
    let a = arch();
    let mut out = Vec::new();
    for m in fs::read_dir(sb.tree()).into_iter().flatten().flatten() {
        let name = m.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        for e in fs::read_dir(m.path()).into_iter().flatten().flatten() {
            let f = e.file_name().to_string_lossy().into_owned();
            let Some(k) = f
                .strip_prefix("kernel-")
                .and_then(|r| r.strip_suffix(&format!("-{a}")))
            else {
                continue;
            };
            if let Ok(t) = fs::read_link(e.path()) {
                let v = t
                    .components()
                    .next()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned());
                out.push((name.clone(), v.unwrap_or_default(), k.to_string()));
            }
        }
    }
    out.sort();
    out
}

/// The module names of a version's build for a kernel (from its `module/` directory).
fn built_names(sb: &Sandbox, m: &str, v: &str, k: &str) -> Vec<String> {
    fs::read_dir(sb.built(m, v, k).join("module"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Invariant violations of the tree right now (empty = fine):
/// (a) every module a `kernel-K-A` link calls installed has its complete file in place;
/// every module file rdkms installed is complete (never torn).
pub fn violations(sb: &Sandbox) -> Vec<String> {
    let mut bad = Vec::new();
    for (m, v, k) in links(sb) {
        if !sb.modules_dir(&k).is_dir() {
            continue;
        }
        let names = built_names(sb, &m, &v, &k);
        if names.is_empty() {
            bad.push(format!("{m}/{v} on {k}: linked but not built"));
        }
        for n in names {
            let p = sb.modules_dir(&k).join("updates/dkms").join(&n);
            if !complete(&p) {
                bad.push(format!("{m}/{v} on {k}: {n} missing or torn"));
            }
        }
    }
    for k in [K1, K2, K3] {
        for p in installed_files(sb, k) {
            if !complete(&p) {
                bad.push(format!("{} is torn", p.display()));
            }
        }
    }
    bad
}

/// What a trial must end with after one more run: status, the installed files (names and
/// bytes) and no leftovers of interrupted runs.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub status: String,
    pub files: Vec<(String, String)>,
    pub leftovers: Vec<String>,
}

pub fn outcome(sb: &Sandbox) -> Outcome {
    let mut files = Vec::new();
    for k in [K1, K2, K3] {
        for p in installed_files(sb, k) {
            // The make job flags a fake module records depend on what ran alongside.
            let text: String = fs::read_to_string(&p)
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.starts_with("jobs="))
                .map(|l| format!("{l}\n"))
                .collect();
            files.push((
                format!("{k}/{}", p.file_name().unwrap().to_string_lossy()),
                text,
            ));
        }
    }
    let leftovers = sb
        .listing(&sb.tree())
        .into_iter()
        .chain(sb.listing(&sb.root().join("lib/modules")))
        .filter(|p| {
            p.contains("rdkms-tmp")
                || p.starts_with(".rdkms-build/")
                || p.starts_with(".rdkms-removals/")
                || p.starts_with(".rdkms-installs/")
                || p.starts_with(".rdkms-depmod-pending/")
                || p.starts_with(".rdkms-initramfs-pending/")
        })
        .collect();
    Outcome {
        status: sb.status(),
        files,
        leftovers,
    }
}

/// `rdkms plan` says there is nothing left to do.
pub fn converged(sb: &Sandbox) -> bool {
    let out = sb.rdkms(["plan"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout) == "Nothing to do.\n"
}

/// Prints one of the suite's figures and keeps it in `target/tmp/reliability-figures/TEST.txt`
/// (the test harness hides stdout; `.ci/run` prints these files after the tests).
pub fn figure(test: &str, line: &str) {
    println!("{line}");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reliability-figures");
    let _ = fs::create_dir_all(&dir);
    let _ = fs::write(dir.join(format!("{test}.txt")), format!("{line}\n"));
}
