//! Real tier of the lifecycle commands: the installed Debian kernel headers and real make build
//! `examples/hello-dkms` and real Debian `*-dkms` sources in temporary roots; the result is
//! checked with modinfo and a real `depmod -b`, and compared with Debian's own dkms run side by
//! side on the same sources. Needs root, headers, make and gcc (CI installs them).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{arch, copy_dir, real_tier, skip_unless, Sandbox};

/// The real packages built here: (name, version, source directory, modules it installs).
fn packages() -> Vec<(&'static str, &'static str, PathBuf, Vec<&'static str>)> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = repo.join("tests/corpus/work/src");
    vec![
        (
            "hello",
            "1.0",
            repo.join("examples/hello-dkms"),
            vec!["hello"],
        ),
        (
            "acpi-call",
            "1.2.2",
            corpus.join("acpi-call-1.2.2"),
            vec!["acpi_call"],
        ),
        (
            "v4l2loopback",
            "0.12.7",
            corpus.join("v4l2loopback-0.12.7"),
            vec!["v4l2loopback"],
        ),
    ]
}

/// The prerequisites of this tier, or `None` (after a "skipped" line) when they are missing.
fn prerequisites(need_dkms: bool) -> Option<String> {
    let kernel = real_tier(&["make", "gcc", "modinfo", "depmod"])?;
    if need_dkms
        && skip_unless(
            Path::new("/usr/sbin/dkms").is_file(),
            "Debian's dkms is not installed",
        )
    {
        return None;
    }
    let corpus = packages().iter().all(|p| p.2.join("dkms.conf").is_file());
    if skip_unless(corpus, "the corpus is missing (run tests/fetch-corpus.sh)") {
        return None;
    }
    Some(kernel)
}

/// A root whose `lib/modules/K/build` is the real headers, with the files depmod reads.
fn real_root(kernel: &str) -> Sandbox {
    let sb = Sandbox::new();
    sb.real_headers(kernel);
    for (name, version, src, _) in packages() {
        copy_dir(
            &src,
            &sb.root().join("usr/src").join(format!("{name}-{version}")),
        );
    }
    sb
}

fn modinfo(field: &str, file: &Path) -> String {
    let out = Command::new("modinfo")
        .args(["-F", field])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "modinfo {}", file.display());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Installs every package with rdkms; returns the wall time.
fn rdkms_install_all(sb: &Sandbox, kernel: &str) -> Duration {
    let t0 = Instant::now();
    for (name, version, _, _) in packages() {
        sb.rdkms(["install", &format!("{name}/{version}"), "-k", kernel, "-q"])
            .timeout(Duration::from_secs(600))
            .assert()
            .success();
    }
    t0.elapsed()
}

#[test]
fn real_packages_build_install_depmod_and_remove() {
    let Some(kernel) = prerequisites(false) else {
        return;
    };
    let sb = real_root(&kernel);
    let took = rdkms_install_all(&sb, &kernel);
    eprintln!(
        "rdkms: built and installed {} real packages in {:.1} s",
        packages().len(),
        took.as_secs_f64()
    );

    let kdir = sb.modules_dir(&kernel);
    let dep = fs::read_to_string(kdir.join("modules.dep")).expect("real depmod wrote modules.dep");
    for (name, version, _, modules) in packages() {
        for m in modules {
            let installed = kdir.join("updates/dkms").join(format!("{m}.ko"));
            assert!(installed.is_file(), "{} missing", installed.display());
            let vermagic = modinfo("vermagic", &installed);
            assert!(vermagic.starts_with(&kernel), "{m}: vermagic {vermagic}");
            assert_eq!(
                modinfo("signer", &installed),
                "DKMS module signing key",
                "{m}"
            );
            assert!(
                dep.contains(&format!("updates/dkms/{m}.ko:")),
                "{m} not in modules.dep:\n{dep}"
            );
            let built = sb
                .built(name, version, &kernel)
                .join("module")
                .join(format!("{m}.ko"));
            assert_eq!(fs::read(&built).unwrap(), fs::read(&installed).unwrap());
        }
    }

    for (name, version, _, _) in packages() {
        sb.rdkms(["remove", &format!("{name}/{version}"), "--all", "-q"])
            .assert()
            .success();
    }
    // Like DKMS, the signing key pair stays for the next build.
    let left: Vec<String> = sb
        .listing(&sb.tree())
        .into_iter()
        .filter(|p| !p.ends_with(".lock") && !p.starts_with("mok."))
        .collect();
    assert!(left.is_empty(), "left in the dkms tree: {left:?}");
    assert!(!kdir.join("updates").exists());
    let dep = fs::read_to_string(kdir.join("modules.dep")).unwrap();
    assert!(
        !dep.contains("updates/dkms"),
        "modules.dep still lists removed modules:\n{dep}"
    );
    for (name, version, _, _) in packages() {
        assert!(sb
            .root()
            .join("usr/src")
            .join(format!("{name}-{version}/dkms.conf"))
            .is_file());
    }
}

