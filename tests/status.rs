//! `rdkms status` on hand-built sandbox trees: every state and suffix DKMS 3.0.10 prints, its
//! order, the filters, `--json` and `--format legacy`. (Equality with Debian's real dkms on
//! trees it wrote is in compat_status.rs.)

mod common;

use common::fake_tree::{stderr, stdout};
use common::Sandbox;

const K1: &str = "6.1.0-1-amd64";
const K2: &str = "6.1.0-10-amd64";
const A: &str = "x86_64";

fn status(s: &Sandbox, args: &[&str]) -> String {
    let mut all = vec!["status"];
    all.extend_from_slice(args);
    let out = s.rdkms_out(&all);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out)
}

/// A module with one `.ko` per name, added.
fn added(s: &Sandbox, name: &str, version: &str, modules: &[&str]) {
    s.kbuild_source(name, version, modules, "/updates/dkms");
    s.link_source(name, version);
}

fn kos(modules: &[&str]) -> Vec<String> {
    modules.iter().map(|m| format!("{m}.ko")).collect()
}

fn build(s: &Sandbox, name: &str, version: &str, kernel: &str, modules: &[&str]) {
    let files = kos(modules);
    let refs: Vec<&str> = files.iter().map(String::as_str).collect();
    s.build_by_hand(name, version, kernel, A, &refs);
}

#[test]
fn empty_or_missing_tree_prints_nothing_and_exits_0() {
    let s = Sandbox::with_trees();
    assert_eq!(status(&s, &[]), "");
    std::fs::remove_dir_all(s.tree()).unwrap();
    assert_eq!(status(&s, &[]), "");
    assert_eq!(status(&s, &["nosuch/1.0", "-k", K1]), "");
}

#[test]
fn states_in_dkms_order() {
    let s = Sandbox::with_trees();
    added(&s, "foo", "1.0", &["foo"]);
    added(&s, "foo", "1.10", &["foo"]);
    added(&s, "foo", "1.9", &["foo"]);
    added(&s, "foo-bar", "2", &["fb"]);
    added(&s, "Zed", "1", &["zed"]);
    build(&s, "foo", "1.9", K1, &["foo"]);
    build(&s, "foo", "1.9", K2, &["foo"]);
    s.install_by_hand("foo", "1.9", K2, A, "/updates/dkms");
    build(&s, "foo", "1.10", K1, &["foo"]);
    s.install_by_hand("foo", "1.10", K1, A, "/updates/dkms");
    build(&s, "foo-bar", "2", "custom-kernel", &["fb"]);
    // a kernel dir without module/ (a failed build) is not built
    std::fs::create_dir_all(s.tree().join("Zed/1").join(K1).join(A).join("log")).unwrap();
    assert_eq!(
        status(&s, &[]),
        "Zed/1: added\n\
         foo-bar/2: added\n\
         foo/1.0: added\n\
         foo/1.10, 6.1.0-1-amd64, x86_64: installed\n\
         foo/1.9, 6.1.0-1-amd64, x86_64: built\n\
         foo/1.9, 6.1.0-10-amd64, x86_64: installed\n"
    );
    // a kernel dir not starting with digits and a dot is only seen through -k
    assert_eq!(
        status(&s, &["-k", "custom-kernel"]),
        "Zed/1: added\n\
         foo-bar/2, custom-kernel, x86_64: built\n\
         foo/1.0: added\n\
         foo/1.10: added\n\
         foo/1.9: added\n"
    );
}

#[test]
fn kernel_dirs_sort_as_whole_strings() {
    let s = Sandbox::with_trees();
    added(&s, "m", "1", &["m"]);
    for k in ["6.1.0-10-amd64", "6.1.0-1", "6.1.0-1-amd64", "10.0.0"] {
        build(&s, "m", "1", k, &["m"]);
    }
    // "6.1.0-1-amd64/x86_64" < "6.1.0-1/x86_64" because '-' < '/'
    assert_eq!(
        status(&s, &[]),
        "m/1, 10.0.0, x86_64: built\n\
         m/1, 6.1.0-1-amd64, x86_64: built\n\
         m/1, 6.1.0-1, x86_64: built\n\
         m/1, 6.1.0-10-amd64, x86_64: built\n"
    );
}

