//! Received copies at rest on the consumer: sealed on disk, so reading the file there
//! gives no row; opened only by a permitted, counted read; a byte changed on disk, or a
//! chunk moved within or between copies, is an integrity error, never wrong data.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use liutong_node::identity::MemberRole;
use liutong_node::local::LocalRole;
use liutong_proto::v1::read_response::Part;
use liutong_proto::v1::{ListCopiesRequest, ReadHeader, ReadRequest};
use tokio_stream::StreamExt as _;
use tonic::Code;

const ROLES: &[MemberRole] = &[MemberRole::Provider, MemberRole::Consumer];

/// Any use, as often as asked.
const OPEN: &str = r#"
uid = "urn:liutong:policy:open"
type = "set"

[[permission]]
action = "use"
"#;

/// The payload chunk size of a published product.
const CHUNK: usize = 1 << 20;

/// A GB 11643 citizen ID number with its check character.
fn citizen_id(region: &str, birth: &str, serial: u32) -> String {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: &[u8] = b"10X98765432";
    let body = format!("{region}{birth}{serial:03}");
    let sum: u32 = body
        .bytes()
        .zip(WEIGHTS)
        .map(|(b, w)| (b - b'0') as u32 * w)
        .sum();
    format!("{body}{}", CHECK[(sum % 11) as usize] as char)
}

/// Synthetic residents (name, ID number, mobile, e-mail, district, birth date,
/// income), enough rows for the payload to span three chunks. Incomes are round
/// figures, which carry no watermark, so the copy holds the product's own bytes.
fn residents() -> Vec<u8> {
    const SURNAMES: [&str; 8] = ["王", "李", "张", "刘", "陈", "杨", "赵", "黄"];
    const GIVEN: [&str; 8] = ["伟", "芳", "娜", "敏", "静", "磊", "洋", "艳"];
    const DISTRICTS: [(&str, &str); 4] = [
        ("上城区", "330102"),
        ("拱墅区", "330105"),
        ("西湖区", "330106"),
        ("滨江区", "330108"),
    ];
    let mut csv = String::from("name,citizen_id,mobile,email,district,birth_date,income\n");
    let mut i = 0u32;
    while csv.len() < 2 * CHUNK + CHUNK / 2 {
        let (district, region) = DISTRICTS[(i % 4) as usize];
        let birth = format!(
            "{:04}{:02}{:02}",
            1950 + i % 50,
            1 + i % 12,
            1 + (i / 12) % 28
        );
        csv.push_str(&format!(
            "{}{}{},{},139{:08},resident{i}@example.cn,{district},{}-{}-{},{}\n",
            SURNAMES[(i % 8) as usize],
            GIVEN[(i / 8 % 8) as usize],
            GIVEN[(i / 64 % 8) as usize],
            citizen_id(region, &birth, i % 1000),
            (i * 7919) % 100_000_000,
            &birth[..4],
            &birth[4..6],
            &birth[6..],
            (30_000 + (i * 37) % 170_000) / 100 * 100,
        ));
        i += 1;
    }
    csv.into_bytes()
}

/// Every file under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// The payload file of the copy received under `agreement`.
fn payload_file(node: &TestNode, agreement: &str) -> PathBuf {
    node.config
        .data_dir()
        .join("db/payloads/copies")
        .join(agreement)
}

/// A read through the node: the header, the bytes it gave, and how it ended.
async fn read(
    node: &TestNode,
    agreement: &str,
) -> (Option<ReadHeader>, Vec<u8>, Result<(), tonic::Status>) {
    let stream = node
        .usage(LocalRole::App)
        .await
        .read(ReadRequest {
            agreement_id: agreement.into(),
            purpose: "statistics".into(),
        })
        .await;
    let mut stream = match stream {
        Ok(s) => s.into_inner(),
        Err(e) => return (None, Vec::new(), Err(e)),
    };
    let mut header = None;
    let mut data = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(r) => match r.part {
                Some(Part::Header(h)) => header = Some(h),
                Some(Part::Data(d)) => data.extend(d),
                None => {}
            },
            Err(e) => return (header, data, Err(e)),
        }
    }
    (header, data, Ok(()))
}

