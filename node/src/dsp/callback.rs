//! Telling consumers the outcome of their negotiations at their callback addresses:
//! a counter-offer (`…/negotiations/:consumerPid/offers`), the agreement
//! (`…/negotiations/:consumerPid/agreement`), the end
//! (`…/termination`, with the reason and the failed constraints) and, once the
//! agreement is verified, the FINALIZED event (`…/events`).
//!
//! The news to tell is derived from what is on disk: the contract component's record
//! of the negotiation against what the binding's record says the consumer was told.
//! So nothing is announced before it is durable, and news not yet told survives a
//! restart. A worker takes up the negotiations in the outbox when woken and at least
//! every second; a consumer that cannot be reached is tried again after 1, 2, 4 … s
//! (at most 30 s), [`MAX_ATTEMPTS`] times in all, then given up on
//! (recorded; the negotiation keeps its state and the consumer can ask for it).
//!
//! A callback goes only to a server that presents a certificate of this data space
//! naming the consumer itself (its URI SAN): no member can aim this node's messages at
//! a third party. A server that does not is not sent anything; the negotiation is
//! terminated, and that is recorded.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::{Value as Json, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::message::CONTEXT;
use super::negotiation::{DspNegotiation, OUTBOX, SIGNED_AGREEMENT, record_claim};
use super::state::DspState;
use crate::audit::log::{Event, EventKind};
use crate::base::clock::now;
use crate::base::shutdown::Shutdown;
use crate::contract::{Negotiation, NegotiationStatus};
use crate::identity::ParticipantId;
use crate::tls::{self, ExpectedServer};

/// The longest the worker sleeps between looks at the outbox (an approval by a person
/// or an expiry changes a negotiation without waking it).
const TICK: Duration = Duration::from_secs(1);
/// How many times news is tried before the consumer is given up on.
pub const MAX_ATTEMPTS: u32 = 8;
/// The longest wait between two tries.
const MAX_BACKOFF: i64 = 30;
/// How long connecting, the handshake and the answer to one callback may take.
const CALL_WITHIN: Duration = Duration::from_secs(10);

/// What a consumer is to be told next.
enum News {
    /// The provider's counter-offer.
    Offered,
    Agreed,
    Finalized,
    Terminated,
}

/// Why a callback failed.
pub(super) enum Failure {
    /// The server did not prove to be the consumer: nothing was sent.
    NotTheConsumer(String),
    /// Not reached, or not accepted; worth trying again.
    Retry(String),
}

/// Runs until `shutdown` fires.
pub async fn run(state: DspState, mut shutdown: Shutdown) {
    loop {
        if let Err(e) = round(&state, &mut shutdown).await {
            tracing::warn!(error = %e, "the DSP callback outbox cannot be read");
        }
        tokio::select! {
            () = shutdown.fired() => return,
            () = state.wake.notified() => {}
            () = tokio::time::sleep(TICK) => {}
        }
    }
}

/// One look at every negotiation in the outbox.
async fn round(state: &DspState, shutdown: &mut Shutdown) -> Result<(), String> {
    let pending = state
        .storage
        .scan_prefix(OUTBOX, b"")
        .map_err(|e| e.to_string())?;
    for (key, _) in pending {
        let pid = String::from_utf8_lossy(&key).into_owned();
        // Every step of a callback is durable before the next, so one cut short by
        // the node stopping is taken up again from the records.
        match shutdown.unless_fired(take_up(state, &pid)).await {
            None => return Ok(()),
            Some(Err(e)) => {
                tracing::warn!(negotiation = %pid, error = %e, "cannot tell the DSP consumer");
            }
            Some(Ok(())) => {}
        }
    }
    Ok(())
}

/// What `record`'s consumer is to be told next, given the negotiation's state `n`;
/// `None`: nothing now. The second value is whether more may follow.
fn news(record: &DspNegotiation, n: &Negotiation) -> (Option<News>, bool) {
    use NegotiationStatus as S;
    match (n.state, record.told) {
        (_, Some(S::Terminated | S::Finalized)) => (None, false),
        (S::Terminated, _) => (Some(News::Terminated), false),
        (S::Offered, None) => (Some(News::Offered), true),
        (S::Agreed | S::Verified | S::Finalized, None | Some(S::Offered)) => {
            (Some(News::Agreed), true)
        }
        (S::Finalized, Some(S::Agreed)) => (Some(News::Finalized), false),
        _ => (None, true),
    }
}