#[test]
fn filters_by_module_version_kernel_and_arch() {
    let s = Sandbox::with_trees();
    added(&s, "foo", "1", &["foo"]);
    added(&s, "foo", "2", &["foo"]);
    added(&s, "bar", "1", &["bar"]);
    build(&s, "foo", "1", K1, &["foo"]);
    build(&s, "foo", "2", K2, &["foo"]);
    s.build_by_hand("bar", "1", K1, "aarch64", &["bar.ko"]);
    build(&s, "bar", "1", K1, &["bar"]);

    assert_eq!(
        status(&s, &["foo"]),
        "foo/1, 6.1.0-1-amd64, x86_64: built\nfoo/2, 6.1.0-10-amd64, x86_64: built\n"
    );
    assert_eq!(
        status(&s, &["foo/2"]),
        "foo/2, 6.1.0-10-amd64, x86_64: built\n"
    );
    assert_eq!(
        status(&s, &["-m", "foo", "-v", "1"]),
        status(&s, &["foo/1"])
    );
    // with -k, a version not built for that kernel says "added"
    assert_eq!(
        status(&s, &["foo", "-k", K1]),
        "foo/1, 6.1.0-1-amd64, x86_64: built\nfoo/2: added\n"
    );
    // one listing per -k, in command-line order
    assert_eq!(
        status(&s, &["foo/2", "-k", K2, "-k", K1]),
        "foo/2, 6.1.0-10-amd64, x86_64: built\nfoo/2: added\n"
    );
    assert_eq!(
        status(&s, &["-a", "aarch64", "bar"]),
        "bar/1, 6.1.0-1-amd64, aarch64: built\n"
    );
    assert_eq!(
        status(&s, &["bar", "-k", &format!("{K1}/x86_64")]),
        "bar/1, 6.1.0-1-amd64, x86_64: built\n"
    );
    assert_eq!(
        status(&s, &["bar"]),
        "bar/1, 6.1.0-1-amd64, aarch64: built\nbar/1, 6.1.0-1-amd64, x86_64: built\n"
    );
    // words are shell globs, as in DKMS
    assert_eq!(
        status(&s, &["f*", "-k", "6.1.0-1?-amd64"]),
        "foo/1: added\nfoo/2, 6.1.0-10-amd64, x86_64: built\n"
    );
}

#[test]
fn diff_suffix_when_installed_copy_differs_or_is_missing() {
    let s = Sandbox::with_trees();
    added(&s, "two", "1", &["one", "two"]);
    build(&s, "two", "1", K1, &["one", "two"]);
    s.install_by_hand("two", "1", K1, A, "/updates/dkms");
    assert_eq!(status(&s, &[]), "two/1, 6.1.0-1-amd64, x86_64: installed\n");

    let installed = s.inst().join(K1).join("updates/dkms");
    // same size, different bytes
    let orig = std::fs::read(installed.join("one.ko")).unwrap();
    let mut changed = orig.clone();
    changed[0] ^= 1;
    std::fs::write(installed.join("one.ko"), &changed).unwrap();
    const DIFF: &str = " (Differences between built and installed modules)";
    assert_eq!(
        status(&s, &[]),
        format!("two/1, 6.1.0-1-amd64, x86_64: installed{DIFF}\n")
    );
    // DKMS 3.2.2 names the first module's problem only (3.0.10 named each: legacy format)
    std::fs::remove_file(installed.join("two.ko")).unwrap();
    assert_eq!(
        status(&s, &[]),
        format!("two/1, 6.1.0-1-amd64, x86_64: installed{DIFF}\n")
    );
    const OLD: &str = " (WARNING! Diff between built and installed module!)";
    assert_eq!(
        status(&s, &["--format", "legacy"]),
        format!("two, 1, 6.1.0-1-amd64, x86_64: installed{OLD}{OLD}\n")
    );
    // built-only lines never compare
    std::fs::remove_file(s.tree().join(format!("two/kernel-{K1}-{A}"))).unwrap();
    assert_eq!(status(&s, &[]), "two/1, 6.1.0-1-amd64, x86_64: built\n");
}

