//! The console's pages, as HTML (maud escapes every value it writes).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use liutong_proto::v1::{
    CheckpointResponse, Contract, GetEntriesResponse, ListContractsResponse, ListProductsResponse,
    Product, StatusResponse,
};
use maud::{DOCTYPE, Markup, html};

use super::session::Session;
use super::words::{Lang, Words};
use crate::base::format::format_unix;
use crate::local::LocalRole;

/// Entries shown on one audit page.
pub const ENTRIES_PER_PAGE: u64 = 20;

/// The frame of every page: language, navigation, role, sign-out.
pub(super) fn frame(
    lang: Lang,
    session: Option<&Session>,
    here: &str,
    title: &str,
    body: Markup,
) -> Markup {
    let w = lang.words();
    let other = lang.other();
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (w.title) }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                header {
                    strong.brand { (w.title) }
                    @if let Some(session) = session {
                        nav {
                            a href="/" aria-current=[(here == "/").then_some("page")] { (w.overview) }
                            a href="/products" aria-current=[(here == "/products").then_some("page")] { (w.products) }
                            a href="/contracts" aria-current=[(here == "/contracts").then_some("page")] { (w.contracts) }
                            a href="/audit" aria-current=[(here == "/audit").then_some("page")] { (w.audit_log) }
                            a href="/peers" aria-current=[(here == "/peers").then_some("page")] { (w.peer_catalogs) }
                            a href="/transfers" aria-current=[(here == "/transfers").then_some("page")] { (w.transfers) }
                            a href="/copies" aria-current=[(here == "/copies").then_some("page")] { (w.received_copies) }
                        }
                        span.role { (w.signed_in_as) ": " span #role { (role_word(w, session.role)) } }
                        form.inline method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(session.csrf);
                            button type="submit" { (w.sign_out) }
                        }
                    }
                    a #lang-switch href={ "/lang/" (other.cookie_value()) "?back=" (here) } lang=(other.code()) {
                        (other.words().switch_to)
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

fn role_word(w: &Words, role: LocalRole) -> &'static str {
    match role {
        LocalRole::Admin => w.role_admin,
        LocalRole::Auditor => w.role_auditor,
        LocalRole::App => "app",
    }
}

pub(super) fn page(markup: Markup) -> Response {
    markup.into_response()
}

/// A page that only says something: a refusal, or how to sign in.
pub fn message(lang: Lang, status: StatusCode, title: &str, text: &str) -> Response {
    let body = html! { p #message { (text) } };
    (status, frame(lang, None, "/", title, body)).into_response()
}

pub(super) fn age(seconds: i64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(seconds.max(0) as u64)).to_string()
}

pub fn overview(lang: Lang, session: &Session, s: &StatusResponse, alerts: Markup) -> Response {
    let w = lang.words();
    let node = s.node.clone().unwrap_or_default();
    let trust = s.trust_list.clone().unwrap_or_default();
    let witness = s.witness.unwrap_or_default();
    let body = html! {
        dl.figures {
            dt { (w.participant) } dd #participant { (node.name) " (" (node.participant_id) ")" }
            dt { (w.health) } dd #health { (s.health) }
            dt { (w.version) } dd { (s.software_version) }
            dt { (w.uptime) } dd { (age(s.uptime_seconds)) }
            dt { (w.trust_list) } dd { "#" (trust.sequence) ", " (trust.members) " " (w.members) }
            dt { (w.trust_list_age) } dd #trust-age { (age(s.trust_list_age_seconds)) }
            dt { (w.pending_approvals) } dd #pending { a href="/contracts" { (s.pending_approvals) } }
            dt { (w.audit_log_size) } dd { (s.audit_log_size) }
            dt { (w.witness) } dd #witness {
                (w.checkpoint_size) " " (witness.checkpoint_size) ", "
                (w.cosignatures) " " (witness.cosignatures) "/" (witness.quorum) ", "
                @if witness.witnessed { (w.witnessed) } @else { (w.not_witnessed) }
            }
        }
        h2 { (w.peers) }
        table {
            thead { tr { th { (w.participant) } th { (w.negotiations) } th { (w.witness) } } }
            tbody {
                @for peer in &s.peers {
                    tr {
                        td { (peer.name) " (" (peer.participant_id) ")" }
                        td { (peer.negotiations) }
                        td { @if peer.witness { "✓" } }
                    }
                }
            }
        }
        (alerts)
    };
    page(frame(lang, Some(session), "/", w.overview, body))
}

fn waits_for_approval(c: &Contract) -> bool {
    c.role == "provider" && c.state == "REQUESTED"
}

