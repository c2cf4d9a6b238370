//! The stored side of [`Contracts`]: negotiations and the agreement index in storage,
//! the set of unfinished negotiations the poller takes up, the claims that keep two
//! steps off one record, the caches of compiled agreement policies and fetched offers,
//! and the one commit that stores a record together with its audit entries.

use std::collections::HashSet;
use std::sync::Arc;

use liutong_policy::{CompiledPolicy, Constraint, LeftOperand, Policy};

use crate::audit::log::Event;
use crate::identity::ParticipantId;
use crate::storage::{Storage, StorageError, Write};
use liutong_proto::v1::GetOfferRequest;
use liutong_proto::v1::catalog_client::CatalogClient;

use super::agreement::{Agreement, AgreementError, Role};
use super::cache::{CachedPolicy, SeenOffer};
use super::consumer::analysis_context;
use super::contracts::Contracts;
use super::negotiation::{ContractError, Negotiation, change};
use super::state::{NegotiationEvent, NegotiationStatus};
use crate::recovery::Claim;

const NEGOTIATIONS: &str = "negotiations";
pub(super) const NONCES: &str = "nonces";
/// Agreement ID → negotiation ID, so transfers find their agreement without a scan.
const AGREEMENTS: &str = "agreements";
/// Creation time (8 bytes, big-endian, sign bit flipped) then negotiation ID → the
/// ID: the order negotiations are listed in, read page by page.
const BY_CREATION: &str = "negotiations_by_creation";
/// Which indexes over the negotiations are complete ([`BY_CREATION_BUILT`]); a node
/// whose database predates an index builds it on the first listing.
const INDEXES: &str = "negotiation_indexes";
const BY_CREATION_BUILT: &[u8] = b"by_creation";
/// Peer, offer ID and agreement ID (see [`counted_key`]) → negotiation ID: the
/// FINALIZED agreements this node made as provider whose policy counts uses. Only such
/// an agreement can have spent its use count, so the check before each new agreement
/// reads these entries of the member on the offer and none of its other history.
/// Written in the same commit as the FINALIZED record.
const COUNTED: &str = "agreements_counted";
const COUNTED_BUILT: &[u8] = b"counted";
/// Negotiation ID → nothing, for each unfinished negotiation
/// (`Negotiation::unfinished`): the first pass after a start reads these records and
/// none of the finished ones, however many are kept. Written before the record that
/// leaves a negotiation unfinished and removed after the one that finishes it, so an
/// entry may name a finished negotiation (a crash in between) but an unfinished one
/// always has its entry. Built once for a database written before it.
const UNFINISHED: &str = "negotiations_unfinished";
const UNFINISHED_BUILT: &[u8] = b"unfinished";

/// How many compiled agreement policies are kept (all are dropped when more come).
const POLICIES_KEPT: usize = 4096;

/// How long a fetched offer is reused, and how many are kept.
const OFFER_REUSE: std::time::Duration = std::time::Duration::from_secs(60);
const OFFERS_KEPT: usize = 1024;

impl Contracts {
    /// This agreement's policy, compiled: by the provider under its own guardrails, as
    /// it signed it; by the consumer as it checked it when it countersigned
    /// (`analysis_context`). Compiled once per agreement and kept.
    pub fn compiled_policy(
        &self,
        agreement: &Agreement,
    ) -> Result<Arc<CompiledPolicy>, Box<liutong_policy::PolicyError>> {
        let cache = &self.policies;
        {
            let cached = cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cached.get(&agreement.agreement_id)
                && c.classification == agreement.classification
                && c.source == agreement.policy
            {
                return Ok(c.compiled.clone());
            }
        }
        let compile_context = if agreement.provider == self.identity.membership.participant_id {
            self.catalog.compile_context(agreement.classification)
        } else {
            analysis_context(agreement.classification)
        };
        let compiled = Arc::new(liutong_policy::compile(
            Policy::from_odrl_value(&agreement.policy)?,
            &compile_context,
        )?);
        let mut cached = cache.lock().unwrap_or_else(|p| p.into_inner());
        if cached.len() >= POLICIES_KEPT {
            cached.clear();
        }
        cached.insert(
            agreement.agreement_id.clone(),
            CachedPolicy {
                source: agreement.policy.clone(),
                classification: agreement.classification,
                compiled: compiled.clone(),
            },
        );
        Ok(compiled)
    }

