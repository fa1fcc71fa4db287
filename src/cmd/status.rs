//! `rdkms status`: what is added, built and installed, printed byte for byte as DKMS 3.2.2
//! prints it (scripts parse these lines), plus `--json` and the pre-2.8.6 format.
//!
//! How each line is decided, following DKMS 3.2.2's `module_status`/`is_module_built`/
//! `module_status_built_extra`:
//! - module versions come from `<tree>/M/V` in glob order, kernels from
//!   `<tree>/M/V/+([0-9]).*/A` (or the `-k`/`-a` words), see `tree::TreeSnapshot`;
//! - a kernel is "built" when `module/` exists (3.0.10 also wanted every DEST_MODULE_NAME of
//!   the dkms.conf in it: `.ko`, or `.ko` plus the kernel's compression suffix taken from its
//!   `modules.dep`; a missing one is now a suffix), "installed" when `kernel-K-A` also
//!   resolves to it; a version with no such kernel prints `M/V: added`;
//! - suffixes (DKMS 3.2.2's texts; `--format legacy` keeps 3.0.10's, in brackets):
//!   ` (Original modules exist)` (` (original_module exists)`) when
//!   `<tree>/M/original_module/K/A` exists, then for the first module with a problem
//!   ` (Built modules are missing in the kernel modules folder)` (` (WARNING! Missing some
//!   built modules!)`) or, when installed, ` (Differences between built and installed
//!   modules)` (` (WARNING! Diff between built and installed module!)`) if the installed copy
//!   is absent or differs; 3.0.10 named every module's problem.
//!
//! Deliberate deviations (each where DKMS is accidental, slow or broken):
//! - dkms.conf is never sourced: it is read with the static evaluator only. When that cannot
//!   read it (the file needs a shell, is invalid, or the source link dangles) the module names
//!   are taken from the files in `module/`, so such a build counts as complete. DKMS would
//!   instead abort the whole listing with "Could not locate dkms.conf" / "Bad conf file"
//!   (rdkms prints a warning on stderr and goes on).
//! - Where DKMS runs `modinfo` to choose between two possible install locations, rdkms takes
//!   the first location holding the file (same answer unless a module is installed in both
//!   places with different `version:` fields); files are compared by size, then bytes.
//! - Order is byte order (DKMS sorts its globs with the caller's LC_COLLATE; identical under
//!   C/POSIX/C.UTF-8, which is what root shells, dpkg and CI use).
//! - `modules.dep` is read from the install tree (DKMS reads `/lib/modules` even with
//!   `--installtree`).
//!
//! Addition: modules installed by binary module packages (`rdkms mkbmdeb` output, installed
//! with dpkg) get a line each after all of DKMS's lines, `NAME/VERSION, KVER, ARCH: installed
//! (binary package NAME-modules-KVER)` (dpkg's state word in place of `installed` while a
//! package is half set up), state `installed-package` with the package in `--json`. A tree
//! without such packages lists exactly as DKMS does; dpkg's status file is read only when it
//! exists under the root, and only its `*-dkms-bin` paragraphs are parsed.
//!
//! Also: `-c FILE` and `--directive` are ignored (DKMS echoes directives into status output).
//!   Names are printed as they are (DKMS's `read` drops backslashes and edge blanks).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::base::error::{Error, Result};
use crate::cmd::cli::Invocation;
use crate::conf::{self, EvalMode, LoadRequest, ModuleEntry, Target};
use crate::package::deb;
use crate::state::dpkg;
use crate::state::tree::{Pattern, Selection, Source, Tree, TreeBuild, TreeSnapshot, TreeVersion};
use crate::system::config::Paths;
use crate::system::console::Console;
use crate::system::host;

/// What one status line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// DKMS 3.2.2: the sources are gone (see `broken`); its builds are not listed.
    Broken,
    Added,
    Built,
    Installed,
    /// Provided by an installed binary module package (`mkbmdeb`), not by the dkms tree.
    #[serde(rename = "installed-package")]
    InstalledPackage,
}

impl State {
    fn word(self) -> &'static str {
        match self {
            State::Broken => "broken",
            State::Added => "added",
            State::Built => "built",
            State::Installed | State::InstalledPackage => "installed",
        }
    }
}

