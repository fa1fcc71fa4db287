//! What a sysadmin meets first: help, the man page, completions, the progress display on a
//! terminal, kept failed builds, `doctor`, and the handling of paths and mistyped words.
//! Fast tier on fake kernels; the terminal and failed-build tests also run the real example
//! with the installed headers in a real pseudo-terminal (`script`).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use common::{arch, copy_dir, real_kernel_dir, real_tier, repo, skip_unless, Sandbox};

const K: &str = "6.1.0-77-amd64";

fn rdkms() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rdkms"));
    c.env_remove("RDKMS_ROOT");
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A kernel that counts as installed (its own modules directory) with fake headers.
fn installed_fake_kernel(s: &Sandbox, kernel: &str) {
    s.fake_kernel(kernel);
    fs::create_dir_all(s.modules_dir(kernel).join("kernel")).unwrap();
}

#[test]
fn help_lists_every_action_grouped_and_each_action_has_its_own() {
    let out = run(rdkms().arg("--help"));
    assert_eq!(out.status.code(), Some(0));
    let top = text(&out.stdout);
    for group in ["Module commands:", "Inspection:", "Packaging:", "Hooks"] {
        assert!(top.contains(group), "{group} missing in:\n{top}");
    }
    for action in [
        "add",
        "build",
        "install",
        "uninstall",
        "unbuild",
        "remove",
        "status",
        "plan",
        "conf show",
        "doctor",
        "mkbmdeb",
        "mkdeb",
        "mktarball",
        "ldtarball",
        "autoinstall",
        "reconcile",
        "kernel_postinst",
        "kernel_prerm",
        "common_postinst",
    ] {
        assert!(
            top.lines().any(|l| l.starts_with(&format!("  {action} "))),
            "{action} not listed:\n{top}"
        );
    }
    assert!(!top.contains('\x1b'), "no colour on a pipe");
    assert_eq!(text(&run(rdkms().arg("help")).stdout), top);

    let build = run(rdkms().args(["help", "build"]));
    assert_eq!(build.status.code(), Some(0));
    let build = text(&build.stdout);
    assert!(build.contains("Usage: rdkms build NAME/VERSION|SOURCE-DIR"));
    assert!(build.contains("--kernelver") && build.contains("Example:\n  rdkms build"));
    assert_eq!(text(&run(rdkms().args(["build", "--help"])).stdout), build);
    assert_eq!(
        text(&run(rdkms().args(["hello/1.0", "-h", "build"])).stdout),
        build
    );
    let mkbmdeb = text(&run(rdkms().args(["mkbmdeb", "--help"])).stdout);
    assert!(mkbmdeb.contains("--output") && !mkbmdeb.contains("--kernelsourcedir"));
    let status = text(&run(rdkms().args(["help", "status"])).stdout);
    assert!(status.contains("--json") && status.contains("Example:"));
    assert!(text(&run(rdkms().args(["conf", "show", "--help"])).stdout)
        .contains("Usage: rdkms conf show"));
}

