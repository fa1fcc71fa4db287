//! The commands that change a module's state — build, install, uninstall, unbuild, remove —
//! with DKMS 3.0.10's semantics and messages: one tree lock for the whole command, leftovers of
//! interrupted runs cleaned first, every kernel handled in turn, depmod once per kernel at the end.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::base::error::{Error, IoContext, Result};
use crate::base::version::ver_cmp;
use crate::conf::{self, model::Target, DkmsConf, EvalMode, LoadRequest};
use crate::effects::build::{self, BuildInput, Jobs};
use crate::effects::build_user::BuildUser;
use crate::effects::depmod;
use crate::effects::install::{InstallOptions, Placement};
use crate::effects::signing::SigningConfig;
use crate::ops::add::{self, AddOptions, SourcePath};
use crate::state::atomic::{self, Removals};
use crate::state::dpkg::{self, BinaryPackage};
use crate::state::journal::{self, InstallIntent};
use crate::state::lock::{self, TreeLock};
use crate::state::tree::{Pattern, Tree};
use crate::state::trust::Trust;
use crate::system::config::Paths;
use crate::system::console::Console;
use crate::system::host;
use crate::system::kernel::{KernelFacts, KernelOverrides};
use crate::system::options::Options;

/// Entries of `<tree>/M/V` that are not kernels (DKMS's list, plus `bmdeb`, where `mkbmdeb`
/// writes its packages: `remove` deletes the version with them, as DKMS does).
const NOT_KERNELS: [&str; 7] = [
    "build",
    "tarball",
    "driver_disk",
    "rpm",
    "deb",
    "source",
    "bmdeb",
];

/// Settings shared by every kernel a command handles.
pub struct Ctx {
    pub paths: Paths,
    pub tree: Tree,
    pub console: Console,
    pub force: bool,
    pub version_override: bool,
    pub no_depmod: bool,
    pub jobs: Jobs,
    pub kernel_overrides: KernelOverrides,
    /// `-c FILE`: the dkms.conf to use instead of the module's own.
    pub conf_override: Option<PathBuf>,
    /// `--directive NAME=VALUE`.
    pub directives: Vec<String>,
    pub signing: SigningConfig,
    /// The installed binary module packages, read from dpkg's database on first need.
    packages: OnceLock<Vec<BinaryPackage>>,
    /// As root: which sources may be evaluated and built.
    pub trust: Trust,
    /// `--build-user` (framework.conf `build_user` is read when a build starts).
    pub build_user_option: Option<String>,
    /// The planner ordered the builds by BUILD_DEPENDS (hooks): a dependency it skipped for
    /// BUILD_EXCLUSIVE counts as present, so builds do not check for installed dependencies.
    pub depends_planned: bool,
}

impl Ctx {
    pub fn from_options(opts: &Options) -> Ctx {
        let paths = opts.paths.clone();
        Ctx {
            tree: Tree::new(paths.dkms_tree.clone()),
            console: Console {
                quiet: opts.quiet,
                verbose: opts.verbose,
                signing_shown: false,
            },
            force: opts.force,
            version_override: opts.force_version_override,
            no_depmod: opts.no_depmod,
            jobs: Jobs::resolve(opts.jobs),
            kernel_overrides: KernelOverrides {
                source_dir: opts.kernel_source_dir.clone(),
                config: opts.kernel_config.clone(),
            },
            conf_override: opts.conf.clone(),
            directives: opts.directives.clone(),
            signing: SigningConfig::load(&paths),
            trust: Trust::new(&paths, opts.allow_untrusted_sources),
            build_user_option: opts.build_user.clone(),
            depends_planned: false,
            paths,
            packages: OnceLock::new(),
        }
    }

    /// The binary module packages dpkg has installed (their files are not rdkms's to touch).
    pub fn packages(&self) -> Result<&[BinaryPackage]> {
        if let Some(p) = self.packages.get() {
            return Ok(p);
        }
        let read = dpkg::installed_packages(&self.paths)?;
        Ok(self.packages.get_or_init(|| read))
    }
}