/// The binary module package a line is about, as dpkg records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageRef {
    /// `NAME-modules-KVER`.
    pub package: String,
    /// dpkg's state word (`installed`, `unpacked`, `half-configured`, ...).
    pub dpkg_state: String,
}

/// A condition DKMS appends to a built/installed line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningCode {
    OriginalModuleExists,
    MissingBuiltModule,
    DiffBuiltInstalled,
}

impl WarningCode {
    /// DKMS 3.2.2's suffix text (`dkms status`).
    pub fn suffix(self) -> &'static str {
        match self {
            WarningCode::OriginalModuleExists => " (Original modules exist)",
            WarningCode::MissingBuiltModule => {
                " (Built modules are missing in the kernel modules folder)"
            }
            WarningCode::DiffBuiltInstalled => " (Differences between built and installed modules)",
        }
    }

    /// DKMS 3.0.10's text, kept for `--format legacy` (the older scripts' format).
    pub fn legacy_suffix(self) -> &'static str {
        match self {
            WarningCode::OriginalModuleExists => " (original_module exists)",
            WarningCode::MissingBuiltModule => " (WARNING! Missing some built modules!)",
            WarningCode::DiffBuiltInstalled => {
                " (WARNING! Diff between built and installed module!)"
            }
        }
    }
}

/// One suffix, with the module (DEST_MODULE_NAME) it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub code: WarningCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// One status line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusEntry {
    pub name: String,
    pub version: String,
    pub kernel: Option<String>,
    pub arch: Option<String>,
    pub state: State,
    /// The `source` link dangles (upstream DKMS calls this "broken").
    pub source_missing: bool,
    /// The module files in the dkms tree.
    pub built_files: Vec<PathBuf>,
    /// The installed copies that were found (installed state only).
    pub installed_files: Vec<PathBuf>,
    pub warnings: Vec<Warning>,
    /// Set on the lines of binary module packages (after DKMS's lines).
    #[serde(flatten)]
    pub package: Option<PackageRef>,
}

/// What to list: DKMS's `status [M[/V]] [-k K[/A]]... [-a A]`.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub module: Option<String>,
    pub version: Option<String>,
    /// One listing per `-k` (in order), or one with no kernel.
    pub targets: Vec<(Option<String>, Option<String>)>,
    /// `--kernelsourcedir`, for `$kernel_source_dir` in dkms.conf.
    pub kernel_source_dir: Option<PathBuf>,
}

impl Query {
    /// The query a command line asks for.
    pub fn from_invocation(inv: &Invocation) -> Query {
        let targets = if inv.kernels.is_empty() {
            vec![(None, inv.cli.archs.first().cloned())]
        } else {
            inv.kernels
                .iter()
                .map(|k| (Some(k.kernel.clone()), k.arch.clone()))
                .collect()
        };
        Query {
            module: inv.module.clone(),
            version: inv.version.clone(),
            targets,
            kernel_source_dir: inv.cli.kernel_source_dir.clone(),
        }
    }
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `M/V, K, A: installed` (DKMS ≥ 2.8.6).
    Dkms,
    /// `M, V, K, A: installed` (DKMS < 2.8.6).
    Legacy,
    Json,
}

impl Format {
    fn from_invocation(inv: &Invocation) -> Result<Format> {
        match (inv.cli.json, inv.cli.format.as_deref()) {
            (false, None | Some("dkms")) => Ok(Format::Dkms),
            (false, Some("legacy")) => Ok(Format::Legacy),
            (true, None | Some("json")) => Ok(Format::Json),
            (false, Some("json")) => Ok(Format::Json),
            (_, Some(other)) => Err(Error::Usage(format!(
                "--format {other}: use --format dkms, --format legacy or --json (not both)"
            ))),
        }
    }
}

