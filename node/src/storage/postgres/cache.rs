//! The PostgreSQL engine's read cache: the records this engine read or wrote, kept in
//! memory so that a read of a record costs no round trip to the database.
//!
//! It is exact only because this engine is the only writer while it answers from the
//! cache (see the engine's module documentation for why, and when it stops answering).
//! Within the engine, three things keep it exact under concurrent calls:
//!
//! - A write in flight removes the record from the cache when it starts, and puts the
//!   new value in only once the database confirmed the commit, and only if no other
//!   write of that record overlapped it (two overlapping writes may commit in either
//!   order, so neither knows it was last). A write whose outcome is unknown (an error)
//!   leaves the record out: the next read asks the database.
//! - A read that missed puts what it read in only if no write of that record started
//!   or was in flight since the read started (it holds a ticket that such a write
//!   takes back), so a read that raced a write never installs the older value.
//! - [`Cache::clear`] starts a new epoch: nothing read or written before it is put in
//!   after it.
//!
//! Scans by prefix are kept the same way, and are exact by the same rules: a write of
//! any key that starts with a kept scan's prefix drops that scan (a key has one prefix
//! per length, so a write looks up each), and a scan that missed is put in only if no
//! write of a key under its prefix started or was in flight since it started.
//!
//! Bounded by bytes: least recently used records and scans are dropped first, and one
//! too large for a sixteenth of the bound is not kept at all.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

/// The cache's default bound: 64 MiB of records (keys, values and bookkeeping).
pub(crate) const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// What a record or a scan costs beyond its bytes: its place in the two maps and the
/// order.
const ENTRY_OVERHEAD: usize = 96;

/// What one entry of a kept scan costs beyond its bytes.
const SCAN_ENTRY_OVERHEAD: usize = 48;

/// A record's or a scan's place, as one byte string: `r` (a record) or `s` (a scan by
/// prefix), the tree's length, the tree, then the key or the prefix. So the places of
/// the scans that see a key are its record place's prefixes, with `s` first.
type Slot = Vec<u8>;

const RECORD: u8 = b'r';
const SCAN: u8 = b's';

fn place(kind: u8, tree: &str, key: &[u8]) -> Slot {
    let mut s = Vec::with_capacity(5 + tree.len() + key.len());
    s.push(kind);
    s.extend_from_slice(&(tree.len() as u32).to_be_bytes());
    s.extend_from_slice(tree.as_bytes());
    s.extend_from_slice(key);
    s
}

/// The place of the record at `tree`/`key`.
pub(crate) fn slot(tree: &str, key: &[u8]) -> Slot {
    place(RECORD, tree, key)
}

/// Where the key starts in a place.
fn key_start(slot: &[u8]) -> usize {
    let tree_len = u32::from_be_bytes(slot[1..5].try_into().expect("four bytes")) as usize;
    5 + tree_len
}

/// What the cache holds at a place.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Known {
    /// A record (`None`: the database holds no such key).
    Record(Option<Vec<u8>>),
    /// Every entry whose key starts with the place's prefix, in key order.
    Scan(Vec<(Vec<u8>, Vec<u8>)>),
}

impl Known {
    fn bytes(&self) -> usize {
        match self {
            Known::Record(value) => value.as_ref().map_or(0, Vec::len),
            Known::Scan(entries) => entries
                .iter()
                .map(|(k, v)| k.len() + v.len() + SCAN_ENTRY_OVERHEAD)
                .sum(),
        }
    }
}

/// When the cache may answer.
#[derive(Clone, Copy, Debug)]
enum Validity {
    /// Always: the engine writes unfenced, as the only writer.
    Always,
    /// Until this instant: the engine's lease is surely held until then.
    Until(Instant),
}

pub(crate) struct Cache {
    inner: Mutex<Inner>,
    capacity: usize,
}