#[test]
fn a_mistyped_action_gets_dkms_message_and_a_hint_only_as_rdkms() {
    let out = run(rdkms().args(["isntall", "hello/1.0"]));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "Error! Unknown action specified: \"isntall\" (did you mean \"install\"? see rdkms --help)\n"
    );
    let out = run(rdkms().args(["help", "stauts"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("did you mean \"status\""));

    let t = tempfile::tempdir().unwrap();
    let dkms = t.path().join("dkms");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rdkms"), &dkms).unwrap();
    // As dkms: DKMS's empty line before the error, and no hint.
    let out = run(Command::new(&dkms).args(["isntall", "hello/1.0"]));
    assert_eq!(
        text(&out.stderr),
        "\nError! Unknown action specified: \"isntall\"\n"
    );
}

#[test]
fn man_page_is_generated_with_the_written_sections_and_man_has_no_warnings() {
    if skip_unless(common::have_tool("man"), "man (man-db) is not installed") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let out = run(rdkms().arg("generate-man").arg(t.path()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let page = t.path().join("rdkms.8");
    let out = run(Command::new("man")
        .args(["--warnings", "-l"])
        .arg(&page)
        .env("MANWIDTH", "80")
        .env("MANPAGER", "cat"));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stderr), "", "man --warnings");
    let shown = text(&out.stdout);
    for section in [
        "NAME",
        "SYNOPSIS",
        "ACTIONS",
        "OPTIONS",
        "FILES",
        "EXIT STATUS",
        "HOOKS",
        "ENVIRONMENT",
        "FRAMEWORK.CONF",
        "EXAMPLES",
        "DIFFERENCES FROM DKMS",
    ] {
        assert!(
            shown.lines().any(|l| l == section),
            "section {section} missing"
        );
    }
    for action in [
        "rdkms mkbmdeb",
        "rdkms doctor",
        "rdkms conf show",
        "rdkms kernel_prerm",
    ] {
        assert!(shown.contains(action), "{action} missing");
    }
}

#[test]
fn completions_complete_module_names_from_the_tree_and_kernels_from_lib_modules() {
    let s = Sandbox::new();
    s.source("hello", "1.0").create();
    s.rdkms(["add", "hello/1.0"]).assert().success();
    fs::create_dir_all(s.modules_dir(K)).unwrap();
    fs::create_dir_all(s.modules_dir("6.12.9-1-amd64")).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let out = run(rdkms()
        .arg("generate-completions")
        .arg(dir.path())
        .arg(env!("CARGO_BIN_EXE_rdkms")));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for f in [
        "rdkms",
        "dkms",
        "_rdkms",
        "_dkms",
        "rdkms.fish",
        "dkms.fish",
    ] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
    // bash, as the shell runs it: source the file, call the function the way `complete -F`
    // does, print the candidates.
    let complete = |line: &[&str]| -> Vec<String> {
        let words = line
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" ");
        let script = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD={}; COMP_TYPE=9; \
             _clap_complete_rdkms rdkms '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            dir.path().join("rdkms").display(),
            line.len() - 1,
            line[line.len() - 1],
            line[line.len() - 2],
        );
        let out = run(Command::new("bash")
            .arg("-c")
            .arg(script)
            .env("RDKMS_ROOT", s.root()));
        text(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    };
    assert_eq!(complete(&["rdkms", "build", "he"]), vec!["hello/1.0"]);
    assert_eq!(
        complete(&["rdkms", "install", "hello/1.0", "-k", "6."]),
        vec![K.to_string(), "6.12.9-1-amd64".to_string()]
    );
    assert!(complete(&["rdkms", "mkb"]).contains(&"mkbmdeb".to_string()));
}

#[test]
fn directory_words_relative_or_with_a_slash_say_what_is_wrong() {
    let s = Sandbox::new();
    let cwd = tempfile::tempdir().unwrap();
    fs::create_dir(cwd.path().join("mods")).unwrap();
    let add = |word: &str| {
        let out = s
            .rdkms_std(["add", word])
            .current_dir(cwd.path())
            .output()
            .unwrap();
        (out.status.code(), text(&out.stderr))
    };
    // DKMS 3.2.2's exit status (1) and usage text, then rdkms's hint naming the directory.
    let (code, err) = add("./mods");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("mods holds no dkms.conf"), "{err}");
    let (code, err) = add("mods/");
    assert_eq!(code, Some(1), "{err}");
    let (code, err) = add("./nosuchdir");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("./nosuchdir does not exist"), "{err}");

    // A source directory given relative and with a trailing slash is added; under --root the
    // source link is relative, so the root also works as a chroot.
    let src = s.source_in(&cwd.path().join("drv"), "drv", "2.0").create();
    assert!(src.is_dir());
    let (code, err) = add("drv/");
    assert_eq!(code, Some(0), "{err}");
    let link = s.tree().join("drv/2.0/source");
    assert_eq!(
        fs::read_link(&link).unwrap(),
        Path::new("../../../../../usr/src/drv-2.0")
    );
    assert!(link.join("dkms.conf").is_file());

    // A relative --root works from where it is given.
    let out = rdkms()
        .args(["status", "--root", "."])
        .current_dir(s.root())
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "drv/2.0: added\n");
}

#[test]
fn a_mistyped_root_is_an_error_not_a_new_tree() {
    let out = run(rdkms().args(["add", "x/1", "--root", "/nonexistent-rdkms/typo"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("Error! --root /nonexistent-rdkms/typo: no such directory.")
    );
    assert!(!Path::new("/nonexistent-rdkms").exists());
}

#[test]
fn a_non_root_user_is_told_that_root_is_needed() {
    if !nix::unistd::geteuid().is_root() {
        let out = run(rdkms().args(["build", "hello/1.0"]));
        assert_needs_root(&out);
        return;
    }
    if skip_unless(
        common::have_tool("setpriv"),
        "setpriv (util-linux) is missing",
    ) {
        return;
    }
    let out = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_rdkms"))
        .args(["build", "hello/1.0", "-k", K]));
    assert_needs_root(&out);
}

fn assert_needs_root(out: &Output) {
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("this command needs root. Run it with sudo, or use --root DIR"),
        "{err}"
    );
}

