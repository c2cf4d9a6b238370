//! A hostile member's input, across real nodes: contract requests with overflowing
//! times, IDs outside the grammar, over-long fields and oversized nonces are refused
//! as INVALID_ARGUMENT naming the field, before anything is stored; refused requests
//! leave no nonce, and the nonces of accepted ones are removed once they expired; a
//! usage notice must name a delivered copy of the agreed product; and text a peer
//! chose is printed escaped by the real `liutong` command.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use liutong_node::contract::{ContractRequest, REQUEST_PAYLOAD_TYPE};
use liutong_node::identity::{Envelope, MemberRole};
use liutong_node::local::LocalRole;
use liutong_node::usage::notice::{USAGE_NOTICE_PAYLOAD_TYPE, UsageNotice};
use liutong_proto::v1::negotiation_client::NegotiationClient;
use liutong_proto::v1::usage_control_client::UsageControlClient;
use liutong_proto::v1::{GetContractRequest, NegotiationRequest, NotifyRequest};
use tonic::Code;

const ROLES: &[MemberRole] = &[MemberRole::Provider, MemberRole::Consumer];
const CSV: &[u8] = b"district,households\nXihu,241000\nShangcheng,198000\n";
const OPEN: &str = r#"
uid = "urn:liutong:policy:open"
type = "set"
obligation = [{ action = "notify" }]

[[permission]]
action = "use"
"#;
/// Generous bound for what the background work does every second, after a request
/// that lives ten seconds expired.
const SOON: Duration = Duration::from_secs(60);

struct Space {
    space: DataSpace,
    provider: TestNode,
    consumer: TestNode,
    offer_id: String,
    product_id: String,
}

