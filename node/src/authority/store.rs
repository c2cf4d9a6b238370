//! The authority's own store: `authority.json` (members, revocations, the trust-list
//! sequence), read afresh before each change and written atomically, under an
//! exclusive lock on `.lock` so that two processes never change it at once.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Authority, AuthorityError};
use crate::base::files;
use crate::identity::Membership;
use crate::trust::Revocation;

pub(super) const STATE_FILE: &str = "authority.json";

/// The authority's persistent state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct State {
    pub(super) name: String,
    /// Bumped on every change to members or revocations.
    pub(super) sequence: u64,
    pub(super) members: Vec<Membership>,
    pub(super) revocations: Vec<Revocation>,
}

impl Authority {
    /// Re-reads the state written by other processes (`admit`, `revoke`).
    pub(super) fn reload(&mut self) -> Result<(), AuthorityError> {
        self.state = read_state(&self.dir.join(STATE_FILE))?;
        Ok(())
    }

    pub(super) fn lock(&self) -> Result<std::fs::File, AuthorityError> {
        let path = self.dir.join(".lock");
        let io = |source| AuthorityError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        file.lock().map_err(io)?;
        Ok(file)
    }

    pub(super) fn save_state(&self) -> Result<(), AuthorityError> {
        let path = self.dir.join(STATE_FILE);
        // Plain data always serializes.
        let json = serde_json::to_vec_pretty(&self.state).expect("state serializes");
        files::write_private(&path, &json).map_err(|source| AuthorityError::Io { path, source })
    }
}

pub(super) fn read_state(path: &Path) -> Result<State, AuthorityError> {
    let bytes = std::fs::read(path).map_err(|source| AuthorityError::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| AuthorityError::State {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}
