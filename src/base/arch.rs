//! Kernel (`uname -m`) and Debian architecture names, mapped both ways: DKMS records the
//! kernel's name, Debian packages and dpkg's database the Debian one.

/// The Debian architecture for a kernel (`uname -m`) architecture; Debian names pass through.
pub fn debian_arch(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "x86_64" | "amd64" => "amd64",
        "aarch64" | "arm64" => "arm64",
        "i386" | "i486" | "i586" | "i686" => "i386",
        "armv7l" | "armv7" | "armhf" => "armhf",
        "armv5tel" | "armv5l" | "armv6l" | "armel" => "armel",
        "ppc64le" | "ppc64el" => "ppc64el",
        "ppc64" => "ppc64",
        "ppc" | "powerpc" => "powerpc",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "mips64" | "mips64el" => "mips64el",
        "mips" | "mipsel" => "mipsel",
        "loongarch64" | "loong64" => "loong64",
        "sparc64" => "sparc64",
        "alpha" => "alpha",
        "parisc" | "parisc64" | "hppa" => "hppa",
        "ia64" => "ia64",
        "m68k" => "m68k",
        "sh4" => "sh4",
        _ => return None,
    })
}

/// The kernel architecture DKMS records for a Debian architecture (inverse of `debian_arch`).
pub fn kernel_arch(debian: &str) -> &str {
    match debian {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "i386" => "i686",
        "armhf" => "armv7l",
        "armel" => "armv5tel",
        "ppc64el" => "ppc64le",
        "powerpc" => "ppc",
        "mips64el" => "mips64",
        "mipsel" => "mips",
        "loong64" => "loongarch64",
        "hppa" => "parisc",
        other => other,
    }
}
