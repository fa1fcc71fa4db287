//! Facts about one target kernel that building and installing depend on: where its headers
//! are (and whether they are really there), its config, the module compression it uses and its
//! System.map — looked up once per kernel, all under `--root`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::base::error::{Error, Result};
use crate::system::config::Paths;

/// How the kernel's own modules are compressed; DKMS compresses built modules the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

impl Compression {
    /// Every suffix a module file may carry, uncompressed first.
    pub const ALL: [Compression; 4] = [
        Compression::None,
        Compression::Gzip,
        Compression::Xz,
        Compression::Zstd,
    ];

    /// What follows `.ko` in a file name.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Xz => ".xz",
            Compression::Zstd => ".zst",
        }
    }
}

/// The module file name `<name>.ko<suffix>`.
pub fn module_file_name(name: &str, compression: Compression) -> String {
    format!("{name}.ko{}", compression.suffix())
}

/// What rdkms needs to know about one kernel/arch target.
#[derive(Debug, Clone)]
pub struct KernelFacts {
    pub kernel: String,
    pub arch: String,
    /// `<installtree>/K`: where the kernel's modules live and ours are installed.
    pub modules_dir: PathBuf,
    /// The kernel build tree to compile against (`$kernel_source_dir`).
    pub source_dir: PathBuf,
    /// Whether `source_dir` really holds headers (a Makefile or include/).
    pub headers_present: bool,
    /// The kernel config (`--config`, else `<source>/.config`, else `include/config/auto.conf`).
    pub config: PathBuf,
    /// The compression of the kernel's own modules.
    pub compression: Compression,
    /// `<boot>/System.map-K`, if present (passed to depmod with -F).
    pub system_map: Option<PathBuf>,
}

/// Options from the command line that change where the kernel facts come from.
#[derive(Debug, Clone, Default)]
pub struct KernelOverrides {
    /// `--kernelsourcedir DIR`.
    pub source_dir: Option<PathBuf>,
    /// `--config FILE`.
    pub config: Option<PathBuf>,
}

impl KernelFacts {
    /// Looks the facts up. Cheap: a few stats plus, for compression, one read of modules.dep
    /// (or a walk of the kernel's module tree when there is no modules.dep).
    pub fn probe(paths: &Paths, kernel: &str, arch: &str, ov: &KernelOverrides) -> KernelFacts {
        let modules_dir = paths.install_tree.join(kernel);
        let (source_dir, headers_present) = match &ov.source_dir {
            Some(dir) => (dir.clone(), holds_headers(dir)),
            None => {
                let build = modules_dir.join("build");
                let source = modules_dir.join("source");
                if holds_headers(&build) {
                    (build, true)
                } else if holds_headers(&source) {
                    (source, true)
                } else {
                    (build, false)
                }
            }
        };
        let config = ov.config.clone().unwrap_or_else(|| {
            let dot = source_dir.join(".config");
            let auto = source_dir.join("include/config/auto.conf");
            if !dot.is_file() && auto.is_file() {
                auto
            } else {
                dot
            }
        });
        let system_map =
            Some(paths.boot.join(format!("System.map-{kernel}"))).filter(|p| p.is_file());
        KernelFacts {
            kernel: kernel.to_string(),
            arch: arch.to_string(),
            compression: detect_compression(&modules_dir)
                .or_else(|| configured_compression(&config))
                .unwrap_or(Compression::None),
            modules_dir,
            source_dir,
            headers_present,
            config,
            system_map,
        }
    }

    /// Fails with DKMS's "headers missing" error (exit 21) naming the package to install.
    pub fn require_headers(&self) -> Result<()> {
        if self.headers_present {
            return Ok(());
        }
        Err(Error::MissingHeaders {
            kernel: self.kernel.clone(),
            dir: self.source_dir.clone(),
        })
    }

    /// The `CC` DKMS exports for make: taken from the headers' `.kernelvariables` when they have
    /// one (Ubuntu), otherwise none (so kbuild picks the compiler the kernel config names).
    pub fn make_cc(&self) -> Option<String> {
        let vars = self.source_dir.join(".kernelvariables");
        if !vars.is_file() {
            return None;
        }
        let makefile = format!("show-%:\n\t@echo $($*)\ninclude {}\n", vars.display());
        let out = Command::new("make")
            .args(["-s", "-f", "-", "show-CC"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                if let Some(mut stdin) = child.stdin.take() {
                    stdin.write_all(makefile.as_bytes())?;
                }
                child.wait_with_output()
            })
            .ok()?;
        let cc = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !cc.is_empty()).then_some(cc)
    }
}

/// A kernel build tree is usable when it has a top Makefile or an include/ directory.
fn holds_headers(dir: &Path) -> bool {
    dir.join("Makefile").is_file() || dir.join("include").is_dir()
}

