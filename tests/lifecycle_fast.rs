//! Fast tier of the lifecycle commands (no kernel headers needed): a fake kbuild turns sources
//! into marker `.ko` files, a recording `depmod` stub counts calls, all inside temporary roots.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::fake_kernel::read_ko;
use common::{arch, Sandbox};
use predicates::prelude::*;

const K: &str = "6.1.0-9-amd64";
const K2: &str = "6.1.0-10-amd64";

fn sandbox() -> Sandbox {
    let mut sb = Sandbox::new();
    sb.record_depmod();
    sb.fake_kernel(K);
    sb
}

fn installed_ko(sb: &Sandbox, kernel: &str, name: &str) -> std::path::PathBuf {
    sb.modules_dir(kernel)
        .join("updates/dkms")
        .join(format!("{name}.ko"))
}

#[test]
fn build_stores_modules_and_log_and_skips_when_built() {
    let sb = sandbox();
    sb.source("foo", "1.0").file("stamp", "one").create();
    sb.rdkms(["build", "foo/1.0", "-k", K, "-j", "3"])
        .assert()
        .success()
        .stderr(predicate::str::contains("Building module(s)... done."));
    let built = sb.built("foo", "1.0", K);
    let ko = read_ko(&built.join("module/foo.ko"));
    assert_eq!(ko.vermagic, K);
    assert_eq!(ko.stamp, "one");
    let log = fs::read_to_string(built.join("log/make.log")).unwrap();
    assert!(log.contains("LD [M]"), "{log}");
    assert!(
        log.contains(&format!(
            "Building module(s)\n# command: make -j3 KERNELRELEASE={K} -C"
        )),
        "{log}"
    );
    assert!(built.join("log/.config").is_file());
    // The shared DKMS build directory is never used, and no private build dir is left.
    assert!(!sb.tree().join("foo/1.0/build").exists());
    assert_eq!(
        sb.listing(&sb.tree().join(".rdkms-build")),
        Vec::<String>::new()
    );
    // Nothing installed, so no depmod.
    assert!(sb.depmod_calls().is_empty());

    sb.rdkms(["build", "foo/1.0", "-k", K])
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "Module foo/1.0 already built for kernel {K} ({}), skip.",
            arch()
        )));
    fs::write(sb.root().join("usr/src/foo-1.0/stamp"), "two").unwrap();
    sb.rdkms(["build", "foo/1.0", "-k", K, "--force"])
        .assert()
        .success();
    assert_eq!(read_ko(&built.join("module/foo.ko")).stamp, "two");
}

#[test]
fn install_builds_installs_links_and_runs_depmod_once() {
    let sb = sandbox();
    sb.source("multi", "2.0")
        .modules(&["alpha", "beta", "gamma"])
        .create();
    sb.rdkms(["install", "multi/2.0", "-k", K])
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "Installing {}/updates/dkms/alpha.ko",
            sb.modules_dir(K).display()
        )));
    for m in ["alpha", "beta", "gamma"] {
        let ko = read_ko(&installed_ko(&sb, K, m));
        assert_eq!(ko.name, m);
        assert_eq!(ko.vermagic, K);
    }
    let link = sb.tree().join(format!("multi/kernel-{K}-{}", arch()));
    assert_eq!(
        fs::read_link(&link).unwrap(),
        Path::new("2.0").join(K).join(arch())
    );
    // One depmod for three modules, on the sandbox's module tree.
    assert_eq!(
        sb.depmod_calls(),
        vec![format!("-a -b {} {K}", sb.root().display())]
    );
    sb.rdkms(["install", "multi/2.0", "-k", K])
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "Module multi/2.0 already installed on kernel {K} ({}), skip.",
            arch()
        )));
    assert_eq!(sb.depmod_calls().len(), 1);
    // No temporary files are left next to the installed modules.
    let names = sb.listing(&sb.modules_dir(K).join("updates/dkms"));
    assert_eq!(names, ["alpha.ko", "beta.ko", "gamma.ko"]);
}