async fn uses(node: &TestNode, agreement: &str) -> u64 {
    node.usage(LocalRole::Auditor)
        .await
        .list_copies(ListCopiesRequest::default())
        .await
        .expect("list copies")
        .into_inner()
        .copies
        .into_iter()
        .find(|c| c.agreement_id == agreement)
        .expect("the copy is listed")
        .uses
}

struct Pair {
    space: DataSpace,
    provider: TestNode,
    consumer: TestNode,
}

async fn pair() -> Pair {
    let space = DataSpace::start().await;
    let provider = space.node_with(TRANSPORT, "transport", ROLES, |_| {}).await;
    let consumer = space.node_with(ECOLOGY, "ecology", ROLES, |_| {}).await;
    refresh_all(&[&provider, &consumer]).await;
    Pair {
        space,
        provider,
        consumer,
    }
}

/// Publishes `data` openly and pulls it as the consumer; the agreement ID.
async fn received(p: &Pair, data: &[u8]) -> String {
    let product = publish(&p.provider, data, "Residents", "general-2", "csv", OPEN)
        .await
        .expect("publish");
    let contract = p
        .consumer
        .request_contract(&p.provider, &product.offer_id, "statistics")
        .await
        .expect("agreement");
    let done = p
        .consumer
        .pull_all(&contract.agreement_id)
        .await
        .expect("pull");
    assert_eq!(done.state, "COMPLETED");
    contract.agreement_id
}