/// One module version inside a command.
pub struct Job<'a> {
    pub ctx: &'a Ctx,
    pub module: String,
    pub version: String,
}

impl Job<'_> {
    /// `<tree>/M/V/source` (a symlink to the sources).
    pub fn source_dir(&self) -> PathBuf {
        self.ctx.tree.source_link(&self.module, &self.version)
    }

    /// The dkms.conf in force: `-c FILE` or the one in the sources.
    pub fn conf_file(&self) -> PathBuf {
        self.ctx
            .conf_override
            .clone()
            .unwrap_or_else(|| self.source_dir().join("dkms.conf"))
    }

    /// Reads the dkms.conf for a kernel with `$dkms_tree` = `eval_tree` and `M=` = `build_dir`.
    pub fn conf_with(
        &self,
        facts: &KernelFacts,
        eval_tree: &Path,
        build_dir: &Path,
    ) -> Result<DkmsConf> {
        let p = &self.ctx.paths;
        self.ctx.trust.check_file(&self.conf_file())?;
        conf::load(&LoadRequest {
            conf_file: self.conf_file(),
            module: self.module.clone(),
            module_version: self.version.clone(),
            target: Target {
                kernel: facts.kernel.clone(),
                arch: facts.arch.clone(),
                kernel_source_dir: facts.source_dir.clone(),
                kernel_config: facts.config.clone(),
                build_dir: build_dir.to_path_buf(),
                location_override: host::location_override(p),
            },
            etc_dkms: Some(p.etc_dkms.clone()),
            dkms_tree: eval_tree.to_path_buf(),
            source_tree: p.source_tree.clone(),
            install_tree: p.install_tree.clone(),
            directive_overrides: self.ctx.directives.clone(),
            mode: EvalMode::Auto,
        })
    }

    /// The dkms.conf as the shared tree sees it.
    pub fn conf(&self, facts: &KernelFacts) -> Result<DkmsConf> {
        let t = &self.ctx.tree;
        self.conf_with(
            facts,
            &t.root,
            &t.version_dir(&self.module, &self.version).join("build"),
        )
    }

    /// DKMS's "added": `<tree>/M/V` with a `source` link (or directory).
    pub fn is_added(&self) -> bool {
        self.ctx.tree.is_added(&self.module, &self.version)
    }

    /// DKMS 3.2.2's "built": `<tree>/M/V/K/A/module` exists (a module missing from it makes
    /// the build "incomplete", which `install` refuses and `status` names).
    pub fn is_built(&self, facts: &KernelFacts) -> bool {
        let dir = self.ctx.tree.built_modules_dir(
            &self.module,
            &self.version,
            &facts.kernel,
            &facts.arch,
        );
        dir.is_dir()
    }

    /// DKMS's "installed": built, and `<tree>/M/kernel-K-A` resolves to this version's build.
    /// What uninstall acts on, whether or not the files are still there.
    pub fn is_marked_installed(&self, facts: &KernelFacts) -> bool {
        self.is_built(facts)
            && self.ctx.tree.is_installed_build(
                &self.module,
                &self.version,
                &facts.kernel,
                &facts.arch,
            )
    }

    /// Marked installed and every module file really in place (invariant (a)): anything less
    /// is installed again.
    pub fn is_installed(&self, facts: &KernelFacts) -> bool {
        self.is_marked_installed(facts)
            && crate::state::presence::installed_files_present(
                &self.ctx.paths,
                &self.module,
                &self.version,
                &facts.kernel,
                &facts.arch,
            )
    }

    fn placement<'b>(
        &'b self,
        facts: &'b KernelFacts,
        conf: &'b DkmsConf,
        source: &'b Path,
    ) -> Result<Placement<'b>> {
        Ok(Placement {
            module: &self.module,
            version: &self.version,
            tree: &self.ctx.tree,
            facts,
            conf,
            source_dir: source,
            console: &self.ctx.console,
            paths: &self.ctx.paths,
            packages: self.ctx.packages()?,
        })
    }
}