#[test]
fn installed_copy_found_in_the_raw_dest_location() {
    let s = Sandbox::with_trees();
    s.kbuild_source("raw", "1", &["raw"], "/kernel/extra");
    s.link_source("raw", "1");
    build(&s, "raw", "1", K1, &["raw"]);
    // installed where DEST_MODULE_LOCATION says, not in Debian's /updates/dkms
    s.install_by_hand("raw", "1", K1, A, "/kernel/extra");
    assert_eq!(status(&s, &[]), "raw/1, 6.1.0-1-amd64, x86_64: installed\n");
}

/// DKMS 3.2.2: `module/` makes it built; a missing module is a suffix (3.0.10: not built).
#[test]
fn incomplete_module_dir_is_built_with_a_suffix() {
    let s = Sandbox::with_trees();
    added(&s, "multi", "1", &["a", "b", "c"]);
    build(&s, "multi", "1", K1, &["a", "c"]);
    build(&s, "multi", "1", K2, &["a", "b", "c"]);
    assert_eq!(
        status(&s, &[]),
        "multi/1, 6.1.0-1-amd64, x86_64: built (Built modules are missing in the kernel modules folder)\n\
         multi/1, 6.1.0-10-amd64, x86_64: built\n"
    );
}

#[test]
fn compressed_modules_follow_the_kernels_modules_dep() {
    let s = Sandbox::with_trees();
    added(&s, "z", "1", &["z"]);
    s.build_by_hand("z", "1", K1, A, &["z.ko.xz"]);
    assert_eq!(
        status(&s, &[]),
        "z/1, 6.1.0-1-amd64, x86_64: built (Built modules are missing in the kernel modules folder)\n",
        "no modules.dep: .ko.xz is not looked for"
    );
    std::fs::create_dir_all(s.inst().join(K1)).unwrap();
    std::fs::write(
        s.inst().join(K1).join("modules.dep"),
        "kernel/fs/a.ko.xz:\nkernel/fs/b.ko.xz: kernel/fs/a.ko.xz\n",
    )
    .unwrap();
    assert_eq!(status(&s, &[]), "z/1, 6.1.0-1-amd64, x86_64: built\n");
    s.install_by_hand("z", "1", K1, A, "/updates/dkms");
    assert_eq!(status(&s, &[]), "z/1, 6.1.0-1-amd64, x86_64: installed\n");
}

