//! `generate_mok` (DKMS 3.2.2): create the machine owner key pair that module signing uses, when
//! it is missing, without building anything (e.g. to enrol it with mokutil before the first
//! build).

use crate::base::error::Result;
use crate::cmd::cli::Invocation;
use crate::effects::signing::{self, SigningConfig};
use crate::system::console::Console;

/// Runs `generate_mok`: prints where the key and certificate are and makes them if needed.
/// Exit status 1 when they cannot be made, as DKMS.
pub fn run(inv: &Invocation) -> Result<i32> {
    let paths = crate::cmd::cli::paths(&inv.cli);
    let console = Console {
        quiet: inv.cli.quiet,
        verbose: inv.cli.verbose,
        signing_shown: false,
    };
    let made = signing::prepare_mok(&SigningConfig::load(&paths), &paths.dkms_tree, "", &console)?;
    Ok(if made.is_some() { 0 } else { 1 })
}