    /// Offer `offer_id` at `address`, fetched within [`OFFER_REUSE`] or now.
    pub(super) async fn offer(
        &self,
        channel: &crate::telemetry::PeerChannel,
        address: &str,
        offer_id: &str,
    ) -> Result<SeenOffer, ContractError> {
        let key = (address.to_owned(), offer_id.to_owned());
        {
            let offers = self.offers.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(seen) = offers.get(&key)
                && seen.fetched.elapsed() < OFFER_REUSE
            {
                return Ok(seen.clone());
            }
        }
        let offer = CatalogClient::new(channel.clone())
            .get(GetOfferRequest {
                offer_id: offer_id.to_owned(),
            })
            .await
            .map_err(|s| ContractError::Peer(s.into()))?
            .into_inner();
        let seen = SeenOffer {
            owner: ParticipantId::parse(&offer.owner)
                .map_err(|e| ContractError::Invalid(format!("the offer's owner: {e}")))?,
            policy: serde_json::from_str(&offer.policy_odrl_json).ok(),
            classification: offer.classification.parse().ok(),
            fetched: std::time::Instant::now(),
        };
        let mut offers = self.offers.lock().unwrap_or_else(|p| p.into_inner());
        if offers.len() >= OFFERS_KEPT {
            offers.retain(|_, o| o.fetched.elapsed() < OFFER_REUSE);
            if offers.len() >= OFFERS_KEPT {
                offers.clear();
            }
        }
        offers.insert(key, seen.clone());
        Ok(seen)
    }

    /// The IDs of the unfinished negotiations (`Negotiation::unfinished`). The
    /// first call reads the records the index of unfinished negotiations names (after
    /// building it, once, for a database written before it); later ones read nothing.
    pub async fn waiting(&self) -> Result<Vec<String>, ContractError> {
        let loaded = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if !loaded {
            Self::index_unfinished(self.storage.as_ref()).await?;
        }
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if waiting.is_none() {
            // Under the lock: a commit that lands meanwhile updates the set after this
            // read, in [`stored`](Self::stored).
            *waiting = Some(indexed_unfinished(self.storage.as_ref())?);
        }
        let mut ids: Vec<String> = waiting.iter().flatten().cloned().collect();
        ids.sort();
        Ok(ids)
    }

