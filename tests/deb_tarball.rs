//! `rdkms mktarball` / `ldtarball`: DKMS's layout and names, round trips (also with Debian's
//! dkms in both directions), reproducibility, and refusal of archives that would write outside.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::deb::*;
use common::{need_tool, skip_unless, Sandbox};
use predicates::prelude::*;

const K: &str = "6.1.0-99-amd64";

/// A registered, built module with a script and an internal symlink in its sources.
fn module(sb: &Sandbox) {
    let src = fake_source(sb.root(), "rt", "1.0", "");
    fs::create_dir(src.join("inc")).unwrap();
    std::os::unix::fs::symlink("../rt.c", src.join("inc/link.c")).unwrap();
    fs::write(src.join("gen.sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("gen.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(src.join(".hidden"), "not archived, as with DKMS's cp dir/*").unwrap();
    sb.added_by_hand("rt", "1.0", &src);
    sb.built_by_hand("rt", "1.0", K, ARCH, &[fake_ko(sb.root(), "rt", 4000)]);
}

fn mktarball(sb: &Sandbox, args: &[&str]) -> PathBuf {
    let mut c = sb.rdkms_cmd();
    c.arg("mktarball").args(args);
    printed_paths(c).remove(0)
}

/// Member names as GNU tar lists them, without the `./` prefix, sorted.
fn members(archive: &Path) -> Vec<String> {
    let mut v: Vec<String> = stdout(Command::new("tar").arg("-taf").arg(archive))
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

/// Every entry below `dir`: relative path, kind/mode and content (or link target).
fn snapshot(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
        let md = e.path().symlink_metadata().unwrap();
        let what = if md.file_type().is_symlink() {
            format!("link {}", fs::read_link(e.path()).unwrap().display())
        } else if md.is_dir() {
            "dir".to_string()
        } else {
            format!(
                "file {:o} {}",
                md.permissions().mode() & 0o777,
                String::from_utf8_lossy(&fs::read(e.path()).unwrap())
            )
        };
        out.push((rel, what));
    }
    out
}

#[test]
fn round_trip_keeps_sources_and_builds() {
    let sb = Sandbox::empty();
    module(&sb);
    let t = mktarball(&sb, &["rt/1.0", "-k", K]);
    assert_eq!(
        t,
        sb.version_dir("rt", "1.0")
            .join(format!("tarball/rt-1.0-kernel{K}-x86_64.dkms.tar.gz"))
    );
    let m = members(&t);
    for want in [
        format!("dkms_main_tree/{K}/x86_64/module/rt.ko"),
        format!("dkms_main_tree/{K}/x86_64/log/make.log"),
        "dkms_source_tree/dkms.conf".into(),
        "dkms_source_tree/inc/link.c".into(),
        "dkms_source_tree/gen.sh".into(),
    ] {
        assert!(m.contains(&want), "{want} missing from {m:?}");
    }
    assert!(!m.iter().any(|x| x.contains(".hidden")));
    let listing = stdout(Command::new("tar").arg("-tvzf").arg(&t));
    assert!(
        listing.lines().all(|l| l.contains(" root/root ")),
        "{listing}"
    );

    // Reproducible.
    let again = sb.root().join("again.dkms.tar.gz");
    let t2 = mktarball(
        &sb,
        &["rt/1.0", "-k", K, "--archive", again.to_str().unwrap()],
    );
    assert_eq!(t2, again);
    assert_eq!(fs::read(&t).unwrap(), fs::read(&t2).unwrap());

    let other = Sandbox::empty();
    other
        .rdkms_cmd()
        .args(["ldtarball", t.to_str().unwrap()])
        .assert()
        .success();
    let mut src_before = snapshot(&sb.root().join("usr/src/rt-1.0"));
    src_before.retain(|(p, _)| p != ".hidden");
    assert_eq!(snapshot(&other.root().join("usr/src/rt-1.0")), src_before);
    let build = |s: &Sandbox| snapshot(&s.version_dir("rt", "1.0").join(K));
    assert_eq!(build(&other), build(&sb));
    let link = other.version_dir("rt", "1.0").join("source");
    assert!(fs::read_link(&link).unwrap().is_relative());
    assert_eq!(
        fs::canonicalize(&link).unwrap(),
        fs::canonicalize(other.root().join("usr/src/rt-1.0")).unwrap()
    );

    // Loading twice needs --force, which replaces the build.
    other
        .rdkms_cmd()
        .args(["ldtarball", "--archive", t.to_str().unwrap()])
        .assert()
        .code(8)
        .stderr(predicate::str::contains("rt-1.0 is already added"));
    let ko = other
        .version_dir("rt", "1.0")
        .join(K)
        .join("x86_64/module/rt.ko");
    fs::write(&ko, "stale").unwrap();
    other
        .rdkms_cmd()
        .args(["ldtarball", t.to_str().unwrap(), "--force"])
        .assert()
        .success();
    assert_eq!(fs::metadata(&ko).unwrap().len(), 4000);
}

#[test]
fn source_only_binaries_only_and_their_conflict() {
    let sb = Sandbox::empty();
    module(&sb);
    let s = mktarball(&sb, &["rt/1.0", "--source-only"]);
    assert!(s.ends_with("rt-1.0-source-only.dkms.tar.gz"));
    let m = members(&s);
    assert!(m.contains(&"dkms_main_tree".to_string()));
    assert!(!m.iter().any(|x| x.starts_with("dkms_main_tree/")));
    assert!(m.contains(&"dkms_source_tree/rt.c".to_string()));

    let b = mktarball(&sb, &["rt/1.0", "-k", K, "--binaries-only"]);
    let m = members(&b);
    for want in [
        "dkms_binaries_only/PACKAGE_NAME",
        "dkms_binaries_only/PACKAGE_VERSION",
        "dkms_binaries_only/dkms.conf",
    ] {
        assert!(m.contains(&want.to_string()), "{want}: {m:?}");
    }
    assert!(!m.iter().any(|x| x.starts_with("dkms_source_tree")));

    // Binaries only, on a host without the sources: DKMS's stub `source` directory.
    let other = Sandbox::empty();
    other
        .rdkms_cmd()
        .args(["ldtarball", b.to_str().unwrap()])
        .assert()
        .success();
    let source = other.version_dir("rt", "1.0").join("source");
    assert!(source.symlink_metadata().unwrap().is_dir());
    assert!(source.join("dkms.conf").is_file());
    assert!(other
        .version_dir("rt", "1.0")
        .join(K)
        .join("x86_64/module/rt.ko")
        .is_file());
    // ...which is enough to package the module as a binary package.
    if need_tool("dpkg-deb") {
        other
            .rdkms_cmd()
            .args(["mkbmdeb", "rt/1.0", "-k", K])
            .assert()
            .success();
    }

    sb.rdkms_cmd()
        .args(["mktarball", "rt/1.0", "--source-only", "--binaries-only"])
        .assert()
        .code(8);
    sb.rdkms_cmd()
        .args(["mktarball", "rt/1.0", "-k", "6.1.0-1-other"])
        .assert()
        .code(6)
        .stderr(predicate::str::contains("not built for 6.1.0-1-other"));
    let xz = sb.root().join("out/rt.tar.xz");
    mktarball(&sb, &["rt/1.0", "-k", K, "--archive", xz.to_str().unwrap()]);
    assert_eq!(&fs::read(&xz).unwrap()[..6], b"\xfd7zXZ\0");
}

#[test]
fn plain_source_archive_is_added() {
    let sb = Sandbox::empty();
    let work = sb.root().join("w");
    fs::create_dir_all(&work).unwrap();
    let src = fake_source(&work, "vend", "2.0", "");
    fs::rename(&src, work.join("vend-2.0")).unwrap();
    let archive = work.join("vend-2.0.tar.bz2");
    run(Command::new("tar")
        .arg("-C")
        .arg(&work)
        .arg("-cjf")
        .arg(&archive)
        .arg("vend-2.0"));
    let root = Sandbox::empty();
    root.rdkms_cmd()
        .args(["ldtarball", archive.to_str().unwrap()])
        .assert()
        .success();
    assert!(root.root().join("usr/src/vend-2.0/dkms.conf").is_file());
    assert!(root
        .version_dir("vend", "2.0")
        .join("source")
        .symlink_metadata()
        .is_ok());
    root.rdkms_cmd()
        .args(["ldtarball", work.join("nothing.tgz").to_str().unwrap()])
        .assert()
        .code(2);
}

/// One member of a hand-made archive; names are written raw, so `..` and `/` survive.
enum Evil<'a> {
    File(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    CharDevice(&'a str),
}

fn evil_tar(path: &Path, members: &[Evil]) {
    let mut b = tar::Builder::new(fs::File::create(path).unwrap());
    let conf = b"PACKAGE_NAME=evil\nPACKAGE_VERSION=1\n";
    let mut all = vec![Evil::File("dkms_source_tree/dkms.conf")];
    all.push(Evil::File("dkms_main_tree/"));
    for m in members {
        all.push(match m {
            Evil::File(n) => Evil::File(n),
            Evil::Symlink(n, t) => Evil::Symlink(n, t),
            Evil::Hardlink(n, t) => Evil::Hardlink(n, t),
            Evil::CharDevice(n) => Evil::CharDevice(n),
        });
    }
    for m in &all {
        let (kind, name, link, data): (tar::EntryType, &str, &str, &[u8]) = match m {
            Evil::File(n) if n.ends_with('/') => (tar::EntryType::Directory, n, "", b""),
            Evil::File(n) => (tar::EntryType::Regular, n, "", conf),
            Evil::Symlink(n, t) => (tar::EntryType::Symlink, n, t, b""),
            Evil::Hardlink(n, t) => (tar::EntryType::Link, n, t, b""),
            Evil::CharDevice(n) => (tar::EntryType::Char, n, "", b""),
        };
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.finish().unwrap();
}

#[test]
fn archives_writing_outside_are_refused_before_anything_is_extracted() {
    let cases: Vec<(&str, Vec<Evil>, i32, &str)> = vec![
        (
            "absolute",
            vec![Evil::File("/tmp/rdkms-evil-abs")],
            8,
            "member '/tmp/rdkms-evil-abs'",
        ),
        (
            "dotdot",
            vec![Evil::File("../rdkms-evil-up")],
            8,
            "member '../rdkms-evil-up'",
        ),
        (
            "inner-dotdot",
            vec![Evil::File("dkms_source_tree/../../rdkms-evil-up2")],
            8,
            "member 'dkms_source_tree/../../rdkms-evil-up2'",
        ),
        (
            "link-absolute",
            vec![Evil::Symlink("dkms_source_tree/etc", "/etc")],
            8,
            "symlink 'dkms_source_tree/etc' pointing to '/etc'",
        ),
        (
            "link-up",
            vec![Evil::Symlink("dkms_source_tree/l", "../../outside")],
            8,
            "pointing to '../../outside'",
        ),
        (
            "link-chain",
            vec![
                Evil::Symlink("dkms_source_tree/b/c", "../x"),
                Evil::Symlink("dkms_source_tree/a", "b/c/../../.."),
            ],
            8,
            "symlink 'dkms_source_tree/a' pointing to",
        ),
        (
            "below-link",
            vec![
                Evil::Symlink("dkms_source_tree/l", "sub"),
                Evil::File("dkms_source_tree/l/f"),
            ],
            8,
            "below a symlink 'dkms_source_tree/l/f'",
        ),
        (
            "hardlink-out",
            vec![Evil::Hardlink("dkms_source_tree/h", "/etc/passwd")],
            8,
            "hard link 'dkms_source_tree/h' to '/etc/passwd'",
        ),
        (
            "hardlink-up",
            vec![Evil::Hardlink("dkms_source_tree/h", "../../etc/passwd")],
            8,
            "to '../../etc/passwd'",
        ),
        (
            "device",
            vec![Evil::CharDevice("dkms_source_tree/null")],
            7,
            "is a Char",
        ),
        (
            "duplicate",
            vec![
                Evil::File("dkms_source_tree/x"),
                Evil::Symlink("dkms_source_tree/x", "dkms.conf"),
            ],
            7,
            "appears twice",
        ),
    ];
    let work = tempfile::tempdir().unwrap();
    for (name, members, code, needle) in cases {
        let archive = work.path().join(format!("{name}.tar"));
        evil_tar(&archive, &members);
        let sb = Sandbox::empty();
        let out = sb
            .rdkms_cmd()
            .args(["ldtarball", archive.to_str().unwrap()])
            .env("TMPDIR", work.path())
            .assert()
            .code(code)
            .stderr(predicate::str::contains(archive.to_str().unwrap()))
            .stderr(predicate::str::contains(needle))
            .get_output()
            .stderr
            .clone();
        eprintln!("{name}: {}", String::from_utf8_lossy(&out).trim());
        assert_eq!(
            fs::read_dir(sb.root()).unwrap().count(),
            0,
            "{name}: something was written into the root"
        );
        // Nothing was left in the temporary directory either, inside or beside the staging dir.
        let left: Vec<_> = fs::read_dir(work.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".tar"))
            .collect();
        assert!(left.is_empty(), "{name}: left {left:?}");
    }
    assert!(!Path::new("/tmp/rdkms-evil-abs").exists());

    // A link that stays inside, even through `..`, is fine.
    let ok = work.path().join("ok.tar");
    evil_tar(
        &ok,
        &[
            Evil::File("dkms_source_tree/sub/"),
            Evil::Symlink("dkms_source_tree/sub/conf", "../dkms.conf"),
        ],
    );
    let sb = Sandbox::empty();
    sb.rdkms_cmd()
        .args(["ldtarball", ok.to_str().unwrap()])
        .assert()
        .success();
    assert_eq!(
        fs::read_to_string(sb.root().join("usr/src/evil-1/sub/conf")).unwrap(),
        "PACKAGE_NAME=evil\nPACKAGE_VERSION=1\n"
    );
}

#[test]
fn debian_dkms_reads_ours_and_we_read_its() {
    if skip_unless(
        Path::new("/usr/sbin/dkms").is_file(),
        "Debian's dkms is not installed",
    ) {
        return;
    }
    let sb = Sandbox::empty();
    module(&sb);
    let ours = mktarball(&sb, &["rt/1.0", "-k", K]);
    let d = tempfile::tempdir().unwrap();
    let (tree, src) = (d.path().join("tree"), d.path().join("src"));
    fs::create_dir_all(&tree).unwrap();
    fs::create_dir_all(&src).unwrap();
    let dkms = |args: &[&str]| {
        let mut c = Command::new("/usr/sbin/dkms");
        c.args(args)
            .arg("--dkmstree")
            .arg(&tree)
            .arg("--sourcetree")
            .arg(&src)
            .current_dir(d.path());
        c
    };
    run(&mut dkms(&[
        "ldtarball",
        "--archive",
        ours.to_str().unwrap(),
    ]));
    let status = stdout(&mut dkms(&["status"]));
    assert_eq!(status.trim(), format!("rt/1.0, {K}, x86_64: built"));
    assert!(src.join("rt-1.0/dkms.conf").is_file());

    let theirs = d.path().join("theirs.dkms.tar.gz");
    run(&mut dkms(&[
        "mktarball",
        "-m",
        "rt",
        "-v",
        "1.0",
        "-k",
        K,
        "--archive",
        theirs.to_str().unwrap(),
    ]));
    let other = Sandbox::empty();
    other
        .rdkms_cmd()
        .args(["ldtarball", theirs.to_str().unwrap()])
        .assert()
        .success();
    assert_eq!(
        snapshot(&other.version_dir("rt", "1.0").join(K)),
        snapshot(&sb.version_dir("rt", "1.0").join(K))
    );
    assert!(other.root().join("usr/src/rt-1.0/rt.c").is_file());
}
