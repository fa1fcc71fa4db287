//! `rdkms doctor`: reads the machine the way the hooks do (the same snapshot and planner) and
//! reports what is wrong, each finding with the command that fixes it. It changes nothing and
//! takes no lock, so it is safe while a hook runs.
//!
//! Exit status: 0 when no problem was found (notes do not count), 1 otherwise.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::base::error::{Error, Result};
use crate::cmd::cli::Invocation;
use crate::cmd::reconcile;
use crate::cmd::status::{self, Query, State, WarningCode};
use crate::effects::build;
use crate::ops::lifecycle::Ctx;
use crate::planning::plan::{self, Request, Scope, Step};
use crate::state::atomic::TMP_MARK;
use crate::state::lock::TreeLock;
use crate::system::config::Paths;
use crate::system::host;
use crate::system::options::Options;

/// A lock held longer than this is reported (no build takes that long).
const LOCK_TOO_LONG: Duration = Duration::from_secs(30 * 60);

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Something is broken or will break (counts for the exit status).
    Problem,
    /// Worth knowing; nothing is broken.
    Note,
}

/// One thing doctor found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Which check found it (`headers`, `modules`, `installed_files`, ...).
    pub check: &'static str,
    pub severity: Severity,
    pub message: String,
    /// The command that fixes it, when there is one.
    pub fix: Option<String>,
}

/// Every check doctor runs, in order, for the "ok" lines.
const CHECKS: &[(&str, &str)] = &[
    ("headers", "kernel headers"),
    ("modules", "modules built and installed"),
    ("installed_files", "installed files match the tree"),
    ("sources", "module sources"),
    ("pending", "pending depmod/initramfs work"),
    ("secure_boot", "Secure Boot and module signing"),
    ("leftovers", "temporary leftovers"),
    ("lock", "tree lock"),
];

/// What `doctor --json` prints.
#[derive(Serialize)]
struct Report<'a> {
    healthy: bool,
    checks: Vec<&'static str>,
    findings: &'a [Finding],
}

/// Runs every check and prints the findings.
pub fn run(inv: &Invocation, opts: &Options) -> Result<i32> {
    let ctx = Ctx::from_options(opts);
    let findings = diagnose(&ctx);
    let healthy = !findings.iter().any(|f| f.severity == Severity::Problem);
    if inv.cli.json {
        let report = Report {
            healthy,
            checks: CHECKS.iter().map(|(id, _)| *id).collect(),
            findings: &findings,
        };
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::io("encode", "doctor report", e.into()))?;
        println!("{text}");
    } else {
        print!("{}", render(&findings));
    }
    Ok(if healthy { 0 } else { 1 })
}

/// The findings as text: one `ok` line per clean check, then each finding with its fix.
pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    for (id, title) in CHECKS {
        let mine: Vec<&Finding> = findings.iter().filter(|f| f.check == *id).collect();
        if mine.is_empty() {
            out.push_str(&format!("ok       {title}\n"));
        }
        for f in mine {
            let tag = match f.severity {
                Severity::Problem => "PROBLEM",
                Severity::Note => "note",
            };
            out.push_str(&format!("{tag:8} {}\n", f.message));
            if let Some(fix) = &f.fix {
                out.push_str(&format!("         fix: {fix}\n"));
            }
        }
    }
    let problems = findings
        .iter()
        .filter(|f| f.severity == Severity::Problem)
        .count();
    out.push_str(&match problems {
        0 => "No problems found.\n".to_string(),
        1 => "1 problem found.\n".to_string(),
        n => format!("{n} problems found.\n"),
    });
    out
}

