//! The console's pages for what flows into this node: members' catalogs and requesting a
//! contract (`/peers`), transfers with their progress (`/transfers`), received copies
//! and their uses (`/copies`), and the latest alerts on the overview.
//!
//! Like every page, each one calls the local API's own services with the session's
//! role: an auditor is refused a peer's catalog and a contract request by the same
//! checks that refuse an auditor certificate.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use liutong_proto::v1::admin_server::Admin as _;
use liutong_proto::v1::audit_server::Audit as _;
use liutong_proto::v1::usage_server::Usage as _;
use liutong_proto::v1::{
    CopyStatus, DspTransferEntry, ListCopiesRequest, ListDspTransfersRequest,
    ListDspTransfersResponse, ListOffersResponse, ListTransfersRequest, ListTransfersResponse,
    PeerCatalogRequest, PeerStatus, Product, RequestContractRequest, SearchRequest, StatusRequest,
    TransferProgress,
};
use maud::{Markup, html};
use serde::Deserialize;
use tonic::Status;

use super::pages::{frame, page};
use super::session::Session;
use super::state::{Console, SignedIn, as_role, lang_of, refused_page, refusing};
use super::words::{Lang, Words};
use crate::alerts::{Alert, Severity};
use crate::base::format::format_unix;
use crate::local::LocalRole;

/// Offers asked of a peer for one page.
const OFFERS_PER_PAGE: u32 = 20;

/// Transfers, DSP transfers or copies on one page.
const ROWS_PER_PAGE: u32 = 50;

/// Longest page token the console passes on: the node's own are far shorter, and a
/// peer's is sent back to that peer only.
const MAX_PAGE_TOKEN: usize = 1024;

/// Longest peer address: a DNS name is at most 253 bytes, plus a port or a scheme.
const MAX_ADDRESS: usize = 300;

/// Rules of an offer's policy the catalog shows; the offer itself has them all.
const MAX_RULES_SHOWN: usize = 8;

type Shared = State<Arc<Console>>;

/// The routes of these pages, merged into the console's router.
pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/peers", get(peers))
        .route("/peers/request", post(request_contract))
        .route("/transfers", get(transfers))
        .route("/copies", get(copies))
        .route("/copies/{agreement}", get(copy_uses))
}

// ---- addresses and paging -----------------------------------------------------------

/// A peer's address as `liutong catalog --peer` takes it: the peer API's `host:port`
/// (a DNS name, an IPv4 address or a bracketed IPv6 address), or a Dataspace Protocol
/// endpoint `https://host:port[/path]`. Read here so that a mistyped address is
/// refused with a word on what to type, before any connection is tried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAddress(String);

/// Why a peer address was refused (shown in the page's language by [`Self::words`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    #[error("give the peer's address (host:port)")]
    Empty,
    #[error("the peer address is too long; give host:port or https://host:port")]
    TooLong,
    #[error(
        "the peer address is malformed: give host:port (e.g. 10.0.0.5:7700) or https://host:port"
    )]
    Malformed,
}

impl AddressError {
    fn words(self, w: &Words) -> &'static str {
        match self {
            Self::Empty => w.address_empty,
            Self::TooLong => w.address_too_long,
            Self::Malformed => w.address_malformed,
        }
    }
}

impl PeerAddress {
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(AddressError::Empty);
        }
        if text.len() > MAX_ADDRESS {
            return Err(AddressError::TooLong);
        }
        let authority = match text.strip_prefix("https://") {
            Some(rest) => {
                let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                if !path.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') {
                    return Err(AddressError::Malformed);
                }
                authority
            }
            None => text,
        };
        if host_and_port(authority) {
            Ok(Self(text.to_owned()))
        } else {
            Err(AddressError::Malformed)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `text` is `host:port` with a port from 1 to 65535.
fn host_and_port(text: &str) -> bool {
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => match rest.split_once("]:") {
            Some((ip, port)) => (ip.parse::<std::net::Ipv6Addr>().is_ok(), port),
            None => return false,
        },
        None => match text.rsplit_once(':') {
            Some((host, port)) => (dns_name_or_ipv4(host), port),
            None => return false,
        },
    };
    let port_ok =
        port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p != 0);
    host && port_ok
}

