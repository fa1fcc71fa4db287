//! The one planner every hook uses: a pure function from a snapshot of the machine (kernels,
//! registered modules, their dkms.conf facts, what is built and installed) to an ordered list
//! of steps. Nothing here touches the disk, so every hook scenario is testable in memory and
//! `rdkms plan` can show exactly what `reconcile` would do.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::base::version::ver_cmp;
use crate::planning::inventory::Kernel;

/// What the planner knows about the machine.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The architecture modules are built for (`uname -m`).
    pub arch: String,
    /// Every kernel that is installed or that the dkms tree mentions.
    pub kernels: Vec<Kernel>,
    /// Every module name registered in the dkms tree.
    pub modules: Vec<Module>,
    /// `/etc/dkms/no-autoinstall` exists.
    pub no_autoinstall: bool,
    /// Kernels whose initramfs update was recorded but not yet done (a run was interrupted).
    pub initramfs_pending: BTreeSet<String>,
    /// Kernels whose depmod was recorded but not yet done (a run was killed or depmod failed).
    pub depmod_pending: BTreeSet<String>,
}

/// One module name in the dkms tree with all its registered versions.
#[derive(Debug, Clone, Default)]
pub struct Module {
    pub name: String,
    pub versions: Vec<ModuleVersion>,
    /// `(kernel, arch)` → the version the `kernel-K-A` link marks as installed.
    pub installed: BTreeMap<(String, String), String>,
}

/// One registered version of a module.
#[derive(Debug, Clone, Default)]
pub struct ModuleVersion {
    pub version: String,
    /// Its source is gone (dangling `source` link): it cannot be built.
    pub broken: bool,
    /// `(kernel, arch)` pairs that have a build in the tree.
    pub built: BTreeSet<(String, String)>,
    /// dkms.conf read for a kernel (only those `conf_queries` asked for): the facts, or why
    /// the file could not be read.
    pub conf: BTreeMap<String, Result<ConfFacts, String>>,
}

/// The dkms.conf facts the planner needs, evaluated for one kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfFacts {
    pub autoinstall: bool,
    pub remake_initrd: bool,
    pub build_depends: Vec<String>,
    /// Why BUILD_EXCLUSIVE rules this kernel out, if it does.
    pub excluded: Option<String>,
}

/// Which part of the desired state a command asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `reconcile`: every installed kernel, and purge what belongs to gone kernels.
    All,
    /// `autoinstall -k K` / `kernel_postinst -k K`: this kernel only.
    Kernel(String),
    /// `kernel_prerm -k K`: unbuild everything built for a kernel about to be removed.
    Prerm(String),
    /// `kernel_preinst -k K`: unbuild the AUTOINSTALL modules built for a kernel whose package
    /// is about to be replaced by a new build of the same version, so `kernel_postinst`
    /// rebuilds them against the new headers (DKMS 3.2.2; a no-op on a first install).
    Preinst(String),
}

/// A planning request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub scope: Scope,
    /// Kernels whose own initramfs hook runs after ours (`kernel_postinst` from
    /// `/etc/kernel/postinst.d` with initramfs-tools installed): no initramfs step for them.
    pub initramfs_by_kernel_hook: BTreeSet<String>,
}

impl Request {
    pub fn new(scope: Scope) -> Request {
        Request {
            scope,
            initramfs_by_kernel_hook: BTreeSet::new(),
        }
    }
}

/// Why a module is not built for a kernel. Every skip satisfies dependents except none: a
/// skipped dependency never blocks (DKMS's exit-77 semantics), a failed one does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum SkipReason {
    /// BUILD_EXCLUSIVE does not match this kernel/arch/config.
    Exclusive(String),
    /// AUTOINSTALL is not `yes`.
    NoAutoinstall,
    /// Every registered version has lost its source.
    Broken,
}

/// One thing to do, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Remove a build, and its installed files when `installed`, for a kernel that is gone or
    /// being removed. The module stays registered.
    Purge {
        module: String,
        version: String,
        kernel: String,
        arch: String,
        installed: bool,
    },
    /// Remove the empty dkms install directories of a kernel (and, when `gone`, its stale
    /// depmod files once no module is left).
    CleanKernel { kernel: String, gone: bool },
    /// Compile a module for a kernel. `needs` are modules built earlier in this plan for the
    /// same kernel; if one of them fails, this step fails too.
    Build {
        module: String,
        version: String,
        kernel: String,
        arch: String,
        needs: Vec<String>,
    },
    /// Install a built module, replacing the installed version `replaces` if any.
    Install {
        module: String,
        version: String,
        kernel: String,
        arch: String,
        replaces: Option<String>,
        remake_initrd: bool,
        needs: Vec<String>,
    },
    /// Deliberately not built.
    Skip {
        module: String,
        version: String,
        kernel: String,
        reason: SkipReason,
    },
    /// Cannot be built (dependency cycle, missing dependency, unreadable dkms.conf).
    Fail {
        module: String,
        version: String,
        kernel: String,
        reason: String,
    },
    /// An installed kernel without headers: nothing can be built for it.
    NoHeaders { kernel: String, package: String },
    /// Rebuild the module index of a kernel, once, after all its installs.
    Depmod { kernel: String },
    /// Regenerate a kernel's initramfs, once, after all its modules are installed.
    UpdateInitramfs { kernel: String },
    /// Drop a recorded initramfs update that no longer applies (kernel gone or being removed,
    /// or its own hook regenerates it next).
    ForgetInitramfs { kernel: String },
}

