//! Signed checkpoints (in the spirit of CloudTrail's digest files): every `every` records or
//! `interval`, before a rotation and at shutdown, the writer appends a chained record of kind
//! `checkpoint` whose Ed25519 signature covers its own position in the chain:
//!
//! ```text
//! ztgate audit checkpoint v1\n{seq}\n{prev}\n{ts}\n{key}\n{reason}
//! ```
//!
//! `prev` is the hash of the line before it, which commits to every line before that, so a valid
//! signature proves every record up to the checkpoint; someone who can rewrite the file but does
//! not hold the private key cannot make an edited, deleted or cut-off record verify again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use serde::Serialize;

use super::chain::{Chain, hash_line};
use super::record::{SCHEMA_VERSION, timestamp};

/// When the writer signs a checkpoint (besides before rotating and at shutdown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// PKCS#8 PEM file with the Ed25519 private key (`openssl genpkey -algorithm ed25519`, or
    /// `ztgate certs dev`'s `audit-signing-key.pem`).
    pub key: PathBuf,
    /// After this many records since the last checkpoint (default 1000).
    pub every: u64,
    /// At most this long after the first record not yet covered (default 60 s).
    pub interval: Duration,
}

/// Why a checkpoint was written; part of what is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// `every` records since the last one.
    Records,
    /// `interval` elapsed with records not yet covered.
    Interval,
    /// The file is about to be rotated: each rotated file ends proven.
    Rotation,
    /// ztgate is stopping: nothing follows until the next start.
    Shutdown,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Records => "records",
            Reason::Interval => "interval",
            Reason::Rotation => "rotation",
            Reason::Shutdown => "shutdown",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        [Reason::Records, Reason::Interval, Reason::Rotation, Reason::Shutdown]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a PEM {kind}: {source}")]
    Pem {
        path: PathBuf,
        kind: &'static str,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path}: not an Ed25519 {kind}: {source}")]
    Rejected {
        path: PathBuf,
        kind: &'static str,
        #[source]
        source: ring::error::KeyRejected,
    },
    #[error("{path}: not an Ed25519 {kind} ({reason})")]
    NotEd25519 {
        path: PathBuf,
        kind: &'static str,
        reason: &'static str,
    },
}

/// The private key checkpoints are signed with.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    /// [`key_id`] of the public key.
    id: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads an Ed25519 private key from a PKCS#8 PEM file (`-----BEGIN PRIVATE KEY-----`, v1 or
    /// v2).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        const KIND: &str = "PKCS#8 private key (\"-----BEGIN PRIVATE KEY-----\")";
        let pem = read(path)?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(&pem).map_err(|source| KeyError::Pem {
            path: path.to_path_buf(),
            kind: KIND,
            source,
        })?;
        let pair =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der()).map_err(|e| KeyError::Rejected {
                path: path.to_path_buf(),
                kind: KIND,
                source: e,
            })?;
        let id = key_id(pair.public_key().as_ref());
        Ok(Self { pair, id })
    }

    /// The key's id as written in checkpoints: 16 hex digits of the SHA-256 of the raw public key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The checkpoint record that will become the chain's next line (a JSON object, ready for
    /// [`Chain::append`]).
    pub(crate) fn checkpoint(&self, chain: &Chain, reason: Reason) -> Vec<u8> {
        let ts = timestamp(std::time::SystemTime::now());
        let msg = message(chain.next_seq, &chain.prev, &ts, &self.id, reason.as_str());
        let sig = crate::identity::hex(self.pair.sign(&msg).as_ref());
        let record = CheckpointRecord {
            v: SCHEMA_VERSION,
            ts: &ts,
            kind: "checkpoint",
            reason,
            key: &self.id,
            sig: &sig,
        };
        // Plain strings: serializing cannot fail, and an empty record would fail verification
        // loudly rather than pass.
        serde_json::to_vec(&record).unwrap_or_default()
    }
}

#[derive(Serialize)]
struct CheckpointRecord<'a> {
    v: u32,
    ts: &'a str,
    kind: &'static str,
    reason: Reason,
    key: &'a str,
    /// Ed25519 signature of [`message`], hex.
    sig: &'a str,
}

/// A public key `ztgate audit verify --key` checks checkpoints with.
#[derive(Debug, Clone)]
pub struct VerifyingKey {
    raw: Vec<u8>,
    id: String,
}

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the 32-byte key follows.
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