/// Hundreds of module versions are read on several threads: the listing must equal, line for
/// line and error for error, what the modules give one at a time.
#[test]
fn a_large_tree_lists_as_its_modules_do_one_by_one() {
    let s = Sandbox::with_trees();
    let kxz = "9.9.1-xz";
    std::fs::create_dir_all(s.inst().join(kxz)).unwrap();
    std::fs::write(s.inst().join(kxz).join("modules.dep"), "kernel/x.ko.xz:\n").unwrap();
    let names: Vec<String> = (0..210).map(|i| format!("m{i:03}")).collect();
    let mut dangling = Vec::new();
    for (i, m) in names.iter().enumerate() {
        added(&s, m, "1", &[m]);
        let ko = format!("{m}.ko");
        let xz = format!("{m}.ko.xz");
        match i % 7 {
            0 => {}
            1 => s.build_by_hand(m, "1", K1, A, &[&ko]),
            2 | 3 => {
                s.build_by_hand(m, "1", K1, A, &[&ko]);
                s.install_by_hand(m, "1", K1, A, "/updates/dkms");
                if i % 7 == 3 {
                    s.build_by_hand(m, "1", K2, A, &[&ko]);
                    let copy = s.inst().join(K1).join("updates/dkms").join(&ko);
                    std::fs::write(copy, "changed after install\n").unwrap();
                }
            }
            4 => s.build_by_hand(m, "1", kxz, A, &[&xz]),
            5 => {
                s.build_by_hand(m, "1", K1, A, &[&ko]);
                std::fs::remove_dir_all(s.src().join(format!("{m}-1"))).unwrap();
                dangling.push(m.clone());
            }
            _ => s.build_by_hand(m, "1", K2, A, &[&xz]),
        }
    }
    let out = s.rdkms_out(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut want = String::new();
    for (i, m) in names.iter().enumerate() {
        let alone = status(&s, &[&format!("{m}/1")]);
        if i % 7 == 6 {
            assert_eq!(
                alone,
                format!("{m}/1, {K2}, {A}: built (Built modules are missing in the kernel modules folder)\n")
            );
        }
        want.push_str(&alone);
    }
    assert_eq!(stdout(&out), want);
    assert!(want.contains("(Differences between built and installed modules)"));
    let warned: Vec<String> = stderr(&out)
        .lines()
        .filter_map(|l| Some(l.strip_prefix("Error! ")?.split('/').next()?.to_string()))
        .collect();
    assert_eq!(warned, dangling, "one error per broken version, in order");
}

#[test]
fn original_module_suffix() {
    let s = Sandbox::with_trees();
    added(&s, "o", "1", &["o"]);
    build(&s, "o", "1", K1, &["o"]);
    s.install_by_hand("o", "1", K1, A, "/updates/dkms");
    std::fs::create_dir_all(s.tree().join("o/original_module").join(K1).join(A)).unwrap();
    assert_eq!(
        status(&s, &[]),
        "o/1, 6.1.0-1-amd64, x86_64: installed (Original modules exist)\n"
    );
}

#[test]
fn dangling_source() {
    let s = Sandbox::with_trees();
    added(&s, "gone", "1", &["gone"]);
    added(&s, "later", "1", &["later"]);
    std::fs::remove_dir_all(s.src().join("gone-1")).unwrap();
    // DKMS 3.2.2: "broken", with an error on stderr right after the line
    assert_eq!(status(&s, &[]), "gone/1: broken\nlater/1: added\n");
    let json: serde_json::Value = serde_json::from_str(&status(&s, &["--json"])).unwrap();
    assert_eq!(json[0]["state"], "broken");
    assert_eq!(json[0]["source_missing"], true);
    assert_eq!(json[1]["source_missing"], false);

    // built: its builds are not listed, as DKMS 3.2.2
    build(&s, "gone", "1", K1, &["gone"]);
    let out = s.rdkms_out(&["status"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "gone/1: broken\nlater/1: added\n");
    assert_eq!(
        stderr(&out),
        "\nError! gone/1: Missing the module source directory or the symbolic link pointing to it.\nManual intervention is required!\n"
    );

    // no link while /usr/src/M-V exists: broken too
    std::fs::remove_file(s.tree().join("later/1/source")).unwrap();
    assert_eq!(status(&s, &[]), "gone/1: broken\nlater/1: broken\n");
}

#[test]
fn staging_entries_are_invisible() {
    let s = Sandbox::with_trees();
    added(&s, "foo", "1", &["foo"]);
    build(&s, "foo", "1", K1, &["foo"]);
    // half-written state as writers stage it: hidden names only
    std::fs::create_dir_all(
        s.tree()
            .join("foo/1")
            .join(K1)
            .join(".tmp_x86_64_Ab12/module"),
    )
    .unwrap();
    std::fs::create_dir_all(s.tree().join("foo/.rdkms-staging-2/source")).unwrap();
    std::fs::create_dir_all(s.tree().join(".rdkms-tmp/1/source")).unwrap();
    std::fs::write(s.tree().join(".rdkms.lock"), "pid 1: rdkms build").unwrap();
    assert_eq!(status(&s, &[]), "foo/1, 6.1.0-1-amd64, x86_64: built\n");
}

#[test]
fn json_and_legacy_formats() {
    let s = Sandbox::with_trees();
    added(&s, "foo", "1.0", &["foo", "foo_helper"]);
    added(&s, "bar", "2", &["bar"]);
    build(&s, "foo", "1.0", K1, &["foo", "foo_helper"]);
    s.install_by_hand("foo", "1.0", K1, A, "/updates/dkms");
    std::fs::write(
        s.inst().join(K1).join("updates/dkms/foo_helper.ko"),
        "other",
    )
    .unwrap();

    assert_eq!(
        status(&s, &["--format", "legacy"]),
        "bar, 2: added\n\
         foo, 1.0, 6.1.0-1-amd64, x86_64: installed (WARNING! Diff between built and installed module!)\n"
    );
    assert_eq!(status(&s, &["--format", "dkms"]), status(&s, &[]));

    let json: serde_json::Value = serde_json::from_str(&status(&s, &["--json"])).unwrap();
    let arr = json.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["name"], "bar");
    assert_eq!(arr[0]["state"], "added");
    assert!(arr[0]["kernel"].is_null() && arr[0]["arch"].is_null());
    let foo = &arr[1];
    assert_eq!(
        (
            foo["name"].as_str(),
            foo["version"].as_str(),
            foo["kernel"].as_str(),
            foo["arch"].as_str()
        ),
        (Some("foo"), Some("1.0"), Some(K1), Some(A))
    );
    assert_eq!(foo["state"], "installed");
    let installed: Vec<&str> = foo["installed_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let dir = s.inst().join(K1).join("updates/dkms");
    assert_eq!(
        installed,
        [
            dir.join("foo.ko").to_str().unwrap(),
            dir.join("foo_helper.ko").to_str().unwrap()
        ]
    );
    assert_eq!(foo["built_files"].as_array().unwrap().len(), 2);
    assert_eq!(foo["warnings"][0]["code"], "diff_built_installed");
    assert_eq!(foo["warnings"][0]["module"], "foo_helper");

    let bad = s.rdkms_out(&["status", "--format", "yaml"]);
    assert_eq!(bad.status.code(), Some(2));
    // no match: an empty array, still exit 0
    assert_eq!(status(&s, &["--json", "nosuch"]).trim(), "[]");
}

#[test]
fn quiet_prints_nothing() {
    let s = Sandbox::with_trees();
    added(&s, "foo", "1", &["foo"]);
    let out = s.rdkms_out(&["status", "-q"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
}

#[test]
fn status_works_while_the_tree_lock_is_held() {
    let s = Sandbox::with_trees();
    added(&s, "foo", "1", &["foo"]);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(s.tree().join(".rdkms.lock"))
        .unwrap();
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let t = std::time::Instant::now();
    assert_eq!(status(&s, &[]), "foo/1: added\n");
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn status_never_runs_a_shell() {
    let s = Sandbox::with_trees();
    let marker = s.root().join("sourced");
    let conf = format!(
        "PACKAGE_NAME=sh\nPACKAGE_VERSION=1\nBUILT_MODULE_NAME[0]=$(touch {m}; echo sh)\nDEST_MODULE_LOCATION[0]=/updates/dkms\n",
        m = marker.display()
    );
    s.source_with_conf("sh", "1", &conf, &["sh"]);
    s.link_source("sh", "1");
    build(&s, "sh", "1", K1, &["sh"]);
    assert_eq!(status(&s, &[]), "sh/1, 6.1.0-1-amd64, x86_64: built\n");
    assert!(!marker.exists(), "status sourced dkms.conf with a shell");
}

/// A dpkg status paragraph for an installed, unrelated package.
fn filler_package(i: usize) -> String {
    format!(
        "Package: lib-filler{i}\nStatus: install ok installed\nPriority: optional\nSection: libs\n\
         Installed-Size: 120\nMaintainer: Someone <someone@example.org>\nArchitecture: amd64\n\
         Source: filler-src (1.{i})\nVersion: 1.{i}-1\nDepends: libc6 (>= 2.36)\n\
         Description: filler library {i}\n A package the listing must skip.\n"
    )
}

/// A binary module package paragraph (as mkbmdeb's control file gives it) and its file list.
fn module_package(admin: &std::path::Path, name: &str, kernel: &str, state: &str) -> String {
    let package = format!("{name}-modules-{kernel}");
    std::fs::write(
        admin.join(format!("info/{package}.list")),
        format!(
            "/.\n/lib\n/lib/modules\n/lib/modules/{kernel}/updates/dkms\n\
             /lib/modules/{kernel}/updates/dkms/{}.ko\n/usr/share/doc/{package}/copyright\n",
            name.replace('-', "_")
        ),
    )
    .unwrap();
    format!(
        "Package: {package}\nStatus: install ok {state}\nPriority: optional\nSection: misc\n\
         Installed-Size: 20\nMaintainer: Build Host <build@example.org>\nArchitecture: amd64\n\
         Source: {name}-dkms-bin\nVersion: 1.2\nDepends: linux-image-{kernel}\n\
         Provides: {name}-modules\nDescription: {name} binary drivers for linux-image-{kernel}\n \
         This package contains {name} drivers.\n"
    )
}

#[test]
fn binary_module_packages_follow_the_dkms_lines() {
    let s = Sandbox::with_trees();
    added(&s, "acpi_call", "1.2", &["acpi_call"]);
    build(&s, "acpi_call", "1.2", K1, &["acpi_call"]);
    added(&s, "zz", "1", &["zz"]);
    let dkms_only = status(&s, &[]);
    assert_eq!(
        dkms_only,
        format!("acpi_call/1.2, {K1}, {A}: built\nzz/1: added\n")
    );

    // A realistic dpkg database without binary module packages changes nothing.
    let admin = s.root().join("root/var/lib/dpkg");
    std::fs::create_dir_all(admin.join("info")).unwrap();
    let mut paragraphs: Vec<String> = (0..1000).map(filler_package).collect();
    std::fs::write(admin.join("status"), paragraphs.join("\n")).unwrap();
    assert_eq!(status(&s, &[]), dkms_only);

    paragraphs.insert(10, module_package(&admin, "acpi-call", K2, "installed"));
    paragraphs.insert(500, module_package(&admin, "hello", K1, "half-configured"));
    paragraphs.push(module_package(&admin, "gone", K1, "config-files"));
    std::fs::write(admin.join("status"), paragraphs.join("\n")).unwrap();
    // Named like the registered module (acpi_call), in package order, after DKMS's lines.
    let acpi =
        format!("acpi_call/1.2, {K2}, {A}: installed (binary package acpi-call-modules-{K2})\n");
    let hello =
        format!("hello/1.2, {K1}, {A}: half-configured (binary package hello-modules-{K1})\n");
    assert_eq!(status(&s, &[]), format!("{dkms_only}{acpi}{hello}"));
    assert_eq!(
        status(&s, &["acpi_call"]),
        format!("acpi_call/1.2, {K1}, {A}: built\n{acpi}")
    );
    assert_eq!(
        status(&s, &["-k", K1]),
        format!("acpi_call/1.2, {K1}, {A}: built\nzz/1: added\n{hello}")
    );
    assert_eq!(status(&s, &["hello/1.0"]), "");
    assert_eq!(
        status(&s, &["-k", K2, "-a", "aarch64"]),
        "acpi_call/1.2: added\nzz/1: added\n"
    );
    assert_eq!(
        status(&s, &["hello", "--format", "legacy"]),
        format!("hello, 1.2, {K1}, {A}: half-configured (binary package hello-modules-{K1})\n")
    );

    let json: serde_json::Value = serde_json::from_str(&status(&s, &["--json"])).unwrap();
    let arr = json.as_array().unwrap();
    assert_eq!(arr.len(), 4);
    assert!(arr[..2].iter().all(|e| e.get("package").is_none()));
    let p = &arr[2];
    assert_eq!(p["name"], "acpi_call");
    assert_eq!(p["state"], "installed-package");
    assert_eq!(p["package"], format!("acpi-call-modules-{K2}"));
    assert_eq!(p["dpkg_state"], "installed");
    assert_eq!(
        p["installed_files"][0],
        s.root()
            .join(format!("root/lib/modules/{K2}/updates/dkms/acpi_call.ko"))
            .to_str()
            .unwrap()
    );
    assert_eq!(arr[3]["dpkg_state"], "half-configured");
}
