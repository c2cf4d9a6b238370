//! Keys kept in a PKCS#11 token (a hardware security module, a smart card, SoftHSM2):
//! the node's Ed25519 signing key, and the authority's CA key (ECDSA P-256) and Ed25519
//! signing key. The private key never leaves the token; the node asks the token to sign.
//!
//! A token is named by the path of its PKCS#11 module (the vendor's shared library) and
//! its label. Its user PIN comes from an environment variable or from a file only the
//! owner can read, never from a configuration file, so a copied configuration does not
//! carry the PIN with it.
//!
//! Each key keeps its own logged-in session. A token that was removed, or a session the
//! module closed, makes the next signature open a new session and log in again once
//! before it reports the failure, so a token put back is used again without a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use sha2::{Digest, Sha256};

use crate::base::files;

/// Where a token's user PIN comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinSource {
    /// The environment variable of this name.
    Env(String),
    /// A file, readable by its owner only, holding the PIN (a final newline is ignored).
    File(PathBuf),
}

impl PinSource {
    /// From the `pin_env` / `pin_file` pair of a configuration: exactly one must be set.
    pub fn from_pair(
        pin_env: Option<&str>,
        pin_file: Option<&Path>,
        section: &str,
    ) -> Result<Self, String> {
        match (pin_env, pin_file) {
            (Some(var), None) if !var.trim().is_empty() => Ok(Self::Env(var.to_owned())),
            (None, Some(path)) => Ok(Self::File(path.to_owned())),
            (Some(_), Some(_)) => Err(format!(
                "{section}: set either pin_env or pin_file, not both"
            )),
            _ => Err(format!(
                "{section}: the token's PIN is missing: set pin_env = \"VARIABLE\" (an \
                 environment variable holding the PIN) or pin_file = \"/path\" (a file only \
                 its owner can read)"
            )),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Env(var) => format!("the environment variable {var}"),
            Self::File(path) => format!("the PIN file {}", path.display()),
        }
    }

    fn read(&self) -> Result<AuthPin, HsmError> {
        let text = match self {
            Self::Env(var) => std::env::var(var).map_err(|_| {
                HsmError::Pin(format!(
                    "the environment variable {var} that should hold the token's PIN is not \
                     set (or not UTF-8); export it before starting"
                ))
            })?,
            Self::File(path) => {
                files::check_private(path).map_err(|e| match e {
                    files::PrivateFileError::Read(source) => HsmError::Pin(format!(
                        "cannot read the PIN file {}: {source}",
                        path.display()
                    )),
                    files::PrivateFileError::Mode(mode) => HsmError::Pin(format!(
                        "the PIN file {} can be read by other users (mode {mode:o}); run \
                         `chmod 600 {}` and consider changing the PIN",
                        path.display(),
                        path.display()
                    )),
                })?;
                std::fs::read_to_string(path).map_err(|e| {
                    HsmError::Pin(format!("cannot read the PIN file {}: {e}", path.display()))
                })?
            }
        };
        let pin = text.strip_suffix('\n').unwrap_or(&text);
        let pin = pin.strip_suffix('\r').unwrap_or(pin);
        if pin.is_empty() {
            return Err(HsmError::Pin(format!("{} is empty", self.describe())));
        }
        Ok(AuthPin::from(pin.to_owned()))
    }
}

/// A token: its module, its label and where its PIN comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSpec {
    pub module: PathBuf,
    pub token: String,
    pub pin: PinSource,
}

