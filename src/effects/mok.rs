//! The machine owner key (MOK) pair that signs modules, created in-process with libssl (the
//! library the kernel's `sign-file` links anyway), so a minimal Debian 13 without the `openssl`
//! command signs too. Same parameters as DKMS 3.2.2's `openssl req -new -x509 -nodes
//! -days 36500 -subj "/CN=DKMS module signing key" -newkey rsa:2048 -addext
//! extendedKeyUsage=codeSigning -outform DER` with Debian's default `v3_ca` extensions.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509NameBuilder, X509};

use crate::base::error::{IoContext, Result};

/// The certificate's subject and issuer common name (DKMS's).
pub const SUBJECT: &str = "DKMS module signing key";
const KEY_BITS: u32 = 2048;
const VALID_DAYS: u32 = 36500;

/// A new key pair: the private key as PEM (PKCS#8) and the self-signed certificate as DER.
pub struct KeyPair {
    pub key_pem: Vec<u8>,
    pub cert_der: Vec<u8>,
}

impl KeyPair {
    /// Generates an RSA 2048 key and its self-signed code-signing certificate.
    pub fn generate() -> std::result::Result<KeyPair, ErrorStack> {
        let key = PKey::from_rsa(Rsa::generate(KEY_BITS)?)?;
        let cert = certificate(&key)?;
        Ok(KeyPair {
            key_pem: key.private_key_to_pem_pkcs8()?,
            cert_der: cert.to_der()?,
        })
    }

    /// Writes the pair: the key with mode 0600 from its creation, each file under a temporary
    /// name renamed into place, the directory synced, so a crash never leaves half a pair.
    pub fn write(&self, key: &Path, cert: &Path) -> Result<()> {
        for (path, bytes, mode) in [(key, &self.key_pem, 0o600), (cert, &self.cert_der, 0o644)] {
            let dir = path.parent().unwrap_or(Path::new("."));
            fs::create_dir_all(dir).ctx("create", dir)?;
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let tmp = dir.join(format!(
                ".{name}.{}.{}",
                std::process::id(),
                crate::state::atomic::TMP_MARK
            ));
            let written = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)
                .and_then(|mut f| {
                    f.write_all(bytes)?;
                    f.sync_all()
                });
            if let Err(e) = written {
                let _ = fs::remove_file(&tmp);
                return Err(crate::base::error::Error::io("write", &tmp, e));
            }
            fs::rename(&tmp, path).ctx("rename into place", path)?;
            crate::state::atomic::sync_dir(dir)?;
        }
        Ok(())
    }
}

/// The self-signed X.509 v3 certificate: random serial, 36500 days, sha256, CA (as openssl's
/// `v3_ca` section makes it), key identifiers, and the code-signing extended key usage that
/// DKMS added in 3.1.7 (some firmware refuses MOKs without it).
fn certificate(key: &PKey<Private>) -> std::result::Result<X509, ErrorStack> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", SUBJECT)?;
    let name = name.build();
    let mut serial = BigNum::new()?;
    serial.rand(159, MsbOption::MAYBE_ZERO, false)?;
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(key)?;
    let (from, until) = (
        Asn1Time::days_from_now(0)?,
        Asn1Time::days_from_now(VALID_DAYS)?,
    );
    b.set_not_before(&from)?;
    b.set_not_after(&until)?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(ski)?;
    let aki = AuthorityKeyIdentifier::new()
        .keyid(true)
        .build(&b.x509v3_context(None, None))?;
    b.append_extension(aki)?;
    b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    b.append_extension(ExtendedKeyUsage::new().code_signing().build()?)?;
    b.sign(key, MessageDigest::sha256())?;
    Ok(b.build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn pair_matches_dkms_parameters() {
        let pair = KeyPair::generate().unwrap();
        let cert = X509::from_der(&pair.cert_der).unwrap();
        let key = PKey::private_key_from_pem(&pair.key_pem).unwrap();
        assert!(String::from_utf8_lossy(&pair.key_pem).starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(key.rsa().unwrap().size() * 8, 2048);
        assert!(cert.public_key().unwrap().public_eq(&key));
        assert!(cert.verify(&key).unwrap(), "self-signed");
        let cn = cert.subject_name().entries().next().unwrap();
        assert_eq!(cn.data().to_string().unwrap(), SUBJECT);
        assert_eq!(
            cert.signature_algorithm().object().nid(),
            openssl::nid::Nid::SHA256WITHRSAENCRYPTION
        );
        let days = Asn1Time::days_from_now(0)
            .unwrap()
            .diff(cert.not_after())
            .unwrap()
            .days;
        assert!((36499..=36500).contains(&days), "{days}");
        let text = String::from_utf8(cert.to_text().unwrap()).unwrap();
        assert!(text.contains("Code Signing"), "{text}");
        assert!(text.contains("CA:TRUE"), "{text}");
        assert!(text.contains("Subject Key Identifier"), "{text}");
    }

    #[test]
    fn write_makes_a_private_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("d/mok.key"), dir.path().join("d/mok.pub"));
        KeyPair::generate().unwrap().write(&key, &cert).unwrap();
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(X509::from_der(&fs::read(&cert).unwrap()).is_ok());
        assert_eq!(fs::read_dir(dir.path().join("d")).unwrap().count(), 2);
    }
}
