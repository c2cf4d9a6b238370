//! Ed25519 signing keys (ring). A node's key signs its envelopes; the authority's key
//! signs credentials and trust lists.
//!
//! The private key is written as PKCS#8 v1 PEM (`-----BEGIN PRIVATE KEY-----`) in the
//! layout RFC 8410 gives for Ed25519: the 32-byte seed, no public key. It is the layout
//! OpenSSL writes and reads, so `openssl pkey`, Python's `cryptography` and HSM import
//! tools take the file as it is. Files in the PKCS#8 v2 layout that ring writes (with the
//! public key in a tag OpenSSL refuses) still load; the next rotation writes v1.
//! The file is one that only the owner may read.
//! Loading refuses a key file that group or others can read, as ssh does, because a
//! leaked node key lets anyone sign agreements in the node's name.
//!
//! A key may instead live in a PKCS#11 token ([`crate::hsm`]): the same [`SigningKey`]
//! then asks the token to sign, and signing can fail (a token removed, a session lost),
//! which is why [`SigningKey::sign`] returns a `Result`.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::base::files;
use crate::hsm::{HsmError, KeyKind, TokenKey, TokenSpec};

const PEM_LABEL: &str = "PRIVATE KEY";

/// The DER that precedes the 32-byte seed in an RFC 8410 (section 7) PKCS#8 v1 Ed25519
/// key, 48 bytes in all:
/// `SEQUENCE(46) { INTEGER 0 (v1), SEQUENCE(5) { OID 1.3.101.112 (id-Ed25519) },
/// OCTET STRING(34) { OCTET STRING(32) seed } }`. Every length fits in one byte, so the
/// prefix is fixed; `openssl genpkey -algorithm ed25519` writes the same bytes.
const ED25519_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Errors loading, storing or using a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "key file {path} can be read by other users (mode {mode:o}); run `chmod 600 {path}` \
         and check who may have copied it"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "key file {path} is not an Ed25519 private key in PKCS#8 PEM (\"-----BEGIN PRIVATE \
         KEY-----\"): {reason}; the file was left as it is: restore it from a backup \
         (`openssl pkey -in {path} -noout` tells whether a file holds a readable key)"
    )]
    Format { path: PathBuf, reason: String },
    #[error("could not generate a key: the system random generator failed")]
    Generate,
    #[error("public key is not a 32-byte Ed25519 key: {0}")]
    PublicKey(String),
    #[error(transparent)]
    Token(#[from] HsmError),
    #[error(
        "the key {label:?} is held in token {token:?} and cannot be written to a file; \
         keys in a token stay there"
    )]
    InToken { token: String, label: String },
}

/// An Ed25519 key that signs: a key in memory, read from a file, or a key in a PKCS#11
/// token.
pub struct SigningKey {
    inner: Inner,
}

enum Inner {
    File {
        pair: Ed25519KeyPair,
        /// Kept to write the key back to disk; ring does not export it again.
        seed: [u8; 32],
    },
    Token {
        key: TokenKey,
        /// Read from the token once, when the key was opened.
        public: PublicKey,
    },
}

