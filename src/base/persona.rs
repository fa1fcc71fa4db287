//! The name rdkms was started under. As `dkms` (the /usr/sbin/dkms link that every maintainer
//! script, hook and DKMS test calls) it prints DKMS 3.2.2's messages exactly; as `rdkms` it also
//! prints its one-line hints.

use std::path::Path;
use std::sync::OnceLock;

static AS_DKMS: OnceLock<bool> = OnceLock::new();

/// Whether argv[0]'s basename is `dkms`.
pub fn as_dkms() -> bool {
    *AS_DKMS.get_or_init(|| {
        std::env::args_os()
            .next()
            .is_some_and(|a| Path::new(&a).file_name().is_some_and(|n| n == "dkms"))
    })
}

/// The version string `--version` prints and make.log headers repeat.
pub fn version() -> String {
    format!("rdkms-{}", env!("CARGO_PKG_VERSION"))
}
