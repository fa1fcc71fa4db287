//! framework.conf's `post_transaction` (DKMS 3.2.2): a command run after each successful
//! install, uninstall, unbuild or remove, logged in `<tree>/post_transaction.log` as make.log
//! logs build steps. Its failure is reported and does not fail the command, as DKMS.

use std::fs::File;
use std::process::{Command, Stdio};

use crate::base::error::{IoContext, Result};
use crate::effects::build::logged_step;
use crate::system::config::Paths;
use crate::system::console::Console;

const DESCRIPTION: &str = "Executing post-transaction command";

/// Runs the configured command, if any, with `$kernelver` naming `kernel`.
pub fn run(paths: &Paths, kernel: &str, console: &Console) -> Result<()> {
    let Some((command, _)) = crate::system::framework::settings(paths).remove("post_transaction")
    else {
        return Ok(());
    };
    let command = command
        .replace("${kernelver}", kernel)
        .replace("$kernelver", kernel);
    if command.trim().is_empty() {
        return Ok(());
    }
    let log_path = paths.dkms_tree.join("post_transaction.log");
    let mut log = File::create(&log_path).ctx("create", &log_path)?;
    console.command(&command);
    console.begin(DESCRIPTION);
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(&command).stdin(Stdio::null());
    let (code, _) = logged_step(&mut log, DESCRIPTION, &command, cmd)?;
    console.done(Some(code));
    if code != 0 {
        console.say("Failed command:");
        console.say(&command);
    }
    Ok(())
}
