//! Handlers for products and the catalog: publishing and listing on the local API, and
//! the peer API's `Catalog` service.

use std::sync::Arc;

use liutong_policy::Classification;
use tonic::{Request, Response, Status};

use super::caller::peer_with_role;
use super::errors::into_status;
use super::paging::{PageRequest, next_page_token};
use crate::audit::log::{AuditLog, Event, EventKind};
use crate::base::bounded;
use crate::base::clock;
use crate::base::clock::now;
use crate::catalog::product::{Format, NewVersion};
use crate::catalog::{self, PolicyFormat, product_proto};
use crate::identity::MemberRole;
use crate::identity::{Membership, ParticipantId};
use crate::outbound::Peers;
use crate::usage::Usage;
use liutong_proto::v1::catalog_client::CatalogClient;
use liutong_proto::v1::catalog_server::Catalog;
use liutong_proto::v1::publish_request::Part;
use liutong_proto::v1::{
    GetOfferRequest, ListOffersRequest, ListOffersResponse, PeerCatalogRequest, Product,
    PublishRequest,
};

/// The most of a found copy `Admin.TraceCopy` reads (the CLI sends no more).
pub const TRACE_MAX: usize = 3 << 20;

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

/// `Admin.TraceCopy`: scores a found copy against the watermark of every derived
/// agreement this node made as provider, and names the one it came from, if any.
/// The finding is logged.
pub(super) async fn trace_copy(
    catalog: &crate::catalog::Catalog,
    contracts: &Arc<crate::contract::Contracts>,
    audit: &AuditLog,
    request: liutong_proto::v1::TraceCopyRequest,
) -> Result<liutong_proto::v1::TraceCopyResponse, Status> {
    use crate::desensitize::watermark::{MIN_SIGNIFICANT, TRACE_Z};
    use liutong_proto::v1::{TraceCandidate, TraceCopyResponse};
    let product = if request.product_id.is_empty() {
        None
    } else {
        Some(bounded::id("product_id", &request.product_id).map_err(into_status)?)
    };
    if request.data.len() > TRACE_MAX {
        return Err(Status::invalid_argument(format!(
            "data: at most {TRACE_MAX} bytes of a copy are read; send its first part, cut \
             at a line end"
        )));
    }
    let storage = catalog.products.storage().clone();
    let contracts = contracts.clone();
    let for_product = product.clone();
    let trace = tokio::task::spawn_blocking(move || {
        crate::desensitize::delivery::trace(
            storage.as_ref(),
            &contracts,
            &request.data,
            for_product.as_deref(),
        )
    })
    .await
    .map_err(|e| Status::internal(format!("the tracing task failed: {e}")))?
    .map_err(|e| match e {
        crate::desensitize::DesensitizeError::Read(why) => Status::invalid_argument(format!(
            "data: the copy cannot be read as CSV (header row first) or JSON Lines: {why}"
        )),
        other => Status::internal(other.to_string()),
    })?;
    let agreements = trace.candidates.len() as u32;
    let verdict = match (trace.source(), trace.candidates.get(1)) {
        _ if agreements == 0 => format!(
            "no agreement{} has a watermarked delivery to compare the copy with",
            product
                .as_deref()
                .map(|p| format!(" for product {p}"))
                .unwrap_or_default()
        ),
        (Some(best), runner_up) => format!(
            "the copy came from agreement {} (consumer {}): score {:.1}, {} of {} values \
             carry its marks; runner-up score {:.1}",
            best.agreement.agreement_id,
            best.agreement.consumer,
            best.score.z(),
            best.score.matches,
            best.score.cells,
            runner_up.map_or(0.0, |r| r.score.z())
        ),
        (None, _) if trace.cells < (TRACE_Z * TRACE_Z) as u64 => format!(
            "no agreement matches: the copy has {} distinct measure values of {MIN_SIGNIFICANT} \
             or more significant digits, fewer than the {} a trace needs",
            trace.cells,
            (TRACE_Z * TRACE_Z) as u64
        ),
        (None, _) => format!(
            "no agreement matches: the best score is {:.1}, below the threshold {TRACE_Z:.1}, \
             over {} agreement(s)",
            trace.candidates.first().map_or(0.0, |c| c.score.z()),
            agreements
        ),
    };
    let mut event = Event::new(EventKind::Usage, now(), format!("copy traced: {verdict}"));
    if let Some(best) = trace.source() {
        event.agreement = Some(best.agreement.agreement_id.clone());
        event.participant = Some(best.agreement.consumer.to_string());
        event.product = Some(best.agreement.product_id.clone());
    }
    audit
        .append(&event)
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    Ok(TraceCopyResponse {
        traced: trace.source().is_some(),
        threshold: TRACE_Z,
        agreements,
        cells: trace.cells,
        verdict,
        candidates: trace
            .candidates
            .iter()
            .take(3)
            .map(|c| TraceCandidate {
                agreement_id: c.agreement.agreement_id.clone(),
                consumer: c.agreement.consumer.to_string(),
                product_id: c.agreement.product_id.clone(),
                version: c.agreement.version,
                cells: c.score.cells,
                matches: c.score.matches,
                score: c.score.z(),
            })
            .collect(),
    })
}

