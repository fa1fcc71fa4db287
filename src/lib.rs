//! rdkms: a DKMS-compatible manager for out-of-tree kernel modules. The binary is a thin shell
//! around this library so integration tests and every command share one implementation.

pub mod add;
pub mod archive;
pub mod atomic;
pub mod bmdeb;
pub mod build;
pub mod build_order;
pub mod build_user;
pub mod cli;
pub mod conf;
pub mod config;
pub mod console;
pub mod copyright;
pub mod date;
pub mod deb;
pub mod depmod;
pub mod error;
pub mod fingerprint;
pub mod host;
pub mod initramfs;
pub mod install;
pub mod inventory;
pub mod journal;
pub mod kernel;
pub mod lifecycle;
pub mod lock;
pub mod mkdeb;
pub mod par;
pub mod plan;
pub mod presence;
pub mod reconcile;
pub mod registered;
pub mod report;
pub mod script;
pub mod signing;
pub mod status;
pub mod tarball;
pub mod tool;
pub mod tree;
pub mod trust;
pub mod version;

pub use error::{Error, Result};

use cli::{Action, Invocation};

/// Runs one parsed command line and returns the process exit status.
pub fn run(inv: Invocation) -> Result<i32> {
    if inv.cli.print_version {
        println!("rdkms-{}", env!("CARGO_PKG_VERSION"));
        return Ok(0);
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
        Action::Status => status::run(&inv),
        Action::Add => add::run(&inv),
        Action::Autoinstall
        | Action::KernelPostinst
        | Action::KernelPrerm
        | Action::Reconcile
        | Action::Plan
        | Action::CommonPostinst => reconcile::run(action, &inv),
        Action::Build | Action::Install | Action::Uninstall | Action::Unbuild | Action::Remove => {
            lifecycle::run(action, &inv)
        }
    }
}