/// What went wrong with a token, in words its operator can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    #[error(
        "the PKCS#11 module {path} does not exist; install the token's module or correct \
         the path (SoftHSM2's is /usr/lib/softhsm/libsofthsm2.so)"
    )]
    ModuleMissing { path: PathBuf },
    #[error("the PKCS#11 module {path} cannot be loaded: {reason}")]
    Module { path: PathBuf, reason: String },
    #[error(
        "no token labelled {label:?} in the PKCS#11 module {module}; tokens present: \
         {present}; correct the label (`pkcs11-tool --module {module} --list-slots` lists them)"
    )]
    NoToken {
        module: PathBuf,
        label: String,
        present: String,
    },
    #[error("{0}")]
    Pin(String),
    #[error(
        "token {token:?} refused the PIN from {from}: the PIN is wrong; correct it (a token \
         locks itself after a few wrong PINs)"
    )]
    WrongPin { token: String, from: String },
    #[error(
        "token {token:?} has locked its user PIN after too many wrong PINs; unlock it with \
         the security officer PIN (`softhsm2-util`/`pkcs11-tool --init-pin`)"
    )]
    PinLocked { token: String },
    #[error(
        "token {token:?} holds no {what} labelled {label:?}; correct the label or create \
         the key (`pkcs11-tool --module ... --login --keypairgen --key-type {keygen} \
         --label {label}`)"
    )]
    NoKey {
        token: String,
        label: String,
        what: &'static str,
        keygen: &'static str,
    },
    #[error("token {token:?}: the key labelled {label:?} is unusable: {reason}")]
    BadKey {
        token: String,
        label: String,
        reason: String,
    },
    #[error("token {token:?}: {operation} failed: {reason}")]
    Token {
        token: String,
        operation: &'static str,
        reason: String,
    },
}

/// The kind of key a label must name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Ed25519,
    /// ECDSA on NIST P-256.
    P256,
}

impl KeyKind {
    fn key_type(self) -> KeyType {
        match self {
            Self::Ed25519 => KeyType::EC_EDWARDS,
            Self::P256 => KeyType::EC,
        }
    }

    fn keygen(self) -> &'static str {
        match self {
            Self::Ed25519 => "EC:edwards25519",
            Self::P256 => "EC:prime256v1",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Ed25519 => "Ed25519",
            Self::P256 => "ECDSA P-256",
        }
    }

    /// Length of the raw public key: 32 bytes, or an uncompressed point (0x04 ‖ x ‖ y).
    fn public_len(self) -> usize {
        match self {
            Self::Ed25519 => 32,
            Self::P256 => 65,
        }
    }
}

/// The modules loaded in this process, by path. A module is initialised once per
/// process and never finalised: finalising it would close the sessions of every other
/// key that uses it, and initialising it twice is an error in PKCS#11.
fn module(path: &Path) -> Result<Pkcs11, HsmError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut modules = MODULES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(m) = modules.get(path) {
        return Ok(m.clone());
    }
    if !path.is_file() {
        return Err(HsmError::ModuleMissing {
            path: path.to_owned(),
        });
    }
    let err = |reason: String| HsmError::Module {
        path: path.to_owned(),
        reason,
    };
    let pkcs11 = Pkcs11::new(path).map_err(|e| err(e.to_string()))?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(err(format!("C_Initialize: {e}"))),
    }
    modules.insert(path.to_owned(), pkcs11.clone());
    Ok(pkcs11)
}

/// A logged-in session and the private key's handle in it.
struct Connection {
    session: Session,
    key: ObjectHandle,
}

/// A private key in a token, found by its label; signs inside the token.
pub struct TokenKey {
    spec: TokenSpec,
    label: String,
    kind: KeyKind,
    pin: AuthPin,
    /// The raw public key (32 bytes for Ed25519, the uncompressed point for P-256), read
    /// once when the key was opened.
    public: Vec<u8>,
    connection: Mutex<Option<Connection>>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TokenKey({:?} in token {:?})",
            self.label, self.spec.token
        )
    }
}