#[test]
fn install_for_two_kernels_runs_depmod_once_per_kernel() {
    let sb = sandbox();
    sb.fake_kernel(K2);
    sb.source("foo", "1.0").create();
    sb.rdkms(["install", "foo/1.0", "-k", K, "-k", K2])
        .assert()
        .success();
    let calls = sb.depmod_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[0].ends_with(K) && calls[1].ends_with(K2), "{calls:?}");
    assert_eq!(read_ko(&installed_ko(&sb, K2, "foo")).vermagic, K2);
}

#[test]
fn uninstall_unbuild_and_remove_walk_back_down() {
    let sb = sandbox();
    sb.source("foo", "1.0").create();
    sb.rdkms(["install", "foo/1.0", "-k", K]).assert().success();

    sb.rdkms(["uninstall", "foo/1.0", "-k", K])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "Before uninstall, this module version was ACTIVE on this kernel.",
        ));
    assert!(!installed_ko(&sb, K, "foo").exists());
    assert!(
        !sb.modules_dir(K).join("updates").exists(),
        "empty dest dirs are removed"
    );
    assert!(sb.built("foo", "1.0", K).join("module/foo.ko").is_file());
    assert!(fs::symlink_metadata(sb.tree().join(format!("foo/kernel-{K}-{}", arch()))).is_err());
    sb.rdkms(["uninstall", "foo/1.0", "-k", K])
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "Module foo/1.0 is not installed for kernel {K} ({}). Skipping...",
            arch()
        )));

    sb.rdkms(["unbuild", "foo/1.0", "-k", K]).assert().success();
    assert!(!sb.tree().join("foo/1.0").join(K).exists());
    assert!(sb.tree().join("foo/1.0/source").symlink_metadata().is_ok());
    sb.rdkms(["unbuild", "foo/1.0", "-k", K])
        .assert()
        .success()
        .stderr(predicate::str::contains("is not built for kernel"));

    sb.rdkms(["remove", "foo/1.0", "-k", K])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "Deleting module foo/1.0 completely from the DKMS tree.",
        ));
    assert!(!sb.tree().join("foo").exists());
    assert!(
        sb.root().join("usr/src/foo-1.0/dkms.conf").is_file(),
        "sources are kept"
    );
    // install, uninstall: one depmod each; unbuild/remove of an uninstalled module: none.
    assert_eq!(sb.depmod_calls().len(), 2);
    sb.rdkms(["remove", "foo/1.0", "--all"]).assert().code(3);
}

