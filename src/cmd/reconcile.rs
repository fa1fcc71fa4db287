//! The hook commands (`reconcile`, `autoinstall`, `kernel_postinst`, `kernel_prerm`,
//! `common_postinst`, `plan`): read a snapshot of the machine, plan with `plan.rs`, and execute
//! the steps under the tree lock through the lifecycle functions, with one depmod and at most
//! one initramfs update per kernel. Modules that need no other module of the plan are built
//! concurrently under one make jobserver limited to `-j` jobs in all.
//!
//! Concurrent hooks coalesce: a run plans again once it holds the lock, so work a previous
//! holder finished is not repeated, and `reconcile --from-apt` returns at once when the holder
//! left the machine matching the stored fingerprint.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use serde::Serialize;

use crate::base::error::{Error, Result};
use crate::cmd::cli::{Action, Invocation};
use crate::effects::build::{self, Jobs};
use crate::effects::depmod;
use crate::effects::initramfs;
use crate::ops::add::{self, AddOptions};
use crate::ops::lifecycle::{self, Changes, Ctx, Job};
use crate::package::tarball;
use crate::planning::inventory;
use crate::planning::plan::{self, ConfFacts, FailCause, Plan, Request, Scope, Step};
use crate::state::atomic::Removals;
use crate::state::failures::{self, FailureNote};
use crate::state::fingerprint;
use crate::state::journal::{self, Marks};
use crate::state::lock::{self, TreeLock};
use crate::state::presence;
use crate::state::purge;
use crate::state::tree::{self, Selection, Tree};
use crate::system::config::Paths;
use crate::system::console::Console;
use crate::system::host;
use crate::system::kernel::KernelFacts;
use crate::system::options::Options;
use crate::system::report::{self, Outcome, Record, Reporter, Severity};

/// Exit status of DKMS's kernel_prerm when a module could not be removed.
const PRERM_FAILURE_EXIT: i32 = 14;

/// Exit status for a module that cannot be built because of its BUILD_DEPENDS.
const DEPENDENCY_EXIT: i32 = 13;

/// Reads everything the planner looks at, except dkms.conf facts (see `read_confs`).
pub fn snapshot(paths: &Paths, arch: &str) -> plan::Snapshot {
    let tree = Tree::new(&paths.dkms_tree);
    let read = tree::TreeSnapshot::read(&tree, &Selection::all());
    let mut modules: BTreeMap<String, plan::Module> = BTreeMap::new();
    let mut kernels = BTreeSet::new();
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
            // Invariant (a): on a kernel that is still there, the link counts only with the
            // files; a gone kernel's link still says what its purge must remove.
            let kernel_there = paths.install_tree.join(&b.kernel).is_dir();
            if b.installed
                && (!kernel_there
                    || presence::installed_files_present(
                        paths,
                        &mv.name,
                        &mv.version,
                        &b.kernel,
                        &b.arch,
                    ))
            {
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
        depmod_pending: depmod::pending(paths),
    }
}

/// Evaluates, as the lifecycle commands will, the dkms.conf of every (module, version,
/// kernel) the planner asks about.
pub fn read_confs(ctx: &Ctx, snap: &mut plan::Snapshot, req: &Request) {
    let arch = snap.arch.clone();
    for (module, version, kernel) in plan::conf_queries(snap, req) {
        let job = Job {
            ctx,
            module: module.clone(),
            version: version.clone(),
        };
        let facts = KernelFacts::probe(&ctx.paths, &kernel, &arch, &ctx.kernel_overrides);
        let result = job
            .conf(&facts)
            .map(|conf| ConfFacts {
                autoinstall: conf.autoinstall,
                remake_initrd: conf.remake_initrd,
                build_depends: conf.build_depends,
                excluded: conf.excluded,
            })
            .map_err(|e| e.to_string());
        if let Some(v) = snap
            .modules
            .iter_mut()
            .find(|m| m.name == module)
            .and_then(|m| m.versions.iter_mut().find(|v| v.version == version))
        {
            v.conf.insert(kernel, result);
        }
    }
}