impl SigningKey {
    /// Generates a new key from the system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| KeyError::Generate)?;
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| KeyError::Generate)?;
        Ok(Self::in_memory(pair, seed))
    }

    fn in_memory(pair: Ed25519KeyPair, seed: [u8; 32]) -> Self {
        Self {
            inner: Inner::File { pair, seed },
        }
    }

    /// The Ed25519 key labelled `label` in the token `spec` names: logs in, finds the
    /// private key and reads its public key. Signing then happens in the token.
    pub fn open_token(spec: &TokenSpec, label: &str) -> Result<Self, KeyError> {
        let key = TokenKey::open(spec, label, KeyKind::Ed25519)?;
        let public = PublicKey::from_slice(key.public_key())?;
        Ok(Self {
            inner: Inner::Token { key, public },
        })
    }

    /// Whether the key is held in a token rather than in memory.
    pub fn in_token(&self) -> bool {
        matches!(self.inner, Inner::Token { .. })
    }

    /// Reads a PKCS#8 Ed25519 key: v1 (RFC 8410, as OpenSSL and [`SigningKey::save`]
    /// write it) or v2 as ring writes it, whose public key must match the seed.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        // ring checks the structure, the algorithm, trailing bytes and, in v2, that the
        // public key is the one the seed gives.
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|e| e.to_string())?;
        let seed = seed_of(der).ok_or("the private key is not in the layout of RFC 8410")?;
        // The seed is taken from fixed offsets; deriving the key again proves it is the
        // one ring read.
        let again = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|e| e.to_string())?;
        if again.public_key().as_ref() != pair.public_key().as_ref() {
            return Err("the private key is not in the layout of RFC 8410".into());
        }
        Ok(Self::in_memory(pair, seed))
    }

    /// The key as a PKCS#8 v1 DER document (RFC 8410); a key in a token has none.
    pub fn to_pkcs8_v1(&self) -> Result<Vec<u8>, KeyError> {
        match &self.inner {
            Inner::File { seed, .. } => {
                let mut der = Vec::with_capacity(48);
                der.extend_from_slice(&ED25519_V1_PREFIX);
                der.extend_from_slice(seed);
                Ok(der)
            }
            Inner::Token { key, .. } => Err(KeyError::InToken {
                token: key.token().to_owned(),
                label: key.label().to_owned(),
            }),
        }
    }

    /// Loads a key written by [`SigningKey::save`] (or an earlier version of it),
    /// refusing one that others can read.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        files::check_private(path).map_err(|e| match e {
            files::PrivateFileError::Read(source) => KeyError::Read {
                path: path.to_owned(),
                source,
            },
            files::PrivateFileError::Mode(mode) => KeyError::Permissions {
                path: path.to_owned(),
                mode,
            },
        })?;
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let format = |reason: String| KeyError::Format {
            path: path.to_owned(),
            reason,
        };
        let text =
            std::str::from_utf8(&bytes).map_err(|_| format("the file is not text (PEM)".into()))?;
        let der = pem_decode(text, PEM_LABEL).map_err(format)?;
        Self::from_pkcs8(&der).map_err(format)
    }

    /// Writes the key as PKCS#8 v1 PEM, readable by the owner only, atomically.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        files::write_private(path, pem_encode(PEM_LABEL, &self.to_pkcs8_v1()?).as_bytes()).map_err(
            |source| KeyError::Write {
                path: path.to_owned(),
                source,
            },
        )
    }

    pub fn public_key(&self) -> PublicKey {
        match &self.inner {
            Inner::File { pair, .. } => {
                let mut key = [0u8; 32];
                key.copy_from_slice(pair.public_key().as_ref());
                PublicKey(key)
            }
            Inner::Token { public, .. } => *public,
        }
    }

    /// An Ed25519 signature over `message`. A key in memory always signs; a key in a
    /// token fails when the token cannot be reached.
    pub fn sign(&self, message: &[u8]) -> Result<[u8; 64], KeyError> {
        match &self.inner {
            Inner::File { pair, .. } => {
                let mut sig = [0u8; 64];
                sig.copy_from_slice(pair.sign(message).as_ref());
                Ok(sig)
            }
            Inner::Token { key, .. } => Ok(key.sign_ed25519(message)?),
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public_key().key_id())
    }
}

/// An Ed25519 public key; serialized as base64.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::PublicKey(format!("{} bytes", bytes.len())))?;
        Ok(Self(key))
    }

    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = B64
            .decode(text.trim())
            .map_err(|e| KeyError::PublicKey(format!("not base64: {e}")))?;
        Self::from_slice(&bytes)
    }

    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// The key ID used in envelope signatures: `ed25519:` + hex of the first 8 bytes of
    /// SHA-256(public key).
    pub fn key_id(&self) -> String {
        let digest = Sha256::digest(self.0);
        format!("ed25519:{}", hex::encode(&digest[..8]))
    }

    /// Checks an Ed25519 signature.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, signature)
            .is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::from_base64(&text).map_err(serde::de::Error::custom)
    }
}

/// The seed of a PKCS#8 Ed25519 key, v1 or v2: both start with the same fields, lengths
/// in one byte, and only the version and the outer length differ (v2 appends the public
/// key after the seed).
fn seed_of(der: &[u8]) -> Option<[u8; 32]> {
    let head = der.get(..ED25519_V1_PREFIX.len())?;
    let same = head[0] == 0x30
        && head[1] < 0x80
        && usize::from(head[1]) + 2 == der.len()
        && head[2..4] == ED25519_V1_PREFIX[2..4]
        && matches!(head[4], 0 | 1)
        && head[5..] == ED25519_V1_PREFIX[5..];
    if !same {
        return None;
    }
    der.get(16..48)?.try_into().ok()
}

