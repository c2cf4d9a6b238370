//! Signed-in browsers: a session per redeemed sign-in link, named by a random cookie,
//! bound to the link's role, with its own CSRF token for every form.
//!
//! Sessions live in memory (a restarted node signs everyone out), at most
//! [`Sessions::MAX`] at once (the oldest gives way), each for the configured lifetime.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::Digest as _;

use crate::base::random::{RandomError, random_bytes};
use crate::local::LocalRole;

/// The session cookie. `__Host-` makes the browser insist on Secure, Path=/ and no
/// Domain, so no other host or path can set or read it.
pub const COOKIE: &str = "__Host-liutong-session";

/// A signed-in browser, as a handler sees it.
#[derive(Clone, Debug)]
pub struct Session {
    pub role: LocalRole,
    /// The token every form of this session carries.
    pub csrf: String,
}

struct Entry {
    digest: [u8; 32],
    session: Session,
    expires: Instant,
}

pub struct Sessions {
    entries: Mutex<Vec<Entry>>,
    lifetime: Duration,
}

impl Sessions {
    /// How many sessions may be open at once.
    pub const MAX: usize = 64;

    pub fn new(lifetime: Duration) -> Self {
        Self {
            entries: Mutex::new(Vec::new()),
            lifetime,
        }
    }

    /// Opens a session for `role`: the cookie value to set.
    pub fn open(&self, role: LocalRole) -> Result<String, RandomError> {
        let id = random_bytes::<32>()?;
        let csrf = URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|e| e.expires > now);
        if entries.len() >= Self::MAX {
            entries.remove(0);
        }
        entries.push(Entry {
            digest: sha256(&id),
            session: Session { role, csrf },
            expires: now + self.lifetime,
        });
        Ok(URL_SAFE_NO_PAD.encode(id))
    }

    /// The session the cookie value `id` names, if it is open.
    pub fn find(&self, id: &str) -> Option<Session> {
        let wanted = sha256(&decode_id(id)?);
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            // Digests of secrets are compared: equal prefixes say nothing of the secret.
            .find(|e| e.expires > now && e.digest == wanted)
            .map(|e| e.session.clone())
    }

    /// Ends the session `id` names (sign-out).
    pub fn close(&self, id: &str) {
        if let Some(raw) = decode_id(id) {
            let wanted = sha256(&raw);
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries.retain(|e| e.digest != wanted);
        }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }
}

fn decode_id(id: &str) -> Option<[u8; 32]> {
    URL_SAFE_NO_PAD.decode(id.as_bytes()).ok()?.try_into().ok()
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(bytes).into()
}

/// Whether the form's token is the session's. Their digests are compared, so the time
/// taken says nothing of the token.
pub fn csrf_matches(session: &Session, presented: &str) -> bool {
    sha256(session.csrf.as_bytes()) == sha256(presented.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_cookie_and_closed() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let id = sessions.open(LocalRole::Auditor).unwrap();
        let found = sessions.find(&id).expect("open");
        assert_eq!(found.role, LocalRole::Auditor);
        assert!(csrf_matches(&found, &found.csrf.clone()));
        assert!(!csrf_matches(&found, "forged"));
        assert!(sessions.find("forged").is_none());
        sessions.close(&id);
        assert!(sessions.find(&id).is_none());
    }

    #[test]
    fn sessions_expire_and_are_bounded() {
        let gone = Sessions::new(Duration::ZERO);
        let id = gone.open(LocalRole::Admin).unwrap();
        assert!(gone.find(&id).is_none());

        let sessions = Sessions::new(Duration::from_secs(60));
        let first = sessions.open(LocalRole::Admin).unwrap();
        for _ in 0..Sessions::MAX {
            sessions.open(LocalRole::Auditor).unwrap();
        }
        assert!(
            sessions.find(&first).is_none(),
            "the oldest session gave way"
        );
    }
}
