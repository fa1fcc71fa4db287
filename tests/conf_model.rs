//! The typed model DKMS derives from the directives: module defaults, STRIP, MAKE/MAKE_MATCH,
//! PATCH/PATCH_MATCH, AUTOINSTALL and BUILD_EXCLUSIVE_*, with DKMS's VER() ordering.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use rdkms::base::version::ver_cmp;
use rdkms::conf::model::Target;
use rdkms::conf::{Directives, DkmsConf, EvalPath};

/// A kernel name as data: these models are evaluated in memory, nothing is read from
/// /lib/modules for it (the version-order tests below likewise only compare names).
const KERNEL: &str = "6.1.0-56-amd64";

fn target(kernel: &str, config: &Path) -> Target {
    Target {
        kernel: kernel.into(),
        arch: "x86_64".into(),
        kernel_source_dir: PathBuf::from("/ksrc"),
        kernel_config: config.to_path_buf(),
        build_dir: PathBuf::from("/var/lib/dkms/p/1/build"),
        location_override: Some("/updates/dkms".into()),
    }
}

/// A valid one-module conf plus `extra` elements (NAME, index, value).
fn directives(extra: &[(&str, usize, &str)]) -> Directives {
    let mut d = Directives::default();
    d.set("PACKAGE_NAME", 0, "p".into());
    d.set("PACKAGE_VERSION", 0, "1".into());
    d.set("DEST_MODULE_LOCATION", 0, "/extra".into());
    for (n, i, v) in extra {
        d.set(n, *i, v.to_string());
    }
    d
}

fn model_for(extra: &[(&str, usize, &str)], kernel: &str) -> DkmsConf {
    DkmsConf::from_directives(
        &directives(extra),
        Path::new("dkms.conf"),
        &target(kernel, Path::new("/nonexistent/.config")),
        EvalPath::Static,
    )
    .unwrap_or_else(|e| panic!("{extra:?}: {e}"))
}

fn model(extra: &[(&str, usize, &str)]) -> DkmsConf {
    model_for(extra, KERNEL)
}

#[test]
fn single_module_defaults() {
    let m = model(&[("BUILT_MODULE_LOCATION", 0, "src")]);
    assert_eq!(m.modules.len(), 1);
    let e = &m.modules[0];
    assert_eq!(
        e.built_name, "p",
        "BUILT_MODULE_NAME defaults to PACKAGE_NAME"
    );
    assert_eq!(
        e.dest_name, "p",
        "DEST_MODULE_NAME defaults to BUILT_MODULE_NAME"
    );
    assert_eq!(e.built_location, "src/", "a trailing / is added");
    assert_eq!(e.dest_location, "/extra");
    assert_eq!(e.install_location, "/updates/dkms", "Debian's override");
    assert!(e.strip);
    assert_eq!(m.make, "make -C /ksrc M=/var/lib/dkms/p/1/build");
    assert_eq!(m.clean, "make -C /ksrc M=/var/lib/dkms/p/1/build clean");
}

#[test]
fn strip_follows_dkms_case_rules() {
    let m = model(&[
        ("BUILT_MODULE_NAME", 0, "a"),
        ("BUILT_MODULE_NAME", 1, "b"),
        ("BUILT_MODULE_NAME", 2, "c"),
        ("DEST_MODULE_LOCATION", 1, "/extra"),
        ("DEST_MODULE_LOCATION", 2, "/extra"),
        ("STRIP", 0, "No"),
        ("STRIP", 2, "0"),
    ]);
    let strip: Vec<bool> = m.modules.iter().map(|e| e.strip).collect();
    // [1] is empty → STRIP[0]; [2] is neither y* nor n* → DKMS leaves it unset → stripped.
    assert_eq!(strip, vec![false, false, true]);
}

#[test]
fn make_match_last_matching_index_wins() {
    let conf = [
        ("MAKE", 0, "default"),
        ("MAKE", 1, "six"),
        ("MAKE_MATCH", 1, "^6\\."),
        ("MAKE", 2, "six-one"),
        ("MAKE_MATCH", 2, "^6\\.1\\."),
        ("MAKE", 3, "five"),
        ("MAKE_MATCH", 3, "^5\\."),
    ];
    assert_eq!(model_for(&conf, KERNEL).make, "six-one");
    assert_eq!(model_for(&conf, "6.2.0-1-amd64").make, "six");
    assert_eq!(model_for(&conf, "5.10.0-1-amd64").make, "five");
    assert_eq!(model_for(&conf, "4.19.0-1-amd64").make, "default");
}

