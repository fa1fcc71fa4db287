//! The typed view of an evaluated dkms.conf for one kernel/arch: DKMS's defaults applied
//! (module names, locations, STRIP, MAKE/MAKE_MATCH, PATCH_MATCH) and its validation rules.

use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Serialize;

use crate::base::error::{ConfFinding, ConfProblem, ConfWarning, Error, Result};
use crate::base::version::ver_key;
use crate::conf::{Directives, EvalPath};

/// What the model needs to know about the target besides the directives.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub kernel: String,
    pub arch: String,
    /// `$kernel_source_dir`: the kernel build tree.
    pub kernel_source_dir: PathBuf,
    /// The kernel config used for BUILD_EXCLUSIVE_CONFIG (absent file = not checked).
    pub kernel_config: PathBuf,
    /// `$dkms_tree/$module/$module_version/build`, the default `M=` of MAKE.
    pub build_dir: PathBuf,
    /// The distribution's install-location override (`/updates/dkms` on Debian and Ubuntu);
    /// `None` keeps DEST_MODULE_LOCATION verbatim.
    pub location_override: Option<String>,
}

/// One kernel module of a package (one index of the BUILT_/DEST_ arrays).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleEntry {
    /// Name of the `.ko` make produces (without suffix).
    pub built_name: String,
    /// Directory of that `.ko` relative to the build dir, `""` or ending in `/`.
    pub built_location: String,
    /// Name it is installed as.
    pub dest_name: String,
    /// DEST_MODULE_LOCATION as written.
    pub dest_location: String,
    /// Where it is really installed below `/lib/modules/KVER` (after the distro override).
    pub install_location: String,
    /// Whether debug symbols are stripped (`strip -g`).
    pub strip: bool,
}

/// BUILD_EXCLUSIVE_* restrictions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Exclusive {
    pub kernel: Option<String>,
    pub arch: Option<String>,
    pub config: Option<String>,
    pub kernel_min: Option<String>,
    pub kernel_max: Option<String>,
}

/// A dkms.conf evaluated for one kernel and arch.
#[derive(Debug, Clone, Serialize)]
pub struct DkmsConf {
    pub file: PathBuf,
    pub package_name: String,
    pub package_version: String,
    pub modules: Vec<ModuleEntry>,
    /// The MAKE command chosen for this kernel (MAKE_MATCH applied, default filled in).
    pub make: String,
    /// CLEAN as written, or DKMS's default.
    pub clean: String,
    /// PATCH entries that apply to this kernel, in order.
    pub patches: Vec<String>,
    pub pre_build: Option<String>,
    pub post_build: Option<String>,
    pub post_add: Option<String>,
    pub pre_install: Option<String>,
    pub post_install: Option<String>,
    pub post_remove: Option<String>,
    pub autoinstall: bool,
    /// Deprecated and ignored by DKMS since 3.0; shown for information only.
    pub remake_initrd: bool,
    pub build_depends: Vec<String>,
    pub build_depends_rebuild: bool,
    pub build_exclusive: Exclusive,
    pub obsolete_by: Option<String>,
    pub no_weak_modules: bool,
    /// Why BUILD_EXCLUSIVE forbids this kernel/arch/config, if it does.
    pub excluded: Option<String>,
    /// Which evaluator read the file.
    pub eval_path: EvalPath,
    /// DKMS 3.2.2's notices for the deprecated directives set, per file that set them (see
    /// [`crate::conf::strict`]).
    #[serde(skip)]
    pub deprecated: Vec<ConfWarning>,
}

