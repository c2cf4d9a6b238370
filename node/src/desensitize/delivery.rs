//! The provider's masked delivery of one agreement.
//!
//! When the agreement's policy carries mask duties, the provider masks the product
//! once per agreement, stores the masked bytes in a payload file of their own (cut into
//! chunks of the product's chunk size), records their SHA-256 and the rules applied in
//! the database, and delivers those: the signed
//! manifest covers the delivered bytes, and a resumed pull reads the same chunks.
//! The masked form is also deterministic (same product, rules and key), so producing
//! it again gives the same bytes.
//!
//! The masked bytes live only as long as the consumer may hold them: when the agreement
//! is revoked, or the consumer's signed deletion receipt says its copy is gone, the
//! provider records the removal ([`removal`], committed with that step's audit entry)
//! and then deletes the payload file ([`remove_chunks`]). From then on the delivery is refused
//! with the reason; a removal cut short by a crash is finished at the next start
//! ([`finish_removals`]). The record of what was delivered (hashes, rules) stays, so a
//! late transfer receipt is still checked against the masked bytes.
//!
//! Why a payload file and not database values: sled keeps a deleted value's bytes in
//! its log segments until it happens to rewrite them, so masked personal data would
//! outlive its revocation on the provider's disk. Removing the file takes them away.
//!
//! Keyed hashes use a key of the agreement ([`crate::contract::agreement_key`]):
//! HMAC-SHA256 over the agreement ID under a random secret of this node, created once
//! and kept durably. Within one agreement a
//! value always gets the same pseudonym; across agreements the pseudonyms cannot be
//! linked without the node's secret. The same key orders the delivered records and
//! gives identifier columns without a rule their pseudonyms (see [`super::plan`]), so
//! two agreements' deliveries of one product do not line up by position or by
//! identifier.

use std::io::Write;
use std::sync::Arc;

use liutong_policy::{Duty, MaskRule};
use ring::hmac;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::DesensitizeError;
use super::plan::{self, Plan};
use super::stream::{self, AppliedRule};
use super::watermark;
use crate::catalog::product::{Format, ProductStore, ProductVersion};
use crate::contract::Agreement;
use crate::storage::{Storage, Write as StorageWrite};

/// Storage tree of the masked deliveries' records (and of the node secret, see
/// [`crate::contract::agreement_key`]).
const TREE: &str = "desensitized";

/// A masked delivery deleted (or never to be made): why and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    pub agreement_id: String,
    /// Why, for a person ("the agreement was revoked").
    pub why: String,
    /// Unix seconds.
    pub removed_at: i64,
}

/// What the signed manifest says about a desensitized delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Desensitization {
    /// The product version masked (the agreement's), named by its identifier. Never a
    /// hash of its content: an unsalted hash of the unmasked bytes lets the consumer
    /// confirm guesses of every masked value offline (for a small product, a few dozen
    /// guesses of an ID number suffice).
    #[serde(default)]
    pub source_product_id: String,
    #[serde(default)]
    pub source_version: u32,
    /// Its size in bytes (the agreement's).
    pub source_size: u64,
    /// Deliveries stored by earlier versions named the source by its hash: read, never
    /// written again.
    #[serde(default, rename = "source_sha256", skip_serializing)]
    pub legacy_source_sha256: Option<String>,
    /// The mask rules of the agreement's policy, in written order.
    pub rules: Vec<MaskRule>,
    /// What the rules did, field by field.
    pub applied: Vec<AppliedRule>,
    /// Rules that selected no field of this product, in words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmatched_rules: Vec<String>,
    /// Records delivered.
    pub records: u64,
    /// Records that could not be masked and were left out.
    pub withheld_records: u64,
    /// The released fields counted as quasi-identifiers, over which `k_anonymity` is
    /// measured.
    #[serde(default)]
    pub quasi_identifiers: Vec<String>,
    /// The size of the smallest group of delivered records sharing all their
    /// quasi-identifiers (`None` when no record is delivered).
    #[serde(default)]
    pub k_anonymity: Option<u64>,
    /// The minimum k the policy's `kAnonymity` duty asks for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_k: Option<u32>,
    /// Records withheld because fewer than `required_k` records shared their
    /// quasi-identifiers.
    #[serde(default)]
    pub withheld_for_k: u64,
    /// The watermark embedded in the delivered bytes (see
    /// [`watermark`]); absent from deliveries made before marks were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<super::watermark::WatermarkSummary>,
}