/// Runs `status`. Always exits 0, like DKMS, even when nothing matches. Takes no lock.
pub fn run(inv: &Invocation) -> Result<i32> {
    let format = Format::from_invocation(inv)?;
    let paths = crate::cmd::cli::paths(&inv.cli);
    let entries = collect(&paths, &Query::from_invocation(inv));
    if inv.cli.quiet {
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    // DKMS prints its error about a broken version on stderr right after that version's line.
    let mut written = Ok(());
    if entries.is_empty() {
        written = out
            .write_all(render(&entries, format).as_bytes())
            .and_then(|_| out.flush());
    }
    let mut rest = entries.as_slice();
    while written.is_ok() && !rest.is_empty() {
        let cut = rest
            .iter()
            .position(|e| e.state == State::Broken && format != Format::Json)
            .map_or(rest.len(), |i| i + 1);
        let (now, later) = rest.split_at(cut);
        written = out
            .write_all(render(now, format).as_bytes())
            .and_then(|_| out.flush());
        if let Some(b) = now.last().filter(|e| e.state == State::Broken) {
            if format != Format::Json {
                eprintln!(
                    "\nError! {}",
                    crate::state::broken::status_text(&b.name, &b.version)
                );
            }
        }
        rest = later;
    }
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::io("write", "standard output", e))
        }
        _ => Ok(0),
    }
}

/// Renders entries in one format.
pub fn render(entries: &[StatusEntry], format: Format) -> String {
    if format == Format::Json {
        let mut s = serde_json::to_string_pretty(entries).unwrap_or_else(|_| "[]".into());
        s.push('\n');
        return s;
    }
    let sep = if format == Format::Legacy { ", " } else { "/" };
    let mut s = String::new();
    for e in entries {
        s.push_str(&e.name);
        s.push_str(sep);
        s.push_str(&e.version);
        if let (Some(k), Some(a)) = (&e.kernel, &e.arch) {
            s.push_str(&format!(", {k}, {a}"));
        }
        s.push_str(": ");
        match &e.package {
            Some(p) => s.push_str(&format!("{} (binary package {})", p.dpkg_state, p.package)),
            None => s.push_str(e.state.word()),
        }
        // DKMS 3.2.2 names at most one problem of the modules (the first); 3.0.10 named each.
        let mut named = false;
        for w in &e.warnings {
            if format == Format::Legacy {
                s.push_str(w.code.legacy_suffix());
                continue;
            }
            if w.code != WarningCode::OriginalModuleExists {
                if named {
                    continue;
                }
                named = true;
            }
            s.push_str(w.code.suffix());
        }
        s.push('\n');
    }
    s
}

/// Reads the tree and decides every line, in DKMS's order. Pure reading, no subprocess.
/// Module versions are independent, so their lines are decided on several threads when there
/// are many; warnings are printed afterwards, in listing order.
pub fn collect(paths: &Paths, query: &Query) -> Vec<StatusEntry> {
    let reader = Reader {
        paths,
        tree: Tree::new(&paths.dkms_tree),
        location_override: host::location_override(paths),
        kernel_source_dir: query.kernel_source_dir.clone(),
        compression: Mutex::new(HashMap::new()),
    };
    let targets = if query.targets.is_empty() {
        vec![(None, None)]
    } else {
        query.targets.clone()
    };
    let mut warned = HashSet::new();
    let mut out = Vec::new();
    for (kernel, arch) in &targets {
        let sel = Selection {
            module: Pattern::or(query.module.as_deref(), Pattern::Any),
            version: Pattern::or(query.version.as_deref(), Pattern::Any),
            kernel: Pattern::or(kernel.as_deref(), Pattern::KernelLike),
            arch: Pattern::or(arch.as_deref(), Pattern::Any),
        };
        let mut modules = TreeSnapshot::read(&reader.tree, &sel).modules;
        let unreachable = unreachable_sources(paths, &reader.tree, &sel);
        if !unreachable.is_empty() {
            modules.extend(unreachable);
            // DKMS's glob order, as the snapshot's.
            modules.sort_by_cached_key(|m| format!("{}/{}", m.name, m.version).into_bytes());
        }
        let lines = crate::base::par::map(&modules, 32, |_, mv| reader.module_lines(mv));
        for (entries, warning) in lines {
            if let Some((key, text)) = warning {
                if warned.insert(key) {
                    Console::default().say(text);
                }
            }
            out.extend(entries);
        }
    }
    out.extend(package_entries(paths, query, &targets));
    out
}

