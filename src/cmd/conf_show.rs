//! `rdkms conf show PATH`: what a dkms.conf means for one kernel, for people and for scripts.

use std::path::{Path, PathBuf};

use crate::base::error::{Error, Result};
use crate::cmd::cli::Invocation;
use crate::conf::{self, model::Target, EvalMode, LoadRequest};
use crate::system::host;

/// Runs `conf show`.
pub fn run(inv: &Invocation) -> Result<i32> {
    let Some(arg) = inv
        .operands
        .first()
        .map(PathBuf::from)
        .or_else(|| inv.source_path.clone())
    else {
        return Err(Error::Usage(
            "Usage: rdkms conf show PATH [-k KVER] [-a ARCH] [--json]".into(),
        ));
    };
    let conf_file = if arg.is_dir() {
        arg.join("dkms.conf")
    } else {
        arg.clone()
    };
    let paths = crate::cmd::cli::paths(&inv.cli);
    let (module, module_version) =
        name_version_from_dir(conf_file.parent().unwrap_or(Path::new("")));
    let kernel = inv
        .kernels
        .first()
        .map(|k| k.kernel.clone())
        .unwrap_or_else(host::running_kernel);
    let arch = inv
        .kernels
        .first()
        .and_then(|k| k.arch.clone())
        .unwrap_or_else(host::machine_arch);
    let kernel_source_dir = inv
        .cli
        .kernel_source_dir
        .clone()
        .unwrap_or_else(|| paths.kernel_build_dir(&kernel));
    let kernel_config = inv
        .cli
        .kernel_config
        .clone()
        .unwrap_or_else(|| kernel_source_dir.join(".config"));
    let build_dir = paths
        .dkms_tree
        .join(&module)
        .join(&module_version)
        .join("build");
    let req = LoadRequest {
        conf_file,
        module,
        module_version,
        target: Target {
            kernel,
            arch,
            kernel_source_dir,
            kernel_config,
            build_dir,
            location_override: host::location_override(&paths),
        },
        etc_dkms: Some(paths.etc_dkms.clone()),
        dkms_tree: paths.dkms_tree.clone(),
        source_tree: paths.source_tree.clone(),
        install_tree: paths.install_tree.clone(),
        directive_overrides: inv.cli.directives.clone(),
        mode: mode_from_env(),
    };
    let mut req = req;
    let mut evaluation = conf::read(&req)?;
    let mut conf = conf::model(&req, &evaluation)?;
    // The directory name only guesses NAME and VERSION; builds use PACKAGE_NAME and
    // PACKAGE_VERSION, so `M=` (the default MAKE's build directory) is shown for those.
    if (conf.package_name.as_str(), conf.package_version.as_str())
        != (req.module.as_str(), req.module_version.as_str())
    {
        req.module = conf.package_name.clone();
        req.module_version = conf.package_version.clone();
        req.target.build_dir = paths
            .dkms_tree
            .join(&req.module)
            .join(&req.module_version)
            .join("build");
        evaluation = conf::read(&req)?;
        conf = conf::model(&req, &evaluation)?;
    }
    // What add, build and install would warn about or refuse, a check of the conf says too.
    conf::strict::check(&conf, &req.target.kernel, &req.target.arch, |l| {
        eprintln!("{l}")
    })?;
    // A build would refuse it (exit 5, as DKMS 3.2.2); a check of the conf says so up front.
    if let Some(p) = conf.patches.iter().find(|p| conf::model::patch_escapes(p)) {
        return Err(Error::PathEscape {
            file: conf.file.clone(),
            what: "PATCH".to_string(),
            value: p.clone(),
        });
    }
    if inv.cli.json {
        let out = serde_json::json!({
            "file": conf.file,
            "kernel": req.target.kernel,
            "arch": req.target.arch,
            "eval_path": conf.eval_path,
            "directives": evaluation.directives.to_json(),
            "model": conf,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("JSON of plain data")
        );
        return Ok(0);
    }
    println!(
        "{}/{} ({})",
        conf.package_name,
        conf.package_version,
        conf.file.display()
    );
    println!("kernel: {} ({})", req.target.kernel, req.target.arch);
    println!("evaluated by: {:?}", conf.eval_path);
    for m in &conf.modules {
        println!(
            "module: {}{}.ko -> {}/{}{}/{}.ko{}",
            m.built_location,
            m.built_name,
            paths.install_tree.display(),
            req.target.kernel,
            m.install_location,
            m.dest_name,
            if m.strip { "" } else { " (not stripped)" }
        );
    }
    println!("make: {}", conf.make);
    println!(
        "build directory: {} (a private copy while building; a failed build is kept there)",
        req.target.build_dir.display()
    );
    if !conf.patches.is_empty() {
        println!("patches: {}", conf.patches.join(" "));
    }
    println!(
        "autoinstall: {}",
        if conf.autoinstall { "yes" } else { "no" }
    );
    println!(
        "remake_initrd: {}",
        if conf.remake_initrd { "yes" } else { "no" }
    );
    if !conf.build_depends.is_empty() {
        println!("build_depends: {}", conf.build_depends.join(" "));
    }
    match &conf.excluded {
        None => println!("build_exclusive: allows this kernel"),
        Some(why) => println!("build_exclusive: excludes this kernel ({why})"),
    }
    Ok(0)
}

/// `RDKMS_CONF_EVAL=bash|static` forces one evaluator (used by tests and for debugging).
pub fn mode_from_env() -> EvalMode {
    match std::env::var("RDKMS_CONF_EVAL").as_deref() {
        Ok("bash") => EvalMode::BashOnly,
        Ok("static") => EvalMode::StaticOnly,
        _ => EvalMode::Auto,
    }
}

/// `/usr/src/NAME-VERSION` → (NAME, VERSION): split at the last `-` followed by a digit; a
/// directory without one gives the whole name and an empty version.
pub fn name_version_from_dir(dir: &Path) -> (String, String) {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let base = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let split = base
        .char_indices()
        .filter(|&(i, c)| c == '-' && base[i + 1..].starts_with(|d: char| d.is_ascii_digit()))
        .map(|(i, _)| i)
        .next_back();
    match split {
        Some(i) => (base[..i].to_string(), base[i + 1..].to_string()),
        None => (base, String::new()),
    }
}