#[test]
fn a_failed_build_keeps_its_tree_and_a_readable_log_until_the_next_success() {
    let s = Sandbox::new();
    s.fake_kernel(K);
    s.source("bad", "1.0")
        .file("fail", "bad.c:3: error: expected ';'")
        .create();
    let out = s.rdkms(["build", "bad/1.0", "-k", K]).output().unwrap();
    assert_eq!(out.status.code(), Some(10));
    let kept = s.tree().join("bad/1.0/build");
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("The failed build is kept in {}", kept.display())),
        "{err}"
    );
    assert!(kept.join("Makefile").is_file() && kept.join("dkms.conf").is_file());
    let log = kept.join("make.log");
    assert_eq!(
        fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let log_text = fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("expected ';'"));
    assert!(!log_text.contains(".rdkms-build"), "{log_text}");
    assert!(
        !s.tree().join(".rdkms-build").exists(),
        "no empty leftovers"
    );
    let doctor = s.rdkms(["doctor"]).output().unwrap();
    assert!(text(&doctor.stdout).contains(&format!(
        "note     a failed build of bad/1.0 is kept in {} for inspection",
        kept.display()
    )));

    fs::remove_file(s.root().join("usr/src/bad-1.0/fail")).unwrap();
    s.rdkms(["build", "bad/1.0", "-k", K]).assert().success();
    assert!(!kept.exists(), "a successful build removes the kept tree");
    assert!(!s.tree().join(".rdkms-build").exists());
}

#[test]
fn build_rebuilds_after_add_force_changed_the_sources() {
    let s = Sandbox::new();
    s.fake_kernel(K);
    let cwd = tempfile::tempdir().unwrap();
    let src = s
        .source_in(&cwd.path().join("m"), "m", "1")
        .file("stamp", "one")
        .create();
    s.rdkms(["add"]).arg(&src).assert().success();
    s.rdkms(["build", "m/1", "-k", K]).assert().success();
    let ko = s.built("m", "1", K).join("module/m.ko");
    assert!(fs::read_to_string(&ko).unwrap().contains("stamp=one"));
    fs::write(src.join("stamp"), "two").unwrap();
    s.rdkms(["add", "--force"]).arg(&src).assert().success();
    let out = s.rdkms(["build", "m/1", "-k", K]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("The sources of m/1 changed since it was built"));
    assert!(fs::read_to_string(&ko).unwrap().contains("stamp=two"));
    let again = s.rdkms(["build", "m/1", "-k", K]).output().unwrap();
    assert!(text(&again.stderr).contains("already built"));
}

#[test]
fn conf_show_names_the_build_directory_of_package_name_and_version() {
    let s = Sandbox::new();
    let dir = s
        .source_in(&s.root().join("unversioned"), "foo", "2.1")
        .make(
            "make -C ${kernel_source_dir} M=${dkms_tree}/${PACKAGE_NAME}/${PACKAGE_VERSION}/build",
        )
        .create();
    let out = s
        .rdkms(["conf", "show"])
        .arg(&dir)
        .arg("-k")
        .arg(K)
        .output()
        .unwrap();
    let shown = text(&out.stdout);
    let expected = s.tree().join("foo/2.1/build");
    assert!(
        shown.contains(&format!("M={}", expected.display())),
        "{shown}"
    );
    assert!(shown.contains(&format!("build directory: {}", expected.display())));
}

#[test]
fn plan_explains_a_kernel_with_headers_but_no_image() {
    let s = Sandbox::new();
    s.fake_kernel(K);
    let out = s.rdkms(["plan"]).output().unwrap();
    assert_eq!(
        text(&out.stdout),
        format!("Kernel {K} has headers but is not installed (no /boot/vmlinuz-{K}, no /lib/modules/{K}/kernel); nothing is built for it until its image is installed.\nNothing to do.\n")
    );
}