#[test]
fn make_zero_is_the_default_only_without_make_match_zero() {
    let conf = [("MAKE", 0, "zero"), ("MAKE_MATCH", 0, "^5\\.")];
    assert_eq!(model_for(&conf, "5.10.0-1-amd64").make, "zero");
    assert_eq!(
        model_for(&conf, KERNEL).make,
        "make -C /ksrc M=/var/lib/dkms/p/1/build",
        "MAKE_MATCH[0] set and not matching: DKMS's generic make"
    );
}

#[test]
fn make_match_looks_only_below_the_element_count() {
    // Two MAKE elements: DKMS loops over indices 0 and 1, so MAKE[5] is never considered.
    let conf = [
        ("MAKE", 0, "zero"),
        ("MAKE", 5, "five"),
        ("MAKE_MATCH", 5, "."),
    ];
    assert_eq!(model(&conf).make, "zero");
    let conf = [
        ("MAKE", 1, "one"),
        ("MAKE", 0, "zero"),
        ("MAKE_MATCH", 1, ""),
    ];
    assert_eq!(
        model(&conf).make,
        "zero",
        "an empty MAKE_MATCH never selects"
    );
}

#[test]
fn patches_by_patch_match() {
    let conf = [
        ("PATCH", 0, "all.patch"),
        ("PATCH", 1, "six.patch"),
        ("PATCH_MATCH", 1, "^6"),
        ("PATCH", 2, "five.patch"),
        ("PATCH_MATCH", 2, "^5"),
    ];
    assert_eq!(model(&conf).patches, vec!["all.patch", "six.patch"]);
    assert_eq!(
        model_for(&conf, "5.10.0-1-amd64").patches,
        vec!["all.patch", "five.patch"]
    );
}

#[test]
fn autoinstall_values() {
    for (v, want) in [
        ("yes", true),
        ("YES", true),
        ("Yes", true),
        ("no", false),
        ("", false),
    ] {
        assert_eq!(model(&[("AUTOINSTALL", 0, v)]).autoinstall, want, "{v:?}");
    }
    let bad = DkmsConf::from_directives(
        &directives(&[("AUTOINSTALL", 0, "true")]),
        Path::new("dkms.conf"),
        &target(KERNEL, Path::new("/x")),
        EvalPath::Static,
    );
    assert!(bad.is_err());
}

#[test]
fn build_exclusive_kernel_and_arch_are_regexes() {
    let k = [(
        "BUILD_EXCLUSIVE_KERNEL",
        0,
        "^(5\\.[6-9]\\.|5\\.[1-9][0-9]\\.|[6-9]\\.)",
    )];
    assert_eq!(model_for(&k, KERNEL).excluded, None);
    assert_eq!(model_for(&k, "5.10.0-1-amd64").excluded, None);
    assert!(model_for(&k, "5.4.0-1-amd64").excluded.is_some());
    assert!(
        model(&[("BUILD_EXCLUSIVE_KERNEL", 0, "REQUIRES CONFIG_USB_HID")])
            .excluded
            .is_some()
    );
    assert_eq!(
        model(&[("BUILD_EXCLUSIVE_ARCH", 0, "x86_64|i.86")]).excluded,
        None
    );
    assert!(model(&[("BUILD_EXCLUSIVE_ARCH", 0, "^arm")])
        .excluded
        .is_some());
}

