//! The Dataspace Protocol 2025-1 transfer process against real nodes over real TLS on
//! loopback. Provider role: a raw HTTP test consumer (with a callback server presenting
//! its certificate) drives the scenario shapes of the protocol's compatibility kit
//! (TP:01 request → start → pull → completion; TP:02 suspension, restart and
//! terminations; TP:03 invalid transitions, answered 4xx other than 404), the data
//! endpoint's bearer token and `Range`. Every message sent and received is validated
//! against the protocol's JSON Schemas.

mod common;
mod dsp;

use base64::Engine as _;
use common::*;
use dsp::{CALLBACK_WITHIN, Callbacks, Client, assert_valid};
use liutong_node::config::{DspSection, NodeConfig};
use liutong_node::identity::{MemberRole, ParticipantKind};
use liutong_node::tls::TlsIdentity;
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

const ROLES: &[MemberRole] = &[MemberRole::Provider, MemberRole::Consumer];
const CONTEXT: &str = dsp::CONTEXT;

/// Use for public service only.
const PUBLIC_SERVICE: &str = r#"
uid = "urn:liutong:policy:households"
type = "set"

[[permission]]
action = "use"
constraint = [{ leftOperand = "purpose", operator = "isA", rightOperand = "publicService" }]
"#;

fn with_dsp(config: &mut NodeConfig) {
    config.dsp = Some(DspSection::on("127.0.0.1:0".parse().unwrap()));
}

/// A CSV of a little more than two and a half chunks (chunks are 1 MiB).
fn payload() -> Vec<u8> {
    let mut csv = b"district,households\n".to_vec();
    let mut i = 0u64;
    while csv.len() < (5 << 20) / 2 {
        csv.extend_from_slice(format!("district-{i},{}\n", 1000 + i * 7 % 9973).as_bytes());
        i += 1;
    }
    csv
}

fn member(space: &DataSpace, id: &str) -> TlsIdentity {
    let mut admission = DataSpace::admission(id, id, ParticipantKind::Government);
    admission.roles = ROLES.to_vec();
    let bundle = space.admit(admission);
    space.identity_of(&bundle)
}

/// A provider serving DSP with one offer; a consumer member (certificate and callback
/// server) holding a FINALIZED agreement for it, negotiated over DSP.
struct Fixture {
    space: DataSpace,
    provider: TestNode,
    consumer: TlsIdentity,
    callbacks: Callbacks,
    data: Vec<u8>,
    /// The agreement's `@id`, as the agreement message gave it.
    agreement: String,
}

impl Fixture {
    async fn start() -> Self {
        Self::start_with(with_dsp).await
    }

    /// [`start`](Self::start) with the provider configured by `edit` (which must turn
    /// its DSP listener on).
    async fn start_with(edit: impl FnOnce(&mut NodeConfig)) -> Self {
        let space = DataSpace::start().await;
        let provider = space.node_with(TRANSPORT, "transport", ROLES, edit).await;
        let consumer = member(&space, ECOLOGY);
        refresh_all(&[&provider]).await;
        let data = payload();
        let product = publish(
            &provider,
            &data,
            "Households",
            "general-2",
            "csv",
            PUBLIC_SERVICE,
        )
        .await
        .unwrap();
        let callbacks =
            Callbacks::start(&consumer, &provider.roots(), provider.participant.san_uri()).await;
        let mut f = Self {
            space,
            provider,
            consumer,
            callbacks,
            data,
            agreement: String::new(),
        };
        f.agreement = f
            .negotiate(&format!("urn:liutong:offer:{}", product.offer_id))
            .await;
        f
    }

    fn client(&self, identity: &TlsIdentity) -> Client {
        let addr = self
            .provider
            .running
            .dsp_addr()
            .expect("the DSP listener is on");
        Client::new(addr, Some(identity), self.provider.roots())
    }

    /// A plain DSP negotiation to FINALIZED; the agreement's `@id`.
    async fn negotiate(&self, offer: &str) -> String {
        let client = self.client(&self.consumer);
        let cpid = "urn:uuid:negotiation-for-transfer";
        let message = json!({
            "@context": [CONTEXT],
            "@type": "ContractRequestMessage",
            "consumerPid": cpid,
            "offer": {"@type": "Offer", "@id": offer, "permission": [{"action": "use"}]},
            "callbackAddress": self.callbacks.url(),
            "lt:purpose": "publicService",
        });
        assert_valid(&message);
        let answer = client.post("/negotiations/request", &message).await;
        assert_eq!(answer.status, 201, "{answer:?}");
        let ppid = answer.message()["providerPid"].as_str().unwrap().to_owned();
        let agreed = self
            .callbacks
            .wait_for(&format!("/callback/negotiations/{cpid}/agreement"))
            .await;
        let verification = json!({
            "@context": [CONTEXT],
            "@type": "ContractAgreementVerificationMessage",
            "providerPid": ppid,
            "consumerPid": cpid,
        });
        assert_valid(&verification);
        let answer = client
            .post(
                &format!("/negotiations/{ppid}/agreement/verification"),
                &verification,
            )
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        self.callbacks
            .wait_for(&format!("/callback/negotiations/{cpid}/events"))
            .await;
        agreed["agreement"]["@id"].as_str().unwrap().to_owned()
    }

    /// The start messages received for consumer process `cpid`, in order.
    fn starts(&self, cpid: &str) -> Vec<Json> {
        let path = format!("/callback/transfers/{cpid}/start");
        self.callbacks
            .received()
            .into_iter()
            .filter(|(p, _)| *p == path)
            .map(|(_, m)| m)
            .collect()
    }

    /// Waits for the `n`th start message for `cpid` (1-based); returns it, validated.
    async fn start_message(&self, cpid: &str, n: usize) -> Json {
        let arrived = wait_until(CALLBACK_WITHIN, || async { self.starts(cpid).len() >= n }).await;
        assert!(
            arrived,
            "no start message {n} for {cpid}: {:?}",
            self.callbacks.received()
        );
        let message = self.starts(cpid)[n - 1].clone();
        assert_valid(&message);
        message
    }

    /// Requests a transfer for consumer process `cpid`; the provider's process ID.
    async fn request(&self, cpid: &str) -> String {
        let answer = self
            .client(&self.consumer)
            .post(
                "/transfers/request",
                &request_message(cpid, &self.agreement, &self.callbacks.url()),
            )
            .await;
        assert_eq!(answer.status, 201, "{answer:?}");
        let body = answer.message();
        assert_eq!(body["@type"], "TransferProcess");
        assert_eq!(body["state"], "REQUESTED");
        assert_eq!(body["consumerPid"], cpid);
        body["providerPid"].as_str().unwrap().to_owned()
    }

    async fn state_of(&self, ppid: &str) -> String {
        let answer = self
            .client(&self.consumer)
            .get(&format!("/transfers/{ppid}"))
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.message()["state"].as_str().unwrap().to_owned()
    }
}

fn request_message(cpid: &str, agreement: &str, callback: &str) -> Json {
    let message = json!({
        "@context": [CONTEXT],
        "@type": "TransferRequestMessage",
        "consumerPid": cpid,
        "agreementId": agreement,
        "format": "HttpData-PULL",
        "callbackAddress": callback,
    });
    assert_valid(&message);
    message
}

fn pids(ty: &str, ppid: &str, cpid: &str) -> Json {
    let mut m = json!({
        "@context": [CONTEXT],
        "@type": ty,
        "providerPid": ppid,
        "consumerPid": cpid,
    });
    if ty != "TransferCompletionMessage" && ty != "TransferStartMessage" {
        m["code"] = "consumer.pause".into();
        m["reason"] = json!(["the consumer asked"]);
    }
    assert_valid(&m);
    m
}

/// The data address of a start message: its endpoint's path and its token.
fn data_address(start: &Json) -> (String, String) {
    let address = &start["dataAddress"];
    assert_eq!(address["endpointType"], "https://w3id.org/idsa/v4.1/HTTP");
    let endpoint = address["endpoint"].as_str().unwrap();
    let property = |name: &str| {
        address["endpointProperties"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["value"].as_str())
            .map(str::to_owned)
    };
    assert_eq!(property("authType").as_deref(), Some("bearer"));
    (
        Client::path_of(endpoint),
        property("authorization").expect("a token"),
    )
}