/// The compression the kernel's modules use, as DKMS finds it: from the suffixes listed in
/// `modules.dep` (Debian 12's dkms) or, without one, from the module files themselves
/// (upstream's `find`); zst beats xz beats gz when several appear. `None` when no module
/// says (headers installed without the image).
pub fn detect_compression(modules_dir: &Path) -> Option<Compression> {
    let mut seen = [false; 4];
    let mut note = |name: &str| {
        for (i, c) in Compression::ALL.iter().enumerate().skip(1) {
            if name.ends_with(&format!(".ko{}", c.suffix())) {
                seen[i] = true;
            }
        }
    };
    if let Ok(dep) = std::fs::read_to_string(modules_dir.join("modules.dep")) {
        for line in dep.lines() {
            if let Some((module, _)) = line.split_once(':') {
                note(module);
            }
        }
    } else {
        for entry in walkdir::WalkDir::new(modules_dir)
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| {
                e.depth() != 1 || !matches!(e.file_name().to_str(), Some("build" | "source"))
            })
            .flatten()
        {
            if entry.file_type().is_file() {
                note(&entry.file_name().to_string_lossy());
            }
        }
    }
    if !seen.iter().any(|s| *s) && !modules_dir.join("kernel").is_dir() {
        return None;
    }
    Some(
        Compression::ALL
            .iter()
            .enumerate()
            .rev()
            .find(|(i, _)| seen[*i])
            .map_or(Compression::None, |(_, c)| *c),
    )
}

/// Without the kernel's modules, the compression its config asks the kernel's own
/// `modules_install` for (`CONFIG_MODULE_COMPRESS_XZ=y`, Debian 13), so modules built before the
/// image is installed already match it.
pub fn configured_compression(config: &Path) -> Option<Compression> {
    let text = std::fs::read_to_string(config).ok()?;
    text.lines().find_map(|l| match l.trim() {
        "CONFIG_MODULE_COMPRESS_XZ=y" => Some(Compression::Xz),
        "CONFIG_MODULE_COMPRESS_ZSTD=y" => Some(Compression::Zstd),
        "CONFIG_MODULE_COMPRESS_GZIP=y" => Some(Compression::Gzip),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_from_modules_dep_prefers_zst() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("modules.dep"),
            "kernel/a.ko.xz:\nkernel/b.ko.zst: kernel/a.ko.xz\n",
        )
        .unwrap();
        assert_eq!(detect_compression(dir.path()), Some(Compression::Zstd));
    }

    #[test]
    fn compression_from_files_without_modules_dep() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("kernel/drivers");
        std::fs::create_dir_all(&k).unwrap();
        std::fs::write(k.join("x.ko.xz"), "").unwrap();
        assert_eq!(detect_compression(dir.path()), Some(Compression::Xz));
        std::fs::remove_file(k.join("x.ko.xz")).unwrap();
        std::fs::write(k.join("x.ko"), "").unwrap();
        assert_eq!(detect_compression(dir.path()), Some(Compression::None));
    }

    #[test]
    fn headers_without_modules_take_the_compression_from_the_config() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::under(root.path());
        let k = "6.12.117+deb13-amd64";
        let build = paths.install_tree.join(k).join("build");
        std::fs::create_dir_all(build.join("include")).unwrap();
        std::fs::write(
            build.join(".config"),
            "CONFIG_MODULE_COMPRESS=y\n# CONFIG_MODULE_COMPRESS_GZIP is not set\nCONFIG_MODULE_COMPRESS_XZ=y\n",
        )
        .unwrap();
        let probe = || KernelFacts::probe(&paths, k, "x86_64", &KernelOverrides::default());
        assert_eq!(probe().compression, Compression::Xz);
        // The kernel's own modules win once they are there.
        let kernel = paths.install_tree.join(k).join("kernel");
        std::fs::create_dir_all(&kernel).unwrap();
        std::fs::write(kernel.join("a.ko"), "").unwrap();
        assert_eq!(probe().compression, Compression::None);
    }

    #[test]
    fn headers_are_found_in_build_then_source() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::under(root.path());
        let k = "6.1.0-9-amd64";
        let facts = KernelFacts::probe(&paths, k, "x86_64", &KernelOverrides::default());
        assert!(!facts.headers_present);
        assert_eq!(facts.require_headers().unwrap_err().exit_code(), 21);
        let src = paths.install_tree.join(k).join("source/include");
        std::fs::create_dir_all(&src).unwrap();
        let facts = KernelFacts::probe(&paths, k, "x86_64", &KernelOverrides::default());
        assert!(facts.headers_present);
        assert!(facts.source_dir.ends_with("source"));
        assert!(facts.config.ends_with("source/.config"));
    }

    #[test]
    fn module_file_names() {
        assert_eq!(module_file_name("hello", Compression::None), "hello.ko");
        assert_eq!(module_file_name("hello", Compression::Zstd), "hello.ko.zst");
    }
}
