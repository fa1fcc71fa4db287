//! DKMS 3.2.2's text when rdkms runs as `dkms` without `--hook`: autoinstall in BUILD_DEPENDS
//! rounds with a depmod per module, kernel_prerm's `dkms: removing module` lines (fast tier:
//! fake kbuild, depmod stub). `tests/dkms-suite` checks the same against DKMS's own tests.

mod common;

use std::fs;
use std::process::Output;

use common::{arch, Sandbox};

const K: &str = "6.1.0-9-amd64";

/// Runs `dkms --root ROOT ARGS` (a `dkms` link to the rdkms binary, the depmod stub in PATH).
fn dkms(sb: &Sandbox, args: &[&str]) -> Output {
    sb.dkms_std(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn autoinstall_and_prerm_as_dkms_print_dkms_text() {
    let mut sb = Sandbox::new();
    sb.record_depmod();
    sb.fake_kernel(K);
    sb.source("aa-top", "1")
        .conf("BUILD_DEPENDS=\"zz-base\"")
        .create();
    sb.source("zz-base", "1").create();
    sb.source("manual", "1").conf("AUTOINSTALL=\"\"").create();
    for m in ["aa-top/1", "zz-base/1", "manual/1"] {
        sb.rdkms(["add", m]).assert().success();
    }

    let out = dkms(&sb, &["autoinstall", "-k", K]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("rdkms: "), "{err}");
    let a = arch();
    let at = |s: &str| {
        err.find(s)
            .unwrap_or_else(|| panic!("{s:?} missing: {err}"))
    };
    // The dependency first (a later round for its dependant), each with its depmod.
    assert!(
        at(&format!(
            "Autoinstall of module zz-base/1 for kernel {K} ({a})\n"
        )) < at(&format!(
            "Autoinstall of module aa-top/1 for kernel {K} ({a})\n"
        ))
    );
    assert!(err.ends_with(&format!(
        "Running depmod... done.\n\nAutoinstall on {K} succeeded for module(s) zz-base aa-top.\n"
    )));
    assert!(!err.contains("manual/1"), "{err}");
    assert_eq!(err.matches("Running depmod... done.").count(), 2, "{err}");
    assert!(sb.installed_ko(K, "aa-top").is_file());

    // Nothing left to do: no output at all.
    let again = dkms(&sb, &["autoinstall", "-k", K]);
    assert_eq!(
        (again.status.code(), stderr(&again)),
        (Some(0), String::new())
    );

    let out = dkms(&sb, &["kernel_prerm", "-k", K]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.starts_with(&format!(
        "dkms: removing module aa-top/1 for kernel {K} ({a})\nModule aa-top/1 for kernel {K} ({a}):\n"
    )));
    assert!(err.ends_with("\nRunning depmod... done.\n"), "{err}");
    assert_eq!(err.matches("Running depmod").count(), 1, "{err}");
    assert!(!sb.installed_ko(K, "zz-base").exists());
    assert!(!sb.built("zz-base", "1", K).exists());
    assert!(fs::read_dir(sb.tree().join("zz-base/1")).is_ok());
}