/// The planner's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// `/etc/dkms/no-autoinstall` suppressed every build.
    pub autoinstall_disabled: bool,
    /// The requested kernel is not installed (no image, no modules): nothing is built for it.
    pub kernel_not_installed: Option<String>,
    /// Kernels with headers but neither image nor modules (`reconcile` builds nothing for them
    /// until the image arrives); listed so that "Nothing to do." is not a mystery.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers_without_image: Vec<String>,
    pub steps: Vec<Step>,
}

impl Plan {
    /// Nothing to change on disk.
    pub fn is_noop(&self) -> bool {
        self.steps.iter().all(|s| {
            matches!(
                s,
                Step::Skip { .. } | Step::Fail { .. } | Step::NoHeaders { .. }
            )
        })
    }
}

/// The dkms.conf evaluations (`module`, `version`, `kernel`) the planner will read from
/// `ModuleVersion::conf`; the caller evaluates exactly these, so a kernel whose modules are
/// all current costs no dkms.conf parsing at all.
pub fn conf_queries(snap: &Snapshot, req: &Request) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    if let Scope::Preinst(kernel) = &req.scope {
        for m in &snap.modules {
            for v in m
                .versions
                .iter()
                .filter(|v| v.built.iter().any(|(k, _)| k == kernel))
            {
                out.push((m.name.clone(), v.version.clone(), kernel.clone()));
            }
        }
    }
    if snap.no_autoinstall {
        return out;
    }
    for k in target_kernels(snap, req)
        .into_iter()
        .filter(|k| k.has_headers)
    {
        for m in &snap.modules {
            if let Some(v) = newest(m) {
                if installed_version(m, &k.version, &snap.arch) != Some(v.version.as_str()) {
                    out.push((m.name.clone(), v.version.clone(), k.version.clone()));
                }
            }
        }
    }
    out
}

/// Plans the steps that bring the machine to the desired state for `req`.
pub fn plan(snap: &Snapshot, req: &Request) -> Plan {
    let mut plan = Plan::default();
    match &req.scope {
        Scope::All => {
            for k in snap.kernels.iter().filter(|k| !k.installed()) {
                purge_kernel(snap, &k.version, true, &mut plan.steps);
                if k.has_headers {
                    plan.headers_without_image.push(k.version.clone());
                }
            }
        }
        Scope::Prerm(kernel) => purge_kernel(snap, kernel, false, &mut plan.steps),
        Scope::Preinst(kernel) => purge_autoinstall(snap, kernel, &mut plan.steps),
        Scope::Kernel(kernel) => {
            if !snap
                .kernels
                .iter()
                .any(|k| &k.version == kernel && k.installed())
            {
                plan.kernel_not_installed = Some(kernel.clone());
            }
        }
    }
    if snap.no_autoinstall {
        plan.autoinstall_disabled = !matches!(req.scope, Scope::Prerm(_) | Scope::Preinst(_));
        return plan;
    }
    for k in target_kernels(snap, req) {
        plan_kernel(snap, req, k, &mut plan.steps);
    }
    plan
}

/// The kernels that should get every AUTOINSTALL module.
fn target_kernels<'a>(snap: &'a Snapshot, req: &Request) -> Vec<&'a Kernel> {
    snap.kernels
        .iter()
        .filter(|k| k.installed())
        .filter(|k| match &req.scope {
            Scope::All => true,
            Scope::Kernel(v) => &k.version == v,
            Scope::Prerm(_) | Scope::Preinst(_) => false,
        })
        .collect()
}

/// The newest version that can still be built (DKMS VER order).
fn newest(m: &Module) -> Option<&ModuleVersion> {
    m.versions
        .iter()
        .filter(|v| !v.broken)
        .max_by(|a, b| ver_cmp(&a.version, &b.version).then(a.version.cmp(&b.version)))
}

fn installed_version<'a>(m: &'a Module, kernel: &str, arch: &str) -> Option<&'a str> {
    m.installed
        .get(&(kernel.to_string(), arch.to_string()))
        .map(String::as_str)
}

/// Purge steps for every build and installation of `kernel`, in any arch.
fn purge_kernel(snap: &Snapshot, kernel: &str, gone: bool, steps: &mut Vec<Step>) {
    let mut any = false;
    for m in &snap.modules {
        let mut found: BTreeMap<(String, String), bool> = BTreeMap::new();
        for v in &m.versions {
            for (k, a) in &v.built {
                if k == kernel {
                    found.entry((v.version.clone(), a.clone())).or_insert(false);
                }
            }
        }
        for ((k, a), v) in &m.installed {
            if k == kernel {
                found.insert((v.clone(), a.clone()), true);
            }
        }
        for ((version, arch), installed) in found {
            any = true;
            steps.push(Step::Purge {
                module: m.name.clone(),
                version,
                kernel: kernel.to_string(),
                arch,
                installed,
            });
        }
    }
    if any {
        steps.push(Step::CleanKernel {
            kernel: kernel.to_string(),
            gone,
        });
    }
    if snap.initramfs_pending.contains(kernel) {
        steps.push(Step::ForgetInitramfs {
            kernel: kernel.to_string(),
        });
    }
}

