//! What hooks tell people and apt: nothing on stdout; on stderr one line per module and kernel
//! and a summary per kernel; the same lines in syslog (tag `rdkms`); failures remembered in
//! the dkms tree for `plan`/`status`; and the exit status from the failure policy.

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::base::error::{Error, IoContext, Result};
use crate::system::config::Paths;

/// Exit status of a hook run that the policy says must fail (DKMS's autoinstall failure code).
pub const FAILURE_EXIT: i32 = 11;

/// Name of the framework.conf setting that chooses the policy.
pub const POLICY_NAME: &str = "rdkms_failure_policy";

/// Directory in the dkms tree with one record per failed module build.
pub const FAILURES_DIR: &str = ".rdkms-failures";

/// When a hook's exit status reports module failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Always exit 0 (warnings only).
    Never,
    /// Non-zero only when a boot-critical (REMAKE_INITRD) module or an initramfs update failed.
    #[default]
    Critical,
    /// Non-zero on any failure.
    Always,
}

/// The last value of `name=value` in `/etc/dkms/framework.conf` and then
/// `framework.conf.d/*.conf` (last one wins), read as plain lines: no shell runs, so every
/// hook (even apt's) can afford it. Returns the value (quotes and comment stripped) and the
/// file that set it.
pub fn framework_value(paths: &Paths, wanted: &str) -> Option<(String, PathBuf)> {
    crate::system::framework::settings(paths).remove(wanted)
}

/// Reads `rdkms_failure_policy=never|critical|always` from framework.conf (see
/// [`framework_value`]). Returns a warning for an unknown value.
pub fn policy(paths: &Paths) -> (Policy, Option<String>) {
    match framework_value(paths, POLICY_NAME) {
        None => (Policy::default(), None),
        Some((v, f)) => match v.as_str() {
            "never" => (Policy::Never, None),
            "critical" | "" => (Policy::Critical, None),
            "always" => (Policy::Always, None),
            other => (
                Policy::default(),
                Some(format!(
                    "{}: {POLICY_NAME}='{other}' is not never, critical or always; using critical",
                    f.display()
                )),
            ),
        },
    }
}

/// How one module ended up on one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Installed,
    Skipped(String),
    Purged,
    Failed { code: i32, reason: String },
}

/// One module on one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub module: String,
    pub version: String,
    pub kernel: String,
    pub arch: String,
    /// REMAKE_INITRD: a failure can leave the machine unbootable.
    pub critical: bool,
    pub outcome: Outcome,
}

/// A failure remembered in the tree until the module builds or its kernel goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureNote {
    pub module: String,
    pub version: String,
    pub kernel: String,
    pub arch: String,
    pub code: i32,
    pub reason: String,
    pub critical: bool,
}

#[derive(Debug, Default)]
struct KernelTally {
    installed: usize,
    skipped: usize,
    purged: usize,
    failed: Vec<String>,
    critical: Vec<String>,
}

/// Collects and prints the results of one run.
pub struct Reporter {
    syslog: Option<UnixDatagram>,
    quiet: bool,
    tallies: BTreeMap<String, KernelTally>,
    any_failure: bool,
    any_critical: bool,
}

/// Syslog severities used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error = 3,
    Warning = 4,
    Info = 6,
}

impl Reporter {
    /// A reporter writing to stderr (unless `quiet`) and, when `syslog`, to the root's
    /// `/dev/log`. A missing or full syslog socket is ignored: hooks never fail or wait for it.
    pub fn new(paths: &Paths, syslog: bool, quiet: bool) -> Reporter {
        let syslog = syslog.then(|| connect(&paths.system("/dev/log"))).flatten();
        Reporter {
            syslog,
            quiet,
            tallies: BTreeMap::new(),
            any_failure: false,
            any_critical: false,
        }
    }

    /// Prints one line (prefixed `rdkms: ` on stderr) and sends it to syslog.
    pub fn say(&self, severity: Severity, text: &str) {
        if !self.quiet {
            crate::system::progress::write_stderr(&format!("rdkms: {text}\n"));
        }
        if let Some(sock) = &self.syslog {
            // user facility (1) * 8 + severity; no timestamp: syslog daemons add the time.
            let msg = format!(
                "<{}>rdkms[{}]: {text}",
                8 + severity as u8,
                std::process::id()
            );
            let _ = sock.send(msg.as_bytes());
        }
    }

