//! DKMS 3.2.2's handling of bad and borderline dkms.conf files by `add`, `build` and `install`
//! (its `read_conf` and `read_conf_strict`), through the real binary run as `dkms` (fast tier:
//! fake kbuild, depmod stub). `tests/dkms-suite` checks the same with DKMS's own `malformed`
//! tests. Run: `cargo test --test conf_strict`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{arch, Sandbox};

const K: &str = "6.1.0-9-amd64";

/// Runs `dkms --root ROOT ARGS` (a `dkms` link to the rdkms binary, the depmod stub in PATH).
fn dkms(sb: &Sandbox, args: &[&str]) -> Output {
    sb.dkms_std(args).output().unwrap()
}

/// Exit status and everything printed (rdkms prints progress and errors on stderr only).
fn run(out: Output) -> (Option<i32>, String) {
    assert!(out.stdout.is_empty(), "stdout: {:?}", out.stdout);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A sandbox with a fake kernel and the depmod stub.
fn sandbox() -> Sandbox {
    let mut sb = Sandbox::new();
    sb.record_depmod();
    sb.fake_kernel(K);
    sb
}

/// A source directory outside the source tree holding `conf` as dkms.conf (and a Makefile
/// building `modules`).
fn source(sb: &Sandbox, dir: &str, conf: &str, modules: &[&str]) -> PathBuf {
    let d = sb.root().join("vendor").join(dir);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("dkms.conf"), conf).unwrap();
    let make: String = modules
        .iter()
        .map(|m| format!("obj-m += {m}.o\n"))
        .collect();
    fs::write(d.join("Makefile"), make).unwrap();
    d
}

fn bad_conf(file: &Path) -> String {
    format!(
        "\nError! Bad conf file.\nFile: {} does not represent a valid dkms.conf file.\n",
        file.display()
    )
}

#[test]
fn every_problem_is_listed_in_dkms_words_before_bad_conf_file() {
    let sb = sandbox();
    let src = source(
        &sb,
        "invalid",
        "PACKAGE_NAME=\"m\"\nPACKAGE_VERSION=\"1.0\"\nDEST_MODULE_NAME[0]=\"bar.ko\"\n\
         DEST_MODULE_LOCATION=\"/wrong/path\"\nBUILT_MODULE_NAME[1]=\"bar.o\"\n\
         DEST_MODULE_NAME[1]=\"foo\"\nAUTOINSTALL=\"maybe\"\n",
        &[],
    );
    let (code, err) = run(dkms(&sb, &["add", src.to_str().unwrap()]));
    assert_eq!(code, Some(8), "{err}");
    let want = "dkms.conf: Error! No 'BUILT_MODULE_NAME' directive specified for record #0.\n\
        dkms.conf: Error! 'DEST_MODULE_NAME' directive ends in '.o' or '.ko' in record #0.\n\
        dkms.conf: Error! Directive 'DEST_MODULE_LOCATION' does not begin with\n\
        '/kernel', '/updates', or '/extra' in record #0.\n\
        dkms.conf: Error! 'BUILT_MODULE_NAME' directive ends in '.o' or '.ko' in record #1.\n\
        dkms.conf: Error! No 'DEST_MODULE_LOCATION' directive specified for record #1.\n\
        dkms.conf: Error! Unsupported AUTOINSTALL value 'maybe'\n"
        .to_string()
        + &bad_conf(&src.join("dkms.conf"));
    assert_eq!(err, want);

    let empty = source(&sb, "empty", "", &[]);
    let (code, err) = run(dkms(&sb, &["add", empty.to_str().unwrap()]));
    assert_eq!(code, Some(8), "{err}");
    assert_eq!(
        err,
        "dkms.conf: Error! No 'PACKAGE_NAME' directive specified.\n\
         dkms.conf: Error! No 'PACKAGE_VERSION' directive specified.\n"
            .to_string()
            + &bad_conf(&empty.join("dkms.conf"))
    );

    // As rdkms: DKMS's error, then one hint line per problem (file, directive, fix).
    let out = sb.rdkms(["add", src.to_str().unwrap()]).output().unwrap();
    let (code, err) = run(out);
    assert_eq!(code, Some(8), "{err}");
    let hints: Vec<&str> = err.lines().skip(2).collect();
    assert!(err.starts_with("Error! Bad conf file.\n"), "{err}");
    assert_eq!(hints.len(), 6, "{err}");
    assert!(hints.iter().all(|l| l.contains("Fix:")), "{err}");
    assert!(sb.status().is_empty());
}

