//! `autoinstall`, `kernel_postinst` and `kernel_prerm` run as `dkms` by a person or a script
//! (not as a hook, `--hook`): DKMS 3.2.2's order and text, which scripts and DKMS's own test
//! suite compare line by line. Modules go one after the other, each installed as `dkms install`
//! installs it (depmod included); hooks use the planner instead (`reconcile`).

use std::collections::{BTreeMap, BTreeSet};

use crate::base::error::{Error, Result};
use crate::base::version::ver_cmp;
use crate::cmd::cli::Action;
use crate::effects::depmod;
use crate::effects::signing::Signer;
use crate::ops::lifecycle::{self, Changes, Ctx, Job};
use crate::state::atomic::Removals;
use crate::state::lock::{self, TreeLock};
use crate::state::tree::Pattern;
use crate::system::kernel::KernelFacts;
use crate::system::options::Options;

/// Runs `action` for `kernel`/`arch` under the tree lock.
pub fn run(action: Action, opts: &Options, kernel: &str, arch: &str) -> Result<i32> {
    let mut ctx = Ctx::from_options(opts);
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    if action != Action::KernelPrerm && ctx.paths.etc_dkms.join("no-autoinstall").exists() {
        ctx.console
            .say("Automatic installation of modules has been disabled.");
        return Ok(0);
    }
    let _lock = TreeLock::acquire(&ctx.paths, lock::timeout(opts.lock_timeout))?;
    lifecycle::recover(&ctx);
    let facts = KernelFacts::probe(&ctx.paths, kernel, arch, &ctx.kernel_overrides);
    let owed = depmod::pending(&ctx.paths);
    if action == Action::KernelPrerm {
        return kernel_prerm(&ctx, &facts, &owed);
    }
    let mut changes = Changes {
        per_step: true,
        ..Changes::default()
    };
    let result = autoinstall(&mut ctx, &facts, &mut changes);
    let depmod = lifecycle::finish_depmod(&ctx, &changes, &owed);
    match (result, depmod) {
        (Err(e), Err(d)) => {
            ctx.console.error(d.to_string());
            Err(e)
        }
        (result, depmod) => depmod.and(result),
    }
}

/// A registered `M/V` as DKMS's `module_status` sees it.
enum State {
    Added,
    /// The `source` link dangles, or is missing while `/usr/src/M-V` exists.
    Broken,
}

/// Every `<tree>/M/V` in DKMS's order, added or broken (others are not DKMS's to report).
fn module_versions(ctx: &Ctx) -> Vec<(String, String, State)> {
    let mut out = Vec::new();
    for (m, v) in ctx.tree.module_versions(&Pattern::Any, &Pattern::Any) {
        if v.starts_with("kernel-") || !ctx.tree.version_dir(&m, &v).is_dir() {
            continue;
        }
        let state = if crate::state::broken::is_broken(&ctx.paths, &ctx.tree, &m, &v) {
            State::Broken
        } else if ctx.tree.source(&m, &v).is_present() {
            State::Added
        } else {
            continue;
        };
        out.push((m, v, state));
    }
    out
}

fn is_built(ctx: &Ctx, m: &str, v: &str, facts: &KernelFacts) -> bool {
    ctx.tree
        .built_modules_dir(m, v, &facts.kernel, &facts.arch)
        .is_dir()
}

