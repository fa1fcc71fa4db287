//! Bad dkms.conf files through the real binary: `rdkms conf show FILE -k KVER` must exit 8
//! with DKMS's "Bad conf file." error and one line per problem naming the file, the directive
//! and the fix (rdkms's hint), and must never hang or let the conf write to rdkms's stdout.

mod conf_support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use conf_support::real_kernel;

const VALID: &str =
    "PACKAGE_NAME=m\nPACKAGE_VERSION=1.0\nBUILT_MODULE_NAME=m\nDEST_MODULE_LOCATION=/extra\n";

struct Sandbox {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    conf: PathBuf,
}

/// A root and a source directory `usr/src/m-1.0/` holding `text` as dkms.conf.
fn sandbox(text: &str) -> Sandbox {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let src = root.join("usr/src/m-1.0");
    std::fs::create_dir_all(&src).unwrap();
    let conf = src.join("dkms.conf");
    std::fs::write(&conf, text).unwrap();
    Sandbox {
        _tmp: tmp,
        root,
        conf,
    }
}

fn show(sb: &Sandbox, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::cargo_bin("rdkms").unwrap();
    cmd.arg("--root")
        .arg(&sb.root)
        .args(["conf", "show"])
        .arg(&sb.conf)
        .args(["-k", &real_kernel()])
        .env_remove("RDKMS_CONF_EVAL")
        .env_remove("RDKMS_CONF_TIMEOUT")
        .timeout(Duration::from_secs(60));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Runs `text` and checks exit 8 and stderr lines (after DKMS's) each holding the file and a
/// fix, one of them every `needles` item; returns that line.
fn rejects(text: &str, needles: &[&str]) -> String {
    rejects_with(text, needles, &[])
}

fn rejects_with(text: &str, needles: &[&str], env: &[(&str, &str)]) -> String {
    let lines = rejected(text, env);
    lines
        .iter()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .unwrap_or_else(|| panic!("no line mentions all of {needles:?}: {lines:?}"))
        .clone()
}

/// Runs `text`, checks exit 8, and returns rdkms's lines after DKMS's error, each checked to
/// name the conf and give a fix.
fn rejected(text: &str, env: &[(&str, &str)]) -> Vec<String> {
    let sb = sandbox(text);
    let out = show(&sb, env);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(8), "{text:?}: stderr {stderr:?}");
    assert!(out.stdout.is_empty(), "{text:?}: stdout {:?}", out.stdout);
    // DKMS's two lines then rdkms's hint naming the problem and the fix, or (for what DKMS
    // does not check, such as paths leaving their directory) rdkms's own one error line.
    let head = format!(
        "Error! Bad conf file.\nFile: {} does not represent a valid dkms.conf file.\n",
        sb.conf.display()
    );
    let rest = stderr
        .strip_prefix(&head)
        .or_else(|| stderr.strip_prefix("Error! "))
        .unwrap_or_else(|| panic!("{text:?}: stderr {stderr:?}"));
    let lines: Vec<String> = rest.lines().map(str::to_string).collect();
    assert!(!lines.is_empty(), "{text:?}: no hint in {stderr:?}");
    for line in &lines {
        assert!(
            line.contains(&sb.conf.display().to_string()),
            "{line} does not name {}",
            sb.conf.display()
        );
        assert!(line.contains("Fix:"), "{line} gives no fix");
    }
    lines
}

/// The directives `text`'s problems are reported for, in order.
fn reported(text: &str) -> Vec<String> {
    rejected(text, &[])
        .iter()
        .map(|l| l.split(": ").nth(1).unwrap().to_string())
        .collect()
}

/// The valid conf with `name`'s line replaced (or added) by `line`.
fn with(line: &str) -> String {
    let name = line.split(['=', '[']).next().unwrap();
    let mut out: Vec<String> = VALID
        .lines()
        .filter(|l| !l.starts_with(&format!("{name}=")))
        .map(String::from)
        .collect();
    out.push(line.to_string());
    out.join("\n") + "\n"
}

fn without(name: &str) -> String {
    VALID
        .lines()
        .filter(|l| !l.starts_with(&format!("{name}=")))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn the_valid_base_is_accepted() {
    let out = show(&sandbox(VALID), &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn missing_package_name() {
    rejects(&without("PACKAGE_NAME"), &["PACKAGE_NAME", "missing"]);
}

#[test]
fn missing_package_version() {
    rejects(&without("PACKAGE_VERSION"), &["PACKAGE_VERSION", "missing"]);
}

#[test]
fn missing_dest_module_location() {
    rejects(
        &without("DEST_MODULE_LOCATION"),
        &["DEST_MODULE_LOCATION[0]"],
    );
}

#[test]
fn dest_module_location_with_a_bad_prefix() {
    rejects(
        &with("DEST_MODULE_LOCATION=/lib/modules/extra"),
        &["DEST_MODULE_LOCATION[0]", "/kernel, /updates or /extra"],
    );
}

#[test]
fn built_module_name_with_ko_suffix() {
    rejects(
        &with("BUILT_MODULE_NAME=m.ko"),
        &["BUILT_MODULE_NAME[0]", ".ko"],
    );
}

#[test]
fn dest_module_name_with_o_suffix() {
    rejects(
        &with("DEST_MODULE_NAME=m.o"),
        &["DEST_MODULE_NAME[0]", ".o"],
    );
}

#[test]
fn sparse_module_arrays() {
    let text = format!("{VALID}BUILT_MODULE_NAME[2]=c\nDEST_MODULE_LOCATION[2]=/extra\n");
    rejects(&text, &["BUILT_MODULE_NAME[1]", "gap"]);
    assert_eq!(
        reported(&text),
        ["BUILT_MODULE_NAME[1]", "DEST_MODULE_LOCATION[1]"]
    );
}

/// DKMS reports every problem of a conf, record by record, before refusing it; so does rdkms,
/// one line each (DKMS 3.2.2's test/dkms_conf_test_invalid).
#[test]
fn every_problem_is_reported_in_dkms_order() {
    let text = "PACKAGE_NAME=\"m\"\nPACKAGE_VERSION=\"1.0\"\nDEST_MODULE_NAME[0]=\"bar.ko\"\n\
        DEST_MODULE_LOCATION=\"/wrong/path\"\nBUILT_MODULE_NAME[1]=\"bar.o\"\n\
        DEST_MODULE_NAME[1]=\"foo\"\nAUTOINSTALL=\"maybe\"\n";
    assert_eq!(
        reported(text),
        [
            "BUILT_MODULE_NAME[0]",
            "DEST_MODULE_NAME[0]",
            "DEST_MODULE_LOCATION[0]",
            "BUILT_MODULE_NAME[1]",
            "DEST_MODULE_LOCATION[1]",
            "AUTOINSTALL",
        ]
    );
    assert_eq!(reported(""), ["PACKAGE_NAME", "PACKAGE_VERSION"]);
}

#[test]
fn duplicate_dest_module_name() {
    rejects(
        &format!(
            "{VALID}BUILT_MODULE_NAME[1]=n\nDEST_MODULE_NAME[1]=m\nDEST_MODULE_LOCATION[1]=/extra\n"
        ),
        &["DEST_MODULE_NAME[1]", "duplicate"],
    );
}

#[test]
fn duplicate_built_module() {
    rejects(
        &format!("{VALID}BUILT_MODULE_NAME[1]=m\nDEST_MODULE_NAME[1]=other\nDEST_MODULE_LOCATION[1]=/extra\n"),
        &["BUILT_MODULE_NAME[1]", "duplicate"],
    );
}

#[test]
fn dot_dot_in_patch() {
    rejects(
        &with("PATCH[0]=../../etc/evil.patch"),
        &["PATCH", "escapes"],
    );
}

#[test]
fn absolute_or_escaping_built_module_location() {
    rejects(
        &with("BUILT_MODULE_LOCATION=/tmp/build"),
        &["BUILT_MODULE_LOCATION[0]", "escapes"],
    );
    rejects(
        &with("BUILT_MODULE_LOCATION=src/../../x"),
        &["BUILT_MODULE_LOCATION[0]", "escapes"],
    );
}

#[test]
fn bad_autoinstall_value() {
    rejects(&with("AUTOINSTALL=true"), &["AUTOINSTALL", "'true'"]);
}

#[test]
fn invalid_make_match_regex() {
    rejects(
        &format!("{VALID}MAKE[0]=a\nMAKE[1]=b\nMAKE_MATCH[1]='^6.(1'\n"),
        &["MAKE_MATCH[1]", "regular expression"],
    );
}

#[test]
fn several_modules_without_built_module_name() {
    rejects(
        &format!(
            "{}DEST_MODULE_LOCATION[1]=/extra\n",
            without("BUILT_MODULE_NAME")
        ),
        &[
            "BUILT_MODULE_NAME[0]",
            "PACKAGE_NAME only when there is one",
        ],
    );
}

#[test]
fn bash_syntax_error() {
    rejects(
        &format!("{VALID}if [ -f x ]; then\nMAKE=\"unclosed\n"),
        &["syntax error", "line"],
    );
}

#[test]
fn a_command_typo_is_reported_with_bashs_reason() {
    rejects(
        "PACKAGE_NAME = m\nPACKAGE_VERSION=1.0\nDEST_MODULE_LOCATION=/extra\n",
        &["PACKAGE_NAME", "line 1: PACKAGE_NAME: command not found"],
    );
}

#[test]
fn endless_loop_ends_at_the_timeout() {
    let start = Instant::now();
    rejects_with(
        &format!("{VALID}while :; do :; done\n"),
        &["did not finish within 1 s", "RDKMS_CONF_TIMEOUT"],
        &[("RDKMS_CONF_TIMEOUT", "1")],
    );
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn blocking_background_child_does_not_hang() {
    let start = Instant::now();
    rejects_with(
        &format!("{}(sleep 30 &)\nsleep 30\n", without("PACKAGE_NAME")),
        &["did not finish within 1 s"],
        &[("RDKMS_CONF_TIMEOUT", "1")],
    );
    assert!(start.elapsed() < Duration::from_secs(8));
}

#[test]
fn a_background_child_of_a_good_conf_does_not_hold_rdkms() {
    let start = Instant::now();
    let out = show(&sandbox(&format!("(sleep 30 &)\n{VALID}")), &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(start.elapsed() < Duration::from_secs(8));
}

#[test]
fn stdout_of_a_bad_conf_stays_out_of_rdkms_stdout() {
    rejects(
        &format!(
            "echo 'PACKAGE_NAME[0]=\"injected\"'\n{}",
            without("PACKAGE_NAME")
        ),
        &["PACKAGE_NAME", "missing"],
    );
}

#[test]
fn a_conf_printing_to_stdout_is_read_correctly() {
    let sb = sandbox(&format!(
        "echo 'PACKAGE_NAME[0]=\"injected\"'\nprintf 'noise\\n'\n{VALID}echo after\n"
    ));
    let mut cmd = Command::cargo_bin("rdkms").unwrap();
    let out = cmd
        .arg("--root")
        .arg(&sb.root)
        .args(["conf", "show", "--json"])
        .arg(&sb.conf)
        .args(["-k", &real_kernel()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!stdout.contains("injected") && !stdout.contains("noise") && !stdout.contains("after"));
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["directives"]["PACKAGE_NAME"], serde_json::json!(["m"]));
    assert_eq!(json["eval_path"], "bash");
}

#[test]
fn static_only_mode_refuses_shell_code() {
    rejects_with(
        &format!("{VALID}if true; then AUTOINSTALL=yes; fi\n"),
        &["static evaluator", "line 5", "RDKMS_CONF_EVAL"],
        &[("RDKMS_CONF_EVAL", "static")],
    );
}