/// Versions without a `source` link whose `/usr/src/M-V` exists: DKMS 3.2.2 lists them as
/// broken (the snapshot leaves them out, as they are not added).
fn unreachable_sources(paths: &Paths, tree: &Tree, sel: &Selection) -> Vec<TreeVersion> {
    tree.module_versions(&sel.module, &sel.version)
        .into_iter()
        .filter(|(m, v)| {
            tree.source(m, v) == Source::Missing
                && crate::state::broken::is_broken(paths, tree, m, v)
        })
        .map(|(name, version)| TreeVersion {
            name,
            version,
            source: Source::Missing,
            original_modules: false,
            builds: Vec::new(),
        })
        .collect()
}

/// The lines of installed binary module packages (dpkg's database under the root, read only
/// when it exists), for the same selection, after DKMS's lines so that those stay as DKMS
/// prints them. NAME is the registered module whose package name this is (`acpi_call` for
/// `acpi-call-modules-K`), else the name the package gives.
fn package_entries(
    paths: &Paths,
    query: &Query,
    targets: &[(Option<String>, Option<String>)],
) -> Vec<StatusEntry> {
    let packages = match dpkg::installed_packages(paths) {
        Ok(p) => p,
        Err(e) => {
            Console::default().warn(format!("binary module packages are not listed: {e}"));
            return Vec::new();
        }
    };
    if packages.is_empty() {
        return Vec::new();
    }
    let registered: HashMap<String, String> = Tree::new(&paths.dkms_tree)
        .module_versions(&Pattern::Any, &Pattern::Any)
        .into_iter()
        .filter_map(|(m, _)| Some((deb::name_part(&m).ok()?, m)))
        .collect();
    let mut out = Vec::new();
    for (kernel, arch) in targets {
        let module = Pattern::or(query.module.as_deref(), Pattern::Any);
        let version = Pattern::or(query.version.as_deref(), Pattern::Any);
        let kernel = Pattern::or(kernel.as_deref(), Pattern::Any);
        let arch = Pattern::or(arch.as_deref(), Pattern::Any);
        for p in &packages {
            let name = registered.get(&p.name).unwrap_or(&p.name);
            if !(module.matches(name)
                && version.matches(&p.version)
                && kernel.matches(&p.kernel)
                && arch.matches(&p.arch))
            {
                continue;
            }
            out.push(StatusEntry {
                name: name.clone(),
                version: p.version.clone(),
                kernel: Some(p.kernel.clone()),
                arch: Some(p.arch.clone()),
                state: State::InstalledPackage,
                source_missing: false,
                built_files: Vec::new(),
                installed_files: p.modules.iter().map(|m| paths.system(m)).collect(),
                warnings: Vec::new(),
                package: Some(PackageRef {
                    package: p.package.clone(),
                    dpkg_state: p.state.clone(),
                }),
            });
        }
    }
    out
}

/// The modules a build should hold: from dkms.conf when it can be read statically, else the
/// module files that are there (name, file; `NAME.ko` preferred over a compressed copy).
enum Expected {
    Conf(Vec<ModuleEntry>),
    Found(Vec<(String, PathBuf)>),
}

/// What one status run shares across threads: paths and the per-kernel compression cache.
struct Reader<'a> {
    paths: &'a Paths,
    tree: Tree,
    location_override: Option<String>,
    kernel_source_dir: Option<PathBuf>,
    /// Kernel → its module compression suffix (`.gz`, `.xz`, `.zst` or none).
    compression: Mutex<HashMap<String, Option<&'static str>>>,
}

/// A warning for stderr, once per module version: (module, version) and the text.
type Pending = Option<((String, String), String)>;

