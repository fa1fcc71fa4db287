//! Module signing as Debian 12's dkms does it: the kernel's `sign-file`, a machine owner key
//! (MOK) kept in the dkms tree and created on first use, the kernel config's signature hash.
//! Without a `sign-file` the modules are simply not signed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::console::Console;
use crate::error::{IoContext, Result};
use crate::kernel::KernelFacts;

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
        let sign_file = cfg.sign_file.clone().unwrap_or_else(|| {
            let series = facts.kernel.rsplit_once('.').map_or("", |(s, _)| s);
            let kbuild = crate::config::rooted(
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
        let Some((key, cert)) = prepare_mok(cfg, dkms_tree, console)? else {
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
    /// with the unsigned module, as DKMS does.
    /// It is announced as `shown`: where DKMS would have signed it.
    pub fn sign(&self, module: &Path, shown: &Path, console: &Console) {
        console.say(format!("Signing module {}", shown.display()));
        let out = Command::new(&self.sign_file)
            .arg(&self.hash)
            .arg(&self.key)
            .arg(&self.cert)
            .arg(module)
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => console.warn(format!(
                "Failed to sign module '{}': {}",
                module.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => console.warn(format!("Failed to sign module '{}': {e}", module.display())),
        }
    }
}

/// The MOK pair (key, certificate), created when missing, announced as DKMS does; `None` when
/// it cannot be made. What builds use before signing, and all of `generate_mok`.
pub fn prepare_mok(
    cfg: &SigningConfig,
    dkms_tree: &Path,
    console: &Console,
) -> Result<Option<(PathBuf, PathBuf)>> {
    let key = cfg.key.clone().unwrap_or_else(|| dkms_tree.join("mok.key"));
    let cert = cfg
        .cert
        .clone()
        .unwrap_or_else(|| dkms_tree.join("mok.pub"));
    console.say(format!("Signing key: {}", key.display()));
    console.say(format!("Public certificate (MOK): {}", cert.display()));
    let pkcs11 = key.to_string_lossy().starts_with("pkcs11:");
    if !pkcs11 {
        // Concurrent builds share one key pair: the first makes it, the others wait for it.
        let _generating = KEY_GENERATION
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if (!key.is_file() || !cert.is_file()) && !generate_noisily(&key, &cert, console)? {
            return Ok(None);
        }
    }
    Ok(Some((key, cert)))
}

/// Creates the missing MOK pair with DKMS's messages; false when it cannot be made.
fn generate_noisily(key: &Path, cert: &Path, console: &Console) -> Result<bool> {
    console.say("Certificate or key are missing, generating self signed certificate for MOK...");
    let made = generate(key, cert)?;
    if !made {
        console.say(format!(
            "Key file {} not found and can't be generated, modules won't be signed",
            key.display()
        ));
    }
    Ok(made)
}

/// Creates the MOK pair with openssl (key PEM, mode 0600; certificate DER), each written under a
/// temporary name and renamed. Returns false when openssl fails.
fn generate(key: &Path, cert: &Path) -> Result<bool> {
    let dir = key.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).ctx("create", dir)?;
    if let Some(d) = cert.parent() {
        fs::create_dir_all(d).ctx("create", d)?;
    }
    let tmp_key = dir.join(format!(
        ".mok.key.{}.{}",
        std::process::id(),
        crate::atomic::TMP_MARK
    ));
    let tmp_cert = dir.join(format!(
        ".mok.pub.{}.{}",
        std::process::id(),
        crate::atomic::TMP_MARK
    ));
    let status = Command::new("openssl")
        .args(["req", "-new", "-x509", "-nodes", "-days", "36500"])
        .args([
            "-subj",
            "/CN=DKMS module signing key",
            "-newkey",
            "rsa:2048",
        ])
        .arg("-keyout")
        .arg(&tmp_key)
        .args(["-outform", "DER", "-out"])
        .arg(&tmp_cert)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) || !tmp_key.is_file() || !tmp_cert.is_file() {
        let _ = fs::remove_file(&tmp_key);
        let _ = fs::remove_file(&tmp_cert);
        return Ok(false);
    }
    fs::set_permissions(&tmp_key, fs::Permissions::from_mode(0o600))
        .ctx("set permissions of", &tmp_key)?;
    fs::rename(&tmp_key, key).ctx("rename into place", key)?;
    fs::rename(&tmp_cert, cert).ctx("rename into place", cert)?;
    crate::atomic::sync_dir(dir)?;
    Ok(true)
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
            compression: crate::kernel::Compression::None,
            system_map: None,
        }
    }

    const QUIET: Console = Console {
        quiet: true,
        verbose: false,
    };

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
