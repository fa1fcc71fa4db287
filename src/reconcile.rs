//! The hook commands: read a snapshot of the machine, plan with `plan.rs`, and (for every
//! command but `plan`) execute the steps under the tree lock with one depmod and at most one
//! initramfs update per kernel.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cli::{Action, Invocation};
use crate::conf::{self, EvalMode, LoadRequest, Target};
use crate::config::Paths;
use crate::error::{Error, Result};
use crate::host;
use crate::initramfs;
use crate::inventory;
use crate::plan::{self, ConfFacts, Plan, Request, Scope};
use crate::report::{self, FailureNote};
use crate::tree::{self, Selection, Tree};

/// Reads everything the planner looks at, except dkms.conf facts (see `read_confs`).
pub fn snapshot(paths: &Paths, arch: &str) -> plan::Snapshot {
    let tree = Tree::new(&paths.dkms_tree);
    let read = tree::Snapshot::read(&tree, &Selection::all());
    let mut modules: BTreeMap<String, plan::Module> = BTreeMap::new();
    let mut kernels = std::collections::BTreeSet::new();
    for mv in read.modules {
        let m = modules
            .entry(mv.name.clone())
            .or_insert_with(|| plan::Module {
                name: mv.name.clone(),
                ..plan::Module::default()
            });
        let mut version = plan::ModuleVersion {
            version: mv.version.clone(),
            broken: mv.source.is_broken(),
            ..plan::ModuleVersion::default()
        };
        for b in mv.builds {
            kernels.insert(b.kernel.clone());
            if b.installed {
                m.installed
                    .insert((b.kernel.clone(), b.arch.clone()), mv.version.clone());
            }
            if b.is_built() || b.installed {
                version.built.insert((b.kernel, b.arch));
            }
        }
        m.versions.push(version);
    }
    plan::Snapshot {
        arch: arch.to_string(),
        kernels: inventory::kernels(paths, kernels.iter().map(String::as_str)),
        modules: modules.into_values().collect(),
        no_autoinstall: paths.etc_dkms.join("no-autoinstall").exists(),
        initramfs_pending: initramfs::pending(paths),
    }
}

/// Evaluates the dkms.conf of every (module, version, kernel) the planner asks about.
pub fn read_confs(paths: &Paths, snap: &mut plan::Snapshot, req: &Request) {
    let tree = Tree::new(&paths.dkms_tree);
    for (module, version, kernel) in plan::conf_queries(snap, req) {
        let facts = conf_facts(paths, &tree, &module, &version, &kernel, &snap.arch)
            .map_err(|e| e.to_string());
        if let Some(v) = snap
            .modules
            .iter_mut()
            .find(|m| m.name == module)
            .and_then(|m| m.versions.iter_mut().find(|v| v.version == version))
        {
            v.conf.insert(kernel, facts);
        }
    }
}

fn conf_facts(
    paths: &Paths,
    tree: &Tree,
    module: &str,
    version: &str,
    kernel: &str,
    arch: &str,
) -> Result<ConfFacts> {
    let kernel_source_dir = paths.kernel_build_dir(kernel);
    let auto_conf = kernel_source_dir.join("include/config/auto.conf");
    let kernel_config = if auto_conf.is_file() {
        auto_conf
    } else {
        kernel_source_dir.join(".config")
    };
    let conf = conf::load(&LoadRequest {
        conf_file: tree.source_link(module, version).join("dkms.conf"),
        module: module.to_string(),
        module_version: version.to_string(),
        target: Target {
            kernel: kernel.to_string(),
            arch: arch.to_string(),
            build_dir: tree.version_dir(module, version).join("build"),
            kernel_source_dir,
            kernel_config,
            location_override: host::location_override(paths),
        },
        etc_dkms: Some(paths.etc_dkms.clone()),
        dkms_tree: paths.dkms_tree.clone(),
        source_tree: paths.source_tree.clone(),
        install_tree: paths.install_tree.clone(),
        directive_overrides: Vec::new(),
        mode: EvalMode::Auto,
    })?;
    Ok(ConfFacts {
        autoinstall: conf.autoinstall,
        remake_initrd: conf.remake_initrd,
        build_depends: conf.build_depends,
        excluded: conf.excluded,
    })
}