#[test]
fn remove_all_leaves_nothing_behind() {
    let sb = sandbox();
    sb.fake_kernel(K2);
    sb.source("foo", "1.0").modules(&["foo", "bar"]).create();
    sb.rdkms(["install", "foo/1.0", "-k", K, "-k", K2])
        .assert()
        .success();
    sb.rdkms(["remove", "foo/1.0", "-k", K]).assert().success();
    assert!(
        sb.built("foo", "1.0", K2).is_dir(),
        "the other kernel stays"
    );
    assert!(installed_ko(&sb, K2, "bar").is_file());
    sb.rdkms(["install", "foo/1.0", "-k", K]).assert().success();

    let before = sb.depmod_calls().len();
    sb.rdkms(["remove", "foo/1.0", "--all"]).assert().success();
    assert_eq!(sb.depmod_calls().len() - before, 2, "one depmod per kernel");
    // Only the tree lock file may remain in the dkms tree; nothing in the kernels' trees.
    let left: Vec<String> = sb
        .listing(&sb.tree())
        .into_iter()
        .filter(|p| !p.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    for k in [K, K2] {
        assert!(!sb.modules_dir(k).join("updates").exists());
    }
}

#[test]
fn everything_stays_under_the_root() {
    let sb = sandbox();
    sb.source("rooted", "1.0").create();
    let out = sb
        .rdkms(["install", "rooted/1.0", "-k", K, "--verbose"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    let root = sb.root().display().to_string();
    for line in text
        .lines()
        .filter(|l| l.contains("/lib/modules") || l.contains("/var/lib/dkms"))
    {
        assert!(line.contains(&root), "path outside the root: {line}");
    }
    assert!(!Path::new("/var/lib/dkms/rooted").exists());
}

#[test]
fn quiet_prints_nothing_and_verbose_shows_commands() {
    let sb = sandbox();
    sb.source("foo", "1.0").create();
    sb.rdkms(["install", "foo/1.0", "-k", K, "-q"])
        .assert()
        .success()
        .stderr("")
        .stdout("");
    sb.rdkms(["install", "foo/1.0", "-k", K, "--force", "--verbose"])
        .assert()
        .success()
        .stderr(predicate::str::contains("\"depmod\""));
}

#[test]
fn missing_headers_exit_21_naming_the_package() {
    let sb = sandbox();
    fs::create_dir_all(sb.modules_dir("6.1.0-99-amd64")).unwrap();
    sb.source("foo", "1.0").create();
    sb.rdkms(["build", "foo/1.0", "-k", "6.1.0-99-amd64"])
        .assert()
        .code(21)
        .stderr(predicate::str::contains("linux-headers-6.1.0-99-amd64"));
}

#[test]
fn make_failure_exits_10_with_the_log_tail_and_keeps_the_log() {
    let sb = sandbox();
    let mut lines = String::new();
    for i in 1..=30 {
        lines.push_str(&format!("compile error line {i}\n"));
    }
    sb.source("broken", "1.0").file("fail", &lines).create();
    let kept = sb.tree().join("broken/1.0/build/make.log");
    sb.rdkms(["build", "broken/1.0", "-k", K])
        .assert()
        .code(10)
        .stderr(predicate::str::contains("compile error line 30"))
        .stderr(predicate::str::contains("compile error line 20"))
        .stderr(predicate::str::contains("compile error line 5\n").not())
        .stderr(predicate::str::contains(kept.display().to_string()));
    assert!(fs::read_to_string(&kept)
        .unwrap()
        .contains("compile error line 1\n"));
    assert!(!sb.tree().join("broken/1.0").join(K).join(arch()).exists());
    // A successful build afterwards drops the stale failure log.
    fs::remove_file(sb.root().join("usr/src/broken-1.0/fail")).unwrap();
    sb.rdkms(["build", "broken/1.0", "-k", K])
        .assert()
        .success();
    assert!(!kept.exists());
}

#[test]
fn build_exclusive_mismatch_exits_77() {
    let sb = sandbox();
    sb.source("excl", "1.0")
        .conf("BUILD_EXCLUSIVE_KERNEL=\"^4\\.\"")
        .create();
    sb.rdkms(["build", "excl/1.0", "-k", K])
        .assert()
        .code(77)
        .stderr(predicate::str::contains(
            "Warning: The ",
        ))
        .stderr(predicate::str::contains(
            "for module excl/1.0 includes a BUILD_EXCLUSIVE directive\nwhich does not match this kernel/arch/config.",
        ));
    sb.source("excl", "2.0")
        .conf("BUILD_EXCLUSIVE_CONFIG=\"CONFIG_NOT_THERE\"")
        .create();
    sb.rdkms(["install", "excl/2.0", "-k", K]).assert().code(77);
}

#[test]
fn patches_are_applied_and_bad_ones_refused() {
    let sb = sandbox();
    let patch = "--- a/stamp\n+++ b/stamp\n@@ -1 +1 @@\n-plain\n+patched\n";
    sb.source("pat", "1.0")
        .file("stamp", "plain\n")
        .file("patches/fix.patch", patch)
        .conf("PATCH[0]=\"fix.patch\"")
        .create();
    sb.rdkms(["build", "pat/1.0", "-k", K])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "Applying patch fix.patch... done.",
        ));
    assert_eq!(
        read_ko(&sb.built("pat", "1.0", K).join("module/pat.ko")).stamp,
        "patched"
    );

    sb.source("pat", "2.0")
        .conf("PATCH[0]=\"../../etc/evil.patch\"")
        .create();
    // As DKMS 3.2.2: `..` is accepted by add and refused by the build that would apply it.
    sb.rdkms(["add", "pat/2.0"]).assert().success();
    sb.rdkms(["build", "pat/2.0", "-k", K])
        .assert()
        .code(5)
        .stderr(predicate::str::contains(
        "Error! Patch ../../etc/evil.patch as specified in dkms.conf contains '..' path component.",
    ));
    sb.source("pat", "3.0")
        .conf("PATCH[0]=\"missing.patch\"")
        .create();
    sb.rdkms(["build", "pat/3.0", "-k", K])
        .assert()
        .code(5)
        .stderr(predicate::str::contains("missing.patch"));
    sb.source("pat", "4.0")
        .file("stamp", "other\n")
        .file("patches/fix.patch", patch)
        .conf("PATCH[0]=\"fix.patch\"")
        .create();
    sb.rdkms(["build", "pat/4.0", "-k", K]).assert().code(6);
}

#[test]
fn a_module_make_did_not_produce_exits_7() {
    let sb = sandbox();
    sb.source("short", "1.0")
        .conf("BUILT_MODULE_NAME[1]=\"ghost\"")
        .conf("DEST_MODULE_LOCATION[1]=\"/updates/dkms\"")
        .create();
    sb.rdkms(["build", "short/1.0", "-k", K])
        .assert()
        .code(7)
        .stderr(predicate::str::contains("ghost.ko"));
    assert!(!sb.built("short", "1.0", K).exists());
}

#[test]
fn pre_install_failure_exits_101_unless_forced() {
    let sb = sandbox();
    sb.source("pre", "1.0")
        .script("pre.sh", "#!/bin/sh\necho refusing\nexit 3\n")
        .conf("PRE_INSTALL=\"pre.sh\"")
        .create();
    sb.rdkms(["install", "pre/1.0", "-k", K])
        .assert()
        .code(101)
        .stderr(predicate::str::contains("refusing"));
    assert!(!installed_ko(&sb, K, "pre").exists());
    sb.rdkms(["install", "pre/1.0", "-k", K, "--force"])
        .assert()
        .success();
    assert!(installed_ko(&sb, K, "pre").is_file());
}

#[test]
fn install_onto_a_missing_kernel_dir_exits_6() {
    let sb = sandbox();
    let headers = sb.root().join("elsewhere/headers");
    common::fake_kernel::headers_at(&headers, "6.1.0-77-amd64");
    sb.source("foo", "1.0").create();
    let ksrc = format!("--kernelsourcedir={}", headers.display());
    sb.rdkms(["install", "foo/1.0", "-k", "6.1.0-77-amd64", &ksrc])
        .assert()
        .code(6)
        .stderr(predicate::str::contains("doesn't exist"));
    assert!(sb
        .built("foo", "1.0", "6.1.0-77-amd64")
        .join("module/foo.ko")
        .is_file());
    assert!(sb.depmod_calls().is_empty());
}

/// One depmod policy for commands and hooks (README, "depmod"): DKMS's exit 6 and first
/// sentence, but the fresh install stays (DKMS rolls it back) and the owed depmod is recorded
/// and run by the next command.
#[test]
fn depmod_failure_keeps_the_install_exits_6_and_the_next_command_retries() {
    let sb = sandbox();
    sb.source("foo", "1.0").create();
    fs::write(sb.root().join("depmod.exit"), "1").unwrap();
    sb.rdkms(["install", "foo/1.0", "-k", K])
        .assert()
        .code(6)
        .stderr(predicate::str::contains("Problems with depmod detected"));
    assert!(installed_ko(&sb, K, "foo").exists());
    assert!(sb.built("foo", "1.0", K).join("module/foo.ko").is_file());
    let pending = sb.tree().join(".rdkms-depmod-pending").join(K);
    assert!(pending.exists());
    fs::remove_file(sb.root().join("depmod.exit")).unwrap();
    let calls = sb.depmod_calls().len();
    // Already installed: nothing to do but the owed depmod.
    sb.rdkms(["install", "foo/1.0", "-k", K]).assert().success();
    assert!(sb.depmod_calls()[calls..].iter().any(|c| c.ends_with(K)));
    assert!(!pending.exists());
}

#[test]
fn hard_coded_build_dir_in_make_compiles_in_the_private_copy() {
    let sb = sandbox();
    let probe = sb.root().join("make-saw");
    // MAKE records its working directory and M=, then builds as usual.
    let make = format!(
        "pwd > {p}; echo ${{dkms_tree}}/${{PACKAGE_NAME}}/${{PACKAGE_VERSION}}/build >> {p}; make -C ${{kernel_source_dir}} M=${{dkms_tree}}/${{PACKAGE_NAME}}/${{PACKAGE_VERSION}}/build",
        p = probe.display()
    );
    sb.source("hard", "1.0").make(&make).create();
    sb.rdkms(["build", "hard/1.0", "-k", K]).assert().success();
    let saw = fs::read_to_string(&probe).unwrap();
    let lines: Vec<&str> = saw.lines().collect();
    assert_eq!(lines[0], lines[1], "M= is the build copy make runs in");
    assert!(lines[0].contains("/.rdkms-build/"), "{saw}");
    assert!(!sb.tree().join("hard/1.0/build").exists());
}

#[test]
fn make_runs_with_dkms_environment_and_jobserver() {
    let sb = sandbox();
    let probe = sb.root().join("env-saw");
    // Not starting with `make`: no KERNELRELEASE, but MAKEFLAGS carries the job count.
    let script = format!(
        "#!/bin/sh\necho \"cc=${{CC-unset}} cflags=${{CFLAGS-unset}} umask=$(umask)\" > '{}'\nexec make -C \"$1\" M=\"$PWD\"\n",
        probe.display()
    );
    sb.source("envy", "1.0")
        .script("probe.sh", &script)
        .make("./probe.sh ${kernel_source_dir}")
        .create();
    sb.rdkms(["build", "envy/1.0", "-k", K, "-j", "5"])
        .env("CC", "clang-bogus")
        .env("CFLAGS", "-O0")
        .assert()
        .success();
    assert_eq!(
        fs::read_to_string(&probe).unwrap().trim(),
        "cc=unset cflags=unset umask=0022"
    );
    let ko = read_ko(&sb.built("envy", "1.0", K).join("module/envy.ko"));
    assert_eq!(ko.jobs, "-j5");
}

#[test]
fn pre_and_post_build_scripts_run_in_order() {
    let sb = sandbox();
    let seen = sb.root().join("post-saw");
    let built = sb.built("hooks", "1.0", K).join("module/hooks.ko");
    sb.source("hooks", "1.0")
        .script("pre.sh", "#!/bin/sh\necho from-pre-build > stamp\n")
        .script(
            "post.sh",
            &format!(
                "#!/bin/sh\ntest -f '{}' && echo stored > '{}'\n",
                built.display(),
                seen.display()
            ),
        )
        .conf("PRE_BUILD=\"pre.sh\"")
        .conf("POST_BUILD=\"post.sh\"")
        .create();
    // DKMS 3.2.2 shows build scripts as framed steps (their output goes to make.log).
    sb.rdkms(["build", "hooks/1.0", "-k", K])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "\nRunning the pre_build script... done.\nBuilding module(s)... done.\n",
        ))
        .stderr(predicate::str::contains(
            "Running the post_build script... done.",
        ));
    assert_eq!(read_ko(&built).stamp, "from-pre-build");
    assert_eq!(fs::read_to_string(&seen).unwrap().trim(), "stored");
}

