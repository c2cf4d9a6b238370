//! The Dataspace Protocol 2025-1 HTTPS binding, so that connectors speaking DSP (Eclipse
//! EDC and those built on it) can use this node beside the Liutong peer API.
//!
//! One HTTPS listener (`[dsp] listen`), off unless configured. Its TLS asks every client
//! for a certificate but does not require one: version discovery
//! (`/.well-known/dspace-version`) answers anyone, as the protocol requires; every other
//! endpoint takes only a current member, judged exactly as the peer API judges a caller,
//! and is answered 401 or 403 with the protocol's error message otherwise.
//!
//! - `message` — the envelope every message shares (`@context`, `@type`) and the error
//!   messages of refusals;
//! - `state` — what the handlers share;
//! - `auth` — the caller's certificate, the member check, the record of refusals;
//! - `version` — version discovery;
//! - `catalog` — the catalog protocol (`/catalog/…`), from the catalog component;
//! - `negotiation` — the contract negotiation protocol, provider role
//!   (`/negotiations/…`), from the contract component;
//! - `consumer` — the contract negotiation protocol, consumer role: requests to
//!   providers and their messages at this node's callback address;
//! - `transfer` — the transfer process protocol, provider role (`/transfers/…`), and
//!   the `HttpData-PULL` data endpoint (`/data/…`), from the transfer component;
//! - `pull` — the transfer process protocol, consumer role: this node pulls from a
//!   provider's DSP endpoint, and takes its messages at `/callback/transfers/…`;
//! - `control` — the operator's commands on transfers of either role, and their listing;
//! - `callback` — telling consumers the outcome at their callback addresses;
//! - `server` — TLS, HTTP and the router.
//!
//! Messages are compacted JSON-LD read as plain JSON, which the protocol allows; the
//! Liutong ODRL profile appears in offers under the `lt:` prefix.

mod auth;
pub mod callback;
pub mod catalog;
pub mod consumer;
pub mod control;
pub mod message;
pub mod negotiation;
pub mod pull;
mod server;
mod state;
pub mod transfer;
pub mod version;

pub use auth::PeerConnection;
pub use message::{CONTEXT, PROTOCOL_VERSION};
pub use server::{router, serve, tls_config};
pub use state::DspState;