#[test]
fn build_exclusive_min_max_use_ver_ordering() {
    let within = |min: &str, max: &str, kernel: &str| {
        model_for(
            &[
                ("BUILD_EXCLUSIVE_KERNEL_MIN", 0, min),
                ("BUILD_EXCLUSIVE_KERNEL_MAX", 0, max),
            ],
            kernel,
        )
        .excluded
        .is_none()
    };
    assert!(within("5.10", "6.2", "6.1.0-56-amd64"));
    assert!(
        within("6.1.0-56-amd64", "6.1.0-56-amd64", "6.1.0-56-amd64"),
        "inclusive"
    );
    assert!(!within("6.2", "7", "6.1.0-56-amd64"));
    assert!(
        within("5.9", "7", "5.10.0-1-amd64"),
        "5.10 is newer than 5.9"
    );
    // VER("6.1.0-56-amd64") sorts after VER("6.1"): a MAX of 6.1 excludes every 6.1.x kernel.
    assert!(!within("5", "6.1", "6.1.0-56-amd64"));
    let obsolete = model(&[("OBSOLETE_BY", 0, "6.0")]);
    assert!(
        obsolete.excluded.is_some(),
        "OBSOLETE_BY acts as the maximum"
    );
}

#[test]
fn build_exclusive_config_reads_the_kernel_config() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join(".config");
    std::fs::write(
        &config,
        "CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_AB=n\n",
    )
    .unwrap();
    let check = |want: &str, config: &Path| {
        DkmsConf::from_directives(
            &directives(&[("BUILD_EXCLUSIVE_CONFIG", 0, want)]),
            Path::new("dkms.conf"),
            &target(KERNEL, config),
            EvalPath::Static,
        )
        .unwrap()
        .excluded
    };
    assert_eq!(check("CONFIG_A CONFIG_B", &config), None);
    assert_eq!(check("!CONFIG_C", &config), None);
    assert!(check("CONFIG_C", &config).is_some());
    assert!(check("CONFIG_AB", &config).is_some(), "=n is not set");
    assert!(check("CONFIG_A !CONFIG_B", &config).is_some());
    assert_eq!(
        check("CONFIG_C", &tmp.path().join("missing")),
        None,
        "no config file: not checked"
    );
}

#[test]
fn ver_orders_kernels_like_dkms() {
    assert_eq!(ver_cmp("5.10.0-1-amd64", "6.1.0-56-amd64"), Ordering::Less);
    assert_eq!(
        ver_cmp("5.10.0-1-amd64", "5.9.0-1-amd64"),
        Ordering::Greater
    );
    assert_eq!(
        ver_cmp("6.1.0-56-amd64", "6.1.0-9-amd64"),
        Ordering::Greater
    );
    assert_eq!(ver_cmp("6.1.0-56-amd64", "6.1"), Ordering::Greater);
    assert_eq!(ver_cmp("0.12.10", "0.12.7"), Ordering::Greater);
}

#[test]
fn locations_are_judged_once_normalised() {
    // mstflint-dkms: DEST_MODULE_LOCATION[0]="/kernel/../misc/" stays inside the module tree
    // (DKMS 3.2.2 installs it); without the distribution override it installs to /misc/.
    let m = model(&[
        ("DEST_MODULE_LOCATION", 0, "/kernel/../misc/"),
        ("BUILT_MODULE_LOCATION", 0, "src/./x/../"),
    ]);
    let e = &m.modules[0];
    assert_eq!(e.dest_location, "/kernel/../misc/", "kept as written");
    assert_eq!(e.install_location, "/updates/dkms");
    assert_eq!(e.built_location, "src/");
    let mut t = target("6.12.117+deb13-amd64", Path::new("/nonexistent/.config"));
    t.location_override = None;
    let d = directives(&[("DEST_MODULE_LOCATION", 0, "/kernel/../misc/")]);
    let m = DkmsConf::from_directives(&d, Path::new("dkms.conf"), &t, EvalPath::Static).unwrap();
    assert_eq!(m.modules[0].install_location, "/misc/");
    // Real escapes stay refused.
    for bad in [
        "/kernel/../../etc",
        "/updates/../../../x",
        "/extra/a/../../../b/",
    ] {
        let d = directives(&[("DEST_MODULE_LOCATION", 0, bad)]);
        let err = DkmsConf::from_directives(&d, Path::new("dkms.conf"), &t, EvalPath::Static)
            .unwrap_err();
        assert_eq!(err.exit_code(), 8, "{bad}");
        assert!(
            err.to_string().contains("DEST_MODULE_LOCATION[0]"),
            "{bad}: {err}"
        );
    }
}