struct Inner {
    records: HashMap<Slot, Record>,
    /// The records by last use, least recent first, for eviction.
    by_use: BTreeMap<u64, Slot>,
    /// What the records cost, at most the cache's capacity.
    bytes: usize,
    /// Gives out use stamps and tickets, never the same number twice.
    counter: u64,
    /// Reads that missed and are asking the database: the ticket of the latest one per
    /// record. A write of the record takes it back.
    fills: HashMap<Slot, u64>,
    /// Writes in flight per record.
    writing: HashMap<Slot, InFlight>,
    /// Bumped by [`Cache::clear`].
    epoch: u64,
    validity: Validity,
}

/// One record or scan in the cache.
struct Record {
    value: Known,
    used: u64,
    cost: usize,
}

struct InFlight {
    writes: usize,
    /// Another write of the record started while one was in flight.
    overlapped: bool,
}

/// What a read finds in the cache.
pub(crate) enum Lookup<'a> {
    /// The record or scan as the database holds it.
    Hit(Known),
    /// Not known here: read the database, then [`Fill::complete`].
    Miss(Fill<'a>),
}

/// A read that missed; gives back its ticket when dropped.
pub(crate) struct Fill<'a> {
    cache: &'a Cache,
    slot: Slot,
    /// `None` when the cache may not answer now: nothing is put in.
    ticket: Option<(u64, u64)>,
}

/// Writes in flight: the records they touch, left out of the cache until they end.
pub(crate) struct Writes<'a> {
    cache: &'a Cache,
    slots: Vec<Slot>,
    epoch: u64,
    done: bool,
}

impl Cache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                records: HashMap::new(),
                by_use: BTreeMap::new(),
                bytes: 0,
                counter: 0,
                fills: HashMap::new(),
                writing: HashMap::new(),
                epoch: 0,
                validity: Validity::Always,
            }),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The record at `tree`/`key` if the cache knows it and may answer now.
    pub(crate) fn lookup(&self, tree: &str, key: &[u8]) -> Lookup<'_> {
        self.lookup_at(slot(tree, key))
    }

    /// The entries of `tree` under `prefix` if the cache knows them and may answer now.
    pub(crate) fn lookup_scan(&self, tree: &str, prefix: &[u8]) -> Lookup<'_> {
        self.lookup_at(place(SCAN, tree, prefix))
    }

    fn lookup_at(&self, slot: Slot) -> Lookup<'_> {
        let mut inner = self.lock();
        if !inner.answers() {
            return Lookup::Miss(Fill {
                cache: self,
                slot,
                ticket: None,
            });
        }
        if let Some(value) = inner.touch(&slot) {
            return Lookup::Hit(value);
        }
        let ticket = inner.next();
        inner.fills.insert(slot.clone(), ticket);
        let epoch = inner.epoch;
        Lookup::Miss(Fill {
            cache: self,
            slot,
            ticket: Some((epoch, ticket)),
        })
    }

    /// Starts writes of these records (each once): they leave the cache until
    /// [`Writes::committed`], or for good if the writes fail.
    pub(crate) fn writing(&self, slots: Vec<Slot>) -> Writes<'_> {
        let mut inner = self.lock();
        for slot in &slots {
            inner.forget(slot);
            let flight = inner.writing.entry(slot.clone()).or_insert(InFlight {
                writes: 0,
                overlapped: false,
            });
            flight.overlapped |= flight.writes > 0;
            flight.writes += 1;
        }
        Writes {
            cache: self,
            slots,
            epoch: inner.epoch,
            done: false,
        }
    }

    /// Forgets every record and every read and write in flight: the database may have
    /// changed behind this engine's back.
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.records.clear();
        inner.by_use.clear();
        inner.fills.clear();
        inner.bytes = 0;
    }

    /// From now on the cache answers until `deadline` (extended by the next call).
    pub(crate) fn valid_until(&self, deadline: Instant) {
        self.lock().validity = Validity::Until(deadline);
    }

    /// The cache answers no more until [`Cache::valid_until`] is called again.
    pub(crate) fn suspend(&self) {
        self.lock().validity = Validity::Until(Instant::now());
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Puts a record or scan in, dropping the least recently used ones to make room.
    fn admit(&self, inner: &mut Inner, slot: Slot, value: Known) {
        inner.remove(&slot);
        let cost = 2 * slot.len() + value.bytes() + ENTRY_OVERHEAD;
        if cost > self.capacity / 16 {
            return;
        }
        while inner.bytes + cost > self.capacity {
            let Some((_, oldest)) = inner.by_use.pop_first() else {
                break;
            };
            if let Some(r) = inner.records.remove(&oldest) {
                inner.bytes -= r.cost;
            }
        }
        let used = inner.next();
        inner.by_use.insert(used, slot.clone());
        inner.records.insert(slot, Record { value, used, cost });
        inner.bytes += cost;
    }
}