/// What a command changed, for the depmod pass at its end.
#[derive(Default)]
pub struct Changes {
    /// Kernels whose module directory changed and still need depmod, in first-touched order.
    pub kernels: Vec<KernelFacts>,
    /// Run depmod right after each install or uninstall, as DKMS does for one module (the
    /// lifecycle commands); otherwise once per kernel at the end (hooks handling many).
    pub per_step: bool,
}

impl Changes {
    fn touch(&mut self, facts: &KernelFacts) {
        if !self.kernels.iter().any(|k| k.kernel == facts.kernel) {
            self.kernels.push(facts.clone());
        }
    }
}

/// The commands this module runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Build,
    Install,
    Uninstall,
    Unbuild,
    Remove,
}

impl Operation {
    /// The command's word, as DKMS's messages name it.
    pub fn word(self) -> &'static str {
        match self {
            Operation::Build => "build",
            Operation::Install => "install",
            Operation::Uninstall => "uninstall",
            Operation::Unbuild => "unbuild",
            Operation::Remove => "remove",
        }
    }
}

/// Runs build, install, uninstall, unbuild or remove.
pub fn run(action: Operation, opts: &Options) -> Result<i32> {
    let ctx = Ctx::from_options(opts);
    let builds = matches!(action, Operation::Build | Operation::Install);
    // `build PATH` / `install PATH`: the sources name the module (DKMS accepts this too).
    let source = match (&opts.source_path, &opts.module, &opts.version) {
        (Some(p), None, None) if builds => {
            Some(SourcePath::read(&ctx.paths, p, &add_options(opts))?)
        }
        _ => None,
    };
    let named = match &source {
        Some(s) => (Some(s.module.clone()), Some(s.version.clone())),
        None => (opts.module.clone(), opts.version.clone()),
    };
    let (Some(module), Some(version)) = named else {
        return Err(Error::MissingModule {
            action: action.word().to_string(),
        });
    };
    if opts.all && builds {
        return Err(Error::AllNotSupported {
            action: action.word().to_string(),
        });
    }
    crate::state::broken::refuse(&ctx.paths, &ctx.tree, &module, &version)?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    fs::create_dir_all(&ctx.tree.root).ctx("create", &ctx.tree.root)?;
    let lock = TreeLock::acquire(&ctx.paths, lock::timeout(opts.lock_timeout))?;
    recover(&ctx);

    let job = Job {
        ctx: &ctx,
        module,
        version,
    };
    let was_added = job.is_added();
    if let Some(source) = &source {
        source.ensure_added(&ctx.paths, &lock, &add_options(opts))?;
    }
    match action {
        Operation::Build | Operation::Install => {
            ensure_added(&job, &lock, opts)?;
            // DKMS sets the add it does first apart from the build with an empty line.
            if !was_added {
                ctx.console.say("");
            }
        }
        _ if !job.is_added() => {
            return Err(Error::NotAdded {
                module: job.module.clone(),
                version: job.version.clone(),
            })
        }
        _ => {}
    }
    let targets = targets(&job, opts);
    let owed = depmod::pending(&ctx.paths);
    if action != Operation::Build && !ctx.no_depmod {
        for (kernel, _) in &targets {
            if ctx.paths.install_tree.join(kernel).is_dir() {
                depmod::record(&ctx.paths, kernel)?;
            }
        }
    }
    let mut changes = Changes {
        per_step: true,
        ..Changes::default()
    };
    let mut last_error: Option<Error> = None;
    for (i, (kernel, arch)) in targets.iter().enumerate() {
        let facts = KernelFacts::probe(&ctx.paths, kernel, arch, &ctx.kernel_overrides);
        // DKMS separates kernels with an empty line (remove: after each one).
        if i > 0 && matches!(action, Operation::Uninstall | Operation::Unbuild) {
            ctx.console.say("");
        }
        let result = match action {
            Operation::Build => build_one(&job, &facts),
            Operation::Install => install_one(&job, &facts, &mut changes)
                .and_then(|()| rebuild_dependents(&ctx, &facts)),
            Operation::Uninstall => uninstall_one(&job, &facts, &mut changes),
            Operation::Unbuild | Operation::Remove => uninstall_one(&job, &facts, &mut changes)
                .and_then(|()| unbuild_one(&job, &facts, &mut changes)),
        };
        if action == Operation::Remove {
            ctx.console.say("");
        }
        if let Err(e) = result {
            if let Some(prev) = last_error.replace(e) {
                ctx.console.fail(&prev);
            }
        }
    }
    let removed = match action {
        Operation::Remove => remove_if_unused(&job),
        _ => Ok(()),
    };
    for result in [removed, finish_depmod(&ctx, &changes, &owed)] {
        if let Err(e) = result {
            if let Some(prev) = last_error.replace(e) {
                ctx.console.fail(&prev);
            }
        }
    }
    match last_error {
        Some(e) => Err(e),
        None if action == Operation::Build => Ok(0),
        None => {
            let kernel = targets
                .first()
                .map_or_else(host::running_kernel, |t| t.0.clone());
            crate::effects::post_transaction::run(&ctx.paths, &kernel, &ctx.console)?;
            Ok(0)
        }
    }
}

