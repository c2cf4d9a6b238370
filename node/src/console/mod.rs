//! The web console: pages for department IT (admin) and auditors, served by the node on
//! its own HTTPS listener (`[console] listen`).
//!
//! - **Sign-in** is by a one-time link from `liutong console login` (minted on the local
//!   API, so only a holder of a local role certificate can make one); redeeming it opens
//!   a session bound to the link's role, named by a `__Host-` cookie (Secure, HttpOnly,
//!   SameSite=Strict).
//! - **Every call goes through the local API's own services** with the session's role,
//!   so a role means on a page exactly what it means on the local API: an auditor's
//!   session is refused an approval by the same check that refuses an auditor
//!   certificate.
//! - **Every form** carries the session's CSRF token, and a POST from another origin is
//!   refused; every refusal is on the audit log.
//! - **Proofs are checked in the browser**: the audit page hands the browser the
//!   checkpoint note and RFC 9162 inclusion proofs, and its script verifies the Ed25519
//!   signature against a verifier key the auditor pins, and the proofs with SHA-256,
//!   both through WebCrypto. Nothing the page says about a proof has to be trusted.

mod evidence;
mod flows;
mod pages;
pub mod session;
mod state;
pub mod words;

pub use state::Console;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use liutong_proto::v1::admin_server::Admin as _;
use liutong_proto::v1::audit_server::Audit as _;
use serde::Deserialize;
use tonic::Status;

use self::session::COOKIE;
use self::state::{Refused, SignedIn, as_role, cookie, lang_of, refused_page, refusing, signed_in};
use self::words::Lang;
use crate::audit::event::EventKind;
use crate::base::clock::now;
use crate::config::NodeConfig;
use crate::service::limits::Caller;
use crate::tls::certs::{CertError, CertificateAuthority, HostNames, LeafSpec};
use crate::tls::{TlsError, TlsIdentity};

/// How long a sign-in link may wait before it is used.
pub const LINK_LIFETIME: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// Largest form the console accepts.
const MAX_FORM: usize = 64 * 1024;

/// Largest upload of the publish form; larger products are published with
/// `liutong product publish`, which streams.
pub const MAX_UPLOAD: usize = 16 * 1024 * 1024;

type Shared = State<Arc<Console>>;

/// The console's routes.
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/login", get(login))
        .route("/logout", post(logout))
        .route("/lang/{lang}", get(switch_language))
        .route(
            "/products",
            get(products)
                .post(publish)
                .layer(DefaultBodyLimit::max(MAX_UPLOAD + MAX_FORM)),
        )
        .route("/products/new", get(publish_form))
        .route("/products/policy-check", post(policy_check))
        .route("/products/{id}", get(product))
        .route("/contracts", get(contracts))
        .route("/contracts/{id}/approve", post(approve))
        .route("/contracts/{id}/reject", post(reject))
        .route("/audit", get(audit))
        .route("/audit/checkpoint", get(checkpoint_json))
        .route("/audit/proof/{index}", get(proof_json))
        .route("/audit/consistency", get(consistency_json))
        .route("/audit/search", get(search))
        .route("/audit/checkpoints", get(checkpoints))
        .route("/audit/charts", get(charts))
        .merge(flows::routes())
        .route("/static/console.js", get(script))
        .route("/static/console.css", get(style))
        // Browsers ask for it on every page; the console has none, and says so without
        // a refusal on record.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .layer(DefaultBodyLimit::max(MAX_FORM))
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            record_refusals,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(console)
}

/// The console's TLS configuration: a server certificate from the node's local CA for
/// the listen address (and `localhost`), issued at each start and written to
/// `local/console.crt` (`local/console.key`, 0600). No client certificate is asked
/// for: browsers sign in with links.
pub fn tls_config(
    config: &NodeConfig,
    listen: SocketAddr,
) -> Result<Arc<rustls::ServerConfig>, ConsoleError> {
    let dir = config.local_dir();
    let ca = CertificateAuthority::load(&dir.join("ca.crt"), &dir.join("ca.key"))?;
    let now = crate::base::clock::now_utc();
    let mut names = HostNames {
        dns: vec!["localhost".to_owned()],
        ips: vec![listen.ip()],
    };
    if listen.ip().is_unspecified() {
        names.ips = vec![std::net::Ipv4Addr::LOCALHOST.into()];
    }
    let issued = ca.issue_for_hosts(
        &LeafSpec {
            common_name: "Liutong web console".to_owned(),
            san_uris: Vec::new(),
            not_before: now - time::Duration::minutes(5),
            not_after: now + time::Duration::days(90),
        },
        &names,
    )?;
    let (cert, key) = (dir.join("console.crt"), dir.join("console.key"));
    issued.save(&cert, &key)?;
    let identity = TlsIdentity::load(&cert, &key)?;
    let provider = crate::tls::provider();
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)
        .map_err(TlsError::Config)?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