/// Runs every check.
pub fn diagnose(ctx: &Ctx) -> Vec<Finding> {
    let paths = &ctx.paths;
    let mut out = Vec::new();
    let arch = host::machine_arch();
    let req = Request::new(Scope::All);
    let mut snap = reconcile::snapshot(paths, &arch);
    reconcile::read_confs(ctx, &mut snap, &req);
    let plan = plan::plan(&snap, &req);
    plan_findings(&plan, &mut out);
    for m in &snap.modules {
        for v in m.versions.iter().filter(|v| v.broken) {
            out.push(Finding {
                check: "sources",
                severity: Severity::Problem,
                message: format!(
                    "{}/{}: its source link {} points nowhere",
                    m.name,
                    v.version,
                    ctx.tree.source_link(&m.name, &v.version).display()
                ),
                fix: Some(format!(
                    "reinstall its sources (the {}-dkms package), or rdkms remove {}/{} --all",
                    m.name, m.name, v.version
                )),
            });
        }
    }
    for m in &snap.modules {
        for v in &m.versions {
            let kept = ctx.tree.version_dir(&m.name, &v.version).join("build");
            if kept.join("make.log").is_file() {
                out.push(Finding {
                    check: "modules",
                    severity: Severity::Note,
                    message: format!(
                        "a failed build of {}/{} is kept in {} for inspection",
                        m.name,
                        v.version,
                        kept.display()
                    ),
                    fix: Some(format!(
                        "read {}; the next successful build or unbuild removes it",
                        kept.join("make.log").display()
                    )),
                });
            }
        }
    }
    installed_file_findings(paths, &mut out);
    writable_sources(ctx, &mut out);
    for k in &snap.initramfs_pending {
        out.push(Finding {
            check: "pending",
            severity: Severity::Problem,
            message: format!(
                "the initramfs of {k} still has to be regenerated (an earlier run was interrupted)"
            ),
            fix: Some("rdkms reconcile".to_string()),
        });
    }
    for i in crate::state::journal::pending_installs(&paths.dkms_tree) {
        out.push(Finding {
            check: "pending",
            severity: Severity::Problem,
            message: format!(
                "the installation of {}/{} on kernel {} ({}) was interrupted",
                i.module, i.version, i.kernel, i.arch
            ),
            fix: Some("rdkms reconcile (every changing command completes it first)".to_string()),
        });
    }
    stale_depmod(paths, &snap, &mut out);
    secure_boot(paths, &mut out);
    leftovers(paths, &mut out);
    lock_age(paths, &mut out);
    out
}

/// What the planner would still do is what is wrong now.
fn plan_findings(plan: &plan::Plan, out: &mut Vec<Finding>) {
    if plan.autoinstall_disabled {
        out.push(Finding {
            check: "modules",
            severity: Severity::Note,
            message: "automatic builds are disabled by /etc/dkms/no-autoinstall".to_string(),
            fix: Some("rm /etc/dkms/no-autoinstall".to_string()),
        });
    }
    for step in &plan.steps {
        let (check, message, fix) = match step {
            Step::NoHeaders { kernel, package } => (
                "headers",
                format!("kernel {kernel} is installed but has no headers: no module can be built for it"),
                format!("apt install {package}"),
            ),
            Step::Build {
                module,
                version,
                kernel,
                ..
            } => (
                "modules",
                format!("{module}/{version} is not built for kernel {kernel}"),
                format!("rdkms install {module}/{version} -k {kernel}"),
            ),
            Step::Install {
                module,
                version,
                kernel,
                ..
            } => (
                "modules",
                format!("{module}/{version} is built but not installed for kernel {kernel}"),
                format!("rdkms install {module}/{version} -k {kernel}"),
            ),
            Step::Purge {
                module,
                version,
                kernel,
                ..
            } => (
                "modules",
                format!("{module}/{version} is still built for kernel {kernel}, which is gone"),
                "rdkms reconcile".to_string(),
            ),
            Step::Fail {
                module,
                version,
                kernel,
                reason,
                ..
            } => (
                "modules",
                format!("{module}/{version} cannot be built for kernel {kernel}: {reason}"),
                format!("rdkms plan -k {kernel}"),
            ),
            Step::UpdateInitramfs { kernel } => (
                "pending",
                format!("the initramfs of {kernel} is out of date"),
                format!("update-initramfs -u -k {kernel}"),
            ),
            _ => continue,
        };
        out.push(Finding {
            check,
            severity: Severity::Problem,
            message,
            fix: Some(fix),
        });
    }
}