    /// Reports one module on one kernel.
    pub fn module(&mut self, r: &Record) {
        let tally = self.tallies.entry(r.kernel.clone()).or_default();
        let what = format!("{}/{} for {} ({})", r.module, r.version, r.kernel, r.arch);
        match &r.outcome {
            Outcome::Installed => {
                tally.installed += 1;
                self.say(Severity::Info, &format!("{what}: installed"));
            }
            Outcome::Skipped(why) => {
                tally.skipped += 1;
                self.say(Severity::Info, &format!("{what}: skipped: {why}"));
            }
            Outcome::Purged => {
                tally.purged += 1;
                self.say(Severity::Info, &format!("{what}: removed (kernel is gone)"));
            }
            Outcome::Failed { code, reason } => {
                let name = format!("{}({code})", r.module);
                if r.critical {
                    tally.critical.push(r.module.clone());
                    self.any_critical = true;
                }
                tally.failed.push(name);
                self.any_failure = true;
                let boot = if r.critical {
                    " [boot-critical: REMAKE_INITRD]"
                } else {
                    ""
                };
                self.say(
                    Severity::Error,
                    &format!("{what}: FAILED (exit {code}){boot}: {reason}"),
                );
            }
        }
    }

    /// Reports a failure that is not one module's (initramfs, depmod, the lock, a broken tree).
    pub fn failure(&mut self, kernel: Option<&str>, critical: bool, text: &str) {
        self.any_failure = true;
        self.any_critical |= critical;
        if let Some(k) = kernel {
            let t = self.tallies.entry(k.to_string()).or_default();
            if critical {
                t.critical.push("initramfs".into());
            }
        }
        self.say(Severity::Error, text);
    }

    /// Prints one summary line per kernel that had any module result.
    pub fn summaries(&self) {
        for (kernel, t) in &self.tallies {
            let mut parts = Vec::new();
            for (n, word) in [
                (t.installed, "installed"),
                (t.skipped, "skipped"),
                (t.purged, "removed"),
            ] {
                if n > 0 {
                    parts.push(format!("{n} {word}"));
                }
            }
            if !t.failed.is_empty() {
                parts.push(format!("{} failed: {}", t.failed.len(), t.failed.join(" ")));
            }
            if parts.is_empty() && t.critical.is_empty() {
                continue;
            }
            let mut line = format!("kernel {kernel}: {}", parts.join(", "));
            if !t.critical.is_empty() {
                if !parts.is_empty() {
                    line.push_str("; ");
                }
                line.push_str(&format!(
                    "boot-critical failure ({}): the initramfs of {kernel} may lack them, fix this before booting it",
                    t.critical.join(" ")
                ));
            }
            let sev = if t.failed.is_empty() && t.critical.is_empty() {
                Severity::Info
            } else {
                Severity::Warning
            };
            self.say(sev, &line);
        }
    }

    /// The exit status the policy gives this run.
    pub fn exit_code(&self, policy: Policy) -> i32 {
        let fail = match policy {
            Policy::Never => false,
            Policy::Critical => self.any_critical,
            Policy::Always => self.any_failure,
        };
        if fail {
            FAILURE_EXIT
        } else {
            0
        }
    }

    /// Whether anything failed at all.
    pub fn any_failure(&self) -> bool {
        self.any_failure
    }
}

fn connect(path: &Path) -> Option<UnixDatagram> {
    let sock = UnixDatagram::unbound().ok()?;
    sock.set_nonblocking(true).ok()?;
    sock.connect(path).ok()?;
    Some(sock)
}

fn failure_file(paths: &Paths, module: &str, version: &str, kernel: &str, arch: &str) -> PathBuf {
    paths
        .dkms_tree
        .join(FAILURES_DIR)
        .join(format!("{module}@{version}@{kernel}@{arch}"))
}

/// Remembers a failed build (replacing an older note for the same module/version/kernel/arch).
pub fn remember_failure(paths: &Paths, note: &FailureNote) -> Result<()> {
    let dir = paths.dkms_tree.join(FAILURES_DIR);
    std::fs::create_dir_all(&dir).ctx("create", &dir)?;
    let file = failure_file(paths, &note.module, &note.version, &note.kernel, &note.arch);
    let tmp = file.with_extension("tmp");
    let text = serde_json::to_string(note).map_err(|e| Error::io("encode", &file, e.into()))?;
    std::fs::write(&tmp, text).ctx("write", &tmp)?;
    std::fs::rename(&tmp, &file).ctx("rename", &file)
}

/// Forgets the failure notes of a module on a kernel (it built, or was purged), or of every
/// module of `kernel` when `module` is None.
pub fn forget_failures(paths: &Paths, module: Option<&str>, kernel: &str) -> Result<()> {
    for note in failures(paths) {
        if note.kernel == kernel && module.is_none_or(|m| m == note.module) {
            let f = failure_file(paths, &note.module, &note.version, &note.kernel, &note.arch);
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &f, e)),
            }
        }
    }
    Ok(())
}

