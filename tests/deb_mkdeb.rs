//! `rdkms mkdeb`: a DKMS source package shaped like dh_dkms's, compared with the real
//! acpi-call-dkms package from Debian (tests/fetch-corpus.sh), checked by lintian.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::deb::*;
use common::{need_tool, repo, skip_unless, Sandbox};
use predicates::prelude::*;

fn corpus(prefix: &str) -> Option<(PathBuf, PathBuf)> {
    let base = repo("tests/corpus/work");
    let find = |dir: &str| {
        fs::read_dir(base.join(dir))
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
    };
    match (find("src"), find("debs")) {
        (Some(s), Some(d)) => Some((s, d)),
        _ => {
            skip_unless(
                false,
                "the corpus is not fetched (run tests/fetch-corpus.sh)",
            );
            None
        }
    }
}

fn mkdeb(sb: &Sandbox, args: &[&str]) -> PathBuf {
    let mut c = sb.rdkms_cmd();
    c.arg("mkdeb").args(args);
    printed_paths(c).remove(0)
}

/// The files of a package below `usr/src`, as `dpkg-deb -c` lists them (mode, path).
fn usr_src(deb: &Path) -> Vec<(String, String)> {
    contents(deb)
        .into_iter()
        .filter(|l| l.path.starts_with("./usr/src/"))
        .map(|l| (l.mode, l.path))
        .collect()
}

#[test]
fn source_package_matches_the_real_dh_dkms_layout() {
    if !need_tool("dpkg-deb") || !need_tool("lintian") {
        return;
    }
    let Some((src, real_deb)) = corpus("acpi-call-") else {
        return;
    };
    let sb = Sandbox::empty();
    sb.added_by_hand("acpi-call", "1.2.2", &src);
    let deb = mkdeb(&sb, &["acpi-call/1.2.2"]);
    assert_eq!(
        deb,
        sb.version_dir("acpi-call", "1.2.2")
            .join("deb/acpi-call-dkms_1.2.2_all.deb")
    );
    // Same sources at the same place, same modes, as Debian's package.
    assert_eq!(usr_src(&deb), usr_src(&real_deb));

    let f = fields(&deb);
    let get = |n: &str| f.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(get("Package").as_deref(), Some("acpi-call-dkms"));
    assert_eq!(get("Version").as_deref(), Some("1.2.2"));
    assert_eq!(get("Architecture").as_deref(), Some("all"));
    assert_eq!(get("Depends").as_deref(), Some("dkms"));
    assert_eq!(get("Section").as_deref(), Some("kernel"));

    let ctl = sb.root().join("ctl");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&ctl));
    let postinst = fs::read_to_string(ctl.join("postinst")).unwrap();
    assert!(postinst.contains("NAME='acpi-call'\nVERSION='1.2.2'\n"));
    assert!(postinst.contains(
        "/usr/lib/dkms/common.postinst \"$NAME\" \"$VERSION\" /usr/share/acpi-call-dkms \"\" \"$2\""
    ));
    let prerm = fs::read_to_string(ctl.join("prerm")).unwrap();
    assert!(prerm.contains("remove|upgrade|deconfigure)"));
    assert!(prerm.contains("dkms status -m \"$NAME\" -v \"$VERSION\""));
    assert!(prerm.contains("dkms remove -m \"$NAME\" -v \"$VERSION\" --all"));
    for s in ["postinst", "prerm"] {
        run(Command::new("sh").arg("-n").arg(ctl.join(s)));
    }
    let copyright = stdout(Command::new("sh").arg("-c").arg(format!(
        "dpkg-deb --fsys-tarfile {} | tar -xO ./usr/share/doc/acpi-call-dkms/copyright",
        deb.display()
    )));
    assert!(
        copyright.contains("Copyright (c) 2010: Michal Kottman"),
        "{copyright}"
    );
    assert!(
        copyright.contains("Licenses declared in the sources: GPL."),
        "{copyright}"
    );

    let (errors, warnings) = lintian(&deb);
    assert!(errors.is_empty(), "lintian errors: {errors:?}");
    eprintln!("lintian warnings: {warnings:?}");

    // Reproducible: a second run gives the same bytes.
    let again = sb.root().join("again");
    let deb2 = mkdeb(
        &sb,
        &["acpi-call/1.2.2", "--output", again.to_str().unwrap()],
    );
    assert_eq!(fs::read(&deb).unwrap(), fs::read(&deb2).unwrap());
}

#[test]
fn source_package_from_a_vendor_directory() {
    if !need_tool("dpkg-deb") {
        return;
    }
    let sb = Sandbox::empty();
    let src = fake_source(sb.root(), "vendor_drv", "4.2-1", "");
    fs::create_dir(src.join("tools")).unwrap();
    fs::write(src.join("tools/gen.sh"), "#!/bin/sh\necho hi\n").unwrap();
    run(Command::new("chmod")
        .arg("755")
        .arg(src.join("tools/gen.sh")));
    std::os::unix::fs::symlink("../Makefile", src.join("tools/Makefile")).unwrap();
    let out = sb.root().join("out");
    let deb = mkdeb(
        &sb,
        &[src.to_str().unwrap(), "--output", out.to_str().unwrap()],
    );
    // `_` cannot appear in a package name; the dkms name keeps it.
    assert_eq!(deb, out.join("vendor-drv-dkms_4.2-1_all.deb"));
    let listed = usr_src(&deb);
    assert!(listed.contains(&(
        "-rwxr-xr-x".into(),
        "./usr/src/vendor_drv-4.2-1/tools/gen.sh".into()
    )));
    assert!(listed.contains(&(
        "lrwxrwxrwx".into(),
        "./usr/src/vendor_drv-4.2-1/tools/Makefile".into()
    )));
    // A non-native version gets changelog.Debian.gz.
    assert!(contents(&deb)
        .iter()
        .any(|l| l.path == "./usr/share/doc/vendor-drv-dkms/changelog.Debian.gz"));
    // Nothing was written into the dkms tree for an unregistered directory.
    assert!(!sb.tree().join("vendor_drv").exists());
}

#[test]
fn sources_with_links_leading_out_are_refused() {
    let sb = Sandbox::empty();
    let src = fake_source(sb.root(), "evil", "1", "");
    std::os::unix::fs::symlink("/etc/shadow", src.join("shadow")).unwrap();
    sb.rdkms_cmd()
        .args(["mkdeb", src.to_str().unwrap()])
        .current_dir(sb.root())
        .assert()
        .code(8)
        .stderr(predicate::str::contains("escapes its directory"));
}