/// The one kernel a single-kernel command names (`-k K`), refusing none, several or an empty one.
fn one_kernel(inv: &Invocation, action: Action) -> Result<String> {
    match inv.kernels.as_slice() {
        [k] if !k.kernel.is_empty() => Ok(k.kernel.clone()),
        [_] => Err(Error::Usage(format!(
            "{}: the kernel version given with -k is empty; the hook must pass the kernel version it was called with.",
            action.word()
        ))),
        _ => Err(Error::OneKernel {
            action: action.word().to_string(),
        }),
    }
}

/// The planning request of a command.
fn request(inv: &Invocation, action: Action, paths: &Paths) -> Result<Request> {
    if inv.cli.all {
        return Err(Error::Usage(format!(
            "The action {} does not support the --all parameter.",
            action.word()
        )));
    }
    let mut req = Request::new(match action {
        Action::Reconcile | Action::CommonPostinst => Scope::All,
        Action::Plan if inv.kernels.is_empty() => Scope::All,
        Action::Plan => Scope::Kernel(one_kernel(inv, action)?),
        Action::Autoinstall if inv.kernels.is_empty() => Scope::Kernel(host::running_kernel()),
        Action::Autoinstall | Action::KernelPostinst => Scope::Kernel(one_kernel(inv, action)?),
        Action::KernelPrerm => Scope::Prerm(one_kernel(inv, action)?),
        other => {
            return Err(Error::Usage(format!(
                "'{}' is not a hook command",
                other.word()
            )))
        }
    });
    if action == Action::KernelPostinst && initramfs::kernel_hook_follows(paths) {
        if let Scope::Kernel(k) = &req.scope {
            req.initramfs_by_kernel_hook.insert(k.clone());
        }
    }
    Ok(req)
}

/// The architecture modules are built for: `-a`, else `uname -m`.
fn arch(inv: &Invocation) -> String {
    inv.kernels
        .first()
        .and_then(|k| k.arch.clone())
        .or_else(|| inv.cli.archs.first().cloned())
        .unwrap_or_else(host::machine_arch)
}

/// What `plan --json` prints.
#[derive(Serialize)]
struct PlanOutput<'a> {
    #[serde(flatten)]
    plan: &'a Plan,
    /// Failures remembered from earlier runs.
    failures: Vec<FailureNote>,
}

/// `rdkms plan [-k K] [--json]`: what reconcile (or autoinstall -k K) would do. Reads only;
/// takes no lock.
fn run_plan(inv: &Invocation, paths: &Paths, req: &Request) -> Result<i32> {
    let mut snap = snapshot(paths, &arch(inv));
    read_confs(paths, &mut snap, req);
    let plan = plan::plan(&snap, req);
    let failures = report::failures(paths);
    if inv.cli.json {
        let out = PlanOutput {
            plan: &plan,
            failures,
        };
        let text = serde_json::to_string_pretty(&out)
            .map_err(|e| Error::io("encode", "plan", e.into()))?;
        println!("{text}");
    } else {
        print!("{plan}");
        for f in failures {
            println!(
                "last run: {}/{} for {} ({}) failed (exit {}): {}",
                f.module, f.version, f.kernel, f.arch, f.code, f.reason
            );
        }
    }
    Ok(0)
}

/// Runs one of the hook commands.
pub fn run(action: Action, inv: &Invocation) -> Result<i32> {
    let paths = Paths::from_cli(&inv.cli);
    let req = request(inv, action, &paths)?;
    match action {
        Action::Plan => run_plan(inv, &paths, &req),
        other => Err(Error::Usage(format!(
            "'{}' is not implemented yet",
            other.word()
        ))),
    }
}