/// A refusal: the status and a valid `TransferError` whose reason contains `words`.
#[track_caller]
fn assert_error(answer: &dsp::Answer, status: u16, words: &str) -> Json {
    assert_eq!(answer.status, status, "{answer:?}");
    let error = answer.message();
    assert_eq!(error["@type"], "TransferError", "{error}");
    let reason = error["reason"].to_string();
    assert!(reason.contains(words), "{words:?} not in {reason}");
    error
}

/// The provider's signed manifest a data answer carries, checked against the provider's
/// signature is left to the consumer node; here its payload, as JSON.
fn manifest_of(answer: &dsp::Answer) -> Json {
    let manifest = base64::engine::general_purpose::STANDARD
        .decode(answer.headers["liutong-manifest"].as_bytes())
        .unwrap();
    let manifest: liutong_node::identity::Envelope = serde_json::from_slice(&manifest).unwrap();
    serde_json::from_slice(&manifest.payload).unwrap()
}

/// The body of a whole data answer, after checking it chunk by chunk and whole against
/// the manifest that came with it.
#[track_caller]
fn verified(answer: &dsp::Answer) -> Vec<u8> {
    let manifest = manifest_of(answer);
    let chunk = manifest["chunk_size"].as_u64().unwrap() as usize;
    let hashes = manifest["chunk_hashes"].as_array().unwrap();
    assert_eq!(answer.body.len() as u64, manifest["size"].as_u64().unwrap());
    for (i, piece) in answer.body.chunks(chunk).enumerate() {
        assert_eq!(
            hashes[i],
            hex::encode(Sha256::digest(piece)).as_str(),
            "chunk {i}"
        );
    }
    assert_eq!(
        manifest["sha256"],
        hex::encode(Sha256::digest(&answer.body)).as_str()
    );
    answer.body.clone()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn tp_01_a_request_is_started_pulled_with_the_token_and_completed() {
    let f = Fixture::start().await;
    let client = f.client(&f.consumer);
    let cpid = "urn:uuid:tp-01";
    let ppid = f.request(cpid).await;
    let start = f.start_message(cpid, 1).await;
    assert_eq!(start["@type"], "TransferStartMessage");
    assert_eq!(start["providerPid"], ppid.as_str());
    assert_eq!(start["consumerPid"], cpid);
    assert_eq!(f.state_of(&ppid).await, "STARTED");
    let (path, token) = data_address(&start);
    assert_eq!(path, format!("/data/{ppid}"));

    let auth = bearer(&token);
    let answer = client
        .send_with("GET", &path, &[("authorization", &auth)], None)
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "status {}", answer.status);
    assert_eq!(answer.headers["accept-ranges"], "bytes");
    let manifest = manifest_of(&answer);
    assert_eq!(manifest["chunk_hashes"].as_array().unwrap().len(), 3);
    // Delivered as the gRPC pull delivers this agreement: a CSV is watermarked for
    // its consumer, and the signed manifest covers the watermarked bytes.
    assert_eq!(
        manifest["desensitized"]["source_size"],
        f.data.len() as u64,
        "{manifest}"
    );
    assert!(
        manifest["desensitized"]["watermark"]["embedded"] == true,
        "{manifest}"
    );
    let body = verified(&answer);
    assert_eq!(body.len(), f.data.len());
    assert!(body != f.data, "the watermark is in the delivered bytes");

    let answer = client
        .post(
            &format!("/transfers/{ppid}/completion"),
            &pids("TransferCompletionMessage", &ppid, cpid),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(f.state_of(&ppid).await, "COMPLETED");

    // The token opens nothing once the transfer is complete.
    let replay = client
        .send_with("GET", &path, &[("authorization", &auth)], None)
        .await
        .unwrap();
    assert_error(&replay, 403, "COMPLETED");

    let audit = f.provider.audit_texts().join("\n");
    assert!(
        audit.contains(&format!("DSP transfer {ppid} REQUESTED")),
        "{audit}"
    );
    assert!(audit.contains("transfer STARTED: "), "{audit}");
    assert!(
        audit.contains(&format!("DSP transfer {ppid} COMPLETED")),
        "{audit}"
    );
}

#[tokio::test]
async fn tp_02_a_suspended_transfer_stops_serving_and_a_restart_brings_a_new_token() {
    let f = Fixture::start().await;
    let client = f.client(&f.consumer);
    let cpid = "urn:uuid:tp-02";
    let ppid = f.request(cpid).await;
    let (path, first) = data_address(&f.start_message(cpid, 1).await);

    let answer = client
        .post(
            &format!("/transfers/{ppid}/suspension"),
            &pids("TransferSuspensionMessage", &ppid, cpid),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(f.state_of(&ppid).await, "SUSPENDED");
    let auth = bearer(&first);
    let answer = client
        .send_with("GET", &path, &[("authorization", &auth)], None)
        .await
        .unwrap();
    assert_error(&answer, 403, "SUSPENDED");

    let answer = client
        .post(
            &format!("/transfers/{ppid}/start"),
            &pids("TransferStartMessage", &ppid, cpid),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let (_, second) = data_address(&f.start_message(cpid, 2).await);
    assert_ne!(first, second, "a restart brings a new token");
    assert_eq!(f.state_of(&ppid).await, "STARTED");
    let answer = client
        .send_with("GET", &path, &[("authorization", &auth)], None)
        .await
        .unwrap();
    assert_error(&answer, 401, "not this transfer's current token");
    let answer = client
        .send_with("GET", &path, &[("authorization", &bearer(&second))], None)
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    verified(&answer);

    // The consumer terminates it: nothing more is served.
    let answer = client
        .post(
            &format!("/transfers/{ppid}/termination"),
            &pids("TransferTerminationMessage", &ppid, cpid),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(f.state_of(&ppid).await, "TERMINATED");
    let answer = client
        .send_with("GET", &path, &[("authorization", &bearer(&second))], None)
        .await
        .unwrap();
    assert_error(&answer, 403, "TERMINATED");

    // A suspended transfer can be terminated too.
    let cpid = "urn:uuid:tp-02-b";
    let ppid = f.request(cpid).await;
    f.start_message(cpid, 1).await;
    for ty in ["TransferSuspensionMessage", "TransferTerminationMessage"] {
        let kind = if ty.contains("Suspension") {
            "suspension"
        } else {
            "termination"
        };
        let answer = client
            .post(&format!("/transfers/{ppid}/{kind}"), &pids(ty, &ppid, cpid))
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    assert_eq!(f.state_of(&ppid).await, "TERMINATED");
    let audit = f.provider.audit_texts().join("\n");
    assert!(
        audit.contains(&format!("DSP transfer {ppid} SUSPENDED by the consumer")),
        "{audit}"
    );
    assert!(
        audit.contains(&format!("DSP transfer {ppid} TERMINATED by the consumer")),
        "{audit}"
    );
}

#[tokio::test]
async fn tp_03_invalid_transitions_are_400_with_a_transfer_error_not_404() {
    let f = Fixture::start().await;
    let client = f.client(&f.consumer);
    let cpid = "urn:uuid:tp-03";
    let ppid = f.request(cpid).await;
    f.start_message(cpid, 1).await;
    let post = |kind: &'static str, ty: &'static str| {
        let client = client.clone();
        let (ppid, cpid) = (ppid.clone(), cpid.to_owned());
        async move {
            client
                .post(
                    &format!("/transfers/{ppid}/{kind}"),
                    &pids(ty, &ppid, &cpid),
                )
                .await
        }
    };
    // STARTED: a restart is not a step from it.
    let answer = post("start", "TransferStartMessage").await;
    let error = assert_error(&answer, 400, "is STARTED; a restart needs it SUSPENDED");
    assert_eq!(error["providerPid"], ppid.as_str());
    assert_eq!(error["consumerPid"], cpid);
    // A message naming another consumer process.
    let answer = client
        .post(
            &format!("/transfers/{ppid}/suspension"),
            &pids("TransferSuspensionMessage", &ppid, "urn:uuid:another"),
        )
        .await;
    assert_error(&answer, 400, "consumerPid must be");
    // A message of the wrong type at an endpoint.
    let answer = client
        .post(
            &format!("/transfers/{ppid}/suspension"),
            &pids("TransferCompletionMessage", &ppid, cpid),
        )
        .await;
    assert_error(&answer, 400, "takes a TransferSuspensionMessage");
    // COMPLETED is final.
    let answer = post("completion", "TransferCompletionMessage").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    for (kind, ty, words) in [
        (
            "completion",
            "TransferCompletionMessage",
            "a completion needs it STARTED",
        ),
        (
            "suspension",
            "TransferSuspensionMessage",
            "a suspension needs it STARTED",
        ),
        (
            "termination",
            "TransferTerminationMessage",
            "a termination needs it",
        ),
        (
            "start",
            "TransferStartMessage",
            "a restart needs it SUSPENDED",
        ),
    ] {
        let answer = post(kind, ty).await;
        assert_error(&answer, 400, words);
    }
    assert_eq!(f.state_of(&ppid).await, "COMPLETED");
}

#[tokio::test]
async fn an_unknown_or_another_participants_transfer_is_404_and_bad_requests_400() {
    let f = Fixture::start().await;
    let stranger = member(&f.space, LOGISTICS);
    refresh_all(&[&f.provider]).await;
    let cpid = "urn:uuid:foreign";
    let ppid = f.request(cpid).await;
    f.start_message(cpid, 1).await;
    let other = f.client(&stranger);
    assert_error(
        &other.get(&format!("/transfers/{ppid}")).await,
        404,
        "no transfer process",
    );
    assert_error(
        &other
            .post(
                &format!("/transfers/{ppid}/termination"),
                &pids("TransferTerminationMessage", &ppid, cpid),
            )
            .await,
        404,
        "no transfer process",
    );
    assert_error(
        &f.client(&f.consumer)
            .get("/transfers/tp-000000000000000000000000")
            .await,
        404,
        "no transfer process",
    );
    assert_eq!(f.state_of(&ppid).await, "STARTED");

    // Another member cannot transfer under this consumer's agreement.
    let answer = other
        .post(
            "/transfers/request",
            &request_message("urn:uuid:x", &f.agreement, &f.callbacks.url()),
        )
        .await;
    assert_error(&answer, 400, "names no finalized agreement between you");
    let client = f.client(&f.consumer);
    let mut push = request_message("urn:uuid:y", &f.agreement, &f.callbacks.url());
    push["format"] = "HttpData-PUSH".into();
    assert_error(
        &client.post("/transfers/request", &push).await,
        400,
        "is not offered",
    );
    let mut plain = request_message("urn:uuid:z", &f.agreement, &f.callbacks.url());
    plain["callbackAddress"] = "http://localhost:1/callback".into();
    assert_error(
        &client.post("/transfers/request", &plain).await,
        400,
        "not an https:// URL",
    );
    let unknown = request_message(
        "urn:uuid:w",
        "urn:liutong:agreement:agr-none",
        &f.callbacks.url(),
    );
    assert_error(
        &client.post("/transfers/request", &unknown).await,
        400,
        "names no finalized agreement",
    );
    let mut no_context = request_message("urn:uuid:v", &f.agreement, &f.callbacks.url());
    no_context.as_object_mut().unwrap().remove("@context");
    assert_error(
        &client.post("/transfers/request", &no_context).await,
        400,
        "@context is missing",
    );
    let answer = client
        .send("POST", "/transfers/request", Some(b"{not json".to_vec()))
        .await
        .unwrap();
    assert_error(&answer, 400, "not JSON");
}

#[tokio::test]
async fn the_data_endpoint_takes_only_the_transfers_current_token_from_its_consumer() {
    let f = Fixture::start().await;
    let stranger = member(&f.space, LOGISTICS);
    refresh_all(&[&f.provider]).await;
    let client = f.client(&f.consumer);
    let (a, b) = ("urn:uuid:token-a", "urn:uuid:token-b");
    let ppid_a = f.request(a).await;
    let ppid_b = f.request(b).await;
    let (path_a, token_a) = data_address(&f.start_message(a, 1).await);
    let (_, token_b) = data_address(&f.start_message(b, 1).await);
    let get = |client: Client, path: String, auth: Option<String>| async move {
        let headers: Vec<(&str, &str)> = match &auth {
            Some(v) => vec![("authorization", v.as_str())],
            None => vec![],
        };
        client
            .send_with("GET", &path, &headers, None)
            .await
            .unwrap()
    };

    let missing = get(client.clone(), path_a.clone(), None).await;
    assert_error(&missing, 401, "no token");
    assert!(missing.headers.contains_key("www-authenticate"));
    assert!(missing.body.len() < 2048, "nothing served");
    assert_error(
        &get(client.clone(), path_a.clone(), Some(bearer("not-a-token"))).await,
        401,
        "not this transfer's current token",
    );
    // Transfer B's token does not open transfer A.
    assert_error(
        &get(client.clone(), path_a.clone(), Some(bearer(&token_b))).await,
        401,
        "not this transfer's current token",
    );
    // The right token from another member's certificate.
    assert_error(
        &get(f.client(&stranger), path_a.clone(), Some(bearer(&token_a))).await,
        403,
        "of another participant",
    );
    // The token as the data address gives it, without its scheme, is taken too.
    let answer = get(client.clone(), path_a.clone(), Some(token_a.clone())).await;
    assert_eq!(answer.status, 200);
    verified(&answer);

    // An expired token: its expiry is set in the past on the provider's store.
    let storage = &f.provider.running.node.storage;
    let key = ppid_a.as_bytes();
    let mut record: Json = serde_json::from_slice(
        &storage
            .get(liutong_node::dsp::transfer::RECORDS, key)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    record["token_expires"] = (liutong_node::base::clock::now() - 1).into();
    storage
        .put(
            liutong_node::dsp::transfer::RECORDS,
            key,
            &serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
    assert_error(
        &get(client.clone(), path_a.clone(), Some(bearer(&token_a))).await,
        401,
        "the token expired",
    );
    assert_eq!(f.state_of(&ppid_b).await, "STARTED");

    // Every refusal is on the provider's audit log, under the caller.
    let audit = f.provider.audit_texts().join("\n");
    assert!(audit.contains("no token"), "{audit}");
    assert!(audit.contains("the token expired"), "{audit}");
    assert!(audit.contains("of another participant"), "{audit}");
}

#[tokio::test]
async fn a_cut_download_resumes_with_range() {
    let f = Fixture::start().await;
    let client = f.client(&f.consumer);
    let cpid = "urn:uuid:range";
    f.request(cpid).await;
    let (path, token) = data_address(&f.start_message(cpid, 1).await);
    let auth = bearer(&token);
    let whole = client
        .send_with("GET", &path, &[("authorization", &auth)], None)
        .await
        .unwrap();
    let expected = verified(&whole);

    // The download is cut off after a little more than a chunk.
    let cut = client
        .get_cut(&path, &[("authorization", &auth)], (1 << 20) + 4096)
        .await;
    assert_eq!(cut.status, 200);
    let mut got = cut.body;
    assert!(got.len() < expected.len(), "cut before the end");
    assert!(got[..] == expected[..got.len()]);

    // Resumed from the first byte missing.
    let from = format!("bytes={}-", got.len());
    let rest = client
        .send_with(
            "GET",
            &path,
            &[("authorization", &auth), ("range", &from)],
            None,
        )
        .await
        .unwrap();
    assert_eq!(rest.status, 206);
    assert_eq!(
        rest.headers["content-range"],
        format!(
            "bytes {}-{}/{}",
            got.len(),
            expected.len() - 1,
            expected.len()
        )
        .as_str()
    );
    got.extend_from_slice(&rest.body);
    assert!(got == expected, "the resumed copy is the payload");

    // The last bytes.
    let tail = client
        .send_with(
            "GET",
            &path,
            &[("authorization", &auth), ("range", "bytes=-5")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(tail.status, 206, "{tail:?}");
    assert!(tail.body == expected[expected.len() - 5..]);

    // A span inside one chunk, and one across a chunk boundary.
    for (a, b) in [(10usize, 99usize), ((1 << 20) - 5, (1 << 20) + 5)] {
        let range = format!("bytes={a}-{b}");
        let part = client
            .send_with(
                "GET",
                &path,
                &[("authorization", &auth), ("range", &range)],
                None,
            )
            .await
            .unwrap();
        assert_eq!(part.status, 206);
        assert!(part.body == expected[a..=b], "{range}");
    }

    // A range past the end is 416, naming the size.
    let past = format!("bytes={}-", expected.len());
    let answer = client
        .send_with(
            "GET",
            &path,
            &[("authorization", &auth), ("range", &past)],
            None,
        )
        .await
        .unwrap();
    assert_error(&answer, 416, "the payload has");
    assert_eq!(
        answer.headers["content-range"],
        format!("bytes */{}", expected.len()).as_str()
    );
}

// ---- consumer role --------------------------------------------------------------

/// Two Liutong nodes with DSP listeners: a provider with the payload published, and a
/// consumer holding a FINALIZED agreement for it, negotiated over the peer API (the
/// same dual-signed agreement).
struct TwoNodes {
    space: DataSpace,
    provider: TestNode,
    consumer: TestNode,
    agreement: String,
}

impl TwoNodes {
    async fn start() -> Self {
        let space = DataSpace::start().await;
        let provider = space
            .node_with(TRANSPORT, "transport", ROLES, with_dsp)
            .await;
        let consumer = space.node_with(ECOLOGY, "ecology", ROLES, with_dsp).await;
        refresh_all(&[&provider, &consumer]).await;
        let product = publish(
            &provider,
            &payload(),
            "Households",
            "general-2",
            "csv",
            PUBLIC_SERVICE,
        )
        .await
        .unwrap();
        let contract = consumer
            .request_contract(&provider, &product.offer_id, "publicService")
            .await
            .unwrap();
        assert_eq!(contract.state, "FINALIZED", "{contract:?}");
        Self {
            space,
            provider,
            consumer,
            agreement: contract.agreement_id,
        }
    }

    fn provider_url(&self) -> String {
        format!("https://{}", self.provider.running.dsp_addr().unwrap())
    }

    /// Pulls over DSP through the consumer's admin API.
    async fn pull(&self, max_chunks: u32) -> Result<liutong_proto::v1::TransferProgress, String> {
        self.pull_from(&self.provider_url(), max_chunks).await
    }

    /// Pulls over DSP from `peer` through the consumer's admin API.
    async fn pull_from(
        &self,
        peer: &str,
        max_chunks: u32,
    ) -> Result<liutong_proto::v1::TransferProgress, String> {
        use tokio_stream::StreamExt as _;
        let mut stream = self
            .consumer
            .admin(liutong_node::local::LocalRole::Admin)
            .await
            .pull_transfer(liutong_proto::v1::PullTransferRequest {
                agreement_id: self.agreement.clone(),
                max_chunks,
                peer: peer.to_owned(),
            })
            .await
            .map_err(|s| s.message().to_owned())?
            .into_inner();
        let mut last = None;
        while let Some(item) = stream.next().await {
            last = Some(item.map_err(|s| s.message().to_owned())?);
        }
        last.ok_or_else(|| "no progress".to_owned())
    }

    /// The consumer's DSP transfers.
    fn consumer_transfers(&self) -> Vec<liutong_node::dsp::pull::ConsumerTransfer> {
        liutong_node::dsp::pull::consumer_transfers(self.consumer.running.node.storage.as_ref())
            .unwrap()
    }

    /// The provider's record of transfer `ppid`, as stored.
    fn provider_record(&self, ppid: &str) -> Json {
        let bytes = self
            .provider
            .running
            .node
            .storage
            .get(liutong_node::dsp::transfer::RECORDS, ppid.as_bytes())
            .unwrap()
            .expect("the provider keeps the transfer");
        serde_json::from_slice(&bytes).unwrap()
    }

    /// A raw client of the consumer's DSP listener presenting `identity`.
    fn consumer_client(&self, identity: &TlsIdentity) -> Client {
        Client::new(
            self.consumer.running.dsp_addr().unwrap(),
            Some(identity),
            self.consumer.roots(),
        )
    }
}

/// Runs the `liutong` command on a blocking thread, so that the nodes of this test
/// keep serving it.
async fn liutong(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_liutong"))
            .args(args)
            .env_remove("LIUTONG_CONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_pull_over_dsp_resume_after_a_stop_and_record_the_receipt() {
    let t = TwoNodes::start().await;

    // A pull that stops after one chunk suspends the transfer at the provider.
    let first = t.pull(1).await.expect("a partial pull");
    assert_eq!(first.state, "STARTED", "{first:?}");
    assert_eq!(first.chunks_received, 1);
    assert_eq!(first.chunks_total, 3);
    let records = t.consumer_transfers();
    assert_eq!(records.len(), 1, "{records:?}");
    let ppid = records[0].provider_pid.clone().unwrap();
    assert_eq!(records[0].state.as_str(), "SUSPENDED");
    assert_eq!(t.provider_record(&ppid)["state"], "SUSPENDED");

    // The CLI resumes it over DSP: restarted (a new token), downloaded with Range from
    // the first chunk missing, every chunk checked, the receipt carried in the
    // completion.
    let out = liutong(vec![
        "transfer".into(),
        "pull".into(),
        "--agreement".into(),
        t.agreement.clone(),
        "--peer".into(),
        (t.provider_url()).to_string(),
        "--json".into(),
        "--config".into(),
        (t.consumer.config_path()).to_string_lossy().into_owned(),
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let done: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["state"], "COMPLETED", "{done}");
    assert_eq!(done["chunks_received"], 3, "{done}");
    let records = t.consumer_transfers();
    assert_eq!(
        records.len(),
        1,
        "the same transfer, restarted: {records:?}"
    );
    assert_eq!(records[0].state.as_str(), "COMPLETED");
    assert_eq!(t.provider_record(&ppid)["state"], "COMPLETED");

    let provider_log = t.provider.audit_texts().join("\n");
    assert!(
        provider_log.contains("3 chunks from chunk 0"),
        "{provider_log}"
    );
    assert!(
        provider_log.contains("3 chunks from chunk 1"),
        "{provider_log}"
    );
    assert!(
        provider_log.contains(&format!("DSP transfer {ppid} restarted")),
        "{provider_log}"
    );
    // The provider records the consumer's signed receipt as over gRPC.
    let receipt = t
        .provider
        .running
        .node
        .transfers
        .delivery_receipt(&t.agreement)
        .unwrap()
        .expect("the receipt is recorded at the provider");
    let receipt: Json = serde_json::from_slice(&receipt.payload).unwrap();
    assert_eq!(receipt["sha256"], done["sha256"], "{receipt}");
    assert!(
        provider_log.contains("transfer COMPLETED: receipt for"),
        "{provider_log}"
    );
    let consumer_log = t.consumer.audit_texts().join("\n");
    assert!(
        consumer_log.contains("transfer receipt confirmed by the provider"),
        "{consumer_log}"
    );
    let copies = t.consumer.running.node.transfers.copies().unwrap();
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].state.as_str(), "COMPLETED");

    // The same words as a pull over the peer API.
    let out = liutong(vec![
        "transfer".into(),
        "pull".into(),
        "--agreement".into(),
        t.agreement.clone(),
        "--peer".into(),
        (t.provider_url()).to_string(),
        "--config".into(),
        (t.consumer.config_path()).to_string_lossy().into_owned(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("COMPLETED: ") && stdout.contains("every chunk verified"),
        "{stdout}"
    );

    // A URL that is not https:// is refused before anything is sent.
    let out = liutong(vec![
        "transfer".into(),
        "pull".into(),
        "--agreement".into(),
        t.agreement.clone(),
        "--peer".into(),
        (format!("http://{}", t.provider.running.dsp_addr().unwrap())).to_string(),
        "--config".into(),
        (t.consumer.config_path()).to_string_lossy().into_owned(),
    ])
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("https:// URL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn tp_c_the_consumers_callbacks_take_only_its_transfers_provider() {
    let t = TwoNodes::start().await;
    t.pull(1).await.expect("a partial pull");
    let record = t.consumer_transfers().remove(0);
    let (cpid, ppid) = (
        record.consumer_pid.clone(),
        record.provider_pid.clone().unwrap(),
    );
    let provider_identity = t.provider.running.node.tls_identity.clone();
    let from_provider = t.consumer_client(&provider_identity);
    let stranger = member(&t.space, LOGISTICS);
    refresh_all(&[&t.consumer]).await;
    let from_stranger = t.consumer_client(&stranger);
    let message = |ty: &str, cpid: &str| pids(ty, &ppid, cpid);

    // Another member, and an unknown transfer: 404.
    assert_error(
        &from_stranger
            .post(
                &format!("/callback/transfers/{cpid}/termination"),
                &message("TransferTerminationMessage", &cpid),
            )
            .await,
        404,
        "no transfer process",
    );
    assert_error(
        &from_provider
            .post(
                "/callback/transfers/urn:uuid:unknown/termination",
                &message("TransferTerminationMessage", "urn:uuid:unknown"),
            )
            .await,
        404,
        "no transfer process",
    );
    // Invalid transitions and bad messages from the provider: 400.
    assert_error(
        &from_provider
            .post(
                &format!("/callback/transfers/{cpid}/completion"),
                &message("TransferCompletionMessage", &cpid),
            )
            .await,
        400,
        "cannot make it COMPLETED",
    );
    let mut start = message("TransferStartMessage", &cpid);
    start["dataAddress"] = json!({
        "@type": "DataAddress",
        "endpointType": "https://w3id.org/idsa/v4.1/HTTP",
        "endpoint": "http://127.0.0.1:1/data/x",
        "endpointProperties": [{"@type": "EndpointProperty", "name": "authorization", "value": "t"}],
    });
    assert_valid(&start);
    assert_error(
        &from_provider
            .post(&format!("/callback/transfers/{cpid}/start"), &start)
            .await,
        400,
        "https:// URL",
    );
    assert_error(
        &from_provider
            .post(
                &format!("/callback/transfers/{cpid}/suspension"),
                &message("TransferSuspensionMessage", "urn:uuid:another"),
            )
            .await,
        400,
        "consumerPid must be",
    );
    assert_eq!(t.consumer_transfers()[0].state.as_str(), "SUSPENDED");

    // The provider terminates it.
    let answer = from_provider
        .post(
            &format!("/callback/transfers/{cpid}/termination"),
            &message("TransferTerminationMessage", &cpid),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(t.consumer_transfers()[0].state.as_str(), "TERMINATED");
    assert_error(
        &from_provider
            .post(
                &format!("/callback/transfers/{cpid}/termination"),
                &message("TransferTerminationMessage", &cpid),
            )
            .await,
        400,
        "is TERMINATED",
    );

    // The next pull asks for a new transfer and resumes the copy from its durable
    // chunks.
    let done = t.pull(0).await.expect("the pull");
    assert_eq!(done.state, "COMPLETED", "{done:?}");
    let records = t.consumer_transfers();
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(
        records
            .iter()
            .any(|r| r.state.as_str() == "COMPLETED" && r.consumer_pid != cpid),
        "{records:?}"
    );
}

#[tokio::test]
async fn the_consumers_request_is_a_valid_message_and_a_refusal_ends_its_transfer() {
    let t = TwoNodes::start().await;
    // A server presenting the provider's certificate that takes every message with 200
    // (not the 201 a request needs): the consumer's request is recorded there.
    let provider_identity = t.provider.running.node.tls_identity.clone();
    let recorder = Callbacks::start(
        &provider_identity,
        &t.consumer.roots(),
        t.consumer.participant.san_uri(),
    )
    .await;
    let mut admin = t
        .consumer
        .admin(liutong_node::local::LocalRole::Admin)
        .await;
    let answer = admin
        .pull_transfer(liutong_proto::v1::PullTransferRequest {
            agreement_id: t.agreement.clone(),
            max_chunks: 0,
            peer: recorder.url(),
        })
        .await;
    let refused = match answer {
        Err(status) => status.message().to_owned(),
        Ok(stream) => {
            use tokio_stream::StreamExt as _;
            let mut stream = stream.into_inner();
            let mut last = String::new();
            while let Some(item) = stream.next().await {
                if let Err(status) = item {
                    last = status.message().to_owned();
                }
            }
            last
        }
    };
    assert!(
        refused.contains("requesting the transfer") && refused.contains("200"),
        "{refused}"
    );
    let request = recorder.wait_for("/callback/transfers/request").await;
    assert_eq!(request["@type"], "TransferRequestMessage");
    assert_eq!(request["format"], "HttpData-PULL");
    assert_eq!(
        request["agreementId"],
        format!("urn:liutong:agreement:{}", t.agreement).as_str()
    );
    let callback = request["callbackAddress"].as_str().unwrap();
    assert_eq!(
        callback,
        format!(
            "https://{}/callback",
            t.consumer.running.dsp_addr().unwrap()
        )
    );
    let records = t.consumer_transfers();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].state.as_str(), "TERMINATED");
    assert_eq!(
        records[0].consumer_pid,
        request["consumerPid"].as_str().unwrap()
    );
    // Nothing of the product was kept.
    let copies = t.consumer.running.node.transfers.copies().unwrap();
    assert!(copies.is_empty(), "{copies:?}");
}

// ---- the provider ends or suspends a transfer ---------------------------------------

/// The provider's operator command on a DSP transfer, over its admin API.
async fn control(
    node: &TestNode,
    ppid: &str,
    action: &str,
    reason: &str,
) -> Result<liutong_proto::v1::DspTransferState, tonic::Status> {
    node.admin(liutong_node::local::LocalRole::Admin)
        .await
        .control_dsp_transfer(liutong_proto::v1::ControlDspTransferRequest {
            provider_pid: ppid.to_owned(),
            action: action.to_owned(),
            reason: reason.to_owned(),
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn the_provider_suspends_restarts_and_terminates_and_the_consumer_is_told() {
    let f = Fixture::start().await;
    let client = f.client(&f.consumer);
    let cpid = "urn:uuid:provider-steps";
    let ppid = f.request(cpid).await;
    let (path, first) = data_address(&f.start_message(cpid, 1).await);

    let state = control(&f.provider, &ppid, "suspend", "scheduled maintenance")
        .await
        .unwrap();
    assert_eq!(state.state, "SUSPENDED");
    // The data endpoint stops serving at once.
    let answer = client
        .send_with("GET", &path, &[("authorization", &bearer(&first))], None)
        .await
        .unwrap();
    assert_error(&answer, 403, "SUSPENDED");
    assert_eq!(f.state_of(&ppid).await, "SUSPENDED");
    let told = f
        .callbacks
        .wait_for(&format!("/callback/transfers/{cpid}/suspension"))
        .await;
    assert_eq!(told["@type"], "TransferSuspensionMessage");
    assert_eq!(told["providerPid"], ppid.as_str());
    assert_eq!(told["reason"][0], "scheduled maintenance");

    // Only the provider restarts what it suspended.
    let answer = client
        .post(
            &format!("/transfers/{ppid}/start"),
            &pids("TransferStartMessage", &ppid, cpid),
        )
        .await;
    assert_error(&answer, 400, "suspended by the provider");
    let refused = control(&f.provider, &ppid, "suspend", "again")
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(refused.message().contains("SUSPENDED"), "{refused:?}");

    let state = control(&f.provider, &ppid, "restart", "").await.unwrap();
    assert_eq!(state.state, "STARTED");
    let (_, second) = data_address(&f.start_message(cpid, 2).await);
    assert_ne!(first, second, "a restart brings a new token");
    let answer = client
        .send_with("GET", &path, &[("authorization", &bearer(&first))], None)
        .await
        .unwrap();
    assert_error(&answer, 401, "not this transfer's current token");
    let answer = client
        .send_with("GET", &path, &[("authorization", &bearer(&second))], None)
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    verified(&answer);

    let state = control(&f.provider, &ppid, "terminate", "the product is withdrawn")
        .await
        .unwrap();
    assert_eq!(state.state, "TERMINATED");
    let answer = client
        .send_with("GET", &path, &[("authorization", &bearer(&second))], None)
        .await
        .unwrap();
    assert_error(&answer, 403, "TERMINATED");
    let told = f
        .callbacks
        .wait_for(&format!("/callback/transfers/{cpid}/termination"))
        .await;
    assert_eq!(told["@type"], "TransferTerminationMessage");
    assert_eq!(told["reason"][0], "the product is withdrawn");
    let refused = control(&f.provider, &ppid, "restart", "")
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    let refused = control(&f.provider, "tp-none", "terminate", "x")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    let refused = control(&f.provider, &ppid, "terminate", " ")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");

    let audit = f.provider.audit_texts().join("\n");
    for words in [
        format!("DSP transfer {ppid} SUSPENDED by the provider: scheduled maintenance"),
        format!("DSP transfer {ppid} restarted by the provider"),
        format!("DSP transfer {ppid} TERMINATED by the provider: the product is withdrawn"),
    ] {
        assert!(audit.contains(&words), "{words}: {audit}");
    }
}

/// Runs `liutong transfer <action>` against the provider's node.
async fn provider_cli(t: &TwoNodes, args: &[&str]) -> String {
    let mut all: Vec<String> = vec!["transfer".into()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    all.push("--config".into());
    all.push(t.provider.config_path().to_string_lossy().into_owned());
    let out = liutong(all).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl TwoNodes {
    /// Waits until the consumer records its transfer in `state`; returns the record.
    async fn consumer_in(&self, state: &str) -> liutong_node::dsp::pull::ConsumerTransfer {
        let reached = wait_until(CALLBACK_WITHIN, || async {
            self.consumer_transfers()
                .first()
                .is_some_and(|r| r.state.as_str() == state)
        })
        .await;
        let records = self.consumer_transfers();
        assert!(
            reached,
            "the consumer's transfer is not {state}: {records:?}"
        );
        records[0].clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_the_provider_suspended_resumes_after_its_restart() {
    let t = TwoNodes::start().await;
    let first = t.pull(1).await.expect("a partial pull");
    assert_eq!(first.chunks_received, 1);
    let ppid = t.consumer_transfers()[0].provider_pid.clone().unwrap();

    // The provider restarts the transfer the consumer's pull left suspended, then
    // suspends it itself: the consumer records each step.
    let out = provider_cli(&t, &["restart", "--id", &ppid]).await;
    assert!(out.starts_with("STARTED: DSP transfer"), "{out}");
    let record = t.consumer_in("STARTED").await;
    assert!(record.token.is_some(), "{record:?}");
    let out = provider_cli(
        &t,
        &["suspend", "--id", &ppid, "--reason", "a disk is replaced"],
    )
    .await;
    assert!(out.starts_with("SUSPENDED: "), "{out}");
    let record = t.consumer_in("SUSPENDED").await;
    assert_eq!(record.reason, "a disk is replaced");
    assert_eq!(record.token, None);

    // The consumer cannot lift the provider's suspension.
    let refused = t.pull(0).await.unwrap_err();
    assert!(refused.contains("suspended by the provider"), "{refused}");

    // Restarted by the provider, the next pull resumes with Range and completes.
    provider_cli(&t, &["restart", "--id", &ppid]).await;
    t.consumer_in("STARTED").await;
    let out = liutong(vec![
        "transfer".into(),
        "pull".into(),
        "--agreement".into(),
        t.agreement.clone(),
        "--peer".into(),
        t.provider_url(),
        "--json".into(),
        "--config".into(),
        t.consumer.config_path().to_string_lossy().into_owned(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["state"], "COMPLETED", "{done}");
    assert_eq!(done["chunks_received"], 3, "{done}");
    let copies = t.consumer.running.node.transfers.copies().unwrap();
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].state.as_str(), "COMPLETED");
    assert_eq!(t.consumer_transfers()[0].state.as_str(), "COMPLETED");
    assert_eq!(t.provider_record(&ppid)["state"], "COMPLETED");
    let provider_log = t.provider.audit_texts().join("\n");
    assert!(
        provider_log.contains("3 chunks from chunk 1"),
        "{provider_log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_agreement_terminates_its_dsp_transfer_at_the_consumer() {
    let t = TwoNodes::start().await;
    t.pull(1).await.expect("a partial pull");
    let ppid = t.consumer_transfers()[0].provider_pid.clone().unwrap();
    t.provider
        .usage(liutong_node::local::LocalRole::Admin)
        .await
        .revoke(liutong_proto::v1::RevokeRequest {
            agreement_id: t.agreement.clone(),
            reason: "the consumer left the project".into(),
        })
        .await
        .unwrap();
    assert_eq!(t.provider_record(&ppid)["state"], "TERMINATED");
    let record = t.consumer_in("TERMINATED").await;
    assert!(
        record.reason.contains("the consumer left the project"),
        "{record:?}"
    );
    // Ended for good: the operator's command is refused with the reason.
    let out = liutong(vec![
        "transfer".into(),
        "restart".into(),
        "--id".into(),
        ppid.clone(),
        "--config".into(),
        t.provider.config_path().to_string_lossy().into_owned(),
    ])
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TERMINATED"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_the_consumer_node_sends_is_a_valid_dsp_message() {
    let t = TwoNodes::start().await;
    let relay = dsp::Relay::start(
        &t.provider.running.node.tls_identity,
        t.provider.running.dsp_addr().unwrap(),
        &t.consumer.running.node.tls_identity,
        t.provider.roots(),
    )
    .await;
    // A pull stopped early (request, suspension), then one that restarts and
    // completes (start, completion with the signed receipt).
    t.pull_from(&relay.url(), 1).await.expect("a partial pull");
    let done = t.pull_from(&relay.url(), 0).await.expect("the rest");
    assert_eq!(done.state, "COMPLETED", "{done:?}");
    let sent = relay.received();
    let types: Vec<&str> = sent
        .iter()
        .map(|(_, m)| m["@type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        types,
        [
            "TransferRequestMessage",
            "TransferSuspensionMessage",
            "TransferStartMessage",
            "TransferCompletionMessage"
        ],
        "{sent:?}"
    );
    for (path, message) in &sent {
        assert!(path.starts_with("/transfers/"), "{path}");
        assert_valid(message);
    }
    let completion = &sent[3].1;
    assert!(
        completion["lt:receipt"]["payload"].is_string(),
        "the completion carries the signed receipt: {completion}"
    );
    assert_eq!(t.consumer_transfers()[0].state.as_str(), "COMPLETED");
}

// ---- the consumer suspends or terminates its own transfer ---------------------------

/// Runs `liutong transfer <args>` against `node`, successful or not.
async fn transfer_cli(node: &TestNode, args: &[&str]) -> std::process::Output {
    let mut all: Vec<String> = vec!["transfer".into()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    all.push("--config".into());
    all.push(node.config_path().to_string_lossy().into_owned());
    liutong(all).await
}

impl TwoNodes {
    /// A relay in front of the provider's DSP listener, recording what the consumer
    /// node sends there.
    async fn relay(&self) -> dsp::Relay {
        dsp::Relay::start(
            &self.provider.running.node.tls_identity,
            self.provider.running.dsp_addr().unwrap(),
            &self.consumer.running.node.tls_identity,
            self.provider.roots(),
        )
        .await
    }

    /// A raw client of the provider's DSP listener with the consumer node's certificate.
    fn as_consumer(&self) -> Client {
        Client::new(
            self.provider.running.dsp_addr().unwrap(),
            Some(&self.consumer.running.node.tls_identity),
            self.provider.roots(),
        )
    }

    /// Waits until the provider records transfer `ppid` in `state`.
    /// The provider's audit log once it holds `text`. A message the consumer's outbox
    /// sends is answered after the provider's state changed and its entry was appended,
    /// but the test sees the state first: the entry may follow a moment later.
    async fn provider_logged(&self, text: &str) -> String {
        wait_until(CALLBACK_WITHIN, || async {
            self.provider.audit_texts().iter().any(|e| e.contains(text))
        })
        .await;
        self.provider.audit_texts().join("\n")
    }

    async fn provider_in(&self, ppid: &str, state: &str) {
        let reached = wait_until(CALLBACK_WITHIN, || async {
            self.provider_record(ppid)["state"] == state
        })
        .await;
        assert!(
            reached,
            "the provider's transfer is not {state}: {}",
            self.provider_record(ppid)
        );
    }
}

/// The messages of `relay` sent to a path ending with `end`, each validated.
fn sent_to(relay: &dsp::Relay, end: &str) -> Vec<Json> {
    relay
        .received()
        .into_iter()
        .filter(|(p, _)| p.ends_with(end))
        .map(|(_, m)| {
            assert_valid(&m);
            m
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_suspends_its_transfer_and_a_later_pull_restarts_it() {
    let t = TwoNodes::start().await;
    let relay = t.relay().await;
    t.pull_from(&relay.url(), 1).await.expect("a partial pull");
    let first = t.consumer_transfers()[0].clone();
    let (cpid, ppid) = (
        first.consumer_pid.clone(),
        first.provider_pid.clone().unwrap(),
    );
    // The provider restarts it: the consumer holds a current token, and is not pulling.
    provider_cli(&t, &["restart", "--id", &ppid]).await;
    let started = t.consumer_in("STARTED").await;
    let token = started.token.clone().unwrap();
    let path = Client::path_of(started.endpoint.as_deref().unwrap());

    // The consumer's operator suspends it by its consumer process ID.
    let out = transfer_cli(
        &t.consumer,
        &[
            "suspend",
            "--id",
            &cpid,
            "--reason",
            "the line is needed for an upload",
            "--json",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["role"], "consumer", "{shown}");
    assert_eq!(shown["state"], "SUSPENDED", "{shown}");
    assert_eq!(shown["provider_pid"], ppid.as_str(), "{shown}");
    let record = t.consumer_transfers()[0].clone();
    assert_eq!(record.state.as_str(), "SUSPENDED");
    assert_eq!(record.token, None);

    // The provider is told, records it, and its data endpoint refuses the old token.
    t.provider_in(&ppid, "SUSPENDED").await;
    let told = sent_to(&relay, &format!("/transfers/{ppid}/suspension"));
    let told = told.last().expect("the suspension was sent");
    assert_eq!(told["consumerPid"], cpid.as_str());
    assert_eq!(told["reason"][0], "the line is needed for an upload");
    let answer = t
        .as_consumer()
        .send_with("GET", &path, &[("authorization", &bearer(&token))], None)
        .await
        .unwrap();
    assert_error(&answer, 403, "SUSPENDED");
    let suspended = format!(
        "DSP transfer {ppid} SUSPENDED by the consumer: code consumer.suspended; the line is \
         needed for an upload"
    );
    let provider_log = t.provider_logged(&suspended).await;
    assert!(provider_log.contains(&suspended), "{provider_log}");
    let consumer_log = t.consumer.audit_texts().join("\n");
    assert!(
        consumer_log.contains(&format!("DSP transfer {cpid} SUSPENDED by this node")),
        "{consumer_log}"
    );
    // Suspended already: a second suspension is refused, naming the state.
    let out = transfer_cli(&t.consumer, &["suspend", "--id", &cpid, "--reason", "x"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SUSPENDED"), "{stderr}");

    // A later pull restarts it (a start message from the consumer, a new token) and
    // resumes with Range from the first chunk missing; the copy verifies.
    let done = t.pull_from(&relay.url(), 0).await.expect("the rest");
    assert_eq!(done.state, "COMPLETED", "{done:?}");
    assert_eq!(done.chunks_received, 3, "{done:?}");
    assert_eq!(
        t.consumer_transfers().len(),
        1,
        "the same transfer, restarted"
    );
    let restart = sent_to(&relay, &format!("/transfers/{ppid}/start"));
    assert_eq!(restart.len(), 1, "{restart:?}");
    assert_eq!(t.provider_record(&ppid)["state"], "COMPLETED");
    let provider_log = t.provider.audit_texts().join("\n");
    assert!(
        provider_log.contains(&format!("DSP transfer {ppid} restarted by the consumer")),
        "{provider_log}"
    );
    assert!(
        provider_log.contains("3 chunks from chunk 1"),
        "{provider_log}"
    );
    let copies = t.consumer.running.node.transfers.copies().unwrap();
    assert_eq!(copies[0].state.as_str(), "COMPLETED");
    assert_eq!(copies[0].chunks_received, 3);
    for (_, message) in relay.received() {
        assert_valid(&message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_terminates_its_transfer_and_no_later_pull_restarts_it() {
    let t = TwoNodes::start().await;
    let relay = t.relay().await;
    t.pull_from(&relay.url(), 1).await.expect("a partial pull");
    let first = t.consumer_transfers()[0].clone();
    let (cpid, ppid) = (
        first.consumer_pid.clone(),
        first.provider_pid.clone().unwrap(),
    );

    let out = transfer_cli(
        &t.consumer,
        &[
            "terminate",
            "--id",
            &cpid,
            "--reason",
            "the study was cancelled",
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!("TERMINATED: DSP transfer {cpid} from ")),
        "{stdout}"
    );
    t.provider_in(&ppid, "TERMINATED").await;
    let told = sent_to(&relay, &format!("/transfers/{ppid}/termination"));
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0]["@type"], "TransferTerminationMessage");
    assert_eq!(told[0]["reason"][0], "the study was cancelled");
    let terminated = format!("DSP transfer {ppid} TERMINATED by the consumer");
    let provider_log = t.provider_logged(&terminated).await;
    assert!(provider_log.contains(&terminated), "{provider_log}");

    // A terminated transfer is not pulled again: refused, nothing new requested.
    let refused = t.pull_from(&relay.url(), 0).await.unwrap_err();
    assert!(
        refused.contains(&format!("transfer {cpid}"))
            && refused.contains("was terminated at this node")
            && refused.contains("the study was cancelled"),
        "{refused}"
    );
    assert!(sent_to(&relay, "/transfers/request").len() == 1);
    assert_eq!(t.consumer_transfers().len(), 1);

    // The consumer restarts by pulling, not by command; an ID at neither role is named.
    let out = transfer_cli(&t.consumer, &["restart", "--id", &cpid]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pull again"), "{stderr}");
    let out = transfer_cli(
        &t.consumer,
        &["terminate", "--id", "urn:uuid:nobody", "--reason", "x"],
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no DSP transfer process urn:uuid:nobody at this node")
            && stderr.contains("neither as provider"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_list_their_dsp_transfers_with_bytes_served() {
    let t = TwoNodes::start().await;
    let done = t.pull(0).await.expect("a pull");
    assert_eq!(done.state, "COMPLETED");
    let record = t.consumer_transfers()[0].clone();
    let (cpid, ppid) = (record.consumer_pid.clone(), record.provider_pid.unwrap());

    let out = transfer_cli(&t.provider, &["list", "--dsp", "--json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Json = serde_json::from_slice(&out.stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let entry = &listed[0];
    assert_eq!(entry["role"], "provider");
    assert_eq!(entry["provider_pid"], ppid.as_str());
    assert_eq!(entry["consumer_pid"], cpid.as_str());
    assert_eq!(entry["peer"], t.consumer.participant.to_string().as_str());
    assert_eq!(entry["agreement_id"], t.agreement.as_str());
    assert_eq!(entry["state"], "COMPLETED");
    assert_eq!(entry["bytes_served"], payload().len() as u64, "{entry}");
    assert!(entry["updated_at"].as_i64().unwrap() > 0, "{entry}");

    let out = transfer_cli(&t.provider, &["list", "--dsp"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&ppid)
            && text.contains("provider")
            && text.contains("COMPLETED")
            && text.contains(&format!("{} bytes served", payload().len())),
        "{text}"
    );

    let out = transfer_cli(&t.consumer, &["list", "--dsp", "--json"]).await;
    let listed: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["role"], "consumer");
    assert_eq!(listed[0]["consumer_pid"], cpid.as_str());
    assert_eq!(
        listed[0]["peer"],
        t.provider.participant.to_string().as_str()
    );
    assert_eq!(listed[0]["state"], "COMPLETED");

    // The auditor may list too; the copies' listing is unchanged without --dsp.
    let page = t
        .provider
        .admin(liutong_node::local::LocalRole::Auditor)
        .await
        .list_dsp_transfers(liutong_proto::v1::ListDspTransfersRequest {
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.transfers.len(), 1);
    assert!(page.next_page_token.is_empty());
    let out = transfer_cli(&t.consumer, &["list", "--json"]).await;
    let copies: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(copies[0]["agreement_id"], t.agreement.as_str(), "{copies}");
}

#[tokio::test]
async fn the_dsp_listing_is_paged() {
    let f = Fixture::start().await;
    let mut ppids = Vec::new();
    for i in 0..3 {
        ppids.push(f.request(&format!("urn:uuid:listed-{i}")).await);
    }
    ppids.sort();
    let mut admin = f
        .provider
        .admin(liutong_node::local::LocalRole::Admin)
        .await;
    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let page = admin
            .list_dsp_transfers(liutong_proto::v1::ListDspTransfersRequest {
                page_size: 1,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.transfers.len(), 1, "{page:?}");
        seen.push(page.transfers[0].provider_pid.clone());
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, ppids);
    let refused = admin
        .list_dsp_transfers(liutong_proto::v1::ListDspTransfersRequest {
            page_size: 1,
            page_token: "not-a-token".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
}

// ---- receipts of an agreement negotiated only over DSP ------------------------------

impl TwoNodes {
    /// Two nodes whose agreement was negotiated over DSP only: the consumer knows the
    /// provider by its DSP URL and by no peer API address. `edit` configures the
    /// consumer.
    async fn start_over_dsp(edit: impl FnOnce(&mut NodeConfig)) -> Self {
        let space = DataSpace::start().await;
        let provider = space
            .node_with(TRANSPORT, "transport", ROLES, with_dsp)
            .await;
        let consumer = space
            .node_with(ECOLOGY, "ecology", ROLES, |c| {
                with_dsp(c);
                edit(c);
            })
            .await;
        refresh_all(&[&provider, &consumer]).await;
        let product = publish(
            &provider,
            &payload(),
            "Households",
            "general-2",
            "csv",
            PUBLIC_SERVICE,
        )
        .await
        .unwrap();
        let provider_url = format!("https://{}", provider.running.dsp_addr().unwrap());
        let contract = consumer
            .admin(liutong_node::local::LocalRole::Admin)
            .await
            .request_contract(liutong_proto::v1::RequestContractRequest {
                peer: provider_url.clone(),
                offer_id: product.offer_id.clone(),
                purpose: "publicService".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(contract.state, "FINALIZED", "{contract:?}");
        assert_eq!(
            contract.peer_address, provider_url,
            "only the DSP URL is known"
        );
        Self {
            space,
            provider,
            consumer,
            agreement: contract.agreement_id,
        }
    }

    /// Whether the provider has recorded the consumer's signed receipt.
    fn provider_has_receipt(&self) -> bool {
        self.provider
            .running
            .node
            .transfers
            .delivery_receipt(&self.agreement)
            .unwrap()
            .is_some()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dsp_only_agreements_receipt_is_sent_again_over_dsp() {
    let t = TwoNodes::start_over_dsp(|c| {
        c.recovery.retry_interval = std::time::Duration::from_millis(200);
    })
    .await;
    let relay = t.relay().await;
    // The provider cannot take the completion now: the copy completes all the same.
    relay.hold(Some("/completion"));
    let done = t.pull_from(&relay.url(), 0).await.expect("the pull");
    assert_eq!(done.state, "COMPLETED", "{done:?}");
    assert!(!t.provider_has_receipt());
    let ppid = t.consumer_transfers()[0].provider_pid.clone().unwrap();
    assert_eq!(t.provider_record(&ppid)["state"], "STARTED");

    // The background work sends it again, over DSP: the provider records it.
    relay.hold(None);
    let delivered = wait_until(CALLBACK_WITHIN, || async { t.provider_has_receipt() }).await;
    assert!(delivered, "the receipt never reached the provider");
    let completions = sent_to(&relay, &format!("/transfers/{ppid}/completion"));
    assert!(completions.len() >= 2, "{completions:?}");
    let last = completions.last().unwrap();
    assert!(last["lt:receipt"]["payload"].is_string(), "{last}");
    t.provider_in(&ppid, "COMPLETED").await;
    let confirmed = wait_until(CALLBACK_WITHIN, || async {
        t.consumer
            .audit_texts()
            .join("\n")
            .contains("transfer receipt confirmed by the provider")
    })
    .await;
    assert!(confirmed, "{}", t.consumer.audit_texts().join("\n"));
    assert_eq!(t.consumer_transfers()[0].state.as_str(), "COMPLETED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agreement_made_over_dsp_is_pulled_without_naming_its_peer() {
    let t = TwoNodes::start_over_dsp(|_| {}).await;
    let done = t.pull_from("", 0).await.expect("the pull");
    assert_eq!(done.state, "COMPLETED", "{done:?}");
    assert_eq!(t.consumer_transfers()[0].state.as_str(), "COMPLETED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_copy_pulled_again_carries_its_receipt_over_dsp() {
    // No background resend during the test: only the second pull can deliver it.
    let t = TwoNodes::start_over_dsp(|c| {
        c.recovery.retry_interval = std::time::Duration::from_secs(3600);
    })
    .await;
    let relay = t.relay().await;
    relay.hold(Some("/completion"));
    let done = t.pull_from(&relay.url(), 0).await.expect("the pull");
    assert_eq!(done.state, "COMPLETED", "{done:?}");
    assert!(!t.provider_has_receipt());

    relay.hold(None);
    let again = t.pull_from(&relay.url(), 0).await.expect("the second pull");
    assert_eq!(again.state, "COMPLETED", "{again:?}");
    assert!(
        t.provider_has_receipt(),
        "the second pull carried the receipt"
    );
    let ppid = t.consumer_transfers()[0].provider_pid.clone().unwrap();
    assert_eq!(t.provider_record(&ppid)["state"], "COMPLETED");
    // Nothing was requested or downloaded again.
    assert_eq!(sent_to(&relay, "/transfers/request").len(), 1);
    let provider_log = t.provider.audit_texts().join("\n");
    assert_eq!(
        provider_log.matches("3 chunks from chunk 0").count(),
        1,
        "{provider_log}"
    );
}

#[tokio::test]
async fn the_data_address_token_lives_as_long_as_configured() {
    let lifetime = 90i64;
    let f = Fixture::start_with(|c| {
        with_dsp(c);
        c.dsp.as_mut().unwrap().token_lifetime = std::time::Duration::from_secs(90);
    })
    .await;
    let cpid = "urn:uuid:short-token";
    let before = time::OffsetDateTime::now_utc().unix_timestamp();
    let ppid = f.request(cpid).await;
    let start = f.start_message(cpid, 1).await;
    let after = time::OffsetDateTime::now_utc().unix_timestamp();
    let expires = start["dataAddress"]["endpointProperties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "expiresAt")
        .and_then(|p| p["value"].as_str())
        .map(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .unwrap()
                .unix_timestamp()
        })
        .expect("the start message says when the token expires");
    assert!(
        (before + lifetime..=after + lifetime).contains(&expires),
        "expires {expires}, issued between {before} and {after}"
    );
    let kept = f
        .provider
        .running
        .node
        .storage
        .get(liutong_node::dsp::transfer::RECORDS, ppid.as_bytes())
        .unwrap()
        .unwrap();
    let kept: Json = serde_json::from_slice(&kept).unwrap();
    assert_eq!(kept["token_expires"], expires, "{kept}");
}