/// A DNS name (labels of letters, digits and inner hyphens) or an IPv4 address.
fn dns_name_or_ipv4(host: &str) -> bool {
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A value for a link's query string: everything but unreserved characters escaped.
fn query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The share received of a total, in whole percent (rounded down, so 100 % means all
/// of it); a completed transfer of nothing is whole.
pub fn percent(received: u64, total: u64, completed: bool) -> u64 {
    if total == 0 {
        return if completed { 100 } else { 0 };
    }
    (u128::from(received.min(total)) * 100 / u128::from(total)) as u64
}

/// A page token from a link, refused when longer than any this console hands out.
fn page_token(lang: Lang, token: String) -> Result<String, Box<Response>> {
    if token.len() > MAX_PAGE_TOKEN {
        let w = lang.words();
        return Err(Box::new(super::pages::message(
            lang,
            StatusCode::BAD_REQUEST,
            w.failed,
            w.page_token_too_long,
        )));
    }
    Ok(token)
}

// ---- peers' catalogs ------------------------------------------------------------------

#[derive(Deserialize)]
struct PeersQuery {
    #[serde(default)]
    peer: String,
    #[serde(default)]
    page: String,
}

/// What the catalog part of `/peers` shows.
enum CatalogView {
    /// No peer asked for yet.
    None,
    Listed(PeerAddress, ListOffersResponse),
    /// The address was refused, or the call was: the HTTP status and what to say.
    Refused(StatusCode, String),
}

async fn peers(
    State(console): Shared,
    SignedIn(session): SignedIn,
    headers: HeaderMap,
    Query(q): Query<PeersQuery>,
) -> Response {
    let lang = lang_of(&headers);
    let token = match page_token(lang, q.page) {
        Ok(t) => t,
        Err(page) => return *page,
    };
    let members = match console
        .admin
        .status(as_role(&session, StatusRequest {}))
        .await
    {
        Ok(s) => s.into_inner().peers,
        Err(status) => return refused_page(lang, &status),
    };
    let view = if q.peer.trim().is_empty() {
        CatalogView::None
    } else {
        match PeerAddress::parse(&q.peer) {
            Err(e) => CatalogView::Refused(StatusCode::BAD_REQUEST, e.words(lang.words()).into()),
            Ok(address) => catalog_of(&console, &session, lang, address, token).await,
        }
    };
    let response = peers_page(lang, &session, &members, &q.peer, &view);
    match &view {
        CatalogView::Refused(code, text) if code.is_client_error() => refusing(
            (*code, response).into_response(),
            if *code == StatusCode::FORBIDDEN {
                tonic::Code::PermissionDenied
            } else {
                tonic::Code::InvalidArgument
            },
            text,
        ),
        CatalogView::Refused(code, _) => (*code, response).into_response(),
        _ => response.into_response(),
    }
}

async fn catalog_of(
    console: &Console,
    session: &Session,
    lang: Lang,
    address: PeerAddress,
    page_token: String,
) -> CatalogView {
    let request = PeerCatalogRequest {
        address: address.as_str().to_owned(),
        page_size: OFFERS_PER_PAGE,
        page_token,
    };
    match console.admin.peer_catalog(as_role(session, request)).await {
        Ok(list) => CatalogView::Listed(address, list.into_inner()),
        Err(status) => {
            let (code, text) = catalog_refusal(lang.words(), &status);
            CatalogView::Refused(code, text)
        }
    }
}

/// A refused catalog call in words: a peer that cannot be reached is said so plainly,
/// with the connection's own reason after it.
fn catalog_refusal(w: &Words, status: &Status) -> (StatusCode, String) {
    match status.code() {
        tonic::Code::PermissionDenied => (
            StatusCode::FORBIDDEN,
            format!("{} ({})", w.forbidden, status.message()),
        ),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => (
            StatusCode::BAD_GATEWAY,
            format!("{} ({})", w.peer_unreachable, status.message()),
        ),
        _ => (StatusCode::BAD_GATEWAY, status.message().to_owned()),
    }
}

fn peers_page(
    lang: Lang,
    session: &Session,
    members: &[PeerStatus],
    typed: &str,
    view: &CatalogView,
) -> Markup {
    let w = lang.words();
    let body = html! {
        h2 { (w.trust_list) " · " (w.members) }
        table #members {
            thead { tr { th { (w.participant) } th { (w.negotiations) } } }
            tbody {
                @for m in members {
                    tr { td { (m.name) " (" (m.participant_id) ")" } td { (m.negotiations) } }
                }
            }
        }
        h2 { (w.catalog) }
        form #catalog-form method="get" action="/peers" {
            label { (w.peer_address) " "
                input #peer-address type="text" name="peer" value=(typed) required
                    maxlength=(MAX_ADDRESS) size="40" spellcheck="false" autocomplete="off";
            }
            " "
            button #browse type="submit" { (w.browse_catalog) }
            p.help { (w.peer_address_help) }
        }
        @match view {
            CatalogView::None => {}
            CatalogView::Refused(_, text) => { p #catalog-refused role="alert" { (text) } }
            CatalogView::Listed(address, list) => { (offers(w, session, address, list)) }
        }
    };
    frame(lang, Some(session), "/peers", w.peer_catalogs, body)
}

fn offers(
    w: &Words,
    session: &Session,
    address: &PeerAddress,
    list: &ListOffersResponse,
) -> Markup {
    let admin = session.role == LocalRole::Admin;
    html! {
        @if list.offers.is_empty() {
            p #no-offers { (w.no_offers) }
        } @else {
            table #offers {
                thead { tr {
                    th { (w.title_label) } th { (w.classification) } th { (w.policy) }
                    th { (w.offer) }
                    @if admin { th { (w.actions) } }
                } }
                tbody {
                    @for o in &list.offers { (offer_row(w, session, address, o, admin)) }
                }
            }
        }
        @if !list.next_page_token.is_empty() && list.next_page_token.len() <= MAX_PAGE_TOKEN {
            p { a #next-offers href={ "/peers?peer=" (query_value(address.as_str())) "&page=" (query_value(&list.next_page_token)) } { (w.more) " →" } }
        }
    }
}

fn offer_row(
    w: &Words,
    session: &Session,
    address: &PeerAddress,
    o: &Product,
    admin: bool,
) -> Markup {
    html! {
        tr data-offer=(o.offer_id) {
            td.title { (o.title) }
            td { (o.classification) }
            td { ul.policy { @for line in policy_summary(w, &o.policy_odrl_json) { li { (line) } } } }
            td { code { (o.offer_id) } }
            @if admin {
                td {
                    form.request method="post" action="/peers/request" {
                        input type="hidden" name="csrf" value=(session.csrf);
                        input type="hidden" name="peer" value=(address.as_str());
                        input type="hidden" name="offer_id" value=(o.offer_id);
                        label { (w.purpose) " "
                            input type="text" name="purpose" required maxlength="100" size="20";
                        }
                        " "
                        button.request-contract type="submit" { (w.request_contract) }
                    }
                }
            }
        }
    }
}

/// An offer's policy in a few lines: each rule's action, constraints and duties, as
/// the policy crate writes them. The policy comes from the peer, so it is read by the
/// policy crate's own reader and shown only as far as it reads.
pub fn policy_summary(w: &Words, odrl_json: &str) -> Vec<String> {
    let policy = match liutong_policy::Policy::from_odrl(odrl_json) {
        Ok(p) => p,
        Err(e) => return vec![format!("{}: {e}", w.policy_unreadable)],
    };
    let join = |items: Vec<String>| items.join(", ");
    let rule = |sign: &str, r: &liutong_policy::Rule| {
        let mut line = format!("{sign} {}", r.action);
        if !r.constraints.is_empty() {
            line.push_str(&format!(
                ": {}",
                join(r.constraints.iter().map(|c| c.to_string()).collect())
            ));
        }
        if !r.duties.is_empty() {
            line.push_str(&format!(
                "; {} {}",
                w.duties,
                join(r.duties.iter().map(|d| d.to_string()).collect())
            ));
        }
        line
    };
    let mut lines: Vec<String> = policy
        .permissions
        .iter()
        .map(|r| rule("✓", r))
        .chain(policy.prohibitions.iter().map(|r| rule("✗", r)))
        .chain(policy.obligations.iter().map(|d| format!("! {d}")))
        .collect();
    if lines.len() > MAX_RULES_SHOWN {
        let more = lines.len() - MAX_RULES_SHOWN;
        lines.truncate(MAX_RULES_SHOWN);
        lines.push(format!("… +{more}"));
    }
    lines
}

#[derive(Deserialize)]
struct RequestForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    peer: String,
    #[serde(default)]
    offer_id: String,
    #[serde(default)]
    purpose: String,
}