impl TokenKey {
    /// Opens the token, logs in with the PIN and finds the private key labelled `label`
    /// and its public key, which must be of `kind`.
    pub fn open(spec: &TokenSpec, label: &str, kind: KeyKind) -> Result<Self, HsmError> {
        let pkcs11 = module(&spec.module)?;
        let pin = spec.pin.read()?;
        let slot = find_token(&pkcs11, spec)?;
        let session = login(&pkcs11, slot, spec, &pin)?;
        let key = find_private(&session, spec, label, kind)?;
        let public = read_public(&session, spec, label, kind)?;
        Ok(Self {
            spec: spec.clone(),
            label: label.to_owned(),
            kind,
            pin,
            public,
            connection: Mutex::new(Some(Connection { session, key })),
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn token(&self) -> &str {
        &self.spec.token
    }

    /// The raw public key: 32 bytes for Ed25519, `0x04 ‖ x ‖ y` for P-256.
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// An Ed25519 signature (CKM_EDDSA, pure Ed25519) over `message`.
    pub fn sign_ed25519(&self, message: &[u8]) -> Result<[u8; 64], HsmError> {
        debug_assert_eq!(self.kind, KeyKind::Ed25519);
        let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Ed25519));
        let sig = self.sign_raw(&mechanism, message)?;
        sig.as_slice()
            .try_into()
            .map_err(|_| self.bad_signature(sig.len()))
    }

    /// An ECDSA P-256 signature over SHA-256(`message`), DER-encoded as X.509 wants it.
    /// The digest is computed here and signed with CKM_ECDSA, which every token that
    /// holds P-256 keys offers.
    pub fn sign_p256_sha256(&self, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        debug_assert_eq!(self.kind, KeyKind::P256);
        let digest = Sha256::digest(message);
        let sig = self.sign_raw(&Mechanism::Ecdsa, &digest)?;
        if sig.len() != 64 {
            return Err(self.bad_signature(sig.len()));
        }
        Ok(ecdsa_der(&sig[..32], &sig[32..]))
    }

    fn bad_signature(&self, len: usize) -> HsmError {
        HsmError::Token {
            token: self.spec.token.clone(),
            operation: "signing",
            reason: format!(
                "the token returned a {len}-byte {} signature",
                self.kind.name()
            ),
        }
    }

    /// Signs in the current session; if the session is gone (token removed and put
    /// back, module restarted), opens a new one once and signs again.
    fn sign_raw(&self, mechanism: &Mechanism, data: &[u8]) -> Result<Vec<u8>, HsmError> {
        let mut connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = connection.as_ref() {
            match c.session.sign(mechanism, c.key, data) {
                Ok(sig) => return Ok(sig),
                Err(e) if session_lost(&e) => {
                    tracing::warn!(token = %self.spec.token, key = %self.label, error = %e,
                        "the token session was lost; opening a new one");
                    *connection = None;
                }
                Err(e) => return Err(self.failed("signing", e)),
            }
        }
        let fresh = self.reconnect()?;
        let sig = fresh
            .session
            .sign(mechanism, fresh.key, data)
            .map_err(|e| self.failed("signing", e))?;
        *connection = Some(fresh);
        Ok(sig)
    }

    fn reconnect(&self) -> Result<Connection, HsmError> {
        let pkcs11 = module(&self.spec.module)?;
        let slot = find_token(&pkcs11, &self.spec)?;
        let session = login(&pkcs11, slot, &self.spec, &self.pin)?;
        let key = find_private(&session, &self.spec, &self.label, self.kind)?;
        // The same label may now name another key (a token swapped for another): sign
        // only with the key whose public key was checked at start.
        let public = read_public(&session, &self.spec, &self.label, self.kind)?;
        if public != self.public {
            return Err(HsmError::BadKey {
                token: self.spec.token.clone(),
                label: self.label.clone(),
                reason: format!(
                    "its public key changed since the key was opened ({} now, {} before); \
                     was the token replaced?",
                    hex::encode(&public),
                    hex::encode(&self.public)
                ),
            });
        }
        Ok(Connection { session, key })
    }

    fn failed(&self, operation: &'static str, e: CkError) -> HsmError {
        HsmError::Token {
            token: self.spec.token.clone(),
            operation,
            reason: e.to_string(),
        }
    }
}

fn session_lost(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::ObjectHandleInvalid
                | RvError::KeyHandleInvalid
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::CryptokiNotInitialized,
            _
        )
    )
}

