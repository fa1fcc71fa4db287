//! Concurrent rebuilds for a new kernel: independent modules build at the same time under one
//! make jobserver that never lets more than `-j` jobs run in total, a module with BUILD_DEPENDS
//! waits until its dependency is installed, and the result equals a one-at-a-time run.
//! Fast tier: a fake kbuild whose jobs count themselves in a shared file under flock; real tier:
//! real `*-dkms` packages against the real headers, timed.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{skip_unless, Sandbox};

const K: &str = "6.1.0-7-amd64";

/// A fake kbuild: every `modules` run starts three jobs (`j1 j2 j3`, which make may run in
/// parallel); each job counts itself into `STATE/running` under flock and appends the count to
/// `STATE/peaks`. Start and end of each build, and whether the `.ko` of `a` was installed at
/// the start, go to `STATE/times`.
const MAKEFILE: &str = r#"STATE := @STATE@
OBJS := $(shell sed -n 's/^obj-m[[:space:]]*[:+]*=//p' $(M)/Makefile)
NAME := $(basename $(firstword $(OBJS)))
.PHONY: default modules start j1 j2 j3
default modules: j1 j2 j3
	@cd "$(M)" && for o in $(OBJS); do n=$${o%.o}; printf 'FAKE-KO\nname=%s\nvermagic=%s\n' $$n $(KERNELRELEASE) > $$n.ko; done
	@echo "end $(NAME) $$(date +%s.%N)" >> $(STATE)/times
start:
	@a=no; [ -f $(CURDIR)/../updates/dkms/a.ko ] && a=yes; echo "start $(NAME) $$(date +%s.%N) $$a" >> $(STATE)/times
j1 j2 j3: start
	@flock $(STATE)/lock sh -c 'n=$$(($$(cat $(STATE)/running) + 1)); echo $$n > $(STATE)/running; echo $$n >> $(STATE)/peaks'
	@sleep 0.4
	@flock $(STATE)/lock sh -c 'echo $$(($$(cat $(STATE)/running) - 1)) > $(STATE)/running'
"#;

/// A sandbox with kernel K (image, modules dir, the counting kbuild), a recording depmod and
/// modules `a`, `b`, `c` (independent) and `d` (BUILD_DEPENDS on `a`), all AUTOINSTALL.
fn sandbox() -> Sandbox {
    let mut sb = Sandbox::new();
    sb.record_depmod();
    fs::create_dir_all(sb.root().join("etc/dkms")).unwrap();
    let build = sb
        .kernel_image(K)
        .fake_kernel(K)
        .modules_dir(K)
        .join("build");
    let state = sb.root().join("state");
    fs::create_dir_all(&state).unwrap();
    fs::write(state.join("running"), "0\n").unwrap();
    fs::write(
        build.join("Makefile"),
        MAKEFILE.replace("@STATE@", &state.display().to_string()),
    )
    .unwrap();
    for (name, extra) in [
        ("a", ""),
        ("b", ""),
        ("c", ""),
        ("d", "BUILD_DEPENDS=\"a\""),
    ] {
        let mut src = sb.source(name, "1");
        if !extra.is_empty() {
            src = src.conf(extra);
        }
        src.create();
        sb.rdkms(["add", &format!("{name}/1"), "-q"])
            .assert()
            .success();
    }
    sb
}

/// One build as the fake kbuild logged it.
#[derive(Debug)]
struct Span {
    start: f64,
    end: f64,
    /// `a.ko` was installed when the build started.
    saw_a: bool,
}

fn spans(sb: &Sandbox) -> std::collections::BTreeMap<String, Span> {
    let text = fs::read_to_string(sb.root().join("state/times")).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let t: f64 = f[2].parse().unwrap();
        let span = out.entry(f[1].to_string()).or_insert(Span {
            start: 0.0,
            end: 0.0,
            saw_a: false,
        });
        match f[0] {
            "start" => {
                span.start = t;
                span.saw_a = f[3] == "yes";
            }
            _ => span.end = t,
        }
    }
    out
}