/// Every remembered failure, sorted by kernel then module.
pub fn failures(paths: &Paths) -> Vec<FailureNote> {
    let mut out: Vec<FailureNote> = std::fs::read_dir(paths.dkms_tree.join(FAILURES_DIR))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_none_or(|x| x != "tmp"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter_map(|t| serde_json::from_str(&t).ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| (&a.kernel, &a.module).cmp(&(&b.kernel, &b.module)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn root() -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        let p = Paths::under(dir.path());
        fs::create_dir_all(&p.etc_dkms).unwrap();
        (dir, p)
    }

    fn rec(module: &str, critical: bool, outcome: Outcome) -> Record {
        Record {
            module: module.into(),
            version: "1.0".into(),
            kernel: "6.1.0-1-amd64".into(),
            arch: "x86_64".into(),
            critical,
            outcome,
        }
    }

    fn failed() -> Outcome {
        Outcome::Failed {
            code: 10,
            reason: "make failed".into(),
        }
    }

    #[test]
    fn policy_defaults_to_critical_and_reads_plain_lines() {
        let (_d, p) = root();
        assert_eq!(policy(&p), (Policy::Critical, None));
        fs::write(
            p.etc_dkms.join("framework.conf"),
            "# comment\nverbose=1\nrdkms_failure_policy=\"always\"\n",
        )
        .unwrap();
        assert_eq!(policy(&p).0, Policy::Always);
        fs::create_dir_all(p.etc_dkms.join("framework.conf.d")).unwrap();
        fs::write(
            p.etc_dkms.join("framework.conf.d/zz.conf"),
            "export rdkms_failure_policy=never  # quiet please\n",
        )
        .unwrap();
        assert_eq!(policy(&p).0, Policy::Never);
        fs::write(
            p.etc_dkms.join("framework.conf.d/zz.conf"),
            "rdkms_failure_policy=$(reboot)\n",
        )
        .unwrap();
        let (pol, warning) = policy(&p);
        assert_eq!(pol, Policy::Critical);
        assert!(warning.unwrap().contains("zz.conf"));
    }

    #[test]
    fn exit_status_follows_the_policy() {
        let (_d, p) = root();
        let mut plain = Reporter::new(&p, false, true);
        plain.module(&rec("a", false, Outcome::Installed));
        plain.module(&rec("b", false, failed()));
        assert_eq!(plain.exit_code(Policy::Never), 0);
        assert_eq!(plain.exit_code(Policy::Critical), 0);
        assert_eq!(plain.exit_code(Policy::Always), FAILURE_EXIT);

        let mut boot = Reporter::new(&p, false, true);
        boot.module(&rec("zfs", true, failed()));
        assert_eq!(boot.exit_code(Policy::Never), 0);
        assert_eq!(boot.exit_code(Policy::Critical), FAILURE_EXIT);

        let mut initramfs = Reporter::new(&p, false, true);
        initramfs.failure(Some("6.1.0-1-amd64"), true, "initramfs failed");
        assert_eq!(initramfs.exit_code(Policy::Critical), FAILURE_EXIT);

        let ok = Reporter::new(&p, false, true);
        assert_eq!(ok.exit_code(Policy::Always), 0);
    }

    #[test]
    fn lines_reach_syslog_without_blocking_and_a_missing_socket_is_fine() {
        let (_d, p) = root();
        // No /dev/log in the root: nothing fails.
        let r = Reporter::new(&p, true, true);
        r.say(Severity::Info, "nobody listens");

        fs::create_dir_all(p.system("/dev")).unwrap();
        let server = UnixDatagram::bind(p.system("/dev/log")).unwrap();
        server.set_nonblocking(true).unwrap();
        let mut r = Reporter::new(&p, true, true);
        r.module(&rec("zfs", true, failed()));
        r.summaries();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = server.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with("<11>rdkms["), "{}", got[0]);
        assert!(got[0].ends_with(
            "]: zfs/1.0 for 6.1.0-1-amd64 (x86_64): FAILED (exit 10) [boot-critical: REMAKE_INITRD]: make failed"
        ));
        assert!(got[1].contains("kernel 6.1.0-1-amd64: 1 failed: zfs(10); boot-critical"));
        // A full socket buffer drops messages instead of waiting.
        for _ in 0..10_000 {
            r.say(Severity::Info, "flood");
        }
    }

    #[test]
    fn failures_are_remembered_until_forgotten() {
        let (_d, p) = root();
        let note = |m: &str, k: &str| FailureNote {
            module: m.into(),
            version: "1".into(),
            kernel: k.into(),
            arch: "x86_64".into(),
            code: 10,
            reason: "make failed".into(),
            critical: false,
        };
        remember_failure(&p, &note("b", "k1")).unwrap();
        remember_failure(&p, &note("a", "k1")).unwrap();
        remember_failure(&p, &note("a", "k2")).unwrap();
        remember_failure(&p, &note("a", "k2")).unwrap();
        assert_eq!(
            failures(&p),
            vec![note("a", "k1"), note("b", "k1"), note("a", "k2")]
        );
        forget_failures(&p, Some("a"), "k1").unwrap();
        assert_eq!(failures(&p), vec![note("b", "k1"), note("a", "k2")]);
        forget_failures(&p, None, "k2").unwrap();
        assert_eq!(failures(&p), vec![note("b", "k1")]);
    }
}
