//! rdkms: a DKMS-compatible manager for out-of-tree kernel modules. The binary is a thin shell
//! around this library so integration tests and every command share one implementation.

pub mod add;
pub mod archive;
pub mod atomic;
pub mod bmdeb;
pub mod broken;
pub mod build;
pub mod build_order;
pub mod build_user;
pub mod cli;
pub mod compress;
pub mod conf;
pub mod config;
pub mod console;
pub mod copyright;
pub mod date;
pub mod deb;
pub mod dependents;
pub mod depmod;
pub mod dkms_autoinstall;
pub mod doctor;
pub mod error;
pub mod fingerprint;
pub mod framework;
pub mod generate_mok;
pub mod help;
pub mod host;
pub mod initramfs;
pub mod install;
pub mod inventory;
pub mod journal;
pub mod kernel;
pub mod lifecycle;
pub mod lock;
pub mod manpage;
pub mod mkdeb;
pub mod mok;
pub mod original;
pub mod par;
pub mod persona;
pub mod plan;
pub mod presence;
pub mod progress;
pub mod reconcile;
pub mod registered;
pub mod report;
pub mod script;
pub mod signing;
pub mod sources;
pub mod status;
pub mod tarball;
pub mod template;
pub mod tool;
pub mod tree;
pub mod trust;
pub mod version;

pub use error::{Error, Result};

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
        Action::ConfShow => conf::show::run(&inv),
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
