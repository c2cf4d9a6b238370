//! One conformance suite for every storage engine: each test runs against sled and
//! against PostgreSQL (a throwaway cluster this binary starts itself), through the
//! node's `Storage` trait only.

#[path = "postgres/mod.rs"]
mod postgres;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use liutong_node::catalog::parse_policy;
use liutong_node::contract::{
    AGREEMENT_PAYLOAD_TYPE, Agreement, Contracts, Negotiation, NegotiationStatus,
    REQUEST_PAYLOAD_TYPE, Role,
};
use liutong_node::identity::{Envelope, ParticipantId, SigningKey};
use liutong_node::storage::blobs::rows::CHUNK;
use liutong_node::storage::{PgTarget, PostgresStorage, SledStorage, Storage, Write};
use liutong_policy::Classification;

/// Where one test's database lives, so that it can be opened again.
enum Place {
    Sled(tempfile::TempDir),
    Postgres(postgres::Database),
}

impl Place {
    fn new(engine: Engine) -> Self {
        match engine {
            Engine::Sled => Place::Sled(tempfile::tempdir().unwrap()),
            Engine::Postgres => Place::Postgres(postgres::shared().database()),
        }
    }

    fn open(&self) -> Arc<dyn Storage> {
        match self {
            Place::Sled(dir) => SledStorage::open(&dir.path().join("db")).unwrap(),
            Place::Postgres(db) => PostgresStorage::open(db.target()).unwrap(),
        }
    }

    /// Arguments for a writer process (see [`writer_process`]).
    fn describe(&self) -> String {
        match self {
            Place::Sled(dir) => format!("sled {}", dir.path().join("db").display()),
            Place::Postgres(db) => format!("postgres {} {}", db.url, db.password),
        }
    }
}

#[derive(Clone, Copy)]
enum Engine {
    Sled,
    Postgres,
}