/// The kernel/arch pairs to act on: `-k` (with `-a`), `--all` = every kernel the version is
/// built for (version order), else the running kernel; the arch defaults to `uname -m`.
fn targets(job: &Job<'_>, opts: &Options) -> Vec<(String, String)> {
    if opts.all {
        let mut out = built_kernels(&job.ctx.tree, &job.module, &job.version);
        out.sort_by(|a, b| ver_cmp(&a.0, &b.0).then_with(|| a.1.cmp(&b.1)));
        return out;
    }
    if opts.kernels.is_empty() {
        let arch = opts.archs.first().cloned();
        return vec![(
            host::running_kernel(),
            arch.unwrap_or_else(host::machine_arch),
        )];
    }
    opts.kernels
        .iter()
        .map(|k| {
            (
                k.kernel.clone(),
                k.arch.clone().unwrap_or_else(host::machine_arch),
            )
        })
        .collect()
}

/// `<tree>/M/V/K/A` pairs having a `module` directory, for kernels named like versions
/// (DKMS's `+([0-9]).*` glob).
fn built_kernels(tree: &Tree, module: &str, version: &str) -> Vec<(String, String)> {
    tree.kernel_arches(module, version, &Pattern::KernelLike, &Pattern::Any)
        .into_iter()
        .filter(|(k, a)| tree.built_module_files(module, version, k, a).is_some())
        .collect()
}

/// Names of the real (not symlinked, not hidden) subdirectories of `dir`.
fn subdirs(dir: &Path) -> Vec<String> {
    let mut names = crate::base::files::subdirs(dir).unwrap_or_default();
    names.retain(|n| !n.starts_with('.'));
    names
}

/// What every command does first once it holds the tree lock: cleans up after interrupted
/// commands (`clean_leftovers`), then completes the installs they began (reliability
/// invariant (c)), so a killed install never leaves a module half in place until someone
/// installs it again by hand.
pub fn recover(ctx: &Ctx) {
    clean_leftovers(&ctx.tree, &ctx.paths.install_tree);
    // `-c FILE` and `--directive` belong to this command, not to the interrupted one: the
    // next command without them completes the install.
    if ctx.conf_override.is_some() || !ctx.directives.is_empty() {
        return;
    }
    for (intent, record) in journal::interrupted_installs(&ctx.tree.root) {
        let job = Job {
            ctx,
            module: intent.module.clone(),
            version: intent.version.clone(),
        };
        let facts = KernelFacts::probe(
            &ctx.paths,
            &intent.kernel,
            &intent.arch,
            &ctx.kernel_overrides,
        );
        if let Err(e) = resume_install(&job, &facts, &intent) {
            ctx.console.warn(format!(
                "Cannot complete the interrupted installation of {}/{} on kernel {} ({}): {e}",
                intent.module, intent.version, intent.kernel, intent.arch
            ));
        }
        // Done, or reported: either way it is not tried again.
        let _ = record.finish();
    }
}