impl VerifyingKey {
    /// Loads an Ed25519 public key from a PEM file (`-----BEGIN PUBLIC KEY-----`, as written by
    /// `openssl pkey -pubout` and `ztgate certs dev`).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        const KIND: &str = "public key (\"-----BEGIN PUBLIC KEY-----\")";
        let pem = read(path)?;
        let spki = SubjectPublicKeyInfoDer::from_pem_slice(&pem).map_err(|source| KeyError::Pem {
            path: path.to_path_buf(),
            kind: KIND,
            source,
        })?;
        let raw = spki
            .as_ref()
            .strip_prefix(&ED25519_SPKI_PREFIX[..])
            .filter(|k| k.len() == 32)
            .ok_or(KeyError::NotEd25519 {
                path: path.to_path_buf(),
                kind: KIND,
                reason: "not an Ed25519 SubjectPublicKeyInfo",
            })?;
        Ok(Self {
            id: key_id(raw),
            raw: raw.to_vec(),
        })
    }

    /// The key's id, as checkpoints name it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether `sig_hex` is this key's signature of the checkpoint described by the arguments.
    pub(crate) fn verifies(&self, seq: u64, prev: &str, ts: &str, reason: &str, sig_hex: &str) -> bool {
        let Some(sig) = unhex(sig_hex) else {
            return false;
        };
        let msg = message(seq, prev, ts, &self.id, reason);
        UnparsedPublicKey::new(&ED25519, &self.raw).verify(&msg, &sig).is_ok()
    }
}

impl From<&SigningKey> for VerifyingKey {
    fn from(k: &SigningKey) -> Self {
        Self {
            raw: k.pair.public_key().as_ref().to_vec(),
            id: k.id.clone(),
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn key_id(raw: &[u8]) -> String {
    hash_line(raw)[..16].to_string()
}

fn message(seq: u64, prev: &str, ts: &str, key: &str, reason: &str) -> Vec<u8> {
    format!("ztgate audit checkpoint v1\n{seq}\n{prev}\n{ts}\n{key}\n{reason}").into_bytes()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A fresh Ed25519 key pair as PEM: (PKCS#8 private key, SubjectPublicKeyInfo public key).
pub fn generate_pem() -> Result<(String, String), rcgen::Error> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    Ok((pair.serialize_pem(), pair.public_key_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(dir: &Path) -> (SigningKey, VerifyingKey) {
        let (private, public) = generate_pem().unwrap();
        std::fs::write(dir.join("k.pem"), private).unwrap();
        std::fs::write(dir.join("k.pub"), public).unwrap();
        (
            SigningKey::load(&dir.join("k.pem")).unwrap(),
            VerifyingKey::load(&dir.join("k.pub")).unwrap(),
        )
    }

    #[test]
    fn a_checkpoint_verifies_with_the_public_key_and_only_at_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let (sk, vk) = keys(dir.path());
        assert_eq!(sk.id(), vk.id());
        let chain = Chain {
            next_seq: 5,
            prev: hash_line(b"x"),
        };
        let rec: serde_json::Value = serde_json::from_slice(&sk.checkpoint(&chain, Reason::Shutdown)).unwrap();
        assert_eq!(rec["kind"], "checkpoint");
        assert_eq!(rec["reason"], "shutdown");
        let (ts, sig) = (rec["ts"].as_str().unwrap(), rec["sig"].as_str().unwrap());
        assert!(vk.verifies(5, &chain.prev, ts, "shutdown", sig));
        // Moved, re-pointed, re-dated or re-labelled, the signature no longer holds.
        assert!(!vk.verifies(4, &chain.prev, ts, "shutdown", sig));
        assert!(!vk.verifies(5, &hash_line(b"y"), ts, "shutdown", sig));
        assert!(!vk.verifies(5, &chain.prev, "2000-01-01T00:00:00.000000Z", "shutdown", sig));
        assert!(!vk.verifies(5, &chain.prev, ts, "records", sig));
        assert!(!vk.verifies(5, &chain.prev, ts, "shutdown", "00"));
        // Another key does not verify it.
        let other = tempfile::tempdir().unwrap();
        let (_, vk2) = keys(other.path());
        assert!(!vk2.verifies(5, &chain.prev, ts, "shutdown", sig));
    }

    #[test]
    fn keys_that_are_not_ed25519_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(matches!(SigningKey::load(&missing), Err(KeyError::Read { .. })));
        let p256 = rcgen::KeyPair::generate().unwrap();
        let path = dir.path().join("p256.pem");
        std::fs::write(&path, p256.serialize_pem()).unwrap();
        let err = SigningKey::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::Rejected { .. }), "{err}");
        assert!(err.to_string().contains("p256.pem"));
        std::fs::write(&path, p256.public_key_pem()).unwrap();
        assert!(matches!(VerifyingKey::load(&path), Err(KeyError::NotEd25519 { .. })));
        std::fs::write(&path, "hello").unwrap();
        assert!(matches!(VerifyingKey::load(&path), Err(KeyError::Pem { .. })));
    }
}