impl Desensitization {
    /// The k-anonymity in words, for the audit log: "k-anonymity 5 over district,
    /// birth_date (required 5; 3 record(s) withheld)".
    pub fn k_anonymity_note(&self) -> String {
        let k = match self.k_anonymity {
            Some(k) => format!("k-anonymity {k}"),
            None => "k-anonymity n/a (no record delivered)".to_owned(),
        };
        let over = if self.quasi_identifiers.is_empty() {
            "no quasi-identifier".to_owned()
        } else {
            self.quasi_identifiers.join(", ")
        };
        match self.required_k {
            Some(r) => format!(
                "{k} over {over} (required {r}; {} record(s) withheld)",
                self.withheld_for_k
            ),
            None => format!("{k} over {over}"),
        }
    }
}

/// A masked delivery, as stored: the delivered bytes' figures and the rules applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedDelivery {
    pub sha256: String,
    pub size: u64,
    pub chunk_size: u32,
    pub chunk_hashes: Vec<String>,
    pub desensitization: Desensitization,
}

/// The mask rules among a decision's duties, in order.
pub fn mask_rules(duties: &[Duty]) -> Vec<MaskRule> {
    duties
        .iter()
        .filter_map(|d| match d {
            Duty::Mask { rules } => Some(rules.iter().cloned()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The minimum k of the `kAnonymity` duties among a decision's duties (the largest).
pub fn required_k(duties: &[Duty]) -> Option<u32> {
    duties
        .iter()
        .filter_map(|d| match d {
            Duty::KAnonymity { k } => Some(*k),
            _ => None,
        })
        .max()
}

/// The delivery of `product` under agreement `agreement_id` when `duties` include mask
/// rules or a `kAnonymity` duty, or the agreement's delivery is `derived` (then
/// watermarked, after masking): produced on the first call, read back afterwards.
/// `None` when the product's own bytes are delivered.
pub async fn delivery_for(
    storage: &Arc<dyn Storage>,
    products: &ProductStore,
    agreement_id: &str,
    product: &ProductVersion,
    duties: &[Duty],
    derived: bool,
) -> Result<Option<MaskedDelivery>, DesensitizeError> {
    let rules = mask_rules(duties);
    let min_k = required_k(duties);
    // Only an agreement whose hashes are keyed may get marked bytes: a plain one's
    // consumer checks the product's own.
    let watermark = derived && product.format != Format::Bytes;
    if rules.is_empty() && min_k.is_none() && !watermark {
        return Ok(None);
    }
    // Publishing refuses such an offer; this holds for one published before that check
    // or changed behind the node's back: opaque bytes are never delivered unmasked.
    if product.format == Format::Bytes {
        return Err(DesensitizeError::OpaqueBytes {
            product: product.product_id.clone(),
        });
    }
    refuse_removed(storage.as_ref(), agreement_id)?;
    if let Some(mut done) = delivered(storage.as_ref(), agreement_id)? {
        if done.desensitization.source_product_id.is_empty() {
            // Stored by an earlier version, which named the source by its hash.
            done.desensitization.source_product_id = product.product_id.clone();
            done.desensitization.source_version = product.version;
        }
        return Ok(Some(done));
    }
    let key = agreement_key(storage, agreement_id).await?;
    let delivery = {
        let (storage, products) = (storage.clone(), products.clone());
        let (product, agreement_id) = (product.clone(), agreement_id.to_owned());
        tokio::task::spawn_blocking(move || {
            produce(
                &storage,
                &products,
                &product,
                &agreement_id,
                Form {
                    rules,
                    min_k,
                    watermark,
                },
                &key,
            )
        })
        .await
        .map_err(|e| DesensitizeError::Write(format!("the masking task failed: {e}")))??
    };
    // The chunks are written; the record that names them is the commit point.
    storage
        .put_durable(
            TREE,
            &record_key(agreement_id),
            &serde_json::to_vec(&delivery).expect("deliveries serialize"),
        )
        .await?;
    // A removal decided while the chunks were written did not see them: take them
    // away now (the removal is recorded before its chunks are deleted, so one of the
    // two sees the other).
    if removed(storage.as_ref(), agreement_id)?.is_some() {
        remove_chunks(storage.as_ref(), agreement_id).await?;
        refuse_removed(storage.as_ref(), agreement_id)?;
    }
    Ok(Some(delivery))
}

/// The write that records the removal of an agreement's masked delivery, for the
/// caller to commit with the audit entry of the step that decides it (a revocation, a
/// consumer's deletion receipt); then [`remove_chunks`]. `None` when there is nothing
/// to remove: the agreement's policy masks nothing, or the removal is already recorded.
pub fn removal(
    storage: &dyn Storage,
    agreement: &Agreement,
    why: &str,
) -> Result<Option<(&'static str, StorageWrite)>, DesensitizeError> {
    let id = &agreement.agreement_id;
    if removed(storage, id)?.is_some() {
        return Ok(None);
    }
    // Also when nothing was delivered yet: a delivery being produced meanwhile finds
    // the removal when it is done.
    let masks = liutong_policy::Policy::from_odrl_value(&agreement.policy)
        .map(|p| super::policy_has_mask_duties(&p))
        .unwrap_or(true);
    if !masks && !agreement.derived && delivered(storage, id)?.is_none() {
        return Ok(None);
    }
    let record = Removal {
        agreement_id: id.clone(),
        why: why.to_owned(),
        removed_at: crate::base::clock::now(),
    };
    Ok(Some((
        TREE,
        StorageWrite::Put(
            removal_key(id),
            serde_json::to_vec(&record).expect("removals serialize"),
        ),
    )))
}

/// The removal of an agreement's masked delivery, if one was recorded.
pub fn removed(
    storage: &dyn Storage,
    agreement_id: &str,
) -> Result<Option<Removal>, DesensitizeError> {
    storage
        .get(TREE, &removal_key(agreement_id))?
        .map(|b| serde_json::from_slice(&b).map_err(|e| DesensitizeError::Damaged(e.to_string())))
        .transpose()
}

/// Deletes the masked bytes of an agreement (durably); returns how many stores held
/// them (0 when they were already gone).
pub async fn remove_chunks(
    storage: &dyn Storage,
    agreement_id: &str,
) -> Result<usize, DesensitizeError> {
    let name = payload_name(agreement_id);
    let blobs = storage.blobs();
    let mut removed = 0;
    if blobs.len(&name).map_err(write_error)?.is_some() {
        blobs.remove(&name).map_err(write_error)?;
        removed += 1;
    }
    // Chunks that a node kept in the database before masked deliveries were files.
    let prefix = format!("c/{agreement_id}/").into_bytes();
    let chunks = storage.scan_prefix(TREE, &prefix)?;
    for (key, _) in &chunks {
        storage.delete(TREE, key)?;
    }
    if !chunks.is_empty() {
        storage.flush().await?;
        removed += 1;
    }
    Ok(removed)
}

fn write_error(e: std::io::Error) -> DesensitizeError {
    DesensitizeError::Write(e.to_string())
}

/// The payload file of an agreement's masked bytes.
pub fn payload_name(agreement_id: &str) -> String {
    format!("masked/{agreement_id}")
}

/// At start: deletes the chunks of every recorded removal that a stop cut short.
/// Returns how many deliveries it finished.
pub async fn finish_removals(storage: &dyn Storage) -> Result<usize, DesensitizeError> {
    let mut finished = 0;
    for (_, value) in storage.scan_prefix(TREE, b"x/")? {
        let r: Removal =
            serde_json::from_slice(&value).map_err(|e| DesensitizeError::Damaged(e.to_string()))?;
        if remove_chunks(storage, &r.agreement_id).await? > 0 {
            finished += 1;
        }
    }
    Ok(finished)
}

/// Refuses a delivery whose removal was recorded.
fn refuse_removed(storage: &dyn Storage, agreement_id: &str) -> Result<(), DesensitizeError> {
    match removed(storage, agreement_id)? {
        Some(r) => Err(DesensitizeError::Removed(format!(
            "the masked delivery of agreement {agreement_id} was deleted at {}: {}",
            crate::base::format::format_unix(r.removed_at),
            r.why
        ))),
        None => Ok(()),
    }
}

/// The stored masked delivery of an agreement, if one was produced.
pub fn delivered(
    storage: &dyn Storage,
    agreement_id: &str,
) -> Result<Option<MaskedDelivery>, DesensitizeError> {
    storage
        .get(TREE, &record_key(agreement_id))?
        .map(|b| serde_json::from_slice(&b).map_err(|e| DesensitizeError::Damaged(e.to_string())))
        .transpose()
}

/// One chunk of an agreement's masked delivery.
pub fn chunk(
    storage: &dyn Storage,
    agreement_id: &str,
    index: u32,
) -> Result<Vec<u8>, DesensitizeError> {
    if let Some(d) = delivered(storage, agreement_id)?
        && index < d.chunk_hashes.len() as u32
    {
        let size = u64::from(d.chunk_size.max(1));
        let read = storage
            .blobs()
            .read_at(
                &payload_name(agreement_id),
                u64::from(index) * size,
                size as usize,
            )
            .map_err(write_error)?;
        if let Some(chunk) = read {
            return Ok(chunk);
        }
    }
    if let Some(chunk) = storage.get(TREE, &chunk_key(agreement_id, index))? {
        return Ok(chunk);
    }
    refuse_removed(storage, agreement_id)?;
    Err(DesensitizeError::Damaged(format!(
        "chunk {index} of the masked delivery of {agreement_id} is missing"
    )))
}

/// The plan of `rules` over a stored product (one detection pass), for computing on
/// masked values.
pub fn plan_for(
    products: &ProductStore,
    product: &ProductVersion,
    rules: Vec<MaskRule>,
) -> Result<Plan, DesensitizeError> {
    Ok(Plan::new(rules, &detect(products, product)?))
}

/// One detection pass over a stored product.
fn detect(
    products: &ProductStore,
    product: &ProductVersion,
) -> Result<plan::Detection, DesensitizeError> {
    Ok(match product.format {
        Format::Csv => plan::detect_csv(products.reader(product))?,
        Format::Jsonl => plan::detect_jsonl(products.reader(product))?,
        Format::Bytes => {
            return Err(DesensitizeError::OpaqueBytes {
                product: product.product_id.clone(),
            });
        }
    })
}

/// The keyed-hash key of an agreement (creates the node secret on first use); see
/// [`crate::contract::agreement_key`].
pub async fn agreement_key(
    storage: &Arc<dyn Storage>,
    agreement_id: &str,
) -> Result<hmac::Key, DesensitizeError> {
    crate::contract::agreement_key(storage, agreement_id)
        .await
        .map_err(|e| match e {
            crate::contract::KeyError::Storage(e) => DesensitizeError::Storage(e),
            other => DesensitizeError::Write(other.to_string()),
        })
}

fn record_key(agreement_id: &str) -> Vec<u8> {
    format!("m/{agreement_id}").into_bytes()
}

fn removal_key(agreement_id: &str) -> Vec<u8> {
    format!("x/{agreement_id}").into_bytes()
}

fn chunk_key(agreement_id: &str, index: u32) -> Vec<u8> {
    let mut key = format!("c/{agreement_id}/").into_bytes();
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// Detects, plans and masks the whole product, then marks it when `watermark`, into
/// stored chunks (blocking).
/// What a derived delivery does to the product's bytes.
struct Form {
    /// The mask rules, in written order.
    rules: Vec<MaskRule>,
    /// The minimum k of a `kAnonymity` duty.
    min_k: Option<u32>,
    /// Whether a watermark is embedded (after masking).
    watermark: bool,
}

fn produce(
    storage: &Arc<dyn Storage>,
    products: &ProductStore,
    product: &ProductVersion,
    agreement_id: &str,
    form: Form,
    key: &hmac::Key,
) -> Result<MaskedDelivery, DesensitizeError> {
    let Form {
        rules,
        min_k,
        watermark,
    } = form;
    let mut sink = ChunkSink {
        writer: storage
            .blobs()
            .writer(&payload_name(agreement_id), false)
            .map_err(write_error)?,
        chunk_size: product.chunk_size.max(1) as usize,
        buffer: Vec::new(),
        chunk_hashes: Vec::new(),
        whole: Sha256::new(),
        size: 0,
    };
    let masking = if rules.is_empty() && min_k.is_none() {
        None
    } else {
        Some(Plan::for_delivery(rules, &detect(products, product)?))
    };
    let mut outcome = stream::Outcome::default();
    let mut summary = None;
    match (&masking, watermark) {
        (Some(plan), false) => outcome = mask(plan, key, min_k, products, product, &mut sink)?,
        (None, false) => unreachable!("delivery_for delivers the product's own bytes"),
        (masking, true) => {
            // The masked bytes go to an unnamed file beside the deliveries (gone when
            // it is closed, also after a crash), which the marking passes read.
            let masked = match masking {
                Some(plan) => {
                    let mut file = storage
                        .blobs()
                        .scratch_file(&payload_name(agreement_id))
                        .map_err(write_error)?;
                    outcome = mask(plan, key, min_k, products, product, &mut file)?;
                    Some(file)
                }
                None => None,
            };
            let reader = || -> Result<Box<dyn std::io::Read>, DesensitizeError> {
                Ok(match &masked {
                    Some(file) => {
                        use std::io::Seek;
                        let mut file = file.try_clone().map_err(write_error)?;
                        file.rewind().map_err(write_error)?;
                        Box::new(std::io::BufReader::new(file))
                    }
                    None => Box::new(products.reader(product)),
                })
            };
            let marks = match product.format {
                Format::Csv => watermark::plan_csv(reader()?)?,
                Format::Jsonl => watermark::plan_jsonl(reader()?)?,
                Format::Bytes => unreachable!("delivery_for marks no opaque bytes"),
            };
            let marked = match product.format {
                Format::Csv => watermark::mark_csv(&marks, key, reader()?, &mut sink)?,
                _ => watermark::mark_jsonl(&marks, key, reader()?, &mut sink)?,
            };
            if masking.is_none() {
                outcome.records = marked.records;
            }
            summary = Some(watermark::WatermarkSummary {
                embedded: marked.cells > 0,
                cells: marked.cells,
                fields: marks.fields,
            });
        }
    }
    sink.finish()
        .map_err(|e| DesensitizeError::Write(e.to_string()))?;
    let (rules, unmatched_rules) = match masking {
        Some(plan) => (
            plan.rules.clone(),
            plan.unmatched_rules()
                .into_iter()
                .map(|i| format!("rule {}: {}", i + 1, plan::describe_rule(&plan.rules[i])))
                .collect(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    Ok(MaskedDelivery {
        sha256: hex::encode(sink.whole.finalize()),
        size: sink.size,
        chunk_size: product.chunk_size,
        chunk_hashes: sink.chunk_hashes,
        desensitization: Desensitization {
            source_product_id: product.product_id.clone(),
            source_version: product.version,
            source_size: product.size,
            legacy_source_sha256: None,
            unmatched_rules,
            rules,
            applied: outcome.applied,
            records: outcome.records,
            withheld_records: outcome.withheld,
            quasi_identifiers: outcome.quasi_identifiers,
            k_anonymity: outcome.k_anonymity,
            required_k: min_k,
            withheld_for_k: outcome.withheld_for_k,
            watermark: summary,
        },
    })
}

/// Masks the product by `plan` into `out`: records of groups smaller than `min_k`
/// withheld, the rest in the order of the agreement's key.
fn mask(
    plan: &Plan,
    key: &hmac::Key,
    min_k: Option<u32>,
    products: &ProductStore,
    product: &ProductVersion,
    out: impl Write,
) -> Result<stream::Outcome, DesensitizeError> {
    let options = stream::Options {
        min_k,
        order: stream::Order::Keyed,
    };
    let open = || products.reader(product);
    match product.format {
        Format::Csv => stream::mask_csv(plan, key, options, open, out),
        Format::Jsonl => stream::mask_jsonl(plan, key, options, open, out),
        Format::Bytes => unreachable!("detect refuses opaque bytes"),
    }
}

/// Cuts the masked output into chunks, writes each to the payload file and hashes it.
struct ChunkSink {
    writer: crate::storage::blobs::BlobWriter,
    chunk_size: usize,
    buffer: Vec<u8>,
    chunk_hashes: Vec<String>,
    whole: Sha256,
    size: u64,
}

impl ChunkSink {
    fn store(&mut self) -> std::io::Result<()> {
        let offset = self.chunk_hashes.len() as u64 * self.chunk_size as u64;
        self.chunk_hashes
            .push(hex::encode(Sha256::digest(&self.buffer)));
        self.writer.write_at(offset, &self.buffer)?;
        self.buffer.clear();
        Ok(())
    }

    /// Stores the last chunk (an empty payload is one empty chunk, like a product's),
    /// cuts off what an earlier, interrupted run may have left beyond the end, and
    /// makes the file durable before its record is written.
    fn finish(&mut self) -> std::io::Result<()> {
        if !self.buffer.is_empty() || self.chunk_hashes.is_empty() {
            self.store()?;
        }
        self.writer.set_len(self.size)?;
        self.writer.sync()
    }
}

impl Write for ChunkSink {
    fn write(&mut self, mut data: &[u8]) -> std::io::Result<usize> {
        let n = data.len();
        self.whole.update(data);
        self.size += n as u64;
        while !data.is_empty() {
            let take = (self.chunk_size - self.buffer.len()).min(data.len());
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buffer.len() == self.chunk_size {
                self.store()?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The node's answer to which agreements get a derived delivery
/// ([`DeliveryForm`](crate::contract::DeliveryForm)): those whose policy masks, and
/// those of a tabular product with values to carry a watermark.
pub struct DeliveryForms {
    pub products: crate::catalog::product::ProductStore,
}

/// How much of a product is read when an agreement on it is signed, to tell whether
/// its deliveries carry a watermark.
const AGREE_SCAN: u64 = 4 << 20;

impl crate::contract::DeliveryForm for DeliveryForms {
    fn derived(
        &self,
        product: &crate::catalog::product::ProductVersion,
        policy: &liutong_policy::Policy,
    ) -> bool {
        use crate::catalog::product::Format;
        if super::policy_has_mask_duties(policy) {
            return true;
        }
        // The start of the product decides, so a large one does not hold up the
        // agreement. Either answer is safe: a derived agreement whose delivery finds
        // nothing to mark says so in its manifest (and its consumer gets the product's
        // own bytes); an agreement that is not derived is never marked.
        let head = std::io::Read::take(self.products.reader(product), AGREE_SCAN);
        let plan = match product.format {
            Format::Csv => watermark::plan_csv(head),
            Format::Jsonl => watermark::plan_jsonl(head),
            Format::Bytes => return false,
        };
        // A product that cannot be read now cannot be delivered either; the delivery
        // says why.
        plan.is_ok_and(|p| p.cells > 0)
    }
}

/// One agreement scored against a found copy.
#[derive(Clone, Debug)]
pub struct TraceCandidate {
    pub agreement: Agreement,
    pub score: watermark::Score,
}

/// What [`trace`] found.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// Every derived agreement compared, best score first.
    pub candidates: Vec<TraceCandidate>,
    /// The distinct markable values read in the copy.
    pub cells: u64,
}

impl Trace {
    /// The agreement the copy was delivered under: the best candidate, when it reaches
    /// the threshold.
    pub fn source(&self) -> Option<&TraceCandidate> {
        self.candidates.first().filter(|c| c.score.traced())
    }
}

/// Scores a found copy (CSV with its header row, or JSON Lines) against the watermark
/// of every agreement this node made as provider whose delivery is derived (of
/// `product_id` only, when given), blocking. Revoked and ended agreements count too: a
/// copy may surface long after its agreement ended.
pub fn trace(
    storage: &dyn Storage,
    contracts: &crate::contract::Contracts,
    data: &[u8],
    product_id: Option<&str>,
) -> Result<Trace, DesensitizeError> {
    let agreements: Vec<Agreement> = contracts
        .list()
        .map_err(|e| DesensitizeError::Damaged(e.to_string()))?
        .into_iter()
        .filter(|n| n.role == crate::contract::Role::Provider)
        .filter_map(|n| n.agreement?.peek_json::<Agreement>().ok())
        .filter(|a| a.derived && product_id.is_none_or(|p| a.product_id == p))
        .collect();
    let mut keys = Vec::with_capacity(agreements.len());
    for a in &agreements {
        keys.push(
            crate::contract::stored_agreement_key(storage, &a.agreement_id)?.ok_or_else(|| {
                DesensitizeError::Damaged(
                    "the node secret that keys the agreements is missing".into(),
                )
            })?,
        );
    }
    let scores = if watermark::looks_like_jsonl(data) {
        watermark::score_jsonl(data, &keys)?
    } else {
        watermark::score_csv(data, &keys)?
    };
    let cells = scores.first().map_or(0, |s| s.cells);
    let mut candidates: Vec<TraceCandidate> = agreements
        .into_iter()
        .zip(scores)
        .map(|(agreement, score)| TraceCandidate { agreement, score })
        .collect();
    candidates.sort_by(|a, b| b.score.z().total_cmp(&a.score.z()));
    Ok(Trace { candidates, cells })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SledStorage;

    #[tokio::test]
    async fn hash_keys_are_stable_per_agreement_and_differ_across_agreements() {
        let storage: Arc<dyn Storage> = SledStorage::temporary().unwrap();
        let a1 = agreement_key(&storage, "agr-1").await.unwrap();
        let a1_again = agreement_key(&storage, "agr-1").await.unwrap();
        let a2 = agreement_key(&storage, "agr-2").await.unwrap();
        let h = |k: &hmac::Key| super::super::method::keyed_hash(k, "13812345678");
        assert_eq!(h(&a1), h(&a1_again));
        assert_ne!(h(&a1), h(&a2));
        // Another node (another secret) gives another key for the same agreement ID.
        let other: Arc<dyn Storage> = SledStorage::temporary().unwrap();
        assert_ne!(h(&a1), h(&agreement_key(&other, "agr-1").await.unwrap()));
    }

    fn sink(storage: &dyn Storage, agreement_id: &str) -> ChunkSink {
        ChunkSink {
            writer: storage
                .blobs()
                .writer(&payload_name(agreement_id), false)
                .unwrap(),
            chunk_size: 4,
            buffer: Vec::new(),
            chunk_hashes: Vec::new(),
            whole: Sha256::new(),
            size: 0,
        }
    }

    /// Writes `data` as a masked delivery in chunks of 4 bytes, with its record.
    fn stored_chunks(storage: &dyn Storage, agreement_id: &str, data: &[u8]) -> ChunkSink {
        let mut sink = sink(storage, agreement_id);
        sink.write_all(data).unwrap();
        sink.finish().unwrap();
        let record = MaskedDelivery {
            sha256: hex::encode(sink.whole.clone().finalize()),
            size: sink.size,
            chunk_size: 4,
            chunk_hashes: sink.chunk_hashes.clone(),
            desensitization: Desensitization {
                source_product_id: String::new(),
                source_version: 0,
                source_size: 0,
                legacy_source_sha256: None,
                rules: vec![],
                applied: vec![],
                unmatched_rules: vec![],
                records: 0,
                withheld_records: 0,
                quasi_identifiers: vec![],
                k_anonymity: None,
                required_k: None,
                withheld_for_k: 0,
                watermark: None,
            },
        };
        storage
            .put(
                TREE,
                &record_key(agreement_id),
                &serde_json::to_vec(&record).unwrap(),
            )
            .unwrap();
        sink
    }

    #[tokio::test]
    async fn a_removal_cut_short_is_finished_and_its_chunks_are_refused_with_the_reason() {
        let storage = SledStorage::temporary().unwrap();
        stored_chunks(storage.as_ref(), "agr-x", b"abcdefghij");
        stored_chunks(storage.as_ref(), "agr-xy", b"klmnop");
        // The state a stop leaves after the removal was committed, before its chunks
        // were deleted.
        let removal = Removal {
            agreement_id: "agr-x".into(),
            why: "the agreement was revoked".into(),
            removed_at: 1_800_000_000,
        };
        storage
            .put(
                TREE,
                &removal_key("agr-x"),
                &serde_json::to_vec(&removal).unwrap(),
            )
            .unwrap();
        assert_eq!(chunk(storage.as_ref(), "agr-x", 0).unwrap(), b"abcd");

        assert_eq!(finish_removals(storage.as_ref()).await.unwrap(), 1);
        assert!(
            !storage
                .blobs()
                .path(&payload_name("agr-x"))
                .unwrap()
                .exists()
        );
        let err = chunk(storage.as_ref(), "agr-x", 0).unwrap_err();
        assert!(matches!(err, DesensitizeError::Removed(_)), "{err}");
        assert!(
            err.to_string()
                .contains("was deleted at 2027-01-15T08:00:00Z: the agreement was revoked"),
            "{err}"
        );
        // Another agreement's chunks (its ID extends this one's) stay.
        assert_eq!(chunk(storage.as_ref(), "agr-xy", 1).unwrap(), b"op");
        // Finished once; nothing left to do the next time.
        assert_eq!(finish_removals(storage.as_ref()).await.unwrap(), 0);
    }

    /// A product stored as `format`, and the duties of a policy that masks a column.
    async fn product_and_mask_duties(
        storage: &Arc<dyn Storage>,
        format: crate::catalog::product::Format,
        data: &[u8],
    ) -> (ProductStore, ProductVersion, Vec<Duty>) {
        let products = ProductStore::open(storage.clone()).unwrap();
        let mut upload = products
            .begin(crate::catalog::product::NewVersion {
                product_id: None,
                title: "Scans".into(),
                description: String::new(),
                owner: crate::identity::ParticipantId::parse("91110000600037341L").unwrap(),
                classification: liutong_policy::Classification::General2,
                format,
                derived_from: vec![],
                policy_odrl: None,
            })
            .unwrap();
        upload.write(data).unwrap();
        let product = upload.finish(1_800_000_000).await.unwrap();
        let policy = liutong_policy::Policy::from_toml(
            "uid = \"urn:liutong:policy:scans\"\ntype = \"set\"\n\
             [[permission]]\naction = \"use\"\nduty = [{ action = \"mask\", rules = [\
             { field = { name = \"name\" }, method = \"drop\" }] }]\n",
        )
        .unwrap();
        let duties = policy.permissions[0].duties.clone();
        assert!(!mask_rules(&duties).is_empty());
        (products, product, duties)
    }

    #[tokio::test]
    async fn mask_duties_on_opaque_bytes_are_refused_at_delivery_and_nothing_is_stored() {
        let storage: Arc<dyn Storage> = SledStorage::temporary().unwrap();
        let (products, product, duties) =
            product_and_mask_duties(&storage, Format::Bytes, b"name,x\nZhang San,1\n").await;
        let err = delivery_for(&storage, &products, "agr-b", &product, &duties, false)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, DesensitizeError::OpaqueBytes { product: p } if *p == product.product_id),
            "{err}"
        );
        assert!(
            err.to_string().contains("opaque bytes")
                && err.to_string().contains("it is not delivered"),
            "{err}"
        );
        // Nothing produced, not even the node secret.
        assert!(storage.scan_prefix(TREE, b"").unwrap().is_empty());
        // Without mask duties the same product is delivered as it is.
        assert!(
            delivery_for(&storage, &products, "agr-b", &product, &[], true)
                .await
                .unwrap()
                .is_none()
        );
        // The same bytes as CSV are masked.
        let (products, csv, duties) =
            product_and_mask_duties(&storage, Format::Csv, b"name,x\nZhang San,1\n").await;
        let masked = delivery_for(&storage, &products, "agr-c", &csv, &duties, false)
            .await
            .unwrap()
            .expect("masked");
        assert_eq!(chunk(storage.as_ref(), "agr-c", 0).unwrap(), b"x\n1\n");
        assert_eq!(masked.size, 4);
    }

    #[test]
    fn chunks_are_cut_at_the_chunk_size() {
        let storage = SledStorage::temporary().unwrap();
        let sink = stored_chunks(storage.as_ref(), "agr-x", b"abcdefghij");
        assert_eq!(sink.chunk_hashes.len(), 3);
        assert_eq!(sink.size, 10);
        assert_eq!(chunk(storage.as_ref(), "agr-x", 2).unwrap(), b"ij");
        assert_eq!(
            sink.chunk_hashes[0],
            hex::encode(Sha256::digest(b"abcd")),
            "each chunk hashed"
        );
    }
}