#[test]
fn a_module_listed_twice_is_refused_after_its_sources_are_copied() {
    let sb = sandbox();
    let src = source(
        &sb,
        "dup",
        "PACKAGE_NAME=\"dup\"\nPACKAGE_VERSION=\"1.0\"\n\
         BUILT_MODULE_NAME[0]=\"dup\"\nDEST_MODULE_LOCATION[0]=\"/kernel/extra\"\n\
         BUILT_MODULE_NAME[1]=\"dup\"\nDEST_MODULE_LOCATION[1]=\"/kernel/extra\"\n",
        &["dup"],
    );
    let (code, err) = run(dkms(&sb, &["add", src.to_str().unwrap()]));
    assert_eq!(code, Some(8), "{err}");
    // DKMS copies the sources to the source tree first, validates that copy, and leaves it.
    let copy = sb.root().join("usr/src/dup-1.0");
    assert_eq!(
        err,
        "dkms.conf: Error! Duplicate module 'dup' in 'BUILT_MODULE_NAME[1]'.\n\
         dkms.conf: Error! Duplicate module 'dup' in 'DEST_MODULE_NAME[1]'.\n"
            .to_string()
            + &bad_conf(&copy.join("dkms.conf"))
    );
    assert!(copy.join("dkms.conf").is_file());
    assert!(sb.status().is_empty());
    assert!(!sb.tree().join("dup").exists());
}