/// The request-a-contract form: `Admin.RequestContract`, which refuses any role but
/// admin. Back to the contracts, where the new negotiation is listed.
async fn request_contract(
    State(console): Shared,
    headers: HeaderMap,
    Form(form): Form<RequestForm>,
) -> Response {
    let session = match console
        .check_form(&headers, "requesting a contract", &form.csrf)
        .await
    {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    let lang = lang_of(&headers);
    let peer = match PeerAddress::parse(&form.peer) {
        Ok(p) => p,
        Err(e) => {
            let w = lang.words();
            return super::pages::message(lang, StatusCode::BAD_REQUEST, w.failed, e.words(w));
        }
    };
    let request = RequestContractRequest {
        peer: peer.as_str().to_owned(),
        offer_id: form.offer_id,
        purpose: form.purpose,
    };
    let outcome = console
        .admin
        .request_contract(as_role(&session, request))
        .await;
    console.after_action(&headers, outcome)
}

// ---- transfers -----------------------------------------------------------------------

#[derive(Deserialize)]
struct TransfersQuery {
    #[serde(default)]
    page: String,
    #[serde(default)]
    dsp_page: String,
}

async fn transfers(
    State(console): Shared,
    SignedIn(session): SignedIn,
    headers: HeaderMap,
    Query(q): Query<TransfersQuery>,
) -> Response {
    let lang = lang_of(&headers);
    let (pull_page, dsp_page) = match (page_token(lang, q.page), page_token(lang, q.dsp_page)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(refused), _) | (_, Err(refused)) => return *refused,
    };
    let pulls = ListTransfersRequest {
        page_size: ROWS_PER_PAGE,
        page_token: pull_page.clone(),
    };
    let pulls = match console.admin.list_transfers(as_role(&session, pulls)).await {
        Ok(list) => list.into_inner(),
        Err(status) => return refused_page(lang, &status),
    };
    let dsp = ListDspTransfersRequest {
        page_size: ROWS_PER_PAGE,
        page_token: dsp_page.clone(),
    };
    let dsp = match console
        .admin
        .list_dsp_transfers(as_role(&session, dsp))
        .await
    {
        Ok(list) => list.into_inner(),
        Err(status) => return refused_page(lang, &status),
    };
    page(transfers_page(
        lang,
        &session,
        &pulls,
        &dsp,
        (&pull_page, &dsp_page),
    ))
}

