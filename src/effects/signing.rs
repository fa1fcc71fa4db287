//! Module signing as Debian 12's dkms does it: the kernel's `sign-file`, a machine owner key
//! (MOK) kept in the dkms tree and created on first use (in-process, `mok.rs`), the kernel
//! config's signature hash.
//! Without a `sign-file` the modules are simply not signed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::base::error::Result;
use crate::system::console::Console;
use crate::system::kernel::KernelFacts;

/// Everything needed to sign the modules of one build.
#[derive(Debug, Clone)]
pub struct Signer {
    pub sign_file: PathBuf,
    pub hash: String,
    pub key: PathBuf,
    pub cert: PathBuf,
}

/// Where the signing inputs come from: DKMS reads `sign_file`, `mok_signing_key` and
/// `mok_certificate` from framework.conf or the environment.
#[derive(Debug, Clone, Default)]
pub struct SigningConfig {
    pub sign_file: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub cert: Option<PathBuf>,
}

impl SigningConfig {
    /// The settings as DKMS reads them: the environment, overridden by framework.conf and
    /// framework.conf.d/*.conf (which DKMS sources after the environment is set).
    pub fn load(paths: &crate::system::config::Paths) -> SigningConfig {
        let mut cfg = SigningConfig::from_env();
        let settings = crate::system::framework::settings(paths);
        let set = |n: &str| {
            settings
                .get(n)
                .map(|(v, _)| PathBuf::from(v))
                .filter(|v| !v.as_os_str().is_empty())
        };
        cfg.sign_file = set("sign_file").or(cfg.sign_file);
        cfg.key = set("mok_signing_key").or(cfg.key);
        cfg.cert = set("mok_certificate").or(cfg.cert);
        cfg
    }

