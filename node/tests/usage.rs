//! Usage control after sharing, across real nodes: reads through the sticky policy with
//! durable use counts, duties the node carries out (deleteAfter while running and while
//! stopped, notify), revocation reaching online and offline consumers with signed
//! deletion receipts, no onward sharing, and the classification guardrails.

mod common;

use std::time::Duration;

use common::*;
use liutong_node::identity::{Envelope, MemberRole, ParticipantKind, RegionCode};
use liutong_node::local::LocalRole;
use liutong_node::usage::notice::{
    DELETION_RECEIPT_PAYLOAD_TYPE, DeletionReceipt, USAGE_NOTICE_PAYLOAD_TYPE, UsageNotice,
};
use liutong_proto::v1::read_response::Part;
use liutong_proto::v1::usage_control_client::UsageControlClient;
use liutong_proto::v1::{
    CopyStatus, ListCopiesRequest, ListRevocationsRequest, NotifyRequest, ReadHeader, ReadRequest,
    RevocationStatus, RevokeRequest,
};
use tokio_stream::StreamExt as _;
use tonic::Code;

const ROLES: &[MemberRole] = &[MemberRole::Provider, MemberRole::Consumer];
const CSV: &[u8] = b"district,households\nXihu,241000\nShangcheng,198000\n";
/// Generous bound for what the background task does every 200 ms.
const SOON: Duration = Duration::from_secs(30);

/// Research, three reads at most, academic research excluded, the provider notified
/// of every use.
const SURVEY: &str = r#"
uid = "urn:liutong:policy:household-survey"
type = "set"
obligation = [{ action = "notify" }]

[[permission]]
action = "use"
constraint = [
  { leftOperand = "purpose", operator = "isA", rightOperand = "research" },
  { leftOperand = "count", operator = "lt", rightOperand = 3 },
]
duty = [{ action = "log" }]

[[prohibition]]
action = "use"
constraint = [{ leftOperand = "purpose", operator = "isA", rightOperand = "academicResearch" }]
"#;

const OPEN: &str = r#"
uid = "urn:liutong:policy:open"
type = "set"

[[permission]]
action = "use"
"#;

fn delete_after(duration: &str, notify: bool) -> String {
    format!(
        r#"
uid = "urn:liutong:policy:short-lived"
type = "set"
{}

[[permission]]
action = "use"
duty = [{{ action = "deleteAfter", elapsed = "{duration}" }}]
"#,
        if notify {
            r#"obligation = [{ action = "notify" }]"#
        } else {
            ""
        }
    )
}

/// Publishes `policy` at the provider, negotiates for `purpose` and pulls the copy;
/// returns the agreement ID.
async fn received(s: &TwoMembers, data: &[u8], policy: &str, purpose: &str) -> String {
    let product = publish(
        &s.provider,
        data,
        "Household survey",
        "general-2",
        "csv",
        policy,
    )
    .await
    .expect("publish");
    s.consumer
        .agree_and_pull(&s.provider, &product.offer_id, purpose)
        .await
}

async fn read_as(
    node: &TestNode,
    role: LocalRole,
    agreement: &str,
    purpose: &str,
) -> Result<(ReadHeader, Vec<u8>), tonic::Status> {
    let mut stream = node
        .usage(role)
        .await
        .read(ReadRequest {
            agreement_id: agreement.into(),
            purpose: purpose.into(),
        })
        .await?
        .into_inner();
    let mut header = None;
    let mut data = Vec::new();
    while let Some(item) = stream.next().await {
        match item?.part {
            Some(Part::Header(h)) => header = Some(h),
            Some(Part::Data(d)) => data.extend(d),
            None => {}
        }
    }
    Ok((header.expect("a header first"), data))
}

async fn read(
    node: &TestNode,
    agreement: &str,
    purpose: &str,
) -> Result<(ReadHeader, Vec<u8>), tonic::Status> {
    read_as(node, LocalRole::App, agreement, purpose).await
}

async fn copy_status(node: &TestNode, agreement: &str) -> Option<CopyStatus> {
    node.usage(LocalRole::Auditor)
        .await
        .list_copies(ListCopiesRequest::default())
        .await
        .expect("list copies")
        .into_inner()
        .copies
        .into_iter()
        .find(|c| c.agreement_id == agreement)
}

async fn revocations(node: &TestNode) -> Vec<RevocationStatus> {
    node.usage(LocalRole::Admin)
        .await
        .list_revocations(ListRevocationsRequest::default())
        .await
        .expect("list revocations")
        .into_inner()
        .revocations
}

/// The node's audit entries about `agreement`, as JSON.
fn audit_about(node: &TestNode, agreement: &str) -> Vec<serde_json::Value> {
    node.audit_events()
        .into_iter()
        .filter(|e| e["agreement"] == agreement)
        .collect()
}

fn count_kind(entries: &[serde_json::Value], kind: &str, containing: &str) -> usize {
    entries
        .iter()
        .filter(|e| e["kind"] == kind && e["detail"].as_str().unwrap().contains(containing))
        .count()
}

fn agreed_at(contract_agreement: &str, storage: &dyn liutong_node::storage::Storage) -> i64 {
    let copy = liutong_node::transfer::copy(storage, contract_agreement)
        .unwrap()
        .expect("copy");
    copy.agreement.peek_json::<serde_json::Value>().unwrap()["agreed_at"]
        .as_i64()
        .unwrap()
}

