//! Replicas of one node on one PostgreSQL database: the leadership lease fences every
//! write, so a replica that lost its lease cannot write; and real `liutong serve`
//! replicas fail over when the leader is killed.

#[path = "postgres/mod.rs"]
mod postgres;

use std::time::Duration;

use liutong_node::storage::{PostgresStorage, Storage, Write};

const LEASE: Duration = Duration::from_secs(60);

fn refused_as_deposed(what: &str, reason: String) {
    assert!(
        reason.contains("no longer the leader"),
        "{what}: refused, but not for the lease: {reason}"
    );
}

/// A leader whose lease expired (by the database's clock) is refused on every kind of
/// write, and nothing it tried to write after that is in the database; the replica that
/// takes the lease over writes, and the old token stays refused.
#[test]
fn a_replica_whose_lease_expired_cannot_write() {
    let cluster = postgres::shared();
    let db = cluster.database();
    let leader = PostgresStorage::open(db.target()).unwrap();
    let standby = PostgresStorage::open(db.target()).unwrap();
    let first = leader.acquire_lease("leader", LEASE).unwrap();
    assert!(first.is_some(), "a free lease is taken");
    assert_eq!(
        standby.acquire_lease("standby", LEASE).unwrap(),
        None,
        "a held lease is not taken"
    );
    leader.put("t", b"before", b"1").unwrap();
    let mut payload = leader.blobs().writer("p/a", false).unwrap();
    payload.write_at(0, b"before").unwrap();
    assert!(leader.renew_lease(LEASE).unwrap());
    assert!(leader.lease_lost().borrow().is_none());

    // The leader is partitioned past its lease: the database's clock says it expired.
    cluster.psql(
        &db.name,
        "UPDATE liutong_lease SET expires_at = now() - interval '1 second'",
    );
    let e = |r: Result<(), liutong_node::storage::StorageError>| r.unwrap_err().to_string();
    refused_as_deposed("put", e(leader.put("t", b"after", b"2")));
    refused_as_deposed("delete", e(leader.delete("t", b"before")));
    refused_as_deposed(
        "insert_new",
        leader
            .insert_new("t", b"new", b"3")
            .unwrap_err()
            .to_string(),
    );
    refused_as_deposed(
        "apply",
        e(leader.apply("t", vec![Write::Put(b"batch".to_vec(), b"4".to_vec())])),
    );
    refused_as_deposed(
        "payload write",
        payload.write_at(6, b"after").unwrap_err().to_string(),
    );
    refused_as_deposed(
        "payload length",
        payload.set_len(2).unwrap_err().to_string(),
    );
    refused_as_deposed(
        "new payload",
        leader
            .blobs()
            .writer("p/b", false)
            .err()
            .unwrap()
            .to_string(),
    );
    refused_as_deposed(
        "payload removal",
        leader.blobs().remove("p/a").unwrap_err().to_string(),
    );
    assert!(
        leader.lease_lost().borrow().is_some(),
        "the refusal is reported to whoever watches the lease"
    );
    assert!(
        !leader.renew_lease(LEASE).unwrap(),
        "an expired lease is not renewed"
    );

    // Nothing it tried is in the database.
    assert_eq!(
        cluster.psql(
            &db.name,
            "SELECT string_agg(encode(key, 'escape'), ',' ORDER BY key) FROM liutong_kv"
        ),
        "before"
    );
    assert_eq!(
        cluster.psql(
            &db.name,
            "SELECT string_agg(name || ':' || len, ',' ORDER BY name) FROM liutong_blob_files"
        ),
        "p/a:6"
    );
    assert_eq!(
        standby.blobs().read_at("p/a", 0, 100).unwrap().unwrap(),
        b"before"
    );

    // The standby takes the lease over with a newer token and writes; the old token
    // stays refused although the lease is live again.
    let second = standby.acquire_lease("standby", LEASE).unwrap();
    assert!(second > first, "{second:?} after {first:?}");
    standby.put("t", b"by the new leader", b"5").unwrap();
    refused_as_deposed("put after the takeover", e(leader.put("t", b"late", b"6")));
    assert_eq!(standby.get("t", b"late").unwrap(), None);
    assert_eq!(
        standby.get("t", b"by the new leader").unwrap().as_deref(),
        Some(&b"5"[..])
    );
}

/// A released lease is free at once for another replica, and an engine that never took
/// the lease writes unfenced (a single node, `storage migrate`).
#[test]
fn a_released_lease_is_taken_at_once_and_unfenced_engines_write() {
    let db = postgres::shared().database();
    let a = PostgresStorage::open(db.target()).unwrap();
    let b = PostgresStorage::open(db.target()).unwrap();
    let unfenced = PostgresStorage::open(db.target()).unwrap();
    assert!(a.acquire_lease("a", LEASE).unwrap().is_some());
    assert_eq!(b.acquire_lease("b", LEASE).unwrap(), None);
    a.release_lease().unwrap();
    assert!(b.acquire_lease("b", LEASE).unwrap().is_some());
    refused_as_deposed("put", a.put("t", b"k", b"v").unwrap_err().to_string());
    unfenced.put("t", b"k", b"v").unwrap();
    b.put("t", b"k2", b"v").unwrap();
}