/// zfs's case: its POST_BUILD (`scripts/dkms.postbuild -t ${dkms_tree} ...`) copies files from
/// `$dkms_tree/M/V/build/` into `$dkms_tree/M/V/KVER/ARCH/`, which DKMS 3.2.2 guarantees: the
/// modules are stored and the build directory still exists. What it writes stays in the tree.
#[test]
fn post_build_sees_the_dkms_tree_layout() {
    let sb = sandbox();
    sb.source("zfsish", "1.0")
        .file("zfs_config.h", "#define ZFS_META 1\n")
        .script(
            "postbuild.sh",
            "#!/bin/sh\nset -e\ntest -d \"$1/$2/$3/$4/$5/module\"\n\
             cp \"$1/$2/$3/build/zfs_config.h\" \"$1/$2/$3/$4/$5/\"\n",
        )
        .conf(
            "POST_BUILD=\"postbuild.sh ${dkms_tree} ${PACKAGE_NAME} ${PACKAGE_VERSION} ${kernelver} ${arch}\"",
        )
        .create();
    sb.rdkms(["build", "zfsish/1.0", "-k", K])
        .assert()
        .success()
        .stderr(predicate::str::contains("post_build script failed").not());
    let built = sb.built("zfsish", "1.0", K);
    assert_eq!(
        fs::read_to_string(built.join("zfs_config.h")).unwrap(),
        "#define ZFS_META 1\n"
    );
    assert!(built.join("module/zfsish.ko").is_file());
    // As in DKMS, the build directory is gone once the build is done.
    assert!(!sb.tree().join("zfsish/1.0/build").exists());
}