#[test]
fn mktarball_writes_a_world_readable_archive() {
    let s = Sandbox::new();
    s.source("t", "1").create();
    s.rdkms(["add", "t/1"]).assert().success();
    let out = s
        .rdkms(["mktarball", "t/1", "--source-only"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let dir = s.tree().join("t/1/tarball");
    let file = fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    assert_eq!(
        fs::metadata(file).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

#[test]
fn doctor_is_quiet_on_a_healthy_machine_and_names_the_fix_of_one_problem() {
    let s = Sandbox::new();
    installed_fake_kernel(&s, K);
    s.source("hello", "1.0").create();
    s.rdkms(["install", "hello/1.0", "-k", K, "--no-depmod"])
        .assert()
        .success();
    fs::write(s.modules_dir(K).join("modules.dep"), "").unwrap();
    let out = s.rdkms(["doctor"]).output().unwrap();
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(report.ends_with("No problems found.\n"), "{report}");

    // One problem: a second kernel is installed without headers.
    let bare = "6.1.0-78-amd64";
    fs::create_dir_all(s.modules_dir(bare).join("kernel")).unwrap();
    let out = s.rdkms(["doctor"]).output().unwrap();
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains(&format!(
        "PROBLEM  kernel {bare} is installed but has no headers: no module can be built for it\n         fix: apt install linux-headers-{bare}\n"
    )), "{report}");
    assert!(report.ends_with("1 problem found.\n"));

    let out = s.rdkms(["doctor", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["healthy"], false);
    assert_eq!(v["findings"][0]["check"], "headers");
    assert_eq!(
        v["findings"][0]["fix"],
        format!("apt install linux-headers-{bare}")
    );
}

#[test]
fn doctor_finds_changed_installed_files_broken_links_writable_sources_and_leftovers() {
    let s = Sandbox::new();
    installed_fake_kernel(&s, K);
    s.source("hello", "1.0").create();
    s.rdkms(["install", "hello/1.0", "-k", K, "--no-depmod"])
        .assert()
        .success();
    fs::write(s.installed_ko(K, "hello"), "tampered").unwrap();
    fs::create_dir_all(s.tree().join("gone/1")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/gone-1", s.tree().join("gone/1/source")).unwrap();
    let src = s.root().join("usr/src/hello-1.0/hello.c");
    fs::write(&src, "").unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o666)).unwrap();
    fs::create_dir_all(s.tree().join(".rdkms-build/K-x-abc")).unwrap();
    let out = s.rdkms(["doctor", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["check"].as_str().unwrap())
        .collect();
    for want in ["installed_files", "sources", "leftovers", "pending"] {
        assert!(checks.contains(&want), "{want} not in {checks:?}");
    }
    let fixes = v["findings"].to_string();
    assert!(fixes.contains(&format!("rdkms install hello/1.0 -k {K} --force")));
    assert!(fixes.contains("chmod -R go-w"));
    assert!(fixes.contains(&format!("depmod -a {K}")));
}

/// Runs `cmd` in a pseudo-terminal with `script` and returns everything it drew.
fn in_terminal(cmd: &str) -> String {
    let out = Command::new("script")
        .args(["-qefc", cmd, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .unwrap();
    text(&out.stdout)
}

#[test]
fn progress_is_drawn_on_a_terminal_only() {
    if skip_unless(
        common::have_tool("script"),
        "script (util-linux) is missing",
    ) {
        return;
    }
    let s = Sandbox::new();
    s.fake_kernel(K);
    s.source("slow", "1").file("sleep", "2").create();
    let bin = env!("CARGO_BIN_EXE_rdkms");
    let root = s.root().display().to_string();
    let screen = in_terminal(&format!("{bin} --root {root} build slow/1 -k {K}"));
    let line = format!("building slow/1 for {K} ({})", arch());
    assert!(screen.contains(&line), "{screen}");
    assert!(screen.contains("00:00:01"), "elapsed time shown:\n{screen}");
    assert!(screen.contains("Building module(s)... done."), "{screen}");

    let plain = s
        .rdkms(["build", "slow/1", "-k", K, "--force"])
        .output()
        .unwrap();
    let plain = text(&plain.stderr);
    assert!(
        !plain.contains("building slow/1") && !plain.contains('\r'),
        "{plain}"
    );
    let quiet = in_terminal(&format!(
        "{bin} --root {root} -q build slow/1 -k {K} --force"
    ));
    assert_eq!(quiet.trim(), "", "-q on a terminal");
    let hook = in_terminal(&format!(
        "{bin} --root {root} autoinstall --hook -k {K} 2>&1"
    ));
    assert!(!hook.contains("building "), "{hook}");
}

#[test]
fn real_example_shows_progress_in_a_pseudo_terminal() {
    let Some(kernel) = real_tier(&["make", "gcc", "script"]) else {
        return;
    };
    let s = Sandbox::new();
    real_kernel_dir(s.root(), &kernel);
    copy_dir(
        &repo("examples/hello-dkms"),
        &s.root().join("usr/src/hello-1.0"),
    );
    let cmd = format!(
        "{} --root {} build hello/1.0 -k {kernel}",
        env!("CARGO_BIN_EXE_rdkms"),
        s.root().display()
    );
    let screen = in_terminal(&cmd);
    assert!(
        screen.contains(&format!("building hello/1.0 for {kernel} ({})", arch())),
        "{screen}"
    );
    assert!(screen.contains("00:00:0"), "{screen}");
    assert!(s.built("hello", "1.0", &kernel).join("module").is_dir());
    // make's own output stays in the log.
    assert!(!screen.contains("CC [M]"), "{screen}");
    let verbose = s
        .rdkms(["build", "hello/1.0", "-k", &kernel, "--force", "--verbose"])
        .output()
        .unwrap();
    let verbose = text(&verbose.stderr);
    assert!(
        verbose.contains("CC [M]") && !verbose.contains("building hello"),
        "{verbose}"
    );
}
