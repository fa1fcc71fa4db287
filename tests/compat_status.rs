//! Compatibility with Debian's dkms 3.0.10: trees written by the real `dkms` (add, build,
//! install, uninstall against a fake kernel build tree, then damaged in the ways status reports)
//! must read identically with `rdkms status`, byte for byte, for every query form; and a tree
//! written by rdkms must read identically with `dkms status`. Also times both, side by side.

mod common;

use std::time::{Duration, Instant};

use common::fake_tree::{need_debian_dkms, stderr, stdout};
use common::Sandbox;

const K1: &str = "9.8.0-fake";
const K2: &str = "9.10.1-fake";
/// A kernel dir name DKMS's status glob does not see without `-k`.
const KC: &str = "fake-custom";

#[derive(Clone, Copy)]
enum Op {
    Add,
    Build(&'static str),
    BuildArch(&'static str, &'static str),
    Install(&'static str),
}

struct Spec {
    name: &'static str,
    version: &'static str,
    modules: &'static [&'static str],
    location: &'static str,
    ops: &'static [Op],
}

const fn spec(
    name: &'static str,
    version: &'static str,
    modules: &'static [&'static str],
    ops: &'static [Op],
) -> Spec {
    Spec {
        name,
        version,
        modules,
        location: "/updates/dkms",
        ops,
    }
}

use Op::*;

/// 21 module names, 23 versions: names that sort differently by case, digits and
/// punctuation; several versions of one module; multi-module packages; two kernels plus one
/// the status glob hides; a second arch.
const SPECS: &[Spec] = &[
    spec("alpha", "1.0", &["alpha"], &[Install(K1), Install(K2)]),
    spec("Alpha", "1.0", &["alpha_up"], &[Install(K1)]),
    spec("alpha-ext", "0.9", &["alpha_ext"], &[Build(K1)]),
    spec("alpha_ext", "2", &["alpha_ext2"], &[Add]),
    spec("alpha2", "1", &["alpha2"], &[Install(K2), Build(K1)]),
    spec("beta", "1.0", &["beta"], &[Install(K1)]),
    spec("beta", "1.10", &["beta"], &[Build(K1), Build(K2)]),
    spec("beta", "1.9", &["beta"], &[Install(K2)]),
    spec("b3ta", "3", &["b3ta"], &[Add]),
    spec(
        "gamma",
        "2024.01",
        &["gamma_core", "gamma_net", "gamma_usb"],
        &[Install(K1), Install(K2)],
    ),
    spec("delta", "1", &["delta"], &[Build(K2)]),
    spec("epsilon", "1", &["epsilon"], &[Install(K1)]),
    spec("zeta", "1", &["zeta"], &[Install(K2)]),
    spec("Zeta", "1", &["zeta_up"], &[Build(K1)]),
    spec("eta", "1", &["eta_a", "eta_b"], &[Install(K1), Build(K2)]),
    spec("theta", "1", &["theta"], &[Install(K1)]),
    spec("iota", "1", &["iota"], &[Add]),
    spec("kappa", "1", &["kappa"], &[Build(KC), Build(K1)]),
    spec(
        "lambda",
        "1",
        &["lambda"],
        &[BuildArch(K1, "aarch64"), Install(K1)],
    ),
    spec("9lives", "1", &["ninelives"], &[Install(K2)]),
    Spec {
        name: "mu",
        version: "1",
        modules: &["mu"],
        location: "/kernel/extra",
        ops: &[Install(K1)],
    },
    spec("nu", "1", &["nu"], &[Install(K1), Install(K2)]),
    spec("omicron", "1", &["omicron"], &[Install(K1), Install(K2)]),
];