#[test]
fn zero_modules_warn_at_each_add_build_and_install() {
    let sb = sandbox();
    sb.source("zero", "1.0").modules(&[]).create();
    let warning = "dkms.conf: Warning! Zero modules specified.\n";
    let (code, err) = run(dkms(&sb, &["add", "zero/1.0", "-k", K]));
    assert_eq!(code, Some(0), "{err}");
    assert!(err.starts_with(warning), "{err}");
    assert_eq!(err.matches(warning).count(), 1, "{err}");
    dkms(&sb, &["remove", "zero/1.0", "--all"]);

    // install adds, builds and installs: one warning each, before each step's own lines.
    let (code, err) = run(dkms(&sb, &["install", "zero/1.0", "-k", K]));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(err.matches(warning).count(), 3, "{err}");
    assert!(err.starts_with(warning), "{err}");
    let build = err.find("Building module(s)").expect(&err);
    let depmod = err.find("Running depmod").expect(&err);
    let third = err.rfind(warning).unwrap();
    assert!(build < third && third < depmod, "{err}");
    assert_eq!(
        sb.status(),
        format!("zero/1.0, {K}, {}: installed\n", arch())
    );

    // Uninstall and remove read the conf without the strict checks: no warning.
    let (code, err) = run(dkms(&sb, &["remove", "zero/1.0", "--all"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("Warning!"), "{err}");
}

#[test]
fn deprecated_directives_are_named_once_per_command_with_the_file_read() {
    let sb = sandbox();
    sb.source("old", "1.0")
        .conf("REMAKE_INITRD=\"yes\"")
        .conf("CLEAN=\"true\"")
        .conf("MODULES_CONF[0]=\"options old x=1\"")
        .create();
    let (code, err) = run(dkms(&sb, &["add", "old/1.0", "-k", K]));
    assert_eq!(code, Some(0), "{err}");
    let src_conf = sb.root().join("usr/src/old-1.0/dkms.conf");
    assert_eq!(
        err.lines().take(2).collect::<Vec<_>>(),
        [
            format!("Deprecated feature: REMAKE_INITRD ({})", src_conf.display()),
            format!("Deprecated feature: MODULES_CONF ({})", src_conf.display()),
        ]
    );

    // install builds first: the notices come once, naming the conf in the dkms tree.
    let (code, err) = run(dkms(&sb, &["install", "old/1.0", "-k", K]));
    assert_eq!(code, Some(0), "{err}");
    let tree_conf = sb.tree().join("old/1.0/source/dkms.conf");
    assert!(
        err.starts_with(&format!(
            "Deprecated feature: REMAKE_INITRD ({})\nDeprecated feature: MODULES_CONF ({})\n",
            tree_conf.display(),
            tree_conf.display()
        )),
        "{err}"
    );
    assert_eq!(err.matches("Deprecated feature").count(), 2, "{err}");

    let (code, err) = run(dkms(&sb, &["remove", "old/1.0", "--all"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("Deprecated"), "{err}");

    // rdkms itself still honours REMAKE_INITRD: as rdkms only the ignored directives are named.
    let (code, err) = run(sb.rdkms(["add", "old/1.0", "-k", K]).output().unwrap());
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        err.lines().next(),
        Some(format!("Deprecated feature: MODULES_CONF ({})", src_conf.display()).as_str())
    );
    assert_eq!(err.matches("Deprecated").count(), 1, "{err}");
}

#[test]
fn an_override_file_is_named_with_what_is_set_once_it_is_read() {
    let sb = sandbox();
    sb.source("ovr", "1.0")
        .conf("CLEAN=\"make clean\"")
        .create();
    let etc = sb.root().join("etc/dkms");
    fs::create_dir_all(&etc).unwrap();
    fs::write(etc.join("ovr.conf"), "REMAKE_INITRD=yes\n").unwrap();
    let (code, err) = run(dkms(&sb, &["add", "ovr/1.0", "-k", K]));
    assert_eq!(code, Some(0), "{err}");
    let conf = sb.root().join("usr/src/ovr-1.0/dkms.conf");
    let over = etc.join("ovr.conf");
    // DKMS checks after each file it sources, with what every file so far has set.
    assert_eq!(
        err.lines().take(3).collect::<Vec<_>>(),
        [
            format!("Deprecated feature: CLEAN ({})", conf.display()),
            format!("Deprecated feature: CLEAN ({})", over.display()),
            format!("Deprecated feature: REMAKE_INITRD ({})", over.display()),
        ]
    );
}

#[test]
fn each_kernel_of_a_build_lists_the_problems_of_a_conf_gone_bad() {
    let sb = sandbox();
    let k2 = "6.1.0-10-amd64";
    sb.fake_kernel(k2);
    let src = sb.source("gone", "1.0").create();
    dkms(&sb, &["add", "gone/1.0"]);
    let conf = src.join("dkms.conf");
    let text = fs::read_to_string(&conf).unwrap();
    fs::write(
        &conf,
        text + "BUILT_MODULE_NAME[1]=\"gone\"\nDEST_MODULE_LOCATION[1]=\"/updates/dkms\"\n",
    )
    .unwrap();
    let (code, err) = run(dkms(&sb, &["build", "gone/1.0", "-k", K, "-k", k2]));
    assert_eq!(code, Some(8), "{err}");
    let tree_conf = sb.tree().join("gone/1.0/source/dkms.conf");
    let once = "dkms.conf: Error! Duplicate module 'gone' in 'BUILT_MODULE_NAME[1]'.\n\
        dkms.conf: Error! Duplicate module 'gone' in 'DEST_MODULE_NAME[1]'.\n"
        .to_string()
        + &bad_conf(&tree_conf);
    assert_eq!(err, once.repeat(2));
}