fn transfers_page(
    lang: Lang,
    session: &Session,
    pulls: &ListTransfersResponse,
    dsp: &ListDspTransfersResponse,
    (page, dsp_page): (&str, &str),
) -> Markup {
    let w = lang.words();
    let body = html! {
        h2 { (w.received_transfers) }
        @if pulls.transfers.is_empty() {
            p { (w.no_transfers) }
        } @else {
            table #transfers {
                thead { tr {
                    th { (w.agreement) } th { (w.products) } th { (w.state) }
                    th { (w.progress) } th { (w.chunks) } th { (w.reason) }
                } }
                tbody { @for t in &pulls.transfers { (transfer_row(t)) } }
            }
        }
        @if !pulls.next_page_token.is_empty() {
            p { a #next-transfers href={ "/transfers?page=" (query_value(&pulls.next_page_token)) "&dsp_page=" (query_value(dsp_page)) } { (w.more) " →" } }
        }
        h2 { (w.dsp_transfers) }
        @if dsp.transfers.is_empty() {
            p { (w.no_transfers) }
        } @else {
            table #dsp-transfers {
                thead { tr {
                    th { (w.side) } th { (w.participant) } th { (w.agreement) } th { (w.state) }
                    th { (w.bytes_served) } th { (w.reason) } th { (w.updated) }
                } }
                tbody { @for t in &dsp.transfers { (dsp_row(t)) } }
            }
        }
        @if !dsp.next_page_token.is_empty() {
            p { a #next-dsp-transfers href={ "/transfers?page=" (query_value(page)) "&dsp_page=" (query_value(&dsp.next_page_token)) } { (w.more) " →" } }
        }
    };
    frame(lang, Some(session), "/transfers", w.transfers, body)
}

