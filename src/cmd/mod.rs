//! Layer 8, the command layer: the command line (`cli`), the actions' documentation table
//! (`actions`), help and man page, one file per command family and the hooks' orchestration
//! (`reconcile`). Only this layer sees `cli::Invocation`; it hands the layers below the typed
//! `system::options::Options`, made once. May use every layer.

pub mod actions;
pub mod cli;
pub mod conf_show;
pub mod dkms_autoinstall;
pub mod doctor;
pub mod generate_mok;
pub mod help;
pub mod manpage;
pub mod reconcile;
pub mod status;
pub mod template;

use crate::base::error::{Error, Result};
use crate::base::persona;
use crate::ops::{add, lifecycle};
use crate::package::{bmdeb, mkdeb, tarball};
use crate::system::progress;
use lifecycle::Operation;

use cli::{Action, Invocation};

/// `--root DIR` is a directory, or can become one: its parent exists.
fn root_usable(root: &std::path::Path) -> bool {
    if root.exists() {
        return root.is_dir();
    }
    let parent = std::path::absolute(root)
        .ok()
        .and_then(|r| r.parent().map(std::path::Path::to_path_buf));
    parent.is_some_and(|p| p.is_dir())
}

/// Runs one parsed command line and returns the process exit status.
pub fn run(inv: Invocation) -> Result<i32> {
    if inv.cli.print_version {
        println!("{}", persona::version());
        return Ok(0);
    }
    progress::init(inv.cli.quiet || inv.cli.hook || inv.cli.from_apt);
    // A new tree may start in a new directory, but not below a mistyped path.
    if let Some(root) = inv.cli.root.as_deref().filter(|r| !root_usable(r)) {
        return Err(Error::Usage(format!(
            "--root {}: no such directory. Fix the path, or create the directory first to start a new tree there.",
            root.display()
        )));
    }
    let Some(action) = inv.action else {
        return Err(Error::Usage(
            "No action specified; try rdkms status, rdkms build NAME/VERSION or rdkms --help."
                .to_string(),
        ));
    };
    let opts = inv.options();
    match action {
        Action::ConfShow => conf_show::run(&inv),
        Action::Mkbmdeb => bmdeb::run(&opts),
        Action::Mkdeb => mkdeb::run(&opts),
        Action::Mktarball => tarball::make(&opts),
        Action::Ldtarball => tarball::load(&opts),
        Action::Doctor => doctor::run(&inv, &opts),
        Action::GenerateMok => generate_mok::run(&inv),
        Action::Match => template::run(&inv, &opts),
        Action::Status => status::run(&inv),
        Action::Add => add::run(&opts),
        Action::Autoinstall
        | Action::KernelPostinst
        | Action::KernelPrerm
        | Action::KernelPreinst
        | Action::Reconcile
        | Action::Plan
        | Action::CommonPostinst => reconcile::run(action, &inv, &opts),
        Action::Build => lifecycle::run(Operation::Build, &opts),
        Action::Install => lifecycle::run(Operation::Install, &opts),
        Action::Uninstall => lifecycle::run(Operation::Uninstall, &opts),
        Action::Unbuild => lifecycle::run(Operation::Unbuild, &opts),
        Action::Remove => lifecycle::run(Operation::Remove, &opts),
    }
}