/// Installed copies that are missing or differ from the build in the tree (status's check).
fn installed_file_findings(paths: &Paths, out: &mut Vec<Finding>) {
    for e in status::collect(paths, &Query::default()) {
        if e.state != State::Installed {
            continue;
        }
        for w in &e.warnings {
            let what = match w.code {
                WarningCode::DiffBuiltInstalled => {
                    "is missing or differs from the build in the tree"
                }
                WarningCode::MissingBuiltModule => "misses some built modules in the tree",
                WarningCode::OriginalModuleExists => continue,
            };
            let kernel = e.kernel.clone().unwrap_or_default();
            out.push(Finding {
                check: "installed_files",
                severity: Severity::Problem,
                message: format!(
                    "{}/{} on {kernel}: {} {what}",
                    e.name,
                    e.version,
                    w.module.as_deref().unwrap_or("a module")
                ),
                fix: Some(format!(
                    "rdkms install {}/{} -k {kernel} --force",
                    e.name, e.version
                )),
            });
        }
    }
}

/// Sources a non-root user can change are built and loaded into the kernel as root.
fn writable_sources(ctx: &Ctx, out: &mut Vec<Finding>) {
    for (m, v) in ctx.tree.module_versions(
        &crate::state::tree::Pattern::Any,
        &crate::state::tree::Pattern::Any,
    ) {
        let Ok(dir) = fs::canonicalize(ctx.tree.source_link(&m, &v)) else {
            continue;
        };
        let unsafe_entry = walkdir::WalkDir::new(&dir)
            .follow_links(false)
            .into_iter()
            .flatten()
            .filter(|e| !e.path_is_symlink())
            .find(|e| {
                e.metadata()
                    .is_ok_and(|md| md.uid() != 0 || md.mode() & 0o022 != 0)
            });
        if let Some(e) = unsafe_entry {
            out.push(Finding {
                check: "sources",
                severity: Severity::Problem,
                message: format!(
                    "{m}/{v}: {} can be changed by a user other than root, and is compiled into the kernel as root",
                    e.path().display()
                ),
                fix: Some(format!(
                    "chown -R root:root {d} && chmod -R go-w {d}",
                    d = dir.display()
                )),
            });
        }
    }
}

/// A kernel whose module index is older than a module rdkms installed for it.
fn stale_depmod(paths: &Paths, snap: &plan::Snapshot, out: &mut Vec<Finding>) {
    for k in snap.kernels.iter().filter(|k| k.installed()) {
        let dir = paths.install_tree.join(&k.version);
        let newest = newest_mtime(&dir.join("updates/dkms"));
        let index = fs::metadata(dir.join("modules.dep"))
            .and_then(|m| m.modified())
            .ok();
        if let (Some(newest), index) = (newest, index) {
            if index.is_none_or(|i| i < newest) {
                out.push(Finding {
                    check: "pending",
                    severity: Severity::Problem,
                    message: format!(
                        "the module index of {} is older than its dkms modules",
                        k.version
                    ),
                    fix: Some(format!("depmod -a {}", k.version)),
                });
            }
        }
    }
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max()
}

/// Secure Boot on and the MOK certificate not enrolled means signed modules will not load.
fn secure_boot(paths: &Paths, out: &mut Vec<Finding>) {
    let note = |message: String, fix: Option<String>| Finding {
        check: "secure_boot",
        severity: Severity::Note,
        message,
        fix,
    };
    if paths.root != Path::new("/") {
        out.push(note(
            format!(
                "Secure Boot: not checked under --root {} (it is the running machine's state)",
                paths.root.display()
            ),
            None,
        ));
        return;
    }
    let Some(state) = mokutil(&["--sb-state"]) else {
        out.push(note(
            "mokutil is not installed: Secure Boot state and MOK enrolment cannot be checked"
                .to_string(),
            Some("apt install mokutil".to_string()),
        ));
        return;
    };
    if !state.contains("SecureBoot enabled") {
        out.push(note(
            format!(
                "Secure Boot: {}",
                state.lines().next().unwrap_or("unknown").trim()
            ),
            None,
        ));
        return;
    }
    let cert = paths.dkms_tree.join("mok.pub");
    if !cert.is_file() {
        out.push(note(
            format!(
                "Secure Boot is on and no MOK certificate exists yet ({} is created by the first signed build)",
                cert.display()
            ),
            None,
        ));
        return;
    }
    let test = mokutil(&["--test-key", &cert.to_string_lossy()]).unwrap_or_default();
    if !test.contains("already enrolled") {
        out.push(Finding {
            check: "secure_boot",
            severity: Severity::Problem,
            message: format!(
                "Secure Boot is on but {} is not enrolled: modules signed with it will not load",
                cert.display()
            ),
            fix: Some(format!(
                "mokutil --import {} (then reboot and confirm in MOK manager)",
                cert.display()
            )),
        });
    }
}

