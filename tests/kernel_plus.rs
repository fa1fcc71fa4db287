//! Debian 13's kernel versions carry a `+` (`6.12.117+deb13-amd64`): every command that takes,
//! prints or stores a kernel version handles it like any other (fake kernel tree, fast tier).

mod common;

use std::fs;

use common::{arch, Sandbox};

const K: &str = "6.12.117+deb13-amd64";

fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    fs::create_dir_all(sb.root().join("etc/dkms")).unwrap();
    sb.kernel_image(K).fake_kernel(K);
    sb.source("hello", "1.0").create();
    sb
}

#[test]
fn install_status_json_and_plan_with_a_plus_in_the_kernel_version() {
    let sb = sandbox();
    let a = arch();
    sb.rdkms(["install", "hello/1.0", "-k", &format!("{K}/{a}"), "-q"])
        .assert()
        .success();
    assert!(sb.installed_ko(K, "hello").is_file());
    assert!(sb.built("hello", "1.0", K).is_dir());
    let link = sb.tree().join(format!("hello/kernel-{K}-{a}"));
    assert_eq!(
        fs::read_link(&link).unwrap().to_string_lossy(),
        format!("1.0/{K}/{a}")
    );
    let line = format!("hello/1.0, {K}, {a}: installed\n");
    assert_eq!(sb.status(), line);
    let out = sb.rdkms(["status", "-k", K]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), line);
    let out = sb.rdkms(["status", "--json"]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["kernel"], K);
    assert_eq!(json[0]["state"], "installed");
    let out = sb.rdkms(["plan", "-k", K, "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["steps"], serde_json::json!([]), "{plan}");
    sb.rdkms(["kernel_prerm", "--hook", "-k", K])
        .assert()
        .success()
        .stdout("");
    assert!(!sb.installed_ko(K, "hello").exists());
    assert_eq!(sb.status(), "hello/1.0: added\n");
    sb.rdkms(["autoinstall", "-k", K]).assert().success();
    assert_eq!(sb.status(), line);
}
