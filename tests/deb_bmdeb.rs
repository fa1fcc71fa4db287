//! `rdkms mkbmdeb`: the package's fields and contents as dpkg-deb reports them, lintian, byte
//! reproducibility, and real installs/removals with dpkg into a sandbox root.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::deb::*;
use common::{copy_dir, need_tool, repo, Sandbox};
use predicates::prelude::*;
use rdkms::state::dpkg;
use rdkms::system::config::Paths;

const FAKE_K: &str = "6.1.0-99-amd64";

/// `rdkms mkbmdeb ARGS`; returns the package paths printed on stdout.
fn mkbmdeb(sb: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> Vec<PathBuf> {
    let mut c = sb.rdkms_cmd();
    c.arg("mkbmdeb").args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    printed_paths(c)
}

#[test]
fn real_module_package_fields_contents_and_lintian() {
    let Some(k) = real_kernel() else { return };
    if !need_tool("dpkg-deb") || !need_tool("lintian") {
        return;
    }
    // Only added: mkbmdeb builds it first, as `rdkms build` does.
    let sb = Sandbox::empty();
    sb.rdkms_cmd()
        .arg("add")
        .arg(repo("examples/hello-dkms"))
        .assert()
        .success();
    let headers = format!("/lib/modules/{k}/build");
    let debs = mkbmdeb(
        &sb,
        &["hello/1.0", "-k", &k, "--kernelsourcedir", &headers],
        &[],
    );
    let kos = sb.built_modules("hello", "1.0", &k);
    assert_eq!(kos.len(), 1, "mkbmdeb built the module");
    let deb = &debs[0];
    assert_eq!(
        deb,
        &sb.version_dir("hello", "1.0")
            .join("bmdeb")
            .join(format!("hello-modules-{k}_1.0_amd64.deb"))
    );

    let listed = contents(deb);
    // Installed-Size as dpkg-gencontrol counts it: files rounded up to KiB, 1 per directory.
    let expected_size: u64 = listed
        .iter()
        .map(|l| {
            if l.mode.starts_with('d') {
                1
            } else {
                l.size.div_ceil(1024)
            }
        })
        .sum();
    let f = fields(deb);
    let names: Vec<&str> = f.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "Package",
            "Source",
            "Version",
            "Architecture",
            "Maintainer",
            "Installed-Size",
            "Depends",
            "Provides",
            "Section",
            "Priority",
            "Description"
        ]
    );
    let get = |n: &str| f.iter().find(|(k, _)| k == n).unwrap().1.clone();
    assert_eq!(get("Package"), format!("hello-modules-{k}"));
    assert_eq!(get("Source"), "hello-dkms-bin");
    assert_eq!(get("Version"), "1.0");
    assert_eq!(get("Architecture"), "amd64");
    assert_eq!(get("Maintainer"), "rdkms <rdkms@localhost.invalid>");
    assert_eq!(get("Installed-Size"), expected_size.to_string());
    assert_eq!(get("Depends"), format!("linux-image-{k}"));
    assert_eq!(get("Provides"), "hello-modules");
    assert_eq!(get("Section"), "misc");
    assert_eq!(get("Priority"), "optional");
    assert_eq!(
        get("Description"),
        format!(
            "hello binary drivers for linux-image-{k}\n This package contains hello drivers for the {k} Linux kernel,\n built from hello-dkms for the amd64 architecture."
        )
    );

    for l in &listed {
        assert_eq!(l.owner, "root/root", "{l:?}");
        let want = if l.mode.starts_with('d') {
            "drwxr-xr-x"
        } else {
            "-rw-r--r--"
        };
        assert_eq!(l.mode, want, "{l:?}");
    }
    let ko_lines: Vec<&Listed> = listed.iter().filter(|l| l.path.contains(".ko")).collect();
    assert_eq!(ko_lines.len(), 1);
    assert_eq!(
        ko_lines[0].path,
        format!("./lib/modules/{k}/updates/dkms/hello.ko")
    );
    // Nothing but the module and its required documentation.
    for l in listed.iter().filter(|l| !l.mode.starts_with('d')) {
        assert!(
            l.path.ends_with(".ko") || l.path.starts_with("./usr/share/doc/hello-modules-"),
            "unexpected file {}",
            l.path
        );
    }
    let x = sb.root().join("x");
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&x));
    assert_eq!(
        fs::read(x.join(format!("lib/modules/{k}/updates/dkms/hello.ko"))).unwrap(),
        fs::read(&kos[0]).unwrap()
    );

    let (errors, warnings) = lintian(deb);
    assert!(errors.is_empty(), "lintian errors: {errors:?}");
    eprintln!("lintian warnings: {warnings:?}");
    println!(
        "dpkg-deb -I:\n{}",
        stdout(Command::new("dpkg-deb").arg("-I").arg(deb))
    );
}