    /// Keeps [`waiting`](Self::waiting) up to date with `n` as just stored.
    pub(super) fn stored(&self, n: &Negotiation) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ids) = waiting.as_mut() {
            if n.unfinished() {
                ids.insert(n.id.clone());
            } else {
                ids.remove(&n.id);
            }
        }
    }

    /// Claims negotiation `id` for one step that reads, decides and commits it (a
    /// request being answered, a countersignature, a retry, an expiry), so two such
    /// steps never decide on the same record at once; `None` while another holds it.
    /// Released when the claim is dropped.
    pub(crate) fn claim(&self, id: &str) -> Option<Claim> {
        self.claims.try_claim(id)
    }

    /// The claims of this node's steps, for keys other than negotiation IDs (a
    /// transfer's receipt).
    pub(crate) fn claims(&self) -> &crate::recovery::Claims {
        &self.claims
    }

    pub fn get(&self, id: &str) -> Result<Option<Negotiation>, ContractError> {
        self.storage
            .get(NEGOTIATIONS, id.as_bytes())?
            .map(|b| {
                serde_json::from_slice(&b).map_err(|e| {
                    ContractError::Invalid(format!("stored negotiation {id} is damaged: {e}"))
                })
            })
            .transpose()
    }

    pub fn list(&self) -> Result<Vec<Negotiation>, ContractError> {
        self.storage
            .scan_prefix(NEGOTIATIONS, b"")?
            .iter()
            .map(|(_, v)| {
                serde_json::from_slice(v).map_err(|e| {
                    ContractError::Invalid(format!("stored negotiation is damaged: {e}"))
                })
            })
            .collect()
    }

    /// One page of the negotiations, oldest first (by creation time, then ID): at
    /// most `limit` of those after the position `after` (from an earlier page's
    /// `next`), and the position of the last one when more follow.
    pub async fn page(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<NegotiationPage, ContractError> {
        self.index_creation_times().await?;
        let limit = limit.max(1);
        let entries = self.storage.scan_page(BY_CREATION, b"", after, limit + 1)?;
        let next = (entries.len() > limit).then(|| entries[limit - 1].0.clone());
        let mut negotiations = Vec::with_capacity(limit);
        for (_, id) in entries.iter().take(limit) {
            // The index is written before the record: an entry whose record a crash
            // kept from being stored names nothing yet.
            if let Some(n) = self.get(&String::from_utf8_lossy(id))? {
                negotiations.push(n);
            }
        }
        Ok(NegotiationPage { negotiations, next })
    }

    /// Fills [`BY_CREATION`] from the stored negotiations, once, for a database written
    /// before it existed. Every later commit writes its own entry.
    async fn index_creation_times(&self) -> Result<(), ContractError> {
        let mut built = self.creation_index.lock().await;
        if *built {
            return Ok(());
        }
        if self.storage.get(INDEXES, BY_CREATION_BUILT)?.is_none() {
            let writes = self
                .list()?
                .iter()
                .map(|n| Write::Put(creation_key(n), n.id.as_bytes().to_vec()))
                .collect();
            self.storage.apply(BY_CREATION, writes)?;
            // The entries are durable before the mark that says they are complete.
            self.storage.flush().await?;
            self.storage
                .put_durable(INDEXES, BY_CREATION_BUILT, b"1")
                .await?;
        }
        *built = true;
        Ok(())
    }

    /// The writes that store `n` as [`Contracts`] commits them, for filling a stopped
    /// node's storage in bulk (tests of large listings); `Storage::apply` each to its
    /// tree, in order, then flush.
    pub fn record_writes(n: &Negotiation) -> Vec<(&'static str, Write)> {
        Self::writes(n)
    }

    /// The negotiation whose agreement has this ID.
    pub fn by_agreement(&self, agreement_id: &str) -> Result<Option<Negotiation>, ContractError> {
        let Some(id) = self.storage.get(AGREEMENTS, agreement_id.as_bytes())? else {
            return Ok(None);
        };
        let id = String::from_utf8_lossy(&id);
        // The index is written before the record, so it may name a negotiation whose
        // stored record does not carry the agreement yet (a crash in between).
        Ok(self
            .get(&id)?
            .filter(|n| n.agreement_id.as_deref() == Some(agreement_id)))
    }

    /// The FINALIZED negotiation of this node's `role` whose agreement has this ID.
    pub fn finalized(&self, role: Role, agreement_id: &str) -> Result<Negotiation, AgreementError> {
        self.by_agreement(agreement_id)
            .map_err(|e| match e {
                ContractError::Storage(s) => AgreementError::Storage(s),
                other => AgreementError::Damaged(other.to_string()),
            })?
            .filter(|n| n.role == role && n.state == NegotiationStatus::Finalized)
            .ok_or_else(|| AgreementError::Unknown(agreement_id.to_owned()))
    }

    /// The writes that store `n`. The record that first carries the agreement (AGREED
    /// at the provider, VERIFIED at the consumer) is preceded by the agreement index.
    pub(super) fn writes(n: &Negotiation) -> Vec<(&'static str, Write)> {
        let mut writes = Vec::with_capacity(2);
        let first_with_agreement = match n.role {
            Role::Provider => n.state == NegotiationStatus::Agreed,
            Role::Consumer => n.state == NegotiationStatus::Verified,
        };
        if let Some(agreement_id) = n.agreement_id.as_ref().filter(|_| first_with_agreement) {
            writes.push((
                AGREEMENTS,
                Write::Put(agreement_id.as_bytes().to_vec(), n.id.as_bytes().to_vec()),
            ));
        }
        writes.push((
            BY_CREATION,
            Write::Put(creation_key(n), n.id.as_bytes().to_vec()),
        ));
        if counts_uses(n) {
            writes.push((
                COUNTED,
                Write::Put(counted_key(n), n.id.as_bytes().to_vec()),
            ));
        }
        let unfinished = n.unfinished();
        if unfinished {
            writes.push((UNFINISHED, Write::Put(n.id.as_bytes().to_vec(), Vec::new())));
        }
        writes.push((
            NEGOTIATIONS,
            Write::Put(
                n.id.as_bytes().to_vec(),
                serde_json::to_vec(n).expect("negotiations serialize"),
            ),
        ));
        if !unfinished {
            writes.push((UNFINISHED, Write::Delete(n.id.as_bytes().to_vec())));
        }
        writes
    }
}

