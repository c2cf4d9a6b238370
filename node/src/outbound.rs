//! The node's outbound connections, each checked against the trust list: to other
//! members' peer APIs ([`Peers`], one reused HTTP/2 channel per address) and to the
//! authority, for the trust list itself ([`TrustListRefresh`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::RootCertStore;

use crate::alerts::Alerts;
use crate::audit::log::{AuditLog, Event, EventKind};
use crate::base::clock::now;
use crate::base::shutdown::Shutdown;
use crate::identity::ParticipantId;
use crate::telemetry::{PeerChannel, Telemetry};
use crate::tls::certs::AUTHORITY_SAN_URI;
use crate::tls::{self, ExpectedServer, TlsError, TlsIdentity};
use crate::trust::{TrustError, TrustStatus, TrustStore};
use liutong_proto::v1::GetTrustListRequest;
use liutong_proto::v1::authority_client::AuthorityClient;

/// Longest a peer connection is reused before its certificate is checked again by a
/// new handshake.
pub const PEER_CHANNEL_MAX_AGE: Duration = Duration::from_secs(300);

/// Channels to other members' peer APIs, one per address, reused across calls (HTTP/2
/// carries many calls on one connection, so a negotiation does not pay a TLS handshake
/// per message). A channel is made anew when the trust list changed since it was made
/// (the peer's membership is checked at the handshake) or when it is older than
/// [`PEER_CHANNEL_MAX_AGE`].
pub struct Peers {
    tls_identity: Arc<TlsIdentity>,
    /// The data-space CA, for peers' certificates.
    roots: RootCertStore,
    trust: Arc<TrustStore>,
    telemetry: Arc<Telemetry>,
    channels: Mutex<HashMap<String, (u64, Instant, tonic::transport::Channel)>>,
}

impl Peers {
    pub fn new(
        tls_identity: Arc<TlsIdentity>,
        roots: RootCertStore,
        trust: Arc<TrustStore>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        Self {
            tls_identity,
            roots,
            trust,
            telemetry,
            channels: Mutex::default(),
        }
    }

    /// The client configuration for a peer that must be a current member and, when
    /// `expected` is given, exactly that participant.
    fn member_client_config(
        &self,
        expected: Option<ParticipantId>,
    ) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let trust = self.trust.clone();
        tls::client_config(
            Some(self.tls_identity.as_ref()),
            self.roots.clone(),
            ExpectedServer::Member(Arc::new(move |id, fingerprint| {
                if let Some(expected) = &expected
                    && id != expected
                {
                    return Err(format!(
                        "the server at this address is {id}, not the expected participant \
                         {expected}"
                    ));
                }
                trust
                    .check_member(id, fingerprint, now())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })),
        )
    }

    /// A channel to another member's peer API, with this node's identity; the peer must
    /// be a current member. Calls on it carry this node's trace context.
    pub async fn connect_peer(&self, address: &str) -> Result<PeerChannel, TlsError> {
        self.connect(address, None).await
    }

    /// Like [`connect_peer`](Self::connect_peer), for a peer whose participant ID is
    /// known (the other party of an agreement): the server must be that participant, so
    /// a stale or redirected address never receives what was meant for it.
    pub async fn connect_member(
        &self,
        address: &str,
        participant: &ParticipantId,
    ) -> Result<PeerChannel, TlsError> {
        self.connect(address, Some(participant)).await
    }

    async fn connect(
        &self,
        address: &str,
        expected: Option<&ParticipantId>,
    ) -> Result<PeerChannel, TlsError> {
        let key = match expected {
            Some(p) => format!("{p}@{address}"),
            None => address.to_owned(),
        };
        let sequence = self.trust.status().sequence;
        // Poisoning cannot leave the map inconsistent (insert and get only).
        let lock = || self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seq, made, channel)) = lock().get(&key)
            && *seq == sequence
            && made.elapsed() < PEER_CHANNEL_MAX_AGE
        {
            return Ok(PeerChannel::new(channel.clone(), &self.telemetry));
        }
        let channel = tls::connect(address, self.member_client_config(expected.cloned())?).await?;
        lock().insert(key, (sequence, Instant::now(), channel.clone()));
        Ok(PeerChannel::new(channel, &self.telemetry))
    }
}

/// Fetches the trust list from the authority and applies it (`authority.address`,
/// every `authority.refresh_interval`, and on an operator's request).
pub struct TrustListRefresh {
    /// The authority's peer address.
    address: String,
    tls_identity: Arc<TlsIdentity>,
    roots: RootCertStore,
    trust: Arc<TrustStore>,
    audit: AuditLog,
    alerts: Alerts,
}

impl TrustListRefresh {
    pub fn new(
        address: String,
        tls_identity: Arc<TlsIdentity>,
        roots: RootCertStore,
        trust: Arc<TrustStore>,
        audit: AuditLog,
        alerts: Alerts,
    ) -> Self {
        Self {
            address,
            tls_identity,
            roots,
            trust,
            audit,
            alerts,
        }
    }

    /// Fetches the trust list from the authority and applies it. A new sequence and a
    /// refused list are audit events.
    pub async fn refresh(&self) -> Result<TrustStatus, TrustError> {
        let before = self.trust.status().sequence;
        let result = self.fetch_and_apply().await;
        let event = match &result {
            Ok(status) if status.sequence != before => Some(Event::new(
                EventKind::TrustListApplied,
                now(),
                format!(
                    "trust list {} applied: {} members, {} revocations",
                    status.sequence, status.members, status.revocations
                ),
            )),
            Ok(_) | Err(TrustError::Fetch { .. }) => None,
            Err(e) => Some(Event::new(
                EventKind::TrustListRefused,
                now(),
                e.to_string(),
            )),
        };
        if let Err(e) = &result {
            self.trust.record_error(e);
        }
        if let Some(event) = event
            && let Err(e) = self.audit.append(&event).await
        {
            tracing::error!(error = %e, "cannot log the trust-list event");
        }
        self.alerts
            .check_trust_list(&self.trust.status(), now())
            .await;
        result
    }

    /// Refreshes every `every` until the shutdown signal.
    pub async fn run(self: Arc<Self>, every: Duration, mut shutdown: Shutdown) {
        while shutdown.sleep(every).await {
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "trust list refresh failed");
            }
        }
    }

    async fn fetch_and_apply(&self) -> Result<TrustStatus, TrustError> {
        let address = &self.address;
        let fetch_err = |reason: String| TrustError::Fetch {
            address: address.clone(),
            reason,
        };
        let client = tls::client_config(
            Some(self.tls_identity.as_ref()),
            self.roots.clone(),
            ExpectedServer::Uri(AUTHORITY_SAN_URI.to_owned()),
        )
        .map_err(|e| fetch_err(e.to_string()))?;
        let channel = tls::connect(address, client)
            .await
            .map_err(|e| fetch_err(e.to_string()))?;
        let known = self.trust.status().sequence;
        let response = AuthorityClient::new(channel)
            .get_trust_list(GetTrustListRequest {
                known_sequence: known,
            })
            .await
            .map_err(|s| fetch_err(format!("{:?}: {}", s.code(), s.message())))?
            .into_inner();
        let envelope = response
            .trust_list
            .ok_or_else(|| fetch_err("the answer carried no trust list".into()))?;
        self.trust.apply(envelope.into(), now()).await
    }
}