/// The console's base URL for a listener bound at `addr`.
pub fn origin_of(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    format!("https://{host}:{}", addr.port())
}

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("the console's certificate: {0}")]
    Cert(#[from] CertError),
    #[error("the console's TLS settings: {0}")]
    Tls(#[from] TlsError),
}

// ---- sign-in -----------------------------------------------------------------------

#[derive(Deserialize)]
struct LoginQuery {
    #[serde(default)]
    token: String,
}

async fn login(
    State(console): Shared,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let lang = lang_of(&headers);
    let Some(role) = console.links.redeem(&q.token) else {
        let w = lang.words();
        return refusing(
            pages::message(lang, StatusCode::FORBIDDEN, w.failed, w.link_refused),
            tonic::Code::PermissionDenied,
            "a sign-in link was refused (unknown, already used or expired)",
        );
    };
    let id = match console.sessions.open(role) {
        Ok(id) => id,
        Err(_) => {
            return pages::message(
                lang,
                StatusCode::INTERNAL_SERVER_ERROR,
                lang.words().failed,
                "the system's random number generator failed",
            );
        }
    };
    console
        .record(
            EventKind::ConsoleSignIn,
            format!("console: a browser signed in with the {role} role"),
        )
        .await;
    let cookie = format!(
        "{COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        console.sessions.lifetime().as_secs()
    );
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(console): Shared,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(refused) = console
        .check_form(&headers, "signing out", &form.csrf)
        .await
    {
        return *refused;
    }
    if let Some(id) = cookie(&headers, COOKIE) {
        console.sessions.close(id);
    }
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "__Host-liutong-session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    response
}

#[derive(Deserialize)]
struct BackQuery {
    #[serde(default)]
    back: String,
}

async fn switch_language(Path(lang): Path<String>, Query(q): Query<BackQuery>) -> Response {
    let lang = if lang == "en" { Lang::En } else { Lang::Zh };
    let mut response = Redirect::to(local_path(&q.back)).into_response();
    let cookie = format!(
        "{}={}; Path=/; Secure; SameSite=Strict; Max-Age=31536000",
        Lang::COOKIE,
        lang.cookie_value()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `path` when it is a path on this console, else `/`: never an address elsewhere. Only
/// visible ASCII is taken, since browsers drop tabs and line breaks from a `Location`
/// (`/<tab>/host` would become `//host`, another site).
fn local_path(path: &str) -> &str {
    let local = path.starts_with('/')
        && !path.starts_with("//")
        && path.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    if local { path } else { "/" }
}

// ---- pages -------------------------------------------------------------------------

async fn overview(
    State(console): Shared,
    SignedIn(session): SignedIn,
    headers: HeaderMap,
) -> Response {
    let lang = lang_of(&headers);
    match console
        .admin
        .status(as_role(&session, liutong_proto::v1::StatusRequest {}))
        .await
    {
        Ok(status) => pages::overview(
            lang,
            &session,
            &status.into_inner(),
            flows::recent_alerts(lang, &console.alerts.recent()),
        ),
        Err(status) => refused_page(lang, &status),
    }
}

#[derive(Deserialize)]
struct PageQuery {
    #[serde(default)]
    page: String,
}

async fn contracts(
    State(console): Shared,
    SignedIn(session): SignedIn,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    let lang = lang_of(&headers);
    let request = liutong_proto::v1::ListContractsRequest {
        page_size: 50,
        page_token: q.page,
    };
    match console
        .admin
        .list_contracts(as_role(&session, request))
        .await
    {
        Ok(list) => pages::contracts(lang, &session, &list.into_inner()),
        Err(status) => refused_page(lang, &status),
    }
}

async fn approve(
    State(console): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let session = match console
        .check_form(&headers, "approving a contract", &form.csrf)
        .await
    {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    let request = liutong_proto::v1::ApproveContractRequest { negotiation_id: id };
    let outcome = console
        .admin
        .approve_contract(as_role(&session, request))
        .await;
    console.after_action(&headers, outcome)
}

#[derive(Deserialize)]
struct RejectForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

async fn reject(
    State(console): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<RejectForm>,
) -> Response {
    let session = match console
        .check_form(&headers, "rejecting a contract", &form.csrf)
        .await
    {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    let request = liutong_proto::v1::RejectContractRequest {
        negotiation_id: id,
        reason: form.reason,
    };
    let outcome = console
        .admin
        .reject_contract(as_role(&session, request))
        .await;
    console.after_action(&headers, outcome)
}

#[derive(Deserialize)]
struct EntriesQuery {
    /// The first entry shown; absent: the latest page.
    from: Option<u64>,
}

async fn audit(
    State(console): Shared,
    SignedIn(session): SignedIn,
    headers: HeaderMap,
    Query(q): Query<EntriesQuery>,
) -> Response {
    let lang = lang_of(&headers);
    let checkpoint = match console
        .audit
        .get_checkpoint(as_role(
            &session,
            liutong_proto::v1::GetCheckpointRequest {},
        ))
        .await
    {
        Ok(c) => Some(c.into_inner()),
        Err(status) if status.code() == tonic::Code::NotFound => None,
        Err(status) => return refused_page(lang, &status),
    };
    let size = console.log.size();
    let from = q
        .from
        .unwrap_or_else(|| size.saturating_sub(pages::ENTRIES_PER_PAGE))
        .min(size);
    let to = (from + pages::ENTRIES_PER_PAGE).min(size);
    let entries = match console
        .audit
        .get_entries(as_role(
            &session,
            liutong_proto::v1::GetEntriesRequest { from, to },
        ))
        .await
    {
        Ok(e) => e.into_inner(),
        Err(status) => return refused_page(lang, &status),
    };
    pages::audit(lang, &session, checkpoint.as_ref(), &entries, from, size)
}

async fn checkpoint_json(
    State(console): Shared,
    SignedIn(session): SignedIn,
    headers: HeaderMap,
) -> Response {
    match console
        .audit
        .get_checkpoint(as_role(
            &session,
            liutong_proto::v1::GetCheckpointRequest {},
        ))
        .await
    {
        Ok(c) => {
            let c = c.into_inner();
            axum::Json(serde_json::json!({ "note": c.note, "size": c.size })).into_response()
        }
        Err(status) => refused_page(lang_of(&headers), &status),
    }
}

#[derive(Deserialize)]
struct ProofQuery {
    size: u64,
}

async fn proof_json(
    State(console): Shared,
    SignedIn(session): SignedIn,
    headers: HeaderMap,
    Path(index): Path<u64>,
    Query(q): Query<ProofQuery>,
) -> Response {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let request = liutong_proto::v1::ProveInclusionRequest {
        index,
        size: q.size,
    };
    match console
        .audit
        .prove_inclusion(as_role(&session, request))
        .await
    {
        Ok(p) => {
            let p = p.into_inner();
            axum::Json(serde_json::json!({
                "index": p.leaf_index,
                "size": p.tree_size,
                "entry": b64.encode(&p.data),
                "proof": p.proof.iter().map(|h| b64.encode(h)).collect::<Vec<_>>(),
            }))
            .into_response()
        }
        Err(status) => refused_page(lang_of(&headers), &status),
    }
}

#[derive(Deserialize)]
struct ConsistencyQuery {
    from: u64,
    to: u64,
}

/// An RFC 9162 consistency proof between two tree sizes, for the browser to check
/// against checkpoints it verified itself.
async fn consistency_json(
    State(console): Shared,
    SignedIn(session): SignedIn,
    headers: HeaderMap,
    Query(q): Query<ConsistencyQuery>,
) -> Response {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let request = liutong_proto::v1::ProveConsistencyRequest {
        size1: q.from,
        size2: q.to,
    };
    match console
        .audit
        .prove_consistency(as_role(&session, request))
        .await
    {
        Ok(p) => {
            let p = p.into_inner();
            axum::Json(serde_json::json!({
                "from": p.size1,
                "to": p.size2,
                "proof": p.proof.iter().map(|h| b64.encode(h)).collect::<Vec<_>>(),
            }))
            .into_response()
        }
        Err(status) => refused_page(lang_of(&headers), &status),
    }
}

// ---- evidence: search, kept checkpoints, charts (pages in `evidence`) ----------------

async fn search(
    State(console): Shared,
    SignedIn(session): SignedIn,
    headers: HeaderMap,
    Query(form): Query<evidence::SearchForm>,
) -> Response {
    let lang = lang_of(&headers);
    if form.is_empty() {
        return evidence::search_page(lang, &session, &form, Ok(None));
    }
    let request = match form.request() {
        Ok(r) => r,
        Err(message) => return evidence::search_page(lang, &session, &form, Err(message)),
    };
    match console.audit.search(as_role(&session, request)).await {
        Ok(found) => evidence::search_page(lang, &session, &form, Ok(Some(found.into_inner()))),
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            evidence::search_page(lang, &session, &form, Err(status.message().to_owned()))
        }
        Err(status) => refused_page(lang, &status),
    }
}

#[derive(Deserialize)]
struct CheckpointsQuery {
    /// List the checkpoints of sizes below this one (the next page).
    #[serde(default)]
    older_than: Option<u64>,
}

async fn checkpoints(
    State(console): Shared,
    SignedIn(session): SignedIn,
    headers: HeaderMap,
    Query(q): Query<CheckpointsQuery>,
) -> Response {
    let lang = lang_of(&headers);
    // Reading the latest checkpoint is the role check, and says the quorum.
    let request = liutong_proto::v1::GetCheckpointRequest {};
    let quorum = match console
        .audit
        .get_checkpoint(as_role(&session, request))
        .await
    {
        Ok(c) => c.into_inner().quorum,
        Err(status) if status.code() == tonic::Code::NotFound => 0,
        Err(status) => return refused_page(lang, &status),
    };
    match console
        .log
        .kept_checkpoints(q.older_than, evidence::CHECKPOINTS_PER_PAGE)
    {
        Ok(page) => evidence::checkpoints_page(lang, &session, &page, quorum),
        Err(e) => refused_page(lang, &crate::service::errors::into_status(e)),
    }
}

async fn charts(
    State(console): Shared,
    SignedIn(session): SignedIn,
    headers: HeaderMap,
) -> Response {
    let lang = lang_of(&headers);
    // A bounded number of storage reads, off the async workers.
    let work = console.clone();
    let figures = tokio::task::spawn_blocking(move || {
        let admin = &work.admin;
        evidence::chart_figures(
            &work.log,
            &work.tally,
            &admin.transfers,
            admin.dsp_control.as_ref(),
            now(),
        )
    })
    .await;
    match figures {
        Ok(Ok(figures)) => evidence::charts_page(lang, &session, &figures),
        Ok(Err(message)) => refused_page(lang, &Status::unavailable(message)),
        Err(e) => refused_page(lang, &Status::internal(e.to_string())),
    }
}

async fn products(
    State(console): Shared,
    SignedIn(session): SignedIn,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    let lang = lang_of(&headers);
    let request = liutong_proto::v1::ListProductsRequest {
        page_size: 50,
        page_token: q.page,
    };
    match console
        .admin
        .list_products(as_role(&session, request))
        .await
    {
        Ok(list) => pages::products(lang, &session, &list.into_inner()),
        Err(status) => refused_page(lang, &status),
    }
}

async fn product(
    State(console): Shared,
    SignedIn(session): SignedIn,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let lang = lang_of(&headers);
    let request = liutong_proto::v1::GetProductRequest {
        product_id: id,
        page_size: 50,
        page_token: String::new(),
    };
    match console.admin.get_product(as_role(&session, request)).await {
        Ok(list) => pages::product(lang, &session, &list.into_inner().products),
        Err(status) => refused_page(lang, &status),
    }
}

async fn publish_form(SignedIn(session): SignedIn, headers: HeaderMap) -> Response {
    pages::publish_form(lang_of(&headers), &session)
}

#[derive(Deserialize)]
struct PolicyCheckForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    policy: String,
    #[serde(default)]
    classification: String,
}

/// Reads a policy as publishing would: the policy crate's reader, then this node's
/// guardrails for the classification. Answers `{"ok": bool, "message": "…"}` with the
/// policy crate's own words.
async fn policy_check(
    State(console): Shared,
    headers: HeaderMap,
    Form(form): Form<PolicyCheckForm>,
) -> Response {
    if let Err(refused) = console
        .check_form(&headers, "checking a policy", &form.csrf)
        .await
    {
        return *refused;
    }
    let outcome = (|| {
        let classification: liutong_policy::Classification = form
            .classification
            .parse()
            .map_err(|e| format!("classification: {e}"))?;
        let policy =
            crate::catalog::parse_policy(&form.policy, None).map_err(|e| format!("policy: {e}"))?;
        console
            .admin
            .catalog
            .offer_policy(policy, "prd-policy-check", classification)
            .map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    })();
    axum::Json(match outcome {
        Ok(()) => serde_json::json!({ "ok": true, "message": "" }),
        Err(message) => serde_json::json!({ "ok": false, "message": message }),
    })
    .into_response()
}

/// The publish form's upload: the same checks and steps as `Admin.PublishProduct`.
async fn publish(
    State(console): Shared,
    headers: HeaderMap,
    mut form: axum::extract::Multipart,
) -> Response {
    let lang = lang_of(&headers);
    // Nothing of the upload is read for a browser that is not signed in.
    if let Err(page) = signed_in(&console, &headers) {
        return *page;
    }
    let mut fields = std::collections::HashMap::new();
    let mut data = bytes::Bytes::new();
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => {
                return pages::message(
                    lang,
                    StatusCode::BAD_REQUEST,
                    lang.words().failed,
                    &e.body_text(),
                );
            }
        };
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = match field.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return pages::message(
                    lang,
                    StatusCode::BAD_REQUEST,
                    lang.words().failed,
                    &e.body_text(),
                );
            }
        };
        if name == "file" {
            data = bytes;
        } else if [
            "csrf",
            "title",
            "description",
            "classification",
            "format",
            "policy",
        ]
        .contains(&name.as_str())
        {
            fields.insert(name, String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    let field = |name: &str| fields.get(name).cloned().unwrap_or_default();
    let session = match console
        .check_form(&headers, "publishing a product", &field("csrf"))
        .await
    {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    let messages = crate::catalog::publish_messages(
        liutong_proto::v1::PublishMetadata {
            product_id: String::new(),
            title: field("title"),
            description: field("description"),
            classification: field("classification"),
            format: field("format"),
            policy: field("policy"),
            policy_format: String::new(),
            derived_from: Vec::new(),
        },
        &data,
    );
    let outcome = console
        .admin
        .publish_as(
            session.role,
            tokio_stream::iter(messages.into_iter().map(Ok)),
        )
        .await;
    match outcome {
        Ok(product) => Redirect::to(&format!("/products/{}", product.product_id)).into_response(),
        Err(status) => refused_page(lang, &status),
    }
}

/// Puts every refused request on record, in one place: what a handler refused (it
/// leaves [`state::Refused`] on its answer), and what the router refused on its own (no
/// such page, a method a page does not take, a body over the limit). The caller is the
/// session's role, or the browser's address when it has no session; the record names
/// the method and path, never the query (a sign-in link's token is in it). It goes
/// through the node's [`RefusalLog`](crate::service::limits::RefusalLog), so a flood
/// adds a bounded number of entries per caller and window.
async fn record_refusals(
    State(console): Shared,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = format!("console {} {}", request.method(), request.uri().path());
    let role = cookie(request.headers(), COOKIE)
        .and_then(|id| console.sessions.find(id))
        .map(|s| s.role);
    let remote = request
        .extensions()
        .get::<crate::dsp::PeerConnection>()
        .and_then(|c| c.remote);
    let response = next.run(request).await;
    let refused = response.extensions().get::<Refused>().cloned().or_else(|| {
        let (code, message) = match response.status() {
            StatusCode::NOT_FOUND => (tonic::Code::NotFound, "no such page"),
            StatusCode::METHOD_NOT_ALLOWED => (
                tonic::Code::InvalidArgument,
                "a method this page does not take",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => (
                tonic::Code::ResourceExhausted,
                "a body over the console's limit",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE | StatusCode::UNPROCESSABLE_ENTITY => {
                (tonic::Code::InvalidArgument, "a form the page cannot read")
            }
            StatusCode::BAD_REQUEST => (tonic::Code::InvalidArgument, "a request the page refused"),
            StatusCode::UNAUTHORIZED => (tonic::Code::Unauthenticated, "no signed-in session"),
            StatusCode::FORBIDDEN => (tonic::Code::PermissionDenied, "a request the page refused"),
            _ => return None,
        };
        Some(Refused {
            code,
            message: message.to_owned(),
        })
    });
    if let Some(refused) = refused {
        let caller = match role {
            Some(role) => Caller::Local(role),
            None => Caller::Unauthenticated {
                remote,
                subject: None,
            },
        };
        console
            .refusals
            .record(&caller, &method, refused.code, &refused.message)
            .await;
    }
    response
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("static/console.js"),
    )
        .into_response()
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("static/console.css"),
    )
        .into_response()
}

/// Headers on every answer: scripts and styles from the console only, no framing, no
/// referrer beyond the console itself (a sign-in link must not leak; `no-referrer`
/// would also make browsers send `Origin: null` with the console's own forms), nothing
/// cached.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn the_language_switch_goes_back_only_to_a_path_here() {
        assert_eq!(local_path("/audit?from=20"), "/audit?from=20");
        for elsewhere in [
            "https://evil.example/",
            "//evil.example/",
            "/\t/evil.example",
            "/\\evil.example",
            "/\n/evil.example",
            "/ /x",
            "",
            "audit",
        ] {
            assert_eq!(local_path(elsewhere), "/", "{elsewhere:?}");
        }
    }
}
