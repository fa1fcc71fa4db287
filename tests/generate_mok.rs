//! `generate_mok` (DKMS 3.2.2's action): makes the MOK pair module signing uses when it is
//! missing, announces it with DKMS's lines, and keeps an existing pair.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::Sandbox;

#[test]
fn generate_mok_makes_the_pair_once() {
    if common::skip_unless(has_openssl(), "openssl is not installed") {
        return;
    }
    let sb = Sandbox::new();
    let key = sb.tree().join("mok.key");
    let cert = sb.tree().join("mok.pub");
    let out = sb
        .rdkms(["generate_mok"])
        .assert()
        .success()
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr,
        format!(
            "Signing key: {}\nPublic certificate (MOK): {}\n\
             Certificate or key are missing, generating self signed certificate for MOK...\n",
            key.display(),
            cert.display()
        )
    );
    assert!(out.stdout.is_empty());
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let der = fs::read(&cert).unwrap();
    assert_eq!(der.first(), Some(&0x30), "the certificate is DER");

    sb.rdkms(["generate_mok"]).assert().success();
    assert_eq!(fs::read(&cert).unwrap(), der, "an existing pair is kept");
}

fn has_openssl() -> bool {
    std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}