impl Inner {
    fn answers(&self) -> bool {
        match self.validity {
            Validity::Always => true,
            Validity::Until(deadline) => Instant::now() < deadline,
        }
    }

    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// What is kept at `slot`, now the most recently used; `None` if nothing.
    fn touch(&mut self, slot: &[u8]) -> Option<Known> {
        let used = self.next();
        let record = self.records.get_mut(slot)?;
        self.by_use.remove(&record.used);
        record.used = used;
        self.by_use.insert(used, slot.to_vec());
        Some(record.value.clone())
    }

    fn remove(&mut self, slot: &[u8]) {
        if let Some(r) = self.records.remove(slot) {
            self.by_use.remove(&r.used);
            self.bytes -= r.cost;
        }
    }

    /// Drops the record at `slot` (a record's place) and every scan that sees it, and
    /// takes back the tickets of reads of them in flight.
    fn forget(&mut self, slot: &[u8]) {
        self.remove(slot);
        self.fills.remove(slot);
        let mut scan = slot.to_vec();
        scan[0] = SCAN;
        for end in key_start(slot)..=scan.len() {
            self.remove(&scan[..end]);
            self.fills.remove(&scan[..end]);
        }
    }

    /// Whether a write in flight touches what `slot` holds: the record, or a record
    /// under the scan's prefix.
    fn written(&self, slot: &[u8]) -> bool {
        if slot[0] == RECORD {
            return self.writing.contains_key(slot);
        }
        let mut record = slot.to_vec();
        record[0] = RECORD;
        self.writing.keys().any(|w| w.starts_with(&record))
    }
}

impl Fill<'_> {
    /// Puts what the database answered in, unless a write of the record (of a record
    /// under the prefix) or a clear came in between.
    pub(crate) fn complete(mut self, value: Known) {
        let Some((epoch, ticket)) = self.ticket.take() else {
            return;
        };
        let mut inner = self.cache.lock();
        if inner.fills.get(&self.slot) != Some(&ticket) {
            return;
        }
        inner.fills.remove(&self.slot);
        if inner.epoch == epoch && inner.answers() && !inner.written(&self.slot) {
            let slot = std::mem::take(&mut self.slot);
            self.cache.admit(&mut inner, slot, value);
        }
    }
}

impl Drop for Fill<'_> {
    fn drop(&mut self) {
        if let Some((_, ticket)) = self.ticket {
            let mut inner = self.cache.lock();
            if inner.fills.get(&self.slot) == Some(&ticket) {
                inner.fills.remove(&self.slot);
            }
        }
    }
}

impl Writes<'_> {
    /// The writes committed, leaving these values (`None`: deleted), one per record in
    /// the order given to [`Cache::writing`].
    pub(crate) fn committed(mut self, values: Vec<Option<Vec<u8>>>) {
        self.done = true;
        let mut inner = self.cache.lock();
        let slots = std::mem::take(&mut self.slots);
        for (slot, value) in slots.into_iter().zip(values) {
            let alone = inner.end(&slot);
            inner.forget(&slot);
            if alone && inner.epoch == self.epoch && inner.answers() {
                self.cache.admit(&mut inner, slot, Known::Record(value));
            }
        }
    }
}

