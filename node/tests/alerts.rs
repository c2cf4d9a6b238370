//! Security alerts across real nodes: repeated policy denials, refused authentications,
//! a transfer beyond its agreement, a trust list close to expiry and the hook for usage
//! control; each an audit entry and, with a webhook, a JSON POST to a loopback receiver.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use liutong_node::alerts::Rule;
use liutong_node::audit::log::{Event, EventKind};
use liutong_node::authority::Authority;
use liutong_node::identity::{MemberRole, ParticipantKind};
use liutong_proto::v1::{DescribeRequest, PullRequest};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tonic::Code;

const TRAFFIC_POLICY: &str = r#"
uid = "urn:liutong:policy:traffic"
type = "set"

[[permission]]
action = "use"
constraint = [{ leftOperand = "purpose", operator = "isA", rightOperand = "publicService" }]

[[prohibition]]
action = "use"
constraint = [{ leftOperand = "purpose", operator = "isA", rightOperand = "commercial" }]
"#;

const CSV: &[u8] = b"road,hour,vehicles\nYan'an Rd,8,1520\nTianmushan Rd,8,1210\n";
const BOTH: &[MemberRole] = &[MemberRole::Provider, MemberRole::Consumer];

/// A webhook receiver on a loopback port: takes HTTP/1.1 POSTs, answers 200, keeps the
/// request head and the JSON body.
#[derive(Clone, Default)]
struct Webhook {
    received: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
}

impl Webhook {
    async fn start(&self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/liutong", listener.local_addr().unwrap());
        let received = self.received.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let received = received.clone();
                tokio::spawn(async move {
                    let mut data = Vec::new();
                    let mut buf = [0u8; 4096];
                    // The head, then as many body bytes as Content-Length says.
                    let (head, body_start) = loop {
                        let n = socket.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        data.extend_from_slice(&buf[..n]);
                        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                            break (String::from_utf8_lossy(&data[..end]).to_string(), end + 4);
                        }
                    };
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while data.len() < body_start + length {
                        let n = socket.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        data.extend_from_slice(&buf[..n]);
                    }
                    let body = serde_json::from_slice(&data[body_start..body_start + length])
                        .unwrap_or(serde_json::Value::Null);
                    received.lock().unwrap().push((head, body));
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        });
        url
    }

    fn alerts(&self, rule: &str) -> Vec<(String, serde_json::Value)> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, body)| body["rule"] == rule)
            .cloned()
            .collect()
    }
}

/// The node's audit entries of kind `alert`, with their indices.
fn alert_entries(node: &TestNode) -> Vec<(u64, Event)> {
    let audit = &node.running.node.audit;
    (0..audit.size())
        .filter_map(|i| {
            let event: Event = serde_json::from_slice(&audit.entry(i).unwrap()?).ok()?;
            (event.kind == EventKind::Alert).then_some((i, event))
        })
        .collect()
}

