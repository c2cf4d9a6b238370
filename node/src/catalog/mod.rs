//! Data products and the catalog: what this node publishes and which of its offers a
//! peer may see.
//!
//! - [`product`] stores versioned, chunked products with their hashes and metadata.
//! - [`schema`] infers the columns and quality figures of CSV and JSON Lines data.
//! - [`Catalog`] (here) ties products to their offer policies: it compiles a policy at
//!   publish (refusing one that breaks the guardrails), and decides per caller which
//!   offers are visible (catalog scope). An offer the caller may not see is treated as
//!   if it did not exist.

pub mod product;
pub mod schema;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use liutong_policy::{
    Action, Classification, CompileContext, CompiledPolicy, Guardrails, Policy, PolicyError,
    PolicyType, Request, Requester, Scope, State,
};
use sha2::{Digest, Sha256};

use crate::base::error::{ErrorKind, ErrorKinded};
use crate::identity::{Membership, ParticipantId};
use product::{ProductError, ProductStore, ProductVersion};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    #[error(transparent)]
    Product(#[from] ProductError),
    #[error("the policy is not valid: {0}")]
    Policy(String),
    #[error("offer {0} does not exist")]
    NotFound(String),
}

impl ErrorKinded for CatalogError {
    fn kind(&self) -> ErrorKind {
        match self {
            CatalogError::NotFound(_) => ErrorKind::NotFound,
            CatalogError::Policy(_) => ErrorKind::InvalidArgument,
            CatalogError::Product(p) => p.kind(),
        }
    }

    /// A policy that is not valid is the publisher's `policy` field at fault.
    fn message(&self) -> String {
        match self {
            CatalogError::Policy(_) => format!("policy: {self}"),
            CatalogError::Product(p) => p.message(),
            other => other.to_string(),
        }
    }

    fn inner(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CatalogError::Product(p) => p.inner().or(Some(p)),
            _ => None,
        }
    }
}

/// How a policy file is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyFormat {
    Toml,
    Json,
    Odrl,
}

impl PolicyFormat {
    /// From a file name's extension or an explicit name; `None` to guess from the text.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "toml" => Some(Self::Toml),
            "json" => Some(Self::Json),
            "odrl" | "jsonld" | "json-ld" => Some(Self::Odrl),
            _ => None,
        }
    }
}

/// Reads a policy in any of its forms. (The error is large, but it is returned only when
/// a policy is loaded, never on a hot path.) Without a format, JSON with an `@context` is
/// ODRL, other JSON is the authoring form, anything else is TOML.
#[allow(clippy::result_large_err)]
pub fn parse_policy(text: &str, format: Option<PolicyFormat>) -> Result<Policy, PolicyError> {
    let format = format.unwrap_or_else(|| {
        let t = text.trim_start();
        if t.starts_with('{') {
            if t.contains("\"@context\"") {
                PolicyFormat::Odrl
            } else {
                PolicyFormat::Json
            }
        } else {
            PolicyFormat::Toml
        }
    });
    match format {
        PolicyFormat::Toml => Policy::from_toml(text),
        PolicyFormat::Json => Policy::from_json(text),
        PolicyFormat::Odrl => Policy::from_odrl(text),
    }
}

/// The fewest and the most products a catalog page reads at a time: a page whose
/// products the caller may mostly not see reads on in batches of at least the first,
/// and no batch holds more than the second in memory.
const MIN_READ: usize = 16;
const MAX_READ: usize = 256;

/// The node's offers and the rules for showing them.
pub struct Catalog {
    pub products: ProductStore,
    participant: ParticipantId,
    guardrails: Guardrails,
    /// Compiled offer policies by offer ID; offers never change once published.
    compiled: Mutex<HashMap<String, Arc<CompiledPolicy>>>,
    /// Counts catalog-scope decisions, when set.
    metrics: Option<crate::telemetry::Metrics>,
}

impl Catalog {
    pub fn new(products: ProductStore, participant: ParticipantId, guardrails: Guardrails) -> Self {
        Self {
            products,
            participant,
            guardrails,
            compiled: Mutex::new(HashMap::new()),
            metrics: None,
        }
    }

