//! BUILD_DEPENDS_REBUILD (DKMS 3.2.2): a module built against another remembers the version it
//! was built with (`<tree>/M/V/K/A/.dep_DEP`), and installing a module rebuilds and reinstalls
//! every module of that kernel whose dependencies now have another version.

use std::fs;

use crate::base::error::{IoContext, Result};
use crate::base::version::ver_cmp;
use crate::ops::lifecycle::{self, Changes, Ctx, Job};
use crate::state::tree::Pattern;
use crate::system::console::Console;
use crate::system::kernel::KernelFacts;

/// The newest registered version of `module` (what a dependent is built against).
fn newest_version(ctx: &Ctx, module: &str) -> Option<String> {
    ctx.tree
        .module_versions(&Pattern::Word(module.to_string()), &Pattern::Any)
        .into_iter()
        .map(|(_, v)| v)
        .filter(|v| !v.starts_with("kernel-") && ctx.tree.is_added(module, v))
        .max_by(|a, b| ver_cmp(a, b))
}

fn dep_file(ctx: &Ctx, job: &Job<'_>, facts: &KernelFacts, dep: &str) -> std::path::PathBuf {
    ctx.tree
        .build_dir(&job.module, &job.version, &facts.kernel, &facts.arch)
        .join(format!(".dep_{dep}"))
}

/// After a build (not a forced one): the version of each BUILD_DEPENDS module it was built
/// against, when its dkms.conf asks for BUILD_DEPENDS_REBUILD.
pub fn record(job: &Job<'_>, facts: &KernelFacts) -> Result<()> {
    let ctx = job.ctx;
    let conf = job.conf(facts)?;
    if !conf.build_depends_rebuild || ctx.force {
        return Ok(());
    }
    for dep in &conf.build_depends {
        if let Some(v) = newest_version(ctx, dep) {
            let file = dep_file(ctx, job, facts, dep);
            fs::write(&file, format!("{v}\n")).ctx("write", &file)?;
        }
    }
    Ok(())
}

/// Whether a BUILD_DEPENDS module of `job` has another newest version than it was built with.
fn outdated(job: &Job<'_>, facts: &KernelFacts, depends: &[String]) -> bool {
    depends.iter().any(|dep| {
        let Some(now) = newest_version(job.ctx, dep) else {
            return false;
        };
        fs::read_to_string(dep_file(job.ctx, job, facts, dep)).map_or(true, |v| v.trim() != now)
    })
}

/// After an install: rebuilds and reinstalls, with DKMS's text, every module built for the
/// kernel whose BUILD_DEPENDS changed version (BUILD_DEPENDS_REBUILD, not with `--force`).
pub fn rebuild(ctx: &Ctx, facts: &KernelFacts) -> Result<()> {
    if ctx.force {
        return Ok(());
    }
    let mut stale = Vec::new();
    for (m, v) in ctx.tree.module_versions(&Pattern::Any, &Pattern::Any) {
        let job = Job {
            ctx,
            module: m,
            version: v,
        };
        let built = ctx
            .tree
            .built_modules_dir(&job.module, &job.version, &facts.kernel, &facts.arch)
            .is_dir();
        if !built
            || crate::state::broken::is_broken(&ctx.paths, &ctx.tree, &job.module, &job.version)
        {
            continue;
        }
        let conf = job.conf(facts)?;
        if conf.build_depends_rebuild
            && !conf.build_depends.is_empty()
            && outdated(&job, facts, &conf.build_depends)
        {
            stale.push(job);
        }
    }
    // The signing lines were printed by the build that came first, as DKMS prints them once.
    let console = Console {
        signing_shown: true,
        ..ctx.console
    };
    for job in stale {
        ctx.console.say("");
        ctx.console.say(format!(
            "Rebuilding module {}/{} due to updated dependencies",
            job.module, job.version
        ));
        ctx.console.say("");
        let mut changes = Changes {
            per_step: true,
            ..Changes::default()
        };
        lifecycle::uninstall_one(&job, facts, &mut changes)?;
        lifecycle::unbuild_one(&job, facts, &mut changes)?;
        lifecycle::build_with(&job, facts, &console)?;
        lifecycle::install_one(&job, facts, &mut changes)?;
    }
    Ok(())
}
