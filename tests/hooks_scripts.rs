//! The hook entry points are tiny shell scripts: check that each one passes the kernel version
//! from its argument (never `uname -r`), writes nothing to stdout, never reads the terminal,
//! propagates rdkms's exit status, and that run-parts and apt accept them as installed.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use common::repo;

/// Held while a test writes an executable or starts a process: a child forked while another
/// thread still has a fresh script open for writing would make executing it fail with
/// "Text file busy".
static SPAWN: Mutex<()> = Mutex::new(());

fn spawn_guard() -> std::sync::MutexGuard<'static, ()> {
    SPAWN.lock().unwrap_or_else(|e| e.into_inner())
}

/// A stand-in for /usr/sbin/rdkms that records its arguments and whether stdin was at EOF,
/// prints to stdout (which the hook must divert) and exits with `exit`.
struct Stub {
    dir: tempfile::TempDir,
}

impl Stub {
    fn new(exit: i32) -> Stub {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls");
        let script = format!(
            "#!/bin/sh\n\
             if read -r line; then stdin=data; else stdin=eof; fi\n\
             printf '%s|stdin=%s\\n' \"$*\" \"$stdin\" >> '{}'\n\
             echo 'this went to stdout'\n\
             exit {exit}\n",
            log.display()
        );
        let bin = dir.path().join("rdkms");
        let _guard = spawn_guard();
        fs::write(&bin, script).unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        Stub { dir }
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("rdkms")
    }

    fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Runs a hook script with the stub as rdkms, stdin being a pipe with data (as a terminal
/// would offer), and returns (exit status, stdout, stderr).
fn run_hook(stub: &Stub, script: &Path, args: &[&str]) -> (i32, String, String) {
    let guard = spawn_guard();
    let mut child = Command::new(script)
        .args(args)
        .env("RDKMS_BIN", stub.bin())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(guard);
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(b"yes\n");
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn kernel_hooks_pass_the_argument_kernel_and_keep_stdout_empty() {
    let cases = [
        (
            "kernel-postinst.d/dkms",
            vec!["6.1.0-99-amd64", "/boot/vmlinuz-6.1.0-99-amd64"],
            "kernel_postinst --hook -k 6.1.0-99-amd64|stdin=eof",
        ),
        (
            "hooks/prerm.d/dkms",
            vec!["6.1.0-98-amd64", "/boot/vmlinuz-6.1.0-98-amd64"],
            "kernel_prerm --hook -k 6.1.0-98-amd64|stdin=eof",
        ),
        (
            "hooks/header_postinst.d/dkms",
            vec!["6.1.0-97-amd64"],
            "autoinstall --hook -k 6.1.0-97-amd64|stdin=eof",
        ),
        (
            "hooks/common.postinst",
            vec!["foo", "1.2", "/usr/share/foo-dkms", "", "1.1"],
            "common_postinst --hook -m foo -v 1.2 --archive /usr/share/foo-dkms/foo-1.2.dkms.tar.gz|stdin=eof",
        ),
        (
            "hooks/common.postinst",
            vec!["foo", "1.2", "", "arm64", ""],
            "common_postinst --hook -m foo -v 1.2 -a arm64|stdin=eof",
        ),
    ];
    for (script, args, expected) in cases {
        let stub = Stub::new(0);
        let (code, stdout, stderr) = run_hook(&stub, &repo(script), &args);
        assert_eq!(code, 0, "{script}: {stderr}");
        assert_eq!(stdout, "", "{script} wrote to stdout");
        assert!(stderr.contains("this went to stdout"), "{script}: {stderr}");
        assert_eq!(stub.calls(), vec![expected.to_string()], "{script}");
    }
}

#[test]
fn hooks_propagate_the_exit_status_rdkms_chose() {
    for script in [
        "kernel-postinst.d/dkms",
        "hooks/header_postinst.d/dkms",
        "hooks/prerm.d/dkms",
        "hooks/common.postinst",
    ] {
        let stub = Stub::new(11);
        let (code, _, _) = run_hook(&stub, &repo(script), &["6.1.0-1-amd64", "x", "", "", ""]);
        assert_eq!(code, 11, "{script}");
    }
}

/// As DKMS 3.2.2's: `dkms autoinstall` for a kernel with headers (exit 1 when it fails), DKMS's
/// skip message for one without, never anything on stdout or from the terminal.
#[test]
fn autoinstaller_runs_dkms_autoinstall_only_with_headers() {
    let moddir = tempfile::tempdir().unwrap();
    fs::create_dir_all(moddir.path().join("6.1.0-96-amd64/build/include")).unwrap();
    let run = |stub: &Stub, args: &[&str]| {
        let _guard = spawn_guard();
        let out = Command::new(repo("hooks/dkms_autoinstaller"))
            .args(args)
            .env("RDKMS_BIN", stub.bin())
            .env("RDKMS_MODDIR", moddir.path())
            .stdin(Stdio::piped())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let stub = Stub::new(0);
    let (code, stdout, _) = run(&stub, &["start", "6.1.0-96-amd64"]);
    assert_eq!((code, stdout.as_str()), (Some(0), ""));
    assert_eq!(stub.calls(), ["autoinstall -k 6.1.0-96-amd64|stdin=eof"]);
    let (code, _, _) = run(&stub, &["start"]);
    assert_eq!(code, Some(0));
    assert_eq!(stub.calls()[1], "autoinstall|stdin=eof");

    let (code, stdout, stderr) = run(&stub, &["start", "6.1.0-95-amd64"]);
    assert_eq!((code, stdout.as_str()), (Some(0), ""));
    assert_eq!(
        stderr,
        "Automatic installation of modules for kernel 6.1.0-95-amd64 was skipped since the kernel headers for this kernel do not seem to be installed.\n"
    );
    assert_eq!(stub.calls().len(), 2);

    let failing = Stub::new(11);
    let (code, stdout, _) = run(&failing, &["start", "6.1.0-96-amd64"]);
    assert_eq!((code, stdout.as_str()), (Some(1), ""));
}

#[test]
fn autoinstaller_ignores_service_verbs_and_refuses_others() {
    let stub = Stub::new(0);
    for verb in ["stop", "restart", "force-reload", "status", "reload"] {
        let (code, stdout, _) = run_hook(&stub, &repo("hooks/dkms_autoinstaller"), &[verb]);
        assert_eq!((code, stdout.as_str()), (0, ""), "{verb}");
    }
    let (code, stdout, stderr) = run_hook(&stub, &repo("hooks/dkms_autoinstaller"), &["bogus"]);
    assert_eq!((code, stdout.as_str()), (2, ""));
    assert!(stderr.contains("Usage:"));
    assert!(stub.calls().is_empty());
}

#[test]
fn kernel_hooks_do_nothing_when_rdkms_is_not_installed() {
    for script in [
        "kernel-postinst.d/dkms",
        "hooks/header_postinst.d/dkms",
        "hooks/prerm.d/dkms",
    ] {
        let _guard = spawn_guard();
        let out = Command::new(repo(script))
            .arg("6.1.0-1-amd64")
            .env("RDKMS_BIN", "/nonexistent/rdkms")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{script}");
        assert!(out.stdout.is_empty());
    }
    // A module package's postinst must not pretend success without rdkms.
    let _guard = spawn_guard();
    let out = Command::new(repo("hooks/common.postinst"))
        .args(["foo", "1.0", "", "", ""])
        .env("RDKMS_BIN", "/nonexistent/rdkms")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn run_parts_runs_the_installed_kernel_hooks_with_kernel_and_image() {
    if !Path::new("/usr/bin/run-parts").exists() && !Path::new("/bin/run-parts").exists() {
        eprintln!("skipped: run-parts is not installed");
        return;
    }
    let stub = Stub::new(0);
    let etc = tempfile::tempdir().unwrap();
    for (src, dir) in [
        ("kernel-postinst.d/dkms", "postinst.d"),
        ("hooks/prerm.d/dkms", "prerm.d"),
        ("hooks/header_postinst.d/dkms", "header_postinst.d"),
    ] {
        let d = etc.path().join(dir);
        fs::create_dir_all(&d).unwrap();
        let _guard = spawn_guard();
        fs::copy(repo(src), d.join("dkms")).unwrap();
    }
    for (dir, args) in [
        (
            "postinst.d",
            vec!["6.1.0-5-amd64", "/boot/vmlinuz-6.1.0-5-amd64"],
        ),
        ("header_postinst.d", vec!["6.1.0-5-amd64"]),
        (
            "prerm.d",
            vec!["6.1.0-4-amd64", "/boot/vmlinuz-6.1.0-4-amd64"],
        ),
    ] {
        let mut cmd = Command::new("run-parts");
        cmd.arg("--exit-on-error");
        for a in &args {
            cmd.arg(format!("--arg={a}"));
        }
        let _guard = spawn_guard();
        let out = cmd
            .arg(etc.path().join(dir))
            .env("RDKMS_BIN", stub.bin())
            .output()
            .unwrap();
        assert!(out.status.success(), "{dir}: {out:?}");
        assert!(out.stdout.is_empty(), "{dir} wrote to stdout");
    }
    assert_eq!(
        stub.calls(),
        vec![
            "kernel_postinst --hook -k 6.1.0-5-amd64|stdin=eof",
            "autoinstall --hook -k 6.1.0-5-amd64|stdin=eof",
            "kernel_prerm --hook -k 6.1.0-4-amd64|stdin=eof",
        ]
    );
}

#[test]
fn apt_accepts_the_post_invoke_snippet() {
    if Command::new("apt-config").arg("-v").output().is_err() {
        eprintln!("skipped: apt-config is not installed");
        return;
    }
    let out = Command::new("apt-config")
        .arg("-c")
        .arg(repo("apt.conf.d/80rdkms"))
        .args(["dump", "DPkg::Post-Invoke"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "\"if [ -x /usr/sbin/rdkms ]; then /usr/sbin/rdkms reconcile --from-apt; fi\""
        ),
        "{text}"
    );
}

#[test]
fn hooks_never_ask_uname_for_the_kernel() {
    for script in [
        "kernel-postinst.d/dkms",
        "hooks/prerm.d/dkms",
        "hooks/header_postinst.d/dkms",
        "hooks/common.postinst",
        "hooks/dkms_autoinstaller",
    ] {
        let text = fs::read_to_string(repo(script)).unwrap();
        assert!(!text.contains("uname"), "{script} calls uname");
        let mode = fs::metadata(repo(script)).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{script} is not executable");
    }
}

#[test]
fn debian13_hooks_pass_the_argument_kernel_and_keep_stdout_empty() {
    let cases = [
        (
            "hooks/preinst.d/dkms",
            vec!["6.12.99+deb13-amd64", "/boot/vmlinuz-6.12.99+deb13-amd64"],
            "kernel_preinst --hook -k 6.12.99+deb13-amd64|stdin=eof",
        ),
        (
            "hooks/install.d/40-dkms.install",
            vec![
                "add",
                "6.12.98+deb13-amd64",
                "/boot/efi/abc/6.12.98+deb13-amd64",
                "/boot/vmlinuz-6.12.98+deb13-amd64",
            ],
            "kernel_postinst --hook -k 6.12.98+deb13-amd64|stdin=eof",
        ),
        (
            "hooks/install.d/40-dkms.install",
            vec![
                "remove",
                "6.12.97+deb13-amd64",
                "/boot/efi/abc/6.12.97+deb13-amd64",
            ],
            "kernel_prerm --hook -k 6.12.97+deb13-amd64|stdin=eof",
        ),
    ];
    for (script, args, expected) in cases {
        let stub = Stub::new(0);
        let (code, stdout, stderr) = run_hook(&stub, &repo(script), &args);
        assert_eq!(code, 0, "{script}: {stderr}");
        assert_eq!(stdout, "", "{script} wrote to stdout");
        assert_eq!(stub.calls(), vec![expected.to_string()], "{script}");
        let text = fs::read_to_string(repo(script)).unwrap();
        assert!(!text.contains("uname"), "{script} calls uname");
    }
}

/// DKMS's preinst.d hook never fails a kernel's installation; the kernel-install plugin
/// reports rdkms's verdict for add/remove and leaves other commands alone.
#[test]
fn preinst_never_fails_and_the_kernel_install_plugin_ignores_other_commands() {
    let stub = Stub::new(11);
    let (code, _, _) = run_hook(
        &stub,
        &repo("hooks/preinst.d/dkms"),
        &["6.12.1+deb13-amd64"],
    );
    assert_eq!(code, 0);
    let plugin = repo("hooks/install.d/40-dkms.install");
    let (code, _, _) = run_hook(&stub, &plugin, &["add", "6.12.1+deb13-amd64", "/e"]);
    assert_eq!(code, 11);
    let calls = stub.calls().len();
    let (code, stdout, _) = run_hook(&stub, &plugin, &["inspect", "6.12.1+deb13-amd64"]);
    assert_eq!((code, stdout.as_str()), (0, ""));
    assert_eq!(stub.calls().len(), calls, "inspect must not run rdkms");
    for (script, args) in [
        ("hooks/preinst.d/dkms", vec!["6.12.1+deb13-amd64"]),
        (
            "hooks/install.d/40-dkms.install",
            vec!["add", "6.12.1+deb13-amd64", "/e"],
        ),
    ] {
        let _guard = spawn_guard();
        let out = Command::new(repo(script))
            .args(&args)
            .env("RDKMS_BIN", "/nonexistent/rdkms")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{script}");
        assert!(out.stdout.is_empty(), "{script}");
    }
}

/// Run outside a source tree and given no package, dkms-autopkgtest names what is missing
/// before it touches the system (it would otherwise switch autoinstall off).
#[test]
fn dkms_autopkgtest_without_packages_says_so_and_changes_nothing() {
    let cwd = tempfile::tempdir().unwrap();
    let _guard = spawn_guard();
    let out = Command::new(repo("hooks/dkms-autopkgtest"))
        .current_dir(cwd.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("./debian/control") || stderr.contains("needs root"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}