#[test]
fn modules_are_compressed_like_the_kernels_own() {
    let sb = sandbox();
    if !common::need_tool("xz") {
        return;
    }
    fs::write(
        sb.modules_dir(K).join("modules.dep"),
        "kernel/drivers/x.ko.xz:\n",
    )
    .unwrap();
    sb.source("squash", "1.0").create();
    sb.rdkms(["install", "squash/1.0", "-k", K])
        .assert()
        .success();
    assert!(sb
        .built("squash", "1.0", K)
        .join("module/squash.ko.xz")
        .is_file());
    let installed = sb.modules_dir(K).join("updates/dkms/squash.ko.xz");
    let out = std::process::Command::new("xz")
        .arg("-dc")
        .arg(&installed)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("FAKE-KO"));
    sb.rdkms(["uninstall", "squash/1.0", "-k", K])
        .assert()
        .success();
    assert!(!installed.exists());
}

#[test]
fn a_symlinked_destination_outside_the_kernel_is_refused() {
    let sb = sandbox();
    let outside = sb.root().join("outside");
    fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, sb.modules_dir(K).join("updates")).unwrap();
    sb.source("esc", "1.0").create();
    sb.rdkms(["install", "esc/1.0", "-k", K])
        .assert()
        .code(8)
        .stderr(predicate::str::contains("escapes"));
    assert_eq!(sb.listing(&outside), Vec::<String>::new());
}

