//! One module/version registered in the dkms tree, as the packaging commands see it: where its
//! sources are, which kernels it is built for, which module files a build produced, and its
//! dkms.conf read for one of those kernels.

use std::fs;
use std::path::{Path, PathBuf};

use crate::base::error::{Error, IoContext, Result};
use crate::cmd::cli::Invocation;
use crate::conf::{self, model::Target, DkmsConf, EvalMode, LoadRequest};
use crate::state::tree::Tree;
use crate::system::config::Paths;
use crate::system::host;

/// A module/version known to the dkms tree.
#[derive(Debug, Clone)]
pub struct Registered {
    pub module: String,
    pub version: String,
    pub paths: Paths,
    pub tree: Tree,
}

/// One (kernel, arch) a module is built for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Build {
    pub kernel: String,
    pub arch: String,
}

impl Registered {
    /// The module/version if `<dkmstree>/M/V` exists; `NotAdded` otherwise.
    pub fn open(paths: &Paths, module: &str, version: &str) -> Result<Registered> {
        let tree = Tree::new(&paths.dkms_tree);
        if !tree.version_dir(module, version).is_dir() {
            return Err(Error::NotAdded {
                module: module.into(),
                version: version.into(),
            });
        }
        Ok(Registered {
            module: module.into(),
            version: version.into(),
            paths: paths.clone(),
            tree,
        })
    }

    /// The module/version named on the command line of `action`, which must be registered.
    pub fn from_invocation(inv: &Invocation, action: &str) -> Result<Registered> {
        let (Some(module), Some(version)) = (&inv.module, &inv.version) else {
            return Err(Error::MissingModule {
                action: action.into(),
            });
        };
        Registered::open(&Paths::from_cli(&inv.cli), module, version)
    }

    /// The builds a command line asks for: `--all` = every build in the tree; otherwise each
    /// `-k KVER[/ARCH]` (arch defaulting to the machine's), or the running kernel, as DKMS does.
    pub fn requested_builds(&self, inv: &Invocation) -> Result<Vec<Build>> {
        if inv.cli.all {
            let builds = self.builds()?;
            if builds.is_empty() {
                return Err(Error::NotBuilt {
                    module: self.module.clone(),
                    version: self.version.clone(),
                    kernel: host::running_kernel(),
                    arch: host::machine_arch(),
                });
            }
            return Ok(builds);
        }
        if inv.kernels.is_empty() {
            return Ok(vec![Build {
                kernel: host::running_kernel(),
                arch: inv
                    .cli
                    .archs
                    .first()
                    .cloned()
                    .unwrap_or_else(host::machine_arch),
            }]);
        }
        Ok(inv
            .kernels
            .iter()
            .map(|k| Build {
                kernel: k.kernel.clone(),
                arch: k.arch.clone().unwrap_or_else(host::machine_arch),
            })
            .collect())
    }

    /// `<dkmstree>/M/V`.
    pub fn dir(&self) -> PathBuf {
        self.tree.version_dir(&self.module, &self.version)
    }

    /// The source directory: what `<dkmstree>/M/V/source` points at (an absolute target is a
    /// system path, so it is looked up under `--root` first), a real `source` directory (left by
    /// a binaries-only tarball), or `<sourcetree>/M-V`.
    pub fn source_dir(&self) -> Result<PathBuf> {
        let link = self.tree.source_link(&self.module, &self.version);
        let mut candidates = Vec::new();
        if let Ok(target) = fs::read_link(&link) {
            if target.is_absolute() {
                candidates.push(self.paths.system(&target));
                candidates.push(target);
            } else {
                candidates.push(self.dir().join(target));
            }
        } else if link.is_dir() {
            candidates.push(link.clone());
        }
        let default = self
            .paths
            .source_tree
            .join(format!("{}-{}", self.module, self.version));
        candidates.push(default.clone());
        candidates
            .into_iter()
            .find(|c| c.join("dkms.conf").is_file())
            .ok_or(Error::SourceMissing { path: default })
    }

    /// Every (kernel, arch) with a `module/` directory, sorted, as `--all` means for packaging.
    pub fn builds(&self) -> Result<Vec<Build>> {
        let mut out = Vec::new();
        for kernel in sorted_dirs(&self.dir())? {
            let kdir = self.dir().join(&kernel);
            for arch in sorted_dirs(&kdir)? {
                if kdir.join(&arch).join("module").is_dir() {
                    out.push(Build {
                        kernel: kernel.clone(),
                        arch,
                    });
                }
            }
        }
        Ok(out)
    }

