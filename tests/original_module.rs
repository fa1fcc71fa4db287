//! A DKMS module that replaces one of the kernel's own (tp-smapi-dkms's hdaps on Debian 13):
//! as DKMS 3.2.2 does, the kernel's module is set aside in `<tree>/M/original_module/K/A/`
//! with a `.origin` record on install, status says so, and uninstall puts it back (fast tier:
//! fake kernel tree and make).

mod common;

use std::fs;

use predicates::prelude::*;

use common::{arch, Sandbox};

const K: &str = "6.12.117+deb13-amd64";

#[test]
fn the_kernels_module_is_set_aside_and_restored() {
    let sb = Sandbox::new();
    sb.fake_kernel(K).kernel_image(K);
    let a = arch();
    let kernel_copy = sb
        .modules_dir(K)
        .join("kernel/drivers/platform/x86/hdaps.ko.xz");
    fs::create_dir_all(kernel_copy.parent().unwrap()).unwrap();
    fs::write(&kernel_copy, "the kernel's own hdaps").unwrap();
    sb.source("tp-smapi", "0.44")
        .modules(&["thinkpad_ec", "hdaps"])
        .create();
    sb.rdkms(["install", "tp-smapi/0.44", "-k", K])
        .assert()
        .success()
        .stderr(predicates::str::contains(format!(
            "Found pre-existing /lib/modules/{K}/kernel/drivers/platform/x86/hdaps.ko.xz, archiving for uninstallation"
        )));
    let backup = sb.tree().join(format!("tp-smapi/original_module/{K}/{a}"));
    assert_eq!(
        fs::read_to_string(backup.join("hdaps.ko.xz")).unwrap(),
        "the kernel's own hdaps"
    );
    assert_eq!(
        fs::read_to_string(backup.join("hdaps.ko.xz.origin")).unwrap(),
        format!("/lib/modules/{K}/kernel/drivers/platform/x86/hdaps.ko.xz\n")
    );
    assert!(!kernel_copy.exists());
    let installed = sb.modules_dir(K).join("updates/dkms");
    assert!(installed.join("hdaps.ko.xz").is_file());
    assert!(installed.join("thinkpad_ec.ko.xz").is_file());
    let st = sb.status();
    assert!(
        st.starts_with(&format!("tp-smapi/0.44, {K}, {a}: installed (")),
        "{st}"
    );
    assert!(!st.contains("Diff"), "{st}");

    // A reinstall keeps the archive (the kernel's copy is not archived twice).
    sb.rdkms(["install", "tp-smapi/0.44", "-k", K, "--force", "-q"])
        .assert()
        .success();
    assert!(backup.join("hdaps.ko.xz.origin").is_file());

    sb.rdkms(["uninstall", "tp-smapi/0.44", "-k", K])
        .assert()
        .success()
        .stderr(predicates::str::contains(format!(
            "Restoring archived original module /lib/modules/{K}/kernel/drivers/platform/x86/hdaps.ko.xz"
        )));
    assert_eq!(
        fs::read_to_string(&kernel_copy).unwrap(),
        "the kernel's own hdaps"
    );
    assert!(!installed.join("hdaps.ko.xz").exists());
    assert!(!sb.tree().join("tp-smapi/original_module").exists());
    assert_eq!(sb.status(), format!("tp-smapi/0.44, {K}, {a}: built\n"));
}

/// A run killed after copying a module but before recording the install leaves this module's
/// own file in `updates/dkms`; the next install must not archive it as the kernel's original
/// (found by the random-kill test in `hooks_concurrency`). Another module's file there still is.
#[test]
fn a_leftover_of_an_interrupted_install_is_not_an_original() {
    let sb = Sandbox::new();
    sb.fake_kernel(K);
    let a = arch();
    sb.source("tp-smapi", "0.44")
        .modules(&["thinkpad_ec", "hdaps"])
        .create();
    sb.rdkms(["install", "tp-smapi/0.44", "-k", K, "-q"])
        .assert()
        .success();
    // What a kill between the copy and the link leaves behind.
    fs::remove_file(sb.tree().join(format!("tp-smapi/kernel-{K}-{a}"))).unwrap();
    sb.rdkms(["install", "tp-smapi/0.44", "-k", K])
        .assert()
        .success()
        .stderr(predicates::str::contains("archiving").not());
    assert!(!sb.tree().join("tp-smapi/original_module").exists());
    assert_eq!(sb.status(), format!("tp-smapi/0.44, {K}, {a}: installed\n"));

    // A different hdaps in the same place (another DKMS module's) is archived as DKMS does.
    sb.rdkms(["uninstall", "tp-smapi/0.44", "-k", K, "-q"])
        .assert()
        .success();
    let other = sb.modules_dir(K).join("updates/dkms/hdaps.ko.xz");
    fs::create_dir_all(other.parent().unwrap()).unwrap();
    fs::write(&other, "another package's hdaps").unwrap();
    sb.rdkms(["install", "tp-smapi/0.44", "-k", K])
        .assert()
        .success()
        .stderr(predicates::str::contains(format!(
            "Found pre-existing /lib/modules/{K}/updates/dkms/hdaps.ko.xz, archiving for uninstallation"
        )));
}