pub fn contracts(lang: Lang, session: &Session, list: &ListContractsResponse) -> Response {
    let w = lang.words();
    let admin = session.role == LocalRole::Admin;
    let body = html! {
        @if list.contracts.is_empty() {
            p { (w.no_contracts) }
        } @else {
            table #contracts {
                thead { tr {
                    th { (w.negotiation) } th { (w.side) } th { (w.participant) } th { (w.offer) }
                    th { (w.purpose) } th { (w.state) } th { (w.reason) } th { (w.updated) }
                    @if admin { th { (w.actions) } }
                } }
                tbody {
                    @for c in &list.contracts {
                        tr data-negotiation=(c.negotiation_id) {
                            td { code { (c.negotiation_id) } }
                            td { (c.role) }
                            td { (c.peer) }
                            td { code { (c.offer_id) } }
                            td { (c.purpose) }
                            td.state { (c.state) }
                            td {
                                @if waits_for_approval(c) { (w.waiting_for_approval) } @else { (c.reason) }
                            }
                            td { (format_unix(c.updated_at_unix)) }
                            @if admin {
                                td {
                                    @if waits_for_approval(c) {
                                        form.inline method="post" action={ "/contracts/" (c.negotiation_id) "/approve" } {
                                            input type="hidden" name="csrf" value=(session.csrf);
                                            button.approve type="submit" { (w.approve) }
                                        }
                                        form.inline method="post" action={ "/contracts/" (c.negotiation_id) "/reject" } {
                                            input type="hidden" name="csrf" value=(session.csrf);
                                            label { (w.reject_reason) " "
                                                input type="text" name="reason" required maxlength="500";
                                            }
                                            button.reject type="submit" { (w.reject) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if !list.next_page_token.is_empty() {
                p { a href={ "/contracts?page=" (list.next_page_token) } { (w.older) " →" } }
            }
        }
    };
    page(frame(lang, Some(session), "/contracts", w.contracts, body))
}

/// The `detail` and `kind` of an entry, when it is an event the node wrote.
pub(super) fn summary(data: &[u8]) -> (String, String, String) {
    match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(v) => (
            v["time"].as_i64().map(format_unix).unwrap_or_default(),
            v["kind"].as_str().unwrap_or_default().to_owned(),
            v["detail"].as_str().unwrap_or_default().to_owned(),
        ),
        Err(_) => (
            String::new(),
            String::new(),
            String::from_utf8_lossy(data).into_owned(),
        ),
    }
}

pub fn audit(
    lang: Lang,
    session: &Session,
    checkpoint: Option<&CheckpointResponse>,
    entries: &GetEntriesResponse,
    from: u64,
    size: u64,
) -> Response {
    let w = lang.words();
    let verified_size = checkpoint.map(|c| c.size).unwrap_or(0);
    let body = html! {
        (evidence_links(w))
        section #checkpoint data-size=(verified_size) {
            h2 { (w.latest_checkpoint) }
            @match checkpoint {
                Some(c) => { pre #checkpoint-note { (c.note) } }
                None => { p { (w.no_checkpoint) } }
            }
            label for="verifier-key" { (w.verifier_key) }
            p.help { (w.verifier_key_help) }
            input #verifier-key type="text" spellcheck="false" autocomplete="off" size="80";
            button #pin-key type="button" { (w.pin_key) }
            button #verify-checkpoint type="button" { (w.verify_checkpoint) }
            output #checkpoint-result data-state="pending" { (w.not_verified_yet) }
            p { output #consistency-result data-state="pending" {} }
        }
        section #entries {
            h2 { (w.entries) " " (from) "–" (from + entries.entries.len() as u64) " / " (size) }
            table {
                thead { tr { th { "#" } th { "" } th { "" } th { (w.entry) } th { "" } } }
                tbody {
                    @for e in &entries.entries {
                        @let (time, kind, detail) = summary(&e.data);
                        tr {
                            td { (e.index) }
                            td { (time) }
                            td { code { (kind) } }
                            td.detail { (detail) }
                            td {
                                @if e.index < verified_size {
                                    button.verify-inclusion type="button" data-index=(e.index) { (w.verify_inclusion) }
                                    output.proof-result id={ "proof-" (e.index) } data-state="pending" { (w.not_verified_yet) }
                                }
                            }
                        }
                    }
                }
            }
            nav.pager {
                @if from > 0 {
                    a href={ "/audit?from=" (from.saturating_sub(ENTRIES_PER_PAGE)) } { "← " (w.older) }
                }
                @if from + ENTRIES_PER_PAGE < size {
                    a href={ "/audit?from=" (from + ENTRIES_PER_PAGE) } { (w.newer) " →" }
                }
            }
        }
        (verifier_words(w))
    };
    page(frame(lang, Some(session), "/audit", w.audit_log, body))
}

pub fn products(lang: Lang, session: &Session, list: &ListProductsResponse) -> Response {
    let w = lang.words();
    let body = html! {
        @if session.role == LocalRole::Admin {
            p { a #publish-link href="/products/new" { (w.publish) } }
        }
        @if list.products.is_empty() {
            p { (w.no_products) }
        } @else {
            table #products {
                thead { tr {
                    th { (w.title_label) } th { (w.version_label) } th { (w.classification) }
                    th { (w.format) } th { (w.size) } th { (w.offer) } th { (w.published) }
                } }
                tbody {
                    @for p in &list.products {
                        tr data-product=(p.product_id) {
                            td { a href={ "/products/" (p.product_id) } { (p.title) } }
                            td { (p.version) }
                            td { (p.classification) }
                            td { (p.format) }
                            td { (p.size) }
                            td { code { (p.offer_id) } }
                            td { (format_unix(p.published_at_unix)) }
                        }
                    }
                }
            }
            @if !list.next_page_token.is_empty() {
                p { a href={ "/products?page=" (list.next_page_token) } { (w.older) " →" } }
            }
        }
    };
    page(frame(lang, Some(session), "/products", w.products, body))
}

/// The links from the audit page to the evidence views.
pub fn evidence_links(w: &Words) -> Markup {
    html! {
        nav.evidence {
            a #search-link href="/audit/search" { (w.search_log) }
            a #checkpoints-link href="/audit/checkpoints" { (w.kept_checkpoints) }
            a #charts-link href="/audit/charts" { (w.charts) }
        }
    }
}

/// A JSON document, indented for reading.
fn pretty(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| json.to_owned())
}

pub fn product(lang: Lang, session: &Session, versions: &[Product]) -> Response {
    let w = lang.words();
    let Some(latest) = versions.last() else {
        return message(lang, StatusCode::NOT_FOUND, w.failed, w.no_products);
    };
    let body = html! {
        dl.figures {
            dt { (w.description) } dd { (latest.description) }
            dt { (w.classification) } dd #classification { (latest.classification) }
            dt { (w.format) } dd { (latest.format) }
            dt { (w.size) } dd { (latest.size) " B, " (latest.chunks) " × " (latest.chunk_size) " B" }
            dt { "SHA-256" } dd { code { (latest.sha256) } }
            dt { (w.offer) } dd { code { (latest.offer_id) } }
            dt { (w.published) } dd { (format_unix(latest.published_at_unix)) }
        }
        h2 { (w.profile) }
        pre #profile { (pretty(&latest.profile_json)) }
        h2 { (w.policy) }
        pre #policy { (pretty(&latest.policy_odrl_json)) }
        @if versions.len() > 1 {
            h2 { (w.version_label) }
            ul { @for v in versions { li { "v" (v.version) " · " (format_unix(v.published_at_unix)) } } }
        }
    };
    page(frame(lang, Some(session), "/products", &latest.title, body))
}

/// The publish form. The policy is checked as it is typed, by the node's own policy
/// reader and guardrails (`/products/policy-check`).
pub fn publish_form(lang: Lang, session: &Session) -> Response {
    let w = lang.words();
    let body = html! {
        form #publish method="post" action="/products" enctype="multipart/form-data" {
            input type="hidden" name="csrf" value=(session.csrf);
            p { label { (w.title_label) br; input name="title" type="text" required maxlength="200" size="60"; } }
            p { label { (w.description) br; textarea name="description" rows="2" cols="60" {} } }
            p { label { (w.classification) br;
                select name="classification" {
                    @for c in ["general-1", "general-2", "general-3", "important", "core"] {
                        option value=(c) { (c) }
                    }
                }
            } }
            p { label { (w.format) br;
                select name="format" {
                    @for f in ["csv", "jsonl", "bytes"] { option value=(f) { (f) } }
                }
            } }
            p { label { (w.policy) br;
                textarea #policy-text name="policy" rows="14" cols="80" spellcheck="false" {}
            } }
            p { output #policy-check data-state="pending" aria-live="polite" {} }
            p { label { (w.file) br; input name="file" type="file" required; } }
            p { button #publish-button type="submit" { (w.publish) } }
        }
        template #policy-words data-ok=(w.policy_ok) {}
    };
    page(frame(lang, Some(session), "/products", w.publish, body))
}

/// The words the browser's checks answer with, on every page that checks proofs.
pub(super) fn verifier_words(w: &Words) -> Markup {
    html! {
        template #words
            data-verified=(w.verified_in_browser)
            data-no-key=(w.no_key)
            data-key-malformed=(w.key_malformed)
            data-no-signature=(w.no_signature_for_key)
            data-signature-invalid=(w.signature_invalid)
            data-checkpoint-malformed=(w.checkpoint_malformed)
            data-proof-malformed=(w.proof_malformed)
            data-root-mismatch=(w.root_mismatch)
            data-consistent-with=(w.consistent_with)
            data-first-checkpoint=(w.first_checkpoint)
            data-not-consistent=(w.not_consistent)
            data-log-shrank=(w.log_shrank)
            data-consistent-with-older=(w.consistent_with_older)
            data-no-cosignature=(w.no_cosignature)
            data-cosignature-invalid=(w.cosignature_invalid) {}
    }
}