    /// The built module files (`*.ko`, `*.ko.xz`, `*.ko.zst`, `*.ko.gz`) of one build, sorted;
    /// `NotBuilt` if there are none.
    pub fn built_modules(&self, build: &Build) -> Result<Vec<PathBuf>> {
        let dir =
            self.tree
                .built_modules_dir(&self.module, &self.version, &build.kernel, &build.arch);
        let mut files = Vec::new();
        if dir.is_dir() {
            for entry in fs::read_dir(&dir).ctx("read", &dir)? {
                let path = entry.ctx("read", &dir)?.path();
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                let is_module = name.ends_with(".ko") || name.contains(".ko.");
                if is_module && path.is_file() {
                    files.push(path);
                }
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(Error::NotBuilt {
                module: self.module.clone(),
                version: self.version.clone(),
                kernel: build.kernel.clone(),
                arch: build.arch.clone(),
            });
        }
        Ok(files)
    }

    /// The module's dkms.conf (plus /etc/dkms overrides and `--directive`s) for one build.
    pub fn conf(&self, build: &Build, directives: &[String]) -> Result<DkmsConf> {
        let source = self.source_dir()?;
        let kernel_source_dir = self.paths.kernel_build_dir(&build.kernel);
        conf::load(&LoadRequest {
            conf_file: source.join("dkms.conf"),
            module: self.module.clone(),
            module_version: self.version.clone(),
            target: Target {
                kernel: build.kernel.clone(),
                arch: build.arch.clone(),
                kernel_config: kernel_source_dir.join(".config"),
                kernel_source_dir,
                build_dir: self.dir().join("build"),
                location_override: host::location_override(&self.paths),
            },
            etc_dkms: Some(self.paths.etc_dkms.clone()),
            dkms_tree: self.paths.dkms_tree.clone(),
            source_tree: self.paths.source_tree.clone(),
            install_tree: self.paths.install_tree.clone(),
            directive_overrides: directives.to_vec(),
            mode: EvalMode::Auto,
        })
    }
}

/// PACKAGE_NAME and PACKAGE_VERSION of an unregistered source directory, read from its dkms.conf.
pub fn identity(paths: &Paths, dir: &Path, inv: &Invocation) -> Result<(String, String)> {
    let base = dir
        .canonicalize()
        .ctx("read", dir)?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (module, version) = base
        .rsplit_once('-')
        .map(|(m, v)| (m.to_string(), v.to_string()))
        .unwrap_or((base.clone(), String::new()));
    let kernel = inv
        .kernels
        .first()
        .map(|k| k.kernel.clone())
        .unwrap_or_else(host::running_kernel);
    let kernel_source_dir = paths.kernel_build_dir(&kernel);
    let conf = conf::load(&LoadRequest {
        conf_file: dir.join("dkms.conf"),
        module: module.clone(),
        module_version: version,
        target: Target {
            kernel,
            arch: host::machine_arch(),
            kernel_config: kernel_source_dir.join(".config"),
            kernel_source_dir,
            build_dir: paths.dkms_tree.join(&module).join("build"),
            location_override: host::location_override(paths),
        },
        etc_dkms: None,
        dkms_tree: paths.dkms_tree.clone(),
        source_tree: paths.source_tree.clone(),
        install_tree: paths.install_tree.clone(),
        directive_overrides: inv.cli.directives.clone(),
        mode: EvalMode::Auto,
    })?;
    Ok((conf.package_name, conf.package_version))
}

/// Names of the real (non-symlink) subdirectories of `dir`, sorted; none if `dir` is absent.
fn sorted_dirs(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return Ok(out);
    };
    for entry in rd {
        let entry = entry.ctx("read", dir)?;
        if entry.file_type().ctx("read", entry.path())?.is_dir() {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"x").unwrap();
    }

    #[test]
    fn finds_builds_modules_and_sources_under_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths::under(tmp.path());
        assert!(matches!(
            Registered::open(&paths, "m", "1"),
            Err(Error::NotAdded { .. })
        ));
        let v = paths.dkms_tree.join("m/1");
        touch(&v.join("6.1.0-1-amd64/x86_64/module/m.ko"));
        touch(&v.join("6.1.0-1-amd64/x86_64/module/notes.txt"));
        touch(&v.join("6.1.0-2-amd64/x86_64/log/make.log"));
        touch(&v.join("5.10.0-1-amd64/x86_64/module/m.ko.xz"));
        touch(&paths.source_tree.join("m-1/dkms.conf"));
        fs::create_dir_all(v.join("build")).unwrap();
        std::os::unix::fs::symlink("/usr/src/m-1", v.join("source")).unwrap();

        let r = Registered::open(&paths, "m", "1").unwrap();
        let builds = r.builds().unwrap();
        let kernels: Vec<&str> = builds.iter().map(|b| b.kernel.as_str()).collect();
        assert_eq!(kernels, ["5.10.0-1-amd64", "6.1.0-1-amd64"]);
        let mods = r.built_modules(&builds[1]).unwrap();
        assert_eq!(mods, vec![v.join("6.1.0-1-amd64/x86_64/module/m.ko")]);
        let unbuilt = Build {
            kernel: "6.1.0-2-amd64".into(),
            arch: "x86_64".into(),
        };
        assert!(matches!(
            r.built_modules(&unbuilt),
            Err(Error::NotBuilt { .. })
        ));
        assert_eq!(r.source_dir().unwrap(), paths.source_tree.join("m-1"));
    }
}