/// `kernel_preinst`: purges the builds for `kernel` of the versions whose dkms.conf says
/// AUTOINSTALL (only those are rebuilt by `kernel_postinst`); a conf that cannot be read fails
/// that module and leaves its build in place.
fn purge_autoinstall(snap: &Snapshot, kernel: &str, steps: &mut Vec<Step>) {
    let mut all = Vec::new();
    purge_kernel(snap, kernel, false, &mut all);
    let conf = |module: &str, version: &str| {
        snap.modules
            .iter()
            .filter(|m| m.name == module)
            .flat_map(|m| &m.versions)
            .find(|v| v.version == version)
            .and_then(|v| v.conf.get(kernel))
    };
    let mut any = false;
    for step in all {
        match step {
            Step::Purge {
                ref module,
                ref version,
                ..
            } => match conf(module, version) {
                Some(Ok(facts)) if facts.autoinstall => {
                    any = true;
                    steps.push(step);
                }
                Some(Ok(_)) => {}
                Some(Err(reason)) => steps.push(Step::Fail {
                    module: module.clone(),
                    version: version.clone(),
                    kernel: kernel.to_string(),
                    reason: reason.clone(),
                }),
                None => steps.push(Step::Fail {
                    module: module.clone(),
                    version: version.clone(),
                    kernel: kernel.to_string(),
                    reason: "dkms.conf was not read".to_string(),
                }),
            },
            Step::CleanKernel { .. } if !any => {}
            other => steps.push(other),
        }
    }
}

/// A module that should be built and installed for the kernel being planned.
struct Candidate<'a> {
    version: &'a ModuleVersion,
    facts: &'a ConfFacts,
    installed: Option<&'a str>,
}

/// Steps for one installed kernel: every AUTOINSTALL module at its newest version, in
/// BUILD_DEPENDS order, then one depmod and at most one initramfs update.
fn plan_kernel(snap: &Snapshot, req: &Request, k: &Kernel, steps: &mut Vec<Step>) {
    let kernel = k.version.as_str();
    let arch = snap.arch.as_str();
    let pending = snap.initramfs_pending.contains(kernel);
    let kernel_hook = req.initramfs_by_kernel_hook.contains(kernel);
    let outdated: Vec<&Module> = snap
        .modules
        .iter()
        .filter(|m| match newest(m) {
            Some(v) => installed_version(m, kernel, arch) != Some(v.version.as_str()),
            None => !m.versions.is_empty(),
        })
        .collect();
    if !k.has_headers {
        if !outdated.is_empty() {
            steps.push(Step::NoHeaders {
                kernel: kernel.to_string(),
                package: format!("linux-headers-{kernel}"),
            });
        }
        if snap.depmod_pending.contains(kernel) {
            steps.push(Step::Depmod {
                kernel: kernel.to_string(),
            });
        }
        initramfs_steps(
            kernel,
            pending && !kernel_hook,
            pending && kernel_hook,
            steps,
        );
        return;
    }

    let mut candidates: BTreeMap<&str, Candidate> = BTreeMap::new();
    // Modules that count as present for dependents: installed, or skipped by BUILD_EXCLUSIVE.
    let mut satisfied: BTreeSet<&str> = snap
        .modules
        .iter()
        .filter(|m| installed_version(m, kernel, arch).is_some())
        .map(|m| m.name.as_str())
        .collect();
    let mut failed: BTreeMap<&str, (String, String)> = BTreeMap::new();
    for m in &outdated {
        let Some(v) = newest(m) else {
            let version = m.versions.last().map(|v| v.version.clone());
            steps.push(Step::Skip {
                module: m.name.clone(),
                version: version.unwrap_or_default(),
                kernel: kernel.to_string(),
                reason: SkipReason::Broken,
            });
            continue;
        };
        let skip = |reason| Step::Skip {
            module: m.name.clone(),
            version: v.version.clone(),
            kernel: kernel.to_string(),
            reason,
        };
        match v.conf.get(kernel) {
            None => {
                failed.insert(
                    &m.name,
                    (
                        v.version.clone(),
                        "dkms.conf was not read for this kernel".into(),
                    ),
                );
            }
            Some(Err(e)) => {
                failed.insert(&m.name, (v.version.clone(), e.clone()));
            }
            Some(Ok(f)) if !f.autoinstall => steps.push(skip(SkipReason::NoAutoinstall)),
            Some(Ok(f)) => {
                if let Some(why) = &f.excluded {
                    steps.push(skip(SkipReason::Exclusive(why.clone())));
                    satisfied.insert(&m.name);
                } else {
                    satisfied.remove(m.name.as_str());
                    candidates.insert(
                        &m.name,
                        Candidate {
                            version: v,
                            facts: f,
                            installed: installed_version(m, kernel, arch),
                        },
                    );
                }
            }
        }
    }

    let order = dependency_order(&candidates, &satisfied, &mut failed);
    let mut remake = pending && !kernel_hook;
    let mut installs = false;
    for name in &order {
        let c = &candidates[name];
        let needs: Vec<String> = c
            .facts
            .build_depends
            .iter()
            .filter(|d| candidates.contains_key(d.as_str()))
            .cloned()
            .collect();
        let version = c.version.version.clone();
        if !c
            .version
            .built
            .contains(&(kernel.to_string(), arch.to_string()))
        {
            steps.push(Step::Build {
                module: name.to_string(),
                version: version.clone(),
                kernel: kernel.to_string(),
                arch: arch.to_string(),
                needs: needs.clone(),
            });
        }
        steps.push(Step::Install {
            module: name.to_string(),
            version,
            kernel: kernel.to_string(),
            arch: arch.to_string(),
            replaces: c.installed.map(str::to_string),
            remake_initrd: c.facts.remake_initrd,
            needs,
        });
        installs = true;
        remake |= c.facts.remake_initrd && !kernel_hook;
    }
    for (name, (version, reason)) in failed {
        steps.push(Step::Fail {
            module: name.to_string(),
            version,
            kernel: kernel.to_string(),
            reason,
        });
    }
    if installs || snap.depmod_pending.contains(kernel) {
        steps.push(Step::Depmod {
            kernel: kernel.to_string(),
        });
    }
    initramfs_steps(kernel, remake, pending && kernel_hook, steps);
}

