//! Layer 8, the command layer: the command line (`cli`), help and man page, and one file per
//! command family; the hooks' orchestration (`reconcile`). Only this layer sees
//! `cli::Invocation`. May use every layer.

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
    progress::init(&inv.cli);
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
    match action {
        Action::ConfShow => conf_show::run(&inv),
        Action::Mkbmdeb => bmdeb::run(&inv),
        Action::Mkdeb => mkdeb::run(&inv),
        Action::Mktarball => tarball::make(&inv),
        Action::Ldtarball => tarball::load(&inv),
        Action::Doctor => doctor::run(&inv),
        Action::GenerateMok => generate_mok::run(&inv),
        Action::Match => template::run(&inv),
        Action::Status => status::run(&inv),
        Action::Add => add::run(&inv),
        Action::Autoinstall
        | Action::KernelPostinst
        | Action::KernelPrerm
        | Action::KernelPreinst
        | Action::Reconcile
        | Action::Plan
        | Action::CommonPostinst => reconcile::run(action, &inv),
        Action::Build | Action::Install | Action::Uninstall | Action::Unbuild | Action::Remove => {
            lifecycle::run(action, &inv)
        }
    }
}