/// Rows and single values of the data, each distinctive enough that finding it in a
/// file means the file holds that resident's record.
fn known_values(data: &[u8]) -> Vec<Vec<u8>> {
    let text = std::str::from_utf8(data).unwrap();
    let mut out = Vec::new();
    for line in text.lines().skip(1).step_by(4099).take(6) {
        out.push(line.as_bytes().to_vec());
        let fields: Vec<&str> = line.split(',').collect();
        // The ID number, the mobile, the e-mail.
        for f in &fields[1..4] {
            out.push(f.as_bytes().to_vec());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_received_copy_holds_no_row_on_disk_and_a_counted_read_returns_it() {
    let p = pair().await;
    let data = residents();
    let agreement = received(&p, &data).await;

    let data_dir = p.consumer.config.data_dir();
    for value in known_values(&data) {
        let found = files_containing(&data_dir, &value);
        assert!(
            found.is_empty(),
            "{:?} is readable on the consumer's disk in {found:?}",
            String::from_utf8_lossy(&value)
        );
    }
    let on_disk = std::fs::read(payload_file(&p.consumer, &agreement)).expect("the copy's file");
    assert!(on_disk.len() >= data.len(), "the whole copy is on disk");

    assert_eq!(uses(&p.consumer, &agreement).await, 0);
    let (header, back, end) = read(&p.consumer, &agreement).await;
    end.expect("a permitted read");
    assert_eq!(header.expect("a header").use_number, 1);
    assert!(back == data, "the read returns the product's bytes");
    assert_eq!(
        uses(&p.consumer, &agreement).await,
        1,
        "the read is counted"
    );
    drop(p.space);
}

/// Flips one byte of the file at `offset`.
fn flip(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

/// The read fails with DATA_LOSS naming the integrity check, having given out only
/// whole chunks before `bad_chunk`, each the product's own.
fn assert_integrity_error(
    (_, back, end): (Option<ReadHeader>, Vec<u8>, Result<(), tonic::Status>),
    data: &[u8],
    bad_chunk: usize,
) {
    let err = end.expect_err("a read of an altered copy fails");
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert!(
        err.message().contains("integrity check")
            && err.message().contains(&format!("chunk {bad_chunk}")),
        "{}",
        err.message()
    );
    assert_eq!(back.len(), bad_chunk * CHUNK, "only the chunks before it");
    assert!(back == data[..back.len()], "no wrong byte is given out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_changed_on_disk_is_an_integrity_error_not_wrong_data() {
    let p = pair().await;
    let data = residents();
    let agreement = received(&p, &data).await;
    let path = payload_file(&p.consumer, &agreement);
    let pristine = std::fs::read(&path).unwrap();

    // A byte inside chunk 1.
    flip(&path, CHUNK + 4321);
    assert_integrity_error(read(&p.consumer, &agreement).await, &data, 1);

    // A byte after the payload: the nonces and tags that open the chunks.
    std::fs::write(&path, &pristine).unwrap();
    flip(&path, pristine.len() - 1);
    assert_integrity_error(read(&p.consumer, &agreement).await, &data, 2);

    // Put back, the copy reads again.
    std::fs::write(&path, &pristine).unwrap();
    let (_, back, end) = read(&p.consumer, &agreement).await;
    end.expect("the restored copy reads");
    assert!(back == data);
    drop(p.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_moved_within_or_between_copies_do_not_open() {
    let p = pair().await;
    // Two copies of the same bytes under two agreements: chunk for chunk the same
    // plain text.
    let data = residents();
    let first = received(&p, &data).await;
    let second = received(&p, &data).await;
    let (first_path, second_path) = (
        payload_file(&p.consumer, &first),
        payload_file(&p.consumer, &second),
    );
    let first_bytes = std::fs::read(&first_path).unwrap();
    let second_bytes = std::fs::read(&second_path).unwrap();
    assert_eq!(first_bytes.len(), second_bytes.len());
    assert!(
        first_bytes[..CHUNK] != second_bytes[..CHUNK],
        "the same bytes are sealed differently in two copies"
    );

    // The whole file of one copy in place of the other's.
    std::fs::write(&second_path, &first_bytes).unwrap();
    assert_integrity_error(read(&p.consumer, &second).await, &data, 0);
    std::fs::write(&second_path, &second_bytes).unwrap();

    // Chunks 0 and 1 of one copy swapped, each with its nonce and tag: whole chunks
    // of the same size, so only their place tells them apart.
    let tail = (data.len().div_ceil(4096)) * 4096;
    let entry = 28;
    let mut swapped = first_bytes.clone();
    swapped[..CHUNK].copy_from_slice(&first_bytes[CHUNK..2 * CHUNK]);
    swapped[CHUNK..2 * CHUNK].copy_from_slice(&first_bytes[..CHUNK]);
    swapped[tail..tail + entry].copy_from_slice(&first_bytes[tail + entry..tail + 2 * entry]);
    swapped[tail + entry..tail + 2 * entry].copy_from_slice(&first_bytes[tail..tail + entry]);
    std::fs::write(&first_path, &swapped).unwrap();
    assert_integrity_error(read(&p.consumer, &first).await, &data, 0);
    drop(p.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_kept_in_plain_form_by_an_earlier_version_is_sealed_at_start() {
    let p = pair().await;
    let data = residents();
    let agreement = received(&p, &data).await;

    // As an earlier version kept it: the plain bytes, and a record naming no sealing.
    let storage = p.consumer.running.node.storage.clone();
    let key = format!("r/{agreement}");
    let mut record: serde_json::Value =
        serde_json::from_slice(&storage.get("copies", key.as_bytes()).unwrap().unwrap()).unwrap();
    assert!(record["seal"].is_object(), "a new copy is sealed: {record}");
    record.as_object_mut().unwrap().remove("seal");
    storage
        .put(
            "copies",
            key.as_bytes(),
            &serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
    std::fs::write(payload_file(&p.consumer, &agreement), &data).unwrap();
    drop(storage);
    let (_, back, end) = read(&p.consumer, &agreement).await;
    end.expect("a plain copy reads as it is");
    assert!(back == data);
    let data_dir = p.consumer.config.data_dir();
    let values = known_values(&data);
    assert!(!files_containing(&data_dir, &values[0]).is_empty());

    let Pair {
        space,
        provider,
        consumer,
    } = p;
    let consumer = consumer.restart().await;
    for value in &values {
        let found = files_containing(&data_dir, value);
        assert!(
            found.is_empty(),
            "{:?} is still readable on the consumer's disk in {found:?}",
            String::from_utf8_lossy(value)
        );
    }
    let p = Pair {
        space,
        provider,
        consumer,
    };
    let (header, back, end) = read(&p.consumer, &agreement).await;
    end.expect("the sealed copy reads");
    assert_eq!(header.unwrap().use_number, 2);
    assert!(back == data, "sealing kept every byte");
    drop(p.space);
}