/// Builds the tree with Debian's dkms (two workers: dkms keeps modules apart, so different
/// modules may be processed at once), then damages it as status must report.
fn dkms_tree() -> Sandbox {
    let s = Sandbox::with_trees();
    for k in [K1, K2] {
        s.inst_kernel(k);
    }
    for sp in SPECS {
        if sp.name == "nu" {
            // a dkms.conf only a shell can read: rdkms falls back to the built files
            let conf = "PACKAGE_NAME=nu\nPACKAGE_VERSION=1\nn=$(echo nu)\nBUILT_MODULE_NAME[0]=$n\nDEST_MODULE_LOCATION[0]=/updates/dkms\nSTRIP[0]=no\n";
            s.source_with_conf(sp.name, sp.version, conf, sp.modules);
        } else {
            s.kbuild_source(sp.name, sp.version, sp.modules, sp.location);
        }
    }
    let t = Instant::now();
    std::thread::scope(|scope| {
        for half in [0, 1] {
            let s = &s;
            scope.spawn(move || {
                for sp in SPECS.iter().skip(half).step_by(2) {
                    let mv = format!("{}/{}", sp.name, sp.version);
                    for op in sp.ops {
                        match *op {
                            Add => s.dkms_ok(&["add", &mv]),
                            Build(k) => s.dkms_ok(&["build", &mv, "-k", k]),
                            BuildArch(k, a) => s.dkms_ok(&["build", &mv, "-k", k, "-a", a]),
                            Install(k) => s.dkms_ok(&["install", &mv, "-k", k]),
                        }
                    }
                }
            });
        }
    });
    println!(
        "Debian dkms wrote the tree in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let inst = |k: &str, f: &str| s.inst().join(k).join("updates/dkms").join(f);
    std::fs::write(inst(K1, "epsilon.ko"), "changed after install\n").unwrap();
    std::fs::remove_file(inst(K2, "zeta.ko")).unwrap();
    std::fs::remove_file(
        s.tree()
            .join("eta/1")
            .join(K2)
            .join("x86_64/module/eta_b.ko"),
    )
    .unwrap();
    std::fs::create_dir_all(
        s.tree()
            .join("theta/original_module")
            .join(K1)
            .join("x86_64"),
    )
    .unwrap();
    std::fs::remove_dir_all(s.src().join("iota-1")).unwrap();
    s.dkms_ok(&["uninstall", "omicron/1", "-k", K2]);
    s
}

/// Every query form scripts use.
fn queries() -> Vec<Vec<String>> {
    let q = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        q(&[]),
        q(&["-k", K1]),
        q(&["-k", K2]),
        q(&["-k", KC]),
        q(&["-k", K1, "-k", K2]),
        q(&["-a", "aarch64"]),
        q(&["-k", K1, "-a", "x86_64"]),
        q(&["-k", &format!("{K1}/aarch64")]),
        q(&["beta"]),
        q(&["beta/1.9"]),
        q(&["-m", "gamma", "-v", "2024.01"]),
        q(&["eta", "-k", K2]),
        q(&["mu/1"]),
        q(&["nosuch"]),
        q(&["-k", "0.0.0-none"]),
        q(&["a*"]),
        q(&["-k", "9.1*"]),
    ]
}

fn assert_same(s: &Sandbox, query: &[String]) -> String {
    let args: Vec<&str> = std::iter::once("status")
        .chain(query.iter().map(String::as_str))
        .collect();
    let d = s.dkms(&args);
    let r = s.rdkms_as_dkms(&args);
    assert_eq!(d.status.code(), Some(0), "dkms {args:?}: {}", stderr(&d));
    assert_eq!(r.status.code(), Some(0), "rdkms {args:?}: {}", stderr(&r));
    let damaged = !s.src().join("iota-1").exists();
    let mut want = in_dkms_3_2_2_words(&stdout(&d), damaged);
    let got = stdout(&r);
    if got.contains(ETA_INCOMPLETE) {
        // 3.0.10 printed "added" when eta had no other build in the selection.
        want = want
            .lines()
            .filter(|l| *l != "eta/1: added")
            .map(|l| format!("{l}\n"))
            .collect();
    }
    assert_eq!(
        got.replace(ETA_INCOMPLETE, ""),
        want,
        "rdkms status differs from dkms status for {args:?}"
    );
    stdout(&d)
}

/// The build `dkms_tree` deletes a module from: 3.0.10 does not call it built, 3.2.2 does,
/// with a suffix (so rdkms lists it where 3.0.10 lists nothing).
const ETA_INCOMPLETE: &str =
    "eta/1, 9.10.1-fake, x86_64: built (Built modules are missing in the kernel modules folder)\n";