impl Reader<'_> {
    /// The lines of one module version: one per built kernel, else `M/V: added`. `seen` holds
    /// the kernels of every built test of this listing in order, this module's starting at
    /// `before`.
    fn module_lines(&self, mv: &TreeVersion) -> (Vec<StatusEntry>, Pending) {
        let mut warning = None;
        let mut out = Vec::new();
        if mv.source.is_broken() || mv.source == Source::Missing {
            out.push(StatusEntry {
                source_missing: true,
                name: mv.name.clone(),
                version: mv.version.clone(),
                kernel: None,
                arch: None,
                state: State::Broken,
                built_files: Vec::new(),
                installed_files: Vec::new(),
                warnings: Vec::new(),
                package: None,
            });
            return (out, warning);
        }
        for build in mv.builds.iter().filter(|b| b.is_built()) {
            out.push(self.build_entry(mv, build, &mut warning));
        }
        if out.is_empty() {
            out.push(StatusEntry {
                source_missing: mv.source.is_broken(),
                name: mv.name.clone(),
                version: mv.version.clone(),
                kernel: None,
                arch: None,
                state: State::Added,
                built_files: Vec::new(),
                installed_files: Vec::new(),
                warnings: Vec::new(),
                package: None,
            });
        }
        (out, warning)
    }

    /// The line for one `K/A` whose `module/` exists. Each expected file is stat'ed once.
    fn build_entry(&self, mv: &TreeVersion, b: &TreeBuild, warning: &mut Pending) -> StatusEntry {
        let (m, v, k, a) = (&mv.name, &mv.version, &b.kernel, &b.arch);
        let moddir = self.tree.built_modules_dir(m, v, k, a);
        let expected = self.expected(mv, b, warning);
        let files: Vec<(String, Option<PathBuf>)> = match &expected {
            Expected::Conf(entries) => entries
                .iter()
                .map(|e| {
                    let plain =
                        Some(moddir.join(format!("{}.ko", e.dest_name))).filter(|p| p.exists());
                    let file = plain.or_else(|| packed(&moddir, &e.dest_name, self.compression(k)));
                    (e.dest_name.clone(), file)
                })
                .collect(),
            Expected::Found(found) => found
                .iter()
                .map(|(n, f)| (n.clone(), Some(f.clone())))
                .collect(),
        };
        let state = if b.installed {
            State::Installed
        } else {
            State::Built
        };
        let mut warnings = Vec::new();
        if mv.original_modules && self.tree.original_module_dir(m, k, a).is_dir() {
            warnings.push(Warning {
                code: WarningCode::OriginalModuleExists,
                module: None,
            });
        }
        let mut built_files = Vec::new();
        let mut installed_files = Vec::new();
        for (i, (name, tree_mod)) in files.into_iter().enumerate() {
            let Some(tree_mod) = tree_mod else {
                warnings.push(Warning {
                    code: WarningCode::MissingBuiltModule,
                    module: Some(name.clone()),
                });
                continue;
            };
            if state == State::Installed {
                let candidates = match &expected {
                    Expected::Conf(entries) => {
                        let e = &entries[i];
                        let mut c = vec![e.install_location.clone()];
                        if e.dest_location != e.install_location {
                            c.push(e.dest_location.clone());
                        }
                        Some(c)
                    }
                    Expected::Found(_) => self.location_override.clone().map(|l| vec![l]),
                };
                if let Some(candidates) = candidates {
                    let installed = self.installed_copy(k, &name, &candidates);
                    let same = installed
                        .as_ref()
                        .is_some_and(|(_, f)| same_contents(&tree_mod, f));
                    if !same {
                        warnings.push(Warning {
                            code: WarningCode::DiffBuiltInstalled,
                            module: Some(name.clone()),
                        });
                    }
                    installed_files.extend(installed.map(|(p, _)| p));
                }
            }
            built_files.push(tree_mod);
        }
        // An uninstall running meanwhile drops the link before the files: if the link is gone
        // now, the missing file was that uninstall, not a damaged installation.
        let diff = warnings
            .iter()
            .any(|w| w.code == WarningCode::DiffBuiltInstalled);
        if diff && !self.tree.is_installed_build(m, v, k, a) {
            let now = TreeBuild {
                installed: false,
                ..b.clone()
            };
            return self.build_entry(mv, &now, warning);
        }
        StatusEntry {
            name: m.clone(),
            version: v.clone(),
            kernel: Some(k.clone()),
            arch: Some(a.clone()),
            state,
            source_missing: mv.source.is_broken(),
            built_files,
            installed_files,
            warnings,
            package: None,
        }
    }

    /// The expected modules of a build. Reads dkms.conf with the static evaluator only.
    fn expected(&self, mv: &TreeVersion, b: &TreeBuild, warning: &mut Pending) -> Expected {
        let conf_file = self
            .tree
            .source_link(&mv.name, &mv.version)
            .join("dkms.conf");
        let moddir = self
            .tree
            .built_modules_dir(&mv.name, &mv.version, &b.kernel, &b.arch);
        let found = || {
            let mut seen = HashSet::new();
            let files = self
                .tree
                .built_module_files(&mv.name, &mv.version, &b.kernel, &b.arch)
                .into_iter()
                .flatten()
                .filter_map(|f| Some((module_name(&f)?, moddir.join(&f))))
                .filter(|(n, _)| seen.insert(n.clone()))
                .collect();
            Expected::Found(files)
        };
        let kernel_source_dir = self
            .kernel_source_dir
            .clone()
            .unwrap_or_else(|| self.paths.kernel_build_dir(&b.kernel));
        let req = LoadRequest {
            conf_file,
            module: mv.name.clone(),
            module_version: mv.version.clone(),
            target: Target {
                kernel: b.kernel.clone(),
                arch: b.arch.clone(),
                kernel_config: kernel_source_dir.join(".config"),
                kernel_source_dir,
                build_dir: self.tree.version_dir(&mv.name, &mv.version).join("build"),
                location_override: self.location_override.clone(),
            },
            etc_dkms: Some(self.paths.etc_dkms.clone()),
            dkms_tree: self.paths.dkms_tree.clone(),
            source_tree: self.paths.source_tree.clone(),
            install_tree: self.paths.install_tree.clone(),
            directive_overrides: Vec::new(),
            mode: EvalMode::StaticOnly,
        };
        match conf::load(&req) {
            Ok(c) => Expected::Conf(c.modules),
            Err(Error::ConfNotFound { path }) => {
                *warning = Some((
                    (mv.name.clone(), mv.version.clone()),
                    format!(
                        "Warning: {}/{}: {} does not exist (source removed?); reporting the built modules found in the tree.",
                        mv.name,
                        mv.version,
                        path.display()
                    ),
                ));
                found()
            }
            Err(_) => found(),
        }
    }

    /// The compression suffix DKMS infers from `<installtree>/K/modules.dep` (the last of
    /// `.gz`, `.xz`, `.zst` that appears wins, as in DKMS's three greps).
    fn compression(&self, kernel: &str) -> Option<&'static str> {
        let mut cache = self.compression.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.get(kernel) {
            return *c;
        }
        let dep = self.paths.install_tree.join(kernel).join("modules.dep");
        let text = std::fs::read(dep).unwrap_or_default();
        let has = |pat: &[u8]| text.windows(pat.len()).any(|w| w == pat);
        let c = [
            (".zst", b".zst:" as &[u8]),
            (".xz", b".xz:"),
            (".gz", b".gz:"),
        ]
        .into_iter()
        .find(|(_, pat)| has(pat))
        .map(|(s, _)| s);
        cache.insert(kernel.to_string(), c);
        c
    }

    /// DKMS's `find_actual_dest_module_location`: the first candidate location under
    /// `<installtree>/K` holding the module, else `<installtree>/K` itself; opened, since it
    /// is compared next.
    fn installed_copy(
        &self,
        kernel: &str,
        name: &str,
        candidates: &[String],
    ) -> Option<(PathBuf, File)> {
        let base = self.paths.install_tree.join(kernel);
        candidates
            .iter()
            .map(|l| base.join(l.trim_start_matches('/')))
            .chain(std::iter::once(base.clone()))
            .find_map(|dir| open_module(&dir, name, || self.compression(kernel)))
    }
}