/// DKMS 3.2.2's autoinstall: the newest version of every module not yet installed whose
/// dkms.conf says AUTOINSTALL, in rounds so that a module comes after its BUILD_DEPENDS; a
/// module skipped by BUILD_EXCLUSIVE counts as present for its dependents.
fn autoinstall(ctx: &mut Ctx, facts: &KernelFacts, changes: &mut Changes) -> Result<i32> {
    let kernel = facts.kernel.as_str();
    let mut latest: Vec<(String, String)> = Vec::new();
    for (m, v, state) in module_versions(ctx) {
        if let State::Broken = state {
            ctx.console
                .error(crate::state::broken::autoinstall_text(&m, &v));
            continue;
        }
        match latest.iter_mut().find(|(name, _)| *name == m) {
            Some((_, newest)) if ver_cmp(&v, newest).is_gt() => *newest = v,
            Some(_) => {}
            None => latest.push((m, v)),
        }
    }
    let mut installed: Vec<String> = Vec::new();
    let mut to_install: Vec<(String, String)> = Vec::new();
    let mut depends: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (m, v) in latest {
        if ctx.tree.is_installed_build(&m, &v, kernel, &facts.arch) {
            installed.push(m);
            continue;
        }
        let conf = job(ctx, &m, &v).conf(facts)?;
        if !conf.autoinstall {
            continue;
        }
        depends.insert(m.clone(), conf.build_depends.clone());
        to_install.push((m, v));
    }
    if to_install.is_empty() {
        return Ok(0);
    }
    lifecycle::record_depmod(ctx, facts)?;
    let mut skipped: Vec<String> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    loop {
        for deps in depends.values_mut() {
            deps.retain(|d| !installed.contains(d) && !skipped.contains(d));
        }
        let mut progress = false;
        let mut waiting = Vec::new();
        for (m, v) in std::mem::take(&mut to_install) {
            if !depends[&m].is_empty() {
                waiting.push((m, v));
                continue;
            }
            if !ctx.console.signing_shown && !is_built(ctx, &m, &v, facts) {
                prepare_signing(ctx, facts)?;
            }
            ctx.console.say(format!(
                "Autoinstall of module {m}/{v} for kernel {kernel} ({})",
                facts.arch
            ));
            match install(ctx, &m, &v, facts, changes) {
                Ok(()) => {
                    installed.push(m);
                    progress = true;
                }
                Err(e) if e.is_warning() => {
                    ctx.console.warn(e.to_string());
                    skipped.push(m);
                    progress = true;
                }
                Err(e) => {
                    ctx.console.fail(&e);
                    failed.push(format!("{m}({})", e.exit_code()));
                }
            }
            ctx.console.say("");
        }
        to_install = waiting;
        if !progress {
            break;
        }
    }
    for (list, what) in [
        (&installed, "succeeded"),
        (&skipped, "was skipped"),
        (&failed, "failed"),
    ] {
        if !list.is_empty() {
            ctx.console.say(format!(
                "Autoinstall on {kernel} {what} for module(s) {}.",
                list.join(" ")
            ));
        }
    }
    for (m, v) in &to_install {
        ctx.console.say(format!(
            "{m}/{v} autoinstall failed due to missing dependencies: {}.",
            depends[m].join(" ")
        ));
    }
    if failed.is_empty() && to_install.is_empty() {
        Ok(0)
    } else {
        Err(Error::AutoinstallFailed)
    }
}

fn job<'a>(ctx: &'a Ctx, module: &str, version: &str) -> Job<'a> {
    Job {
        ctx,
        module: module.to_string(),
        version: version.to_string(),
    }
}

/// What DKMS does once per kernel before the first build: the headers must be there, then the
/// signing lines and an empty line. The builds that follow print neither again.
fn prepare_signing(ctx: &mut Ctx, facts: &KernelFacts) -> Result<()> {
    facts.require_headers()?;
    Signer::prepare(
        &ctx.signing,
        &ctx.paths.root,
        &ctx.tree.root,
        facts,
        &ctx.console,
    )?;
    ctx.console.say("");
    ctx.console.signing_shown = true;
    Ok(())
}

/// `dkms install -m M -v V -k K`: builds when needed, installs, runs depmod (the kernel was
/// recorded as owing it by `run`).
fn install(ctx: &Ctx, m: &str, v: &str, facts: &KernelFacts, changes: &mut Changes) -> Result<()> {
    lifecycle::install_one(&job(ctx, m, v), facts, changes)
        .and_then(|()| lifecycle::rebuild_dependents(ctx, facts))
}

/// DKMS 3.2.2's kernel_prerm: every version built for the kernel is uninstalled and unbuilt
/// (AUTOINSTALL or not), with one depmod at the end.
fn kernel_prerm(ctx: &Ctx, facts: &KernelFacts, owed: &BTreeSet<String>) -> Result<i32> {
    let (kernel, arch) = (&facts.kernel, &facts.arch);
    lifecycle::record_depmod(ctx, facts)?;
    let mut changes = Changes::default();
    let mut removals = Removals::default();
    let mut failed = String::new();
    for (m, v, _) in module_versions(ctx) {
        if !is_built(ctx, &m, &v, facts) {
            continue;
        }
        ctx.console.say(format!(
            "dkms: removing module {m}/{v} for kernel {kernel} ({arch})"
        ));
        let job = job(ctx, &m, &v);
        let result = lifecycle::uninstall_one(&job, facts, &mut changes)
            .and_then(|()| lifecycle::unbuild_into(&job, facts, &mut changes, &mut removals));
        if let Err(e) = result {
            ctx.console.fail(&e);
            failed.push_str(&format!(" {m}/{v}({})", e.exit_code()));
        }
        ctx.console.say("");
    }
    removals.finish()?;
    lifecycle::finish_depmod(ctx, &changes, owed)?;
    if failed.is_empty() {
        Ok(0)
    } else {
        Err(Error::PrermFailed {
            kernel: kernel.clone(),
            arch: arch.clone(),
            failed,
        })
    }
}