/// How many entries [`for_each_page`] reads at a time.
const STATE_PAGE: usize = 1024;

/// The part of a stored negotiation that tells whether it is unfinished.
#[derive(serde::Deserialize)]
struct Progress {
    role: Role,
    state: NegotiationStatus,
}

/// Whether the stored negotiation `value` (of ID `id`) is unfinished, read only for its
/// role and state.
fn unfinished_record(id: &str, value: &[u8]) -> Result<bool, ContractError> {
    let p: Progress = serde_json::from_slice(value)
        .map_err(|e| ContractError::Invalid(format!("stored negotiation {id} is damaged: {e}")))?;
    Ok(super::negotiation::unfinished(p.role, p.state))
}

/// The IDs of the unfinished negotiations in `storage`, from every record. The records
/// are read a page at a time and each only for its role and state, so a node holding a
/// million negotiations keeps one page of them in memory, not all of them decoded.
fn unfinished_in(storage: &dyn Storage) -> Result<HashSet<String>, ContractError> {
    let mut ids = HashSet::new();
    for_each_page(storage, NEGOTIATIONS, |key, value| {
        let id = String::from_utf8_lossy(key);
        if unfinished_record(&id, value)? {
            ids.insert(id.into_owned());
        }
        Ok(())
    })?;
    Ok(ids)
}

/// Calls `visit` with every key and value of `tree`, in key order, reading a page of
/// [`STATE_PAGE`] entries at a time.
fn for_each_page(
    storage: &dyn Storage,
    tree: &str,
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), ContractError>,
) -> Result<(), ContractError> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = storage.scan_page(tree, b"", after.as_deref(), STATE_PAGE)?;
        for (key, value) in &page {
            visit(key, value)?;
        }
        if page.len() < STATE_PAGE {
            return Ok(());
        }
        after = page.last().map(|(key, _)| key.clone());
    }
}

/// The IDs of the unfinished negotiations in `storage`, from the records [`UNFINISHED`]
/// names (a page of names at a time); an entry whose record is finished or missing (a
/// crash between the two writes) is left out and removed.
fn indexed_unfinished(storage: &dyn Storage) -> Result<HashSet<String>, ContractError> {
    let mut ids = HashSet::new();
    let mut stale = Vec::new();
    for_each_page(storage, UNFINISHED, |key, _| {
        let id = String::from_utf8_lossy(key);
        match storage.get(NEGOTIATIONS, key)? {
            Some(value) if unfinished_record(&id, &value)? => {
                ids.insert(id.into_owned());
            }
            _ => stale.push(Write::Delete(key.to_vec())),
        }
        Ok(())
    })?;
    if !stale.is_empty() {
        // Durable with the next flush; until then a restart finds them again.
        storage.apply(UNFINISHED, stale)?;
    }
    Ok(ids)
}

/// One page of [`Contracts::page`].
pub struct NegotiationPage {
    pub negotiations: Vec<Negotiation>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Vec<u8>>,
}

/// The start of the keys in [`COUNTED`] of the agreements with `peer` on `offer_id`.
/// The parts are NUL-separated: no ID holds a NUL, so no prefix of one member's or
/// offer's keys is another's.
fn counted_prefix(peer: &str, offer_id: &str) -> Vec<u8> {
    [peer.as_bytes(), b"\0", offer_id.as_bytes(), b"\0"].concat()
}

/// `n`'s key in [`COUNTED`].
fn counted_key(n: &Negotiation) -> Vec<u8> {
    let mut key = counted_prefix(n.peer.as_str(), &n.offer_id);
    key.extend_from_slice(n.agreement_id.as_deref().unwrap_or_default().as_bytes());
    key
}

/// Whether `n` belongs in [`COUNTED`]: a FINALIZED agreement made as provider whose
/// policy has a `count` constraint. An agreement whose policy cannot be read is left
/// out, as the spent-count check skips it.
fn counts_uses(n: &Negotiation) -> bool {
    n.role == Role::Provider
        && n.state == NegotiationStatus::Finalized
        && n.agreement
            .as_ref()
            .is_some_and(|e| mentions_count(&e.payload))
        && n.agreement_content()
            .and_then(|a| Policy::from_odrl_value(&a.policy).ok())
            .is_some_and(|p| policy_counts_uses(&p))
}

