//! Concurrent builds start longest first: a build records its time in its make.log, and the
//! next kernel's builds take their job tokens in the order of those times (before any history,
//! in the order of their source sizes). Fast tier: a fake kbuild that burns a module's given
//! amount of CPU and logs when each build starts; real tier: a real module's make.log.

mod common;

use std::fs;

use common::{real_tier, repo, Sandbox};

const K1: &str = "6.1.0-7-amd64";
const K2: &str = "6.1.0-8-amd64";

/// A fake kbuild: logs `start NAME` to `STATE/starts`, hashes as many MB of zeros as the
/// module's `work` file says (CPU time that a clock on the wall does not decide), fails if the
/// module has a `fail` file, else writes the .ko.
const MAKEFILE: &str = r#"STATE := @STATE@
NAME := $(basename $(firstword $(shell sed -n 's/^obj-m[[:space:]]*[:+]*=//p' $(M)/Makefile)))
.PHONY: default modules
default modules:
	@echo "start $(NAME)" >> $(STATE)/starts
	@head -c $$(($$(cat $(M)/work) * 1000000)) /dev/zero | sha256sum > /dev/null
	@test ! -f $(M)/fail
	@cd "$(M)" && printf 'FAKE-KO\nname=%s\nvermagic=%s\n' $(NAME) $(KERNELRELEASE) > $(NAME).ko
"#;

/// Modules `big` (the largest C source, little work), `mid` (a small C file, more work) and
/// `heavy` (no C file, the most work), registered, with kernels K1 and K2 ready.
fn sandbox() -> Sandbox {
    let mut sb = Sandbox::new();
    sb.record_depmod();
    let state = sb.root().join("state");
    fs::create_dir_all(&state).unwrap();
    for k in [K1, K2] {
        let build = sb
            .kernel_image(k)
            .fake_kernel(k)
            .modules_dir(k)
            .join("build");
        fs::write(
            build.join("Makefile"),
            MAKEFILE.replace("@STATE@", &state.display().to_string()),
        )
        .unwrap();
    }
    let big_c = format!("/*{}*/\n", "x".repeat(300_000));
    for (name, work, c_file) in [
        ("big", "2", Some(big_c.as_str())),
        ("mid", "50", Some("int x;\n")),
        ("heavy", "200", None),
    ] {
        let mut src = sb.source(name, "1").file("work", work);
        if let Some(c) = c_file {
            src = src.file(&format!("{name}.c"), c);
        }
        src.create();
        sb.rdkms(["add", &format!("{name}/1"), "-q"])
            .assert()
            .success();
    }
    sb
}

/// Modules in the order their builds started (and forgets them, for the next run).
fn take_starts(sb: &Sandbox) -> Vec<String> {
    let file = sb.root().join("state/starts");
    let text = fs::read_to_string(&file).unwrap();
    fs::remove_file(&file).unwrap();
    text.lines()
        .map(|l| l.strip_prefix("start ").unwrap().to_string())
        .collect()
}

/// The CPU seconds of the build time line in a make.log.
fn recorded_cpu(log: &str) -> f64 {
    let line = log
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("# rdkms build time: "))
        .unwrap_or_else(|| panic!("no build time in make.log:\n{log}"));
    let cpu = line.split(", ").nth(1).unwrap();
    cpu.strip_suffix(" s cpu").unwrap().parse().unwrap()
}

#[test]
fn builds_record_their_time_and_the_next_kernel_starts_the_longest_first() {
    let sb = sandbox();
    // One job token: each build starts only after the previous one ended.
    for k in [K1, K2] {
        let out = sb
            .rdkms(["autoinstall", "-k", k, "-j", "1"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains("building 3 modules concurrently"),
            "{stderr}"
        );
        if k == K1 {
            // No history yet: the largest C sources first.
            assert_eq!(take_starts(&sb), ["big", "mid", "heavy"]);
        }
    }
    // With history: the most CPU first, whatever the sources' sizes.
    assert_eq!(take_starts(&sb), ["heavy", "mid", "big"]);

    let cpu = |m: &str, k: &str| {
        recorded_cpu(&fs::read_to_string(sb.built(m, "1", k).join("log/make.log")).unwrap())
    };
    for k in [K1, K2] {
        assert!(cpu("heavy", k) > cpu("mid", k), "heavy vs mid on {k}");
        assert!(cpu("mid", k) > cpu("big", k), "mid vs big on {k}");
    }
}

#[test]
fn a_failed_build_records_no_time() {
    let sb = sandbox();
    fs::write(sb.root().join("usr/src/mid-1/fail"), "").unwrap();
    let out = sb
        .rdkms(["autoinstall", "-k", K1, "-j", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let failed = fs::read_to_string(sb.tree().join("mid/1/build/make.log")).unwrap();
    assert!(!failed.contains("# rdkms build time:"), "{failed}");
    assert!(!sb.built("mid", "1", K1).exists());
    let ok = fs::read_to_string(sb.built("heavy", "1", K1).join("log/make.log")).unwrap();
    assert!(recorded_cpu(&ok) > 0.0, "{ok}");
}

#[test]
fn a_real_build_records_its_cpu_time() {
    let Some(kernel) = real_tier(&["make", "gcc"]) else {
        return;
    };
    let sb = Sandbox::new();
    common::real_kernel_dir(sb.root(), &kernel);
    common::copy_dir(
        &repo("examples/hello-dkms"),
        &sb.root().join("usr/src/hello-1.0"),
    );
    sb.rdkms(["add", "hello/1.0", "-q"]).assert().success();
    sb.rdkms(["build", "hello/1.0", "-k", &kernel])
        .assert()
        .success();
    let log = fs::read_to_string(sb.built("hello", "1.0", &kernel).join("log/make.log")).unwrap();
    // Compiling against real headers takes a measurable fraction of a second of CPU.
    assert!(recorded_cpu(&log) > 0.05, "{log}");
}