    /// Counts every catalog-scope decision in `metrics` (`liutong.policy.decisions`).
    pub fn with_metrics(mut self, metrics: crate::telemetry::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn compile_context(&self, classification: Classification) -> CompileContext {
        CompileContext::new(classification).with_guardrails(self.guardrails.clone())
    }

    /// Prepares an offer policy for a product: fills in this node as assigner and the
    /// product as target (refusing other values), marks it an offer, and compiles it
    /// against the classification and the node's guardrails.
    pub fn offer_policy(
        &self,
        mut policy: Policy,
        product_id: &str,
        classification: Classification,
    ) -> Result<CompiledPolicy, CatalogError> {
        let me = self.participant.as_str();
        match &policy.assigner {
            Some(a) if a.as_str() != me => {
                return Err(CatalogError::Policy(format!(
                    "the policy's assigner is {a}, but this node is {me}"
                )));
            }
            _ => policy.assigner = Some(me.parse().map_err(|e: String| CatalogError::Policy(e))?),
        }
        let target = ProductVersion::target(product_id);
        if let Some(t) = &policy.target
            && *t != target
            && !t.is_empty()
        {
            tracing::info!(written = %t, %target, "offer policy target replaced by the product's");
        }
        policy.target = Some(target);
        policy.policy_type = PolicyType::Offer;
        // An offer no consumer could ever use would be stored as offered and listed
        // nowhere; the publisher learns it now instead.
        if !policy
            .permissions
            .iter()
            .any(|p| CONSUMER_ACTIONS.contains(&p.action))
        {
            let granted: Vec<&str> = policy
                .permissions
                .iter()
                .map(|p| p.action.as_str())
                .collect();
            return Err(CatalogError::Policy(format!(
                "no consumer could ever use this offer: its permissions grant {}, but a \
                 consumer needs a permission on `use`, `read` or `aggregate` (`transfer`, \
                 `distribute`, `derive` and `delete` only add to one of those)",
                if granted.is_empty() {
                    "nothing".to_owned()
                } else {
                    granted.join(", ")
                }
            )));
        }
        liutong_policy::compile(policy, &self.compile_context(classification))
            .map_err(|e| CatalogError::Policy(e.to_string()))
    }

    /// The compiled offer policy of a product version, if it is offered.
    pub fn policy_of(
        &self,
        p: &ProductVersion,
    ) -> Result<Option<Arc<CompiledPolicy>>, CatalogError> {
        let (Some(offer_id), Some(odrl)) = (p.offer_id(), &p.policy_odrl) else {
            return Ok(None);
        };
        let mut cache = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.get(&offer_id) {
            return Ok(Some(c.clone()));
        }
        let policy =
            Policy::from_odrl_value(odrl).map_err(|e| CatalogError::Policy(e.to_string()))?;
        let compiled = Arc::new(
            liutong_policy::compile(policy, &self.compile_context(p.classification))
                .map_err(|e| CatalogError::Policy(e.to_string()))?,
        );
        cache.insert(offer_id, compiled.clone());
        Ok(Some(compiled))
    }

    /// The latest offered version of each product that `caller` may see, by product ID.
    pub fn visible_offers(
        &self,
        caller: &Membership,
        now: time::OffsetDateTime,
    ) -> Result<Vec<ProductVersion>, CatalogError> {
        let mut out = Vec::new();
        for p in self.products.list()? {
            if self.visible(&p, caller, now)? {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// [`visible_offers`](Self::visible_offers), one page: at most `limit` (at least
    /// one) whose product ID comes after `after`, and whether more follow. Products are
    /// read a batch at a time, each batch as large as what the page still lacks (one
    /// beyond it tells whether more follow), so a page costs about the products it
    /// shows and those the caller may not see among them, not all of them.
    pub fn visible_offers_page(
        &self,
        caller: &Membership,
        now: time::OffsetDateTime,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ProductVersion>, bool), CatalogError> {
        let limit = limit.max(1);
        let mut out = Vec::new();
        let mut cursor = after.map(str::to_owned);
        loop {
            let wanted = (limit + 1 - out.len()).clamp(MIN_READ, MAX_READ);
            let (batch, more) = self.products.list_page(cursor.as_deref(), wanted)?;
            for p in batch {
                cursor = Some(p.product_id.clone());
                if self.visible(&p, caller, now)? {
                    if out.len() == limit {
                        return Ok((out, true));
                    }
                    out.push(p);
                }
            }
            if !more {
                return Ok((out, false));
            }
        }
    }

    /// One offer, if it exists and `caller` may see it; otherwise `NotFound`.
    pub fn offer(
        &self,
        offer_id: &str,
        caller: &Membership,
        now: time::OffsetDateTime,
    ) -> Result<ProductVersion, CatalogError> {
        let not_found = || CatalogError::NotFound(offer_id.to_owned());
        let (product_id, version) = product::parse_offer_id(offer_id).ok_or_else(not_found)?;
        let p = self
            .products
            .get(product_id, version)?
            .ok_or_else(not_found)?;
        if self.visible(&p, caller, now)? {
            Ok(p)
        } else {
            Err(not_found())
        }
    }

    fn visible(
        &self,
        p: &ProductVersion,
        caller: &Membership,
        now: time::OffsetDateTime,
    ) -> Result<bool, CatalogError> {
        let Some(policy) = self.policy_of(p)? else {
            return Ok(false);
        };
        let request = Request {
            scope: Scope::Catalog,
            action: Action::Use,
            requester: requester_of(caller),
            purpose: None,
        };
        let permit = evaluate_use_or_aggregate(&policy, &request, &State::initial(now)).is_permit();
        if let Some(m) = &self.metrics {
            m.policy_decision("catalog", permit);
        }
        Ok(permit)
    }
}

/// The actions a consumer can exercise on an offer, broadest first: `use` (which
/// includes the others), `read` of the delivered copy (enforced on each read), and
/// `aggregate` at the provider (compute-to-data). An offer is for a consumer when a
/// permission covers one of them.
pub const CONSUMER_ACTIONS: [Action; 3] = [Action::Use, Action::Read, Action::Aggregate];

/// Decides whether a consumer may have an offer (catalog and negotiation scopes): any
/// use (`request.action`, normally `use`), or, when no permission covers that, a
/// narrower consumer action ([`CONSUMER_ACTIONS`]: reads of the copy only, or only
/// aggregates computed at the provider).
pub fn evaluate_use_or_aggregate(
    policy: &CompiledPolicy,
    request: &Request,
    state: &State,
) -> liutong_policy::Decision {
    evaluate_first_covered(policy, request, state, &CONSUMER_ACTIONS)
}

/// Decides `request`, or, when no permission covers its action, the first of `narrower`
/// that a permission covers. The first decision that is not "no permission" is the
/// answer, so a failed constraint is reported as such; when none is covered, the
/// decision on `request` itself stands.
pub fn evaluate_first_covered(
    policy: &CompiledPolicy,
    request: &Request,
    state: &State,
    narrower: &[Action],
) -> liutong_policy::Decision {
    let first = liutong_policy::evaluate(policy, request, state);
    if first.denial != Some(liutong_policy::Denial::NoPermission) {
        return first;
    }
    for &action in narrower.iter().filter(|a| **a != request.action) {
        let decision = liutong_policy::evaluate(
            policy,
            &Request {
                action,
                ..request.clone()
            },
            state,
        );
        if decision.denial != Some(liutong_policy::Denial::NoPermission) {
            return decision;
        }
    }
    first
}

/// The policy engine's view of a member, from its authority-signed membership.
pub fn requester_of(m: &Membership) -> Requester {
    Requester {
        participant: m.participant_id.code().clone(),
        kind: m.kind,
        sector: Some(m.sector.clone()),
        region: Some(m.region.code()),
        security_level: None,
        roles: m.roles.iter().map(ToString::to_string).collect(),
    }
}

/// Payload bytes per publish message: well under the 4 MiB default message limit.
pub const UPLOAD_PIECE: usize = 1 << 20;

/// The messages of `Admin.PublishProduct` for an in-memory payload: the metadata, the
/// payload in pieces of [`UPLOAD_PIECE`] bytes, then the end naming its size and hash.
pub fn publish_messages(
    metadata: liutong_proto::v1::PublishMetadata,
    data: &[u8],
) -> Vec<liutong_proto::v1::PublishRequest> {
    use liutong_proto::v1::PublishRequest;
    use liutong_proto::v1::publish_request::Part;
    std::iter::once(PublishRequest {
        part: Some(Part::Metadata(metadata)),
    })
    .chain(data.chunks(UPLOAD_PIECE).map(|piece| PublishRequest {
        part: Some(Part::Data(piece.to_vec())),
    }))
    .chain(std::iter::once(PublishRequest {
        part: Some(Part::End(publish_end(
            data.len() as u64,
            Sha256::digest(data),
        ))),
    }))
    .collect()
}

/// The end message of a publish of `size` bytes hashing to `sha256`.
pub fn publish_end(size: u64, sha256: impl AsRef<[u8]>) -> liutong_proto::v1::PublishEnd {
    liutong_proto::v1::PublishEnd {
        size,
        sha256: hex::encode(sha256),
    }
}

/// A product version as another member's catalog shows it: as [`product_proto`], but
/// without the product's hash when its deliveries are made for each agreement (see
/// [`delivery_is_derived`]). The consumer never holds those bytes, and a plain hash of
/// them would let it confirm guesses of masked values offline; what it receives is
/// checked against the provider's signed manifest instead.
pub fn offer_proto(p: &ProductVersion) -> liutong_proto::v1::Product {
    let mut shown = product_proto(p);
    if delivery_is_derived(p) {
        shown.sha256.clear();
    }
    shown
}

/// Whether deliveries of a product version may be derived per agreement: it is
/// tabular (its deliveries may carry a watermark, which its hash would help to strip),
/// or its offer carries mask duties (a policy that cannot be read counts as one that
/// does).
pub fn delivery_is_derived(p: &ProductVersion) -> bool {
    p.format != product::Format::Bytes
        || p.policy_odrl.as_ref().is_some_and(|odrl| {
            Policy::from_odrl_value(odrl).map_or(true, |policy| {
                policy
                    .duties()
                    .any(|d| matches!(d, liutong_policy::Duty::Mask { .. }))
            })
        })
}

/// A product version as the API shows it.
pub fn product_proto(p: &ProductVersion) -> liutong_proto::v1::Product {
    liutong_proto::v1::Product {
        product_id: p.product_id.clone(),
        version: p.version,
        title: p.title.clone(),
        description: p.description.clone(),
        owner: p.owner.to_string(),
        classification: p.classification.to_string(),
        format: p.format.to_string(),
        size: p.size,
        sha256: p.sha256.clone(),
        chunk_size: p.chunk_size,
        chunks: p.chunk_hashes.len() as u32,
        profile_json: p
            .profile
            .as_ref()
            .map(|pr| serde_json::to_string(pr).expect("profiles serialize"))
            .unwrap_or_default(),
        offer_id: p.offer_id().unwrap_or_default(),
        policy_odrl_json: p
            .policy_odrl
            .as_ref()
            .map(|v| v.to_string())
            .unwrap_or_default(),
        published_at_unix: p.published_at,
        derived_from: p.derived_from.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{MemberRole, ParticipantKind, PublicKey, RegionCode};
    use crate::storage::{SledStorage, Storage};

    const PROVIDER: &str = "91110000600037341L";

    fn consumer() -> Membership {
        Membership {
            participant_id: ParticipantId::parse("11330100MA2TRA0011").unwrap(),
            name: "Consumer".into(),
            kind: ParticipantKind::Government,
            sector: "transport".into(),
            region: RegionCode::parse("330100").unwrap(),
            roles: vec![MemberRole::Consumer],
            valid_from: 0,
            valid_until: i64::MAX,
            signing_key: PublicKey([7; 32]),
            certificate_sha256: String::new(),
            authority: "Test authority".into(),
        }
    }

    /// A catalog with `count` open offers, `prd-0000` on, recorded as a publish
    /// records them.
    fn catalog_of(storage: Arc<dyn Storage>, count: usize) -> Catalog {
        let catalog = Catalog::new(
            ProductStore::open(storage.clone()).unwrap(),
            ParticipantId::parse(PROVIDER).unwrap(),
            Guardrails::default(),
        );
        let open = parse_policy(
            "uid = \"urn:liutong:policy:open\"\ntype = \"set\"\n\n[[permission]]\naction = \"use\"\n",
            None,
        )
        .unwrap();
        for i in 0..count {
            let product_id = format!("prd-{i:04}");
            let policy = catalog
                .offer_policy(open.clone(), &product_id, Classification::General2)
                .unwrap();
            let product = ProductVersion {
                product_id,
                version: 1,
                title: "Air quality".into(),
                description: String::new(),
                owner: ParticipantId::parse(PROVIDER).unwrap(),
                classification: Classification::General2,
                format: product::Format::Bytes,
                size: 0,
                sha256: String::new(),
                chunk_size: product::CHUNK_SIZE as u32,
                chunk_hashes: vec![],
                profile: None,
                derived_from: vec![],
                policy_odrl: Some(policy.policy().to_odrl()),
                published_at: 0,
            };
            let (tree, write) = ProductStore::record_write(&product);
            storage.apply(tree, vec![write]).unwrap();
        }
        catalog
    }

    #[test]
    fn a_page_reads_the_products_it_shows_not_a_fixed_batch() {
        let storage: Arc<dyn Storage> = SledStorage::temporary().unwrap();
        let catalog = catalog_of(storage.clone(), 100);
        // A record far beyond the first page that cannot be read: a page that read
        // past what it shows would fail on it.
        let mut key = b"prd-0090".to_vec();
        key.push(0);
        key.extend_from_slice(&1u32.to_be_bytes());
        storage.put("products", &key, b"not a product").unwrap();
        let now = time::OffsetDateTime::now_utc();

        let (page, more) = catalog
            .visible_offers_page(&consumer(), now, None, 50)
            .unwrap();
        assert!(more);
        let ids: Vec<&str> = page.iter().map(|p| p.product_id.as_str()).collect();
        let expected: Vec<String> = (0..50).map(|i| format!("prd-{i:04}")).collect();
        assert_eq!(ids, expected);
        let (page, more) = catalog
            .visible_offers_page(&consumer(), now, Some("prd-0049"), 20)
            .unwrap();
        assert!(more);
        assert_eq!(page.first().unwrap().product_id, "prd-0050");
        assert_eq!(page.last().unwrap().product_id, "prd-0069");
        // The page that reaches it reports it.
        let err = catalog
            .visible_offers_page(&consumer(), now, Some("prd-0069"), 50)
            .unwrap_err();
        assert!(
            matches!(err, CatalogError::Product(ProductError::Damaged(_))),
            "{err}"
        );
    }

    #[test]
    fn a_page_shows_the_latest_version_of_each_product_and_knows_the_end() {
        let storage: Arc<dyn Storage> = SledStorage::temporary().unwrap();
        let catalog = catalog_of(storage.clone(), 3);
        let mut v2 = catalog.products.get("prd-0001", 1).unwrap().unwrap();
        v2.version = 2;
        v2.title = "Air quality, hourly".into();
        let (tree, write) = ProductStore::record_write(&v2);
        storage.apply(tree, vec![write]).unwrap();
        let now = time::OffsetDateTime::now_utc();

        let (page, more) = catalog
            .visible_offers_page(&consumer(), now, None, 2)
            .unwrap();
        assert!(more, "prd-0002 follows");
        assert_eq!(page[1].version, 2);
        assert_eq!(page[1].title, "Air quality, hourly");
        let (page, more) = catalog
            .visible_offers_page(&consumer(), now, Some("prd-0001"), 2)
            .unwrap();
        assert!(!more);
        assert_eq!(page.len(), 1);
        let (page, more) = catalog
            .visible_offers_page(&consumer(), now, None, 3)
            .unwrap();
        assert!(!more, "exactly a page: nothing follows");
        assert_eq!(page.len(), 3);
    }
}
