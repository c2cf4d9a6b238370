//! The catalog protocol's HTTPS binding: `POST /catalog/request` and
//! `GET /catalog/datasets/:id`.
//!
//! Every answer comes from the same [`Catalog`](crate::catalog::Catalog) component as
//! the gRPC `Catalog` service, with the same visibility: a member sees the latest
//! offered version of each product whose offer policy permits it in catalog scope, and
//! an offer it may not see does not exist for it (404). Products become DCAT
//! `Dataset`s: the offer's policy, in the ODRL form the policy crate exports, is the
//! dataset's `hasPolicy`; the one distribution is `HttpData-PULL` from this node's DSP
//! data service.
//!
//! Pages: at most `pageSize` datasets (default [`DEFAULT_PAGE`], at most
//! [`MAX_PAGE`]) per answer, with `Link` headers (`rel="next"`, `rel="previous"`) to
//! the neighbouring pages. A link's `continuationToken` is opaque: where the page
//! starts (after, or before, a product ID), in the node's page-token format.

use std::collections::VecDeque;

use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::LINK;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value as Json, json};

use super::message::{self, Area, CONTEXT, DspError};
use super::state::DspState;
use crate::audit::log::{Event, EventKind};
use crate::base::clock;
use crate::catalog::CatalogError;
use crate::catalog::product::ProductVersion;
use crate::identity::{MemberRole, Membership};
use crate::service::PeerCaller;
use crate::service::paging::{PageRequest, next_page_token};

/// Datasets per page when the request names no `pageSize`, and the most a page holds.
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;

/// The name page tokens of this listing carry, so a token of another list is refused.
const LIST: &str = "dsp-catalog";

/// The distribution format of every dataset: the consumer pulls over HTTPS.
pub const PULL_FORMAT: &str = "HttpData-PULL";

/// The offer property naming the product's classification (a consumer checks the
/// agreement's policy against the offer compiled for it).
pub const CLASSIFICATION: &str = "lt:classification";

/// The dataset `@id` of a product: its URN, the target of its policies.
pub fn dataset_id(product_id: &str) -> String {
    ProductVersion::target(product_id)
}

/// The `@id` of an offer, by the node's offer ID (`<product>/v<version>`).
pub fn offer_iri(offer_id: &str) -> String {
    format!("urn:liutong:offer:{offer_id}")
}

/// The query of a catalog request: the page wanted.
#[derive(Debug, Default, serde::Deserialize)]
pub struct PageQuery {
    #[serde(rename = "continuationToken")]
    token: Option<String>,
    #[serde(rename = "pageSize")]
    size: Option<u32>,
}

/// `POST /catalog/request`: a `CatalogRequestMessage` in, one page of the catalog out.
pub async fn request(
    State(state): State<DspState>,
    Extension(PeerCaller(member)): Extension<PeerCaller>,
    query: Result<Query<PageQuery>, QueryRejection>,
    body: Body,
) -> Result<Response, DspError> {
    let bad = |reason: String| DspError::bad_request(Area::Catalog, reason);
    consumer(&member, "listing the catalog")?;
    let body = axum::body::to_bytes(body, state.max_body)
        .await
        .map_err(|_| {
            bad(format!(
                "the message is larger than this node accepts ({} bytes, \
                 limits.max_message_bytes) or was cut off",
                state.max_body
            ))
        })?;
    let message = message::parse(&body, "CatalogRequestMessage").map_err(bad)?;
    match message.get("filter") {
        None => {}
        Some(Json::Array(f)) if f.is_empty() => {}
        Some(Json::Array(_)) => {
            return Err(bad(
                "filter: this node does not support catalog filters; send an empty filter \
                 or none, and page through the catalog"
                    .into(),
            ));
        }
        Some(_) => return Err(bad("filter must be an array".into())),
    }
    let Query(query) = query.map_err(|e| {
        bad(format!(
            "the query is not valid ({e}); pass continuationToken and pageSize as the Link \
             headers of the previous page give them"
        ))
    })?;
    let page = PageRequest::parse_with(
        LIST,
        query.size.unwrap_or(0),
        query.token.as_deref().unwrap_or_default(),
        DEFAULT_PAGE,
        MAX_PAGE,
    )
    .map_err(|s| {
        bad(s
            .message()
            .replace("page_token", "continuationToken")
            .replace("next_page_token", "Link header"))
    })?;
    let now = clock::now_utc();
    let catalog = &state.catalog;
    let internal = |e: CatalogError| {
        DspError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Area::Catalog,
            format!("the catalog could not be read: {e}"),
        )
    };
    let (shown, next, previous) = match Cursor::of(page.after()) {
        Cursor::First => {
            let (shown, more) = catalog
                .visible_offers_page(&member, now, None, page.size)
                .map_err(internal)?;
            let next = more.then(|| Cursor::After(last_id(&shown)));
            (shown, next, None)
        }
        Cursor::After(after) => {
            let (shown, more) = catalog
                .visible_offers_page(&member, now, Some(&after), page.size)
                .map_err(internal)?;
            let next = more.then(|| Cursor::After(last_id(&shown)));
            let previous = shown.first().map(|p| Cursor::Before(p.product_id.clone()));
            (shown, next, previous)
        }
        Cursor::Before(before) => {
            let (shown, more_before) =
                page_before(&state, &member, now, &before, page.size).map_err(internal)?;
            let next = shown.last().map(|p| Cursor::After(p.product_id.clone()));
            let previous = more_before.then(|| Cursor::Before(shown[0].product_id.clone()));
            (shown, next, previous)
        }
    };
    let service = state.data_service();
    let datasets = shown
        .iter()
        .map(|p| dataset(p, &service))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DspError::new(StatusCode::INTERNAL_SERVER_ERROR, Area::Catalog, e))?;
    let mut catalog_json = json!({
        "@context": [CONTEXT],
        "@id": format!("urn:liutong:catalog:{}", state.participant),
        "@type": "Catalog",
        "participantId": state.participant.san_uri(),
        "service": [service],
    });
    // The schema wants at least one dataset where the key is present.
    if !datasets.is_empty() {
        catalog_json["dataset"] = Json::Array(datasets);
    }
    log_access(
        &state,
        &member,
        format!(
            "listed the catalog over the Dataspace Protocol: {} offers shown",
            shown.len()
        ),
        None,
    )
    .await?;
    let mut response = axum::Json(catalog_json).into_response();
    for (rel, cursor) in [("next", next), ("previous", previous)] {
        if let Some(cursor) = cursor {
            let link = format!(
                "<{}/catalog/request?continuationToken={}&pageSize={}>; rel=\"{rel}\"",
                state.base_url,
                next_page_token(LIST, Some(&cursor.encode())),
                page.size
            );
            // A base URL from the configuration and a base64url token: always a valid
            // header value; a link that somehow is not is left out rather than sent broken.
            if let Ok(value) = HeaderValue::from_str(&link) {
                response.headers_mut().append(LINK, value);
            }
        }
    }
    Ok(response)
}