async fn take_up(state: &DspState, pid: &str) -> Result<(), String> {
    // A consumer's termination being recorded now is taken up next round.
    let Some(_claim) = state.contracts.claims().try_claim(&record_claim(pid)) else {
        return Ok(());
    };
    let Some(mut record) = DspNegotiation::load(state, pid)? else {
        return state
            .storage
            .delete(OUTBOX, pid.as_bytes())
            .map_err(|e| e.to_string());
    };
    if record.next_attempt > now() {
        return Ok(());
    }
    let Some(n) = state.contracts.get(pid).map_err(|e| e.to_string())? else {
        // A request the contract component refused without a record.
        return record.store(state, false).await;
    };
    let (news, more) = news(&record, &n);
    let Some(news) = news else {
        if !more {
            record.store(state, false).await?;
        }
        return Ok(());
    };
    let (path, body, told) = message(state, &record, &n, &news);
    let consumer = ParticipantId::parse(&record.consumer).map_err(|e| e.to_string())?;
    // Pause point `dsp.provider.callback`: the outcome and the binding's record are
    // durable (the consumer was answered 201), the consumer has not been told yet.
    crate::pause::at("dsp.provider.callback").await;
    match call(state, &record.callback, &consumer, &path, &body).await {
        Ok(()) => {
            record.told = Some(told);
            record.attempts = 0;
            record.next_attempt = 0;
            let more = !matches!(
                told,
                NegotiationStatus::Terminated | NegotiationStatus::Finalized
            );
            record.store(state, more).await?;
            // An agreement verified before it was told is told next, without waiting.
            if more {
                state.wake.notify_one();
            }
            Ok(())
        }
        Err(Failure::NotTheConsumer(why)) => {
            let reason = format!(
                "the server at callback address {} is not the consumer {}: {why}; nothing \
                 was sent to it",
                record.callback, record.consumer
            );
            match state.contracts.terminate_as_provider(pid, &reason).await {
                Ok(_) => {}
                Err(e) => {
                    // FINALIZED stays FINALIZED; the refusal is still recorded below.
                    tracing::warn!(negotiation = %pid, error = %e, "cannot terminate the negotiation");
                }
            }
            record_event(
                state,
                &record,
                &n,
                format!("DSP callback refused: {reason}"),
            )
            .await;
            record.told = Some(NegotiationStatus::Terminated);
            record.store(state, false).await
        }
        Err(Failure::Retry(why)) => {
            record.attempts += 1;
            if record.attempts >= MAX_ATTEMPTS {
                record_event(
                    state,
                    &record,
                    &n,
                    format!(
                        "DSP callback to {} given up after {} attempts: {why}; the consumer \
                         can ask for the negotiation's state",
                        record.callback, record.attempts
                    ),
                )
                .await;
                return record.store(state, false).await;
            }
            let backoff = (1i64 << (record.attempts - 1).min(5)).min(MAX_BACKOFF);
            record.next_attempt = now() + backoff;
            record.store(state, true).await?;
            Err(why)
        }
    }
}

async fn record_event(state: &DspState, record: &DspNegotiation, n: &Negotiation, detail: String) {
    let mut event = Event::new(EventKind::NegotiationStateChanged, now(), detail);
    event.participant = Some(record.consumer.clone());
    event.agreement = n.agreement_id.clone();
    if let Err(e) = state.audit.append(&event).await {
        tracing::error!(error = %e, "cannot record a DSP callback outcome");
    }
}

/// The callback path, body and the state the consumer is told of.
fn message(
    state: &DspState,
    record: &DspNegotiation,
    n: &Negotiation,
    news: &News,
) -> (String, Json, NegotiationStatus) {
    let consumer_pid = &record.consumer_pid;
    match news {
        News::Offered => (
            format!("/negotiations/{consumer_pid}/offers"),
            json!({
                "@context": [CONTEXT],
                "@type": "ContractOfferMessage",
                "providerPid": record.provider_pid,
                "consumerPid": consumer_pid,
                "offer": counter_offer(state, &n.offer_id),
            }),
            NegotiationStatus::Offered,
        ),
        News::Agreed => {
            let mut body = json!({
                "@context": [CONTEXT],
                "@type": "ContractAgreementMessage",
                "providerPid": record.provider_pid,
                "consumerPid": consumer_pid,
                "agreement": agreement(state, n),
            });
            if n.signed_by_peer()
                && let Some(envelope) = &n.agreement
            {
                body[SIGNED_AGREEMENT] =
                    serde_json::to_value(envelope).expect("envelopes serialize");
            }
            (
                format!("/negotiations/{consumer_pid}/agreement"),
                body,
                NegotiationStatus::Agreed,
            )
        }
        News::Finalized => (
            format!("/negotiations/{consumer_pid}/events"),
            json!({
                "@context": [CONTEXT],
                "@type": "ContractNegotiationEventMessage",
                "providerPid": record.provider_pid,
                "consumerPid": consumer_pid,
                "eventType": "FINALIZED",
            }),
            NegotiationStatus::Finalized,
        ),
        News::Terminated => {
            let mut reason = vec![Json::String(n.reason.clone())];
            reason.extend(
                n.failed_constraints
                    .iter()
                    .map(|c| Json::String(format!("failed constraint: {c}"))),
            );
            (
                format!("/negotiations/{consumer_pid}/termination"),
                json!({
                    "@context": [CONTEXT],
                    "@type": "ContractNegotiationTerminationMessage",
                    "providerPid": record.provider_pid,
                    "consumerPid": consumer_pid,
                    "code": "terminated",
                    "reason": reason,
                }),
                NegotiationStatus::Terminated,
            )
        }
    }
}