/// Installs again what a killed install began, unless it completed or its build or kernel
/// is gone. PRE_INSTALL ran already; the options are the interrupted command's.
fn resume_install(job: &Job<'_>, facts: &KernelFacts, intent: &InstallIntent) -> Result<()> {
    if job.is_installed(facts) || !job.is_built(facts) || !facts.modules_dir.is_dir() {
        return Ok(());
    }
    job.ctx.console.say(format!(
        "Completing the interrupted installation of {}/{} on kernel {} ({})",
        job.module, job.version, facts.kernel, facts.arch
    ));
    record_depmod(job.ctx, facts)?;
    let conf = job.conf(facts)?;
    let source = job.source_dir();
    job.placement(facts, &conf, &source)?
        .install(InstallOptions {
            force: intent.force,
            version_override: intent.version_override,
            resume: true,
        })
}

/// Records durably, before the kernel's modules change, that it owes depmod (unless
/// `--no-depmod`, or the kernel has no module directory to index).
pub fn record_depmod(ctx: &Ctx, facts: &KernelFacts) -> Result<()> {
    if ctx.no_depmod || !facts.modules_dir.is_dir() {
        return Ok(());
    }
    depmod::record(&ctx.paths, &facts.kernel)
}

/// Removes what interrupted commands left: the files of unfinished uninstalls, private build
/// directories (nobody else can be using them while we hold the lock) and rdkms's temporary
/// entries in the tree.
fn clean_leftovers(tree: &Tree, install_tree: &Path) {
    journal::replay(&tree.root, install_tree);
    let private = build::private_builds_dir(&tree.root);
    if let Ok(entries) = fs::read_dir(&private) {
        for e in entries.flatten() {
            crate::effects::build_procs::clear(&e.path());
        }
        let _ = fs::remove_dir(&private);
    }
    // One listing per directory: this walks the whole tree before every change.
    for m in subdirs(&tree.root) {
        let mdir = tree.module_dir(&m);
        for v in atomic::sweep(&mdir) {
            let vdir = mdir.join(&v);
            for k in atomic::sweep(&vdir) {
                if NOT_KERNELS.contains(&k.as_str()) {
                    continue;
                }
                let kdir = vdir.join(k);
                // A kernel dir that only held an interrupted staging dir would look like a
                // kernel to `remove`; an empty one is never meaningful.
                if atomic::sweep(&kdir).is_empty() {
                    let _ = fs::remove_dir(&kdir);
                }
            }
        }
    }
}

/// Adds `<sourcetree>/NAME-VERSION` unless the version is added already: what every command
/// that builds does first, under the tree lock it holds. (`--force` there means "rebuild", not
/// "add again".)
pub fn ensure_added(job: &Job<'_>, lock: &TreeLock, opts: &Options) -> Result<()> {
    add::ensure_added(
        &job.ctx.paths,
        lock,
        &job.module,
        &job.version,
        &add_options(opts),
    )?;
    Ok(())
}

/// How building commands add: as `add`, except that `--force` means "rebuild", not "add again".
fn add_options(opts: &Options) -> AddOptions {
    AddOptions {
        force: false,
        ..AddOptions::from_options(opts)
    }
}

/// Builds unless already built, silently; returns the dkms.conf the state was judged by. The
/// one build path of `install`, `mkbmdeb` and everything else that needs built modules.
pub fn ensure_built(job: &Job<'_>, facts: &KernelFacts) -> Result<DkmsConf> {
    let conf = job.conf(facts)?;
    if !job.is_built(facts) || sources_changed(job, facts) {
        build_now(job, facts)?;
    }
    Ok(conf)
}