/// DKMS's compressed candidate: `dir/NAME.ko<suffix>` when the kernel has a suffix.
fn packed(dir: &Path, name: &str, suffix: Option<&str>) -> Option<PathBuf> {
    let p = dir.join(format!("{name}.ko{}", suffix?));
    p.exists().then_some(p)
}

/// DKMS's `compressed_or_uncompressed` on disk (`NAME.ko`, else `NAME.ko<suffix>`, the
/// suffix asked only then), opening the file found.
fn open_module(
    dir: &Path,
    name: &str,
    suffix: impl FnOnce() -> Option<&'static str>,
) -> Option<(PathBuf, File)> {
    let plain = dir.join(format!("{name}.ko"));
    if let Ok(f) = File::open(&plain) {
        return Some((plain, f));
    }
    let packed = dir.join(format!("{name}.ko{}", suffix()?));
    File::open(&packed).ok().map(|f| (packed, f))
}

/// `foo` for `foo.ko`, `foo.ko.xz`, `foo.ko.gz`, `foo.ko.zst`.
fn module_name(file: &str) -> Option<String> {
    let stem = [".ko", ".ko.gz", ".ko.xz", ".ko.zst"]
        .iter()
        .find_map(|s| file.strip_suffix(s))?;
    (!stem.is_empty()).then(|| stem.to_string())
}

