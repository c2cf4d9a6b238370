//! Filling a node's storage in bulk with records as the node itself writes them:
//! products (the product store's records), negotiations with their agreements (the
//! contract store's records and indexes) and audit entries (the log's own append path,
//! in large groups).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use liutong_node::audit::log::{AuditLog, Event};
use liutong_node::catalog::product::{ProductStore, ProductVersion};
use liutong_node::contract::{Contracts, Negotiation};
use liutong_node::storage::{SledStorage, Storage, Write};

/// Writes applied between flushes when seeding.
const SEED_BATCH: usize = 20_000;
/// Entries in one append to the audit log when filling it: one group commit each.
const LOG_GROUP: u64 = 32_768;

/// A pseudo-random, well-spread 64-bit number for `i` (splitmix64), for IDs that land
/// all over a tree's key space as random IDs do.
pub fn spread(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Adds products `from..to` to `storage`: copies of `template` under new product IDs
/// (`prd-` and 16 hex digits, as the store makes them), recorded as a finished publish
/// records them. The copies have no payload files: listing a catalog never reads one.
pub async fn products(storage: &dyn Storage, template: &ProductVersion, from: u64, to: u64) {
    let mut writes: BTreeMap<&str, Vec<Write>> = BTreeMap::new();
    for i in from..to {
        let mut p = template.clone();
        p.product_id = format!("prd-{:016x}", spread(i));
        let (tree, write) = ProductStore::record_write(&p);
        writes.entry(tree).or_default().push(write);
        if ((i - from + 1) as usize).is_multiple_of(SEED_BATCH) {
            apply_all(storage, &mut writes);
        }
    }
    apply_all(storage, &mut writes);
    storage.flush().await.expect("flush");
}

/// Adds `count` negotiations to `storage`: copies of `template` (a finalized one, with
/// its signed agreement) under new negotiation and agreement IDs, a second apart,
/// with every record and index the contract store commits for one.
pub async fn negotiations(storage: &dyn Storage, template: &Negotiation, count: u64) {
    let mut writes: BTreeMap<&str, Vec<Write>> = BTreeMap::new();
    let mut pending = 0;
    for i in 0..count {
        let mut n = template.clone();
        n.id = format!("neg-{:016x}", spread(i));
        n.agreement_id = Some(format!("agr-{:016x}", spread(i ^ 0x5555)));
        n.created_at = template.created_at - count as i64 + i as i64;
        n.updated_at = n.created_at;
        for (tree, write) in Contracts::record_writes(&n) {
            writes.entry(tree).or_default().push(write);
            pending += 1;
        }
        if pending >= SEED_BATCH {
            apply_all(storage, &mut writes);
            pending = 0;
        }
    }
    apply_all(storage, &mut writes);
    storage.flush().await.expect("flush");
}

fn apply_all(storage: &dyn Storage, writes: &mut BTreeMap<&str, Vec<Write>>) {
    for (tree, w) in std::mem::take(writes) {
        storage.apply(tree, w).expect("apply");
    }
}

/// Appends entries until the log holds `size`, through the log's own append path
/// (hashing, tree nodes, size, flush) in groups of [`LOG_GROUP`] entries, each entry
/// `event(index)`.
pub async fn fill_log(log: &AuditLog, size: u64, event: impl Fn(u64) -> Event) {
    while log.size() < size {
        let start = log.size();
        let end = size.min(start + LOG_GROUP);
        let events: Vec<Event> = (start..end).map(&event).collect();
        log.append_with(&events, Vec::new()).await.expect("append");
    }
}

/// Opens the database of a node that was just stopped, waiting for the stopped node's
/// handles to let go of it.
pub async fn open_stopped(dir: &Path) -> Arc<SledStorage> {
    let started = std::time::Instant::now();
    loop {
        match SledStorage::open(dir) {
            Ok(s) => return s,
            Err(e) if started.elapsed() > Duration::from_secs(60) => {
                panic!("the stopped node's database was not released: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Waits until no handle of this process holds the database in `dir` (sled releases
/// its lock from a background thread after the last handle is dropped), so another
/// process can open it at once.
pub async fn wait_released(dir: &Path) {
    use rustix::fs::{FlockOperation, flock};
    let lock = std::fs::File::open(dir.join(liutong_node::storage::SLED_LOCK_FILE))
        .expect("the database's lock file");
    let started = std::time::Instant::now();
    while flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the database in {} was not released",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    flock(&lock, FlockOperation::Unlock).expect("unlock");
}
