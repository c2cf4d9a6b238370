//! Version discovery: `GET /.well-known/dspace-version`, unversioned and
//! unauthenticated as the protocol requires.

use axum::extract::State;
use serde_json::{Value as Json, json};

use super::message::PROTOCOL_VERSION;
use super::state::DspState;

/// The path of this version's endpoints, appended to the listener's root: they are
/// served at the root itself.
pub const PATH: &str = "/";

/// The version metadata: DSP 2025-1 over HTTPS at the root, with participants named by
/// their `urn:uscc:` URIs (the unified social credit code).
pub fn metadata(state: &DspState) -> Json {
    json!({
        "protocolVersions": [{
            "version": PROTOCOL_VERSION,
            "path": PATH,
            "binding": "HTTPS",
            "serviceId": state.service_id(),
            "identifierType": "urn:uscc",
        }]
    })
}

/// `GET /.well-known/dspace-version`.
pub async fn get(State(state): State<DspState>) -> axum::Json<Json> {
    axum::Json(metadata(&state))
}