fn initramfs_steps(kernel: &str, update: bool, forget: bool, steps: &mut Vec<Step>) {
    let kernel = kernel.to_string();
    if update {
        steps.push(Step::UpdateInitramfs { kernel });
    } else if forget {
        steps.push(Step::ForgetInitramfs { kernel });
    }
}

/// Orders candidates so that every module comes after the candidates it BUILD_DEPENDS on
/// (ties by name). A dependency that is neither a candidate nor satisfied, a cycle, or a
/// dependency on a failed module moves the module to `failed` with the reason.
fn dependency_order<'a>(
    candidates: &BTreeMap<&'a str, Candidate<'a>>,
    satisfied: &BTreeSet<&str>,
    failed: &mut BTreeMap<&'a str, (String, String)>,
) -> Vec<&'a str> {
    let mut waiting: BTreeMap<&'a str, BTreeSet<&'a str>> = BTreeMap::new();
    for (&name, c) in candidates {
        let missing: Vec<&str> = c
            .facts
            .build_depends
            .iter()
            .map(String::as_str)
            .filter(|d| {
                !satisfied.contains(d) && !candidates.contains_key(d) && !failed.contains_key(d)
            })
            .collect();
        if !missing.is_empty() {
            failed.insert(
                name,
                (
                    c.version.version.clone(),
                    format!("missing dependencies: {}", missing.join(" ")),
                ),
            );
            continue;
        }
        let deps = c
            .facts
            .build_depends
            .iter()
            .map(String::as_str)
            .filter(|d| candidates.contains_key(d) || failed.contains_key(d))
            .collect();
        waiting.insert(name, deps);
    }
    let mut order = Vec::new();
    loop {
        let ready = waiting
            .iter()
            .find(|(_, deps)| deps.is_empty())
            .map(|(n, _)| *n);
        if let Some(name) = ready {
            waiting.remove(name);
            for deps in waiting.values_mut() {
                deps.remove(name);
            }
            order.push(name);
            continue;
        }
        // No module is ready: those depending on a failed module fail first, then cycles.
        let blocked = waiting.iter().find_map(|(n, deps)| {
            deps.iter()
                .find(|d| failed.contains_key(**d))
                .map(|d| (*n, d.to_string()))
        });
        if let Some((name, dep)) = blocked {
            waiting.remove(name);
            failed.insert(
                name,
                (
                    candidates[name].version.version.clone(),
                    format!("dependency {dep} failed"),
                ),
            );
            continue;
        }
        let Some((&first, _)) = waiting.iter().next() else {
            break;
        };
        let cycle = find_cycle(first, &waiting);
        for name in &cycle {
            waiting.remove(name);
        }
        let text = cycle
            .iter()
            .chain(cycle.first())
            .copied()
            .collect::<Vec<_>>()
            .join(" -> ");
        for name in cycle {
            failed.insert(
                name,
                (
                    candidates[name].version.version.clone(),
                    format!("circular BUILD_DEPENDS: {text}"),
                ),
            );
        }
    }
    order
}

