//! Ed25519 signatures of sealed records.
//!
//! The signed message is `"retentiond-record-v1 " || hash` (the record's hex hash,
//! which covers its content, its sequence number and the hash before it). A key is
//! named by its id: the first 16 hex digits of SHA-256 of the 32-byte public key.
//! The private key is read from an environment variable or a file (PKCS#8 PEM, or the
//! 32-byte seed as 64 hex digits) and never appears in a log, a report or an error.

use std::fmt;
use std::path::Path;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::config::KeySource;

const CONTEXT: &str = "retentiond-record-v1 ";
/// The context of a bundle's signature over the SHA-256 of its bytes.
const BUNDLE_CONTEXT: &str = "retentiond-bundle-v1 ";

/// Why a key could not be used. The messages never carry key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The environment variable is unset or empty.
    #[error("the signing key environment variable `{0}` is not set")]
    EnvUnset(String),
    /// The key file cannot be read.
    #[error("cannot read the signing key file {path}: {error}")]
    File {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// Not a key in a form this reads.
    #[error("{0} is not an Ed25519 key: expected PKCS#8 PEM (`retentiond audit keygen` writes one) or a 32-byte seed as 64 hex digits")]
    Malformed(String),
    /// Not a public key.
    #[error("{0} is not an Ed25519 public key: expected SPKI PEM (`retentiond audit pubkey` prints one) or 64 hex digits")]
    MalformedPublic(String),
}

/// The key that signs sealed records.
pub struct Signer {
    key: SigningKey,
    key_id: String,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A record's signature and the key that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// Hex of the 64-byte Ed25519 signature.
    pub signature: String,
    /// The signing key's id.
    pub key_id: String,
}

impl Signer {
    /// Reads the key from `source`.
    pub fn load(source: &KeySource) -> Result<Self, KeyError> {
        let (text, what) = match source {
            KeySource::Env(name) => {
                let v = std::env::var(name).unwrap_or_default();
                if v.trim().is_empty() {
                    return Err(KeyError::EnvUnset(name.clone()));
                }
                (v, format!("the value of `{name}`"))
            }
            KeySource::File(path) => (
                std::fs::read_to_string(path).map_err(|error| KeyError::File {
                    path: path.display().to_string(),
                    error,
                })?,
                format!("the file {}", path.display()),
            ),
        };
        Self::parse(&text).ok_or(KeyError::Malformed(what))
    }

    /// A key from PKCS#8 PEM or 64 hex digits of seed.
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        let key = if t.starts_with("-----BEGIN") {
            SigningKey::from_pkcs8_pem(t).ok()?
        } else {
            let mut seed = [0u8; 32];
            hex::decode_to_slice(t, &mut seed).ok()?;
            SigningKey::from_bytes(&seed)
        };
        Some(Self::from_key(key))
    }

    fn from_key(key: SigningKey) -> Self {
        let key_id = key_id(&key.verifying_key());
        Self { key, key_id }
    }

    /// A new random key.
    pub fn generate() -> Self {
        Self::from_key(SigningKey::generate(&mut rand_core::OsRng))
    }

    /// The key's id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey::from_key(self.key.verifying_key())
    }

    /// Signs the record whose hash is `hash`.
    pub fn sign(&self, hash: &str) -> Signed {
        self.sign_message(&message(hash))
    }

    /// Signs a bundle whose bytes (before its end line) hash to `digest`.
    pub fn sign_bundle(&self, digest: &str) -> Signed {
        self.sign_message(&format!("{BUNDLE_CONTEXT}{digest}"))
    }

    fn sign_message(&self, m: &str) -> Signed {
        let sig = self.key.sign(m.as_bytes());
        Signed {
            signature: hex::encode(sig.to_bytes()),
            key_id: self.key_id.clone(),
        }
    }

    /// The private key as PKCS#8 PEM (for `audit keygen` only).
    pub fn to_pem(&self) -> String {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .expect("an Ed25519 key encodes")
            .to_string()
    }
}

/// A public key that checks signatures.
#[derive(Debug, Clone)]
pub struct PublicKey {
    key: VerifyingKey,
    key_id: String,
}

impl PublicKey {
    fn from_key(key: VerifyingKey) -> Self {
        Self {
            key_id: key_id(&key),
            key,
        }
    }