/// dkms 3.0.10's status lines with DKMS 3.2.2's suffixes, which rdkms prints: other words, and
/// only the first module's problem of a build is named (the suffixes end the line); a version
/// whose sources were deleted (`iota/1`, when `iota_gone`) is "broken".
fn in_dkms_3_2_2_words(text: &str, iota_gone: bool) -> String {
    const PER_MODULE: [(&str, &str); 2] = [
        (
            " (WARNING! Missing some built modules!)",
            " (Built modules are missing in the kernel modules folder)",
        ),
        (
            " (WARNING! Diff between built and installed module!)",
            " (Differences between built and installed modules)",
        ),
    ];
    let mut out = String::new();
    for line in text.lines() {
        let line = line.replace(" (original_module exists)", " (Original modules exist)");
        let line = if iota_gone && line == "iota/1: added" {
            "iota/1: broken".to_string()
        } else {
            line
        };
        let first = PER_MODULE
            .iter()
            .filter_map(|(old, new)| line.find(old).map(|i| (i, *new)))
            .min();
        match first {
            Some((i, new)) => out.push_str(&format!("{}{new}", &line[..i])),
            None => out.push_str(&line),
        }
        out.push('\n');
    }
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn tree_written_by_dkms_reads_identically_and_faster() {
    if !need_debian_dkms() {
        return;
    }
    let s = dkms_tree();
    let full = assert_same(&s, &[]);
    // the tree really has the states this test is about
    for needle in [
        ": added\n",
        ": built\n",
        ": installed\n",
        "installed (WARNING! Diff between built and installed module!)\n",
        "installed (original_module exists)\n",
        "Alpha/1.0, ",
        "lambda/1, 9.8.0-fake, aarch64: built",
    ] {
        assert!(full.contains(needle), "no {needle:?} in:\n{full}");
    }
    assert!(full.lines().count() >= 30, "{full}");
    assert!(stdout(&s.rdkms_as_dkms(&["status"])).contains(ETA_INCOMPLETE));
    assert!(!full.contains(KC));
    for q in queries() {
        assert_same(&s, &q);
    }
    println!("dkms status ({} lines):\n{full}", full.lines().count());

    let (mut td, mut tr) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let t = Instant::now();
        s.dkms(&["status"]);
        td.push(t.elapsed());
        let t = Instant::now();
        s.rdkms_as_dkms(&["status"]);
        tr.push(t.elapsed());
    }
    let (d, r) = (median(td), median(tr));
    println!(
        "status of {} module versions, 2 kernels, {} lines (median of 3): dkms {:.3} s, rdkms {:.4} s ({:.0}x)",
        SPECS.len(),
        full.lines().count(),
        d.as_secs_f64(),
        r.as_secs_f64(),
        d.as_secs_f64() / r.as_secs_f64()
    );
    assert!(
        r < d,
        "rdkms status ({r:?}) should beat dkms status ({d:?})"
    );
}

#[test]
fn tree_written_by_rdkms_add_reads_identically_in_dkms() {
    if !need_debian_dkms() {
        return;
    }
    let s = Sandbox::with_trees();
    s.inst_kernel(K1);
    let names: Vec<String> = (0..22)
        .map(|i| format!("mod{}{i}", ["A", "a", "_"][i % 3]))
        .collect();
    for n in &names {
        s.kbuild_source(n, "1.0", &[n.as_str()], "/updates/dkms");
        let out = s.rdkms_as_dkms(&["add", &format!("{n}/1.0")]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    // from a directory outside the source tree, copied in under PACKAGE_NAME-PACKAGE_VERSION
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("dkms.conf"),
        common::fake_tree::conf_text("copied", "2.0", &["copied"], "/updates/dkms"),
    )
    .unwrap();
    std::fs::write(outside.path().join("fake-modules"), "copied\n").unwrap();
    let out = s.rdkms_as_dkms(&["add", outside.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let listing = assert_same(&s, &[]);
    assert_eq!(listing.lines().count(), 23, "{listing}");
    assert!(listing.contains("copied/2.0: added\n"));
    // dkms can carry on from what rdkms added
    s.dkms_ok(&["install", "copied/2.0", "-k", K1]);
    s.dkms_ok(&["build", &format!("{}/1.0", names[0]), "-k", K1]);
    let listing = assert_same(&s, &[]);
    assert!(
        listing.contains("copied/2.0, 9.8.0-fake, x86_64: installed\n"),
        "{listing}"
    );
    // and a second add is refused by both
    let d = s.dkms(&["add", "copied/2.0"]);
    let r = s.rdkms_as_dkms(&["add", "copied/2.0"]);
    assert_eq!((d.status.code(), r.status.code()), (Some(3), Some(3)));
}

#[test]
fn tree_built_and_installed_by_rdkms_reads_identically_in_dkms() {
    if !need_debian_dkms() {
        return;
    }
    let s = Sandbox::with_trees();
    for k in [K1, K2] {
        s.inst_kernel(k);
    }
    let ksrc = format!("--kernelsourcedir={}", s.ksrc().display());
    for sp in SPECS.iter().filter(|sp| sp.name != "nu") {
        s.kbuild_source(sp.name, sp.version, sp.modules, sp.location);
        let mv = format!("{}/{}", sp.name, sp.version);
        for op in sp.ops {
            let args: Vec<String> = match *op {
                Add => vec!["add".into(), mv.clone()],
                Build(k) => vec!["build".into(), mv.clone(), "-k".into(), k.into()],
                BuildArch(k, a) => {
                    vec![
                        "build".into(),
                        mv.clone(),
                        "-k".into(),
                        k.into(),
                        "-a".into(),
                        a.into(),
                    ]
                }
                Install(k) => vec!["install".into(), mv.clone(), "-k".into(), k.into()],
            };
            let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
            args.extend([ksrc.as_str(), "--no-depmod"]);
            let out = s.rdkms_as_dkms(&args);
            assert_eq!(
                out.status.code(),
                Some(0),
                "rdkms {args:?}: {}",
                stderr(&out)
            );
        }
    }
    for q in queries() {
        assert_same(&s, &q);
    }
}