#[test]
fn same_input_gives_the_same_bytes() {
    if !need_tool("dpkg-deb") {
        return;
    }
    let sb = Sandbox::empty();
    sb.fake_built("repro", "2.1", "", FAKE_K, 5000);
    let a = mkbmdeb(&sb, &["repro/2.1", "-k", FAKE_K], &[]);
    let out2 = sb.root().join("second");
    let b = mkbmdeb(
        &sb,
        &[
            "repro/2.1",
            "-k",
            FAKE_K,
            "--output",
            out2.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(fs::read(&a[0]).unwrap(), fs::read(&b[0]).unwrap());
    let sums = stdout(Command::new("sha256sum").arg(&a[0]).arg(&b[0]));
    eprintln!("{sums}");

    // The same tree in another place gives the same bytes too.
    let other = Sandbox::empty();
    copy_dir(&sb.root().join("usr"), &other.root().join("usr"));
    copy_dir(&sb.root().join("var"), &other.root().join("var"));
    fs::remove_dir_all(other.version_dir("repro", "2.1").join("bmdeb")).unwrap();
    let c = mkbmdeb(&other, &["repro/2.1", "-k", FAKE_K], &[]);
    assert_eq!(fs::read(&a[0]).unwrap(), fs::read(&c[0]).unwrap());

    // SOURCE_DATE_EPOCH sets every timestamp (2023-11-14 22:13:20 UTC).
    let out3 = sb.root().join("third");
    let d = mkbmdeb(
        &sb,
        &[
            "repro/2.1",
            "-k",
            FAKE_K,
            "--output",
            out3.to_str().unwrap(),
        ],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    for l in contents(&d[0]) {
        assert_eq!(l.date, "2023-11-14 22:13", "{l:?}");
    }
    let ar = stdout(Command::new("ar").arg("tv").arg(&d[0]));
    assert!(ar.lines().all(|l| l.contains("Nov 14 22:13 2023")), "{ar}");
    assert_ne!(fs::read(&a[0]).unwrap(), fs::read(&d[0]).unwrap());
    let changelog = stdout(Command::new("sh").arg("-c").arg(format!(
        "dpkg-deb --fsys-tarfile {} | tar -xO ./usr/share/doc/repro-modules-{FAKE_K}/changelog.gz | zcat",
        d[0].display()
    )));
    assert!(
        changelog.contains("  Tue, 14 Nov 2023 22:13:20 +0000"),
        "{changelog}"
    );
}

#[test]
fn installs_and_removes_with_dpkg_in_a_sandbox_root() {
    if !need_tool("dpkg") || !need_tool("depmod") {
        return;
    }
    let sb = Sandbox::empty();
    sb.fake_built("sbx", "1.0", "", FAKE_K, 2000);
    let deb = mkbmdeb(&sb, &["sbx/1.0", "-k", FAKE_K], &[]).remove(0);

    // The scripts need nothing from rdkms: only sh, depmod and (if asked) update-initramfs.
    let ctl = sb.root().join("ctl");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&ctl));
    for s in ["postinst", "postrm"] {
        let text = fs::read_to_string(ctl.join(s)).unwrap();
        assert!(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .all(|l| !l.contains("rdkms") && !l.contains("dkms ")),
            "{s}: {text}"
        );
        run(Command::new("sh").arg("-n").arg(ctl.join(s)));
    }

    let target = tempfile::tempdir().unwrap();
    let t = target.path();
    dpkg_root(t);
    let kimg = fake_kernel_package(sb.root(), FAKE_K);
    run(dpkg(t).arg("-i").arg(&kimg));
    run(dpkg(t).arg("-i").arg(&deb));
    let installed = t.join(format!("lib/modules/{FAKE_K}/updates/dkms/sbx.ko"));
    assert!(installed.is_file());
    assert_eq!(
        fs::metadata(&installed).unwrap().len(),
        2000,
        "the packaged module is installed"
    );
    assert!(depmod_lists(t, FAKE_K).contains(&"updates/dkms/sbx.ko".to_string()));

    let pkgs = dpkg::installed_packages(&Paths::under(t)).unwrap();
    assert_eq!(pkgs.len(), 1);
    assert_eq!(pkgs[0].package, format!("sbx-modules-{FAKE_K}"));
    assert_eq!(pkgs[0].state, "installed");
    assert_eq!(
        pkgs[0].modules,
        [PathBuf::from(format!(
            "/lib/modules/{FAKE_K}/updates/dkms/sbx.ko"
        ))]
    );

    run(dpkg(t).arg("-r").arg(format!("sbx-modules-{FAKE_K}")));
    assert!(!installed.exists());
    assert!(depmod_lists(t, FAKE_K).is_empty());
    assert!(dpkg::installed_packages(&Paths::under(t))
        .unwrap()
        .is_empty());
}

#[test]
fn package_wins_over_a_dkms_built_copy() {
    if !need_tool("dpkg") || !need_tool("depmod") {
        return;
    }
    let sb = Sandbox::empty();
    sb.fake_built("both", "1.0", "", FAKE_K, 3000);
    let deb = mkbmdeb(&sb, &["both/1.0", "-k", FAKE_K], &[]).remove(0);

    let target = tempfile::tempdir().unwrap();
    let t = target.path();
    dpkg_root(t);
    run(dpkg(t)
        .arg("-i")
        .arg(fake_kernel_package(sb.root(), FAKE_K)));
    // A copy installed by dkms/rdkms before: not owned by any package.
    let file = t.join(format!("lib/modules/{FAKE_K}/updates/dkms/both.ko"));
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(&file, b"dkms-built copy").unwrap();
    let paths = Paths::under(t);
    assert!(dpkg::owner(&paths, &dpkg::installed_packages(&paths).unwrap(), &file).is_none());

    run(dpkg(t).arg("-i").arg(&deb));
    assert_eq!(fs::metadata(&file).unwrap().len(), 3000, "dpkg replaced it");
    let pkgs = dpkg::installed_packages(&paths).unwrap();
    let owner = dpkg::owner(&paths, &pkgs, &file).expect("owned by the package");
    assert_eq!(owner.package, format!("both-modules-{FAKE_K}"));
    assert_eq!(
        status_lines(t, &[]),
        [format!(
            "both/1.0, {FAKE_K}, x86_64: installed (binary package both-modules-{FAKE_K})"
        )]
    );
}

#[test]
fn install_and_uninstall_leave_package_owned_files_alone() {
    if !need_tool("dpkg") || !need_tool("depmod") {
        return;
    }
    // One root is both the build host (dkms tree) and the dpkg root the package goes into.
    let sb = Sandbox::empty();
    let r = sb.root();
    sb.fake_built("own", "1.0", "", FAKE_K, 3000);
    let deb = mkbmdeb(&sb, &["own/1.0", "-k", FAKE_K], &[]).remove(0);
    dpkg_root(r);
    run(dpkg(r).arg("-i").arg(fake_kernel_package(r, FAKE_K)));
    run(dpkg(r).arg("-i").arg(&deb));
    let file = r.join(format!("lib/modules/{FAKE_K}/updates/dkms/own.ko"));
    let size = || fs::metadata(&file).unwrap().len();
    assert_eq!(size(), 3000);
    // The DKMS build changes afterwards (a newer build of the same version).
    let kos = r.join("newer");
    fs::create_dir_all(&kos).unwrap();
    sb.built_by_hand("own", "1.0", FAKE_K, ARCH, &[fake_ko(&kos, "own", 5000)]);
    let package = format!("own-modules-{FAKE_K}");

    // install skips the owned file (exit 0, like a module DKMS's version check keeps) and
    // says which package owns it and how to override.
    sb.rdkms_cmd()
        .args(["install", "own/1.0", "-k", FAKE_K, "--no-depmod"])
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "{} belongs to the installed package {package}; it stays in place. Remove the package first, or use --force to overwrite it.",
            file.display()
        )));
    assert_eq!(size(), 3000, "the package's file was not overwritten");
    assert_eq!(
        status_lines(r, &[]),
        [
            format!("own/1.0, {FAKE_K}, {ARCH}: installed (Differences between built and installed modules)"),
            format!("own/1.0, {FAKE_K}, {ARCH}: installed (binary package {package})"),
        ]
    );

    // uninstall never deletes it.
    sb.rdkms_cmd()
        .args(["uninstall", "own/1.0", "-k", FAKE_K, "--no-depmod"])
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "Left {} in place: it belongs to the package {package}",
            file.display()
        )));
    assert_eq!(size(), 3000);

    // --force overwrites it; uninstall still leaves the path to dpkg, which removes it.
    sb.rdkms_cmd()
        .args(["install", "own/1.0", "-k", FAKE_K, "--no-depmod", "--force"])
        .assert()
        .success();
    assert_eq!(size(), 5000);
    sb.rdkms_cmd()
        .args(["uninstall", "own/1.0", "-k", FAKE_K, "--no-depmod"])
        .assert()
        .success();
    assert!(file.is_file());
    run(dpkg(r).arg("-r").arg(&package));
    assert!(!file.exists());

    // Without the package the DKMS build installs as usual.
    sb.rdkms_cmd()
        .args(["install", "own/1.0", "-k", FAKE_K, "--no-depmod"])
        .assert()
        .success()
        .stderr(predicate::str::contains("belongs to").not());
    assert_eq!(size(), 5000);
    assert_eq!(
        status_lines(r, &[]),
        [format!("own/1.0, {FAKE_K}, {ARCH}: installed")]
    );
}