    /// Reads SPKI PEM or 64 hex digits from `path`.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|error| KeyError::File {
            path: path.display().to_string(),
            error,
        })?;
        Self::parse(&text).ok_or_else(|| KeyError::MalformedPublic(path.display().to_string()))
    }

    /// A public key from SPKI PEM or 64 hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        let key = if t.starts_with("-----BEGIN") {
            VerifyingKey::from_public_key_pem(t).ok()?
        } else {
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(t, &mut bytes).ok()?;
            VerifyingKey::from_bytes(&bytes).ok()?
        };
        Some(Self::from_key(key))
    }

    /// The key's id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// SPKI PEM.
    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .expect("an Ed25519 public key encodes")
    }

    /// Whether `signature` (hex) is this key's signature of the record hashed `hash`.
    pub fn verifies(&self, hash: &str, signature: &str) -> bool {
        self.verifies_message(&message(hash), signature)
    }

    fn verifies_message(&self, m: &str, signature: &str) -> bool {
        let mut bytes = [0u8; 64];
        if hex::decode_to_slice(signature, &mut bytes).is_err() {
            return false;
        }
        self.key
            .verify_strict(m.as_bytes(), &Signature::from_bytes(&bytes))
            .is_ok()
    }
}

/// What checking one record's signature against a set of keys found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureCheck {
    /// No signature.
    Unsigned,
    /// Signed by one of the keys.
    Valid,
    /// A signature no key makes valid (forged, or made over other content).
    Invalid,
    /// Signed by a key that is not among them.
    UnknownKey,
}

/// Checks `signature`/`key_id` of the record hashed `hash` against `keys`.
pub fn check(
    keys: &[PublicKey],
    hash: &str,
    signature: Option<&str>,
    key_id: Option<&str>,
) -> SignatureCheck {
    check_message(keys, &message(hash), signature, key_id)
}

/// Checks the signature of a bundle whose bytes hash to `digest`.
pub fn check_bundle(
    keys: &[PublicKey],
    digest: &str,
    signature: Option<&str>,
    key_id: Option<&str>,
) -> SignatureCheck {
    check_message(
        keys,
        &format!("{BUNDLE_CONTEXT}{digest}"),
        signature,
        key_id,
    )
}

fn check_message(
    keys: &[PublicKey],
    m: &str,
    signature: Option<&str>,
    key_id: Option<&str>,
) -> SignatureCheck {
    let Some(sig) = signature else {
        return SignatureCheck::Unsigned;
    };
    let mut candidates = keys
        .iter()
        .filter(|k| key_id.is_none_or(|id| id == k.key_id))
        .peekable();
    if candidates.peek().is_none() {
        return SignatureCheck::UnknownKey;
    }
    if candidates.any(|k| k.verifies_message(m, sig)) {
        SignatureCheck::Valid
    } else {
        SignatureCheck::Invalid
    }
}

fn message(hash: &str) -> String {
    format!("{CONTEXT}{hash}")
}

fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_with_its_key_only_and_only_for_its_hash() {
        let a = Signer::generate();
        let b = Signer::generate();
        let h = "ab".repeat(32);
        let s = a.sign(&h);
        assert_eq!(s.key_id, a.key_id());
        let keys = [a.public()];
        assert_eq!(
            check(&keys, &h, Some(&s.signature), Some(&s.key_id)),
            SignatureCheck::Valid
        );
        assert_eq!(
            check(&keys, &"cd".repeat(32), Some(&s.signature), Some(&s.key_id)),
            SignatureCheck::Invalid
        );
        let forged = b.sign(&h);
        assert_eq!(
            check(&keys, &h, Some(&forged.signature), Some(&forged.key_id)),
            SignatureCheck::UnknownKey
        );
        // Claiming the right key id does not help a signature by another key.
        assert_eq!(
            check(&keys, &h, Some(&forged.signature), Some(a.key_id())),
            SignatureCheck::Invalid
        );
        assert_eq!(check(&keys, &h, None, None), SignatureCheck::Unsigned);
        assert_eq!(
            check(&keys, &h, Some("zz"), Some(a.key_id())),
            SignatureCheck::Invalid
        );
    }

    #[test]
    fn keys_round_trip_through_pem_and_hex() {
        let a = Signer::generate();
        let again = Signer::parse(&a.to_pem()).expect("PKCS#8 PEM");
        assert_eq!(again.key_id(), a.key_id());
        let seed = hex::encode(a.key.to_bytes());
        assert_eq!(Signer::parse(&seed).unwrap().key_id(), a.key_id());
        let public = PublicKey::parse(&a.public().to_pem()).expect("SPKI PEM");
        assert_eq!(public.key_id(), a.key_id());
        assert!(Signer::parse("not a key").is_none());
        assert!(PublicKey::parse(&a.to_pem()).is_none());
    }

    #[test]
    fn an_error_about_a_key_never_shows_the_key() {
        let seed = "11".repeat(31) + "zz";
        std::env::set_var("RETENTIOND_TEST_BAD_SIGNING_KEY", &seed);
        let e = Signer::load(&KeySource::Env("RETENTIOND_TEST_BAD_SIGNING_KEY".into()))
            .unwrap_err()
            .to_string();
        assert!(!e.contains(&seed[..20]), "{e}");
        assert!(e.contains("RETENTIOND_TEST_BAD_SIGNING_KEY"), "{e}");
        let good = Signer::generate();
        assert!(!format!("{good:?}").contains(&hex::encode(good.key.to_bytes())));
    }
}