#[test]
fn argument_errors_use_dkms_exit_codes() {
    let sb = sandbox();
    sb.source("foo", "1.0").create();
    sb.rdkms(["build", "-k", K]).assert().code(1);
    sb.rdkms(["build", "foo/1.0", "--all"]).assert().code(5);
    sb.rdkms(["uninstall", "foo/1.0", "-k", K]).assert().code(3);
    sb.rdkms(["build", "nosuch/1.0", "-k", K]).assert().code(2);
}

#[test]
fn build_and_install_take_a_source_directory_and_add_it_under_their_own_lock() {
    let sb = sandbox();
    let vendor = sb.root().join("home/user/drv");
    sb.source_in(&vendor, "drv", "3.1")
        .file("stamp", "one")
        .create();
    // A deadlock on the tree lock would end in exit 75 after the timeout.
    sb.rdkms(["build", "-k", K, "--lock-timeout", "5"])
        .arg(&vendor)
        .assert()
        .success()
        .stderr(predicate::str::contains("Creating symlink"));
    let copy = sb.root().join("usr/src/drv-3.1");
    assert_eq!(fs::read_to_string(copy.join("stamp")).unwrap(), "one");
    assert_eq!(
        fs::canonicalize(sb.tree().join("drv/3.1/source")).unwrap(),
        copy
    );
    assert_eq!(
        read_ko(&sb.built("drv", "3.1", K).join("module/drv.ko")).stamp,
        "one"
    );

    // Again, as `.` from inside the directory: the same sources, so it goes on and installs.
    sb.rdkms(["install", ".", "-k", K, "--lock-timeout", "5"])
        .current_dir(&vendor)
        .assert()
        .success();
    assert_eq!(read_ko(&installed_ko(&sb, K, "drv")).stamp, "one");
    sb.rdkms(["status"])
        .assert()
        .stdout(format!("drv/3.1, {K}, {}: installed\n", arch()));

    // Edited sources are not what was added: refused with DKMS's exit 3 and the fix.
    fs::write(vendor.join("stamp"), "two").unwrap();
    sb.rdkms(["build", "-k", K, "--force"])
        .arg(vendor.join("dkms.conf"))
        .assert()
        .code(3)
        .stderr(predicate::str::contains(format!(
            "rdkms add {} --force",
            vendor.display()
        )));
    assert_eq!(fs::read_to_string(copy.join("stamp")).unwrap(), "one");
    assert_eq!(read_ko(&installed_ko(&sb, K, "drv")).stamp, "one");
}