/// Whether an agreement's payload holds the word `count`, which every spelling of the
/// use-count operand does: one that does not is not parsed to find out. The payload is
/// this provider's own JSON, which writes letters as they are, never escaped.
fn mentions_count(payload: &[u8]) -> bool {
    payload.windows(5).any(|w| w == b"count")
}

/// Whether a rule of `policy` compares the number of uses: the only fact of an
/// evaluation that a use changes.
pub(super) fn policy_counts_uses(policy: &Policy) -> bool {
    fn counts(c: &Constraint) -> bool {
        match c {
            Constraint::Atomic(a) => a.left == LeftOperand::Count,
            Constraint::Logical(_, inner) => inner.iter().any(counts),
        }
    }
    policy
        .permissions
        .iter()
        .chain(&policy.prohibitions)
        .flat_map(|r| &r.constraints)
        .any(counts)
}

impl Contracts {
    /// The IDs of the negotiations of the FINALIZED agreements this node made as
    /// provider with `peer` on `offer_id` whose policy counts uses, read from `storage`
    /// (the index [`Contracts::record_writes`] keeps). The index must be complete: see
    /// [`Contracts::index_counted_agreements`].
    pub fn counted_agreements(
        storage: &dyn Storage,
        peer: &ParticipantId,
        offer_id: &str,
    ) -> Result<Vec<String>, StorageError> {
        Ok(storage
            .scan_prefix(COUNTED, &counted_prefix(peer.as_str(), offer_id))?
            .into_iter()
            .map(|(_, id)| String::from_utf8_lossy(&id).into_owned())
            .collect())
    }

    /// Fills the index of [`counted_agreements`](Self::counted_agreements) from the
    /// negotiations stored in `storage`, for a database written before it, reading them
    /// a batch at a time; does nothing once the index is marked complete. Returns
    /// whether it built the index. Two builds at once write the same entries.
    pub async fn index_counted_agreements(storage: &dyn Storage) -> Result<bool, ContractError> {
        if storage.get(INDEXES, COUNTED_BUILT)?.is_some() {
            return Ok(false);
        }
        let mut writes = Vec::new();
        for_each_page(storage, NEGOTIATIONS, |key, value| {
            let n: Negotiation = serde_json::from_slice(value).map_err(|e| {
                ContractError::Invalid(format!(
                    "stored negotiation {} is damaged: {e}",
                    String::from_utf8_lossy(key)
                ))
            })?;
            if counts_uses(&n) {
                writes.push(Write::Put(counted_key(&n), n.id.into_bytes()));
            }
            // Written a page's worth at a time: memory stays bounded however many count.
            if writes.len() >= STATE_PAGE {
                storage.apply(COUNTED, std::mem::take(&mut writes))?;
            }
            Ok(())
        })?;
        if !writes.is_empty() {
            storage.apply(COUNTED, writes)?;
        }
        // The entries are durable before the mark that says they are complete.
        storage.flush().await?;
        storage.put_durable(INDEXES, COUNTED_BUILT, b"1").await?;
        Ok(true)
    }

    /// Fills the index of unfinished negotiations from every stored negotiation, for a
    /// database written before it; does nothing once it is marked complete. Returns
    /// whether it built the index. Commits made meanwhile write their own entries; one
    /// that finishes a negotiation while the build runs may leave its entry, which the
    /// first read of the index removes.
    pub async fn index_unfinished(storage: &dyn Storage) -> Result<bool, ContractError> {
        if storage.get(INDEXES, UNFINISHED_BUILT)?.is_some() {
            return Ok(false);
        }
        let writes: Vec<Write> = unfinished_in(storage)?
            .into_iter()
            .map(|id| Write::Put(id.into_bytes(), Vec::new()))
            .collect();
        if !writes.is_empty() {
            storage.apply(UNFINISHED, writes)?;
        }
        // The entries are durable before the mark that says they are complete.
        storage.flush().await?;
        storage.put_durable(INDEXES, UNFINISHED_BUILT, b"1").await?;
        Ok(true)
    }