/// `Admin.PublishProduct`: metadata first, then the payload; all or nothing. The
/// messages come from the local API's stream, or from the web console's upload.
pub(super) async fn publish<S>(
    catalog: &crate::catalog::Catalog,
    usage: &Usage,
    audit: &AuditLog,
    owner: &ParticipantId,
    mut stream: S,
) -> Result<Product, Status>
where
    S: tokio_stream::Stream<Item = Result<PublishRequest, Status>> + Unpin,
{
    use tokio_stream::StreamExt as _;
    let first = stream.next().await.transpose()?.ok_or_else(|| {
        Status::invalid_argument("metadata: the first message must carry the product's metadata")
    })?;
    let Some(Part::Metadata(meta)) = first.part else {
        return Err(Status::invalid_argument(
            "metadata: the first message must carry the product's metadata",
        ));
    };
    if meta.title.trim().is_empty() {
        return Err(Status::invalid_argument("title: give the product a title"));
    }
    // The title reaches other members' catalogs; the description may span lines.
    bounded::Text::parse("title", meta.title.trim(), bounded::PURPOSE_MAX).map_err(into_status)?;
    bounded::optional_id("product_id", &meta.product_id).map_err(into_status)?;
    for source in &meta.derived_from {
        bounded::id("derived_from", source).map_err(into_status)?;
    }
    let classification: Classification = meta.classification.parse().map_err(|e| {
        Status::invalid_argument(format!(
            "classification: {e} (use core, important, general-3, general-2 or general-1)"
        ))
    })?;
    let format: Format = meta
        .format
        .parse()
        .map_err(|e: String| Status::invalid_argument(format!("format: {e}")))?;
    let policy = if meta.policy.trim().is_empty() {
        None
    } else {
        let hint = PolicyFormat::from_name(&meta.policy_format);
        Some(
            catalog::parse_policy(&meta.policy, hint)
                .map_err(|e| Status::invalid_argument(format!("policy: {e}")))?,
        )
    };
    if format == Format::Bytes
        && policy
            .as_ref()
            .is_some_and(crate::desensitize::policy_has_mask_duties)
    {
        return Err(Status::invalid_argument(
            "policy: its mask duties cannot be applied to opaque bytes; publish the data \
             as csv or jsonl, or offer it without mask duties",
        ));
    }
    let products = &catalog.products;
    let mut upload = products
        .begin(NewVersion {
            product_id: (!meta.product_id.is_empty()).then(|| meta.product_id.clone()),
            title: meta.title.trim().to_owned(),
            description: meta.description.trim().to_owned(),
            owner: owner.clone(),
            classification,
            format,
            derived_from: meta.derived_from.clone(),
            policy_odrl: None,
        })
        .map_err(into_status)?;
    let offer = match policy {
        // Refused here, before any byte is stored: the guardrails and the policy's own
        // consistency are checked when it is loaded.
        Some(policy) => Some(
            catalog
                .offer_policy(policy, upload.product_id(), classification)
                .map_err(into_status)?,
        ),
        None => None,
    };
    // No onward sharing: what it is derived from must allow it (and its grade).
    if let Err(e) = usage.check_derivation(&meta.derived_from, classification, offer.as_ref()) {
        usage.log_refusal(&e).await;
        return Err(into_status(e));
    }
    if let Some(compiled) = &offer {
        upload.set_policy_odrl(compiled.policy().to_odrl());
    }
    // Rows of a received copy count as the copy however the bytes were changed.
    let mut rows = usage.payload_check().map_err(into_status)?;
    // Dropping `upload` on any early return removes what was written: a stream that
    // stops before its end message (hyper reports a client's RST_STREAM NO_ERROR or
    // CANCEL as a clean end) leaves no product and no payload file.
    let end = loop {
        match stream.next().await.transpose()? {
            Some(PublishRequest {
                part: Some(Part::Data(data)),
            }) => {
                upload.write(&data).map_err(into_status)?;
                rows.feed(&data);
            }
            Some(PublishRequest {
                part: Some(Part::End(end)),
            }) => break end,
            Some(_) => {
                return Err(Status::invalid_argument(
                    "metadata: only the first message may carry metadata",
                ));
            }
            None => {
                return Err(Status::invalid_argument(
                    "end: the upload stopped before its end message; nothing was stored",
                ));
            }
        }
    };
    if stream.next().await.transpose()?.is_some() {
        return Err(Status::invalid_argument(
            "end: nothing may follow the end message; nothing was stored",
        ));
    }
    if end.sha256.len() != 64 || !end.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Status::invalid_argument(
            "end: sha256 must be the payload's SHA-256 in 64 hex digits; nothing was stored",
        ));
    }
    if end.size != upload.size() || !end.sha256.eq_ignore_ascii_case(&upload.sha256()) {
        return Err(Status::invalid_argument(format!(
            "end: the client sent {} bytes with SHA-256 {}, but {} bytes with SHA-256 {} \
             arrived; nothing was stored",
            end.size,
            end.sha256,
            upload.size(),
            upload.sha256()
        )));
    }
    // A payload byte-identical to a received copy is that copy, declared or not.
    let same = usage
        .copies_with_payload(&upload.sha256())
        .and_then(|same| {
            let undeclared: Vec<String> = same
                .into_iter()
                .filter(|a| !meta.derived_from.contains(a))
                .collect();
            usage.check_derivation(&undeclared, classification, offer.as_ref())?;
            Ok(undeclared)
        });
    match same {
        Ok(undeclared) => {
            let identical = undeclared.clone();
            upload.add_derived_from(undeclared);
            let matches: Vec<_> = rows
                .finish()
                .into_iter()
                .filter(|m| {
                    !meta.derived_from.contains(&m.agreement_id)
                        && !identical.contains(&m.agreement_id)
                })
                .collect();
            for m in &matches {
                if let Err(e) = usage.check_derivation(
                    std::slice::from_ref(&m.agreement_id),
                    classification,
                    offer.as_ref(),
                ) {
                    drop(upload);
                    usage.log_refusal(&e).await;
                    let status = into_status(e);
                    return Err(Status::new(
                        status.code(),
                        format!(
                            "the payload holds rows of a copy this node received ({}): {}",
                            m.describe(),
                            status.message()
                        ),
                    ));
                }
            }
            upload.add_derived_from(matches.into_iter().map(|m| m.agreement_id));
        }
        Err(e) => {
            drop(upload);
            usage.log_refusal(&e).await;
            let status = into_status(e);
            return Err(Status::new(
                status.code(),
                format!(
                    "the payload is byte-identical to a copy this node received: {}",
                    status.message()
                ),
            ));
        }
    }
    // Every byte arrived: the version is stored and logged by a task of its own, so a
    // client that goes away now cannot leave a product without its audit entry.
    let audit = audit.clone();
    let product = tokio::spawn(async move {
        let product = upload.finish(now()).await.map_err(into_status)?;
        let mut event = Event::new(
            EventKind::ProductPublished,
            now(),
            format!(
                "published {} v{} \"{}\" ({} bytes, {}, {}){}",
                product.product_id,
                product.version,
                product.title,
                product.size,
                product.format,
                product.classification,
                if product.offer_id().is_some() {
                    ", offered"
                } else {
                    ", not offered"
                }
            ),
        );
        event.product = Some(product.product_id.clone());
        audit
            .append(&event)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok::<_, Status>(product)
    })
    .await
    .map_err(|e| Status::internal(format!("the publish stopped: {e}")))??;
    Ok(product_proto(&product))
}