fn peaks(sb: &Sandbox) -> Vec<u32> {
    fs::read_to_string(sb.root().join("state/peaks"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

/// Every path under `dir` with each file's content, except logs (they hold times).
fn state(sb: &Sandbox, dir: &Path) -> Vec<(String, String)> {
    sb.listing(dir)
        .into_iter()
        .filter(|p| !p.ends_with("make.log"))
        .map(|p| {
            let content = fs::read_to_string(dir.join(&p)).unwrap_or_default();
            (p, content)
        })
        .collect()
}

#[test]
fn independent_modules_overlap_under_one_job_limit_and_dependents_wait() {
    let sb = sandbox();
    let out = sb
        .rdkms(["kernel_postinst", "-k", K, "-j", "3"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("building 3 modules concurrently, 3 make jobs in all"),
        "{stderr}"
    );

    let s = spans(&sb);
    assert_eq!(s.len(), 4, "{s:?}");
    let (a, b, c, d) = (&s["a"], &s["b"], &s["c"], &s["d"]);
    let overlap = |x: &Span, y: &Span| x.start < y.end && y.start < x.end;
    assert!(
        overlap(a, b) || overlap(a, c) || overlap(b, c),
        "independent builds ran one after another: {s:?}"
    );
    assert!(
        d.start > a.end,
        "d started before its dependency a ended: {s:?}"
    );
    assert!(d.saw_a, "d started before a.ko was installed: {s:?}");

    let p = peaks(&sb);
    let max = p.iter().copied().max().unwrap();
    assert!(max <= 3, "more than 3 jobs ran at once: {p:?}");
    assert_eq!(max, 3, "the jobserver's 3 jobs were never all used: {p:?}");
    assert_eq!(p.len(), 12, "every build ran its three jobs: {p:?}");

    for m in ["a", "b", "c"] {
        let log = fs::read_to_string(sb.built(m, "1", K).join("log/make.log")).unwrap();
        assert!(log.contains(&format!("make KERNELRELEASE={K} -C")), "{log}");
        assert!(!log.contains("jobserver unavailable"), "{log}");
    }
    assert_eq!(sb.depmod_calls().len(), 1, "{:?}", sb.depmod_calls());
    assert!(sb
        .listing(&sb.tree())
        .iter()
        .all(|p| !p.contains(".rdkms-build")));
}

#[test]
fn concurrent_run_leaves_the_same_state_as_a_sequential_one() {
    let parallel = sandbox();
    parallel
        .rdkms(["kernel_postinst", "-k", K, "-j", "2", "-q"])
        .assert()
        .success();
    // -j 0 (unlimited make jobs) builds one module after another, as before.
    let sequential = sandbox();
    sequential
        .rdkms(["kernel_postinst", "-k", K, "-j", "0", "-q"])
        .assert()
        .success();
    let seq = spans(&sequential);
    let mut ordered: Vec<&Span> = seq.values().collect();
    ordered.sort_by(|x, y| x.start.total_cmp(&y.start));
    assert!(ordered.windows(2).all(|w| w[0].end <= w[1].start));

    assert_eq!(
        state(&parallel, &parallel.tree()),
        state(&sequential, &sequential.tree())
    );
    // The kernel's own build dir holds the sandbox's path; the rest must match.
    let installed = |sb: &Sandbox| -> Vec<(String, String)> {
        state(sb, &sb.modules_dir(K))
            .into_iter()
            .filter(|(p, _)| !p.starts_with("build"))
            .collect()
    };
    assert_eq!(installed(&parallel), installed(&sequential));
    assert!(installed(&parallel)
        .iter()
        .any(|(p, _)| p == "updates/dkms/d.ko"));
    let depmods = |sb: &Sandbox| -> Vec<String> {
        let root = sb.root().display().to_string();
        sb.depmod_calls()
            .iter()
            .map(|c| c.replace(&root, "ROOT"))
            .collect()
    };
    assert_eq!(depmods(&parallel), depmods(&sequential));
    assert_eq!(depmods(&parallel).len(), 1);
    assert!(peaks(&parallel).iter().all(|&n| n <= 2));
}

#[test]
fn a_failing_build_fails_alone_and_its_dependent_with_it() {
    let sb = sandbox();
    fs::write(
        sb.root().join("usr/src/a-1/Makefile"),
        "obj-m += missing-x.o\n",
    )
    .unwrap();
    let out = sb
        .rdkms(["kernel_postinst", "-k", K, "-j", "2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let installed = sb.modules_dir(K).join("updates/dkms");
    assert!(!installed.join("a.ko").exists());
    assert!(installed.join("b.ko").exists(), "{stderr}");
    assert!(installed.join("c.ko").exists(), "{stderr}");
    assert!(!installed.join("d.ko").exists(), "{stderr}");
    assert!(stderr.contains("dependency a failed"), "{stderr}");
}

/// Real packages of the corpus (directory, name, version) and `examples/hello-dkms`.
const REAL: [(&str, &str, &str); 6] = [
    (
        "tests/corpus/work/src/acpi-call-1.2.2",
        "acpi-call",
        "1.2.2",
    ),
    (
        "tests/corpus/work/src/v4l2loopback-0.12.7",
        "v4l2loopback",
        "0.12.7",
    ),
    ("tests/corpus/work/src/vpoll-0.1", "vpoll", "0.1"),
    ("tests/corpus/work/src/tp_smapi-0.43", "tp_smapi", "0.43"),
    (
        "tests/corpus/work/src/gost-crypto-0.3.4",
        "gost-crypto",
        "0.3.4",
    ),
    ("examples/hello-dkms", "hello", "1.0"),
];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A root with the real kernel's headers and modules dir and the real packages added.
fn real_root(kernel: &str) -> Sandbox {
    let sb = Sandbox::new();
    sb.real_headers(kernel).kernel_image(kernel);
    for (dir, name, version) in REAL {
        let dest = sb.root().join(format!("usr/src/{name}-{version}"));
        let copied = Command::new("cp")
            .arg("-a")
            .arg(repo(dir))
            .arg(&dest)
            .status()
            .unwrap();
        assert!(copied.success());
        sb.rdkms(["add", &format!("{name}/{version}"), "-q"])
            .assert()
            .success();
    }
    sb
}

/// CPU seconds used by the waited-for children of this process (utime + stime).
fn children_cpu() -> f64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 16 and 17 of stat(5) (cutime, cstime), counted from field 3 here.
    let ticks: f64 = f[13].parse::<f64>().unwrap() + f[14].parse::<f64>().unwrap();
    ticks / 100.0
}

#[test]
fn real_modules_rebuild_concurrently_for_a_new_kernel() {
    if skip_unless(nix::unistd::geteuid().is_root(), "the real tier needs root") {
        return;
    }
    let kernel = common::headers_kernel();
    if skip_unless(
        kernel.is_some(),
        "no kernel headers in /usr/src/linux-headers-* (install linux-headers-amd64)",
    ) {
        return;
    }
    let kernel = kernel.unwrap();
    let corpus = REAL
        .iter()
        .all(|(d, _, _)| repo(d).join("dkms.conf").is_file());
    if skip_unless(corpus, "the corpus is missing (run tests/fetch-corpus.sh)") {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    // One module at a time, as before: each `rdkms build` with make -j<cores>.
    let one_by_one = real_root(&kernel);
    let mut individual = Vec::new();
    for (_, name, version) in REAL {
        let start = Instant::now();
        one_by_one
            .rdkms(["build", &format!("{name}/{version}"), "-k", &kernel, "-q"])
            .assert()
            .success();
        individual.push((name, start.elapsed().as_secs_f64()));
    }
    let sum: f64 = individual.iter().map(|(_, t)| t).sum();
    let longest = individual.iter().map(|(_, t)| *t).fold(0.0, f64::max);

    let sb = real_root(&kernel);
    let cpu_before = children_cpu();
    let start = Instant::now();
    let out = sb
        .rdkms(["kernel_postinst", "-k", &kernel])
        .output()
        .unwrap();
    let wall = start.elapsed().as_secs_f64();
    let cpu = children_cpu() - cpu_before;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("building 6 modules concurrently"),
        "{stderr}"
    );
    for (_, name, version) in REAL {
        let built = sb.tree().join(name).join(version).join(&kernel);
        assert!(built.is_dir(), "{name} was not built: {stderr}");
    }
    let installed = sb.listing(&sb.modules_dir(&kernel).join("updates/dkms"));
    for m in ["acpi_call", "v4l2loopback", "vpoll", "tp_smapi", "hello"] {
        assert!(
            installed.iter().any(|f| f.starts_with(&format!("{m}.ko"))),
            "{m} not installed: {installed:?}"
        );
    }
    let limit = longest.max(cpu / cores as f64);
    eprintln!("individual builds (one at a time, make -j{cores}): {individual:?}");
    eprintln!(
        "sum {sum:.1}s, longest {longest:.1}s; concurrent kernel_postinst {wall:.1}s \
         (CPU {cpu:.1}s over {cores} cores; physical limit {limit:.1}s); \
         wall/sum {:.2}, wall/limit {:.2}",
        wall / sum,
        wall / limit
    );
}