/// Runs mokutil; None when it is not installed. Its answer is on stdout or stderr.
fn mokutil(args: &[&str]) -> Option<String> {
    let out = Command::new("mokutil")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Some(text)
}

/// Temporary entries an interrupted command left (the next changing command removes them).
fn leftovers(paths: &Paths, out: &mut Vec<Finding>) {
    let mut found: Vec<PathBuf> = Vec::new();
    let private = build::private_builds_dir(&paths.dkms_tree);
    if private.exists() {
        found.push(private);
    }
    let depth_limited = |dir: &Path, depth| {
        walkdir::WalkDir::new(dir)
            .max_depth(depth)
            .into_iter()
            .flatten()
            .map(|e| e.into_path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(TMP_MARK) || n.starts_with(".rdkms-add-"))
            })
            .collect::<Vec<_>>()
    };
    found.extend(depth_limited(&paths.dkms_tree, 5));
    found.extend(depth_limited(&paths.source_tree, 1));
    if !found.is_empty() {
        let list: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
        out.push(Finding {
            check: "leftovers",
            severity: Severity::Problem,
            message: format!(
                "interrupted commands left temporary files: {}",
                list.join(", ")
            ),
            fix: Some("rdkms reconcile (every changing command removes them first)".to_string()),
        });
    }
}

/// A tree lock held for longer than any build takes.
fn lock_age(paths: &Paths, out: &mut Vec<Finding>) {
    use nix::fcntl::{Flock, FlockArg};
    let path = TreeLock::path(paths);
    let Ok(file) = fs::File::open(&path) else {
        return;
    };
    let Err((file, _)) = Flock::lock(file, FlockArg::LockSharedNonblock) else {
        return;
    };
    let age = file
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .unwrap_or_default();
    if age < LOCK_TOO_LONG {
        return;
    }
    let holder = fs::read_to_string(&path).unwrap_or_default();
    let holder = holder.trim();
    let pid = holder
        .strip_prefix("pid ")
        .and_then(|r| r.split(':').next())
        .unwrap_or("PID");
    out.push(Finding {
        check: "lock",
        severity: Severity::Problem,
        message: format!(
            "{} has been held for {} minutes by {}",
            path.display(),
            age.as_secs() / 60,
            if holder.is_empty() {
                "an unknown process"
            } else {
                holder
            }
        ),
        fix: Some(format!(
            "see what it is doing (ps -o pid,etime,args -p {pid}); if it hangs: kill {pid}"
        )),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_report_lists_every_check_as_ok() {
        let text = render(&[]);
        assert_eq!(text.matches("ok ").count(), CHECKS.len());
        assert!(text.ends_with("No problems found.\n"));
    }

    #[test]
    fn a_problem_is_shown_with_its_fix() {
        let text = render(&[Finding {
            check: "headers",
            severity: Severity::Problem,
            message: "kernel K has no headers".into(),
            fix: Some("apt install linux-headers-K".into()),
        }]);
        assert!(text.contains(
            "PROBLEM  kernel K has no headers\n         fix: apt install linux-headers-K\n"
        ));
        assert!(text.ends_with("1 problem found.\n"));
    }
}