    /// The settings DKMS takes from the environment.
    pub fn from_env() -> SigningConfig {
        let var = |n: &str| {
            std::env::var_os(n)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        SigningConfig {
            sign_file: var("sign_file"),
            key: var("mok_signing_key"),
            cert: var("mok_certificate"),
        }
    }
}

/// Held while checking for and creating the MOK pair.
static KEY_GENERATION: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Signer {
    /// Finds the signing tool and key for a kernel, creating the key pair when missing.
    /// `None` (with DKMS's notice) when the kernel has no `sign-file` or no key can be made.
    pub fn prepare(
        cfg: &SigningConfig,
        root: &Path,
        dkms_tree: &Path,
        facts: &KernelFacts,
        console: &Console,
    ) -> Result<Option<Signer>> {
        // DKMS expands these lazily, so `${kernelver}` in a value names the kernel being built.
        let sign_file = cfg
            .sign_file
            .as_ref()
            .map(|p| {
                PathBuf::from(
                    p.to_string_lossy()
                        .replace("${kernelver}", &facts.kernel)
                        .replace("$kernelver", &facts.kernel),
                )
            })
            .unwrap_or_else(|| {
                let series = facts.kernel.rsplit_once('.').map_or("", |(s, _)| s);
                let kbuild = crate::system::config::rooted(
                    root,
                    format!("/usr/lib/linux-kbuild-{series}/scripts/sign-file"),
                );
                if kbuild.is_file() {
                    kbuild
                } else {
                    facts.modules_dir.join("build/scripts/sign-file")
                }
            });
        console.say(format!("Sign command: {}", sign_file.display()));
        let executable = fs::metadata(&sign_file)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if !executable {
            console.say(format!(
                "Binary {} not found, modules won't be signed",
                sign_file.display()
            ));
            return Ok(None);
        }
        let Some((key, cert)) = prepare_mok(cfg, dkms_tree, &facts.kernel, console)? else {
            return Ok(None);
        };
        let hash = fs::read_to_string(&facts.config)
            .ok()
            .and_then(|c| {
                c.lines().find_map(|l| {
                    let v = l.strip_prefix("CONFIG_MODULE_SIG_HASH=")?;
                    Some(v.trim_matches('"').to_string())
                })
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "sha512".to_string());
        Ok(Some(Signer {
            sign_file,
            hash,
            key,
            cert,
        }))
    }

    /// Signs one (uncompressed) module in place; a failure is reported and the build goes on
    /// with the unsigned module, as DKMS does. `shown` is where the module ends up (the message
    /// names it, not the staging copy being signed).
    pub fn sign(&self, module: &Path, shown: &Path, console: &Console) {
        console.say(format!("Signing module {}", shown.display()));
        let out = Command::new(&self.sign_file)
            .arg(&self.hash)
            .arg(&self.key)
            .arg(&self.cert)
            .arg(module)
            .stdin(Stdio::null())
            .output();
        let why = match out {
            Ok(o) if o.status.success() => return,
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => e.to_string(),
        };
        console.warn(format!("Failed to sign module '{}'!", shown.display()));
        if crate::base::persona::as_dkms() {
            console.say("");
        } else {
            console.say(format!("sign-file: {why}"));
        }
    }
}

/// The MOK pair (key, certificate), created when missing, announced as DKMS does; `None` when
/// it cannot be made. What builds use before signing, and all of `generate_mok`. `${kernelver}`
/// in a configured path names `kernel`.
pub fn prepare_mok(
    cfg: &SigningConfig,
    dkms_tree: &Path,
    kernel: &str,
    console: &Console,
) -> Result<Option<(PathBuf, PathBuf)>> {
    let expand = |p: &PathBuf| {
        PathBuf::from(
            p.to_string_lossy()
                .replace("${kernelver}", kernel)
                .replace("$kernelver", kernel),
        )
    };
    let key = cfg
        .key
        .as_ref()
        .map(expand)
        .unwrap_or_else(|| dkms_tree.join("mok.key"));
    let cert = cfg
        .cert
        .as_ref()
        .map(expand)
        .unwrap_or_else(|| dkms_tree.join("mok.pub"));
    console.say(format!("Signing key: {}", key.display()));
    console.say(format!("Public certificate (MOK): {}", cert.display()));
    let pkcs11 = key.to_string_lossy().starts_with("pkcs11:");
    if !pkcs11 {
        // Concurrent builds share one key pair: the first makes it, the others wait for it.
        let _generating = KEY_GENERATION
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // As DKMS, a missing pair is made where the configured directories exist and a file
        // is reported where its directory does not (the default one, the tree, is created).
        let defaults = key == dkms_tree.join("mok.key") && cert == dkms_tree.join("mok.pub");
        for (path, what) in [(&key, "Key"), (&cert, "Certificate")] {
            let no_dir = path.parent().is_some_and(|d| !d.is_dir());
            if !defaults && no_dir && !path.is_file() {
                console.say(format!(
                    "{what} file {} not found and can't be generated, modules won't be signed",
                    path.display()
                ));
                return Ok(None);
            }
        }
        if (!key.is_file() || !cert.is_file()) && !generate_noisily(&key, &cert, console)? {
            return Ok(None);
        }
    }
    Ok(Some((key, cert)))
}

/// Creates the missing MOK pair with DKMS's messages; false (after one warning naming the
/// cause and the fix) when it cannot be made.
fn generate_noisily(key: &Path, cert: &Path, console: &Console) -> Result<bool> {
    console.say("Certificate or key are missing, generating self signed certificate for MOK...");
    let made = crate::effects::mok::KeyPair::generate()
        .map_err(|e| e.to_string())
        .and_then(|pair| pair.write(key, cert).map_err(|e| e.to_string()));
    match made {
        Ok(()) => Ok(true),
        Err(why) => {
            console.warn(format!(
                "cannot create the MOK key pair {} + {} ({why}), modules won't be signed; \
                 fix the cause or name an existing pair with mok_signing_key= and \
                 mok_certificate= in /etc/dkms/framework.conf",
                key.display(),
                cert.display()
            ));
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(root: &Path, config: &str) -> KernelFacts {
        let cfg = root.join("config");
        fs::write(&cfg, config).unwrap();
        KernelFacts {
            kernel: "6.1.0-9-amd64".into(),
            arch: "x86_64".into(),
            modules_dir: root.join("lib/modules/6.1.0-9-amd64"),
            source_dir: root.join("lib/modules/6.1.0-9-amd64/build"),
            headers_present: true,
            config: cfg,
            compression: crate::system::kernel::Compression::None,
            system_map: None,
        }
    }

    const QUIET: Console = Console {
        quiet: true,
        verbose: false,
        signing_shown: false,
    };

    #[test]
    fn framework_conf_d_names_the_key_pair_with_kernelver() {
        let t = tempfile::tempdir().unwrap();
        let paths = crate::system::config::Paths::under(t.path());
        let d = paths.etc_dkms.join("framework.conf.d");
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join("mok.conf"),
            "mok_signing_key=/keys/${kernelver}.key\nmok_certificate=\"/keys/c.der\"\n",
        )
        .unwrap();
        let cfg = SigningConfig::load(&paths);
        assert_eq!(cfg.key, Some(PathBuf::from("/keys/${kernelver}.key")));
        assert_eq!(cfg.cert, Some(PathBuf::from("/keys/c.der")));
        let tool = t.path().join("sign-file");
        fs::write(&tool, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
        let key = t.path().join("6.1.0-9-amd64.key");
        fs::write(&key, "").unwrap();
        fs::write(t.path().join("c.der"), "").unwrap();
        let cfg = SigningConfig {
            sign_file: Some(tool),
            key: Some(t.path().join("${kernelver}.key")),
            cert: Some(t.path().join("c.der")),
        };
        let f = facts(t.path(), "");
        let s = Signer::prepare(&cfg, t.path(), t.path(), &f, &QUIET)
            .unwrap()
            .unwrap();
        assert_eq!(s.key, key);
    }

    #[test]
    fn no_sign_file_means_no_signing() {
        let t = tempfile::tempdir().unwrap();
        let f = facts(t.path(), "");
        let s = Signer::prepare(&SigningConfig::default(), t.path(), t.path(), &f, &QUIET).unwrap();
        assert!(s.is_none());
    }

    #[test]
    fn finds_the_kbuild_sign_file_and_the_hash() {
        let t = tempfile::tempdir().unwrap();
        let tool = t.path().join("usr/lib/linux-kbuild-6.1/scripts/sign-file");
        fs::create_dir_all(tool.parent().unwrap()).unwrap();
        fs::write(&tool, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
        let key = t.path().join("k");
        let cert = t.path().join("c");
        fs::write(&key, "").unwrap();
        fs::write(&cert, "").unwrap();
        let cfg = SigningConfig {
            sign_file: None,
            key: Some(key.clone()),
            cert: Some(cert),
        };
        let f = facts(t.path(), "CONFIG_MODULE_SIG_HASH=\"sha256\"\n");
        let s = Signer::prepare(&cfg, t.path(), t.path(), &f, &QUIET)
            .unwrap()
            .unwrap();
        assert_eq!(s.sign_file, tool);
        assert_eq!(s.hash, "sha256");
        assert_eq!(s.key, key);
    }
}
