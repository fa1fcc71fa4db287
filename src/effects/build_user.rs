//! Unprivileged builds (`build_user` in framework.conf, or `--build-user USER`): patches,
//! PRE_BUILD, the MAKE command and POST_BUILD run as that user inside the private build
//! directory, which is handed to it first, as akmods does. Everything else stays root's: the sources are only read, the
//! results are copied out into new root-owned files (so a process the build left behind cannot
//! change them), and install runs as root. Unset (the default) builds as root, like DKMS.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::base::error::{Error, IoContext, Result};
use crate::system::config::Paths;
use crate::system::report;

/// The framework.conf setting.
pub const SETTING: &str = "build_user";

/// The account builds run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl BuildUser {
    /// The user the command line or framework.conf names, if any (the option wins).
    pub fn configured(paths: &Paths, option: Option<&str>) -> Result<Option<BuildUser>> {
        let from_conf = report::framework_value(paths, SETTING).map(|(v, _)| v);
        let Some(name) = option.map(str::to_string).or(from_conf) else {
            return Ok(None);
        };
        if name.is_empty() || name == "root" {
            return Ok(None);
        }
        let fix = format!(
            "create it (adduser --system --group {name}) or remove {SETTING} from /etc/dkms/framework.conf"
        );
        let user = nix::unistd::User::from_name(&name)
            .ok()
            .flatten()
            .ok_or_else(|| Error::Usage(format!("{SETTING} {name}: no such user; {fix}")))?;
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::Usage(format!(
                "{SETTING} {name}: only root can build as another user; run rdkms as root or drop {SETTING}"
            )));
        }
        Ok(Some(BuildUser {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }))
    }

    /// Gives the private build directory (and everything in it, links not followed) to the
    /// user, so the compiler can write there and nowhere else of root's.
    pub fn hand_over(&self, dir: &Path) -> Result<()> {
        for entry in walkdir::WalkDir::new(dir).follow_links(false) {
            let entry = entry.map_err(|e| Error::walk(dir, e))?;
            std::os::unix::fs::lchown(entry.path(), Some(self.uid), Some(self.gid))
                .ctx("chown", entry.path())?;
        }
        Ok(())
    }

    /// Makes `cmd` run as the user (supplementary groups dropped), with its own identity in
    /// the environment.
    pub fn apply(&self, cmd: &mut Command, home: &Path) {
        cmd.uid(self.uid)
            .gid(self.gid)
            .env("HOME", home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name);
    }
}