/// `GET /catalog/datasets/:id`: one dataset, by its `@id` (the product's URN) or its
/// product ID.
pub async fn dataset_by_id(
    State(state): State<DspState>,
    Extension(PeerCaller(member)): Extension<PeerCaller>,
    Path(id): Path<String>,
) -> Result<Response, DspError> {
    consumer(&member, "reading a dataset")?;
    let unknown = || {
        DspError::not_found(
            Area::Catalog,
            format!(
                "dataset {} is not in this node's catalog for you",
                crate::base::bounded::shown(&id, 128)
            ),
        )
    };
    let product_id = id.strip_prefix(&dataset_id("")).unwrap_or(&id);
    let product_id = crate::base::bounded::id("id", product_id).map_err(|_| unknown())?;
    let internal = |e: CatalogError| {
        DspError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Area::Catalog,
            format!("the catalog could not be read: {e}"),
        )
    };
    // The latest version, as the listing shows it; the catalog decides whether this
    // member may see its offer, exactly as for the gRPC `Catalog.Get`.
    let latest = state
        .catalog
        .products
        .latest(&product_id)
        .map_err(|e| internal(e.into()))?
        .ok_or_else(unknown)?;
    let offer_id = latest.offer_id().ok_or_else(unknown)?;
    let product = match state.catalog.offer(&offer_id, &member, clock::now_utc()) {
        Ok(p) => p,
        Err(CatalogError::NotFound(_)) => return Err(unknown()),
        Err(e) => return Err(internal(e)),
    };
    let mut body = dataset(&product, &state.data_service())
        .map_err(|e| DspError::new(StatusCode::INTERNAL_SERVER_ERROR, Area::Catalog, e))?;
    body.as_object_mut()
        .expect("a dataset is an object")
        .insert("@context".into(), json!([CONTEXT]));
    log_access(
        &state,
        &member,
        format!("read dataset {product_id} over the Dataspace Protocol (offer {offer_id})"),
        Some(product_id.clone()),
    )
    .await?;
    Ok(axum::Json(body).into_response())
}

/// Refuses a member without the consumer role, as the gRPC catalog does.
fn consumer(member: &Membership, what: &str) -> Result<(), DspError> {
    member
        .require_role(MemberRole::Consumer, what)
        .map_err(|e| DspError::new(StatusCode::FORBIDDEN, Area::Catalog, e.to_string()))
}

/// Records who saw the catalog, as the gRPC catalog does; the answer waits for it.
async fn log_access(
    state: &DspState,
    member: &Membership,
    detail: String,
    product: Option<String>,
) -> Result<(), DspError> {
    let mut event = Event::new(EventKind::CatalogAccessed, clock::now(), detail);
    event.participant = Some(member.participant_id.to_string());
    event.product = product;
    state.audit.append(&event).await.map(|_| ()).map_err(|e| {
        DspError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Area::Catalog,
            format!("the node cannot record the access now ({e}); retry later"),
        )
    })
}

