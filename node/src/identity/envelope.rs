//! The signed envelope (DSSE): payload type + payload bytes + signatures over the
//! pre-authentication encoding (PAE). Everything Liutong signs travels in one, so a
//! verifier checks the exact bytes it received and never re-encodes a message.
//!
//! PAE(type, body) = "DSSEv1" SP len(type) SP type SP len(body) SP body, with lengths in
//! ASCII decimal, as specified by secure-systems-lab/dsse.

use base64::engine::general_purpose::STANDARD as B64;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::keys::{KeyError, PublicKey, SigningKey};

/// A DSSE envelope. Its JSON form is the one of the DSSE specification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    #[serde(with = "base64_bytes")]
    pub payload: Vec<u8>,
    pub signatures: Vec<Signature>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub keyid: String,
    #[serde(with = "base64_bytes")]
    pub sig: Vec<u8>,
}

/// The most signatures [`Envelope::verify`] considers: an envelope carrying more is
/// refused unchecked, so verifying one costs at most this many signature checks however
/// it was padded. `limits.max_envelope_signatures` refuses smaller counts at the edge.
pub const MAX_SIGNATURES: usize = 16;

/// Why an envelope was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    #[error("envelope has payload type {found:?}, expected {expected:?}")]
    PayloadType { expected: String, found: String },
    #[error(
        "envelope carries no valid signature by key {key_id}: it was altered or signed by another key"
    )]
    BadSignature { key_id: String },
    #[error("{field}.signatures: {found} signatures, at most {limit} are accepted")]
    TooManySignatures {
        /// The message field that carried the envelope.
        field: String,
        found: usize,
        limit: usize,
    },
    #[error("envelope payload is not a valid {payload_type}: {reason}")]
    Payload {
        payload_type: String,
        reason: String,
    },
}

impl Envelope {
    /// Signs `payload` as `payload_type` with `key`. Fails only when `key` is in a token
    /// that cannot sign now.
    pub fn sign(payload_type: &str, payload: Vec<u8>, key: &SigningKey) -> Result<Self, KeyError> {
        let mut env = Self {
            payload_type: payload_type.to_owned(),
            payload,
            signatures: Vec::new(),
        };
        env.add_signature(key)?;
        Ok(env)
    }

    /// Serializes `value` as JSON and signs it.
    pub fn sign_json<T: Serialize>(
        payload_type: &str,
        value: &T,
        key: &SigningKey,
    ) -> Result<Self, KeyError> {
        // Serializing our own plain data types to JSON cannot fail.
        let payload = serde_json::to_vec(value).expect("payload types serialize to JSON");
        Self::sign(payload_type, payload, key)
    }

    /// Adds a signature (a countersignature, for example) over the same PAE; on failure
    /// the envelope is left as it was.
    pub fn add_signature(&mut self, key: &SigningKey) -> Result<(), KeyError> {
        let sig = key.sign(&pae(&self.payload_type, &self.payload))?;
        self.signatures.push(Signature {
            keyid: key.public_key().key_id(),
            sig: sig.to_vec(),
        });
        Ok(())
    }

    /// Refuses an envelope, received in the message field `field`, that carries more than
    /// `limit` signatures. Call it on what a peer sent before anything is verified.
    pub fn check_signature_count(&self, field: &str, limit: usize) -> Result<(), EnvelopeError> {
        let found = self.signatures.len();
        if found > limit {
            return Err(EnvelopeError::TooManySignatures {
                field: field.to_owned(),
                found,
                limit,
            });
        }
        Ok(())
    }

    /// Checks that `key` signed this envelope. Signatures by other keys are ignored; an
    /// envelope with more than [`MAX_SIGNATURES`] is refused before any is checked.
    pub fn verify(&self, key: &PublicKey) -> Result<(), EnvelopeError> {
        self.check_signature_count("envelope", MAX_SIGNATURES)?;
        let message = pae(&self.payload_type, &self.payload);
        let key_id = key.key_id();
        let ok = self
            .signatures
            .iter()
            .filter(|s| s.keyid == key_id)
            .any(|s| key.verify(&message, &s.sig));
        if ok {
            Ok(())
        } else {
            Err(EnvelopeError::BadSignature { key_id })
        }
    }