#[test]
fn remake_initrd_adds_the_initramfs_update() {
    if !need_tool("dpkg-deb") {
        return;
    }
    let sb = Sandbox::empty();
    for (name, extra, want) in [("ird", "REMAKE_INITRD=yes\n", true), ("noird", "", false)] {
        sb.fake_built(name, "1", extra, FAKE_K, 10);
        let deb = mkbmdeb(&sb, &[&format!("{name}/1"), "-k", FAKE_K], &[]).remove(0);
        let ctl = sb.root().join(format!("ctl-{name}"));
        run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&ctl));
        for s in ["postinst", "postrm"] {
            let text = fs::read_to_string(ctl.join(s)).unwrap();
            assert_eq!(
                text.contains("update-initramfs -u -k \"$KVER\""),
                want,
                "{name} {s}"
            );
            assert!(text.contains(&format!("KVER='{FAKE_K}'")));
        }
    }
}

#[test]
fn all_kernels_and_other_architectures() {
    if !need_tool("dpkg-deb") {
        return;
    }
    let sb = Sandbox::empty();
    let src = fake_source(sb.root(), "multi", "3.0", "");
    sb.added_by_hand("multi", "3.0", &src);
    let ko = fake_ko(sb.root(), "multi", 10);
    sb.built_by_hand(
        "multi",
        "3.0",
        "6.1.0-98-amd64",
        ARCH,
        std::slice::from_ref(&ko),
    );
    sb.built_by_hand("multi", "3.0", FAKE_K, ARCH, std::slice::from_ref(&ko));
    sb.built_by_hand("multi", "3.0", "6.1.0-99-arm64", "aarch64", &[ko]);
    let debs = mkbmdeb(&sb, &["multi/3.0", "--all"], &[]);
    let names: Vec<String> = debs
        .iter()
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "multi-modules-6.1.0-98-amd64_3.0_amd64.deb",
            "multi-modules-6.1.0-99-amd64_3.0_amd64.deb",
            "multi-modules-6.1.0-99-arm64_3.0_arm64.deb"
        ]
    );
    let f = fields(&debs[2]);
    assert!(f.contains(&("Architecture".into(), "arm64".into())));
    // Repeated -k, one arch given for all.
    let out = sb.root().join("two");
    let debs = mkbmdeb(
        &sb,
        &[
            "multi/3.0",
            "-k",
            "6.1.0-98-amd64",
            "-k",
            FAKE_K,
            "-a",
            "x86_64",
            "--output",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(debs.len(), 2);
    assert!(debs.iter().all(|d| d.starts_with(&out)));
}

#[test]
fn errors_name_the_fix() {
    let sb = Sandbox::empty();
    // Not added and no sources to add: build's error.
    sb.rdkms_cmd()
        .args(["mkbmdeb", "nope/1", "-k", FAKE_K])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("usr/src/nope-1 does not exist"));
    sb.rdkms_cmd()
        .args(["mkbmdeb", "-k", FAKE_K])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("mkbmdeb NAME/VERSION"));
    let src = fake_source(sb.root(), "unbuilt", "1.0", "");
    sb.added_by_hand("unbuilt", "1.0", &src);
    // Not built and no headers to build it: build's error, naming the package to install.
    sb.rdkms_cmd()
        .args(["mkbmdeb", "unbuilt/1.0", "-k", FAKE_K])
        .assert()
        .code(21)
        .stderr(predicate::str::contains(format!(
            "Install linux-headers-{FAKE_K}"
        )));
    // --all with nothing built.
    sb.rdkms_cmd()
        .args(["mkbmdeb", "unbuilt/1.0", "--all"])
        .assert()
        .code(6)
        .stderr(predicate::str::contains("run rdkms build unbuilt/1.0"));
    sb.fake_built("badver", "v1", "", FAKE_K, 1);
    sb.rdkms_cmd()
        .args(["mkbmdeb", "badver/v1", "-k", FAKE_K])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("must start with a digit"));
    sb.rdkms_cmd()
        .args(["mkbmdeb", "badver/v1", "-k", FAKE_K])
        .env("SOURCE_DATE_EPOCH", "yesterday")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("SOURCE_DATE_EPOCH"));
    assert!(!Path::new(&sb.version_dir("badver", "v1").join("bmdeb"))
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some()));
}