/// Snapshot, dkms.conf facts and plan in one go.
fn plan_now(ctx: &Ctx, arch: &str, req: &Request) -> (plan::Snapshot, Plan) {
    let mut snap = snapshot(&ctx.paths, arch);
    read_confs(ctx, &mut snap, req);
    let plan = plan::plan(&snap, req);
    (snap, plan)
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
        return Err(Error::AllNotSupported {
            action: action.word().to_string(),
        });
    }
    let mut req = Request::new(match action {
        Action::Reconcile | Action::CommonPostinst => Scope::All,
        Action::Plan if inv.kernels.is_empty() => Scope::All,
        Action::Plan => Scope::Kernel(one_kernel(inv, action)?),
        Action::Autoinstall if inv.kernels.is_empty() => Scope::Kernel(host::running_kernel()),
        Action::Autoinstall | Action::KernelPostinst => Scope::Kernel(one_kernel(inv, action)?),
        Action::KernelPrerm => Scope::Prerm(one_kernel(inv, action)?),
        Action::KernelPreinst => Scope::Preinst(one_kernel(inv, action)?),
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
fn run_plan(inv: &Invocation, ctx: &Ctx, req: &Request) -> Result<i32> {
    let (_, plan) = plan_now(ctx, &arch(inv), req);
    let failures = failures::failures(&ctx.paths);
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
pub fn run(action: Action, inv: &Invocation, opts: &Options) -> Result<i32> {
    let mut ctx = Ctx::from_options(opts);
    let req = request(inv, action, &ctx.paths)?;
    if action == Action::Plan {
        return run_plan(inv, &ctx, &req);
    }
    let hook = inv.cli.hook || inv.cli.from_apt;
    if !hook && crate::base::persona::as_dkms() {
        if let Scope::Kernel(k) | Scope::Prerm(k) = &req.scope {
            if matches!(
                action,
                Action::Autoinstall | Action::KernelPostinst | Action::KernelPrerm
            ) {
                return crate::cmd::dkms_autoinstall::run(action, opts, k, &arch(inv));
            }
        }
    }
    ctx.depends_planned = true;
    if hook {
        // Hooks never write to stdout, whoever prints (scripts, make, ourselves).
        let _ = nix::unistd::dup2(2, 1);
    }
    if inv.cli.from_apt && fingerprint::matches(&ctx.paths) {
        return Ok(0);
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let mut reporter = Reporter::new(&ctx.paths, hook, inv.cli.quiet);
    let (policy, warning) = report::policy(&ctx.paths);
    if let Some(w) = warning {
        reporter.say(Severity::Warning, &w);
    }
    let arch = arch(inv);

    if action == Action::CommonPostinst {
        if let Some(code) = common_postinst_checks(opts, &ctx, &reporter)? {
            return Ok(code);
        }
    }
    // Plan first without the lock (only keeping writers out while reading): a run with nothing
    // to change neither takes the lock nor writes to the tree. A run that has work plans again
    // under the lock, so a change made in between (another command's `add`) is not missed.
    // Not for common_postinst (it adds first) nor kernel_prerm (it nearly always has work).
    let quiet = if matches!(action, Action::CommonPostinst | Action::KernelPrerm) {
        None
    } else {
        lock::ReadLock::try_acquire(&ctx.paths).and_then(|reading| {
            let (snap, plan) = plan_now(&ctx, &arch, &req);
            // An interrupted install is completed under the tree lock, whatever the plan.
            (changes_nothing(&plan, &failures::failures(&ctx.paths), &snap.arch)
                && journal::pending_installs(&ctx.paths.dkms_tree).is_empty())
            .then_some((reading, snap, plan))
        })
    };
    let (held, snap, plan, writes) = match quiet {
        Some((reading, snap, plan)) => (Held::Read { _shared: reading }, snap, plan, false),
        None => {
            let wait = match (inv.cli.lock_timeout, action) {
                (None, Action::KernelPrerm | Action::KernelPreinst) if hook => {
                    lock::REMOVAL_HOOK_TIMEOUT
                }
                (seconds, _) => lock::timeout(seconds),
            };
            let lock = match TreeLock::acquire(&ctx.paths, wait) {
                Ok(lock) => lock,
                // common_postinst must add its module first: it keeps exit 75, so the
                // package's configuration fails visibly instead of forgetting the module.
                Err(e @ Error::LockTimeout { .. }) if hook && action != Action::CommonPostinst => {
                    return Ok(postpone(action, &req, &ctx.paths, &reporter, &e));
                }
                Err(e) => return Err(e),
            };
            if inv.cli.from_apt && fingerprint::matches(&ctx.paths) {
                return Ok(0);
            }
            fingerprint::invalidate(&ctx.paths)?;
            lifecycle::recover(&ctx);
            if action == Action::CommonPostinst {
                add_for_postinst(opts, &ctx, &lock)?;
            }
            let (snap, plan) = plan_now(&ctx, &arch, &req);
            (Held::Write { _tree: lock }, snap, plan, true)
        }
    };
    announce(&plan, &mut reporter);
    let mut exec = Executor::new(&ctx, &mut reporter, writes);
    exec.run(&plan, &snap);
    exec.finish_removals();
    let (missing_headers, prerm_failed) = (exec.missing_headers, exec.prerm_failed);
    reporter.summaries();
    if writes && req.scope == Scope::All {
        for k in postponed(&ctx.paths).pending() {
            let _ = postponed(&ctx.paths).clear(&k);
        }
    }
    drop(held);
    if req.scope == Scope::All {
        store_fingerprint(&ctx.paths, &reporter);
    }
    exit_status(
        action,
        hook,
        (&missing_headers, prerm_failed),
        &reporter,
        policy,
        &ctx.paths,
    )
}

/// Hook runs that gave up waiting for the lock (invariant (d)); the next complete reconcile
/// (apt's Post-Invoke, or `rdkms reconcile`) does their work and forgets them.
fn postponed(paths: &Paths) -> Marks {
    Marks::new(&paths.dkms_tree, ".rdkms-hooks-postponed")
}

/// A hook found the tree lock busy for longer than `--lock-timeout`: it records its work,
/// makes sure the next apt run reconciles (the fingerprint is invalidated), warns, and exits 0,
/// so a kernel's installation or removal never fails because another command was running.
fn postpone(action: Action, req: &Request, paths: &Paths, reporter: &Reporter, e: &Error) -> i32 {
    let what = match &req.scope {
        Scope::All => action.word().to_string(),
        Scope::Kernel(k) | Scope::Prerm(k) | Scope::Preinst(k) => format!("{}-{k}", action.word()),
    };
    let recorded = postponed(paths)
        .record(&what)
        .and_then(|()| fingerprint::invalidate(paths));
    let next = match recorded {
        Ok(()) => "recorded; the next `rdkms reconcile` (run by apt after every dpkg call) does it",
        Err(_) => "NOT recorded (the dkms tree is not writable); run `rdkms reconcile` once the lock is free",
    };
    reporter.say(
        Severity::Warning,
        &format!("{} skipped: {e}; its work is {next}", action.word()),
    );
    0
}

/// The lock a run holds while it executes its plan: shared for a plan that changes nothing,
/// the tree lock otherwise. Released before the fingerprint is stored.
enum Held {
    Read { _shared: lock::ReadLock },
    Write { _tree: TreeLock },
}

/// Whether executing `plan` would leave the disk as it is: it only reports (modules skipped
/// that have no failure note to forget, failures already remembered exactly so, kernels
/// without headers).
fn changes_nothing(plan: &Plan, remembered: &[FailureNote], arch: &str) -> bool {
    plan.steps.iter().all(|step| match step {
        Step::NoHeaders { .. } => true,
        Step::Skip { module, kernel, .. } => !remembered
            .iter()
            .any(|n| &n.module == module && &n.kernel == kernel),
        Step::Fail {
            module,
            version,
            kernel,
            reason,
            cause,
        } => remembered.iter().any(|n| {
            (&n.module, &n.version, &n.kernel, &n.reason) == (module, version, kernel, reason)
                && n.arch == arch
                && n.code == fail_code(*cause)
                && !n.critical
        }),
        _ => false,
    })
}

/// The exit status a planned failure is remembered with.
fn fail_code(cause: FailCause) -> i32 {
    match cause {
        FailCause::Dependency => DEPENDENCY_EXIT,
        FailCause::Conf => 8,
    }
}

/// Says why the plan builds nothing, when the machine says so.
fn announce(plan: &Plan, reporter: &mut Reporter) {
    let as_dkms = crate::base::persona::as_dkms();
    if plan.autoinstall_disabled && as_dkms {
        Console::default().say("Automatic installation of modules has been disabled.");
    } else if plan.autoinstall_disabled {
        reporter.say(
            Severity::Info,
            "Automatic installation of modules has been disabled (/etc/dkms/no-autoinstall).",
        );
    }
    if let Some(k) = plan.kernel_not_installed.as_ref().filter(|_| !as_dkms) {
        reporter.say(
            Severity::Info,
            &format!("kernel {k} is not installed (no image, no modules); nothing to build for it"),
        );
    }
}

/// A hook command's exit status, from the kernels without headers and whether a prerm removal
/// failed.
fn exit_status(
    action: Action,
    hook: bool,
    (missing_headers, prerm_failed): (&[String], bool),
    reporter: &Reporter,
    policy: report::Policy,
    paths: &Paths,
) -> Result<i32> {
    Ok(match (action, hook) {
        (Action::KernelPrerm | Action::KernelPreinst, true) => 0,
        (Action::KernelPrerm, false) if prerm_failed => PRERM_FAILURE_EXIT,
        (Action::KernelPreinst, false) if prerm_failed || reporter.any_failure() => {
            PRERM_FAILURE_EXIT
        }
        (Action::KernelPrerm | Action::KernelPreinst, false) => 0,
        (Action::Autoinstall | Action::KernelPostinst, false) => {
            if let Some(kernel) = missing_headers.first() {
                return Err(Error::MissingHeaders {
                    kernel: kernel.clone(),
                    dir: paths.kernel_build_dir(kernel),
                });
            }
            if reporter.any_failure() {
                report::FAILURE_EXIT
            } else {
                0
            }
        }
        _ => reporter.exit_code(policy),
    })
}

/// After a complete run over every kernel: remember the state so apt's next call is a no-op.
/// Not while an initramfs update is still pending (the next call must retry it).
fn store_fingerprint(paths: &Paths, reporter: &Reporter) {
    if !initramfs::pending(paths).is_empty() {
        return;
    }
    if let Err(e) = fingerprint::store(paths) {
        reporter.say(
            Severity::Warning,
            &format!("cannot store the no-op fingerprint: {e}"),
        );
    }
}

/// common.postinst's checks before anything changes; `Some(code)` ends the command.
fn common_postinst_checks(opts: &Options, ctx: &Ctx, reporter: &Reporter) -> Result<Option<i32>> {
    let (Some(module), Some(version)) = (
        opts.module.as_deref().filter(|m| !m.is_empty()),
        opts.version.as_deref().filter(|v| !v.is_empty()),
    ) else {
        return Err(Error::MissingModule {
            action: "common_postinst".to_string(),
        });
    };
    if ctx.paths.etc_dkms.join("no-autoinstall").exists() {
        reporter.say(
            Severity::Info,
            "autoinstall for dkms modules has been disabled (/etc/dkms/no-autoinstall)",
        );
        return Ok(Some(0));
    }
    let added = ctx.tree.is_added(module, version);
    // DKMS's order: a binary or source tarball shipped by the package first, then the sources.
    if let Some(archive) = opts.archive.as_ref().filter(|a| a.is_file()) {
        if !added {
            reporter.say(
                Severity::Info,
                &format!("loading {} for {module}/{version}", archive.display()),
            );
            tarball::load(opts)?;
        }
        return Ok(None);
    }
    let source = ctx.paths.source_tree.join(format!("{module}-{version}"));
    if !added && !source.is_dir() {
        return Err(Error::SourceMissing { path: source });
    }
    Ok(None)
}

/// Registers the package's `/usr/src/NAME-VERSION` (under the lock already held).
fn add_for_postinst(opts: &Options, ctx: &Ctx, lock: &TreeLock) -> Result<()> {
    let (Some(module), Some(version)) = (opts.module.as_deref(), opts.version.as_deref()) else {
        return Err(Error::MissingModule {
            action: "common_postinst".to_string(),
        });
    };
    let add_opts = AddOptions {
        force: false,
        quiet: true,
        ..AddOptions::from_options(opts)
    };
    add::ensure_added(&ctx.paths, lock, module, version, &add_opts).map(|_| ())
}

/// Executes a plan step by step, tracking per kernel what failed, what changed and which
/// REMAKE_INITRD modules were installed.
struct Executor<'a> {
    ctx: &'a Ctx,
    reporter: &'a mut Reporter,
    /// Per kernel: modules that failed (dependents fail too) and modules skipped at build time.
    failed: BTreeMap<String, BTreeSet<String>>,
    skipped: BTreeMap<String, BTreeSet<String>>,
    /// Kernels whose set of installed REMAKE_INITRD modules changed.
    remake_changed: BTreeSet<String>,
    /// (module, kernel) → REMAKE_INITRD, from the install steps.
    critical: BTreeMap<(String, String), bool>,
    changes: Changes,
    missing_headers: Vec<String>,
    prerm_failed: bool,
    /// Write failure notes into the tree (only under the lock).
    remember: bool,
    /// The build directories purged so far, made durable and deleted together at the end.
    removals: Removals,
    /// Facts of the kernels purged from, probed once: purging changes none that matters
    /// (uninstalling looks for every compression), and probing reads the kernel's module index.
    purge_facts: BTreeMap<(String, String), KernelFacts>,
}

impl<'a> Executor<'a> {
    fn new(ctx: &'a Ctx, reporter: &'a mut Reporter, remember: bool) -> Executor<'a> {
        Executor {
            ctx,
            reporter,
            failed: BTreeMap::new(),
            skipped: BTreeMap::new(),
            remake_changed: BTreeSet::new(),
            critical: BTreeMap::new(),
            changes: Changes::default(),
            missing_headers: Vec::new(),
            prerm_failed: false,
            remember,
            removals: Removals::default(),
            purge_facts: BTreeMap::new(),
        }
    }

    fn run(&mut self, plan: &Plan, snap: &plan::Snapshot) {
        for step in &plan.steps {
            match step {
                Step::Install {
                    module,
                    kernel,
                    remake_initrd,
                    ..
                } => {
                    self.critical
                        .insert((module.clone(), kernel.clone()), *remake_initrd);
                }
                Step::Depmod { kernel } if !self.ctx.no_depmod => {
                    // Durable before any module of that kernel changes.
                    if let Err(e) = depmod::record(&self.ctx.paths, kernel) {
                        self.reporter.failure(Some(kernel), false, &e.to_string());
                    }
                }
                Step::UpdateInitramfs { kernel } => {
                    // Durable before any module of that kernel changes.
                    if let Err(e) = initramfs::record(&self.ctx.paths, kernel) {
                        self.reporter.failure(Some(kernel), true, &e.to_string());
                    }
                }
                _ => {}
            }
        }
        let mut prebuilt = self.build_independent(plan);
        for (i, step) in plan.steps.iter().enumerate() {
            self.step(step, snap, prebuilt.remove(&i));
        }
    }

    /// Builds, concurrently, every module of the plan that needs no other module of the plan
    /// (the rest are built in order afterwards). The builds share one make jobserver holding
    /// as many tokens as `-j` allows; each build holds one token while it runs (its make's
    /// implicit job), so the jobs of all builds together never exceed the limit. Tokens go to
    /// the builds longest expected first (see `build_order`): one build starts only once every
    /// longer one has its token. Returns the results by step index, to be recorded in plan
    /// order.
    fn build_independent(&self, plan: &Plan) -> BTreeMap<usize, Result<()>> {
        let Jobs::Limit(limit) = self.ctx.jobs else {
            return BTreeMap::new();
        };
        let builds: Vec<(usize, Job<'a>, KernelFacts)> = plan
            .steps
            .iter()
            .enumerate()
            .filter_map(|(i, step)| match step {
                Step::Build {
                    module,
                    version,
                    kernel,
                    arch,
                    needs,
                } if needs.is_empty() => {
                    Some((i, self.job(module, version), self.facts(kernel, arch)))
                }
                _ => None,
            })
            .collect();
        if builds.len() < 2 {
            return BTreeMap::new();
        }
        let client = match jobserver::Client::new(limit as usize) {
            Ok(c) => c,
            Err(e) => {
                self.reporter.say(
                    Severity::Warning,
                    &format!("cannot create a make jobserver ({e}); building one module at a time"),
                );
                return BTreeMap::new();
            }
        };
        self.reporter.say(
            Severity::Info,
            &format!(
                "building {} modules concurrently, {limit} make jobs in all",
                builds.len()
            ),
        );
        let expected: Vec<f64> = builds
            .iter()
            .map(|(_, job, _)| {
                crate::planning::build_order::expected_secs(
                    &self.ctx.tree,
                    &job.module,
                    &job.source_dir(),
                )
            })
            .collect();
        let results = std::thread::scope(|scope| {
            let mut results = BTreeMap::new();
            let mut running = Vec::new();
            for k in crate::planning::build_order::longest_first(&expected) {
                let (i, job, facts) = &builds[k];
                let token = match client.acquire() {
                    Ok(token) => token,
                    Err(e) => {
                        let e = Error::io("take a job token from", "the make jobserver", e);
                        results.insert(*i, Err(e));
                        continue;
                    }
                };
                let client = &client;
                let handle = scope.spawn(move || {
                    let result = build::with_jobserver(client, || lifecycle::build_one(job, facts));
                    drop(token);
                    result
                });
                running.push((*i, handle));
            }
            for (i, handle) in running {
                let result = handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                results.insert(i, result);
            }
            results
        });
        let _ = fs::remove_dir(build::private_builds_dir(&self.ctx.tree.root));
        results
    }

    fn facts(&self, kernel: &str, arch: &str) -> KernelFacts {
        KernelFacts::probe(&self.ctx.paths, kernel, arch, &self.ctx.kernel_overrides)
    }

    fn job(&self, module: &str, version: &str) -> Job<'a> {
        Job {
            ctx: self.ctx,
            module: module.to_string(),
            version: version.to_string(),
        }
    }

    fn record(&mut self, module: &str, version: &str, kernel: &str, arch: &str, outcome: Outcome) {
        let critical = self
            .critical
            .get(&(module.to_string(), kernel.to_string()))
            .copied()
            .unwrap_or(false);
        let paths = &self.ctx.paths;
        let remembered = match &outcome {
            _ if !self.remember => Ok(()),
            Outcome::Failed { code, reason } => failures::remember_failure(
                paths,
                &FailureNote {
                    module: module.to_string(),
                    version: version.to_string(),
                    kernel: kernel.to_string(),
                    arch: arch.to_string(),
                    code: *code,
                    reason: reason.clone(),
                    critical,
                },
            ),
            _ => failures::forget_failures(paths, Some(module), kernel),
        };
        if let Err(e) = remembered {
            self.reporter.say(Severity::Warning, &e.to_string());
        }
        if matches!(outcome, Outcome::Failed { .. }) {
            self.failed
                .entry(kernel.to_string())
                .or_default()
                .insert(module.to_string());
        }
        self.reporter.module(&Record {
            module: module.to_string(),
            version: version.to_string(),
            kernel: kernel.to_string(),
            arch: arch.to_string(),
            critical,
            outcome,
        });
    }

    /// The first of `needs` that failed on `kernel`.
    fn failed_dependency(&self, kernel: &str, needs: &[String]) -> Option<String> {
        let failed = self.failed.get(kernel)?;
        needs.iter().find(|n| failed.contains(*n)).cloned()
    }

    fn is_done(&self, kernel: &str, module: &str) -> bool {
        let has = |m: &BTreeMap<String, BTreeSet<String>>| {
            m.get(kernel).is_some_and(|s| s.contains(module))
        };
        has(&self.failed) || has(&self.skipped)
    }

    /// Executes one step; `prebuilt` is the result of a Build step already run concurrently.
    fn step(&mut self, step: &Step, snap: &plan::Snapshot, prebuilt: Option<Result<()>>) {
        match step {
            Step::Purge {
                module,
                version,
                kernel,
                arch,
                ..
            } => self.step_purge(module, version, kernel, arch),
            Step::CleanKernel { kernel, gone } => self.step_clean_kernel(kernel, *gone),
            Step::Build {
                module,
                version,
                kernel,
                arch,
                needs,
            } => self.step_build(module, version, kernel, arch, needs, prebuilt),
            Step::Install {
                module,
                version,
                kernel,
                arch,
                replaces,
                remake_initrd,
                needs,
            } => self.step_install(
                module,
                version,
                kernel,
                arch,
                replaces.as_deref(),
                *remake_initrd,
                needs,
            ),
            Step::Skip {
                module,
                version,
                kernel,
                reason,
            } => {
                let outcome = Outcome::Skipped(reason.to_string());
                self.record(module, version, kernel, &snap.arch, outcome);
            }
            Step::Fail {
                module,
                version,
                kernel,
                reason,
                cause,
            } => {
                let outcome = Outcome::Failed {
                    code: fail_code(*cause),
                    reason: reason.clone(),
                };
                self.record(module, version, kernel, &snap.arch, outcome);
            }
            Step::NoHeaders { kernel, package } => self.step_no_headers(kernel, package),
            Step::Depmod { kernel } => self.step_depmod(kernel, snap),
            Step::UpdateInitramfs { kernel } => self.update_initramfs(kernel, snap),
            Step::ForgetInitramfs { kernel } => {
                if let Err(e) = initramfs::clear(&self.ctx.paths, kernel) {
                    self.reporter.say(Severity::Warning, &e.to_string());
                }
            }
        }
    }

    /// Removes a build of a kernel that is gone or being removed; a failure fails prerm.
    fn step_purge(&mut self, module: &str, version: &str, kernel: &str, arch: &str) {
        self.reporter.say(
            Severity::Info,
            &format!("removing module {module}/{version} for kernel {kernel} ({arch})"),
        );
        match self.purge(module, version, kernel, arch) {
            Ok(()) => self.record(module, version, kernel, arch, Outcome::Purged),
            Err(e) => {
                self.prerm_failed = true;
                self.record(
                    module,
                    version,
                    kernel,
                    arch,
                    Outcome::Failed {
                        code: e.exit_code(),
                        reason: e.to_string(),
                    },
                );
            }
        }
    }

    /// Removes what a purged kernel left; a kernel that is gone also loses its records.
    fn step_clean_kernel(&mut self, kernel: &str, gone: bool) {
        if let Err(e) = purge::clean_kernel(&self.ctx.paths, kernel, gone) {
            self.reporter.failure(None, false, &e.to_string());
        }
        if gone {
            let _ = depmod::forget(&self.ctx.paths, kernel);
            let _ = failures::forget_failures(&self.ctx.paths, None, kernel);
        }
    }

    /// Builds a module (or takes the result of its concurrent build), unless a module it
    /// needs failed.
    fn step_build(
        &mut self,
        module: &str,
        version: &str,
        kernel: &str,
        arch: &str,
        needs: &[String],
        prebuilt: Option<Result<()>>,
    ) {
        if let Some(dep) = self.failed_dependency(kernel, needs) {
            let reason = format!("dependency {dep} failed");
            let outcome = Outcome::Failed {
                code: DEPENDENCY_EXIT,
                reason,
            };
            self.record(module, version, kernel, arch, outcome);
            return;
        }
        let result = prebuilt.unwrap_or_else(|| {
            let facts = self.facts(kernel, arch);
            lifecycle::build_one(&self.job(module, version), &facts)
        });
        if let Err(e) = result {
            self.build_error(module, version, kernel, arch, e);
        }
    }

    /// Installs a built module (replacing `replaces`), unless its build already ended it or a
    /// module it needs failed.
    #[allow(clippy::too_many_arguments)]
    fn step_install(
        &mut self,
        module: &str,
        version: &str,
        kernel: &str,
        arch: &str,
        replaces: Option<&str>,
        remake_initrd: bool,
        needs: &[String],
    ) {
        if self.is_done(kernel, module) {
            return;
        }
        if let Some(dep) = self.failed_dependency(kernel, needs) {
            let outcome = Outcome::Failed {
                code: DEPENDENCY_EXIT,
                reason: format!("dependency {dep} failed"),
            };
            self.record(module, version, kernel, arch, outcome);
            return;
        }
        match self.install(module, version, kernel, arch, replaces) {
            Ok(()) => {
                if remake_initrd {
                    self.remake_changed.insert(kernel.to_string());
                }
                self.record(module, version, kernel, arch, Outcome::Installed);
            }
            Err(e) => self.build_error(module, version, kernel, arch, e),
        }
    }

    /// A kernel without headers: remembered for the exit status, and said once.
    fn step_no_headers(&mut self, kernel: &str, package: &str) {
        self.missing_headers.push(kernel.to_string());
        self.reporter.say(
            Severity::Warning,
            &format!(
                "kernel {kernel}: its headers are not installed, so its DKMS modules cannot be built; install {package}"
            ),
        );
    }

    /// Runs depmod for a kernel whose modules changed (or whose depmod is owed), through the
    /// one policy of `depmod::settle`: a failure is reported (critical when the kernel's
    /// initramfs modules changed) and the record kept, so the next run retries; the modules
    /// stay installed.
    fn step_depmod(&mut self, kernel: &str, snap: &plan::Snapshot) {
        let facts = self
            .changes
            .kernels
            .iter()
            .find(|f| f.kernel == kernel)
            .cloned()
            .or_else(|| {
                snap.depmod_pending
                    .contains(kernel)
                    .then(|| self.facts(kernel, &snap.arch))
            });
        let Some(facts) = facts else {
            // Nothing changed after all (every install was skipped or failed).
            let _ = depmod::forget(&self.ctx.paths, kernel);
            return;
        };
        if self.ctx.no_depmod {
            return;
        }
        let result = depmod::settle(&self.ctx.paths, &facts, &self.ctx.console);
        if let Err(e) = result {
            let critical = self.remake_changed.contains(kernel);
            self.reporter
                .failure(Some(kernel), critical, &e.to_string());
        }
    }

    /// A build or install error: BUILD_EXCLUSIVE found at build time is a skip that satisfies
    /// dependents (DKMS's exit 77); anything else a failure.
    fn build_error(&mut self, module: &str, version: &str, kernel: &str, arch: &str, e: Error) {
        if matches!(e, Error::BuildExclusive { .. }) {
            self.skipped
                .entry(kernel.to_string())
                .or_default()
                .insert(module.to_string());
            let outcome = Outcome::Skipped(format!("BUILD_EXCLUSIVE does not match ({e})"));
            self.record(module, version, kernel, arch, outcome);
            return;
        }
        let outcome = Outcome::Failed {
            code: e.exit_code(),
            reason: e.to_string(),
        };
        self.record(module, version, kernel, arch, outcome);
    }

    /// Installs `version` in place of `replaces` (invariant (b)): each new file is renamed over
    /// the old one and only then are the old version's files that the new one did not
    /// overwrite deleted. If the new version cannot be installed the old one is put back, so a
    /// failed upgrade never leaves the kernel without the module.
    fn install(
        &mut self,
        module: &str,
        version: &str,
        kernel: &str,
        arch: &str,
        replaces: Option<&str>,
    ) -> Result<()> {
        let facts = self.facts(kernel, arch);
        let job = self.job(module, version);
        let result = match replaces {
            None => lifecycle::install_one(&job, &facts, &mut self.changes),
            Some(old) => {
                let old_job = self.job(module, old);
                let result =
                    lifecycle::replace_installed(&old_job, &job, &facts, &mut self.changes);
                if result.is_err() {
                    self.reporter.say(
                        Severity::Warning,
                        &format!("{module}/{old} stays installed for kernel {kernel} ({arch})"),
                    );
                }
                result
            }
        };
        if facts.modules_dir.is_dir() && !self.changes.kernels.iter().any(|k| k.kernel == kernel) {
            self.changes.kernels.push(facts);
        }
        result
    }

    /// Uninstalls and deletes one build of a kernel that is gone or being removed, without
    /// depmod. When the dkms.conf cannot be read (its source is gone), the build's own files
    /// say what to delete.
    fn purge(&mut self, module: &str, version: &str, kernel: &str, arch: &str) -> Result<()> {
        let key = (kernel.to_string(), arch.to_string());
        let facts = match self.purge_facts.get(&key) {
            Some(facts) => facts.clone(),
            None => {
                let facts = self.facts(kernel, arch);
                self.purge_facts.insert(key, facts.clone());
                facts
            }
        };
        let job = self.job(module, version);
        let mut scratch = Changes::default();
        match lifecycle::unbuild_into(&job, &facts, &mut scratch, &mut self.removals) {
            Ok(()) => Ok(()),
            Err(e) if job.conf(&facts).is_err() => {
                self.ctx.console.say(format!(
                    "{e}; removing {module}/{version} for {kernel} ({arch}) from its built files"
                ));
                purge::purge_without_conf(
                    &self.ctx.paths,
                    &self.ctx.tree,
                    (module, version, kernel, arch),
                    &mut self.removals,
                )
            }
            Err(e) => Err(e),
        }
    }

    /// Makes the purges durable and deletes the purged directories (see `Removals`).
    fn finish_removals(&mut self) {
        if let Err(e) = std::mem::take(&mut self.removals).finish() {
            self.prerm_failed = true;
            self.reporter.failure(None, false, &e.to_string());
        }
    }

    /// Regenerates the initramfs once if a REMAKE_INITRD module changed on `kernel` (or an
    /// earlier run recorded it); otherwise drops the record made before the installs.
    fn update_initramfs(&mut self, kernel: &str, snap: &plan::Snapshot) {
        let paths = &self.ctx.paths;
        if !self.remake_changed.contains(kernel) && !snap.initramfs_pending.contains(kernel) {
            if let Err(e) = initramfs::clear(paths, kernel) {
                self.reporter.say(Severity::Warning, &e.to_string());
            }
            return;
        }
        let search = std::env::var_os("PATH").unwrap_or_default();
        match initramfs::regenerate(paths, kernel, &search) {
            Ok(initramfs::Regeneration::Updated(cmd)) => self.reporter.say(
                Severity::Info,
                &format!("kernel {kernel}: initramfs updated ({cmd})"),
            ),
            Ok(initramfs::Regeneration::NoImage) => self.reporter.say(
                Severity::Info,
                &format!(
                    "kernel {kernel}: no initramfs yet; the kernel's own hook will create it with the modules"
                ),
            ),
            Ok(initramfs::Regeneration::NoTool) => self.reporter.say(
                Severity::Warning,
                &format!(
                    "kernel {kernel}: neither update-initramfs nor dracut is installed; its initramfs was not updated"
                ),
            ),
            Err(e) => self.reporter.failure(Some(kernel), true, &e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planning::plan::SkipReason;

    fn note(module: &str, reason: &str) -> FailureNote {
        FailureNote {
            module: module.into(),
            version: "1.0".into(),
            kernel: "K".into(),
            arch: "x86_64".into(),
            code: fail_code(FailCause::Dependency),
            reason: reason.into(),
            critical: false,
        }
    }

    fn plan(steps: Vec<Step>) -> Plan {
        Plan {
            steps,
            ..Plan::default()
        }
    }

    fn fail(module: &str, reason: &str) -> Step {
        Step::Fail {
            module: module.into(),
            version: "1.0".into(),
            kernel: "K".into(),
            reason: reason.into(),
            cause: FailCause::Dependency,
        }
    }

    #[test]
    fn only_plans_that_write_nothing_change_nothing() {
        let a = "x86_64";
        assert!(changes_nothing(&plan(vec![]), &[], a));
        let headers = Step::NoHeaders {
            kernel: "K".into(),
            package: "linux-headers-K".into(),
        };
        assert!(changes_nothing(&plan(vec![headers]), &[], a));
        let skip = Step::Skip {
            module: "alpha".into(),
            version: "1.0".into(),
            kernel: "K".into(),
            reason: SkipReason::NoAutoinstall,
        };
        assert!(changes_nothing(
            &plan(vec![skip.clone()]),
            &[note("beta", "x")],
            a
        ));
        // Skipping forgets the module's failure note on that kernel.
        assert!(!changes_nothing(
            &plan(vec![skip]),
            &[note("alpha", "x")],
            a
        ));
        let cycle = "BUILD_DEPENDS cycle";
        let remembered = [note("alpha", cycle)];
        assert!(changes_nothing(
            &plan(vec![fail("alpha", cycle)]),
            &remembered,
            a
        ));
        assert!(!changes_nothing(
            &plan(vec![fail("alpha", "other")]),
            &remembered,
            a
        ));
        assert!(!changes_nothing(&plan(vec![fail("alpha", cycle)]), &[], a));
        assert!(!changes_nothing(
            &plan(vec![fail("alpha", cycle)]),
            &remembered,
            "i686"
        ));
        let depmod = Step::Depmod { kernel: "K".into() };
        assert!(!changes_nothing(&plan(vec![depmod]), &[], a));
    }
}