fn of_rule(entries: &[(u64, Event)], rule: Rule) -> Vec<(u64, Event)> {
    entries
        .iter()
        .filter(|(_, e)| e.detail.starts_with(&format!("{rule}: ")))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_denials_and_refused_authentications_reach_the_audit_log_and_the_webhook() {
    let webhook = Webhook::default();
    let url = webhook.start().await;
    let space = DataSpace::start().await;
    let transport = space
        .node_with(TRANSPORT, "transport", BOTH, |c| {
            c.alerts.webhook = Some(url);
        })
        .await;
    let mut logistics = DataSpace::admission(
        LOGISTICS,
        "Hangzhou Logistics Co.",
        ParticipantKind::Enterprise,
    );
    logistics.sector = "logistics".into();
    let logistics = space.node_as(logistics, "logistics").await;
    refresh_all(&[&transport, &logistics]).await;
    let product = publish(
        &transport,
        CSV,
        "Road traffic flow",
        "general-2",
        "csv",
        TRAFFIC_POLICY,
    )
    .await
    .expect("publish");

    // Policy denials: the default rule fires at the fifth within ten minutes.
    for attempt in 1..=5 {
        let denied = logistics
            .request_contract(&transport, &product.offer_id, "commercial")
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        let alerts = of_rule(&alert_entries(&transport), Rule::PolicyDenials);
        // The alert is logged before the denial is answered.
        assert_eq!(
            alerts.len(),
            usize::from(attempt == 5),
            "after {attempt} denials"
        );
    }
    let (index, entry) = of_rule(&alert_entries(&transport), Rule::PolicyDenials)
        .pop()
        .unwrap();
    assert_eq!(entry.participant.as_deref(), Some(LOGISTICS));
    assert!(
        entry.detail.contains("5 policy denials") && entry.detail.contains("negotiation scope"),
        "{}",
        entry.detail
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            let w = webhook.clone();
            async move { !w.alerts("policy_denials").is_empty() }
        })
        .await,
        "the webhook gets the alert"
    );
    let (head, body) = webhook.alerts("policy_denials").remove(0);
    assert!(head.starts_with("POST /hooks/liutong HTTP/1.1"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    assert_eq!(body["severity"], "warning");
    assert_eq!(body["node"], TRANSPORT);
    assert_eq!(body["peer"], LOGISTICS);
    assert_eq!(body["audit_index"], index);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("5 policy denials")
    );
    assert!(body["time"].as_str().unwrap().ends_with('Z'), "{body}");
    assert!(body["time_unix"].as_i64().unwrap() > 1_700_000_000);

    // Refused authentications: a certificate from another data space, three times.
    let other_dir = space.dir.path().join("other-authority");
    let mut other = Authority::init(&other_dir, "Other Data Space").unwrap();
    let rogue = space.identity_from(
        &mut other,
        DataSpace::admission(ROGUE, "Rogue Ltd", ParticipantKind::Enterprise),
    );
    let mut client = node_client(transport.peer_addr(), Some(&rogue), transport.roots()).await;
    for attempt in 1..=3 {
        let refused = client.describe(DescribeRequest {}).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
        let alerts = of_rule(&alert_entries(&transport), Rule::FailedAuthentication);
        assert_eq!(
            alerts.len(),
            usize::from(attempt == 3),
            "after {attempt} refusals"
        );
    }
    let (_, entry) = of_rule(&alert_entries(&transport), Rule::FailedAuthentication)
        .pop()
        .unwrap();
    // An address is not a participant: the searchable field stays empty.
    assert_eq!(entry.participant, None);
    assert!(
        entry
            .detail
            .contains("3 refused authentications from 127.0.0.1")
            && entry.detail.contains("/liutong.v1.Node/Describe")
            && entry
                .detail
                .contains("not issued by this data space's authority"),
        "{}",
        entry.detail
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            let w = webhook.clone();
            async move { !w.alerts("failed_authentication").is_empty() }
        })
        .await
    );
    let (_, body) = webhook.alerts("failed_authentication").remove(0);
    assert_eq!(body["peer"], "address 127.0.0.1");
    assert_eq!(body["severity"], "warning");

    // Usage control's hook: a read outside the permitted window.
    transport
        .running
        .node
        .alerts
        .raise(
            Rule::ReadOutsideWindow,
            Some(ECOLOGY),
            "read of agr-1 at 23:10, outside the permitted 08:00-18:00",
        )
        .await;
    let (_, entry) = of_rule(&alert_entries(&transport), Rule::ReadOutsideWindow)
        .pop()
        .expect("logged");
    assert_eq!(entry.participant.as_deref(), Some(ECOLOGY));
    assert!(
        wait_until(Duration::from_secs(10), || {
            let w = webhook.clone();
            async move { !w.alerts("read_outside_window").is_empty() }
        })
        .await
    );
    let counts = transport.running.node.alerts.counts();
    assert!(counts.contains(&(Rule::PolicyDenials, 1)), "{counts:?}");
    assert!(
        counts.contains(&(Rule::FailedAuthentication, 1)),
        "{counts:?}"
    );
    assert!(counts.contains(&(Rule::TransferVolume, 0)), "{counts:?}");

    for n in [transport, logistics] {
        n.running.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulling_more_than_the_agreement_covers_is_alerted_once() {
    let space = DataSpace::start().await;
    let transport = space
        .node_with(TRANSPORT, "transport", BOTH, |c| {
            c.alerts.transfer_volume.factor = 1.5;
        })
        .await;
    let ecology = space
        .node(ECOLOGY, "ecology", Duration::from_secs(3600))
        .await;
    refresh_all(&[&transport, &ecology]).await;
    let product = publish(
        &transport,
        CSV,
        "Road traffic flow",
        "general-2",
        "csv",
        TRAFFIC_POLICY,
    )
    .await
    .expect("publish");
    let agreed = ecology
        .request_contract(&transport, &product.offer_id, "urbanPlanning")
        .await
        .expect("agreement");

    // The consumer's node pulls once: what the agreement covers.
    let last = ecology.pull_all(&agreed.agreement_id).await.unwrap();
    assert_eq!(last.state, "COMPLETED");
    assert!(of_rule(&alert_entries(&transport), Rule::TransferVolume).is_empty());

    // Then pulls the whole product again, twice, straight from the peer API.
    let mut direct = ecology.direct_transfer_client(&transport).await;
    for _ in 0..2 {
        let mut stream = direct
            .pull(PullRequest {
                agreement_id: agreed.agreement_id.clone(),
                from_chunk: 0,
            })
            .await
            .expect("the agreement still permits the transfer")
            .into_inner();
        while let Some(part) = stream.next().await {
            part.expect("chunk");
        }
    }
    // Counted as the chunks leave, after the stream: wait for the delivery task.
    assert!(
        wait_until(Duration::from_secs(10), || {
            let t = &transport;
            async move { !of_rule(&alert_entries(t), Rule::TransferVolume).is_empty() }
        })
        .await,
        "the volume alert"
    );
    let alerts = of_rule(&alert_entries(&transport), Rule::TransferVolume);
    assert_eq!(alerts.len(), 1, "once per agreement");
    let entry = &alerts[0].1;
    assert_eq!(entry.participant.as_deref(), Some(ECOLOGY));
    assert!(
        entry.detail.contains(&agreed.agreement_id)
            && entry
                .detail
                .contains(&format!("covers {} bytes", CSV.len())),
        "{}",
        entry.detail
    );
    for n in [transport, ecology] {
        n.running.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trust_list_close_to_expiry_is_alerted_once_per_list_and_rules_can_be_turned_off() {
    let space = DataSpace::start().await;
    // Lists are valid ten minutes; warn an hour ahead, so every list is "close".
    let node = space
        .node_with(TRANSPORT, "transport", BOTH, |c| {
            c.alerts.trust_list_expiry.before = Duration::from_secs(3600);
            c.alerts.read_outside_window.enabled = false;
        })
        .await;
    let sequence = node.running.node.trust.status().sequence;
    let alerts = of_rule(&alert_entries(&node), Rule::TrustListExpiry);
    assert_eq!(alerts.len(), 1, "raised at the first fetch");
    assert!(
        alerts[0]
            .1
            .detail
            .contains(&format!("(sequence {sequence}) expires in")),
        "{}",
        alerts[0].1.detail
    );

    // The same list again: no second alert.
    refresh_all(&[&node]).await;
    assert_eq!(
        of_rule(&alert_entries(&node), Rule::TrustListExpiry).len(),
        1
    );
    // A new list (the authority admitted someone) close to expiry: a new alert.
    space.admit(DataSpace::admission(
        ECOLOGY,
        "Hangzhou Ecology Bureau",
        ParticipantKind::Government,
    ));
    refresh_all(&[&node]).await;
    assert!(node.running.node.trust.status().sequence > sequence);
    assert_eq!(
        of_rule(&alert_entries(&node), Rule::TrustListExpiry).len(),
        2
    );

    // A rule turned off in node.toml raises nothing.
    node.running
        .node
        .alerts
        .raise(Rule::ReadOutsideWindow, Some(ECOLOGY), "ignored")
        .await;
    assert!(of_rule(&alert_entries(&node), Rule::ReadOutsideWindow).is_empty());
    node.running.shutdown().await.unwrap();
}