fn find_token(pkcs11: &Pkcs11, spec: &TokenSpec) -> Result<Slot, HsmError> {
    let failed = |e: CkError| HsmError::Token {
        token: spec.token.clone(),
        operation: "listing the slots",
        reason: e.to_string(),
    };
    let mut present = Vec::new();
    for slot in pkcs11.get_slots_with_token().map_err(failed)? {
        let Ok(info) = pkcs11.get_token_info(slot) else {
            continue;
        };
        // Labels are blank-padded to 32 bytes.
        let label = info.label().trim_end();
        if label == spec.token {
            return Ok(slot);
        }
        if info.token_initialized() {
            present.push(format!("{label:?}"));
        }
    }
    Err(HsmError::NoToken {
        module: spec.module.clone(),
        label: spec.token.clone(),
        present: if present.is_empty() {
            "none".into()
        } else {
            present.join(", ")
        },
    })
}

fn login(
    pkcs11: &Pkcs11,
    slot: Slot,
    spec: &TokenSpec,
    pin: &AuthPin,
) -> Result<Session, HsmError> {
    let session = pkcs11.open_ro_session(slot).map_err(|e| HsmError::Token {
        token: spec.token.clone(),
        operation: "opening a session",
        reason: e.to_string(),
    })?;
    match session.login(UserType::User, Some(pin)) {
        // PKCS#11 logs an application in once per token: another key of this process in
        // the same token may have done so already.
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
            Err(HsmError::WrongPin {
                token: spec.token.clone(),
                from: spec.pin.describe(),
            })
        }
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(HsmError::PinLocked {
            token: spec.token.clone(),
        }),
        Err(e) => Err(HsmError::Token {
            token: spec.token.clone(),
            operation: "logging in",
            reason: e.to_string(),
        }),
    }
}

fn find_one(
    session: &Session,
    spec: &TokenSpec,
    label: &str,
    kind: KeyKind,
    class: ObjectClass,
    what: &'static str,
) -> Result<ObjectHandle, HsmError> {
    let found = session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| HsmError::Token {
            token: spec.token.clone(),
            operation: "finding keys",
            reason: e.to_string(),
        })?;
    let handle = match found.as_slice() {
        [] => {
            return Err(HsmError::NoKey {
                token: spec.token.clone(),
                label: label.to_owned(),
                what,
                keygen: kind.keygen(),
            });
        }
        [one] => *one,
        more => {
            return Err(HsmError::BadKey {
                token: spec.token.clone(),
                label: label.to_owned(),
                reason: format!(
                    "{} {what}s carry this label; give the key a label of its own",
                    more.len()
                ),
            });
        }
    };
    let attrs = session
        .get_attributes(handle, &[AttributeType::KeyType])
        .map_err(|e| HsmError::Token {
            token: spec.token.clone(),
            operation: "reading a key's type",
            reason: e.to_string(),
        })?;
    let key_type = attrs.iter().find_map(|a| match a {
        Attribute::KeyType(t) => Some(*t),
        _ => None,
    });
    if key_type != Some(kind.key_type()) {
        return Err(HsmError::BadKey {
            token: spec.token.clone(),
            label: label.to_owned(),
            reason: format!(
                "it is not an {} key (key type {}); create one with --key-type {}",
                kind.name(),
                key_type.map_or("unknown".into(), |t| t.to_string()),
                kind.keygen()
            ),
        });
    }
    Ok(handle)
}

fn find_private(
    session: &Session,
    spec: &TokenSpec,
    label: &str,
    kind: KeyKind,
) -> Result<ObjectHandle, HsmError> {
    find_one(
        session,
        spec,
        label,
        kind,
        ObjectClass::PRIVATE_KEY,
        "private key",
    )
}

