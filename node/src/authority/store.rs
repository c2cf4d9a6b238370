//! The authority's own store: `authority.json` (members, revocations, the trust-list
//! sequence), read afresh before each change and written atomically, under an
//! exclusive lock on `.lock` so that two processes never change it at once.
//!
//! It works on the directory and the state, not on [`super::Authority`], so that the
//! authority can use it without the store reaching back into the authority.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::AuthorityError;
use super::names::NameRules;
use crate::base::files;
use crate::identity::{Membership, ParticipantId};
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
    /// Which host names and addresses members may have certified.
    #[serde(default)]
    pub(super) names: NameRules,
    /// The host names and addresses certified for each member, so that no name is
    /// certified for two members.
    #[serde(default)]
    pub(super) host_names: BTreeMap<ParticipantId, Vec<String>>,
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

/// Takes the exclusive lock on `dir/.lock`; it is held until the file is dropped.
pub(super) fn lock(dir: &Path) -> Result<std::fs::File, AuthorityError> {
    let path = dir.join(".lock");
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

/// Writes `state` to `path` atomically, owner-only.
pub(super) fn write_state(path: &Path, state: &State) -> Result<(), AuthorityError> {
    // Plain data always serializes.
    let json = serde_json::to_vec_pretty(state).expect("state serializes");
    files::write_private(path, &json).map_err(|source| AuthorityError::Io {
        path: path.to_owned(),
        source,
    })
}