macro_rules! for_both_engines {
    ($($name:ident),* $(,)?) => {
        mod sled {
            $( #[test] fn $name() { super::$name(super::Engine::Sled) } )*
        }
        mod on_postgres {
            $( #[test] fn $name() { super::$name(super::Engine::Postgres) } )*
        }
    };
}

for_both_engines!(
    every_operation_reads_back_what_it_wrote,
    a_batch_applies_its_writes_in_order,
    a_batch_across_trees_applies_its_writes_in_order,
    a_scan_sees_every_write_under_its_prefix,
    keys_come_back_in_bytewise_order_page_by_page,
    exactly_one_of_racing_insert_new_calls_wins,
    concurrent_writers_lose_nothing,
    payloads_read_back_across_chunk_boundaries,
    payloads_are_renamed_removed_and_listed,
    acknowledged_writes_are_there_after_reopening,
    acknowledged_writes_survive_a_killed_writer,
    agreements_that_count_uses_are_indexed_with_their_record,
    the_index_of_counted_agreements_is_built_for_older_data,
);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn keys(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<Vec<u8>> {
    entries.iter().map(|(k, _)| k.clone()).collect()
}

fn every_operation_reads_back_what_it_wrote(engine: Engine) {
    let place = Place::new(engine);
    let s = place.open();
    assert_eq!(s.get("t", b"k").unwrap(), None);
    s.put("t", b"k", b"one").unwrap();
    assert_eq!(s.get("t", b"k").unwrap().as_deref(), Some(&b"one"[..]));
    s.put("t", b"k", b"two").unwrap();
    assert_eq!(s.get("t", b"k").unwrap().as_deref(), Some(&b"two"[..]));
    // Trees are apart.
    assert_eq!(s.get("other", b"k").unwrap(), None);
    assert!(!s.insert_new("t", b"k", b"three").unwrap());
    assert_eq!(s.get("t", b"k").unwrap().as_deref(), Some(&b"two"[..]));
    assert!(s.insert_new("t", b"new", b"").unwrap());
    assert_eq!(s.get("t", b"new").unwrap().as_deref(), Some(&b""[..]));
    s.delete("t", b"k").unwrap();
    s.delete("t", b"never").unwrap();
    assert_eq!(s.get("t", b"k").unwrap(), None);
    // Binary keys and values, including an empty key.
    s.put("t", b"", &[0, 255, 0]).unwrap();
    assert_eq!(s.get("t", b"").unwrap(), Some(vec![0, 255, 0]));
    rt().block_on(async {
        s.put_durable("t", b"d", b"durable").await.unwrap();
        s.flush().await.unwrap();
    });
    assert_eq!(s.get("t", b"d").unwrap().as_deref(), Some(&b"durable"[..]));
    assert!(s.failures().borrow().is_none());
}

fn a_batch_applies_its_writes_in_order(engine: Engine) {
    let place = Place::new(engine);
    let s = place.open();
    s.put("t", b"gone", b"x").unwrap();
    s.apply(
        "t",
        vec![
            Write::Put(b"a".to_vec(), b"1".to_vec()),
            Write::Put(b"a".to_vec(), b"2".to_vec()),
            Write::Delete(b"gone".to_vec()),
            Write::Put(b"b".to_vec(), b"3".to_vec()),
            Write::Delete(b"b".to_vec()),
            Write::Put(b"c".to_vec(), b"4".to_vec()),
        ],
    )
    .unwrap();
    let all = s.scan_prefix("t", b"").unwrap();
    assert_eq!(
        all,
        vec![
            (b"a".to_vec(), b"2".to_vec()),
            (b"c".to_vec(), b"4".to_vec())
        ]
    );
    s.apply("t", Vec::new()).unwrap();
}

fn a_batch_across_trees_applies_its_writes_in_order(engine: Engine) {
    let place = Place::new(engine);
    let s = place.open();
    s.put("u", b"gone", b"x").unwrap();
    // Read first, so that an engine that keeps what it read must replace it.
    assert_eq!(s.get("t", b"a").unwrap(), None);
    assert_eq!(s.get("u", b"gone").unwrap(), Some(b"x".to_vec()));
    s.apply_trees(vec![
        ("t", Write::Put(b"a".to_vec(), b"1".to_vec())),
        ("u", Write::Put(b"a".to_vec(), b"other tree".to_vec())),
        ("t", Write::Put(b"a".to_vec(), b"2".to_vec())),
        ("u", Write::Delete(b"gone".to_vec())),
        ("t", Write::Put(b"b".to_vec(), b"3".to_vec())),
        ("t", Write::Delete(b"b".to_vec())),
        ("u", Write::Put(b"c".to_vec(), b"4".to_vec())),
    ])
    .unwrap();
    let check = |s: &dyn Storage| {
        assert_eq!(s.get("t", b"a").unwrap(), Some(b"2".to_vec()));
        assert_eq!(s.get("t", b"b").unwrap(), None);
        assert_eq!(s.get("u", b"gone").unwrap(), None);
        assert_eq!(
            s.scan_prefix("u", b"").unwrap(),
            vec![
                (b"a".to_vec(), b"other tree".to_vec()),
                (b"c".to_vec(), b"4".to_vec())
            ]
        );
    };
    check(s.as_ref());
    rt().block_on(s.flush()).unwrap();
    drop(s);
    // What the database holds, not what the engine kept.
    check(place.open().as_ref());
}

fn a_scan_sees_every_write_under_its_prefix(engine: Engine) {
    let place = Place::new(engine);
    let s = place.open();
    s.put("t", b"n/1", b"1").unwrap();
    s.put("t", b"o/1", b"1").unwrap();
    let scan = |prefix: &[u8]| s.scan_prefix("t", prefix).unwrap();
    assert_eq!(scan(b"n/"), vec![(b"n/1".to_vec(), b"1".to_vec())]);
    assert_eq!(scan(b"").len(), 2);
    s.put("t", b"n/2", b"2").unwrap();
    s.put("t", b"n/1", b"changed").unwrap();
    assert_eq!(
        scan(b"n/"),
        vec![
            (b"n/1".to_vec(), b"changed".to_vec()),
            (b"n/2".to_vec(), b"2".to_vec())
        ]
    );
    s.delete("t", b"n/2").unwrap();
    assert!(s.insert_new("t", b"n/3", b"3").unwrap());
    s.apply("t", vec![Write::Delete(b"o/1".to_vec())]).unwrap();
    s.apply_trees(vec![("t", Write::Put(b"p".to_vec(), b"4".to_vec()))])
        .unwrap();
    assert_eq!(keys(&scan(b"n/")), [b"n/1".to_vec(), b"n/3".to_vec()]);
    assert_eq!(
        keys(&scan(b"")),
        [b"n/1".to_vec(), b"n/3".to_vec(), b"p".to_vec()]
    );
    assert_eq!(scan(b"o/"), Vec::new());
}

fn keys_come_back_in_bytewise_order_page_by_page(engine: Engine) {
    let place = Place::new(engine);
    let s = place.open();
    let mut model = BTreeMap::new();
    let mut all: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0, 0],
        vec![0xff],
        vec![0xff, 0xff],
        vec![0xff, 0xff, 0],
        vec![b'a'],
        vec![b'a', 0],
        vec![b'a', 0xff],
        vec![b'a', 0xff, 0xff],
        vec![b'b'],
        vec![0x7f],
        vec![0x80],
        b"A".to_vec(),
        b"a/1".to_vec(),
        b"a/10".to_vec(),
        b"a/2".to_vec(),
    ];
    for i in 0..150u32 {
        all.push(format!("p/{i:05}").into_bytes());
    }
    for (i, k) in all.iter().enumerate() {
        let v = (i as u32).to_be_bytes().to_vec();
        s.put("t", k, &v).unwrap();
        model.insert(k.clone(), v);
    }
    s.put("t2", b"a", b"other tree").unwrap();
    let prefixes: Vec<Vec<u8>> = vec![
        vec![],
        vec![b'a'],
        vec![b'a', 0xff],
        vec![0xff],
        vec![0xff, 0xff],
        b"p/".to_vec(),
        b"p/001".to_vec(),
        b"zz".to_vec(),
    ];
    for prefix in &prefixes {
        let expected: Vec<(Vec<u8>, Vec<u8>)> = model
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(s.scan_prefix("t", prefix).unwrap(), expected, "{prefix:?}");
        // Page through with several page sizes; the pages join into the whole listing.
        for limit in [1, 7, 64, 1000] {
            let mut joined = Vec::new();
            let mut after: Option<Vec<u8>> = None;
            for _ in 0..=expected.len() {
                let page = s.scan_page("t", prefix, after.as_deref(), limit).unwrap();
                assert!(page.len() <= limit);
                let done = page.len() < limit;
                after = page.last().map(|(k, _)| k.clone()).or(after);
                joined.extend(page);
                if done {
                    break;
                }
            }
            assert_eq!(keys(&joined), keys(&expected), "{prefix:?} by {limit}");
        }
        // A position before the prefix, or past it.
        assert_eq!(
            keys(&s.scan_page("t", prefix, Some(&[]), 1000).unwrap()),
            keys(&expected[usize::from(prefix.is_empty())..]),
        );
        assert!(
            s.scan_page("t", prefix, Some(&[0xff, 0xff, 0xff, 0xff]), 10)
                .unwrap()
                .is_empty()
        );
    }
}

fn exactly_one_of_racing_insert_new_calls_wins(engine: Engine) {
    let place = Place::new(engine);
    let s = place.open();
    const WRITERS: usize = 8;
    for round in 0..10u32 {
        let key = format!("race/{round}").into_bytes();
        let start = Arc::new(Barrier::new(WRITERS));
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (s, key, start) = (s.clone(), key.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    s.insert_new("t", &key, &[w as u8]).unwrap().then_some(w)
                })
            })
            .collect();
        let winners: Vec<usize> = handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(s.get("t", &key).unwrap(), Some(vec![winners[0] as u8]));
    }
}

