//! `match --templatekernel=T -k K [module]` (DKMS): give kernel K the modules kernel T has
//! installed. Each module version installed for T is built and installed for K, as `install`
//! would; the template's state is read from the tree's `kernel-T-ARCH` links.

use std::fs;

use crate::base::error::{Error, Result};
use crate::cmd::cli::Invocation;
use crate::effects::depmod;
use crate::ops::lifecycle::{self, Changes, Ctx, Job};
use crate::state::lock::{self, TreeLock};
use crate::system::host;
use crate::system::kernel::KernelFacts;
use crate::system::options::Options;

/// Runs `match`; exit codes and messages are DKMS 3.2.2's.
pub fn run(inv: &Invocation, opts: &Options) -> Result<i32> {
    let ctx = Ctx::from_options(opts);
    let Some(template) = inv.cli.template_kernel.clone() else {
        return Err(Error::Match {
            text: "Invalid number of parameters passed.\n\
                   Usage: match --templatekernel=<kernel-version> -k <kernel-version>\n   \
                   or: match --templatekernel=<kernel-version> -k <kernel-version> <module>",
            code: 1,
        });
    };
    let (kernel, arch) = match inv.kernels.first() {
        Some(k) => (k.kernel.clone(), k.arch.clone()),
        None => (host::running_kernel(), None),
    };
    let arch = arch
        .or_else(|| inv.cli.archs.first().cloned())
        .unwrap_or_else(host::machine_arch);
    if template == kernel {
        return Err(Error::Match {
            text: "The templatekernel and the specified kernel version are the same.",
            code: 2,
        });
    }
    if let Some(m) = &inv.module {
        if !ctx.tree.module_dir(m).is_dir() {
            return Err(Error::TemplateModule { module: m.clone() });
        }
    }
    let matched = installed_on(&ctx, &template, &arch, inv.module.as_deref());
    ctx.console.say("");
    ctx.console
        .say(format!("Matching modules in kernel: {kernel} ({arch})"));
    ctx.console.say(format!(
        "to the configuration of kernel: {template} ({arch})"
    ));
    if matched.is_empty() {
        ctx.console.say("");
        ctx.console
            .say("There is nothing to be done for this match.");
        return Ok(0);
    }
    let lock = TreeLock::acquire(&ctx.paths, lock::timeout(inv.cli.lock_timeout))?;
    lifecycle::recover(&ctx);
    let facts = KernelFacts::probe(&ctx.paths, &kernel, &arch, &ctx.kernel_overrides);
    let owed = depmod::pending(&ctx.paths);
    lifecycle::record_depmod(&ctx, &facts)?;
    let mut changes = Changes {
        per_step: true,
        ..Changes::default()
    };
    for (module, version) in matched {
        ctx.console.say(format!("Module:  {module}"));
        ctx.console.say(format!("Version: {version}"));
        let job = Job {
            ctx: &ctx,
            module,
            version,
        };
        lifecycle::build_one(&job, &facts)?;
        lifecycle::install_one(&job, &facts, &mut changes)?;
    }
    lifecycle::finish_depmod(&ctx, &changes, &owed)?;
    drop(lock);
    Ok(0)
}

/// (module, version) pairs whose `kernel-T-ARCH` link says they are installed for `template`.
fn installed_on(
    ctx: &Ctx,
    template: &str,
    arch: &str,
    only: Option<&str>,
) -> Vec<(String, String)> {
    let Ok(entries) = fs::read_dir(&ctx.tree.root) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|m| !m.starts_with('.') && only.is_none_or(|o| o == m))
        .filter_map(|m| {
            let link = fs::read_link(ctx.tree.installed_link(&m, template, arch)).ok()?;
            let version = link.components().next()?.as_os_str().to_str()?.to_string();
            Some((m, version))
        })
        .collect();
    out.sort();
    out
}