fn transfer_row(t: &TransferProgress) -> Markup {
    let share = percent(t.bytes_received, t.bytes_total, t.state == "COMPLETED");
    html! {
        tr data-agreement=(t.agreement_id) {
            td { code { (t.agreement_id) } }
            td { (t.product_id) " v" (t.version) }
            td.state { (t.state) }
            td {
                progress max=(t.bytes_total.max(1)) value=(t.bytes_received.min(t.bytes_total.max(1))) {
                    (share) "%"
                }
                " " span.percent { (share) " %" }
                " (" (t.bytes_received) " / " (t.bytes_total) " B)"
            }
            td { (t.chunks_received) " / " (t.chunks_total) }
            td { (t.reason) }
        }
    }
}

fn dsp_row(t: &DspTransferEntry) -> Markup {
    html! {
        tr data-agreement=(t.agreement_id) {
            td { (t.role) }
            td { (t.peer) }
            td { code { (t.agreement_id) } }
            td.state { (t.state) }
            td { (t.bytes_served) " B" }
            td { (t.reason) }
            td { @if t.updated_at > 0 { (format_unix(t.updated_at)) } }
        }
    }
}

// ---- received copies -----------------------------------------------------------------

#[derive(Deserialize)]
struct CopiesQuery {
    #[serde(default)]
    page: String,
}

async fn copies(
    State(console): Shared,
    SignedIn(session): SignedIn,
    headers: HeaderMap,
    Query(q): Query<CopiesQuery>,
) -> Response {
    let lang = lang_of(&headers);
    let token = match page_token(lang, q.page) {
        Ok(t) => t,
        Err(page) => return *page,
    };
    let request = ListCopiesRequest {
        page_size: ROWS_PER_PAGE,
        page_token: token,
    };
    match console.usage.list_copies(as_role(&session, request)).await {
        Ok(list) => {
            let list = list.into_inner();
            page(copies_page(
                lang,
                &session,
                &list.copies,
                &list.next_page_token,
            ))
        }
        Err(status) => refused_page(lang, &status),
    }
}