/// Follows unresolved dependencies from `start` until a module repeats; returns that cycle.
fn find_cycle<'a>(start: &'a str, waiting: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Vec<&'a str> {
    let mut path: Vec<&'a str> = vec![start];
    loop {
        let last = path[path.len() - 1];
        let next = waiting[last]
            .iter()
            .find(|d| waiting.contains_key(*d))
            .copied();
        let Some(next) = next else {
            return vec![start];
        };
        if let Some(pos) = path.iter().position(|p| *p == next) {
            return path.split_off(pos);
        }
        path.push(next);
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Exclusive(why) => write!(f, "BUILD_EXCLUSIVE does not match ({why})"),
            SkipReason::NoAutoinstall => write!(f, "AUTOINSTALL is not set"),
            SkipReason::Broken => write!(f, "its source is missing"),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Purge {
                module,
                version,
                kernel,
                arch,
                installed,
            } => write!(
                f,
                "purge      {module}/{version} for {kernel} ({arch}){}",
                if *installed {
                    ", installed files too"
                } else {
                    ""
                }
            ),
            Step::CleanKernel { kernel, gone } => write!(
                f,
                "clean      {kernel}: empty dkms directories{}",
                if *gone { " and stale depmod files" } else { "" }
            ),
            Step::Build {
                module,
                version,
                kernel,
                arch,
                ..
            } => write!(f, "build      {module}/{version} for {kernel} ({arch})"),
            Step::Install {
                module,
                version,
                kernel,
                arch,
                replaces,
                remake_initrd,
                ..
            } => {
                write!(f, "install    {module}/{version} for {kernel} ({arch})")?;
                if let Some(old) = replaces {
                    write!(f, ", replacing {old}")?;
                }
                if *remake_initrd {
                    write!(f, " [REMAKE_INITRD]")?;
                }
                Ok(())
            }
            Step::Skip {
                module,
                version,
                kernel,
                reason,
            } => write!(f, "skip       {module}/{version} for {kernel}: {reason}"),
            Step::Fail {
                module,
                version,
                kernel,
                reason,
            } => write!(f, "fail       {module}/{version} for {kernel}: {reason}"),
            Step::NoHeaders { kernel, package } => write!(
                f,
                "no-headers {kernel}: kernel headers are missing; install {package}"
            ),
            Step::Depmod { kernel } => write!(f, "depmod     {kernel}"),
            Step::UpdateInitramfs { kernel } => write!(f, "initramfs  {kernel}"),
            Step::ForgetInitramfs { kernel } => {
                write!(f, "forget     pending initramfs update of {kernel}")
            }
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.autoinstall_disabled {
            writeln!(
                f,
                "Automatic installation of modules has been disabled (/etc/dkms/no-autoinstall)."
            )?;
        }
        if let Some(k) = &self.kernel_not_installed {
            writeln!(
                f,
                "Kernel {k} is not installed (no /boot/vmlinuz-{k}, no /lib/modules/{k}/kernel); nothing to build for it."
            )?;
        }
        for k in &self.headers_without_image {
            writeln!(
                f,
                "Kernel {k} has headers but is not installed (no /boot/vmlinuz-{k}, no /lib/modules/{k}/kernel); nothing is built for it until its image is installed."
            )?;
        }
        if self.steps.is_empty() {
            return writeln!(f, "Nothing to do.");
        }
        for s in &self.steps {
            writeln!(f, "{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARCH: &str = "x86_64";
    const K1: &str = "6.1.0-1-amd64";
    const K2: &str = "6.1.0-2-amd64";
    const K3: &str = "6.1.0-3-amd64";

    fn kernel(version: &str, installed: bool, headers: bool) -> Kernel {
        Kernel {
            version: version.into(),
            has_image: installed,
            has_modules: installed,
            has_headers: headers,
        }
    }

    fn snapshot(kernels: Vec<Kernel>) -> Snapshot {
        Snapshot {
            arch: ARCH.into(),
            kernels,
            ..Snapshot::default()
        }
    }

    fn add(snap: &mut Snapshot, name: &str, versions: &[&str]) {
        snap.modules.push(Module {
            name: name.into(),
            versions: versions
                .iter()
                .map(|v| ModuleVersion {
                    version: v.to_string(),
                    ..ModuleVersion::default()
                })
                .collect(),
            installed: BTreeMap::new(),
        });
    }

    fn module<'a>(snap: &'a mut Snapshot, name: &str) -> &'a mut Module {
        snap.modules.iter_mut().find(|m| m.name == name).unwrap()
    }

    fn built(snap: &mut Snapshot, name: &str, version: &str, kernel: &str, arch: &str) {
        let m = module(snap, name);
        let v = m
            .versions
            .iter_mut()
            .find(|v| v.version == version)
            .unwrap();
        v.built.insert((kernel.into(), arch.into()));
    }

    fn installed(snap: &mut Snapshot, name: &str, version: &str, kernel: &str) {
        built(snap, name, version, kernel, ARCH);
        module(snap, name)
            .installed
            .insert((kernel.into(), ARCH.into()), version.into());
    }

    fn auto() -> ConfFacts {
        ConfFacts {
            autoinstall: true,
            ..ConfFacts::default()
        }
    }

    fn deps(names: &[&str]) -> ConfFacts {
        ConfFacts {
            build_depends: names.iter().map(|s| s.to_string()).collect(),
            ..auto()
        }
    }

    /// Plans the way the executor does: answer exactly the conf queries, then plan.
    fn run(
        snap: &mut Snapshot,
        req: &Request,
        conf: impl Fn(&str, &str, &str) -> Result<ConfFacts, String>,
    ) -> Plan {
        for (m, v, k) in conf_queries(snap, req) {
            let facts = conf(&m, &v, &k);
            let mv = module(snap, &m);
            let ver = mv.versions.iter_mut().find(|x| x.version == v).unwrap();
            ver.conf.insert(k, facts);
        }
        let p = plan(snap, req);
        for s in &p.steps {
            if let Step::Fail { reason, .. } = s {
                assert!(!reason.contains("was not read"), "query missed: {s}");
            }
        }
        p
    }

    fn all() -> Request {
        Request::new(Scope::All)
    }

    fn lines(p: &Plan) -> Vec<String> {
        p.steps.iter().map(|s| s.to_string()).collect()
    }

    fn count(p: &Plan, pred: impl Fn(&Step) -> bool) -> usize {
        p.steps.iter().filter(|s| pred(s)).count()
    }

    fn position(p: &Plan, pred: impl Fn(&Step) -> bool) -> usize {
        p.steps.iter().position(pred).expect("step present")
    }

    fn installs(p: &Plan, kernel: &str) -> Vec<String> {
        p.steps
            .iter()
            .filter_map(|s| match s {
                Step::Install {
                    module, kernel: k, ..
                } if k == kernel => Some(module.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn new_kernel_gets_every_autoinstall_module_and_current_kernels_cost_nothing() {
        let mut s = snapshot(vec![kernel(K1, true, true), kernel(K2, true, true)]);
        add(&mut s, "alpha", &["1.0"]);
        add(&mut s, "beta", &["2.0"]);
        installed(&mut s, "alpha", "1.0", K1);
        installed(&mut s, "beta", "2.0", K1);
        let queries = conf_queries(&s, &all());
        assert!(queries.iter().all(|(_, _, k)| k == K2), "{queries:?}");
        assert_eq!(queries.len(), 2);
        let p = run(&mut s, &all(), |_, _, _| Ok(auto()));
        assert_eq!(
            lines(&p),
            [
                format!("build      alpha/1.0 for {K2} (x86_64)"),
                format!("install    alpha/1.0 for {K2} (x86_64)"),
                format!("build      beta/2.0 for {K2} (x86_64)"),
                format!("install    beta/2.0 for {K2} (x86_64)"),
                format!("depmod     {K2}"),
            ]
        );
    }

    #[test]
    fn everything_current_is_a_noop_plan() {
        let mut s = snapshot(vec![kernel(K1, true, true)]);
        add(&mut s, "alpha", &["1.0"]);
        installed(&mut s, "alpha", "1.0", K1);
        let p = run(&mut s, &all(), |_, _, _| panic!("no conf needed"));
        assert!(p.steps.is_empty() && p.is_noop());
        assert_eq!(p.to_string(), "Nothing to do.\n");
    }

    #[test]
    fn removed_kernel_is_purged_without_depmod_and_module_stays_registered() {
        let mut s = snapshot(vec![kernel(K1, false, true), kernel(K2, true, true)]);
        add(&mut s, "alpha", &["1.0", "1.1"]);
        installed(&mut s, "alpha", "1.1", K1);
        built(&mut s, "alpha", "1.0", K1, "i686");
        installed(&mut s, "alpha", "1.1", K2);
        let p = run(&mut s, &all(), |_, _, _| Ok(auto()));
        assert_eq!(
            p.steps,
            vec![
                Step::Purge {
                    module: "alpha".into(),
                    version: "1.0".into(),
                    kernel: K1.into(),
                    arch: "i686".into(),
                    installed: false
                },
                Step::Purge {
                    module: "alpha".into(),
                    version: "1.1".into(),
                    kernel: K1.into(),
                    arch: ARCH.into(),
                    installed: true
                },
                Step::CleanKernel {
                    kernel: K1.into(),
                    gone: true
                },
            ]
        );
    }

    #[test]
    fn headers_arriving_after_the_image_trigger_the_build() {
        let mut s = snapshot(vec![kernel(K1, true, false)]);
        add(&mut s, "alpha", &["1.0"]);
        add(&mut s, "beta", &["1.0"]);
        let before = run(&mut s, &all(), |_, _, _| Ok(auto()));
        assert_eq!(
            before.steps,
            vec![Step::NoHeaders {
                kernel: K1.into(),
                package: format!("linux-headers-{K1}")
            }]
        );
        assert!(before.is_noop());
        s.kernels[0].has_headers = true;
        let after = run(&mut s, &all(), |_, _, _| Ok(auto()));
        assert_eq!(installs(&after, K1), ["alpha", "beta"]);
        assert_eq!(count(&after, |s| matches!(s, Step::Build { .. })), 2);
    }

    #[test]
    fn missing_headers_are_reported_once_per_kernel_and_only_when_something_is_missing() {
        let mut s = snapshot(vec![kernel(K1, true, false), kernel(K2, true, false)]);
        add(&mut s, "alpha", &["1.0"]);
        add(&mut s, "beta", &["1.0"]);
        installed(&mut s, "alpha", "1.0", K2);
        installed(&mut s, "beta", "1.0", K2);
        let p = run(&mut s, &all(), |_, _, _| panic!("no headers, no conf"));
        assert_eq!(
            p.steps,
            vec![Step::NoHeaders {
                kernel: K1.into(),
                package: format!("linux-headers-{K1}")
            }]
        );
    }

    #[test]
    fn module_package_upgrade_replaces_the_old_version_on_every_kernel() {
        let mut s = snapshot(vec![kernel(K1, true, true), kernel(K2, true, true)]);
        add(&mut s, "alpha", &["1.9", "1.10"]);
        installed(&mut s, "alpha", "1.9", K1);
        installed(&mut s, "alpha", "1.9", K2);
        let p = run(&mut s, &all(), |_, v, _| {
            assert_eq!(v, "1.10", "VER order: 1.10 is newer than 1.9");
            Ok(auto())
        });
        for k in [K1, K2] {
            assert!(p.steps.contains(&Step::Install {
                module: "alpha".into(),
                version: "1.10".into(),
                kernel: k.into(),
                arch: ARCH.into(),
                replaces: Some("1.9".into()),
                remake_initrd: false,
                needs: vec![],
            }));
            assert_eq!(
                count(&p, |s| matches!(s, Step::Depmod { kernel } if kernel == k)),
                1
            );
        }
    }

    #[test]
    fn built_but_not_installed_is_only_installed() {
        let mut s = snapshot(vec![kernel(K1, true, true)]);
        add(&mut s, "alpha", &["1.0"]);
        built(&mut s, "alpha", "1.0", K1, ARCH);
        let p = run(&mut s, &all(), |_, _, _| Ok(auto()));
        assert_eq!(count(&p, |s| matches!(s, Step::Build { .. })), 0);
        assert_eq!(installs(&p, K1), ["alpha"]);
    }

    #[test]
    fn remake_initrd_updates_each_changed_kernel_once_after_all_its_modules() {
        let mut s = snapshot(vec![
            kernel(K1, true, true),
            kernel(K2, true, true),
            kernel(K3, true, true),
        ]);
        for m in ["zfs", "spl", "plain"] {
            add(&mut s, m, &["1.0"]);
        }
        // K2 already has both boot-critical modules; only `plain` changes there.
        installed(&mut s, "zfs", "1.0", K2);
        installed(&mut s, "spl", "1.0", K2);
        // K3 gets the modules from its own kernel hook, which regenerates the initramfs.
        let mut req = all();
        req.initramfs_by_kernel_hook.insert(K3.into());
        let p = run(&mut s, &req, |m, _, _| {
            Ok(ConfFacts {
                remake_initrd: m != "plain",
                ..auto()
            })
        });
        let initramfs = |k: &str| {
            count(
                &p,
                |s| matches!(s, Step::UpdateInitramfs { kernel } if kernel == k),
            )
        };
        assert_eq!(initramfs(K1), 1);
        assert_eq!(initramfs(K2), 0, "no REMAKE_INITRD module changed on K2");
        assert_eq!(initramfs(K3), 0, "the kernel's own hook runs after ours");
        let last_install = p
            .steps
            .iter()
            .rposition(|s| matches!(s, Step::Install { kernel, .. } if kernel == K1))
            .unwrap();
        let depmod = position(&p, |s| matches!(s, Step::Depmod { kernel } if kernel == K1));
        let update = position(
            &p,
            |s| matches!(s, Step::UpdateInitramfs { kernel } if kernel == K1),
        );
        assert!(last_install < depmod && depmod < update);
    }

    #[test]
    fn interrupted_initramfs_update_is_finished_or_forgotten() {
        let mut s = snapshot(vec![
            kernel(K1, false, false),
            kernel(K2, true, true),
            kernel(K3, true, true),
        ]);
        s.initramfs_pending = [K1, K2, K3].iter().map(|k| k.to_string()).collect();
        let mut req = all();
        req.initramfs_by_kernel_hook.insert(K3.into());
        let p = run(&mut s, &req, |_, _, _| Ok(auto()));
        assert_eq!(
            p.steps,
            vec![
                Step::ForgetInitramfs { kernel: K1.into() },
                Step::UpdateInitramfs { kernel: K2.into() },
                Step::ForgetInitramfs { kernel: K3.into() },
            ]
        );
    }

    #[test]
    fn build_depends_order_is_topological_not_alphabetical() {
        let mut s = snapshot(vec![kernel(K1, true, true)]);
        for m in ["aa", "bb", "cc", "dd"] {
            add(&mut s, m, &["1"]);
        }
        // aa needs bb, bb needs cc; dd is independent.
        let p = run(&mut s, &all(), |m, _, _| {
            Ok(match m {
                "aa" => deps(&["bb"]),
                "bb" => deps(&["cc"]),
                _ => auto(),
            })
        });
        assert_eq!(installs(&p, K1), ["cc", "bb", "aa", "dd"]);
        let needs_of = |name: &str| {
            p.steps.iter().find_map(|s| match s {
                Step::Build { module, needs, .. } if module == name => Some(needs.clone()),
                _ => None,
            })
        };
        assert_eq!(needs_of("aa"), Some(vec!["bb".to_string()]));
        assert_eq!(needs_of("cc"), Some(vec![]));
    }

    #[test]
    fn installed_dependency_is_satisfied_without_a_step() {
        let mut s = snapshot(vec![kernel(K1, true, true)]);
        add(&mut s, "base", &["1"]);
        add(&mut s, "top", &["1"]);
        installed(&mut s, "base", "1", K1);
        let p = run(&mut s, &all(), |_, _, _| Ok(deps(&["base"])));
        assert_eq!(installs(&p, K1), ["top"]);
        assert_eq!(count(&p, |s| matches!(s, Step::Fail { .. })), 0);
    }

    #[test]
    fn cycles_fail_with_a_clear_reason_and_block_only_their_dependents() {
        let mut s = snapshot(vec![kernel(K1, true, true)]);
        for m in ["xx", "yy", "zz", "ww", "self"] {
            add(&mut s, m, &["1"]);
        }
        let p = run(&mut s, &all(), |m, _, _| {
            Ok(match m {
                "xx" => deps(&["yy"]),
                "yy" => deps(&["xx"]),
                "zz" => deps(&["xx"]),
                "self" => deps(&["self"]),
                _ => auto(),
            })
        });
        assert_eq!(installs(&p, K1), ["ww"]);
        let reason = |name: &str| {
            p.steps
                .iter()
                .find_map(|s| match s {
                    Step::Fail { module, reason, .. } if module == name => Some(reason.clone()),
                    _ => None,
                })
                .unwrap()
        };
        assert_eq!(reason("xx"), "circular BUILD_DEPENDS: xx -> yy -> xx");
        assert_eq!(reason("yy"), "circular BUILD_DEPENDS: xx -> yy -> xx");
        assert_eq!(reason("zz"), "dependency xx failed");
        assert_eq!(reason("self"), "circular BUILD_DEPENDS: self -> self");
    }

    #[test]
    fn exclusive_skip_is_not_a_failure_and_satisfies_dependents() {
        let mut s = snapshot(vec![kernel(K1, true, true)]);
        add(&mut s, "arm-only", &["1"]);
        add(&mut s, "user", &["1"]);
        let p = run(&mut s, &all(), |m, _, _| {
            Ok(match m {
                "arm-only" => ConfFacts {
                    excluded: Some("BUILD_EXCLUSIVE_ARCH=aarch64".into()),
                    ..auto()
                },
                _ => deps(&["arm-only"]),
            })
        });
        assert!(p.steps.contains(&Step::Skip {
            module: "arm-only".into(),
            version: "1".into(),
            kernel: K1.into(),
            reason: SkipReason::Exclusive("BUILD_EXCLUSIVE_ARCH=aarch64".into()),
        }));
        assert_eq!(installs(&p, K1), ["user"]);
        assert_eq!(count(&p, |s| matches!(s, Step::Fail { .. })), 0);
    }

    #[test]
    fn no_autoinstall_module_is_skipped_and_its_dependents_fail() {
        let mut s = snapshot(vec![kernel(K1, true, true)]);
        add(&mut s, "manual", &["1"]);
        add(&mut s, "user", &["1"]);
        add(&mut s, "orphan", &["1"]);
        let p = run(&mut s, &all(), |m, _, _| {
            Ok(match m {
                "manual" => ConfFacts::default(),
                "user" => deps(&["manual"]),
                _ => deps(&["not-registered"]),
            })
        });
        assert!(p.steps.contains(&Step::Skip {
            module: "manual".into(),
            version: "1".into(),
            kernel: K1.into(),
            reason: SkipReason::NoAutoinstall,
        }));
        assert!(p.steps.contains(&Step::Fail {
            module: "user".into(),
            version: "1".into(),
            kernel: K1.into(),
            reason: "missing dependencies: manual".into(),
        }));
        assert!(p.steps.contains(&Step::Fail {
            module: "orphan".into(),
            version: "1".into(),
            kernel: K1.into(),
            reason: "missing dependencies: not-registered".into(),
        }));
        assert!(installs(&p, K1).is_empty());
        assert_eq!(count(&p, |s| matches!(s, Step::Depmod { .. })), 0);
    }

    #[test]
    fn no_autoinstall_file_stops_builds_but_not_purges() {
        let mut s = snapshot(vec![kernel(K1, false, false), kernel(K2, true, true)]);
        add(&mut s, "alpha", &["1"]);
        installed(&mut s, "alpha", "1", K1);
        s.no_autoinstall = true;
        assert!(conf_queries(&s, &all()).is_empty());
        let p = run(&mut s, &all(), |_, _, _| panic!("disabled"));
        assert!(p.autoinstall_disabled);
        assert_eq!(installs(&p, K2), Vec::<String>::new());
        assert_eq!(count(&p, |s| matches!(s, Step::Purge { .. })), 1);
        assert!(p.to_string().starts_with("Automatic installation"));
    }

    #[test]
    fn unreadable_conf_fails_the_module_and_its_dependents_only() {
        let mut s = snapshot(vec![kernel(K1, true, true)]);
        add(&mut s, "bad", &["1"]);
        add(&mut s, "needs-bad", &["1"]);
        add(&mut s, "fine", &["1"]);
        let p = run(&mut s, &all(), |m, _, _| match m {
            "bad" => Err("dkms.conf: PACKAGE_NAME: missing".into()),
            "needs-bad" => Ok(deps(&["bad"])),
            _ => Ok(auto()),
        });
        assert_eq!(installs(&p, K1), ["fine"]);
        assert!(lines(&p).contains(&format!(
            "fail       needs-bad/1 for {K1}: dependency bad failed"
        )));
        assert!(lines(&p).contains(&format!(
            "fail       bad/1 for {K1}: dkms.conf: PACKAGE_NAME: missing"
        )));
    }

    #[test]
    fn broken_newest_version_falls_back_to_the_newest_buildable_one() {
        let mut s = snapshot(vec![kernel(K1, true, true)]);
        add(&mut s, "alpha", &["1", "2"]);
        module(&mut s, "alpha").versions[1].broken = true;
        add(&mut s, "gone", &["1"]);
        module(&mut s, "gone").versions[0].broken = true;
        let p = run(&mut s, &all(), |_, v, _| {
            assert_eq!(v, "1");
            Ok(auto())
        });
        assert_eq!(installs(&p, K1), ["alpha"]);
        assert!(p.steps.contains(&Step::Skip {
            module: "gone".into(),
            version: "1".into(),
            kernel: K1.into(),
            reason: SkipReason::Broken,
        }));
    }

    #[test]
    fn kernel_scope_touches_only_that_kernel() {
        let mut s = snapshot(vec![
            kernel(K1, false, true),
            kernel(K2, true, true),
            kernel(K3, true, true),
        ]);
        add(&mut s, "alpha", &["1"]);
        installed(&mut s, "alpha", "1", K1);
        let req = Request::new(Scope::Kernel(K3.into()));
        let p = run(&mut s, &req, |_, _, _| Ok(auto()));
        assert!(p
            .steps
            .iter()
            .all(|s| !matches!(s, Step::Purge { .. }) && !s.to_string().contains(K2)));
        assert_eq!(installs(&p, K3), ["alpha"]);
        let p = run(
            &mut s,
            &Request::new(Scope::Kernel("9.9.9".into())),
            |_, _, _| Ok(auto()),
        );
        assert_eq!(p.kernel_not_installed.as_deref(), Some("9.9.9"));
        assert!(p.steps.is_empty());
    }

    #[test]
    fn prerm_unbuilds_every_build_of_that_kernel_without_depmod() {
        let mut s = snapshot(vec![kernel(K1, true, true), kernel(K2, true, true)]);
        add(&mut s, "alpha", &["1"]);
        add(&mut s, "manual", &["3"]);
        installed(&mut s, "alpha", "1", K1);
        installed(&mut s, "alpha", "1", K2);
        built(&mut s, "manual", "3", K1, ARCH);
        s.initramfs_pending.insert(K1.into());
        let req = Request::new(Scope::Prerm(K1.into()));
        assert!(conf_queries(&s, &req).is_empty());
        let p = run(&mut s, &req, |_, _, _| panic!("prerm reads no dkms.conf"));
        assert_eq!(
            lines(&p),
            [
                format!("purge      alpha/1 for {K1} (x86_64), installed files too"),
                format!("purge      manual/3 for {K1} (x86_64)"),
                format!("clean      {K1}: empty dkms directories"),
                format!("forget     pending initramfs update of {K1}"),
            ]
        );
    }

    #[test]
    fn plan_serialises_with_a_step_tag() {
        let p = Plan {
            steps: vec![Step::Skip {
                module: "m".into(),
                version: "1".into(),
                kernel: K1.into(),
                reason: SkipReason::Exclusive("arch".into()),
            }],
            ..Plan::default()
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["steps"][0]["step"], "skip");
        assert_eq!(v["steps"][0]["reason"]["kind"], "exclusive");
        assert_eq!(v["steps"][0]["reason"]["detail"], "arch");
    }
}
