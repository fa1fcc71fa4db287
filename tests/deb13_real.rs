//! Real tier for what Debian 13 needs from a build (real headers, make, modinfo): modules
//! compressed in-process like the kernel's own (xz, zstd, gzip) and still signed and readable
//! by kmod, and DKMS 3.2.2's version check that lets an unversioned module replace a different
//! same-named kernel module (tp-smapi-dkms's hdaps). The full Debian 13 run (6.12 headers in a
//! trixie chroot) is tests/deb13/real-module.sh.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{real_tier, repo, Sandbox};

fn modinfo(field: &str, file: &Path) -> String {
    let out = Command::new("modinfo")
        .args(["-F", field])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "modinfo {}", file.display());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn real_root(kernel: &str) -> Sandbox {
    let sb = Sandbox::new();
    sb.real_headers(kernel);
    sb
}

#[test]
fn modules_are_compressed_in_process_signed_and_readable_by_kmod() {
    let Some(kernel) = real_tier(&["make", "gcc", "modinfo", "xz", "zstd", "gzip"]) else {
        return;
    };
    for (suffix, test) in [(".xz", "xz"), (".zst", "zstd"), (".gz", "gzip")] {
        let sb = real_root(&kernel);
        // The kernel's own modules decide the compression, as with DKMS.
        let drivers = sb.modules_dir(&kernel).join("kernel/drivers");
        fs::create_dir_all(&drivers).unwrap();
        fs::write(drivers.join(format!("other.ko{suffix}")), "").unwrap();
        common::copy_dir(
            &repo("examples/hello-dkms"),
            &sb.root().join("usr/src/hello-1.0"),
        );
        sb.rdkms(["install", "hello/1.0", "-k", &kernel, "-q"])
            // No compressor command may be needed: PATH without xz, zstd and gzip.
            .env("PATH", tools_without_compressors(&sb))
            .assert()
            .success();
        let ko = sb
            .modules_dir(&kernel)
            .join(format!("updates/dkms/hello.ko{suffix}"));
        assert!(ko.is_file(), "{} missing", ko.display());
        let tested = Command::new(test).arg("-t").arg(&ko).status().unwrap();
        assert!(tested.success(), "{test} -t {}", ko.display());
        // kmod reads the file itself when built with that decompressor (Debian 12's kmod
        // has no zlib); the decompressed module is checked in every case.
        let plain = sb.root().join("plain.ko");
        let out = Command::new(test).arg("-dc").arg(&ko).output().unwrap();
        fs::write(&plain, out.stdout).unwrap();
        let mut files = vec![plain];
        if kmod_reads(test) {
            files.push(ko.clone());
        }
        for f in &files {
            assert_eq!(modinfo("signer", f), "DKMS module signing key", "{suffix}");
            assert_eq!(modinfo("sig_hashalgo", f), "sha256", "{suffix}");
            assert!(modinfo("vermagic", f).starts_with(&kernel), "{suffix}");
            assert_eq!(modinfo("version", f), "1.0", "{suffix}");
        }
    }
}

/// Whether the system's kmod was built with the decompressor of `tool` (`kmod --version`).
fn kmod_reads(tool: &str) -> bool {
    let out = Command::new("kmod").arg("--version").output().unwrap();
    let flag = match tool {
        "xz" => "+XZ",
        "zstd" => "+ZSTD",
        _ => "+ZLIB",
    };
    String::from_utf8_lossy(&out.stdout).contains(flag)
}

/// A PATH directory linking every tool of /usr/bin and /bin except the compressors.
fn tools_without_compressors(sb: &Sandbox) -> String {
    let bin = sb.root().join("no-compressors");
    fs::create_dir_all(&bin).unwrap();
    for dir in ["/usr/local/sbin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name();
            let n = name.to_string_lossy();
            if ["xz", "zstd", "gzip", "openssl", "unxz", "pigz"].contains(&n.as_ref()) {
                continue;
            }
            let _ = std::os::unix::fs::symlink(e.path(), bin.join(&name));
        }
    }
    bin.display().to_string()
}

#[test]
fn unversioned_module_replaces_a_different_kernel_module_of_the_same_name() {
    let Some(kernel) = real_tier(&["make", "gcc", "modinfo", "objcopy"]) else {
        return;
    };
    let sb = real_root(&kernel);
    let src = sb.root().join("usr/src/plain-1");
    fs::create_dir_all(&src).unwrap();
    fs::write(
        src.join("plain.c"),
        "#include <linux/module.h>\nstatic int __init p_init(void) { return 0; }\n\
         static void __exit p_exit(void) {}\nmodule_init(p_init);\nmodule_exit(p_exit);\n\
         MODULE_LICENSE(\"GPL\");\n",
    )
    .unwrap();
    fs::write(src.join("Makefile"), "obj-m += plain.o\n").unwrap();
    fs::write(
        src.join("dkms.conf"),
        "PACKAGE_NAME=plain\nPACKAGE_VERSION=1\nBUILT_MODULE_NAME[0]=plain\n\
         DEST_MODULE_LOCATION[0]=/updates/dkms\nAUTOINSTALL=yes\n",
    )
    .unwrap();
    sb.rdkms(["build", "plain/1", "-k", &kernel, "-q"])
        .assert()
        .success();
    let built = sb.built("plain", "1", &kernel).join("module/plain.ko");
    assert_eq!(modinfo("version", &built), "");
    assert_eq!(modinfo("srcversion", &built), "");
    let intree = sb.modules_dir(&kernel).join("kernel/drivers/plain.ko");
    fs::create_dir_all(intree.parent().unwrap()).unwrap();
    let installed = sb.modules_dir(&kernel).join("updates/dkms/plain.ko");

    // The very same module in the kernel: nothing to replace.
    fs::copy(&built, &intree).unwrap();
    // Nothing installed: DKMS 3.2.2 ends with "Installation aborted." (exit 6).
    sb.rdkms(["install", "plain/1", "-k", &kernel, "--no-depmod"])
        .assert()
        .code(6)
        .stderr(predicates::str::contains("exactly matches"));
    assert!(!installed.exists());
    sb.rdkms(["uninstall", "plain/1", "-k", &kernel, "-q", "--no-depmod"])
        .assert()
        .success();

    // A different build without version or srcversion: DKMS 3.2.2 compares the bytes and
    // installs ours.
    let status = Command::new("objcopy")
        .args(["-R", ".comment"])
        .arg(&built)
        .arg(&intree)
        .status()
        .unwrap();
    assert!(status.success());
    assert_ne!(fs::read(&built).unwrap(), fs::read(&intree).unwrap());
    sb.rdkms(["install", "plain/1", "-k", &kernel, "-q", "--no-depmod"])
        .assert()
        .success();
    assert_eq!(fs::read(&installed).unwrap(), fs::read(&built).unwrap());
}
