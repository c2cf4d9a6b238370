//! Liutong (流通): a node of a trusted data space.
//!
//! Each government department or enterprise runs one node. The node keeps its data in
//! its own storage, talks to other members only over mutual TLS, and signs what it
//! commits to. This crate is the node and the `liutong` command.
//!
//! The map, in layers from the bottom up. A module imports only from its own layer and
//! the layers below it, and modules of one layer do not import each other in a loop;
//! `tests/layers.rs` holds the same table and fails on an import that runs upward or
//! closes a loop (it lists the few upward imports that remain, each with its reason).
//! The **components** (in bold) each own their state and are built by the runtime from
//! the narrow handles they need; a service holds only its components.
//!
//! 0. **Foundations**
//!    - [`base`] — the one clock ([`base::clock`], injectable in tests), random IDs,
//!      private and atomic files, the version string, date formatting, the one shutdown
//!      signal ([`base::shutdown`]), the kinds of failure every domain error names
//!      ([`base::error`]), `BoxFuture`.
//!    - [`pause`] — named pause points that crash tests stop a node at.
//! 1. **Identity**
//!    - [`identity`] — participant IDs (统一社会信用代码), Ed25519 signing keys, the
//!      signed envelope (DSSE) used for everything signed, membership credentials, the
//!      admission-bundle layout, and **[`identity::NodeIdentity`]** (this node as a
//!      member: membership, credential, signing key, earlier keys).
//!    - [`hsm`] — keys held in a PKCS#11 token (HSM): the node's signing key, the
//!      authority's CA and signing keys; the token signs, the key never leaves it.
//!    - [`config`] — `node.toml`.
//! 2. **Store**
//!    - [`storage`] — the node's storage trait and its sled engine, payload files;
//!      nothing is acknowledged before it is flushed.
//! 3. **Audit** — what the node records about itself.
//!    - [`audit`] — the tamper-evident audit log (**[`audit::log::AuditLog`]**): RFC 9162
//!      Merkle tree and proofs, C2SP signed-note checkpoints and cosignatures, the
//!      witness rules (**[`audit::witnessing::WitnessStore`]**), and the auditor's
//!      offline checks (checkpoints, credentials, search, evidence bundles).
//!    - [`telemetry`] — `tracing` spans and OpenTelemetry metrics, exported over
//!      OTLP/gRPC when a collector is configured; the W3C trace context crosses nodes in
//!      gRPC metadata.
//!    - [`backup`] — backups of the whole node taken while it serves (writers held at a
//!      gate while the database is copied), sealed with a SHA-256 and the node's
//!      signature, and restores that refuse a damaged file before touching anything.
//! 4. **Trust**
//!    - [`tls`] — rustls (ring) configuration; identity by SAN URI, per-request
//!      authentication ([`tls::auth::AuthLayer`]) that answers refusals with a reason.
//!    - [`trust`] — the signed trust list and **[`trust::TrustStore`]**: sequence,
//!      expiry, revocations applied without a restart.
//!    - [`local`] — the local API's client certificates and their roles (admin, app,
//!      auditor).
//!    - [`health`] — the plain gRPC health endpoint for probes (`node.health_listen`).
//!    - [`authority`] — the data-space authority: admits members (certificate,
//!      credential, keys in an admission bundle), revokes them, signs and serves the
//!      trust list.
//!    - [`alerts`] — **[`alerts::Alerts`]**, real-time security monitoring: alert
//!      rules, each alert an audit entry, a metric, a log line and optionally a webhook
//!      POST.
//!    - [`outbound`] — the node's connections out, each checked against the trust list:
//!      **[`outbound::Peers`]** (other members' peer APIs) and
//!      **[`outbound::TrustListRefresh`]** (the trust list from the authority).
//!    - [`cosigning`] — **[`cosigning::Cosigning`]**: this node's checkpoints, signed on
//!      a timer and on demand, and cosigned by the configured witnesses.
//! 5. **Data space**, in this order (each uses only the ones before it):
//!    - [`catalog`] — **[`catalog::Catalog`]**: data products, what this node publishes
//!      and which offers a peer may see.
//!    - [`recovery`] — retry bookkeeping for unfinished steps (claims, backoff, verdicts
//!      on a peer's answer).
//!    - [`contract`] — **[`contract::Contracts`]**: negotiations between consumer and
//!      provider, both sides, and the agreements they produce: the store, the compiled
//!      policies, the per-agreement locks, the classification guardrails.
//!    - [`desensitize`] — masking CSV and JSON Lines at delivery by the policy's mask
//!      duties (ID numbers, mobiles, names, e-mails; keyed hashes per agreement).
//!    - [`query`] — **[`query::Queries`]**, compute-to-data: aggregate queries answered
//!      at the provider, groups smaller than the policy's k withheld; raw rows never
//!      leave.
//!    - [`transfer`] — **[`transfer::Transfers`]**: delivering a product version under a
//!      finalized agreement, and the consumer's verified pull and received copies. It
//!      asks usage control through [`contract::UsageGate`], as `query` does.
//!    - [`usage`] — **[`usage::Usage`]**, usage control after sharing: reads of received
//!      copies through their sticky policy, duties (deleteAfter, notify, log),
//!      revocation with signed deletion receipts, no onward sharing.
//! 6. **Edges**
//!    - [`service`] — the thin gRPC services of the peer API and the local API, the one
//!      table from error kinds to gRPC codes ([`service::errors`]), and
//!      **[`service::ops::Ops`]** (status and backups for the operator).
//!    - [`dsp`] — the Dataspace Protocol 2025-1 HTTPS binding (`[dsp] listen`): version
//!      discovery, and for members the catalog from the same catalog component, checked
//!      by the same member authentication as the peer API.
//!    - [`console`] — the web console (`[console] listen`): one-time sign-in links,
//!      sessions bound to a local role, pages that call the local API's own services,
//!      and audit proofs the browser verifies itself.
//!    - [`audit_client`] — **[`audit_client::AuditorClient`]**, the auditor's gRPC client
//!      of a node's `liutong.v1.Audit`: fetches the log and checks it with the audit
//!      layer's offline checks, and collects evidence bundles.
//! 7. **Runtime**
//!    - [`runtime`] — builds the components bottom-up ([`runtime::Node`]), serves both
//!      APIs, runs the background loops through one runner ([`runtime::Workers`]) and
//!      stops everything on one signal.
//!    - [`rotation`] — signing-key rotation with the authority, and the key history
//!      that keeps old checkpoints verifiable.
//!    - [`replica`] — active/standby replicas on one PostgreSQL database: a standby
//!      waits for the leadership lease, then the node starts; a leader that loses the
//!      lease stops.
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

/// The allocator of every program that links the node (the `liutong` command, its tests
/// and benches). glibc's allocator spent about a fifth of a negotiation's CPU time in
/// `malloc`, `free` and consolidating its free lists (bench `flow`, `perf`); mimalloc's
/// thread-local free lists cost a fraction of that. It is built without asking for
/// transparent huge pages (`no_thp`): with them, each thread's first 2 MiB region became
/// resident whole, and an idle node held 71 MiB instead of 26.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod alerts;
pub mod audit;
pub mod audit_client;
pub mod authority;
pub mod backup;
pub mod base;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod console;
pub mod contract;
pub mod cosigning;
pub mod demo;
pub mod desensitize;
pub mod dsp;
pub mod health;
pub mod hsm;
pub mod identity;
pub mod local;
pub mod outbound;
pub mod pause;
pub mod query;
pub mod recovery;
pub mod replica;
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