/// Whether a file has the same bytes as an open one (size first, then content);
/// unreadable = different. Reads exactly the size both have, so no read is spent on finding
/// the end.
fn same_contents(a: &Path, fb: &File) -> bool {
    let Ok(mut fa) = File::open(a) else {
        return false;
    };
    let (Ok(ma), Ok(mb)) = (fa.metadata(), fb.metadata()) else {
        return false;
    };
    if ma.len() != mb.len() {
        return false;
    }
    let mut fb = fb;
    // On the stack: status compares a module per installed build, and two fresh 64 KiB heap
    // buffers each time cost more than reading a typical module.
    let mut ba = [0u8; 16 * 1024];
    let mut bb = [0u8; 16 * 1024];
    let mut left = ma.len();
    while left > 0 {
        let n = left.min(ba.len() as u64) as usize;
        if fa.read_exact(&mut ba[..n]).is_err()
            || fb.read_exact(&mut bb[..n]).is_err()
            || ba[..n] != bb[..n]
        {
            return false;
        }
        left -= n as u64;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_from_files() {
        assert_eq!(module_name("foo.ko").as_deref(), Some("foo"));
        assert_eq!(module_name("foo.ko.zst").as_deref(), Some("foo"));
        assert_eq!(module_name("foo.o"), None);
        assert_eq!(module_name(".ko"), None);
    }

    #[test]
    fn contents_compare_by_size_then_bytes() {
        let d = tempfile::tempdir().unwrap();
        let (a, b, c) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
        std::fs::write(&a, vec![7u8; 200_000]).unwrap();
        std::fs::write(&b, vec![7u8; 200_000]).unwrap();
        let mut other = vec![7u8; 200_000];
        other[150_000] = 8;
        std::fs::write(&c, other).unwrap();
        let open = |p: &Path| File::open(p).unwrap();
        assert!(same_contents(&a, &open(&b)));
        assert!(!same_contents(&a, &open(&c)));
        assert!(!same_contents(&d.path().join("missing"), &open(&a)));
    }

    #[test]
    fn renders_both_text_formats() {
        let e = StatusEntry {
            name: "foo".into(),
            version: "1.0".into(),
            kernel: Some("6.1.0-1-amd64".into()),
            arch: Some("x86_64".into()),
            state: State::Installed,
            source_missing: false,
            built_files: vec![],
            installed_files: vec![],
            warnings: vec![Warning {
                code: WarningCode::DiffBuiltInstalled,
                module: Some("foo".into()),
            }],
            package: None,
        };
        let added = StatusEntry {
            kernel: None,
            arch: None,
            state: State::Added,
            warnings: vec![],
            ..e.clone()
        };
        let both = [e, added];
        assert_eq!(
            render(&both, Format::Dkms),
            "foo/1.0, 6.1.0-1-amd64, x86_64: installed (Differences between built and installed modules)\nfoo/1.0: added\n"
        );
        let pkg = StatusEntry {
            state: State::InstalledPackage,
            warnings: vec![],
            package: Some(PackageRef {
                package: "foo-modules-6.1.0-1-amd64".into(),
                dpkg_state: "installed".into(),
            }),
            ..both[0].clone()
        };
        assert_eq!(
            render(std::slice::from_ref(&pkg), Format::Dkms),
            "foo/1.0, 6.1.0-1-amd64, x86_64: installed (binary package foo-modules-6.1.0-1-amd64)\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(&[pkg, both[1].clone()], Format::Json)).unwrap();
        assert_eq!(json[0]["state"], "installed-package");
        assert_eq!(json[0]["package"], "foo-modules-6.1.0-1-amd64");
        assert_eq!(json[0]["dpkg_state"], "installed");
        assert!(json[1].get("package").is_none());
        assert_eq!(
            render(&both, Format::Legacy),
            "foo, 1.0, 6.1.0-1-amd64, x86_64: installed (WARNING! Diff between built and installed module!)\nfoo, 1.0: added\n"
        );
    }
}