/// Debian's dkms on the same sources in a second root (no depmod: it would run on the real
/// /lib/modules; signing keys kept in the temporary root). Returns the wall time.
fn debian_dkms(sb: &Sandbox, kernel: &str, actions: &[&str]) -> Duration {
    let t0 = Instant::now();
    for (name, version, _, _) in packages() {
        for action in actions {
            let out = dkms_cmd(sb, &[action, &format!("{name}/{version}"), "-k", kernel]);
            assert!(
                out.status.success(),
                "dkms {action} {name}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    t0.elapsed()
}

/// What a tree looks like, independent of where it lives: relative paths with the symlink
/// targets (root prefix removed), skipping rdkms's lock and the signing keys.
fn shape(sb: &Sandbox) -> Vec<String> {
    let root = sb.root().display().to_string();
    let mut out = Vec::new();
    for base in [sb.tree(), sb.root().join("lib/modules")] {
        for rel in sb.listing(&base) {
            let p = base.join(&rel);
            if rel.ends_with(".lock") || rel.starts_with("mok.") {
                continue;
            }
            let entry = match fs::read_link(&p) {
                // rdkms links `source` relative to the root (so it resolves inside it too):
                // compare where it leads.
                Ok(t) if t.is_relative() && rel.ends_with("/source") => format!(
                    "{rel} -> {}",
                    rdkms::system::config::lexical(&p.parent().unwrap().join(t))
                        .display()
                        .to_string()
                        .replace(&root, "ROOT")
                ),
                Ok(t) => format!(
                    "{rel} -> {}",
                    t.display().to_string().replace(&root, "ROOT")
                ),
                Err(_) => rel,
            };
            out.push(entry);
        }
    }
    out
}

#[test]
fn same_tree_as_debian_dkms_side_by_side() {
    let Some(kernel) = prerequisites(true) else {
        return;
    };
    let ours = real_root(&kernel);
    let theirs = real_root(&kernel);
    let rdkms_time = rdkms_install_all(&ours, &kernel);
    let dkms_time = debian_dkms(&theirs, &kernel, &["add", "build", "install"]);
    eprintln!(
        "wall time to build+install {} real packages for {kernel}: rdkms {:.1} s, Debian dkms {:.1} s",
        packages().len(),
        rdkms_time.as_secs_f64(),
        dkms_time.as_secs_f64()
    );
    let depmod_files = |s: &Vec<String>| -> Vec<String> {
        s.iter()
            .filter(|p| !p.contains("/modules."))
            .cloned()
            .collect()
    };
    assert_eq!(depmod_files(&shape(&ours)), depmod_files(&shape(&theirs)));
    for (name, version, _, modules) in packages() {
        for m in modules {
            let rel = format!("module/{m}.ko");
            let a = ours.built(name, version, &kernel).join(&rel);
            let b = theirs.built(name, version, &kernel).join(&rel);
            assert_eq!(modinfo("vermagic", &a), modinfo("vermagic", &b));
            assert_eq!(modinfo("srcversion", &a), modinfo("srcversion", &b), "{m}");
        }
    }
}

#[test]
fn status_lines_equal_debian_dkms() {
    let Some(kernel) = prerequisites(true) else {
        return;
    };
    let ours = real_root(&kernel);
    let theirs = real_root(&kernel);
    let status = |sb: &Sandbox, dkms: bool| -> String {
        let out = if dkms {
            Command::new("/usr/sbin/dkms")
                .arg("status")
                .arg(format!("--dkmstree={}", sb.tree().display()))
                .arg(format!(
                    "--sourcetree={}",
                    sb.root().join("usr/src").display()
                ))
                .arg(format!(
                    "--installtree={}",
                    sb.root().join("lib/modules").display()
                ))
                .output()
                .unwrap()
        } else {
            sb.rdkms(["status"]).output().unwrap()
        };
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let steps: [(&[&str], &str); 4] = [
        (&["add"], "add"),
        (&["build"], "build"),
        (&["install"], "install"),
        (&["uninstall"], "uninstall"),
    ];
    for (dkms_actions, action) in steps {
        debian_dkms(&theirs, &kernel, dkms_actions);
        for (name, version, _, _) in packages() {
            let mut args = vec![action.to_string(), format!("{name}/{version}"), "-q".into()];
            if action != "add" {
                args.extend(["-k".to_string(), kernel.clone()]);
            }
            ours.rdkms(&args).assert().success();
        }
        let (a, b) = (status(&ours, false), status(&theirs, true));
        assert_eq!(a, b, "status after {action}");
        assert!(a.lines().count() >= packages().len(), "{a}");
    }
    assert!(status(&ours, false).contains(&format!("hello/1.0, {kernel}, {}: built", arch())));
}

/// Debian's dkms command line for a sandbox root (depmod off: it would touch the real tree).
fn dkms_cmd(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    let root = sb.root();
    fs::create_dir_all(sb.tree()).unwrap();
    Command::new("/usr/sbin/dkms")
        .args(args)
        .arg("--no-depmod")
        .arg(format!("--dkmstree={}", sb.tree().display()))
        .arg(format!("--sourcetree={}", root.join("usr/src").display()))
        .arg(format!(
            "--installtree={}",
            root.join("lib/modules").display()
        ))
        .env("mok_signing_key", root.join("mok.key"))
        .env("mok_certificate", root.join("mok.pub"))
        .output()
        .unwrap()
}

#[test]
fn each_tool_takes_over_what_the_other_installed() {
    let Some(kernel) = prerequisites(true) else {
        return;
    };
    let sb = real_root(&kernel);
    let installed = sb.modules_dir(&kernel).join("updates/dkms/hello.ko");

    // rdkms installs, Debian's dkms sees it installed and removes it completely.
    sb.rdkms(["install", "hello/1.0", "-k", &kernel, "-q"])
        .assert()
        .success();
    let out = dkms_cmd(&sb, &["status"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("hello/1.0, {kernel}, {}: installed\n", arch())
    );
    let out = dkms_cmd(&sb, &["remove", "hello/1.0", "--all"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!installed.exists());
    assert!(!sb.tree().join("hello").exists());

    // Debian's dkms installs, rdkms skips the reinstall, then removes everything.
    let out = dkms_cmd(&sb, &["install", "hello/1.0", "-k", &kernel]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(installed.is_file());
    sb.rdkms(["install", "hello/1.0", "-k", &kernel])
        .assert()
        .success()
        .stderr(predicates::str::contains("already installed"));
    sb.rdkms(["remove", "hello/1.0", "--all", "-q"])
        .assert()
        .success();
    assert!(!installed.exists());
    assert!(!sb.tree().join("hello").exists());
    assert!(sb.root().join("usr/src/hello-1.0/dkms.conf").is_file());
}
