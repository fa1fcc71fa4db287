//! Facts about the machine that DKMS takes from the host: running kernel, architecture and the
//! distribution (which decides where modules are installed).

use crate::system::config::Paths;

/// `uname -r`.
pub fn running_kernel() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `uname -m`.
pub fn machine_arch() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.machine().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The distribution key DKMS uses: `ubuntu` if ID=ubuntu, else ID_LIKE if set, else ID, from
/// `<root>/etc/os-release` or `<root>/usr/lib/os-release`. rdkms targets Debian and Ubuntu, so
/// a root without os-release (a test sandbox) counts as `debian`.
pub fn distribution(paths: &Paths) -> String {
    let text = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(paths.system(p)).ok());
    let Some(text) = text else {
        return "debian".to_string();
    };
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
            .filter(|v| !v.is_empty())
    };
    let id = field("ID").unwrap_or_default();
    if id == "ubuntu" {
        return id;
    }
    field("ID_LIKE").unwrap_or(id)
}

/// DKMS's install-location override for the distribution (`/updates/dkms` on Debian/Ubuntu).
pub fn location_override(paths: &Paths) -> Option<String> {
    let d = distribution(paths);
    let starts = |p: &str| d.starts_with(p);
    if starts("fedora") || starts("rhel") || starts("ovm") {
        Some("/extra".into())
    } else if starts("sles") || starts("suse") || starts("opensuse") {
        Some("/updates".into())
    } else if starts("debian") || starts("ubuntu") || starts("arch") {
        Some("/updates/dkms".into())
    } else {
        None
    }
}