impl Inner {
    /// Ends one write of `slot`; whether no other write of it overlapped this one.
    fn end(&mut self, slot: &[u8]) -> bool {
        let Some(flight) = self.writing.get_mut(slot) else {
            return false;
        };
        let alone = flight.writes == 1 && !flight.overlapped;
        flight.writes -= 1;
        if flight.writes == 0 {
            self.writing.remove(slot);
        }
        alone
    }
}

impl Drop for Writes<'_> {
    /// Writes that did not report a commit: their outcome is unknown, so the records
    /// stay out of the cache.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut inner = self.cache.lock();
        for slot in std::mem::take(&mut self.slots) {
            inner.end(&slot);
            inner.forget(&slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(cache: &Cache, key: &[u8]) -> Option<Option<Vec<u8>>> {
        match cache.lookup("t", key) {
            Lookup::Hit(Known::Record(v)) => Some(v),
            Lookup::Hit(other) => panic!("{other:?} for a record"),
            Lookup::Miss(_) => None,
        }
    }

    fn read(cache: &Cache, key: &[u8], value: Option<&[u8]>) {
        match cache.lookup("t", key) {
            Lookup::Miss(fill) => fill.complete(Known::Record(value.map(<[u8]>::to_vec))),
            Lookup::Hit(_) => panic!("{key:?} was cached already"),
        }
    }

    fn scanned(cache: &Cache, prefix: &[u8]) -> bool {
        matches!(cache.lookup_scan("t", prefix), Lookup::Hit(Known::Scan(_)))
    }

    fn scan(cache: &Cache, prefix: &[u8]) {
        match cache.lookup_scan("t", prefix) {
            Lookup::Miss(fill) => fill.complete(Known::Scan(Vec::new())),
            Lookup::Hit(_) => panic!("{prefix:?} was cached already"),
        }
    }

    fn cost(key: &[u8], value: usize) -> usize {
        2 * slot("t", key).len() + value + ENTRY_OVERHEAD
    }

    #[test]
    fn the_bound_in_bytes_drops_the_least_recently_used_first() {
        let key = |i: usize| format!("k{i:02}").into_bytes();
        let one = cost(&key(0), 1000);
        // Room for 16 records of this size, not 17.
        let cache = Cache::new(16 * one + one / 2);
        for i in 0..16 {
            read(&cache, &key(i), Some(&[1; 1000]));
        }
        assert_eq!(cache.bytes(), 16 * one);
        // k00 used again: k01 is now the least recently used.
        assert!(hit(&cache, &key(0)).is_some());
        read(&cache, &key(16), Some(&[1; 1000]));
        assert_eq!(cache.bytes(), 16 * one, "one record in, one out");
        assert!(
            hit(&cache, &key(1)).is_none(),
            "the least recently used goes"
        );
        for i in (0..17).filter(|&i| i != 1) {
            assert_eq!(
                hit(&cache, &key(i)),
                Some(Some(vec![1; 1000])),
                "k{i:02} stays"
            );
        }
    }

    #[test]
    fn a_record_larger_than_a_sixteenth_of_the_bound_is_not_kept() {
        let cache = Cache::new(16 * cost(b"k", 100));
        read(&cache, b"big", Some(&[0; 101]));
        assert!(hit(&cache, b"big").is_none());
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn absent_records_are_kept_as_absent() {
        let cache = Cache::new(DEFAULT_CACHE_BYTES);
        read(&cache, b"k", None);
        assert_eq!(hit(&cache, b"k"), Some(None));
    }

    #[test]
    fn a_read_that_raced_a_write_does_not_install_what_it_read() {
        let cache = Cache::new(DEFAULT_CACHE_BYTES);
        let Lookup::Miss(fill) = cache.lookup("t", b"k") else {
            panic!("empty cache")
        };
        let write = cache.writing(vec![slot("t", b"k")]);
        write.committed(vec![Some(b"new".to_vec())]);
        // The read saw the database before the write committed.
        fill.complete(Known::Record(Some(b"old".to_vec())));
        assert_eq!(hit(&cache, b"k"), Some(Some(b"new".to_vec())));
    }

    #[test]
    fn a_failed_write_leaves_the_record_out_and_overlapping_writes_install_nothing() {
        let cache = Cache::new(DEFAULT_CACHE_BYTES);
        read(&cache, b"k", Some(b"before"));
        drop(cache.writing(vec![slot("t", b"k")]));
        assert!(
            hit(&cache, b"k").is_none(),
            "an unknown outcome is not cached"
        );
        let first = cache.writing(vec![slot("t", b"k")]);
        let second = cache.writing(vec![slot("t", b"k")]);
        second.committed(vec![Some(b"2".to_vec())]);
        first.committed(vec![Some(b"1".to_vec())]);
        assert!(
            hit(&cache, b"k").is_none(),
            "either may have committed last"
        );
    }

    #[test]
    fn nothing_from_before_a_clear_is_put_in_after_it() {
        let cache = Cache::new(DEFAULT_CACHE_BYTES);
        read(&cache, b"a", Some(b"1"));
        let Lookup::Miss(fill) = cache.lookup("t", b"b") else {
            panic!("empty")
        };
        let write = cache.writing(vec![slot("t", b"c")]);
        cache.clear();
        fill.complete(Known::Record(Some(b"2".to_vec())));
        write.committed(vec![Some(b"3".to_vec())]);
        for k in [b"a", b"b", b"c"] {
            assert!(hit(&cache, k).is_none(), "{k:?}");
        }
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn a_suspended_cache_answers_nothing_until_valid_again() {
        let cache = Cache::new(DEFAULT_CACHE_BYTES);
        read(&cache, b"k", Some(b"v"));
        cache.suspend();
        assert!(hit(&cache, b"k").is_none());
        cache.valid_until(Instant::now() + std::time::Duration::from_secs(3600));
        assert_eq!(hit(&cache, b"k"), Some(Some(b"v".to_vec())));
    }

    #[test]
    fn a_write_drops_every_scan_whose_prefix_its_key_starts_with() {
        let cache = Cache::new(DEFAULT_CACHE_BYTES);
        for prefix in [&b""[..], b"n/", b"n/a", b"n/a/1", b"n/b", b"m"] {
            scan(&cache, prefix);
        }
        drop(cache.writing(vec![slot("t", b"n/a/1")]));
        for gone in [&b""[..], b"n/", b"n/a", b"n/a/1"] {
            assert!(!scanned(&cache, gone), "{gone:?} sees the write");
        }
        for kept in [&b"n/b"[..], b"m"] {
            assert!(scanned(&cache, kept), "{kept:?} does not");
        }
        // Another tree's scans are apart.
        let Lookup::Miss(fill) = cache.lookup_scan("u", b"n/") else {
            panic!("empty")
        };
        fill.complete(Known::Scan(Vec::new()));
        drop(cache.writing(vec![slot("t", b"n/x")]));
        assert!(matches!(cache.lookup_scan("u", b"n/"), Lookup::Hit(_)));
    }

    #[test]
    fn a_scan_that_raced_a_write_under_its_prefix_does_not_install_what_it_read() {
        let cache = Cache::new(DEFAULT_CACHE_BYTES);
        let Lookup::Miss(before) = cache.lookup_scan("t", b"n/") else {
            panic!("empty")
        };
        let write = cache.writing(vec![slot("t", b"n/1")]);
        let Lookup::Miss(during) = cache.lookup_scan("t", b"n/") else {
            panic!("dropped")
        };
        during.complete(Known::Scan(Vec::new()));
        assert!(
            !scanned(&cache, b"n/"),
            "read while the write was in flight"
        );
        write.committed(vec![Some(b"v".to_vec())]);
        before.complete(Known::Scan(Vec::new()));
        assert!(!scanned(&cache, b"n/"), "started before the write");
        scan(&cache, b"n/");
        assert!(scanned(&cache, b"n/"));
    }
}