fn concurrent_writers_lose_nothing(engine: Engine) {
    let place = Place::new(engine);
    let s = place.open();
    const WRITERS: u32 = 6;
    const EACH: u32 = 40;
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let k = format!("w{w}/{i:03}");
                    if i % 2 == 0 {
                        s.put("t", k.as_bytes(), &i.to_be_bytes()).unwrap();
                    } else {
                        s.apply(
                            "t",
                            vec![Write::Put(k.into_bytes(), i.to_be_bytes().to_vec())],
                        )
                        .unwrap();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let all = s.scan_prefix("t", b"w").unwrap();
    assert_eq!(all.len(), (WRITERS * EACH) as usize);
    for w in 0..WRITERS {
        let mine = s.scan_prefix("t", format!("w{w}/").as_bytes()).unwrap();
        let values: Vec<u32> = mine
            .iter()
            .map(|(_, v)| u32::from_be_bytes(v.as_slice().try_into().unwrap()))
            .collect();
        assert_eq!(values, (0..EACH).collect::<Vec<_>>());
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn payloads_read_back_across_chunk_boundaries(engine: Engine) {
    let place = Place::new(engine);
    let s = place.open();
    let blobs = s.blobs();
    let chunk = CHUNK as usize;
    let mut model = vec![0u8; 0];
    fn write(
        w: &mut liutong_node::storage::blobs::BlobWriter,
        model: &mut Vec<u8>,
        at: usize,
        data: &[u8],
    ) {
        w.write_at(at as u64, data).unwrap();
        if model.len() < at + data.len() {
            model.resize(at + data.len(), 0);
        }
        model[at..at + data.len()].copy_from_slice(data);
    }
    let mut w = blobs.writer("copies/agr-1", false).unwrap();
    assert_eq!(blobs.read_at("copies/agr-1", 0, 10).unwrap(), Some(vec![]));
    assert_eq!(blobs.len("copies/agr-1").unwrap(), Some(0));
    // A whole chunk and more, then pieces across the boundary and inside a chunk.
    write(&mut w, &mut model, 0, &pattern(chunk + 1000, 1));
    write(&mut w, &mut model, chunk - 10, &pattern(20, 2));
    write(&mut w, &mut model, 100, &pattern(50, 3));
    // Past the end, leaving a hole that reads as zeros.
    write(&mut w, &mut model, 2 * chunk + 5, &pattern(chunk, 4));
    w.sync().unwrap();
    let len = model.len() as u64;
    assert_eq!(blobs.len("copies/agr-1").unwrap(), Some(len));
    for (offset, max) in [
        (0, model.len()),
        (chunk - 15, 30),
        (chunk + 990, 20),
        (2 * chunk - 3, 10),
        (3 * chunk, chunk),
        (model.len() - 1, 100),
        (model.len(), 100),
        (model.len() + 10, 100),
    ] {
        let back = blobs
            .read_at("copies/agr-1", offset as u64, max)
            .unwrap()
            .unwrap();
        let end = model.len().min(offset + max).max(offset.min(model.len()));
        assert_eq!(back, model[offset.min(model.len())..end], "{offset} +{max}");
    }
    // A second writer of the same payload writes beside the first.
    let mut other = blobs.writer("copies/agr-1", false).unwrap();
    write(&mut other, &mut model, chunk + 1, b"beside");
    other.sync().unwrap();
    let back = blobs
        .read_at("copies/agr-1", 0, 4 * chunk)
        .unwrap()
        .unwrap();
    assert_eq!(back, model);
    // Cut inside the second chunk, then grow again: the cut bytes read as zeros.
    w.set_len(chunk as u64 + 3).unwrap();
    model.truncate(chunk + 3);
    assert_eq!(blobs.len("copies/agr-1").unwrap(), Some(chunk as u64 + 3));
    let back = blobs
        .read_at("copies/agr-1", 0, 4 * chunk)
        .unwrap()
        .unwrap();
    assert_eq!(back, model);
    w.set_len(chunk as u64 + 10).unwrap();
    model.resize(chunk + 10, 0);
    let back = blobs
        .read_at("copies/agr-1", 0, 4 * chunk)
        .unwrap()
        .unwrap();
    assert_eq!(back, model);
    // A direct writer with the length set after its last write.
    let mut d = blobs.writer("copies/agr-2", true).unwrap();
    let data = pattern(chunk + 4097, 5);
    d.write_at(0, &data[..chunk]).unwrap();
    d.write_at(chunk as u64, &data[chunk..]).unwrap();
    d.set_len(data.len() as u64).unwrap();
    d.sync().unwrap();
    assert_eq!(
        blobs.read_at("copies/agr-2", 0, 2 * chunk).unwrap(),
        Some(data)
    );
}

fn payloads_are_renamed_removed_and_listed(engine: Engine) {
    let place = Place::new(engine);
    let s = place.open();
    let blobs = s.blobs();
    let chunk = CHUNK as usize;
    for name in [
        "products/prd-1/v1",
        "products/prd-1/v2.partial",
        "products/prd-2/v1",
    ] {
        let mut w = blobs.writer(name, false).unwrap();
        w.write_at(0, &pattern(chunk + 7, name.len() as u8))
            .unwrap();
        w.sync().unwrap();
    }
    blobs.writer("copies/agr-1", false).unwrap();
    assert_eq!(
        blobs.all().unwrap(),
        vec![
            "copies/agr-1",
            "products/prd-1/v1",
            "products/prd-1/v2.partial",
            "products/prd-2/v1"
        ]
    );
    assert_eq!(blobs.list("products").unwrap(), vec!["prd-1", "prd-2"]);
    assert_eq!(
        blobs.list("products/prd-1").unwrap(),
        vec!["v1", "v2.partial"]
    );
    assert!(blobs.list("nothing").unwrap().is_empty());
    // A rename replaces the target, chunks and all.
    let partial = blobs
        .read_at("products/prd-1/v2.partial", 0, 2 * chunk)
        .unwrap();
    blobs
        .rename("products/prd-1/v2.partial", "products/prd-1/v1")
        .unwrap();
    assert_eq!(
        blobs.read_at("products/prd-1/v1", 0, 2 * chunk).unwrap(),
        partial
    );
    assert_eq!(
        blobs.read_at("products/prd-1/v2.partial", 0, 1).unwrap(),
        None
    );
    assert_eq!(blobs.list("products/prd-1").unwrap(), vec!["v1"]);
    let missing = blobs.rename("products/none", "products/x").unwrap_err();
    assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    blobs.remove("products/prd-1/v1").unwrap();
    blobs.remove("products/prd-1/v1").unwrap();
    assert_eq!(blobs.read_at("products/prd-1/v1", 0, 1).unwrap(), None);
    assert_eq!(blobs.len("products/prd-1/v1").unwrap(), None);
    assert_eq!(
        blobs.all().unwrap(),
        vec!["copies/agr-1", "products/prd-2/v1"]
    );
    for bad in ["../x", "a//b", ".hidden", ""] {
        assert_eq!(
            blobs.writer(bad, false).err().unwrap().kind(),
            std::io::ErrorKind::InvalidInput
        );
    }
}

fn acknowledged_writes_are_there_after_reopening(engine: Engine) {
    let place = Place::new(engine);
    {
        let s = place.open();
        s.apply(
            "t",
            vec![
                Write::Put(b"a".to_vec(), b"1".to_vec()),
                Write::Put(b"b".to_vec(), b"2".to_vec()),
            ],
        )
        .unwrap();
        let mut w = s.blobs().writer("copies/c", false).unwrap();
        w.write_at(0, &pattern(CHUNK as usize + 1, 9)).unwrap();
        w.sync().unwrap();
        rt().block_on(s.put_durable("t", b"c", b"3")).unwrap();
    }
    let s = place.open();
    assert_eq!(s.scan_prefix("t", b"").unwrap().len(), 3);
    assert_eq!(
        s.blobs()
            .read_at("copies/c", 0, 2 * CHUNK as usize)
            .unwrap(),
        Some(pattern(CHUNK as usize + 1, 9))
    );
}

/// A use count of two.
const COUNTED_POLICY: &str = "uid = \"urn:liutong:policy:two-uses\"\ntype = \"set\"\n\n\
    [[permission]]\naction = \"use\"\n\
    constraint = [{ leftOperand = \"count\", operator = \"lt\", rightOperand = 2 }]\n";
/// No use count.
const UNLIMITED_POLICY: &str =
    "uid = \"urn:liutong:policy:any-use\"\ntype = \"set\"\n\n[[permission]]\naction = \"use\"\n";

fn member(n: u32) -> ParticipantId {
    ParticipantId::with_check_character(&format!("91330100MA2C{n:04}0")).unwrap()
}

/// A negotiation on `offer` with `peer` as a node stores it, in `state`, with a signed
/// agreement under `policy` from AGREED on.
fn negotiation(
    id: &str,
    role: Role,
    peer: &ParticipantId,
    offer: &str,
    policy: &str,
    state: NegotiationStatus,
) -> Negotiation {
    let key = SigningKey::generate().unwrap();
    let request = Envelope::sign(REQUEST_PAYLOAD_TYPE, b"{}".to_vec(), &key).unwrap();
    let agreed = !matches!(
        state,
        NegotiationStatus::Requested | NegotiationStatus::Terminated
    );
    let agreement_id = format!("agr-{id}");
    let agreement = agreed.then(|| {
        let a = Agreement {
            agreement_id: agreement_id.clone(),
            negotiation_id: id.to_owned(),
            provider: member(9999),
            consumer: peer.clone(),
            offer_id: offer.to_owned(),
            product_id: "prd".into(),
            version: 1,
            product_sha256: "00".repeat(32),
            size: 1,
            chunk_size: 1 << 20,
            chunks_sha256: "00".repeat(32),
            derived: false,
            classification: Classification::General2,
            purpose: "research".into(),
            policy: parse_policy(policy, None).unwrap().to_odrl(),
            agreed_at: 0,
            approved_by: None,
        };
        Envelope::sign_json(AGREEMENT_PAYLOAD_TYPE, &a, &key).unwrap()
    });
    Negotiation {
        id: id.to_owned(),
        role,
        peer: peer.clone(),
        peer_address: String::new(),
        offer_id: offer.to_owned(),
        purpose: "research".into(),
        state,
        reason: String::new(),
        failed_constraints: Vec::new(),
        request,
        offer_policy: None,
        offer_classification: None,
        agreement,
        agreement_id: agreed.then_some(agreement_id),
        created_at: 0,
        updated_at: 0,
    }
}

/// Stores `n` as the node commits it (every tree, in order).
fn store(s: &dyn Storage, n: &Negotiation) {
    s.apply_trees(Contracts::record_writes(n)).unwrap();
}

fn agreements_that_count_uses_are_indexed_with_their_record(engine: Engine) {
    use NegotiationStatus::{Agreed, Finalized};
    let place = Place::new(engine);
    let s = place.open();
    let (alice, bob) = (member(1), member(2));
    let (offer, other) = ("off-a", "off-b");
    let stored = [
        (
            "neg-1",
            Role::Provider,
            &alice,
            offer,
            COUNTED_POLICY,
            Finalized,
        ),
        (
            "neg-2",
            Role::Provider,
            &alice,
            offer,
            UNLIMITED_POLICY,
            Finalized,
        ),
        (
            "neg-3",
            Role::Provider,
            &alice,
            offer,
            COUNTED_POLICY,
            Agreed,
        ),
        (
            "neg-4",
            Role::Provider,
            &alice,
            offer,
            COUNTED_POLICY,
            Finalized,
        ),
        (
            "neg-5",
            Role::Provider,
            &bob,
            offer,
            COUNTED_POLICY,
            Finalized,
        ),
        (
            "neg-6",
            Role::Provider,
            &alice,
            other,
            COUNTED_POLICY,
            Finalized,
        ),
        (
            "neg-7",
            Role::Consumer,
            &alice,
            offer,
            COUNTED_POLICY,
            Finalized,
        ),
    ];
    for (id, role, peer, offer, policy, state) in stored {
        store(
            s.as_ref(),
            &negotiation(id, role, peer, offer, policy, state),
        );
    }
    // AGREED then FINALIZED: the commit that finalizes it indexes it.
    for state in [Agreed, Finalized] {
        let n = negotiation(
            "neg-8",
            Role::Provider,
            &alice,
            offer,
            COUNTED_POLICY,
            state,
        );
        store(s.as_ref(), &n);
        let indexed = Contracts::counted_agreements(s.as_ref(), &alice, offer).unwrap();
        assert_eq!(indexed.contains(&n.id), state == Finalized, "{state}");
    }
    let counted = |peer: &ParticipantId, offer: &str| {
        Contracts::counted_agreements(s.as_ref(), peer, offer).unwrap()
    };
    assert_eq!(
        counted(&alice, offer),
        ["neg-1", "neg-4", "neg-8"],
        "the provider's FINALIZED agreements with the member on the offer whose policy \
         counts uses, and no others"
    );
    assert_eq!(counted(&bob, offer), ["neg-5"]);
    assert_eq!(counted(&alice, other), ["neg-6"]);
    assert!(counted(&member(3), offer).is_empty());
    // Nothing to build: a database the node wrote from the start is complete.
    s.apply(
        "negotiation_indexes",
        vec![Write::Put(b"counted".to_vec(), b"1".to_vec())],
    )
    .unwrap();
    assert!(
        !rt()
            .block_on(Contracts::index_counted_agreements(s.as_ref()))
            .unwrap()
    );
}

fn the_index_of_counted_agreements_is_built_for_older_data(engine: Engine) {
    let place = Place::new(engine);
    let alice = member(1);
    let offer = "off-a";
    // More negotiations than one batch of the build reads, stored as a node did before
    // the index existed: the record alone.
    let total = 1500;
    let counted_at = [0, 1023, 1024, 1499];
    {
        let s = place.open();
        let template = negotiation(
            "neg-00000",
            Role::Provider,
            &alice,
            offer,
            UNLIMITED_POLICY,
            NegotiationStatus::Finalized,
        );
        let counted = negotiation(
            "neg-00000",
            Role::Provider,
            &alice,
            offer,
            COUNTED_POLICY,
            NegotiationStatus::Finalized,
        );
        let mut writes = Vec::new();
        for i in 0..total {
            let mut n = if counted_at.contains(&i) {
                counted.clone()
            } else {
                template.clone()
            };
            n.id = format!("neg-{i:05}");
            n.agreement_id = Some(format!("agr-{i:05}"));
            for (tree, write) in Contracts::record_writes(&n) {
                if tree == "negotiations" {
                    writes.push(write);
                }
            }
        }
        s.apply("negotiations", writes).unwrap();
        rt().block_on(s.flush()).unwrap();
        assert!(
            Contracts::counted_agreements(s.as_ref(), &alice, offer)
                .unwrap()
                .is_empty()
        );
        assert!(
            rt().block_on(Contracts::index_counted_agreements(s.as_ref()))
                .unwrap()
        );
        assert!(
            !rt()
                .block_on(Contracts::index_counted_agreements(s.as_ref()))
                .unwrap(),
            "built once"
        );
    }
    // Built durably: there after reopening.
    let s = place.open();
    let expected: Vec<String> = counted_at.iter().map(|i| format!("neg-{i:05}")).collect();
    assert_eq!(
        Contracts::counted_agreements(s.as_ref(), &alice, offer).unwrap(),
        expected
    );
}

/// When run as a child with `LIUTONG_CONFORMANCE_WRITER=<engine> <where…>`: writes keys
/// one by one, each made durable, and prints the number of each acknowledged one, until
/// it is killed.
#[test]
fn writer_process() {
    let Ok(spec) = std::env::var("LIUTONG_CONFORMANCE_WRITER") else {
        return;
    };
    let parts: Vec<&str> = spec.split(' ').collect();
    let s: Arc<dyn Storage> = match parts[0] {
        "sled" => SledStorage::open(std::path::Path::new(parts[1])).unwrap(),
        _ => PostgresStorage::open(PgTarget::new(parts[1], Some(parts[2])).unwrap()).unwrap(),
    };
    let rt = rt();
    for i in 0u32..1_000_000 {
        rt.block_on(async {
            s.apply(
                "t",
                vec![Write::Put(format!("k{i:07}").into_bytes(), vec![1; 100])],
            )
            .unwrap();
            s.flush().await.unwrap();
        });
        println!("acked {i}");
    }
}

fn acknowledged_writes_survive_a_killed_writer(engine: Engine) {
    let place = Place::new(engine);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "writer_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LIUTONG_CONFORMANCE_WRITER", place.describe())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("acked ") {
            last = Some(n.parse::<u32>().unwrap());
            if last >= Some(50) || Instant::now() > deadline {
                break;
            }
        }
    }
    // SIGKILL: no destructor, no flush of its own.
    child.kill().unwrap();
    child.wait().unwrap();
    let last = last.expect("the writer acknowledged writes");
    let s = place.open();
    for i in 0..=last {
        assert!(
            s.get("t", format!("k{i:07}").as_bytes()).unwrap().is_some(),
            "acknowledged write {i} of {last} is lost"
        );
    }
}

// PostgreSQL only.

#[test]
fn on_postgres_a_batch_is_all_or_nothing_to_readers() {
    let place = Place::new(Engine::Postgres);
    let s = place.open();
    const KEYS: u32 = 20;
    let batch = |n: u32| -> Vec<Write> {
        (0..KEYS)
            .map(|k| Write::Put(format!("k{k:02}").into_bytes(), n.to_be_bytes().to_vec()))
            .collect()
    };
    s.apply("t", batch(0)).unwrap();
    let writer = {
        let s = s.clone();
        std::thread::spawn(move || {
            for n in 1..=60 {
                s.apply("t", batch(n)).unwrap();
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() || reads == 0 {
        let all = s.scan_prefix("t", b"k").unwrap();
        assert_eq!(all.len(), KEYS as usize);
        let first = &all[0].1;
        assert!(
            all.iter().all(|(_, v)| v == first),
            "a reader saw half a batch: {:?}",
            all.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>()
        );
        reads += 1;
    }
    writer.join().unwrap();
}

#[test]
fn on_postgres_a_schema_newer_than_the_binary_is_refused() {
    let place = Place::new(Engine::Postgres);
    let Place::Postgres(db) = &place else {
        unreachable!()
    };
    drop(place.open());
    let cluster = postgres::shared();
    assert_eq!(
        cluster.psql(&db.name, "SELECT max(version) FROM liutong_schema"),
        liutong_node::storage::postgres::SCHEMA_VERSION.to_string()
    );
    // Opening again migrates nothing and keeps the data.
    place.open().put("t", b"k", b"v").unwrap();
    assert_eq!(place.open().get("t", b"k").unwrap(), Some(b"v".to_vec()));
    cluster.psql(
        &db.name,
        "INSERT INTO liutong_schema (version) VALUES (999)",
    );
    let err = PostgresStorage::open(db.target())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("version 999, newer than this liutong knows"),
        "{err}"
    );
}

#[test]
fn on_postgres_a_lost_connection_is_a_clear_error_and_heals() {
    // A private cluster: this test stops its server.
    let cluster = postgres::Cluster::start();
    let db = cluster.database();
    let s = PostgresStorage::open(db.target()).unwrap();
    s.put("t", b"before", b"1").unwrap();
    assert_eq!(s.get("t", b"before").unwrap(), Some(b"1".to_vec()));
    cluster.stop(true);
    // A write that failed leaves nothing of itself to read, even where the engine
    // keeps what it read and wrote.
    assert!(s.put("t", b"before", b"lost").is_err());
    let err = s.put("t", b"during", b"2").unwrap_err().to_string();
    assert!(
        err.contains("PostgreSQL") && err.contains(&format!("127.0.0.1:{}", cluster.port)),
        "{err}"
    );
    assert!(err.contains("not acknowledged"), "{err}");
    let err = s
        .blobs()
        .writer("copies/x", false)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("PostgreSQL"), "{err}");
    cluster.launch().unwrap();
    assert_eq!(s.get("t", b"during").unwrap(), None);
    s.put("t", b"after", b"3").unwrap();
    assert_eq!(s.get("t", b"before").unwrap(), Some(b"1".to_vec()));
    assert_eq!(s.get("t", b"after").unwrap(), Some(b"3".to_vec()));
}

#[test]
fn on_postgres_a_wrong_password_is_a_clear_error_at_open() {
    let db = postgres::shared().database();
    let target = PgTarget::new(&db.url, Some("not-the-password")).unwrap();
    let err = PostgresStorage::open(target).err().unwrap().to_string();
    assert!(err.contains("cannot use the PostgreSQL database"), "{err}");
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");
}

/// A lease no test waits out.
const LONG_LEASE: Duration = Duration::from_secs(3600);

/// Takes the lease for `s`, waiting (up to a minute) for the holder's to expire.
fn take_lease(s: &PostgresStorage, holder: &str, lease: Duration) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.acquire_lease(holder, lease).unwrap().is_none() {
        assert!(Instant::now() < deadline, "{holder} never got the lease");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn on_postgres_a_retaken_lease_sees_what_another_replica_wrote_meanwhile() {
    let db = postgres::shared().database();
    let (a, b) = (
        PostgresStorage::open(db.target()).unwrap(),
        PostgresStorage::open(db.target()).unwrap(),
    );
    take_lease(&a, "a", LONG_LEASE);
    a.put("t", b"k", b"a's").unwrap();
    assert_eq!(a.get("t", b"k").unwrap(), Some(b"a's".to_vec()));
    assert_eq!(a.get("t", b"absent").unwrap(), None);
    assert_eq!(keys(&a.scan_prefix("t", b"").unwrap()), [b"k".to_vec()]);
    a.release_lease().unwrap();

    take_lease(&b, "b", LONG_LEASE);
    b.put("t", b"k", b"b's").unwrap();
    b.put("t", b"absent", b"written by b").unwrap();
    b.release_lease().unwrap();

    take_lease(&a, "a", LONG_LEASE);
    assert_eq!(a.get("t", b"k").unwrap(), Some(b"b's".to_vec()));
    assert_eq!(
        a.get("t", b"absent").unwrap(),
        Some(b"written by b".to_vec())
    );
    assert_eq!(
        keys(&a.scan_prefix("t", b"").unwrap()),
        [b"absent".to_vec(), b"k".to_vec()]
    );
}

#[test]
fn on_postgres_a_deposed_leader_reads_what_its_successor_wrote_not_its_refused_write() {
    let db = postgres::shared().database();
    let (a, b) = (
        PostgresStorage::open(db.target()).unwrap(),
        PostgresStorage::open(db.target()).unwrap(),
    );
    // A short lease that `a` never renews: it is deposed once `b` takes over.
    take_lease(&a, "a", Duration::from_millis(300));
    a.put("t", b"k", b"a's").unwrap();
    assert_eq!(a.get("t", b"k").unwrap(), Some(b"a's".to_vec()));

    take_lease(&b, "b", LONG_LEASE);
    b.put("t", b"k", b"b's").unwrap();
    assert_eq!(a.get("t", b"k").unwrap(), Some(b"b's".to_vec()));
    let refused = a.put("t", b"k", b"refused").unwrap_err().to_string();
    assert!(refused.contains("no longer the leader"), "{refused}");
    assert_eq!(a.get("t", b"k").unwrap(), Some(b"b's".to_vec()));
    b.release_lease().unwrap();

    take_lease(&a, "a", LONG_LEASE);
    assert_eq!(a.get("t", b"k").unwrap(), Some(b"b's".to_vec()));
    a.put("t", b"k", b"a's again").unwrap();
    assert_eq!(b.get("t", b"k").unwrap(), Some(b"a's again".to_vec()));
}