async fn revoke(
    node: &TestNode,
    role: LocalRole,
    id: &str,
    reason: &str,
) -> Result<RevocationStatus, tonic::Status> {
    node.usage(role)
        .await
        .revoke(RevokeRequest {
            agreement_id: id.into(),
            reason: reason.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_follow_the_sticky_policy_and_every_use_counts() {
    let s = two_members().await;
    let agreement = received(&s, CSV, SURVEY, "research").await;

    // Only local applications read received data; bad input is named.
    let err = read_as(&s.consumer, LocalRole::Admin, &agreement, "research")
        .await
        .unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "local role app");
    let err = read(&s.consumer, &agreement, " ").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("purpose:"), "{}", err.message());
    let err = read(&s.consumer, "agr-nothing", "research")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // A purpose outside the agreement, and one its policy prohibits: refused, named,
    // and no use is counted.
    let err = read(&s.consumer, &agreement, "marketing")
        .await
        .unwrap_err();
    assert_refused(
        &err,
        Code::PermissionDenied,
        "outside the agreement's purpose",
    );
    let err = read(&s.consumer, &agreement, "academicResearch")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("policy refuses this read") && err.message().contains("forbids"),
        "{}",
        err.message()
    );

    // Three permitted reads, each counted and the data intact.
    for (n, purpose) in ["research", "statistics", "scientificResearch"]
        .iter()
        .enumerate()
    {
        let (header, data) = read(&s.consumer, &agreement, purpose).await.unwrap();
        assert_eq!(data, CSV);
        assert_eq!(header.use_number, n as u64 + 1);
        assert_eq!(header.size, CSV.len() as u64);
        assert!(
            header.duties.iter().any(|d| d.starts_with("notify")),
            "{:?}",
            header.duties
        );
    }
    // The fourth is past the count.
    let err = read(&s.consumer, &agreement, "research").await.unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "count lt 3");

    // Every read is logged: three uses, three refusals by the policy.
    let log = audit_about(&s.consumer, &agreement);
    assert_eq!(count_kind(&log, "usage", "read of the copy"), 3);
    assert_eq!(
        count_kind(&log, "policy_decision", "refused"),
        3,
        "{log:#?}"
    );

    // The provider is notified of each use with a signed notice.
    let provider = &s.provider.running.node;
    assert!(
        wait_until(SOON, || async {
            provider.usage.usage_notices(&agreement).unwrap().len() == 3
        })
        .await,
        "three usage notices reached the provider"
    );
    let mut numbers: Vec<u64> = provider
        .usage
        .usage_notices(&agreement)
        .unwrap()
        .iter()
        .map(|n| n.use_number)
        .collect();
    numbers.sort();
    assert_eq!(numbers, [1, 2, 3]);
    // (Stored, then logged, then acknowledged: wait for the log as well.)
    assert!(
        wait_until(SOON, || async {
            count_kind(
                &audit_about(&s.provider, &agreement),
                "usage",
                "usage notice",
            ) == 3
        })
        .await,
        "the provider logged each notice"
    );
    assert!(
        wait_until(SOON, || async {
            s.consumer.running.node.usage.outbox().unwrap().is_empty()
        })
        .await,
        "acknowledged notices leave the outbox"
    );

    // The count survives a restart: still refused.
    let consumer = s.consumer.restart().await;
    let err = read(&consumer, &agreement, "research").await.unwrap_err();
    assert!(err.message().contains("count"), "{}", err.message());
    assert_eq!(copy_status(&consumer, &agreement).await.unwrap().uses, 3);
    drop(s.space);
}

/// A read after the policy's time window is refused, and it is a security alert (an
/// audit entry of kind `alert`), while a refusal for another reason is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_outside_the_permitted_window_is_refused_and_alerted() {
    let s = two_members().await;
    let policy = r#"
uid = "urn:liutong:policy:two-seconds"
type = "set"

[[permission]]
action = "use"
constraint = [{ leftOperand = "elapsedTime", operator = "lt", rightOperand = "PT2S" }]
"#;
    let agreement = received(&s, CSV, policy, "research").await;
    let alerts = |node: &TestNode| {
        node.audit_events()
            .into_iter()
            .filter(|e| {
                e["kind"] == "alert"
                    && e["detail"]
                        .as_str()
                        .unwrap()
                        .contains("outside its permitted time")
            })
            .count()
    };
    // Wait (bounded) until the window has closed, then read.
    let since = agreed_at(&agreement, s.consumer.running.node.storage.as_ref());
    assert!(wait_until(SOON, || async { unix_now() >= since + 3 }).await);
    let refused = read(&s.consumer, &agreement, "research")
        .await
        .expect_err("the window has closed");
    assert_refused(&refused, Code::PermissionDenied, "elapsedTime");
    assert_eq!(
        alerts(&s.consumer),
        1,
        "one alert for the read outside the window"
    );
    // An empty purpose is refused as bad input, not alerted.
    read(&s.consumer, &agreement, " ")
        .await
        .expect_err("no purpose");
    assert_eq!(alerts(&s.consumer), 1);
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_never_exceed_the_count() {
    let s = two_members().await;
    let agreement = received(&s, CSV, SURVEY, "statistics").await;
    let consumer = &s.consumer;
    let reads = (0..8).map(|_| read(consumer, &agreement, "statistics"));
    let results = futures_join_all(reads).await;
    let permitted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(permitted, 3, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), Code::PermissionDenied, "{r:?}");
    }
    let mut numbers: Vec<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|(h, _)| h.use_number)
        .collect();
    numbers.sort();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(
        liutong_node::usage::uses(consumer.running.node.storage.as_ref(), &agreement)
            .unwrap()
            .uses,
        3
    );
}