/// Builds unless already built (then DKMS's skip message; `--force` rebuilds in place).
pub fn build_one(job: &Job<'_>, facts: &KernelFacts) -> Result<()> {
    // A dkms.conf that cannot be read stops the command before anything else.
    job.conf(facts)?;
    if job.is_built(facts) && !job.ctx.force && !sources_changed(job, facts) {
        job.ctx.console.say(format!(
            "Module {}/{} already built for kernel {} ({}), skip. You may override by specifying --force.",
            job.module, job.version, facts.kernel, facts.arch
        ));
        return Ok(());
    }
    build_now(job, facts)
}

/// Whether the build for `facts` was made from other sources than the added ones now (after
/// `add DIR --force`); says so, since the build then runs again.
fn sources_changed(job: &Job<'_>, facts: &KernelFacts) -> bool {
    let Ok(source) = fs::canonicalize(job.source_dir()) else {
        return false;
    };
    let log = job
        .ctx
        .tree
        .make_log(&job.module, &job.version, &facts.kernel, &facts.arch);
    let changed = crate::state::sources::changed_since_build(&log, &source);
    if changed {
        job.ctx.console.say(format!(
            "The sources of {}/{} changed since it was built for kernel {} ({}); building again.",
            job.module, job.version, facts.kernel, facts.arch
        ));
    }
    changed
}

fn build_now(job: &Job<'_>, facts: &KernelFacts) -> Result<()> {
    build_with(job, facts, &job.ctx.console)
}

/// Builds, printing through `console`, and records the BUILD_DEPENDS versions built against.
pub fn build_with(job: &Job<'_>, facts: &KernelFacts, console: &Console) -> Result<()> {
    let source = fs::canonicalize(job.source_dir()).map_err(|_| Error::ConfNotFound {
        path: job.conf_file(),
    })?;
    job.ctx.trust.check_tree(&source)?;
    let user = BuildUser::configured(&job.ctx.paths, job.ctx.build_user_option.as_deref())?;
    let load = |eval_tree: &Path, build_dir: &Path| job.conf_with(facts, eval_tree, build_dir);
    build::build(&BuildInput {
        module: &job.module,
        version: &job.version,
        tree: &job.ctx.tree,
        source_dir: &source,
        facts,
        jobs: job.ctx.jobs,
        console,
        root: &job.ctx.paths.root,
        signing: &job.ctx.signing,
        load_conf: &load,
        build_user: user.as_ref(),
        force: job.ctx.force,
        depends_planned: job.ctx.depends_planned,
    })?;
    record_dependencies(job, facts)
}

/// Builds if needed, then installs unless already installed (`--force` reinstalls).
pub fn install_one(job: &Job<'_>, facts: &KernelFacts, changes: &mut Changes) -> Result<()> {
    let conf = job.conf(facts)?;
    // Rebuilt from changed sources: the installed copy is stale, so it is replaced.
    let rebuilt = job.is_built(facts) && sources_changed(job, facts);
    if rebuilt || !job.is_built(facts) {
        build_now(job, facts)?;
    }
    let source = job.source_dir();
    let place = job.placement(facts, &conf, &source)?;
    if job.is_installed(facts) {
        if !job.ctx.force && !rebuilt {
            job.ctx.console.say(format!(
                "Module {}/{} already installed on kernel {} ({}), skip. You may override by specifying --force.",
                job.module, job.version, facts.kernel, facts.arch
            ));
            return Ok(());
        }
        // DKMS uninstalls first and says so (its output is compared line by line); rdkms prints
        // the same lines and runs the same depmod, but then renames each new file over the old
        // one, so the kernel never lacks the module (a kill in between, a full disk).
        place.announce_uninstall();
        changes.touch(facts);
        depmod_now(job.ctx, changes)?;
        job.ctx.console.say("");
    }
    conf::strict::check(&conf, &facts.kernel, &facts.arch, |l| {
        job.ctx.console.say(l)
    })?;
    let result = place.install(InstallOptions {
        force: job.ctx.force,
        version_override: job.ctx.version_override,
        resume: false,
    });
    // Refused before any file was copied: no depmod, as DKMS.
    let untouched = matches!(
        result,
        Err(Error::InstallAborted
            | Error::MissingBuiltModule { .. }
            | Error::PreInstallFailed { .. })
    );
    if facts.modules_dir.is_dir() && !untouched {
        changes.touch(facts);
    }
    let depmod = depmod_now(job.ctx, changes);
    result.and(depmod)
}