    /// The negotiations of the FINALIZED agreements this node made as provider with
    /// `peer` on `offer_id` whose policy counts uses (the index built first, once, for
    /// a database written before it).
    pub(super) async fn counted_on_offer(
        &self,
        peer: &ParticipantId,
        offer_id: &str,
    ) -> Result<Vec<Negotiation>, ContractError> {
        if self.storage.get(INDEXES, COUNTED_BUILT)?.is_none() {
            // One build at a time: the others find it marked complete.
            let _building = self.counted_index.lock().await;
            Self::index_counted_agreements(self.storage.as_ref()).await?;
        }
        let mut out = Vec::new();
        for id in Self::counted_agreements(self.storage.as_ref(), peer, offer_id)? {
            // The entry is written with the record: one names a stored negotiation,
            // checked again all the same.
            if let Some(n) = self.get(&id)?
                && n.role == Role::Provider
                && n.peer == *peer
                && n.offer_id == offer_id
                && n.state == NegotiationStatus::Finalized
            {
                out.push(n);
            }
        }
        Ok(out)
    }
}

/// `n`'s key in [`BY_CREATION`]: its creation time, ordered as unsigned bytes, then its ID.
fn creation_key(n: &Negotiation) -> Vec<u8> {
    let mut key = ((n.created_at as u64) ^ (1 << 63)).to_be_bytes().to_vec();
    key.extend_from_slice(n.id.as_bytes());
    key
}

impl Contracts {
    /// Moves a negotiation to the state `step` leads to: stored and logged, durably,
    /// before anyone is told.
    pub(super) async fn transition(
        &self,
        n: &mut Negotiation,
        step: NegotiationEvent,
        reason: &str,
    ) -> Result<(), ContractError> {
        let change = change(n, step, reason)?;
        self.commit(n, vec![change]).await
    }