fn copies_page(lang: Lang, session: &Session, copies: &[CopyStatus], next: &str) -> Markup {
    let w = lang.words();
    let when = |t: i64| if t > 0 { format_unix(t) } else { String::new() };
    let body = html! {
        @if copies.is_empty() {
            p { (w.no_copies) }
        } @else {
            table #copies {
                thead { tr {
                    th { (w.products) } th { (w.provider) } th { (w.purpose) } th { (w.state) }
                    th { (w.uses) } th { (w.last_use) } th { (w.delete_at) } th { (w.size) }
                } }
                tbody {
                    @for c in copies {
                        tr data-agreement=(c.agreement_id) {
                            td { (c.product_id) " v" (c.version) }
                            td { (c.provider) }
                            td { (c.purpose) }
                            td.state { (c.state) @if !c.reason.is_empty() { " (" (c.reason) ")" } }
                            td.uses { a href={ "/copies/" (query_value(&c.agreement_id)) } { (c.uses) } }
                            td { (when(c.last_used_unix)) }
                            td { (when(c.delete_at_unix)) }
                            td { (c.size) " B" }
                        }
                    }
                }
            }
        }
        @if !next.is_empty() {
            p { a #next-copies href={ "/copies?page=" (query_value(next)) } { (w.more) " →" } }
        }
    };
    frame(lang, Some(session), "/copies", w.received_copies, body)
}

#[derive(Deserialize)]
struct UsesQuery {
    /// The audit-log entry to scan on from.
    #[serde(default)]
    from: u64,
}

/// A copy's uses: the audit log's `usage` entries for its agreement, one bounded
/// `Audit.Search` page at a time (the search stops after a bounded scan and says where
/// to go on).
async fn copy_uses(
    State(console): Shared,
    SignedIn(session): SignedIn,
    headers: HeaderMap,
    Path(agreement): Path<String>,
    Query(q): Query<UsesQuery>,
) -> Response {
    let lang = lang_of(&headers);
    let request = SearchRequest {
        agreement: agreement.clone(),
        from: q.from,
        ..SearchRequest::default()
    };
    let found = match console.audit.search(as_role(&session, request)).await {
        Ok(found) => found.into_inner(),
        Err(status) => return refused_page(lang, &status),
    };
    let uses: Vec<(u64, String, String)> = found
        .matches
        .iter()
        .filter_map(|m| {
            let event: serde_json::Value = serde_json::from_slice(&m.data).ok()?;
            (event["kind"] == "usage").then(|| {
                (
                    m.leaf_index,
                    event["time"].as_i64().map(format_unix).unwrap_or_default(),
                    event["detail"].as_str().unwrap_or_default().to_owned(),
                )
            })
        })
        .collect();
    page(uses_page(
        lang,
        &session,
        &agreement,
        &uses,
        found.next_from,
    ))
}

fn uses_page(
    lang: Lang,
    session: &Session,
    agreement: &str,
    uses: &[(u64, String, String)],
    next_from: u64,
) -> Markup {
    let w = lang.words();
    let body = html! {
        p { (w.agreement) " " code #agreement { (agreement) } }
        @if uses.is_empty() {
            p #no-uses { (w.no_uses) }
        } @else {
            table #uses {
                thead { tr { th { "#" } th { (w.time) } th { (w.entry) } } }
                tbody {
                    @for (index, time, detail) in uses {
                        tr { td { (index) } td { (time) } td.detail { (detail) } }
                    }
                }
            }
        }
        @if next_from > 0 {
            p { a #next-uses href={ "/copies/" (query_value(agreement)) "?from=" (next_from) } { (w.more) " →" } }
        }
    };
    frame(lang, Some(session), "/copies", w.uses, body)
}

// ---- the latest alerts ---------------------------------------------------------------

/// The overview's section of the latest alerts (kept in memory by the node's alerting;
/// the audit log has them all).
pub(super) fn recent_alerts(lang: Lang, alerts: &[Alert]) -> Markup {
    let w = lang.words();
    html! {
        h2 { (w.recent_alerts) }
        @if alerts.is_empty() {
            p #no-alerts { (w.no_alerts) }
        } @else {
            table #alerts {
                thead { tr { th { (w.time) } th { (w.rule) } th { (w.severity) } th { (w.detail) } } }
                tbody {
                    @for a in alerts {
                        tr data-rule=(a.rule.name()) {
                            td { (a.time) }
                            td.rule { code { (a.rule.name()) } }
                            td.severity data-severity=(a.severity.name()) { (severity_word(w, a.severity)) }
                            td.detail { (a.detail) }
                        }
                    }
                }
            }
        }
    }
}