/// Where a page starts.
enum Cursor {
    First,
    /// After this product ID.
    After(String),
    /// The page that ends just before this product ID.
    Before(String),
}

impl Cursor {
    fn of(position: Option<&[u8]>) -> Self {
        match position {
            None => Cursor::First,
            Some([b'<', id @ ..]) => Cursor::Before(String::from_utf8_lossy(id).into_owned()),
            Some([b'>', id @ ..]) => Cursor::After(String::from_utf8_lossy(id).into_owned()),
            // Not written by this node; read as a position like any other.
            Some(other) => Cursor::After(String::from_utf8_lossy(other).into_owned()),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let (mark, id) = match self {
            Cursor::First => return b">".to_vec(),
            Cursor::After(id) => (b'>', id),
            Cursor::Before(id) => (b'<', id),
        };
        let mut out = vec![mark];
        out.extend_from_slice(id.as_bytes());
        out
    }
}

fn last_id(shown: &[ProductVersion]) -> String {
    shown
        .last()
        .map(|p| p.product_id.clone())
        .unwrap_or_default()
}

/// The visible offers just before product ID `before`, at most `size`, and whether more
/// come before them. The catalog reads forwards only, so this walks the visible offers
/// from the start, keeping the last `size`: going back costs the offers before the page.
fn page_before(
    state: &DspState,
    member: &Membership,
    now: time::OffsetDateTime,
    before: &str,
    size: usize,
) -> Result<(Vec<ProductVersion>, bool), CatalogError> {
    const BATCH: usize = 256;
    let size = size.max(1);
    let mut window: VecDeque<ProductVersion> = VecDeque::with_capacity(size + 1);
    let mut dropped = false;
    let mut cursor: Option<String> = None;
    loop {
        let (batch, more) =
            state
                .catalog
                .visible_offers_page(member, now, cursor.as_deref(), BATCH)?;
        for p in batch {
            if p.product_id.as_str() >= before {
                return Ok((window.into(), dropped));
            }
            cursor = Some(p.product_id.clone());
            window.push_back(p);
            if window.len() > size {
                window.pop_front();
                dropped = true;
            }
        }
        if !more {
            return Ok((window.into(), dropped));
        }
    }
}

/// A product version as a DCAT dataset (without `@context`): its offer as `hasPolicy`
/// and one `HttpData-PULL` distribution from `service`. The error is for the operator:
/// an offered product whose stored policy is not an ODRL object.
pub fn dataset(p: &ProductVersion, service: &Json) -> Result<Json, String> {
    let offer = offer(p).ok_or_else(|| {
        format!(
            "product {} v{} is listed but its offer policy cannot be shown",
            p.product_id, p.version
        )
    })?;
    let mut dataset = json!({
        "@id": dataset_id(&p.product_id),
        "@type": "Dataset",
        "dct:title": p.title,
        "dcat:version": p.version.to_string(),
        "hasPolicy": [offer],
        "distribution": [{
            "@type": "Distribution",
            "format": PULL_FORMAT,
            "accessService": service,
        }],
    });
    if !p.description.is_empty() {
        dataset["dct:description"] = p.description.clone().into();
    }
    dataset["dct:format"] = p.format.to_string().into();
    dataset["dcat:byteSize"] = p.size.into();
    Ok(dataset)
}

/// The offer of a product version as a DSP `Offer`: the ODRL policy the policy crate
/// exported at publish, with the offer's `@id` in place of the policy's `uid`, without
/// `target` (in a catalog the dataset is the target), its ODRL `@list`s as plain
/// arrays (the protocol's schema takes arrays), and the Liutong profile prefix `lt:` in
/// a context of its own.
pub fn offer(p: &ProductVersion) -> Option<Json> {
    let offer_id = p.offer_id()?;
    let Json::Object(mut policy) = plain_lists(p.policy_odrl.clone()?) else {
        return None;
    };
    for key in ["@context", "target", "uid"] {
        policy.remove(key);
    }
    let mut offer = Map::new();
    offer.insert(
        "@context".into(),
        json!({ "lt": liutong_policy::odrl::PROFILE_NS }),
    );
    offer.insert("@id".into(), offer_iri(&offer_id).into());
    offer.insert("@type".into(), "Offer".into());
    policy.remove("@type");
    offer.extend(policy);
    offer.insert(CLASSIFICATION.into(), p.classification.to_string().into());
    Some(Json::Object(offer))
}

/// `{"@list": [...]}` as a plain array, everywhere in `value`.
pub(super) fn plain_lists(value: Json) -> Json {
    match value {
        Json::Object(mut m) if m.len() == 1 && m.contains_key("@list") => {
            plain_lists(m.remove("@list").expect("checked"))
        }
        Json::Object(m) => Json::Object(m.into_iter().map(|(k, v)| (k, plain_lists(v))).collect()),
        Json::Array(a) => Json::Array(a.into_iter().map(plain_lists).collect()),
        other => other,
    }
}
