//! The machine owner key (MOK) pair that signs modules, created in-process by pure-Rust
//! crates (RustCrypto's `rsa` and `x509-cert`), so a minimal Debian 13 without the `openssl`
//! command signs too, and the binary links no libcrypto: loading it cost every hook run
//! thousands of symbol relocations, for a key made once per machine. Same parameters as
//! DKMS 3.2.2's `openssl req -new -x509 -nodes -days 36500 -subj "/CN=DKMS module signing key"
//! -newkey rsa:2048 -addext extendedKeyUsage=codeSigning -outform DER` with Debian's default
//! `v3_ca` extensions. (The `rsa` crate's timing advisory, RUSTSEC-2023-0071, concerns
//! decryption and signing observed by an attacker; here one key is generated and signs one
//! certificate, locally.)

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use rsa::pkcs1v15::{Signature, SigningKey};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::rand_core::{OsRng, RngCore};
use rsa::RsaPrivateKey;
use sha2::Sha256;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::oid::{AssociatedOid, ObjectIdentifier};
use x509_cert::der::Encode;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, SubjectKeyIdentifier,
};
use x509_cert::ext::AsExtension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{EncodePublicKey, SubjectPublicKeyInfoOwned};
use x509_cert::time::Validity;

use crate::base::error::{IoContext, Result};

/// The certificate's subject and issuer common name (DKMS's).
pub const SUBJECT: &str = "DKMS module signing key";
const KEY_BITS: usize = 2048;
const VALID_DAYS: u64 = 36500;
/// `extendedKeyUsage=codeSigning` (id-kp-codeSigning).
const CODE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");

/// A new key pair: the private key as PEM (PKCS#8) and the self-signed certificate as DER.
pub struct KeyPair {
    pub key_pem: Vec<u8>,
    pub cert_der: Vec<u8>,
}

impl KeyPair {
    /// Generates an RSA 2048 key and its self-signed code-signing certificate.
    pub fn generate() -> std::result::Result<KeyPair, String> {
        let key = RsaPrivateKey::new(&mut OsRng, KEY_BITS).map_err(|e| e.to_string())?;
        let key_pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| e.to_string())?
            .as_bytes()
            .to_vec();
        let cert_der = certificate(key).map_err(|e| e.to_string())?;
        Ok(KeyPair { key_pem, cert_der })
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

/// `extendedKeyUsage=codeSigning` as openssl's `-addext` writes it: not critical (x509-cert
/// marks its own `ExtendedKeyUsage` critical).
struct CodeSigning;

impl CodeSigning {
    fn usage() -> ExtendedKeyUsage {
        ExtendedKeyUsage(vec![CODE_SIGNING])
    }
}

impl AssociatedOid for CodeSigning {
    const OID: ObjectIdentifier = <ExtendedKeyUsage as AssociatedOid>::OID;
}

impl Encode for CodeSigning {
    fn encoded_len(&self) -> x509_cert::der::Result<x509_cert::der::Length> {
        Self::usage().encoded_len()
    }

    fn encode(&self, out: &mut impl x509_cert::der::Writer) -> x509_cert::der::Result<()> {
        Self::usage().encode(out)
    }
}

impl AsExtension for CodeSigning {
    fn critical(&self, _: &Name, _: &[x509_cert::ext::Extension]) -> bool {
        false
    }
}

/// The self-signed X.509 v3 certificate: random 159-bit serial, 36500 days, sha256, CA (as
/// openssl's `v3_ca` section makes it), key identifiers, and the code-signing extended key
/// usage that DKMS added in 3.1.7 (some firmware refuses MOKs without it). Built with the
/// `Manual` profile so that it carries exactly these extensions, in openssl's order.
fn certificate(key: RsaPrivateKey) -> std::result::Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut serial = [0u8; 20];
    OsRng.fill_bytes(&mut serial);
    // Positive and 20 octets long, as openssl's 159 random bits encode.
    serial[0] = (serial[0] & 0x7f) | 0x40;
    let spki = SubjectPublicKeyInfoOwned::from_key(key.to_public_key())?;
    let public_der = key.to_public_key().to_public_key_der()?;
    let signer = SigningKey::<Sha256>::new(key);
    let subject = Name::from_str(&format!("CN={SUBJECT}"))?;
    let mut b = CertificateBuilder::new(
        Profile::Manual { issuer: None },
        SerialNumber::new(&serial)?,
        Validity::from_now(Duration::from_secs(VALID_DAYS * 86_400))?,
        subject,
        spki,
        &signer,
    )?;
    let spki_ref = x509_cert::spki::SubjectPublicKeyInfoRef::try_from(public_der.as_bytes())?;
    b.add_extension(&SubjectKeyIdentifier::try_from(spki_ref.clone())?)?;
    let mut aki = AuthorityKeyIdentifier::try_from(spki_ref)?;
    aki.authority_cert_issuer = None;
    aki.authority_cert_serial_number = None;
    b.add_extension(&aki)?;
    b.add_extension(&BasicConstraints {
        ca: true,
        path_len_constraint: None,
    })?;
    b.add_extension(&CodeSigning)?;
    Ok(b.build::<Signature>()?.to_der()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1v15::VerifyingKey;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::signature::Verifier;
    use std::os::unix::fs::PermissionsExt;
    use x509_cert::der::Decode;
    use x509_cert::Certificate;

    #[test]
    fn pair_matches_dkms_parameters() {
        let pair = KeyPair::generate().unwrap();
        let cert = Certificate::from_der(&pair.cert_der).unwrap();
        let pem = String::from_utf8(pair.key_pem.clone()).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let key = RsaPrivateKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(rsa::traits::PublicKeyParts::size(&key) * 8, 2048);
        let tbs = &cert.tbs_certificate;
        assert_eq!(tbs.subject.to_string(), format!("CN={SUBJECT}"));
        assert_eq!(tbs.issuer, tbs.subject, "self-signed");
        assert_eq!(
            tbs.subject_public_key_info,
            SubjectPublicKeyInfoOwned::from_key(key.to_public_key()).unwrap()
        );
        let verifying = VerifyingKey::<Sha256>::new(key.to_public_key());
        let signature = Signature::try_from(cert.signature.raw_bytes()).unwrap();
        verifying
            .verify(&tbs.to_der().unwrap(), &signature)
            .expect("signed by its own key");
        assert_eq!(
            cert.signature_algorithm.oid.to_string(),
            "1.2.840.113549.1.1.11",
            "sha256WithRSAEncryption"
        );
        let days = (tbs.validity.not_after.to_unix_duration()
            - tbs.validity.not_before.to_unix_duration())
        .as_secs()
            / 86_400;
        assert_eq!(days, VALID_DAYS);
        let oids: Vec<String> = tbs
            .extensions
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.extn_id.to_string())
            .collect();
        // subjectKeyIdentifier, authorityKeyIdentifier, basicConstraints, extKeyUsage.
        assert_eq!(
            oids,
            ["2.5.29.14", "2.5.29.35", "2.5.29.19", "2.5.29.37"],
            "openssl req -x509's v3_ca extensions plus codeSigning"
        );
        let critical: Vec<bool> = tbs
            .extensions
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.critical)
            .collect();
        assert_eq!(
            critical,
            [false, false, true, false],
            "only basicConstraints is critical"
        );
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
        assert!(Certificate::from_der(&fs::read(&cert).unwrap()).is_ok());
        assert_eq!(fs::read_dir(dir.path().join("d")).unwrap().count(), 2);
    }
}