    /// Checks the payload type and `key`'s signature, then decodes the JSON payload.
    pub fn open_json<T: DeserializeOwned>(
        &self,
        payload_type: &str,
        key: &PublicKey,
    ) -> Result<T, EnvelopeError> {
        if self.payload_type != payload_type {
            return Err(EnvelopeError::PayloadType {
                expected: payload_type.to_owned(),
                found: self.payload_type.clone(),
            });
        }
        self.verify(key)?;
        serde_json::from_slice(&self.payload).map_err(|e| EnvelopeError::Payload {
            payload_type: payload_type.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Decodes the JSON payload without checking any signature: only for display, or to
    /// learn which key to check it with before calling [`Envelope::open_json`].
    pub fn peek_json<T: DeserializeOwned>(&self) -> Result<T, EnvelopeError> {
        serde_json::from_slice(&self.payload).map_err(|e| EnvelopeError::Payload {
            payload_type: self.payload_type.clone(),
            reason: e.to_string(),
        })
    }

    pub fn to_json(&self) -> String {
        // Plain strings and bytes always serialize.
        serde_json::to_string_pretty(self).expect("envelope serializes")
    }
}

/// The DSSE pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_type.len() + payload.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

impl From<Envelope> for liutong_proto::v1::Envelope {
    fn from(e: Envelope) -> Self {
        Self {
            payload_type: e.payload_type,
            payload: e.payload,
            signatures: e
                .signatures
                .into_iter()
                .map(|s| liutong_proto::v1::Signature {
                    keyid: s.keyid,
                    sig: s.sig,
                })
                .collect(),
        }
    }
}

impl From<liutong_proto::v1::Envelope> for Envelope {
    fn from(e: liutong_proto::v1::Envelope) -> Self {
        Self {
            payload_type: e.payload_type,
            payload: e.payload,
            signatures: e
                .signatures
                .into_iter()
                .map(|s| Signature {
                    keyid: s.keyid,
                    sig: s.sig,
                })
                .collect(),
        }
    }
}

mod base64_bytes {
    use super::B64;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        B64.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_specification() {
        // The example from the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn verifies_the_signer_and_refuses_changes() {
        let key = SigningKey::generate().unwrap();
        let env = Envelope::sign("application/x-test", b"payload".to_vec(), &key).unwrap();
        env.verify(&key.public_key()).unwrap();

        let mut altered = env.clone();
        altered.payload = b"pay1oad".to_vec();
        assert!(matches!(
            altered.verify(&key.public_key()),
            Err(EnvelopeError::BadSignature { .. })
        ));

        // Changing the type changes the PAE, so the signature no longer covers it.
        let mut retyped = env.clone();
        retyped.payload_type = "application/x-other".into();
        assert!(retyped.verify(&key.public_key()).is_err());

        let other = SigningKey::generate().unwrap();
        assert!(env.verify(&other.public_key()).is_err());
    }

    #[test]
    fn padded_envelope_is_refused_before_verification() {
        let key = SigningKey::generate().unwrap();
        let mut env = Envelope::sign("t", b"x".to_vec(), &key).unwrap();
        let bogus = Signature {
            keyid: key.public_key().key_id(),
            sig: vec![0; 64],
        };
        // The valid signature last: checking every one would find it.
        env.signatures
            .splice(0..0, std::iter::repeat_n(bogus, MAX_SIGNATURES));
        assert!(matches!(
            env.verify(&key.public_key()),
            Err(EnvelopeError::TooManySignatures { found, limit: MAX_SIGNATURES, .. })
                if found == MAX_SIGNATURES + 1
        ));
        let err = env.check_signature_count("request", 4).unwrap_err();
        assert_eq!(
            err.to_string(),
            "request.signatures: 17 signatures, at most 4 are accepted"
        );
        env.signatures.drain(..MAX_SIGNATURES - 1);
        env.verify(&key.public_key()).unwrap();
    }

    #[test]
    fn countersignature_keeps_both() {
        let a = SigningKey::generate().unwrap();
        let b = SigningKey::generate().unwrap();
        let mut env = Envelope::sign("t", b"x".to_vec(), &a).unwrap();
        env.add_signature(&b).unwrap();
        env.verify(&a.public_key()).unwrap();
        env.verify(&b.public_key()).unwrap();
    }

    #[test]
    fn json_form_round_trips_and_checks_type() {
        let key = SigningKey::generate().unwrap();
        let env = Envelope::sign_json("application/x-n", &42u32, &key).unwrap();
        let back: Envelope = serde_json::from_str(&env.to_json()).unwrap();
        assert_eq!(back, env);
        assert_eq!(
            back.open_json::<u32>("application/x-n", &key.public_key())
                .unwrap(),
            42
        );
        assert!(matches!(
            back.open_json::<u32>("application/x-m", &key.public_key()),
            Err(EnvelopeError::PayloadType { .. })
        ));
    }
}