/// depmod for what the step just done changed, right away when `per_step`: DKMS prints
/// "Running depmod" after each install and uninstall, and output is compared line by line.
/// A kernel whose depmod failed stays listed (and recorded), so the command's last pass
/// tries it again and keeps its record if that fails too.
fn depmod_now(ctx: &Ctx, changes: &mut Changes) -> Result<()> {
    if !changes.per_step || ctx.no_depmod {
        return Ok(());
    }
    let mut failure = None;
    changes.kernels.retain(
        |facts| match depmod::settle(&ctx.paths, facts, &ctx.console) {
            Ok(()) => false,
            Err(e) => {
                failure = Some(e);
                true
            }
        },
    );
    failure.map_or(Ok(()), Err)
}

/// Installs `new` over the installed `old` (an upgrade): the new files are renamed over the
/// old ones, the `kernel-K-A` link moves to `new`, and only then are `old`'s files that `new`
/// did not overwrite deleted. If `new` fails, `old` is installed again over whatever `new`
/// had copied, so the kernel keeps a working module.
pub fn replace_installed(
    old: &Job<'_>,
    new: &Job<'_>,
    facts: &KernelFacts,
    changes: &mut Changes,
) -> Result<()> {
    let old_conf = old.conf(facts)?;
    let old_source = old.source_dir();
    let old_place = old.placement(facts, &old_conf, &old_source)?;
    let old_files = old_place.installed_files();
    if let Err(e) = install_one(new, facts, changes) {
        if old.is_built(facts) {
            old_place.install(InstallOptions {
                force: true,
                version_override: true,
                resume: false,
            })?;
        }
        return Err(e);
    }
    let conf = new.conf(facts)?;
    let source = new.source_dir();
    let kept = new.placement(facts, &conf, &source)?.installed_files();
    old_place.remove_stale(&old_files, &kept)
}

/// Uninstalls if installed, else DKMS's skip message.
pub fn uninstall_one(job: &Job<'_>, facts: &KernelFacts, changes: &mut Changes) -> Result<()> {
    let conf = job.conf(facts)?;
    if !job.is_marked_installed(facts) {
        job.ctx.console.say(format!(
            "Module {}/{} is not installed for kernel {} ({}). Skipping...",
            job.module, job.version, facts.kernel, facts.arch
        ));
        return Ok(());
    }
    let source = job.source_dir();
    job.placement(facts, &conf, &source)?.uninstall()?;
    changes.touch(facts);
    depmod_now(job.ctx, changes)
}

/// Uninstalls, then deletes `<tree>/M/V/K/A` (and `K` when empty); the module stays added.
pub fn unbuild_one(job: &Job<'_>, facts: &KernelFacts, changes: &mut Changes) -> Result<()> {
    let mut removals = Removals::default();
    let result = unbuild_into(job, facts, changes, &mut removals);
    removals.finish()?;
    result
}