/// Encodes DER as PEM with the given label.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Decodes the first PEM block with the given label.
pub fn pem_decode(text: &str, label: &str) -> Result<Vec<u8>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .ok_or_else(|| format!("no \"{begin}\" line"))?
        + begin.len();
    let stop = text[start..]
        .find(&end)
        .ok_or_else(|| format!("no \"{end}\" line"))?
        + start;
    let body: String = text[start..stop].split_whitespace().collect();
    B64.decode(body).map_err(|e| format!("bad base64: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies() {
        let key = SigningKey::generate().unwrap();
        let sig = key.sign(b"hello").unwrap();
        assert!(key.public_key().verify(b"hello", &sig));
        assert!(!key.public_key().verify(b"hellO", &sig));
        let other = SigningKey::generate().unwrap();
        assert!(!other.public_key().verify(b"hello", &sig));
    }

    #[test]
    fn saves_owner_only_and_loads_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        let key = SigningKey::generate().unwrap();
        key.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = SigningKey::load(&path).unwrap();
        assert_eq!(loaded.public_key(), key.public_key());
    }

    #[test]
    fn refuses_a_key_others_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        SigningKey::generate().unwrap().save(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = SigningKey::load(&path).unwrap_err();
        assert!(
            matches!(err, KeyError::Permissions { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn refuses_a_damaged_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        files::write_private(
            &path,
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = SigningKey::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::Format { .. }), "{err}");
    }

    /// The example of RFC 8410 section 10.3, as OpenSSL writes it, and its public key
    /// (section 10.1).
    const RFC8410_KEY: &str = "-----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
        -----END PRIVATE KEY-----\n";
    const RFC8410_PUBLIC: &str = "19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1";

    #[test]
    fn reads_and_writes_the_rfc_8410_example_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        files::write_private(&path, RFC8410_KEY.as_bytes()).unwrap();
        let key = SigningKey::load(&path).unwrap();
        assert_eq!(hex::encode(key.public_key().0), RFC8410_PUBLIC);
        let again = dir.path().join("again.key");
        key.save(&again).unwrap();
        assert_eq!(std::fs::read_to_string(&again).unwrap(), RFC8410_KEY);
    }

    #[test]
    fn saves_pkcs8_v1_without_the_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        let key = SigningKey::generate().unwrap();
        key.save(&path).unwrap();
        let der = pem_decode(&std::fs::read_to_string(&path).unwrap(), PEM_LABEL).unwrap();
        assert_eq!(der.len(), 48);
        assert_eq!(der[..16], ED25519_V1_PREFIX);
        assert_eq!(der[4], 0, "version v1");
    }

    /// A key file as earlier versions wrote it: ring's PKCS#8 v2 document in PEM.
    fn ring_v2_key_file(path: &Path) -> PublicKey {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
        files::write_private(path, pem_encode(PEM_LABEL, doc.as_ref()).as_bytes()).unwrap();
        PublicKey::from_slice(pair.public_key().as_ref()).unwrap()
    }

    #[test]
    fn loads_a_v2_key_as_ring_wrote_it_signs_and_leaves_the_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        let public = ring_v2_key_file(&path);
        let before = std::fs::read(&path).unwrap();
        let key = SigningKey::load(&path).unwrap();
        assert_eq!(key.public_key(), public);
        assert!(public.verify(b"hello", &key.sign(b"hello").unwrap()));
        assert_eq!(std::fs::read(&path).unwrap(), before);
        // Written again, it is v1 with the same key.
        let v1 = dir.path().join("v1.key");
        key.save(&v1).unwrap();
        let der = pem_decode(&std::fs::read_to_string(&v1).unwrap(), PEM_LABEL).unwrap();
        assert_eq!((der.len(), der[4]), (48, 0));
        assert_eq!(SigningKey::load(&v1).unwrap().public_key(), public);
    }

    #[test]
    fn refuses_a_v2_key_whose_public_key_is_not_the_seeds() {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let mut der = doc.as_ref().to_vec();
        let last = der.len() - 1;
        der[last] ^= 1;
        assert!(SigningKey::from_pkcs8(&der).is_err());
    }

    #[test]
    fn refuses_garbage_saying_which_file_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        for (name, contents) in [
            ("text.key", &b"not a key at all\n"[..]),
            ("binary.key", &[0xff, 0xfe, 0x00, 0x30][..]),
            (
                "rsa.key",
                &b"-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n"[..],
            ),
        ] {
            let path = dir.path().join(name);
            files::write_private(&path, contents).unwrap();
            let err = SigningKey::load(&path).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, KeyError::Format { .. }), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains("PKCS#8 PEM"), "{msg}");
            assert!(msg.contains("restore it from a backup"), "{msg}");
            assert_eq!(std::fs::read(&path).unwrap(), contents, "left as it is");
        }
    }

    #[test]
    fn public_key_round_trips_base64() {
        let key = SigningKey::generate().unwrap().public_key();
        assert_eq!(PublicKey::from_base64(&key.to_base64()).unwrap(), key);
        assert!(PublicKey::from_base64("AAAA").is_err());
        assert!(key.key_id().starts_with("ed25519:") && key.key_id().len() == 8 + 16);
    }
}