#[test]
fn kill_9_during_a_rebuild_keeps_the_installed_module_and_is_cleaned_up() {
    let sb = sandbox();
    let src = sb.source("slow", "1.0").file("stamp", "first").create();
    sb.rdkms(["install", "slow/1.0", "-k", K])
        .assert()
        .success();

    fs::write(src.join("stamp"), "second").unwrap();
    fs::write(src.join("sleep"), "30").unwrap();
    let mut cmd = sb.rdkms_std(["build", "slow/1.0", "-k", K, "--force", "-q"]);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().unwrap();
    let private = sb.tree().join(".rdkms-build");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !started(&private) {
        assert!(Instant::now() < deadline, "the slow build never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();

    // The previous build and installation are intact; the interrupted build left debris.
    assert_eq!(read_ko(&installed_ko(&sb, K, "slow")).stamp, "first");
    assert_eq!(
        read_ko(&sb.built("slow", "1.0", K).join("module/slow.ko")).stamp,
        "first"
    );
    assert!(!sb.listing(&private).is_empty());

    // The next command cleans it up before doing its own work.
    fs::remove_file(src.join("sleep")).unwrap();
    sb.rdkms(["install", "slow/1.0", "-k", K])
        .assert()
        .success();
    assert_eq!(sb.listing(&private), Vec::<String>::new());
    let kernel_dir = sb.tree().join("slow/1.0").join(K);
    assert_eq!(
        sb.listing(&kernel_dir)
            .iter()
            .filter(|p| p.starts_with('.'))
            .count(),
        0
    );
}

#[test]
fn two_commands_on_one_tree_are_serialised() {
    let sb = sandbox();
    let a = sb.source("first", "1.0").create();
    fs::write(a.join("sleep"), "1").unwrap();
    sb.source("second", "1.0").create();
    let mut one = sb
        .rdkms_std(["install", "first/1.0", "-k", K, "-q"])
        .spawn()
        .unwrap();
    let private = sb.tree().join(".rdkms-build");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !started(&private) {
        assert!(Instant::now() < deadline, "the first build never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let t0 = Instant::now();
    sb.rdkms(["install", "second/1.0", "-k", K, "-q"])
        .assert()
        .success();
    let waited = t0.elapsed();
    assert!(one.wait().unwrap().success());
    assert!(
        waited >= Duration::from_millis(500),
        "second did not wait: {waited:?}"
    );
    assert!(installed_ko(&sb, K, "first").is_file());
    assert!(installed_ko(&sb, K, "second").is_file());
}

/// Whether a fake make inside some private build directory has reached its sleep.
fn started(private: &Path) -> bool {
    walkdir::WalkDir::new(private)
        .into_iter()
        .flatten()
        .any(|e| e.file_name() == "started")
}

#[test]
fn modules_are_signed_with_a_generated_mok_when_the_kernel_has_sign_file() {
    // The pair is made in-process: no openssl command is needed.
    let sb = sandbox();
    common::fake_kernel::add_sign_file(&sb.modules_dir(K).join("build"));
    sb.source("signed", "1.0").create();
    sb.rdkms(["install", "signed/1.0", "-k", K])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "generating self signed certificate for MOK",
        ));
    let key = sb.tree().join("mok.key");
    let cert = sb.tree().join("mok.pub");
    let sig = read_ko(&installed_ko(&sb, K, "signed")).signature;
    assert_eq!(sig, format!("sha256 {} {}", key.display(), cert.display()));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let first = fs::read(&cert).unwrap();
    sb.rdkms(["build", "signed/1.0", "-k", K, "--force"])
        .assert()
        .success()
        .stderr(predicate::str::contains("generating").not());
    assert_eq!(fs::read(&cert).unwrap(), first, "the key pair is reused");
}

#[test]
fn no_depmod_skips_depmod() {
    let sb = sandbox();
    sb.source("foo", "1.0").create();
    sb.rdkms(["install", "foo/1.0", "-k", K, "--no-depmod"])
        .assert()
        .success();
    sb.rdkms(["uninstall", "foo/1.0", "-k", K, "--no-depmod"])
        .assert()
        .success();
    assert!(sb.depmod_calls().is_empty());
}

#[test]
fn a_running_build_does_not_block_status() {
    let sb = sandbox();
    let src = sb.source("slow", "1.0").create();
    fs::write(src.join("sleep"), "3").unwrap();
    let mut build = sb
        .rdkms_std(["build", "slow/1.0", "-k", K, "-q"])
        .spawn()
        .unwrap();
    let private = sb.tree().join(".rdkms-build");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !started(&private) {
        assert!(Instant::now() < deadline, "the slow build never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let t0 = Instant::now();
    sb.rdkms(["status"])
        .timeout(Duration::from_secs(10))
        .assert()
        .success()
        .stdout("slow/1.0: added\n");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "status waited for the build"
    );
    assert!(build.wait().unwrap().success());
    sb.rdkms(["status"])
        .assert()
        .success()
        .stdout(format!("slow/1.0, {K}, {}: built\n", arch()));
}

/// `match` (DKMS): the modules installed for the template kernel are built and installed for
/// the other one; DKMS's exit codes for a missing template (1) and the same kernel twice (2).
#[test]
fn match_installs_the_template_kernels_modules() {
    let sb = sandbox();
    sb.fake_kernel(K2);
    sb.source("foo", "1.0").create();
    sb.source("bar", "1.0").create();
    sb.rdkms(["install", "foo/1.0", "-k", K]).assert().success();
    sb.rdkms(["add", "bar/1.0"]).assert().success();
    sb.rdkms(["match", "--templatekernel", K, "-k", K2])
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "Matching modules in kernel: {K2} ({a})\nto the configuration of kernel: {K} ({a})\nModule:  foo\nVersion: 1.0\n",
            a = arch()
        )));
    assert!(installed_ko(&sb, K2, "foo").is_file());
    assert!(
        !installed_ko(&sb, K2, "bar").exists(),
        "bar is not installed for {K}"
    );
    sb.rdkms(["match", "-k", K2]).assert().code(1);
    sb.rdkms(["match", "--templatekernel", K, "-k", K])
        .assert()
        .code(2);
}
