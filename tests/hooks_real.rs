//! Real tier of the hooks: the hook scripts, run as dpkg runs them (common.postinst directly,
//! the kernel hooks through run-parts), build and remove `examples/hello-dkms` against the
//! installed Debian kernel headers in a sandbox root, with real make, gcc and depmod.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{copy_dir, real_kernel_dir, real_tier, repo};

fn prerequisites() -> Option<String> {
    real_tier(&["make", "gcc", "modinfo", "depmod", "run-parts"])
}

/// Runs a hook file the way dpkg's scripts do, with rdkms from this build and the sandbox as
/// root; returns stdout and stderr after checking the exit status.
fn hook(root: &Path, mut cmd: Command) -> (String, String) {
    let out = cmd
        .env("RDKMS_BIN", assert_cmd::cargo::cargo_bin("rdkms"))
        .env("RDKMS_ROOT", root)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?}: {stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

fn run_parts(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("run-parts");
    cmd.arg("--exit-on-error");
    for a in args {
        cmd.arg(format!("--arg={a}"));
    }
    cmd.arg(dir);
    cmd
}

#[test]
fn hooks_build_install_and_remove_hello_with_real_headers() {
    let Some(kernel) = prerequisites() else {
        return;
    };
    let sb = tempfile::tempdir().unwrap();
    let root = sb.path();
    let kdir = real_kernel_dir(root, &kernel);
    fs::create_dir_all(kdir.join("kernel")).unwrap();
    fs::create_dir_all(root.join("boot")).unwrap();
    fs::write(root.join(format!("boot/vmlinuz-{kernel}")), "").unwrap();
    fs::create_dir_all(root.join("usr/src")).unwrap();
    copy_dir(
        &repo("examples/hello-dkms"),
        &root.join("usr/src/hello-1.0"),
    );
    // The hook files at their installed places inside the sandbox.
    for (src, dest) in [
        ("kernel-postinst.d/dkms", "etc/kernel/postinst.d/dkms"),
        ("hooks/prerm.d/dkms", "etc/kernel/prerm.d/dkms"),
        (
            "hooks/header_postinst.d/dkms",
            "etc/kernel/header_postinst.d/dkms",
        ),
        ("hooks/common.postinst", "usr/lib/dkms/common.postinst"),
    ] {
        let d = root.join(dest);
        fs::create_dir_all(d.parent().unwrap()).unwrap();
        fs::copy(repo(src), &d).unwrap();
    }
    let installed = kdir.join("updates/dkms/hello.ko");
    let image = format!("/boot/vmlinuz-{kernel}");

    // The module package's postinst: NAME VERSION TARBALL_ROOT ARCH UPGRADE.
    let mut postinst = Command::new(root.join("usr/lib/dkms/common.postinst"));
    postinst.args(["hello", "1.0", "/usr/share/hello-dkms", "", ""]);
    let (stdout, stderr) = hook(root, postinst);
    assert_eq!(stdout, "");
    assert!(stderr.contains("hello/1.0 for"), "{stderr}");
    assert!(installed.is_file(), "{stderr}");
    let vermagic = Command::new("modinfo")
        .args(["-F", "vermagic"])
        .arg(&installed)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&vermagic.stdout).starts_with(&kernel));
    assert!(fs::read_to_string(kdir.join("modules.dep"))
        .unwrap()
        .contains("updates/dkms/hello.ko"));

    // The kernel is removed: prerm.d unbuilds for it, the module stays registered.
    let (stdout, _) = hook(
        root,
        run_parts(&root.join("etc/kernel/prerm.d"), &[&kernel, &image]),
    );
    assert_eq!(stdout, "");
    assert!(!installed.exists());
    assert!(root.join("var/lib/dkms/hello/1.0/source").exists());

    // The kernel is installed again: postinst.d builds and installs for it.
    let (stdout, _) = hook(
        root,
        run_parts(&root.join("etc/kernel/postinst.d"), &[&kernel, &image]),
    );
    assert_eq!(stdout, "");
    assert!(installed.is_file());

    // Headers configured later find nothing left to do.
    let (stdout, stderr) = hook(
        root,
        run_parts(&root.join("etc/kernel/header_postinst.d"), &[&kernel]),
    );
    assert_eq!(stdout, "");
    assert!(!stderr.contains("FAILED"), "{stderr}");
}