/// `unbuild_one` for a batch: the build directory is hidden at once, and made durable and
/// deleted with the rest of the batch by `Removals::finish`. When `A` is the only build of
/// `K`, `K` goes in one rename.
pub fn unbuild_into(
    job: &Job<'_>,
    facts: &KernelFacts,
    changes: &mut Changes,
    removals: &mut Removals,
) -> Result<()> {
    let conf = job.conf(facts)?;
    let t = &job.ctx.tree;
    if job.is_marked_installed(facts) {
        let source = job.source_dir();
        job.placement(facts, &conf, &source)?.uninstall()?;
        changes.touch(facts);
    }
    build::remove_kept_build(&t.version_dir(&job.module, &job.version).join("build"));
    let build_dir = t.build_dir(&job.module, &job.version, &facts.kernel, &facts.arch);
    if !job.is_built(facts) && !build_dir.is_dir() {
        job.ctx.console.say(format!(
            "Module {}/{} is not built for kernel {} ({}). Skipping...",
            job.module, job.version, facts.kernel, facts.arch
        ));
        return Ok(());
    }
    let kernel_dir = t.version_dir(&job.module, &job.version).join(&facts.kernel);
    if subdirs(&kernel_dir).iter().all(|a| *a == facts.arch) {
        removals.hide(&kernel_dir)
    } else {
        removals.hide(&build_dir)
    }
}

/// `remove`'s last step: delete `<tree>/M/V` when no kernel is left in it (never the sources
/// it links to), and `<tree>/M` when that leaves it empty.
fn remove_if_unused(job: &Job<'_>) -> Result<()> {
    let t = &job.ctx.tree;
    let vdir = t.version_dir(&job.module, &job.version);
    if subdirs(&vdir)
        .iter()
        .any(|d| !NOT_KERNELS.contains(&d.as_str()))
    {
        return Ok(());
    }
    job.ctx.console.say(format!(
        "Deleting module {}/{} completely from the DKMS tree.",
        job.module, job.version
    ));
    atomic::remove_dir(&vdir)?;
    let mdir = t.module_dir(&job.module);
    let empty = fs::read_dir(&mdir).is_ok_and(|mut e| {
        e.all(|x| x.is_ok_and(|x| x.file_name().to_string_lossy().starts_with('.')))
    });
    if empty {
        fs::remove_dir_all(&mdir).ctx("remove", &mdir)?;
    }
    Ok(())
}

/// A command's last depmod pass: once per kernel it changed and for every kernel an earlier
/// command left owing one (`owed`, read before this command recorded its own), each through
/// `depmod::settle` (the one policy: a failure keeps the modules and the record, exit 6).
/// Records this command made for kernels it did not change after all are forgotten.
pub fn finish_depmod(ctx: &Ctx, changes: &Changes, owed: &BTreeSet<String>) -> Result<()> {
    let paths = &ctx.paths;
    if ctx.no_depmod {
        return Ok(());
    }
    let mut kernels = changes.kernels.clone();
    for k in owed {
        if !kernels.iter().any(|f| &f.kernel == k) {
            let facts = KernelFacts::probe(paths, k, &host::machine_arch(), &ctx.kernel_overrides);
            kernels.push(facts);
        }
    }
    for k in depmod::pending(paths) {
        if !kernels.iter().any(|f| f.kernel == k) {
            depmod::forget(paths, &k)?;
        }
    }
    let mut failure = None;
    for facts in &kernels {
        if let Err(e) = depmod::settle(paths, facts, &ctx.console) {
            if let Some(prev) = failure.replace(e) {
                ctx.console.error(prev.to_string());
            }
        }
    }
    failure.map_or(Ok(()), Err)
}

// BUILD_DEPENDS_REBUILD (DKMS 3.2.2): a module built against another remembers the version it
// was built with (`<tree>/M/V/K/A/.dep_DEP`), and installing a module rebuilds and reinstalls
// every module of that kernel whose dependencies now have another version. It lives here
// because it is made of this file's build/install/uninstall steps.

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
pub fn record_dependencies(job: &Job<'_>, facts: &KernelFacts) -> Result<()> {
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
pub fn rebuild_dependents(ctx: &Ctx, facts: &KernelFacts) -> Result<()> {
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
        uninstall_one(&job, facts, &mut changes)?;
        unbuild_one(&job, facts, &mut changes)?;
        build_with(&job, facts, &console)?;
        install_one(&job, facts, &mut changes)?;
    }
    Ok(())
}