/// The counter-offer `offer_id` as the catalog shows it, with its dataset as target
/// (the protocol's offer message names it).
fn counter_offer(state: &DspState, offer_id: &str) -> Json {
    let product = crate::catalog::product::parse_offer_id(offer_id)
        .and_then(|(p, v)| state.catalog.products.get(p, v).ok().flatten());
    let mut offer = product
        .as_ref()
        .and_then(super::catalog::offer)
        .unwrap_or_else(|| {
            json!({
                "@id": super::catalog::offer_iri(offer_id),
                "@type": "Offer",
                "permission": [{"action": "use"}],
            })
        });
    if let Some((product, _)) = crate::catalog::product::parse_offer_id(offer_id) {
        offer["target"] = super::catalog::dataset_id(product).into();
    }
    offer
}

/// The agreement as an ODRL `Agreement` of the protocol: the signed agreement's policy,
/// its target the dataset, its parties the participants.
fn agreement(state: &DspState, n: &Negotiation) -> Json {
    let content = n.agreement_content();
    let mut policy = content
        .as_ref()
        .map(|a| a.policy.clone())
        .unwrap_or_else(|| json!({}));
    let policy = policy
        .as_object_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let mut out = serde_json::Map::new();
    for (k, v) in policy {
        if matches!(
            k.as_str(),
            "permission" | "prohibition" | "obligation" | "profile"
        ) {
            out.insert(k, super::catalog::plain_lists(v));
        }
    }
    let product = content
        .as_ref()
        .map(|a| a.product_id.clone())
        .unwrap_or_default();
    out.insert(
        "@id".into(),
        format!(
            "urn:liutong:agreement:{}",
            n.agreement_id.as_deref().unwrap_or_default()
        )
        .into(),
    );
    out.insert("@type".into(), "Agreement".into());
    out.insert("target".into(), super::catalog::dataset_id(&product).into());
    out.insert("assigner".into(), state.participant.san_uri().into());
    out.insert("assignee".into(), n.peer.san_uri().into());
    if let Some(a) = &content
        && let Ok(t) = time::OffsetDateTime::from_unix_timestamp(a.agreed_at)
        && let Ok(text) = t.format(&time::format_description::well_known::Rfc3339)
    {
        out.insert("timestamp".into(), text.into());
    }
    Json::Object(out)
}

/// POSTs `body` to `callback` + `path` over HTTPS, presenting this node's certificate
/// and accepting only a server whose certificate names `consumer`.
pub(super) async fn call(
    state: &DspState,
    callback: &str,
    consumer: &ParticipantId,
    path: &str,
    body: &Json,
) -> Result<(), Failure> {
    tokio::time::timeout(CALL_WITHIN, exchange(state, callback, consumer, path, body))
        .await
        .unwrap_or_else(|_| {
            Err(Failure::Retry(format!(
                "no answer within {}",
                humantime::format_duration(CALL_WITHIN)
            )))
        })
}

async fn exchange(
    state: &DspState,
    callback: &str,
    consumer: &ParticipantId,
    path: &str,
    body: &Json,
) -> Result<(), Failure> {
    let retry = |what: &str, e: &dyn std::fmt::Display| Failure::Retry(format!("{what}: {e}"));
    let uri: http::Uri = callback
        .parse()
        .map_err(|e| retry("the callback address", &e))?;
    let host = uri.host().unwrap_or_default();
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let config = tls::client_config(
        Some(&state.tls_identity),
        state.data_space_roots.clone(),
        ExpectedServer::Uri(consumer.san_uri()),
    )
    .map_err(|e| retry("TLS configuration", &e))?;
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| retry("connecting", &e))?;
    let name = ServerName::try_from(host.clone()).map_err(|e| retry("the host name", &e))?;
    let tls = match TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
    {
        Ok(tls) => tls,
        Err(e) => {
            let rustls_error = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .cloned();
            return Err(match rustls_error {
                Some(
                    err @ (rustls::Error::General(_)
                    | rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented),
                ) => Failure::NotTheConsumer(err.to_string()),
                _ => retry("TLS", &e),
            });
        }
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| retry("HTTP", &e))?;
    tokio::spawn(connection);
    let base_path = uri.path().trim_end_matches('/');
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("{base_path}{path}"))
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes::Bytes::from(
            serde_json::to_vec(body).expect("messages serialize"),
        )))
        .map_err(|e| retry("the request", &e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| retry("HTTP", &e))?;
    let status = response.status();
    // The answer's body is read (bounded by the timeout) only to end the exchange.
    let _ = response.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(Failure::Retry(format!("the consumer answered {status}")))
    }
}