fn severity_word(w: &Words, severity: Severity) -> &'static str {
    match severity {
        Severity::Warning => w.warning,
        Severity::Critical => w.critical,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_address_is_host_and_port_or_an_https_endpoint() {
        for good in [
            "127.0.0.1:7700",
            "node.example.cn:7700",
            "[::1]:7700",
            "https://dsp.example.cn:8443",
            "https://dsp.example.cn:8443/api/dsp",
            "  10.0.0.5:1 ",
        ] {
            assert!(PeerAddress::parse(good).is_ok(), "{good:?}");
        }
        assert_eq!(PeerAddress::parse(" a:1 ").unwrap().as_str(), "a:1");
        for (bad, why) in [
            ("", AddressError::Empty),
            ("   ", AddressError::Empty),
            ("127.0.0.1", AddressError::Malformed),
            ("127.0.0.1:0", AddressError::Malformed),
            ("127.0.0.1:65536", AddressError::Malformed),
            ("127.0.0.1:+80", AddressError::Malformed),
            ("::1:7700", AddressError::Malformed),
            ("[::1]", AddressError::Malformed),
            ("[nonsense]:7700", AddressError::Malformed),
            ("http://node.example.cn:7700", AddressError::Malformed),
            ("https://node.example.cn", AddressError::Malformed),
            ("https://node.example.cn:8443/a b", AddressError::Malformed),
            ("-node.example.cn:7700", AddressError::Malformed),
            ("node..example.cn:7700", AddressError::Malformed),
            ("node.example.cn:7700/x", AddressError::Malformed),
            ("user@node.example.cn:7700", AddressError::Malformed),
        ] {
            assert_eq!(PeerAddress::parse(bad), Err(why), "{bad:?}");
        }
        let long = format!("{}.cn:7700", "a".repeat(MAX_ADDRESS));
        assert_eq!(PeerAddress::parse(&long), Err(AddressError::TooLong));
    }

    #[test]
    fn progress_is_whole_only_when_all_of_it_arrived() {
        assert_eq!(percent(0, 1000, false), 0);
        assert_eq!(percent(999, 1000, false), 99);
        assert_eq!(percent(1000, 1000, true), 100);
        assert_eq!(percent(5000, 1000, false), 100, "never above the total");
        assert_eq!(percent(u64::MAX - 1, u64::MAX, false), 99);
        assert_eq!(percent(0, 0, true), 100);
        assert_eq!(percent(0, 0, false), 0);
    }

    #[test]
    fn link_values_are_escaped() {
        assert_eq!(query_value("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(
            query_value("https://h:1/p?x=1&y"),
            "https%3A%2F%2Fh%3A1%2Fp%3Fx%3D1%26y"
        );
        assert_eq!(query_value("页"), "%E9%A1%B5");
    }

    #[test]
    fn a_policy_is_summarised_rule_by_rule_and_a_broken_one_said_so() {
        let w = Lang::En.words();
        let policy = liutong_policy::Policy::from_toml(
            r#"
uid = "urn:liutong:policy:t"
type = "set"

[[permission]]
action = "use"
constraint = [{ leftOperand = "purpose", operator = "isA", rightOperand = "research" }]
duty = [{ action = "log" }]

[[prohibition]]
action = "distribute"
"#,
        );
        let lines = policy_summary(w, &policy.unwrap().to_odrl_string());
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("✓ use: purpose"), "{lines:?}");
        assert!(
            lines[0].contains("research") && lines[0].contains("log"),
            "{lines:?}"
        );
        assert!(lines[1].starts_with("✗ distribute"), "{lines:?}");
        let broken = policy_summary(w, "{\"@type\": \"Nothing\"");
        assert_eq!(broken.len(), 1);
        assert!(broken[0].starts_with(w.policy_unreadable), "{broken:?}");
    }
}
