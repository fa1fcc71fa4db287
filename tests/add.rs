//! `rdkms add` and the tree lock, through the real binary on sandbox trees: the `source`
//! symlink DKMS expects, DKMS's exit codes, copying a source directory safely, POST_ADD, and
//! two processes contending for the lock.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::fake_tree::{conf_text, stderr, stdout};
use common::Sandbox;

fn code(o: &std::process::Output) -> Option<i32> {
    o.status.code()
}

#[test]
fn adds_from_the_source_tree_with_an_absolute_symlink() {
    let s = Sandbox::with_trees();
    s.kbuild_source("foo", "1.0", &["foo"], "/updates/dkms");
    let out = s.rdkms_out(&["add", "foo/1.0"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let link = s.tree().join("foo/1.0/source");
    let target = s.src().join("foo-1.0");
    assert_eq!(std::fs::read_link(&link).unwrap(), target);
    assert!(target.is_absolute());
    assert!(stderr(&out).contains(&format!(
        "Creating symlink {} -> {}",
        link.display(),
        target.display()
    )));
    assert!(out.stdout.is_empty(), "human output goes to stderr");
    // no staging leftovers
    let names: Vec<_> = std::fs::read_dir(s.tree().join("foo/1.0"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| n == "source" || n == "build"),
        "{names:?}"
    );
    assert_eq!(stdout(&s.rdkms_out(&["status"])), "foo/1.0: added\n");
    // -m/-v form is the same
    s.kbuild_source("bar", "2", &["bar"], "/updates/dkms");
    assert_eq!(
        code(&s.rdkms_out(&["add", "-m", "bar", "-v", "2"])),
        Some(0)
    );
    assert!(s.tree().join("bar/2/source").is_symlink());
}

#[test]
fn dkms_exit_codes() {
    let s = Sandbox::with_trees();
    s.kbuild_source("foo", "1.0", &["foo"], "/updates/dkms");
    assert_eq!(code(&s.rdkms_out(&["add", "foo/1.0"])), Some(0));
    let again = s.rdkms_out(&["add", "foo/1.0"]);
    assert_eq!(code(&again), Some(3));
    assert!(
        stderr(&again).contains("already contains: foo/1.0"),
        "{}",
        stderr(&again)
    );
    assert_eq!(code(&s.rdkms_out(&["add", "foo/1.0", "--force"])), Some(0));

    let missing = s.rdkms_out(&["add", "nosuch/1"]);
    assert_eq!(code(&missing), Some(2), "{}", stderr(&missing));
    assert!(!s.tree().join("nosuch").exists());

    std::fs::create_dir_all(s.src().join("noconf-1")).unwrap();
    let noconf = s.rdkms_out(&["add", "noconf/1"]);
    assert_eq!(code(&noconf), Some(4), "{}", stderr(&noconf));

    assert_eq!(code(&s.rdkms_out(&["add", "-m", "foo"])), Some(1));
    let plain_dir = tempfile::tempdir().unwrap();
    // A directory without dkms.conf: DKMS 3.2.2 ends up without a module name (exit 1).
    let nodir = s.rdkms_out(&["add", plain_dir.path().to_str().unwrap()]);
    assert_eq!(code(&nodir), Some(1), "{}", stderr(&nodir));
    assert!(
        stderr(&nodir).contains("holds no dkms.conf"),
        "{}",
        stderr(&nodir)
    );

    std::fs::write(s.src().join("noconf-1/dkms.conf"), "PACKAGE_NAME=noconf\n").unwrap();
    let bad = s.rdkms_out(&["add", "noconf/1"]);
    assert_eq!(code(&bad), Some(8), "{}", stderr(&bad));
    assert!(!s.tree().join("noconf/1/source").exists());
}

#[test]
fn force_relinks_an_added_version() {
    let s = Sandbox::with_trees();
    s.kbuild_source("foo", "1.0", &["foo"], "/updates/dkms");
    s.link_source("foo", "1.0");
    let link = s.tree().join("foo/1.0/source");
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("/nonexistent", &link).unwrap();
    assert_eq!(code(&s.rdkms_out(&["add", "foo/1.0", "--force"])), Some(0));
    assert_eq!(std::fs::read_link(&link).unwrap(), s.src().join("foo-1.0"));
}

/// A source directory outside the source tree, with nested content.
fn outside_source(name: &str, version: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(
        p.join("dkms.conf"),
        conf_text(name, version, &[name], "/updates/dkms"),
    )
    .unwrap();
    std::fs::create_dir_all(p.join("src/.hidden-dir")).unwrap();
    std::fs::write(p.join("src/main.c"), "int x;\n").unwrap();
    std::fs::write(
        p.join("src/.hidden-dir/keep"),
        "nested dot files are copied\n",
    )
    .unwrap();
    std::fs::write(
        p.join(".git-like"),
        "top-level dot files are not (cp -r SRC/*)\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("src/main.c", p.join("main-link.c")).unwrap();
    std::fs::write(p.join("build.sh"), "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p.join("build.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

#[test]
fn adds_from_a_directory_or_its_dkms_conf_by_copying() {
    let s = Sandbox::with_trees();
    let d = outside_source("copied", "3.1");
    let out = s.rdkms_out(&["add", d.path().to_str().unwrap()]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let dest = s.src().join("copied-3.1");
    assert_eq!(
        std::fs::read_to_string(dest.join("src/main.c")).unwrap(),
        "int x;\n"
    );
    assert!(dest.join("src/.hidden-dir/keep").is_file());
    assert!(!dest.join(".git-like").exists());
    assert_eq!(
        std::fs::read_link(dest.join("main-link.c")).unwrap(),
        Path::new("src/main.c")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dest.join("build.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(
        std::fs::read_link(s.tree().join("copied/3.1/source")).unwrap(),
        dest
    );

    // by its dkms.conf path, with --force: the copy is replaced, not merged
    std::fs::remove_file(d.path().join("src/main.c")).unwrap();
    let conf = d.path().join("dkms.conf");
    let out = s.rdkms_out(&["add", conf.to_str().unwrap(), "--force"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(!dest.join("src/main.c").exists());
    let leftovers: Vec<_> = std::fs::read_dir(s.src())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn copies_symlinks_out_of_the_source_as_links_and_refuses_bad_names() {
    let s = Sandbox::with_trees();
    let d = outside_source("evil", "1");
    std::os::unix::fs::symlink("../../etc/passwd", d.path().join("src/passwd")).unwrap();
    let out = s.rdkms_out(&["add", d.path().to_str().unwrap()]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let copied = s.src().join("evil-1/src/passwd");
    assert!(copied.is_symlink(), "copied as a link, not followed");
    assert_eq!(
        std::fs::read_link(&copied).unwrap(),
        Path::new("../../etc/passwd")
    );

    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("dkms.conf"),
        conf_text("../escape", "1", &["x"], "/updates/dkms"),
    )
    .unwrap();
    let out = s.rdkms_out(&["add", d.path().to_str().unwrap()]);
    assert_eq!(code(&out), Some(8), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_dir(s.src()).unwrap().count(),
        1,
        "only evil-1"
    );

    let out = s.rdkms_out(&["add", "foo/1/../../x"]);
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
}

/// A source whose POST_ADD runs `script` (in the source dir) with one argument.
fn source_with_post_add(s: &Sandbox, name: &str, script: &str) {
    let mut conf = conf_text(name, "1", &[name], "/updates/dkms");
    conf.push_str("POST_ADD=\"post-add.sh first-arg\"\n");
    let dir = s.source_with_conf(name, "1", &conf, &[name]);
    std::fs::write(dir.join("post-add.sh"), script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("post-add.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
}

#[test]
fn post_add_runs_in_the_source_dir_and_gives_the_exit_status() {
    let s = Sandbox::with_trees();
    source_with_post_add(
        &s,
        "hooked",
        "#!/bin/sh\necho \"ran in $(pwd) with $1\"\nexit 7\n",
    );
    let out = s.rdkms_out(&["add", "hooked/1"]);
    // DKMS 3.0.10 exits with POST_ADD's status; the module is added anyway
    assert_eq!(code(&out), Some(7), "{}", stderr(&out));
    let src = s.tree().join("hooked/1/source");
    assert!(
        stderr(&out).contains(&format!("ran in {} with first-arg", src.display())),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&s.rdkms_out(&["status"])), "hooked/1: added\n");

    let s = Sandbox::with_trees();
    source_with_post_add(&s, "plain", "#!/bin/sh\nexit 0\n");
    use std::os::unix::fs::PermissionsExt;
    let script = s.src().join("plain-1/post-add.sh");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = s.rdkms_out(&["add", "plain/1"]);
    assert_eq!(code(&out), Some(0));
    assert!(stderr(&out).contains("not executable"), "{}", stderr(&out));
}

#[test]
fn root_option_puts_every_path_under_the_root() {
    let root = tempfile::tempdir().unwrap();
    let src = root.path().join("usr/src/foo-1");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("dkms.conf"),
        conf_text("foo", "1", &["foo"], "/updates/dkms"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rdkms"))
        .args(["add", "foo/1", "--root"])
        .arg(root.path())
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let link = root.path().join("var/lib/dkms/foo/1/source");
    assert!(std::fs::read_link(&link).unwrap().is_relative());
    assert_eq!(
        std::fs::canonicalize(&link).unwrap(),
        std::fs::canonicalize(&src).unwrap()
    );
}

#[test]
fn two_processes_contend_for_the_tree_lock() {
    let s = Sandbox::with_trees();
    source_with_post_add(&s, "slow", "#!/bin/sh\nsleep 3\n");
    s.kbuild_source("quick", "1", &["quick"], "/updates/dkms");
    s.kbuild_source("patient", "1", &["patient"], "/updates/dkms");
    let mut holder = s
        .rdkms_trees_cmd(&["add", "slow/1"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // wait until the holder has recorded itself in the lock file
    let lock = s.tree().join(".rdkms.lock");
    let t = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|c| c.contains("slow/1")) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "holder never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let waiter = s.rdkms_out(&["add", "quick/1", "--lock-timeout", "1"]);
    assert_eq!(code(&waiter), Some(75), "{}", stderr(&waiter));
    let err = stderr(&waiter);
    let pid = format!("pid {}", holder.id());
    assert!(err.contains(&pid) && err.contains("waiting"), "{err}");
    assert!(!s.tree().join("quick").exists());
    // status is not blocked meanwhile, and sees the link made before POST_ADD runs
    assert_eq!(stdout(&s.rdkms_out(&["status"])), "slow/1: added\n");

    let t = Instant::now();
    let patient = s.rdkms_out(&["add", "patient/1"]);
    assert_eq!(code(&patient), Some(0), "{}", stderr(&patient));
    assert!(
        t.elapsed() > Duration::from_millis(500),
        "did not wait for the holder"
    );
    assert!(holder.wait().unwrap().success());
    assert_eq!(
        stdout(&s.rdkms_out(&["status"])),
        "patient/1: added\nslow/1: added\n"
    );
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap(),
        "",
        "holder record cleared"
    );
}