/// A problem only rdkms checks (DKMS has no words for it): the conf is refused at once.
pub fn bad(
    file: &Path,
    directive: &str,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> Error {
    Error::BadConf {
        file: file.to_path_buf(),
        problems: vec![ConfProblem {
            finding: None,
            directive: directive.to_string(),
            problem: problem.into(),
            fix: fix.into(),
        }],
    }
}

/// The problems DKMS reports one by one before refusing a conf, collected in its order.
struct Findings {
    file: PathBuf,
    list: Vec<ConfProblem>,
}

impl Findings {
    fn new(file: &Path) -> Findings {
        Findings {
            file: file.to_path_buf(),
            list: Vec::new(),
        }
    }

    /// Records DKMS's `finding` with rdkms's directive, problem and fix.
    fn add(
        &mut self,
        finding: ConfFinding,
        directive: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.list.push(ConfProblem {
            finding: Some(finding),
            directive: directive.into(),
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    /// `BadConf` with every problem found, if there is one.
    fn verdict(self) -> Result<()> {
        if self.list.is_empty() {
            return Ok(());
        }
        Err(Error::BadConf {
            file: self.file,
            problems: self.list,
        })
    }
}

fn opt(d: &Directives, name: &str) -> Option<String> {
    let v = d.scalar(name);
    (!v.is_empty()).then(|| v.to_string())
}

fn regex(file: &Path, directive: &str, pattern: &str) -> Result<Regex> {
    Regex::new(pattern).map_err(|e| {
        // regex's message spans several lines; its last line says what is wrong.
        let text = e.to_string();
        let why = text.lines().last().unwrap_or_default().trim();
        let why = why.strip_prefix("error: ").unwrap_or(why);
        bad(
            file,
            directive,
            format!("'{pattern}' is not a valid regular expression ({why})"),
            "write an extended regular expression as used by bash's =~",
        )
    })
}

impl DkmsConf {
    /// Applies DKMS's defaults and validation to evaluated directives.
    pub fn from_directives(
        d: &Directives,
        file: &Path,
        target: &Target,
        eval_path: EvalPath,
    ) -> Result<DkmsConf> {
        // Like DKMS, every problem below is reported before the conf is refused.
        let mut found = Findings::new(file);
        let package_name = opt(d, "PACKAGE_NAME").unwrap_or_default();
        let package_version = opt(d, "PACKAGE_VERSION").unwrap_or_default();
        for (name, value, example) in [
            ("PACKAGE_NAME", &package_name, "name"),
            ("PACKAGE_VERSION", &package_version, "1.0"),
        ] {
            if value.is_empty() {
                found.add(
                    ConfFinding::Missing(name),
                    name,
                    "missing",
                    format!("add {name}=\"{example}\""),
                );
            }
        }
        let modules = modules(d, file, &package_name, target, &mut found)?;
        let autoinstall = yes_no(d, "AUTOINSTALL", &mut found);
        let build_depends_rebuild = yes_no(d, "BUILD_DEPENDS_REBUILD", &mut found);
        let no_weak_modules = yes_no(d, "NO_WEAK_MODULES", &mut found);
        found.verdict()?;

        let make = select_make(d, file, &target.kernel)?.unwrap_or_else(|| {
            format!(
                "make -C {} M={}",
                target.kernel_source_dir.display(),
                target.build_dir.display()
            )
        });
        let clean = opt(d, "CLEAN").unwrap_or_else(|| {
            format!(
                "make -C {} M={} clean",
                target.kernel_source_dir.display(),
                target.build_dir.display()
            )
        });
        let patches = select_patches(d, file, &target.kernel)?;
        let build_exclusive = Exclusive {
            kernel: opt(d, "BUILD_EXCLUSIVE_KERNEL"),
            arch: opt(d, "BUILD_EXCLUSIVE_ARCH"),
            config: opt(d, "BUILD_EXCLUSIVE_CONFIG"),
            kernel_min: opt(d, "BUILD_EXCLUSIVE_KERNEL_MIN"),
            kernel_max: opt(d, "BUILD_EXCLUSIVE_KERNEL_MAX"),
        };
        let obsolete_by = opt(d, "OBSOLETE_BY");
        let excluded = exclusion(&build_exclusive, obsolete_by.as_deref(), file, target)?;
        Ok(DkmsConf {
            file: file.to_path_buf(),
            package_name,
            package_version,
            modules,
            make,
            clean,
            patches,
            pre_build: opt(d, "PRE_BUILD"),
            post_build: opt(d, "POST_BUILD"),
            post_add: opt(d, "POST_ADD"),
            pre_install: opt(d, "PRE_INSTALL"),
            post_install: opt(d, "POST_INSTALL"),
            post_remove: opt(d, "POST_REMOVE"),
            autoinstall,
            remake_initrd: d.scalar("REMAKE_INITRD").eq_ignore_ascii_case("yes"),
            build_depends: d
                .indices("BUILD_DEPENDS")
                .into_iter()
                .filter_map(|i| d.get("BUILD_DEPENDS", i))
                .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                .collect(),
            build_depends_rebuild,
            build_exclusive,
            obsolete_by,
            no_weak_modules,
            excluded,
            eval_path,
            deprecated: Vec::new(),
        })
    }
}

/// `yes`/`no`/empty, case-insensitive, as upstream DKMS validates AUTOINSTALL,
/// BUILD_DEPENDS_REBUILD and NO_WEAK_MODULES.
fn yes_no(d: &Directives, name: &'static str, found: &mut Findings) -> bool {
    let v = d.scalar(name);
    match v.to_ascii_lowercase().as_str() {
        "" | "no" => false,
        "yes" => true,
        _ => {
            found.add(
                ConfFinding::Unsupported {
                    name,
                    value: v.to_string(),
                },
                name,
                format!("unsupported value '{v}'"),
                format!("set {name}=\"yes\" or {name}=\"no\""),
            );
            false
        }
    }
}

/// The module records: one per index up to the highest index used in the name/location
/// arrays. Each record's problems are found in DKMS's order (a gap in sparse arrays is a record
/// without BUILT_MODULE_NAME); rdkms's own path checks follow on a record DKMS accepts.
fn modules(
    d: &Directives,
    file: &Path,
    package_name: &str,
    target: &Target,
    found: &mut Findings,
) -> Result<Vec<ModuleEntry>> {
    const FAMILY: [&str; 4] = [
        "BUILT_MODULE_NAME",
        "BUILT_MODULE_LOCATION",
        "DEST_MODULE_NAME",
        "DEST_MODULE_LOCATION",
    ];
    let count = FAMILY
        .iter()
        .filter_map(|n| d.indices(n).last().map(|i| i + 1))
        .max()
        .unwrap_or(0);
    let single = count == 1;
    let mut out = Vec::with_capacity(count);
    let mut strip_default = true;
    for i in 0..count {
        let get = |n: &str| d.get(n, i).unwrap_or("").to_string();
        let before = found.list.len();
        let mut built_name = get("BUILT_MODULE_NAME");
        if built_name.is_empty() && single {
            built_name = package_name.to_string();
        }
        if built_name.is_empty() {
            let directive = format!("BUILT_MODULE_NAME[{i}]");
            let (problem, fix) = if d.count("BUILT_MODULE_NAME") == 0 && count > 1 {
                (
                    format!(
                        "missing for {count} modules (it defaults to PACKAGE_NAME only when there is one)"
                    ),
                    format!("set {directive}"),
                )
            } else if count > 1 {
                (
                    "missing: the module arrays have a gap at this index".to_string(),
                    format!("set {directive} or renumber the module arrays without gaps"),
                )
            } else {
                (
                    "missing (it defaults to PACKAGE_NAME, which is missing too)".to_string(),
                    "set PACKAGE_NAME".to_string(),
                )
            };
            found.add(ConfFinding::NoBuiltName(i), directive, problem, fix);
        }
        let mut dest_name = get("DEST_MODULE_NAME");
        if dest_name.is_empty() {
            dest_name = built_name.clone();
        }
        for (array, name) in [
            ("BUILT_MODULE_NAME", &built_name),
            ("DEST_MODULE_NAME", &dest_name),
        ] {
            if name.ends_with(".ko") || name.ends_with(".o") {
                found.add(
                    ConfFinding::Suffix { array, index: i },
                    format!("{array}[{i}]"),
                    format!("'{name}' ends in .o or .ko"),
                    "give the module name without a suffix",
                );
            }
        }
        let dest_location = get("DEST_MODULE_LOCATION");
        let directive = format!("DEST_MODULE_LOCATION[{i}]");
        if dest_location.is_empty() {
            found.add(
                ConfFinding::NoDestLocation(i),
                &directive,
                "missing",
                format!("set {directive}=\"/updates/dkms\""),
            );
        } else if !["/kernel", "/updates", "/extra"]
            .iter()
            .any(|p| dest_location.starts_with(p))
        {
            found.add(
                ConfFinding::DestLocationPrefix(i),
                &directive,
                format!("'{dest_location}' does not begin with /kernel, /updates or /extra"),
                "use a location such as /updates/dkms or /kernel/drivers/misc",
            );
        }
        if found.list.len() > before {
            continue;
        }
        for (array, name) in [
            ("BUILT_MODULE_NAME", &built_name),
            ("DEST_MODULE_NAME", &dest_name),
        ] {
            check_component(file, &format!("{array}[{i}]"), name)?;
        }
        let mut built_location = check_relative(
            file,
            &format!("BUILT_MODULE_LOCATION[{i}]"),
            &get("BUILT_MODULE_LOCATION"),
        )?;
        if !built_location.is_empty() && !built_location.ends_with('/') {
            built_location.push('/');
        }
        let inside = check_relative(file, &directive, dest_location.trim_start_matches('/'))?;
        // Empty inherits STRIP[0]; any other value but n* leaves DKMS's "strip" unset = yes.
        let strip = match d.get("STRIP", i).unwrap_or("").chars().next() {
            Some('n' | 'N') => false,
            Some(_) => true,
            None => strip_default,
        };
        if i == 0 {
            strip_default = strip;
        }
        let install_location = target
            .location_override
            .clone()
            .unwrap_or_else(|| format!("/{inside}"));
        out.push(ModuleEntry {
            built_name,
            built_location,
            dest_name,
            dest_location,
            install_location,
            strip,
        });
    }
    Ok(out)
}

/// Whether a PATCH name leaves the patches directory (a `..` component; a leading `/` only
/// means the patches directory itself, as in DKMS's `$build_dir/patches/$p`).
pub fn patch_escapes(name: &str) -> bool {
    name.split('/').any(|c| c == "..")
}

/// A module name must be one path component.
fn check_component(file: &Path, directive: &str, value: &str) -> Result<()> {
    if value.contains('/') || value == "." || value == ".." {
        return Err(Error::PathEscape {
            file: file.to_path_buf(),
            what: directive.to_string(),
            value: value.to_string(),
        });
    }
    Ok(())
}

/// A relative location must stay inside its tree once normalised, as DKMS 3.2.2 accepts
/// `kernel/../misc/` (mstflint-dkms): not absolute, and no `..` climbing above the top.
/// Returns the normalised location (without `.` and `..`, trailing `/` kept).
fn check_relative(file: &Path, directive: &str, value: &str) -> Result<String> {
    normalise_relative(value).ok_or_else(|| Error::PathEscape {
        file: file.to_path_buf(),
        what: directive.to_string(),
        value: value.to_string(),
    })
}

/// `a/./b/../c/` → `a/c/`; `None` when the path is absolute or `..` leaves the top.
fn normalise_relative(value: &str) -> Option<String> {
    if value.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in value.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    let mut out = parts.join("/");
    if value.ends_with('/') && !out.is_empty() {
        out.push('/');
    }
    Some(out)
}

impl DkmsConf {
    /// DKMS's `read_conf_strict` checks: a module built or installed twice under one name
    /// (same BUILT_MODULE_LOCATION and BUILT_MODULE_NAME, or same DEST_MODULE_NAME) is refused
    /// for add, build and install, in DKMS's words and order (all BUILT_ duplicates first).
    pub fn duplicates(&self) -> Result<()> {
        let mut found = Findings::new(&self.file);
        let built: Vec<String> = self
            .modules
            .iter()
            .map(|m| format!("{}{}", m.built_location, m.built_name))
            .collect();
        let dest: Vec<String> = self.modules.iter().map(|m| m.dest_name.clone()).collect();
        for (array, names, fix) in [
            ("BUILT_MODULE_NAME", built, "list each built module once"),
            (
                "DEST_MODULE_NAME",
                dest,
                "give every module a distinct DEST_MODULE_NAME",
            ),
        ] {
            for (index, name) in names.iter().enumerate() {
                if names[..index].contains(name) {
                    found.add(
                        ConfFinding::Duplicate {
                            name: name.clone(),
                            array,
                            index,
                        },
                        format!("{array}[{index}]"),
                        format!("duplicate module '{name}'"),
                        fix,
                    );
                }
            }
        }
        found.verdict()
    }
}

/// MAKE[0] unless MAKE_MATCH[0] is set; then the last index whose MAKE_MATCH matches wins.
/// Like DKMS, only indices below the number of set MAKE elements are looked at.
fn select_make(d: &Directives, file: &Path, kernel: &str) -> Result<Option<String>> {
    let mut chosen = if d.scalar("MAKE_MATCH").is_empty() {
        opt(d, "MAKE")
    } else {
        None
    };
    for i in 0..d.count("MAKE") {
        let make = d.get("MAKE", i).unwrap_or("");
        let pattern = d.get("MAKE_MATCH", i).unwrap_or("");
        if !make.is_empty()
            && !pattern.is_empty()
            && regex(file, &format!("MAKE_MATCH[{i}]"), pattern)?.is_match(kernel)
        {
            chosen = Some(make.to_string());
        }
    }
    Ok(chosen)
}

/// PATCH entries whose PATCH_MATCH is empty or matches the kernel (like DKMS, only indices
/// below the number of set PATCH elements). A name with `..` is accepted here and refused when
/// the build applies it (see [`patch_escapes`]), as DKMS 3.2.2 does.
fn select_patches(d: &Directives, file: &Path, kernel: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for i in 0..d.count("PATCH") {
        let patch = d.get("PATCH", i).unwrap_or("");
        if patch.is_empty() {
            continue;
        }
        let pattern = d.get("PATCH_MATCH", i).unwrap_or("");
        if pattern.is_empty()
            || regex(file, &format!("PATCH_MATCH[{i}]"), pattern)?.is_match(kernel)
        {
            out.push(patch.to_string());
        }
    }
    Ok(out)
}

/// Why BUILD_EXCLUSIVE_* (or OBSOLETE_BY as a maximum) rules this target out, if it does.
fn exclusion(
    ex: &Exclusive,
    obsolete_by: Option<&str>,
    file: &Path,
    target: &Target,
) -> Result<Option<String>> {
    if let Some(k) = &ex.kernel {
        if !regex(file, "BUILD_EXCLUSIVE_KERNEL", k)?.is_match(&target.kernel) {
            return Ok(Some(format!(
                "kernel {} does not match BUILD_EXCLUSIVE_KERNEL '{k}'",
                target.kernel
            )));
        }
    }
    if let Some(a) = &ex.arch {
        if !regex(file, "BUILD_EXCLUSIVE_ARCH", a)?.is_match(&target.arch) {
            return Ok(Some(format!(
                "arch {} does not match BUILD_EXCLUSIVE_ARCH '{a}'",
                target.arch
            )));
        }
    }
    let kv = ver_key(&target.kernel);
    if let Some(min) = &ex.kernel_min {
        if kv < ver_key(min) {
            return Ok(Some(format!(
                "kernel {} is older than BUILD_EXCLUSIVE_KERNEL_MIN {min}",
                target.kernel
            )));
        }
    }
    if let Some(max) = ex.kernel_max.as_deref().or(obsolete_by) {
        if kv > ver_key(max) {
            return Ok(Some(format!(
                "kernel {} is newer than BUILD_EXCLUSIVE_KERNEL_MAX {max}",
                target.kernel
            )));
        }
    }
    if let Some(cfg) = &ex.config {
        if let Ok(text) = std::fs::read_to_string(&target.kernel_config) {
            for want in cfg.split_whitespace() {
                let (negate, name) = match want.strip_prefix('!') {
                    Some(n) => (true, n),
                    None => (false, want),
                };
                let set = text.lines().any(|l| {
                    l.strip_prefix(name)
                        .and_then(|r| r.strip_prefix('='))
                        .is_some_and(|v| v.starts_with('y') || v.starts_with('m'))
                });
                if set == negate {
                    return Ok(Some(format!(
                        "kernel config {} {} {name}",
                        target.kernel_config.display(),
                        if negate { "sets" } else { "does not set" }
                    )));
                }
            }
        }
    }
    Ok(None)
}