/// Runs the futures concurrently (the crate has no `futures` dependency).
async fn futures_join_all<F, T>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T>,
{
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<T>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|v| v.expect("every future finished"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_after_runs_while_running_and_catches_up_after_a_stop() {
    let s = two_members().await;
    // Both deadlines leave room for negotiating and pulling on a busy machine.
    let soon = received(&s, CSV, &delete_after("PT4S", true), "urbanPlanning").await;
    let later = received(
        &s,
        b"a,b\n1,2\n",
        &delete_after("PT8S", false),
        "urbanPlanning",
    )
    .await;
    let storage = s.consumer.running.node.storage.clone();
    let later_deadline = agreed_at(&later, storage.as_ref()) + 8;
    for agreement in [&soon, &later] {
        let (header, _) = read(&s.consumer, agreement, "urbanPlanning").await.unwrap();
        assert!(
            header.duties.iter().any(|d| d.starts_with("deleteAfter")),
            "{:?}",
            header.duties
        );
        assert!(
            copy_status(&s.consumer, agreement)
                .await
                .unwrap()
                .delete_at_unix
                > 0
        );
    }

    // While the node runs, the background task deletes the copy at its deadline.
    assert!(
        wait_until(SOON, || async {
            liutong_node::transfer::copy(storage.as_ref(), &soon)
                .unwrap()
                .is_none()
        })
        .await,
        "the expired copy was deleted"
    );
    let err = read(&s.consumer, &soon, "urbanPlanning").await.unwrap_err();
    assert_refused(&err, Code::NotFound, "deleteAfter");
    assert_eq!(
        copy_status(&s.consumer, &soon).await.unwrap().state,
        "DELETED"
    );
    assert_eq!(
        count_kind(
            &audit_about(&s.consumer, &soon),
            "copy_deleted",
            "deleteAfter"
        ),
        1
    );
    // Its policy asks to notify: the provider gets a signed deletion receipt.
    let provider = s.provider.running.node.clone();
    assert!(
        wait_until(SOON, || async {
            provider.usage.deletion_receipt(&soon).unwrap().is_some()
        })
        .await,
        "deletion receipt delivered"
    );
    let receipt = provider.usage.deletion_receipt(&soon).unwrap().unwrap();
    let receipt: DeletionReceipt = receipt
        .open_json(
            DELETION_RECEIPT_PAYLOAD_TYPE,
            &s.consumer.running.node.identity.signing_key.public_key(),
        )
        .expect("signed by the consumer");
    assert!(receipt.held);
    // The copy is not fetched again: the consumer refuses, and so would the provider.
    let err = s.consumer.pull_all(&soon).await.unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "deleteAfter");

    // The second deadline passes while the node is stopped.
    drop(storage);
    let stopped = s.consumer.stop().await;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            unix_now() > later_deadline
        })
        .await
    );
    let consumer = stopped.start().await;
    // Deleted before the node served anyone: no waiting here.
    let storage = consumer.running.node.storage.as_ref();
    assert!(
        liutong_node::transfer::copy(storage, &later)
            .unwrap()
            .is_none()
    );
    assert!(
        liutong_node::transfer::copy_chunk(storage, &later, 0)
            .unwrap()
            .is_none(),
        "the data itself is gone"
    );
    let err = read(&consumer, &later, "urbanPlanning").await.unwrap_err();
    assert_refused(&err, Code::NotFound, "deleteAfter");
    assert_eq!(
        count_kind(
            &audit_about(&consumer, &later),
            "copy_deleted",
            "deleteAfter"
        ),
        1
    );
    // No notify duty on this one: no receipt is sent.
    assert!(consumer.running.node.usage.outbox().unwrap().is_empty());
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_online_and_offline_consumers() {
    let s = two_members().await;
    let online = received(&s, CSV, OPEN, "urbanPlanning").await;
    let offline = received(&s, b"x,y\n1,2\n", OPEN, "urbanPlanning").await;
    read(&s.consumer, &online, "urbanPlanning").await.unwrap();

    // Bad revocations are refused and change nothing.
    let err = revoke(&s.provider, LocalRole::App, &online, "no")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = revoke(&s.provider, LocalRole::Admin, &online, "  ")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("reason:"), "{}", err.message());
    let err = revoke(&s.consumer, LocalRole::Admin, &online, "mine")
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::NotFound,
        "only the provider revokes: {err:?}"
    );
    assert!(revocations(&s.provider).await.is_empty());

    // Online: the consumer deletes, refuses reads, and returns a signed receipt.
    let r = revoke(
        &s.provider,
        LocalRole::Admin,
        &online,
        "data found inaccurate",
    )
    .await
    .unwrap();
    assert_eq!(r.consumer, ECOLOGY);
    let err = revoke(&s.provider, LocalRole::Admin, &online, "again")
        .await
        .unwrap_err();
    assert_refused(&err, Code::FailedPrecondition, "already revoked");
    let provider = s.provider.running.node.clone();
    let receipt_for = |agreement: String| {
        let provider = provider.clone();
        async move {
            provider
                .usage
                .revocation_of(ECOLOGY, &agreement)
                .unwrap()
                .and_then(|r| r.deletion_receipt)
        }
    };
    assert!(
        wait_until(SOON, || async {
            receipt_for(online.clone()).await.is_some()
        })
        .await,
        "the consumer's deletion receipt reached the provider"
    );
    let receipt: DeletionReceipt = receipt_for(online.clone())
        .await
        .unwrap()
        .open_json(
            DELETION_RECEIPT_PAYLOAD_TYPE,
            &s.consumer.running.node.identity.signing_key.public_key(),
        )
        .expect("signed by the consumer");
    assert!(receipt.held);
    let err = read(&s.consumer, &online, "urbanPlanning")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("revoked") && err.message().contains("data found inaccurate"),
        "{}",
        err.message()
    );
    assert_eq!(
        copy_status(&s.consumer, &online).await.unwrap().state,
        "REVOKED"
    );
    let listed = revocations(&s.provider).await;
    assert!(!listed[0].deletion_receipt_json.is_empty());
    // Both sides logged it.
    let consumer_log = audit_about(&s.consumer, &online);
    assert_eq!(count_kind(&consumer_log, "revocation", "revoked"), 1);
    assert_eq!(count_kind(&consumer_log, "copy_deleted", "revoked"), 1);
    assert_eq!(
        count_kind(&audit_about(&s.provider, &online), "revocation", "revoked"),
        1
    );
    // (The provider stores a receipt, logs it, then acknowledges it.)
    assert!(
        wait_until(SOON, || async {
            count_kind(
                &audit_about(&s.provider, &online),
                "copy_deleted",
                "deletion receipt",
            ) == 1
        })
        .await
    );
    // The provider refuses further transfers under it.
    let mut direct = s.consumer.direct_transfer_client(&s.provider).await;
    let err = direct
        .pull(liutong_proto::v1::PullRequest {
            agreement_id: online.clone(),
            from_chunk: 0,
        })
        .await
        .unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "revoked");

    // Offline: revoked while the consumer is stopped; it catches up when it is back.
    let stopped = s.consumer.stop().await;
    revoke(&s.provider, LocalRole::Admin, &offline, "consent withdrawn")
        .await
        .unwrap();
    assert!(receipt_for(offline.clone()).await.is_none());
    let consumer = stopped.start().await;
    assert!(
        wait_until(SOON, || async {
            receipt_for(offline.clone()).await.is_some()
        })
        .await,
        "the consumer answered the revocation once it was back"
    );
    let err = read(&consumer, &offline, "urbanPlanning")
        .await
        .unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "consent withdrawn");
    assert!(
        liutong_node::transfer::copy(consumer.running.node.storage.as_ref(), &offline)
            .unwrap()
            .is_none()
    );
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_parties_speak_for_an_agreement() {
    let s = two_members().await;
    let agreement = received(&s, CSV, OPEN, "urbanPlanning").await;
    let other = s
        .space
        .node_with(LOGISTICS, "logistics", ROLES, |_| {})
        .await;
    refresh_all(&[&s.provider, &s.consumer, &other]).await;

    // Another member sends a notice about the agreement, signed with its own key.
    let notice = UsageNotice {
        notice_id: "use-forged".into(),
        agreement_id: agreement.clone(),
        consumer: LOGISTICS.into(),
        provider: TRANSPORT.into(),
        product_id: "prd-x".into(),
        version: 1,
        purpose: "urbanPlanning".into(),
        use_number: 1,
        used_at: unix_now(),
    };
    let mut client = UsageControlClient::new(other.channel_to(&s.provider).await);
    let signed = Envelope::sign_json(
        USAGE_NOTICE_PAYLOAD_TYPE,
        &notice,
        &other.running.node.identity.signing_key,
    )
    .unwrap();
    let err = client
        .notify(NotifyRequest {
            message: Some(signed.into()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains(&format!("{LOGISTICS} is not a party to agreement")),
        "{}",
        err.message()
    );
    assert!(!err.message().contains(ECOLOGY), "{}", err.message());
    // A message not signed by the caller.
    let unsigned = Envelope::sign_json(
        USAGE_NOTICE_PAYLOAD_TYPE,
        &notice,
        &s.consumer.running.node.identity.signing_key,
    )
    .unwrap();
    let err = client
        .notify(NotifyRequest {
            message: Some(unsigned.into()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert!(
        s.provider
            .running
            .node
            .usage
            .usage_notices(&agreement)
            .unwrap()
            .is_empty()
    );

    // A revocation not signed by the agreement's provider is not applied.
    let forged = liutong_node::usage::revocation::Revocation {
        revocation_id: "rev-forged".into(),
        agreement_id: agreement.clone(),
        provider: TRANSPORT.into(),
        consumer: ECOLOGY.into(),
        reason: "forged".into(),
        revoked_at: unix_now(),
    };
    let forged = Envelope::sign_json(
        liutong_node::usage::revocation::REVOCATION_PAYLOAD_TYPE,
        &forged,
        &other.running.node.identity.signing_key,
    )
    .unwrap();
    let provider_membership = s.provider.running.node.identity.membership.clone();
    let err = s
        .consumer
        .running
        .node
        .usage
        .apply_revocation(&provider_membership, forged)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("revocation"), "{err}");
    read(&s.consumer, &agreement, "urbanPlanning")
        .await
        .expect("the copy is still readable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_data_is_not_offered_onward() {
    let s = two_members().await;
    let kept = received(&s, CSV, OPEN, "urbanPlanning").await;
    let onward_policy = |uid: &str| {
        format!("uid = \"{uid}\"\ntype = \"set\"\n\n[[permission]]\naction = \"use\"\n")
    };
    let publish_derived =
        |data: &'static [u8], classification: &str, policy: String, from: Vec<String>| {
            let consumer = &s.consumer;
            let classification = classification.to_owned();
            async move {
                let messages = liutong_node::catalog::publish_messages(
                    liutong_proto::v1::PublishMetadata {
                        product_id: String::new(),
                        title: "District summary".into(),
                        description: String::new(),
                        classification,
                        format: "csv".into(),
                        policy,
                        policy_format: String::new(),
                        derived_from: from,
                    },
                    data,
                );
                consumer
                    .admin(LocalRole::Admin)
                    .await
                    .publish_product(tokio_stream::iter(messages))
                    .await
                    .map(tonic::Response::into_inner)
            }
        };
    let products = || {
        s.consumer
            .running
            .node
            .catalog
            .products
            .list()
            .unwrap()
            .len()
    };
    let summary: &[u8] = b"district,share\nXihu,0.55\n";

    // Declared as derived from the copy, offered: refused, nothing stored.
    let err = publish_derived(
        summary,
        "general-2",
        onward_policy("urn:a"),
        vec![kept.clone()],
    )
    .await
    .unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "does not permit distribute");
    let logged = s
        .consumer
        .audit_texts()
        .iter()
        .any(|e| e.contains("publish refused (no onward sharing)"));
    assert!(logged, "the refusal is an audit event");
    // The copy's bytes republished without saying so: recognised and refused.
    let err = publish_derived(CSV, "general-2", onward_policy("urn:a"), vec![])
        .await
        .unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "byte-identical");
    // Sources that are unknown, or graded higher than the product: refused.
    let err = publish_derived(
        summary,
        "general-2",
        String::new(),
        vec!["agr-unknown".into()],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().starts_with("derived_from:"),
        "{}",
        err.message()
    );
    let err = publish_derived(summary, "general-1", String::new(), vec![kept.clone()])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().starts_with("classification:"),
        "{}",
        err.message()
    );
    assert_eq!(products(), 0, "nothing stored");

    // Kept locally (not offered): allowed, and the link is kept. Offering something
    // derived from that product is refused in turn.
    let local = publish_derived(summary, "general-2", String::new(), vec![kept.clone()])
        .await
        .unwrap();
    assert_eq!(local.derived_from, std::slice::from_ref(&kept));
    assert!(local.offer_id.is_empty());
    let err = publish_derived(
        b"district\nXihu\n",
        "general-2",
        onward_policy("urn:a"),
        vec![local.product_id.clone()],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains(&local.product_id) && err.message().contains(&kept),
        "{}",
        err.message()
    );

    // A policy that permits distribute under a next policy: the offer must carry it.
    let shareable = received(
        &s,
        b"road,km\nG60,120\n",
        r#"
uid = "urn:liutong:policy:shareable"
type = "set"

[[permission]]
action = "use"

[[permission]]
action = "distribute"
duty = [{ action = "nextPolicy", policy = "urn:liutong:policy:onward" }]
"#,
        "urbanPlanning",
    )
    .await;
    let err = publish_derived(
        summary,
        "general-2",
        onward_policy("urn:liutong:policy:other"),
        vec![shareable.clone()],
    )
    .await
    .unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "urn:liutong:policy:onward");
    let offered = publish_derived(
        summary,
        "general-2",
        onward_policy("urn:liutong:policy:onward"),
        vec![shareable.clone()],
    )
    .await
    .unwrap();
    assert!(!offered.offer_id.is_empty());
    assert_eq!(offered.derived_from, [shareable]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classification_guardrails_hold() {
    let s = two_members().await;
    let mut beijing =
        DataSpace::admission(ROGUE, "Beijing Survey Co.", ParticipantKind::Enterprise);
    beijing.region = RegionCode::parse("110105").unwrap();
    let outsider = s.space.node_as(beijing, "beijing").await;
    refresh_all(&[&s.provider, &s.consumer, &outsider]).await;
    let in_region = |region: &str| {
        format!(
            "uid = \"urn:liutong:policy:od\"\ntype = \"set\"\n\n[[permission]]\naction = \"use\"\n\
             constraint = [{{ leftOperand = \"region\", operator = \"isPartOf\", rightOperand = \"{region}\" }}]\n"
        )
    };

    // Core data never leaves the node: no offer for it, so nobody can ask for one.
    let err = publish(&s.provider, CSV, "Core registry", "core", "csv", OPEN)
        .await
        .unwrap_err();
    assert_refused(
        &err,
        Code::InvalidArgument,
        "core data never leaves the node",
    );
    let core = publish(&s.provider, CSV, "Core registry", "core", "csv", "")
        .await
        .unwrap();
    assert!(core.offer_id.is_empty());
    let err = s
        .consumer
        .request_contract(
            &s.provider,
            &format!("{}/v1", core.product_id),
            "urbanPlanning",
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // Important data: a policy that grants more than the guardrails is refused, with
    // the reason.
    let err = publish(&s.provider, CSV, "OD matrix", "important", "csv", OPEN)
        .await
        .unwrap_err();
    assert_refused(
        &err,
        Code::InvalidArgument,
        "must limit the recipient's region",
    );
    let err = publish(
        &s.provider,
        CSV,
        "OD matrix",
        "important",
        "csv",
        &in_region("110000"),
    )
    .await
    .unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "outside the regions permitted");

    // Inside the permitted region: every agreement waits for a person, and a recipient
    // outside the region gets none.
    let od = publish(
        &s.provider,
        CSV,
        "OD matrix",
        "important",
        "csv",
        &in_region("330000"),
    )
    .await
    .unwrap();
    let err = outsider
        .request_contract(&s.provider, &od.offer_id, "urbanPlanning")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "not even listed: {err:?}");
    let pending = s
        .consumer
        .request_contract(&s.provider, &od.offer_id, "urbanPlanning")
        .await
        .unwrap();
    assert_eq!(pending.state, "REQUESTED");
    assert!(
        s.provider
            .running
            .node
            .contracts
            .get(&pending.negotiation_id)
            .unwrap()
            .unwrap()
            .reason
            .contains("approval")
    );
}

/// Runs the `liutong` binary (off the runtime's worker threads).
async fn liutong(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_liutong"))
            .args(args)
            .output()
            .expect("the binary runs")
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_reads_lists_and_revokes() {
    let s = two_members().await;
    let agreement = received(&s, CSV, SURVEY, "statistics").await;
    let consumer_config = s.consumer.config_path().display().to_string();
    let provider_config = s.provider.config_path().display().to_string();
    let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();

    // `liutong data read ID --purpose P > out.csv`: the data on standard output only.
    let out = liutong(args(&[
        "data",
        "read",
        &agreement,
        "--purpose",
        "statistics",
        "--config",
        &consumer_config,
    ]))
    .await;
    assert_succeeded(&out);
    assert_eq!(out.stdout, CSV);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("use 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A refused read exits 1 and says why.
    let out = liutong(args(&[
        "data",
        "read",
        &agreement,
        "--purpose",
        "marketing",
        "--config",
        &consumer_config,
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("PermissionDenied") && stderr.contains("outside the agreement's purpose"),
        "{stderr}"
    );
    // The administrator's certificate does not read data.
    let out = liutong(args(&[
        "data",
        "read",
        &agreement,
        "--purpose",
        "statistics",
        "--role",
        "admin",
        "--config",
        &consumer_config,
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("local role app"));

    let out = liutong(args(&[
        "data",
        "list",
        "--json",
        "--config",
        &consumer_config,
    ]))
    .await;
    assert_succeeded(&out);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["agreement_id"], agreement.as_str());
    assert_eq!(listed[0]["uses"], 1);
    assert_eq!(listed[0]["state"], "COMPLETED");

    // `liutong contract revoke ID --reason R` on the provider.
    let out = liutong(args(&[
        "contract",
        "revoke",
        &agreement,
        "--reason",
        "survey withdrawn",
        "--config",
        &provider_config,
    ]))
    .await;
    assert_succeeded(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("REVOKED"));
    let storage = s.consumer.running.node.storage.clone();
    assert!(
        wait_until(SOON, || async {
            liutong_node::transfer::copy(storage.as_ref(), &agreement)
                .unwrap()
                .is_none()
        })
        .await
    );
    let out = liutong(args(&[
        "contract",
        "revocations",
        "--json",
        "--config",
        &provider_config,
    ]))
    .await;
    assert_succeeded(&out);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["agreement_id"], agreement.as_str());
    assert_eq!(listed[0]["reason"], "survey withdrawn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_wait_in_the_outbox_until_the_provider_is_back() {
    let s = two_members().await;
    let agreement = received(&s, CSV, SURVEY, "statistics").await;
    let provider = s.provider.stop().await;

    // The read is permitted and counted; its notice cannot be delivered yet.
    let (header, _) = read(&s.consumer, &agreement, "statistics").await.unwrap();
    assert_eq!(header.use_number, 1);
    let context = s.consumer.running.node.clone();
    assert!(
        wait_until(SOON, || async {
            context
                .usage
                .outbox()
                .unwrap()
                .iter()
                .any(|item| item.attempts > 0 && !item.last_error.is_empty())
        })
        .await,
        "a failed attempt is recorded"
    );
    drop(context);
    // The outbox survives a restart of the consumer.
    let consumer = s.consumer.restart().await;
    assert_eq!(consumer.running.node.usage.outbox().unwrap().len(), 1);

    let provider = provider.start().await;
    let provider_context = provider.running.node.clone();
    assert!(
        wait_until(Duration::from_secs(60), || async {
            provider_context
                .usage
                .usage_notices(&agreement)
                .unwrap()
                .len()
                == 1
        })
        .await,
        "the notice arrived once the provider was back"
    );
    assert!(
        wait_until(SOON, || async {
            consumer.running.node.usage.outbox().unwrap().is_empty()
        })
        .await
    );
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_cut_short_is_finished_at_start() {
    let s = two_members().await;
    let agreement = received(&s, CSV, OPEN, "urbanPlanning").await;
    // The state a crash leaves between the deletion's commit (its record and its audit
    // entry, made durable together) and the removal of the copy.
    let storage = s.consumer.running.node.storage.clone();
    let record = liutong_node::usage::Deletion {
        agreement_id: agreement.clone(),
        provider: TRANSPORT.into(),
        product_id: "prd-x".into(),
        version: 1,
        sha256: String::new(),
        delivered_sha256: None,
        held: true,
        cause: liutong_node::usage::DeletionCause::Expired {
            deadline: unix_now(),
        },
        deleted_at: unix_now(),
        revocation_id: None,
    };
    let mut entry = liutong_node::audit::log::Event::new(
        liutong_node::audit::log::EventKind::CopyDeleted,
        unix_now(),
        record.explain(),
    );
    entry.agreement = Some(agreement.clone());
    s.consumer
        .running
        .node
        .audit
        .append_with(
            &[entry],
            vec![(
                "usage",
                liutong_node::storage::Write::Put(
                    format!("d/{agreement}").into_bytes(),
                    serde_json::to_vec(&record).unwrap(),
                ),
            )],
        )
        .await
        .unwrap();
    // Already unreadable, though the data is still on disk.
    let err = read(&s.consumer, &agreement, "urbanPlanning")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        liutong_node::transfer::copy_chunk(storage.as_ref(), &agreement, 0)
            .unwrap()
            .is_some()
    );
    drop(storage);
    let consumer = s.consumer.restart().await;
    let storage = consumer.running.node.storage.as_ref();
    assert!(
        liutong_node::transfer::copy(storage, &agreement)
            .unwrap()
            .is_none()
    );
    assert!(
        liutong_node::transfer::copy_chunk(storage, &agreement, 0)
            .unwrap()
            .is_none()
    );
    // Finishing the removal logs no second entry.
    assert_eq!(
        count_kind(&audit_about(&consumer, &agreement), "copy_deleted", ""),
        1
    );
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_texts_never_leave_a_step_recorded_but_unlogged() {
    let s = two_members().await;
    let agreement = received(&s, CSV, OPEN, "urbanPlanning").await;
    let long = "原因".repeat(35_000); // 70,000 characters, 210,000 bytes

    // The provider refuses a reason it could not log, and revokes nothing.
    let err = revoke(&s.provider, LocalRole::Admin, &agreement, &long)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().starts_with("reason: 70000 characters"),
        "{}",
        err.message()
    );
    assert!(revocations(&s.provider).await.is_empty());
    assert_eq!(
        count_kind(&audit_about(&s.provider, &agreement), "revocation", ""),
        0
    );

    // A notice whose purpose is longer than a purpose may be is refused whole, sent
    // once or twice: neither stored nor logged.
    let notice = UsageNotice {
        notice_id: "use-long".into(),
        agreement_id: agreement.clone(),
        consumer: ECOLOGY.into(),
        provider: TRANSPORT.into(),
        product_id: liutong_node::transfer::copy(
            s.consumer.running.node.storage.as_ref(),
            &agreement,
        )
        .unwrap()
        .expect("copy")
        .agreement
        .peek_json::<serde_json::Value>()
        .unwrap()["product_id"]
            .as_str()
            .unwrap()
            .to_owned(),
        version: 1,
        purpose: long.clone(),
        use_number: 1,
        used_at: unix_now(),
    };
    let signed = Envelope::sign_json(
        USAGE_NOTICE_PAYLOAD_TYPE,
        &notice,
        &s.consumer.running.node.identity.signing_key,
    )
    .unwrap();
    let mut client = UsageControlClient::new(s.consumer.channel_to(&s.provider).await);
    for _ in 0..2 {
        let err = client
            .notify(NotifyRequest {
                message: Some(signed.clone().into()),
            })
            .await
            .unwrap_err();
        assert_refused(&err, Code::InvalidArgument, "purpose: 70000 characters");
    }
    let provider = s.provider.running.node.clone();
    assert!(provider.usage.usage_notices(&agreement).unwrap().is_empty());
    assert_eq!(
        count_kind(&audit_about(&s.provider, &agreement), "usage", ""),
        0
    );

    // A revocation with such a reason (another provider's software may allow it) is
    // applied: the copy is deleted, and both entries quote the reason cut.
    let revocation = liutong_node::usage::revocation::Revocation {
        revocation_id: "rev-long".into(),
        agreement_id: agreement.clone(),
        provider: TRANSPORT.into(),
        consumer: ECOLOGY.into(),
        reason: long.clone(),
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
    let consumer_log = audit_about(&s.consumer, &agreement);
    assert_eq!(
        count_kind(&consumer_log, "revocation", "characters in all"),
        1
    );
    assert_eq!(
        count_kind(&consumer_log, "copy_deleted", "characters in all"),
        1
    );
    let err = read(&s.consumer, &agreement, "urbanPlanning")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("(70000 characters in all)") && err.message().len() < 4_000,
        "{}",
        err.message()
    );
    assert!(
        liutong_node::transfer::copy(s.consumer.running.node.storage.as_ref(), &agreement)
            .unwrap()
            .is_none()
    );
    // Its signed receipt, carrying the whole reason, reaches the provider and is logged.
    assert!(
        wait_until(SOON, || async {
            count_kind(
                &audit_about(&s.provider, &agreement),
                "copy_deleted",
                "(70000 characters in all)",
            ) == 1
        })
        .await
    );
    let receipt: DeletionReceipt = provider
        .usage
        .deletion_receipt(&agreement)
        .unwrap()
        .expect("stored")
        .peek_json()
        .unwrap();
    assert!(
        matches!(&receipt.cause, liutong_node::usage::DeletionCause::Revoked { reason, .. } if *reason == long)
    );
    drop(s.space);
}

/// Masks the district; with `expiring`, the copy is deleted 4 s after the agreement and
/// the provider is notified (so it gets a deletion receipt).
fn masked(expiring: bool) -> String {
    format!(
        r#"
uid = "urn:liutong:policy:masked"
type = "set"
{}

[[permission]]
action = "use"
duty = [
  {}{{ action = "mask", rules = [{{ field = {{ name = "district" }}, method = "drop" }}] }},
]
"#,
        if expiring {
            r#"obligation = [{ action = "notify" }]"#
        } else {
            ""
        },
        if expiring {
            r#"{ action = "deleteAfter", elapsed = "PT4S" }, "#
        } else {
            ""
        }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_deliveries_go_with_a_revocation_or_the_consumers_copy() {
    let s = two_members().await;
    let expiring = received(&s, CSV, &masked(true), "urbanPlanning").await;
    let revoked = received(
        &s,
        b"district,cars\nXihu,9\n",
        &masked(false),
        "urbanPlanning",
    )
    .await;
    let provider = s.provider.running.node.clone();
    // The masked bytes' payload file (its size: 0 once it is gone).
    let masked_chunks = |agreement: &str| {
        let name = liutong_node::desensitize::delivery::payload_name(agreement);
        provider.storage.blobs().len(&name).unwrap().unwrap_or(0)
    };
    assert!(masked_chunks(&expiring) > 0 && masked_chunks(&revoked) > 0);
    let mut direct = s.consumer.direct_transfer_client(&s.provider).await;
    let pull = |agreement: &str| liutong_proto::v1::PullRequest {
        agreement_id: agreement.to_owned(),
        from_chunk: 0,
    };

    // Revoked: the masked bytes are gone when the revocation returns, and its entry
    // says so.
    revoke(&s.provider, LocalRole::Admin, &revoked, "consent withdrawn")
        .await
        .unwrap();
    assert_eq!(masked_chunks(&revoked), 0);
    let storage = provider.storage.as_ref();
    let removal = liutong_node::desensitize::delivery::removed(storage, &revoked)
        .unwrap()
        .expect("the removal is recorded");
    assert_eq!(removal.why, "the agreement was revoked");
    assert_eq!(
        count_kind(
            &audit_about(&s.provider, &revoked),
            "revocation",
            "the masked delivery made for it (",
        ),
        1
    );
    // What was delivered stays on record (a late transfer receipt is checked against it).
    assert!(
        liutong_node::desensitize::delivery::delivered(storage, &revoked)
            .unwrap()
            .is_some()
    );
    let err = direct.pull(pull(&revoked)).await.unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "revoked");

    // Deleted at the consumer's deadline: its signed deletion receipt reaches the
    // provider, which deletes the masked bytes and logs it with the receipt.
    assert!(
        wait_until(SOON, || async { masked_chunks(&expiring) == 0 }).await,
        "the masked delivery went with the consumer's copy"
    );
    assert!(
        liutong_node::transfer::copy(s.consumer.running.node.storage.as_ref(), &expiring)
            .unwrap()
            .is_none()
    );
    assert_eq!(
        count_kind(
            &audit_about(&s.provider, &expiring),
            "copy_deleted",
            "the masked delivery made for it (",
        ),
        1
    );
    let err = direct.pull(pull(&expiring)).await.unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "deadline passed");
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guardrails_narrowed_after_publish_refuse_the_agreement() {
    let s = two_members().await;
    let zhejiang_only = "uid = \"urn:liutong:policy:od\"\ntype = \"set\"\n\n[[permission]]\n\
        action = \"use\"\nconstraint = [{ leftOperand = \"region\", operator = \"isPartOf\", \
        rightOperand = \"330000\" }]\n";
    let od = publish(
        &s.provider,
        CSV,
        "OD matrix",
        "important",
        "csv",
        zhejiang_only,
    )
    .await
    .unwrap();
    let pending = s
        .consumer
        .request_contract(&s.provider, &od.offer_id, "urbanPlanning")
        .await
        .unwrap();
    assert_eq!(pending.state, "REQUESTED", "waits for a person's approval");

    // While the request waits, the provider's operator narrows the regions permitted
    // for important data to Beijing and restarts the node.
    let mut stopped = s.provider.stop().await;
    stopped.config.guardrails.important_regions = vec![RegionCode::parse("110000").unwrap()];
    let provider = stopped.start().await;
    refresh_all(&[&provider]).await;

    // Approving it now makes no agreement: the offer itself breaks the new guardrails.
    let err = provider
        .admin(LocalRole::Admin)
        .await
        .approve_contract(liutong_proto::v1::ApproveContractRequest {
            negotiation_id: pending.negotiation_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains("cannot be agreed under this node's current guardrails"),
        "{}",
        err.message()
    );
    assert!(
        provider
            .audit_events()
            .iter()
            .any(|e| e["kind"] == "policy_decision"
                && e["detail"]
                    .as_str()
                    .unwrap()
                    .contains("approval by local admin refused")),
        "the refused approval is logged"
    );
    let n = provider
        .running
        .node
        .contracts
        .get(&pending.negotiation_id)
        .unwrap()
        .unwrap();
    assert_eq!(n.state.to_string(), "REQUESTED");
    assert!(n.agreement.is_none() && n.agreement_id.is_none());
    assert!(
        provider
            .audit_events()
            .iter()
            .all(|e| e["kind"] != "negotiation_state_changed"
                || !e["detail"].as_str().unwrap().contains("AGREED")),
        "nothing was agreed"
    );

    // The check made when an agreement is signed refuses it under the configuration
    // the node now runs with, naming the guardrail, whatever the offer says.
    let context = &provider.running.node;
    let consumer = liutong_node::identity::ParticipantId::parse(ECOLOGY).unwrap();
    let check = |class, approved_by| {
        context
            .contracts
            .check_guardrails(&consumer, class, approved_by)
    };
    use liutong_policy::Classification;
    assert_eq!(
        check(Classification::Important, Some("local admin")).unwrap_err(),
        "the consumer's region 330100 is outside the regions permitted for important data \
         (110000)"
    );
    assert!(
        check(Classification::Important, None)
            .unwrap_err()
            .contains("needs a person's approval")
    );
    assert!(
        check(Classification::Core, Some("local admin"))
            .unwrap_err()
            .contains("core data never leaves the node")
    );
    check(Classification::General2, None).expect("general data needs no approval");
    drop(s.space);
}

/// An agreement's policy is compiled once per node and kept, on the provider and the
/// consumer alike; another policy under the same agreement ID is compiled anew, never
/// served the kept one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agreement_policies_are_compiled_once_and_kept_per_agreement() {
    let s = two_members().await;
    let agreement_id = received(&s, CSV, SURVEY, "research").await;
    read(&s.consumer, &agreement_id, "research")
        .await
        .expect("a read under the agreement");
    for node in [&s.provider, &s.consumer] {
        let context = &node.running.node;
        let agreement = context
            .contracts
            .by_agreement(&agreement_id)
            .unwrap()
            .and_then(|n| n.agreement_content())
            .expect("the agreement");
        let first = context.contracts.compiled_policy(&agreement).unwrap();
        let again = context.contracts.compiled_policy(&agreement).unwrap();
        assert!(std::sync::Arc::ptr_eq(&first, &again), "compiled once");
        assert_eq!(
            first.policy().uid,
            format!("urn:liutong:agreement:{agreement_id}")
        );

        let mut other = agreement.clone();
        let mut policy = first.policy().clone();
        policy.uid = "urn:liutong:agreement:another".into();
        other.policy = policy.to_odrl();
        let changed = context.contracts.compiled_policy(&other).unwrap();
        assert!(!std::sync::Arc::ptr_eq(&first, &changed));
        assert_eq!(changed.policy().uid, "urn:liutong:agreement:another");
        // A policy that does not compile is refused, not served from the cache.
        other.policy = serde_json::json!({ "not": "a policy" });
        assert!(context.contracts.compiled_policy(&other).is_err());
    }
}
