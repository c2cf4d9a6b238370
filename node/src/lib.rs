//! Liutong (流通): a node of a trusted data space.
//!
//! Each government department or enterprise runs one node. The node keeps its data in
//! its own storage, talks to other members only over mutual TLS, and signs what it
//! commits to. This crate is the node and the `liutong` command.
//!
//! The map, in layers from the bottom up. A module imports only from its own layer and
//! the layers below it; `tests/layers.rs` holds the same table, fails on an import that
//! runs upward, and lists the few upward imports that remain, each with its reason.
//!
//! 0. **Foundations**
//!    - [`base`] — the one clock ([`base::clock`], injectable in tests), random IDs,
//!      private and atomic files, the version string, date formatting, `BoxFuture`.
//!    - [`pause`] — named pause points that crash tests stop a node at.
//! 1. **Identity**
//!    - [`identity`] — participant IDs (统一社会信用代码), Ed25519 signing keys, the
//!      signed envelope (DSSE) used for everything signed, membership credentials, and
//!      the admission-bundle layout.
//!    - [`config`] — `node.toml`.
//! 2. **Store**
//!    - [`storage`] — the node's storage trait and its sled implementation, payload
//!      files; nothing is acknowledged before it is flushed.
//! 3. **Audit** — what the node records about itself.
//!    - [`audit`] — the tamper-evident audit log: RFC 9162 Merkle tree and proofs, C2SP
//!      signed-note checkpoints and cosignatures, the log in sled, checkpoints witnessed
//!      by peers, and the auditor's checks (verify, search, evidence bundles).
//!    - [`telemetry`] — `tracing` spans and OpenTelemetry metrics, exported over
//!      OTLP/gRPC when a collector is configured; the W3C trace context crosses nodes in
//!      gRPC metadata.
//!    - [`backup`] — backups of the whole node taken while it serves (writers held at a
//!      gate while the database is copied), sealed with a SHA-256 and the node's
//!      signature, and restores that refuse a damaged file before touching anything.
//! 4. **Trust**
//!    - [`tls`] — rustls (ring) configuration; identity by SAN URI, per-request
//!      authentication ([`tls::auth::AuthLayer`]) that answers refusals with a reason.
//!    - [`trust`] — the signed trust list and the node's store of it: sequence, expiry,
//!      revocations applied without a restart.
//!    - [`local`] — the local administration channel and its roles (admin, app,
//!      auditor).
//!    - [`health`] — the plain gRPC health endpoint for probes (`node.health_listen`).
//!    - [`authority`] — the data-space authority: admits members (certificate,
//!      credential, keys in an admission bundle), revokes them, signs and serves the
//!      trust list.
//!    - [`alerts`] — real-time security monitoring: alert rules, each alert an audit
//!      entry, a metric, a log line and optionally a webhook POST.
//! 5. **Data space**
//!    - [`catalog`] — data products: what this node publishes and which offers a peer
//!      may see.
//!    - [`contract`] — agreements: negotiation between consumer and provider, the
//!      agreement store and its compiled policies.
//!    - [`transfer`] — delivering a product version under a finalized agreement.
//!    - [`recovery`] — retrying unfinished steps of negotiations and transfers from
//!      their stored records.
//!    - [`desensitize`] — masking CSV and JSON Lines at delivery by the policy's mask
//!      duties (ID numbers, mobiles, names, e-mails; keyed hashes per agreement).
//!    - [`query`] — compute-to-data: aggregate queries answered at the provider, groups
//!      smaller than the policy's k suppressed; raw rows never leave.
//!    - [`usage`] — usage control after sharing: reads of received copies through their
//!      sticky policy, duties (deleteAfter, notify, log), revocation with signed
//!      deletion receipts, no onward sharing, and the classification guardrails on
//!      agreements.
//! 6. **Edges**
//!    - [`service`] — the thin gRPC services (peer API and local API).
//! 7. **Runtime**
//!    - [`runtime`] — starting, refreshing and stopping a node.
//!    - [`rotation`] — signing-key rotation with the authority, and the key history
//!      that keeps old checkpoints verifiable.
//! 8. **Binary**
//!    - [`cli`] — the `liutong` command.
//!    - [`setup`] — `liutong init` and the zero-configuration development set-up.
//!    - [`demo`] — `liutong demo`: a data space on loopback, narrated.
//!
//! How a call is trusted: the TLS handshake proves possession of the presented
//! certificate's key; [`tls::auth::AuthLayer`] then checks the chain (data-space CA for
//! peers, the node's local CA for local clients), validity, and for peers the current
//! trust list, before any service sees the request.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod audit;
pub mod authority;
pub mod backup;
pub mod base;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod contract;
pub mod cosigning;
pub mod demo;
pub mod desensitize;
pub mod health;
pub mod identity;
pub mod local;
pub mod outbound;
pub mod pause;
pub mod query;
pub mod recovery;
pub mod rotation;
pub mod runtime;
pub mod service;
pub mod setup;
pub mod storage;
pub mod telemetry;
pub mod tls;
pub mod transfer;
pub mod trust;
pub mod usage;