/// The public key of the pair labelled `label`, from its public-key object's
/// CKA_EC_POINT: a DER OCTET STRING around the raw key (as SoftHSM2 and the PKCS#11 3.0
/// text give it), or the raw key as some tokens store it.
fn read_public(
    session: &Session,
    spec: &TokenSpec,
    label: &str,
    kind: KeyKind,
) -> Result<Vec<u8>, HsmError> {
    let handle = find_one(
        session,
        spec,
        label,
        kind,
        ObjectClass::PUBLIC_KEY,
        "public key",
    )?;
    let attrs = session
        .get_attributes(handle, &[AttributeType::EcPoint])
        .map_err(|e| HsmError::Token {
            token: spec.token.clone(),
            operation: "reading a public key",
            reason: e.to_string(),
        })?;
    let point = attrs
        .iter()
        .find_map(|a| match a {
            Attribute::EcPoint(p) => Some(p.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let bad = |reason: String| HsmError::BadKey {
        token: spec.token.clone(),
        label: label.to_owned(),
        reason,
    };
    let raw = unwrap_octet_string(&point, kind.public_len()).ok_or_else(|| {
        bad(format!(
            "its public key (CKA_EC_POINT, {} bytes) is not a {}-byte {} key",
            point.len(),
            kind.public_len(),
            kind.name()
        ))
    })?;
    if kind == KeyKind::P256 && raw[0] != 0x04 {
        return Err(bad(
            "its public key is not an uncompressed P-256 point".into()
        ));
    }
    Ok(raw)
}

fn unwrap_octet_string(point: &[u8], len: usize) -> Option<Vec<u8>> {
    if point.len() == len {
        return Some(point.to_vec());
    }
    // One-byte DER length: both 32 and 65 are below 128.
    match point {
        [0x04, l, rest @ ..] if usize::from(*l) == len && rest.len() == len => Some(rest.to_vec()),
        _ => None,
    }
}

/// DER `SEQUENCE { INTEGER r, INTEGER s }` from the two 32-byte big-endian halves of a
/// PKCS#11 ECDSA signature.
fn ecdsa_der(r: &[u8], s: &[u8]) -> Vec<u8> {
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let start = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        let mut value = bytes[start..].to_vec();
        if value[0] & 0x80 != 0 {
            value.insert(0, 0);
        }
        let mut out = vec![0x02, value.len() as u8];
        out.extend_from_slice(&value);
        out
    }
    let (r, s) = (integer(r), integer(s));
    let mut out = vec![0x30, (r.len() + s.len()) as u8];
    out.extend_from_slice(&r);
    out.extend_from_slice(&s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_signature_is_der_with_minimal_integers() {
        let mut r = [0u8; 32];
        r[31] = 1;
        let s = [0xffu8; 32];
        let der = ecdsa_der(&r, &s);
        assert_eq!(&der[..5], &[0x30, 3 + 35, 0x02, 0x01, 0x01]);
        assert_eq!(&der[5..8], &[0x02, 33, 0x00]);
        assert_eq!(der.len(), 2 + 3 + 35);
    }

    #[test]
    fn ec_point_is_taken_raw_or_in_an_octet_string() {
        let key = [7u8; 32];
        let mut wrapped = vec![0x04, 32];
        wrapped.extend_from_slice(&key);
        assert_eq!(unwrap_octet_string(&wrapped, 32).unwrap(), key);
        assert_eq!(unwrap_octet_string(&key, 32).unwrap(), key);
        assert!(unwrap_octet_string(&wrapped[..20], 32).is_none());
    }

    #[test]
    fn pin_source_needs_exactly_one() {
        assert!(PinSource::from_pair(None, None, "[hsm]").is_err());
        assert!(PinSource::from_pair(Some("X"), Some(Path::new("/p")), "[hsm]").is_err());
        assert_eq!(
            PinSource::from_pair(Some("X"), None, "[hsm]").unwrap(),
            PinSource::Env("X".into())
        );
    }

    #[test]
    fn a_missing_module_is_named() {
        let spec = TokenSpec {
            module: "/nonexistent/libpkcs11.so".into(),
            token: "t".into(),
            pin: PinSource::Env("UNUSED".into()),
        };
        let err = TokenKey::open(&spec, "k", KeyKind::Ed25519).unwrap_err();
        assert!(matches!(err, HsmError::ModuleMissing { .. }), "{err}");
        assert!(
            err.to_string().contains("/nonexistent/libpkcs11.so"),
            "{err}"
        );
    }
}