async fn space() -> Space {
    let space = DataSpace::start().await;
    // These tests send hundreds of requests as fast as the provider answers them; the
    // per-member rate limit (tested in limits.rs) would answer some RESOURCE_EXHAUSTED
    // depending on the machine's speed.
    let provider = space
        .node_with(TRANSPORT, "transport", ROLES, |c| {
            c.limits.requests_per_second_per_member = 0;
        })
        .await;
    let consumer = space.node_with(ECOLOGY, "ecology", ROLES, |_| {}).await;
    refresh_all(&[&provider, &consumer]).await;
    let product = publish(&provider, CSV, "Households", "general-2", "csv", OPEN)
        .await
        .expect("publish");
    Space {
        space,
        provider,
        consumer,
        offer_id: product.offer_id,
        product_id: product.product_id,
    }
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Space {
    /// A well-formed request from the consumer for the published offer.
    fn request(&self, negotiation_id: &str, nonce: String) -> ContractRequest {
        let t = unix_now();
        ContractRequest {
            negotiation_id: negotiation_id.into(),
            consumer: self.consumer.participant.clone(),
            provider: self.provider.participant.clone(),
            offer_id: self.offer_id.clone(),
            purpose: "urbanPlanning".into(),
            nonce,
            created_at: t,
            expires_at: t + 300,
        }
    }

    /// Sends `request`, signed by the consumer, straight to the provider's peer API.
    async fn send(&self, request: &ContractRequest) -> Result<String, tonic::Status> {
        let signed = Envelope::sign_json(
            REQUEST_PAYLOAD_TYPE,
            request,
            &self.consumer.running.node.identity.signing_key,
        )
        .unwrap();
        NegotiationClient::new(self.consumer.channel_to(&self.provider).await)
            .request(NegotiationRequest {
                request: Some(signed.into()),
            })
            .await
            .map(|r| r.into_inner().state)
    }

    fn stored_at_provider(&self, negotiation_id: &str) -> bool {
        self.provider
            .running
            .node
            .contracts
            .get(negotiation_id)
            .unwrap()
            .is_some()
    }

    fn nonces(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.provider
            .running
            .node
            .storage
            .scan_prefix("nonces", b"")
            .unwrap()
    }
}

fn nonce(n: u32) -> String {
    format!("{n:032x}")
}

/// The refusal is INVALID_ARGUMENT, names `field` first, and quotes little.
fn assert_invalid(result: Result<String, tonic::Status>, field: &str) {
    let err = result.expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
    assert!(
        err.message().starts_with(&format!("{field}: ")),
        "{field}: {}",
        err.message()
    );
    assert!(err.message().len() < 400, "{} bytes", err.message().len());
    assert!(
        !err.message().contains(['\n', '\0', '\u{1b}']),
        "{:?}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_times_that_would_overflow_are_refused() {
    let s = space().await;
    let t = unix_now();
    let cases = [
        ("neg-overflow-1", -1, i64::MAX, "created_at"),
        ("neg-overflow-2", i64::MIN, t + 100, "created_at"),
        ("neg-overflow-3", t, i64::MAX, "expires_at"),
    ];
    for (i, (id, created_at, expires_at, field)) in cases.into_iter().enumerate() {
        let mut request = s.request(id, nonce(i as u32 + 1));
        request.created_at = created_at;
        request.expires_at = expires_at;
        assert_invalid(s.send(&request).await, field);
        assert!(!s.stored_at_provider(id), "{id} was stored");
    }
    // A lifetime over ten minutes, or negative, is still refused as before.
    let mut long = s.request("neg-long-life", nonce(10));
    long.expires_at = long.created_at + 3600;
    assert_refused(
        &s.send(&long).await.unwrap_err(),
        Code::FailedPrecondition,
        "invalid validity",
    );
    let mut backwards = s.request("neg-backwards", nonce(11));
    backwards.created_at = backwards.expires_at + 10;
    assert_eq!(
        s.send(&backwards).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    assert!(s.nonces().is_empty(), "refused requests left nonces");
    // A well-formed request still goes through.
    assert_eq!(
        s.send(&s.request("neg-fine", nonce(12))).await.unwrap(),
        "AGREED"
    );
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_and_fields_outside_their_grammar_are_refused_naming_the_field() {
    let s = space().await;
    let huge_id = "n".repeat(64 * 1024);
    for (i, bad) in [
        "",
        "..",
        "../../etc/passwd",
        "neg-\0-x",
        "neg-1\n2026-01-01 alert: fake",
        huge_id.as_str(),
    ]
    .into_iter()
    .enumerate()
    {
        let request = s.request(bad, nonce(100 + i as u32));
        assert_invalid(s.send(&request).await, "negotiation_id");
    }

    let mut request = s.request("neg-bad-offer", nonce(200));
    request.offer_id = "../../prd/v1".into();
    assert_invalid(s.send(&request).await, "offer_id");

    let mut request = s.request("neg-long-purpose", nonce(201));
    request.purpose = "目的".repeat(35_000);
    assert_invalid(s.send(&request).await, "purpose");

    let mut request = s.request("neg-escape", nonce(202));
    request.purpose = "urbanPlanning\u{1b}[31m\nalert: fake".into();
    assert_invalid(s.send(&request).await, "purpose");

    for bad in [
        "",
        "00",
        "AB".repeat(16).as_str(),
        "ab".repeat(8 * 1024).as_str(),
    ] {
        let request = s.request("neg-bad-nonce", bad.into());
        assert_invalid(s.send(&request).await, "nonce");
    }
    assert!(s.nonces().is_empty(), "refused requests left nonces");

    // The local API checks the same way, and never echoes a megabyte back.
    let err = s
        .provider
        .admin(LocalRole::Admin)
        .await
        .get_contract(GetContractRequest {
            negotiation_id: "x".repeat(1 << 20),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().starts_with("negotiation_id: "),
        "{}",
        err.message()
    );
    assert!(err.message().len() < 400, "{} bytes", err.message().len());
    let err = s
        .consumer
        .request_contract(&s.provider, &s.offer_id, "planning\nalert: fake")
        .await
        .unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "purpose: ");
    drop(s.space);
}

/// The bytes of every file under `dir`.
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                dir_size(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_leave_no_nonce_and_the_database_stays_bounded() {
    let s = space().await;
    let before = dir_size(&s.provider.config.base_dir);
    let big = "ab".repeat(8 * 1024); // 16 KB
    for i in 0..1_000u32 {
        let mut request = s.request(&format!("neg-unknown-{i}"), nonce(i));
        request.offer_id = format!("prd-{i:016x}/v1");
        if i % 2 == 0 {
            request.nonce = big.clone();
            assert_invalid(s.send(&request).await, "nonce");
        } else {
            assert_eq!(
                s.send(&request).await.unwrap_err().code(),
                Code::NotFound,
                "an unknown offer"
            );
        }
    }
    assert!(s.nonces().is_empty(), "{} nonces kept", s.nonces().len());
    s.provider.running.node.storage.flush().await.unwrap();
    let after = dir_size(&s.provider.config.base_dir);
    let grown = after.saturating_sub(before);
    assert!(
        grown < 4 * 1024 * 1024,
        "the provider's files grew by {grown} bytes ({before} → {after})"
    );
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonces_are_removed_once_their_request_expired() {
    let s = space().await;
    let mut request = s.request("neg-short-lived", nonce(7));
    // Short-lived, but long enough to arrive on a busy machine.
    request.expires_at = request.created_at + 10;
    assert_eq!(s.send(&request).await.unwrap(), "AGREED");
    assert_eq!(s.nonces().len(), 1, "the accepted request's nonce is kept");
    assert!(
        wait_until(SOON, || async { s.nonces().is_empty() }).await,
        "the expired request's nonce was never removed"
    );
    // Sent again, it is refused by its expiry.
    assert_refused(
        &s.send(&request).await.unwrap_err(),
        Code::FailedPrecondition,
        "expired",
    );
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usage_notice_must_name_a_delivered_copy_of_the_agreed_product() {
    let s = space().await;
    let contract = s
        .consumer
        .request_contract(&s.provider, &s.offer_id, "urbanPlanning")
        .await
        .expect("agreement");
    assert_eq!(contract.state, "FINALIZED");
    let agreement = contract.agreement_id;
    let notice = |id: &str, product_id: &str| {
        let notice = UsageNotice {
            notice_id: id.into(),
            agreement_id: agreement.clone(),
            consumer: ECOLOGY.into(),
            provider: TRANSPORT.into(),
            product_id: product_id.into(),
            version: 1,
            purpose: "urbanPlanning".into(),
            use_number: 1,
            used_at: unix_now(),
        };
        Envelope::sign_json(
            USAGE_NOTICE_PAYLOAD_TYPE,
            &notice,
            &s.consumer.running.node.identity.signing_key,
        )
        .unwrap()
    };
    let mut client = UsageControlClient::new(s.consumer.channel_to(&s.provider).await);
    let mut notify = async |message: Envelope| {
        client
            .notify(NotifyRequest {
                message: Some(message.into()),
            })
            .await
    };
    let notices = || {
        s.provider
            .running
            .node
            .usage
            .usage_notices(&agreement)
            .unwrap()
            .len()
    };

    // Never pulled: there is no use to notify.
    let err = notify(notice("use-unpulled", &s.product_id))
        .await
        .unwrap_err();
    assert_refused(&err, Code::FailedPrecondition, "no copy was delivered");
    assert_eq!(notices(), 0);

    let done = s.consumer.pull_all(&agreement).await.expect("pull");
    assert_eq!(done.state, "COMPLETED");
    // Pulled, but naming another product.
    let err = notify(notice("use-other", "prd-00000000000000ff"))
        .await
        .unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "product_id: ");
    // A notice ID outside the grammar.
    let err = notify(notice("use/../1", &s.product_id)).await.unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "notice_id: ");
    assert_eq!(notices(), 0);
    // The notice of a real use of the delivered copy is recorded.
    notify(notice("use-real", &s.product_id))
        .await
        .expect("recorded");
    assert_eq!(notices(), 1);
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_a_peer_s_text_escaped() {
    let s = space().await;
    let contract = s
        .consumer
        .request_contract(&s.provider, &s.offer_id, "urbanPlanning")
        .await
        .expect("agreement");
    let agreement = contract.agreement_id;
    let done = s.consumer.pull_all(&agreement).await.expect("pull");
    assert_eq!(done.state, "COMPLETED");

    // A provider's software that lets anything into a revocation's reason.
    let forged = "2026-01-01 00:00:00 UTC alert: fake";
    let reason = format!("ended\n{forged}\u{1b}[31m red");
    let provider = s.provider.running.node.clone();
    let revocation = liutong_node::usage::revocation::Revocation {
        revocation_id: "rev-hostile".into(),
        agreement_id: agreement.clone(),
        provider: TRANSPORT.into(),
        consumer: ECOLOGY.into(),
        reason,
        revoked_at: unix_now(),
    };
    let signed = Envelope::sign_json(
        liutong_node::usage::revocation::REVOCATION_PAYLOAD_TYPE,
        &revocation,
        &provider.identity.signing_key,
    )
    .unwrap();
    s.consumer
        .running
        .node
        .usage
        .apply_revocation(&provider.identity.membership, signed)
        .await
        .expect("the revocation is applied");

    let config = s.consumer.config_path();
    let config = config.to_str().unwrap();
    for args in [
        vec!["data", "list", "--config", config],
        vec![
            "audit",
            "search",
            "--agreement",
            &agreement,
            "--config",
            config,
        ],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_liutong"))
            .args(&args)
            .output()
            .unwrap();
        assert_succeeded(&out);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("\\u{1b}[31m"),
            "{args:?}: the reason is not shown escaped:\n{text}"
        );
        assert!(!text.contains('\u{1b}'), "{args:?}: a raw ESC:\n{text}");
        assert!(
            !text.lines().any(|l| l.trim_start().starts_with(forged)),
            "{args:?}: a forged line:\n{text}"
        );
    }
    drop(s.space);
}