/// `Admin.PeerCatalog`: this node asks a peer for its catalog.
pub(super) async fn peer_catalog(
    peers: &Peers,
    request: PeerCatalogRequest,
) -> Result<ListOffersResponse, Status> {
    let channel = peers
        .connect_peer(&request.address)
        .await
        .map_err(into_status)?;
    CatalogClient::new(channel)
        .list(ListOffersRequest {
            page_size: request.page_size,
            page_token: request.page_token,
        })
        .await
        .map(Response::into_inner)
        .map_err(|s| {
            Status::new(
                s.code(),
                format!("the peer at {} answered: {}", request.address, s.message()),
            )
        })
}

/// The peer API's catalog.
pub struct CatalogService {
    pub catalog: Arc<crate::catalog::Catalog>,
    pub audit: AuditLog,
}

impl CatalogService {
    async fn log_access(
        &self,
        caller: &Membership,
        detail: String,
        product: Option<String>,
    ) -> Result<(), Status> {
        let mut event = Event::new(EventKind::CatalogAccessed, now(), detail);
        event.participant = Some(caller.participant_id.to_string());
        event.product = product;
        self.audit
            .append(&event)
            .await
            .map(|_| ())
            .map_err(|e| Status::unavailable(e.to_string()))
    }
}

#[tonic::async_trait]
impl Catalog for CatalogService {
    async fn list(
        &self,
        request: Request<ListOffersRequest>,
    ) -> Result<Response<ListOffersResponse>, Status> {
        let caller = peer_with_role(&request, MemberRole::Consumer, "listing the catalog")?;
        let ListOffersRequest {
            page_size,
            page_token,
        } = request.into_inner();
        let page =
            PageRequest::parse_with("offers", page_size, &page_token, DEFAULT_PAGE, MAX_PAGE)?;
        let after = page.after().map(String::from_utf8_lossy);
        let (shown, more) = self
            .catalog
            .visible_offers_page(&caller, clock::now_utc(), after.as_deref(), page.size)
            .map_err(into_status)?;
        let next = more
            .then(|| shown.last().map(|p| p.product_id.as_bytes()))
            .flatten();
        let next_page_token = next_page_token("offers", next);
        let offers: Vec<Product> = shown.iter().map(catalog::offer_proto).collect();
        self.log_access(
            &caller,
            format!("listed the catalog: {} offers shown", offers.len()),
            None,
        )
        .await?;
        Ok(Response::new(ListOffersResponse {
            offers,
            next_page_token,
        }))
    }

    async fn get(&self, request: Request<GetOfferRequest>) -> Result<Response<Product>, Status> {
        let caller = peer_with_role(&request, MemberRole::Consumer, "reading an offer")?;
        let offer_id =
            bounded::offer_id("offer_id", &request.into_inner().offer_id).map_err(into_status)?;
        let product = self
            .catalog
            .offer(&offer_id, &caller, clock::now_utc())
            .map_err(into_status)?;
        self.log_access(
            &caller,
            format!("read offer {offer_id}"),
            Some(product.product_id.clone()),
        )
        .await?;
        Ok(Response::new(catalog::offer_proto(&product)))
    }
}