    /// Stores `n` together with the audit events that record how it got there (entries
    /// first), durable when this returns.
    pub(super) async fn commit(
        &self,
        n: &Negotiation,
        events: Vec<Event>,
    ) -> Result<(), ContractError> {
        self.audit
            .append_with(&events, Contracts::writes(n))
            .await
            .map_err(|e| ContractError::Audit(e.to_string()))?;
        self.stored(n);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use super::*;
    use crate::identity::Envelope;
    use crate::storage::{Entries, SledStorage, Storage, StorageError, blobs};

    /// The node's sled storage, remembering the most entries one read returned and
    /// counting the stored negotiations read one by one.
    struct Widest {
        inner: Arc<SledStorage>,
        widest: AtomicUsize,
        records_read: AtomicUsize,
    }

    impl Widest {
        fn new() -> Self {
            Self {
                inner: SledStorage::temporary().unwrap(),
                widest: AtomicUsize::new(0),
                records_read: AtomicUsize::new(0),
            }
        }
    }

    impl Widest {
        fn saw(&self, entries: Entries) -> Entries {
            self.widest.fetch_max(entries.len(), SeqCst);
            entries
        }
    }

    impl Storage for Widest {
        fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
            if tree == NEGOTIATIONS {
                self.records_read.fetch_add(1, SeqCst);
            }
            self.inner.get(tree, key)
        }
        fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
            self.inner.put(tree, key, value)
        }
        fn delete(&self, tree: &str, key: &[u8]) -> Result<(), StorageError> {
            self.inner.delete(tree, key)
        }
        fn insert_new(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<bool, StorageError> {
            self.inner.insert_new(tree, key, value)
        }
        fn apply(&self, tree: &str, writes: Vec<Write>) -> Result<(), StorageError> {
            self.inner.apply(tree, writes)
        }
        fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Entries, StorageError> {
            Ok(self.saw(self.inner.scan_prefix(tree, prefix)?))
        }
        fn scan_page(
            &self,
            tree: &str,
            prefix: &[u8],
            after: Option<&[u8]>,
            limit: usize,
        ) -> Result<Entries, StorageError> {
            Ok(self.saw(self.inner.scan_page(tree, prefix, after, limit)?))
        }
        fn blobs(&self) -> &blobs::Blobs {
            self.inner.blobs()
        }
        fn flush(&self) -> crate::base::BoxFuture<'_, Result<(), StorageError>> {
            self.inner.flush()
        }
    }

    fn negotiation(i: usize, role: Role, state: NegotiationStatus) -> Negotiation {
        Negotiation {
            id: format!("neg-{i:05}"),
            role,
            peer: ParticipantId::parse("91110000600037341L").unwrap(),
            peer_address: "127.0.0.1:1".into(),
            offer_id: "prd-a/v1".into(),
            purpose: "urbanPlanning".into(),
            state,
            reason: String::new(),
            failed_constraints: vec![],
            request: Envelope {
                payload_type: "application/vnd.liutong.contract-request+json".into(),
                payload: vec![b'x'; 512],
                signatures: vec![],
            },
            offer_policy: None,
            offer_classification: None,
            agreement: None,
            agreement_id: None,
            created_at: i as i64,
            updated_at: i as i64,
        }
    }

    /// The first pass after a start finds every unfinished negotiation among thousands
    /// while holding one page of records at a time.
    #[test]
    fn unfinished_negotiations_are_found_a_page_at_a_time() {
        let storage = Widest::new();
        let unfinished = store_mixed(&storage, 3 * STATE_PAGE + 7, |_| true);
        assert_eq!(unfinished_in(&storage).unwrap(), unfinished);
        assert_eq!(storage.widest.load(SeqCst), STATE_PAGE);
    }

    /// Stores `count` negotiations in every state through their commit writes (those
    /// `keep` admits); returns the IDs of the unfinished ones.
    fn store_mixed(
        storage: &dyn Storage,
        count: usize,
        keep: impl Fn(&str) -> bool,
    ) -> HashSet<String> {
        let mut unfinished = HashSet::new();
        for i in 0..count {
            let (role, state) = match i % 5 {
                0 => (Role::Provider, NegotiationStatus::Agreed),
                1 => (Role::Consumer, NegotiationStatus::Requested),
                2 => (Role::Consumer, NegotiationStatus::Verified),
                3 => (Role::Provider, NegotiationStatus::Finalized),
                _ => (Role::Consumer, NegotiationStatus::Terminated),
            };
            let n = negotiation(i, role, state);
            if n.unfinished() {
                unfinished.insert(n.id.clone());
            }
            for (tree, write) in Contracts::writes(&n) {
                if keep(tree) {
                    storage.apply(tree, vec![write]).unwrap();
                }
            }
        }
        unfinished
    }

    /// After a start, the unfinished negotiations are found from their index: only
    /// their own records are read, and a negotiation that finishes drops out of it.
    #[tokio::test]
    async fn the_first_pass_reads_only_the_unfinished_records() {
        let storage = Widest::new();
        assert!(Contracts::index_unfinished(&storage).await.unwrap());
        let mut unfinished = store_mixed(&storage, 2 * STATE_PAGE + 3, |_| true);
        let finished = negotiation(0, Role::Provider, NegotiationStatus::Finalized);
        assert!(unfinished.remove(&finished.id));
        for (tree, write) in Contracts::writes(&finished) {
            storage.apply(tree, vec![write]).unwrap();
        }
        storage.widest.store(0, SeqCst);
        assert_eq!(indexed_unfinished(&storage).unwrap(), unfinished);
        assert_eq!(storage.records_read.load(SeqCst), unfinished.len());
        assert_eq!(storage.widest.load(SeqCst), STATE_PAGE);
        assert!(!Contracts::index_unfinished(&storage).await.unwrap());
    }

    /// A database written before the index gets it built once from every record; an
    /// entry whose record is finished (a crash between the two writes) is left out of
    /// the next read and removed.
    #[tokio::test]
    async fn the_unfinished_index_is_built_once_and_stale_entries_go() {
        let storage = Widest::new();
        let unfinished = store_mixed(&storage, STATE_PAGE + 9, |tree| tree != UNFINISHED);
        assert!(storage.scan_prefix(UNFINISHED, b"").unwrap().is_empty());
        assert!(Contracts::index_unfinished(&storage).await.unwrap());
        assert!(!Contracts::index_unfinished(&storage).await.unwrap());
        assert_eq!(indexed_unfinished(&storage).unwrap(), unfinished);

        let finished = negotiation(3, Role::Provider, NegotiationStatus::Finalized);
        storage
            .put(UNFINISHED, finished.id.as_bytes(), b"")
            .unwrap();
        storage.put(UNFINISHED, b"neg-missing", b"").unwrap();
        assert_eq!(indexed_unfinished(&storage).unwrap(), unfinished);
        let left = storage.scan_prefix(UNFINISHED, b"").unwrap();
        assert_eq!(left.len(), unfinished.len());
        assert!(
            left.iter()
                .all(|(id, _)| unfinished.contains(&*String::from_utf8_lossy(id)))
        );
    }
}
