//! The audit page's evidence views: searching the log (each match with the inclusion
//! proof the browser checks), the checkpoints the log kept (each signature, each
//! witness's cosignature and the consistency between neighbours checked in the browser),
//! and charts of the log's growth, the policy decisions and the bytes delivered.
//!
//! The handlers are in the console's `mod.rs` (they hold the console's state); what they
//! show and how it is computed is here. The server only hands over notes, keys and
//! proofs; `static/console.js` checks them.
//! The witnesses' keys shown here come from the credentials this node keeps, so the page
//! says so: an auditor who wants more pins keys obtained elsewhere.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use liutong_proto::v1::{CheckpointResponse, InclusionProof, SearchRequest, SearchResponse};
use maud::{Markup, html};
use serde::Deserialize;

use super::pages::{evidence_links as links, frame, summary, verifier_words};
use super::session::Session;
use super::words::{Lang, Words};
use crate::audit::log::{
    AuditLog, CheckpointPage, KeptCheckpoint, witness_key_of, witness_name_for,
};
use crate::audit::tally::{DecisionCounts, DecisionTally};
use crate::base::format::format_unix;
use crate::identity::{Envelope, Membership};
use crate::transfer::{ProviderControl, Transfers};

// ---- search ------------------------------------------------------------------------

/// The search form as sent: text, parsed by [`SearchForm::request`].
#[derive(Deserialize, Default)]
pub struct SearchForm {
    #[serde(default)]
    product: String,
    #[serde(default)]
    agreement: String,
    #[serde(default)]
    participant: String,
    /// A day, `YYYY-MM-DD` (UTC), from its start.
    #[serde(default)]
    since: String,
    /// A day, `YYYY-MM-DD` (UTC), to its end.
    #[serde(default)]
    until: String,
    /// The entry to scan on from (paging).
    #[serde(default)]
    from: String,
}

impl SearchForm {
    pub fn is_empty(&self) -> bool {
        [
            &self.product,
            &self.agreement,
            &self.participant,
            &self.since,
            &self.until,
        ]
        .iter()
        .all(|f| f.trim().is_empty())
    }

    /// The `Audit.Search` request; the days and the paging position are read here, the
    /// rest is checked by the service itself.
    pub fn request(&self) -> Result<SearchRequest, String> {
        let since = day_start("since", &self.since)?;
        let until = day_start("until", &self.until)?.map(|t| t + 86_399);
        let from = match self.from.trim() {
            "" => 0,
            text => text
                .parse::<u64>()
                .map_err(|_| format!("from: {text:?} is not an entry index"))?,
        };
        Ok(SearchRequest {
            product: self.product.clone(),
            agreement: self.agreement.clone(),
            participant: self.participant.clone(),
            since: since.unwrap_or(0),
            until: until.unwrap_or(0),
            from,
        })
    }
}

/// The first second (Unix, UTC) of the day `text` names, `YYYY-MM-DD`.
fn day_start(field: &str, text: &str) -> Result<Option<i64>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let day = time::Date::parse(text, format)
        .map_err(|_| format!("{field}: {text:?} is not a day written YYYY-MM-DD"))?;
    Ok(Some(day.midnight().assume_utc().unix_timestamp()))
}

/// Kept checkpoints shown on one page.
pub const CHECKPOINTS_PER_PAGE: usize = 10;

/// The search form with what it found, or with why the search was refused (400).
pub fn search_page(
    lang: Lang,
    session: &Session,
    form: &SearchForm,
    outcome: Result<Option<SearchResponse>, String>,
) -> Response {
    let w = lang.words();
    let refused = outcome.as_ref().err();
    let body = html! {
        (links(w))
        form #search method="get" action="/audit/search" {
            p.help { (w.search_help) }
            @for (name, label, value) in [
                ("product", w.product, &form.product),
                ("agreement", w.agreement, &form.agreement),
                ("participant", w.participant, &form.participant),
            ] {
                p { label { (label) br; input type="text" name=(name) value=(value) maxlength="200" size="40" spellcheck="false"; } }
            }
            p { label { (w.since) br; input type="date" name="since" value=(form.since); } }
            p { label { (w.until) br; input type="date" name="until" value=(form.until); } }
            p { button #search-button type="submit" { (w.search_log) } }
        }
        @if let Some(message) = refused {
            p #search-error role="alert" { (w.failed) ": " (message) }
        }
        @if let Ok(Some(found)) = &outcome {
            (checkpoint_box(w, found.checkpoint.as_ref()))
            (matches(w, found))
            @if found.next_from != 0 {
                form #search-more method="get" action="/audit/search" {
                    @for (name, value) in [
                        ("product", &form.product), ("agreement", &form.agreement),
                        ("participant", &form.participant), ("since", &form.since),
                        ("until", &form.until),
                    ] {
                        input type="hidden" name=(name) value=(value);
                    }
                    input type="hidden" name="from" value=(found.next_from);
                    button type="submit" { (w.more_matches) " (" (found.next_from) " →)" }
                }
            }
        }
        (verifier_words(w))
    };
    let page = frame(lang, Some(session), "/audit", w.search_log, body);
    let status = if refused.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    (status, page).into_response()
}

/// The checkpoint the proofs lead to, and the verifier key controls the audit page
/// has (the same ids, so the browser checks it with the same code).
fn checkpoint_box(w: &Words, checkpoint: Option<&CheckpointResponse>) -> Markup {
    let size = checkpoint.map(|c| c.size).unwrap_or(0);
    html! {
        section #checkpoint data-size=(size) {
            h2 { (w.latest_checkpoint) }
            @if let Some(c) = checkpoint { pre #checkpoint-note { (c.note) } }
            label for="verifier-key" { (w.verifier_key) }
            p.help { (w.verifier_key_help) }
            input #verifier-key type="text" spellcheck="false" autocomplete="off" size="80";
            button #pin-key type="button" { (w.pin_key) }
            button #verify-checkpoint type="button" { (w.verify_checkpoint) }
            output #checkpoint-result data-state="pending" { (w.not_verified_yet) }
            p { output #consistency-result data-state="pending" {} }
        }
    }
}

/// The matches, each with its entry and proof for the browser to check.
fn matches(w: &Words, found: &SearchResponse) -> Markup {
    let b64 = base64::engine::general_purpose::STANDARD;
    let proof_text = |p: &InclusionProof| {
        p.proof
            .iter()
            .map(|h| b64.encode(h))
            .collect::<Vec<_>>()
            .join(" ")
    };
    html! {
        section #matches {
            h2 { (w.matches) " (" (found.matches.len()) ")" }
            @if found.matches.is_empty() {
                p { (w.no_matches) }
            } @else {
                table {
                    thead { tr { th { "#" } th { "" } th { "" } th { (w.entry) } th { "" } } }
                    tbody {
                        @for m in &found.matches {
                            @let (time, kind, detail) = summary(&m.data);
                            tr.match data-index=(m.leaf_index) {
                                td { (m.leaf_index) }
                                td { (time) }
                                td { code { (kind) } }
                                td.detail { (detail) }
                                td {
                                    button.verify-match type="button"
                                        data-index=(m.leaf_index) data-size=(m.tree_size)
                                        data-entry=(b64.encode(&m.data)) data-proof=(proof_text(m)) {
                                        (w.verify_inclusion)
                                    }
                                    output.proof-result id={ "match-" (m.leaf_index) } data-state="pending" { (w.not_verified_yet) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

// ---- kept checkpoints ----------------------------------------------------------------

pub fn checkpoints_page(
    lang: Lang,
    session: &Session,
    page: &CheckpointPage,
    quorum: u32,
) -> Response {
    let w = lang.words();
    let body = html! {
        (links(w))
        p.help { (w.kept_checkpoints_help) }
        p {
            button #verify-checkpoints type="button" { (w.verify_checkpoints) }
            " " output #checkpoints-key data-state="pending" {}
        }
        @if page.checkpoints.is_empty() { p { (w.no_checkpoint) } }
        @for (i, kept) in page.checkpoints.iter().enumerate() {
            @let older = page.checkpoints.get(i + 1).map(|k| k.size);
            (kept_checkpoint(w, kept, older, quorum))
        }
        @if let Some(older_than) = page.older_than {
            nav.pager { a #older-checkpoints href={ "/audit/checkpoints?older_than=" (older_than) } { (w.older) " →" } }
        }
        (verifier_words(w))
    };
    frame(lang, Some(session), "/audit", w.kept_checkpoints, body).into_response()
}

/// One kept checkpoint: its note, what the browser found of its signature and of its
/// consistency with the next older one shown, and one line per cosignature.
fn kept_checkpoint(w: &Words, kept: &KeptCheckpoint, older: Option<u64>, quorum: u32) -> Markup {
    html! {
        section.kept data-size=(kept.size) data-older=[older] {
            h2 { (w.checkpoint_size) " " (kept.size) }
            dl.figures {
                dt { (w.signed_at) } dd { @if kept.signed_at > 0 { (format_unix(kept.signed_at)) } @else { "—" } }
                dt { (w.cosignatures) } dd.cosignature-count { (kept.witnesses.len()) "/" (quorum) }
            }
            pre.kept-note { (kept.note) }
            p { output.kept-result data-state="pending" { (w.not_verified_yet) } }
            @if let Some(older) = older {
                p { output.kept-consistency data-state="pending" data-older=(older) { (w.not_verified_yet) } }
            }
            @if !kept.witnesses.is_empty() {
                table.cosignatures {
                    thead { tr { th { (w.witness) } th { (w.participant) } th { (w.witness_key) } th { "" } } }
                    tbody {
                        @for credential in &kept.witnesses {
                            (cosignature_row(w, credential))
                        }
                    }
                }
            }
        }
    }
}

/// A witness's line: its name and key as its credential (kept by this node) gives them.
fn cosignature_row(w: &Words, credential: &Envelope) -> Markup {
    let member = serde_json::from_slice::<Membership>(&credential.payload).ok();
    let key = member
        .as_ref()
        .and_then(|m| witness_key_of(m).ok())
        .map(|k| k.to_string());
    html! {
        tr.cosignature {
            @match (&member, &key) {
                (Some(m), Some(key)) => {
                    td { code { (witness_name_for(&m.participant_id)) } }
                    td { (m.name) " (" (m.participant_id) ")" }
                    td { code.witness-key { (key) } br; small { (w.key_from_node) } }
                    td { output.cosignature-result data-state="pending" data-key=(key) { (w.not_verified_yet) } }
                }
                _ => {
                    td colspan="4" { (w.credential_unreadable) }
                }
            }
        }
    }
}

// ---- charts ------------------------------------------------------------------------

/// Days the charts cover.
const CHART_DAYS: u32 = 30;
/// Most entries one view of the charts counts for the decisions chart; the next view
/// goes on from there.
const COUNTED_PER_VIEW: u64 = 200_000;
/// Agreements shown in the bytes chart.
const TOP_AGREEMENTS: usize = 20;
/// Most delivery records (receipts, DSP transfers) one view reads for the bytes chart.
const DELIVERIES_READ: usize = 20_000;
/// Records read from storage at a time.
const DELIVERIES_PAGE: usize = 500;

/// What the charts show.
pub struct Charts {
    growth: Vec<(i64, u64)>,
    decisions: DecisionCounts,
    /// (agreement, bytes), most first.
    bytes: Vec<(String, u64)>,
    /// Whether the bytes were summed over every delivery record.
    bytes_complete: bool,
}

/// What the charts show, read from the log and the delivery records, at `now`.
pub fn chart_figures(
    log: &AuditLog,
    tally: &DecisionTally,
    transfers: &Transfers,
    dsp: &dyn ProviderControl,
    now: i64,
) -> Result<Charts, String> {
    let size = log.size();
    let growth = crate::audit::tally::entries_per_day(log, size, now, CHART_DAYS)
        .map_err(|e| e.to_string())?;
    let decisions = tally
        .count(log, size, now, CHART_DAYS, COUNTED_PER_VIEW)
        .map_err(|e| e.to_string())?;
    let (bytes, bytes_complete) = bytes_per_agreement(transfers, dsp)?;
    Ok(Charts {
        growth,
        decisions,
        bytes,
        bytes_complete,
    })
}

/// Bytes this node delivered as provider, per agreement: the receipts of whole
/// deliveries over the peer API, and the bytes the DSP data endpoint served. Both are
/// kept in storage, so a restart loses nothing. At most [`DELIVERIES_READ`] records are
/// read; the answer says whether that was all of them.
fn bytes_per_agreement(
    transfers: &Transfers,
    dsp: &dyn ProviderControl,
) -> Result<(Vec<(String, u64)>, bool), String> {
    let mut sums: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut read = 0;
    let mut after: Option<Vec<u8>> = None;
    let mut complete = loop {
        let page = transfers
            .delivered_bytes(after.as_deref(), DELIVERIES_PAGE)
            .map_err(|e| e.to_string())?;
        read += page.items.len();
        for (agreement, bytes) in page.items {
            *sums.entry(agreement).or_default() += bytes;
        }
        match page.next {
            None => break true,
            Some(_) if read >= DELIVERIES_READ => break false,
            next => after = next,
        }
    };
    let mut after: Option<Vec<u8>> = None;
    while complete {
        let page = dsp
            .list(after.take(), DELIVERIES_PAGE)
            .map_err(|e| e.to_string())?;
        read += page.items.len();
        // Provided transfers come first; the pulled ones after them served nothing.
        let mut pulled_reached = false;
        for t in page.items {
            if t.role != crate::contract::Role::Provider {
                pulled_reached = true;
                break;
            }
            *sums.entry(t.agreement_id).or_default() += t.bytes_served;
        }
        match page.next {
            Some(next) if !pulled_reached && read < DELIVERIES_READ => after = Some(next),
            Some(_) if !pulled_reached => complete = false,
            _ => break,
        }
    }
    let mut bytes: Vec<(String, u64)> = sums.into_iter().filter(|(_, b)| *b > 0).collect();
    bytes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    bytes.truncate(TOP_AGREEMENTS);
    Ok((bytes, complete))
}

pub fn charts_page(lang: Lang, session: &Session, c: &Charts) -> Response {
    let w = lang.words();
    let day = |t: i64| format_unix(t).chars().take(10).collect::<String>();
    let growth: Vec<Bar> = c
        .growth
        .iter()
        .map(|&(t, n)| Bar {
            label: day(t),
            parts: vec![("entries", n)],
        })
        .collect();
    let decisions: Vec<Bar> = c
        .decisions
        .days
        .iter()
        .map(|(t, d)| Bar {
            label: day(*t),
            parts: vec![("permit", d.permit), ("deny", d.deny)],
        })
        .collect();
    let bytes: Vec<Bar> = c
        .bytes
        .iter()
        .map(|(agreement, n)| Bar {
            label: agreement.clone(),
            parts: vec![("bytes", *n)],
        })
        .collect();
    let counted = &c.decisions;
    let body = html! {
        (links(w))
        h2 { (w.log_growth) }
        (bar_chart("log-growth", w.log_growth, &[w.entries], &growth))
        h2 { (w.decisions_per_day) }
        p #decisions-counted data-complete=(counted.complete()) data-size=(counted.size) {
            (w.decisions_counted) " " (counted.counted_from) "–" (counted.counted_to) " / " (counted.size)
            @if !counted.complete() { " · " (w.counting_goes_on) }
        }
        (bar_chart("decisions", w.decisions_per_day, &[w.permit, w.deny], &decisions))
        h2 { (w.bytes_per_agreement) }
        p.help { (w.bytes_per_agreement_help) }
        @if bytes.is_empty() {
            p #no-deliveries { (w.no_deliveries) }
        } @else {
            (bar_chart("bytes", w.bytes_per_agreement, &[w.size], &bytes))
        }
        @if !c.bytes_complete { p { (w.counting_goes_on) } }
    };
    frame(lang, Some(session), "/audit", w.charts, body).into_response()
}

/// One bar: its label and its stacked parts (CSS class, value), bottom first.
struct Bar {
    label: String,
    parts: Vec<(&'static str, u64)>,
}

const CHART_HEIGHT: u64 = 160;
const BAR_WIDTH: usize = 18;
const BAR_GAP: usize = 4;
/// Room left of the bars for the scale, and below them for the first and last label.
const AXIS_LEFT: usize = 64;
const AXIS_BELOW: u64 = 22;

/// A bar chart as inline SVG (presentation attributes only: the console's CSP allows
/// no inline style), hidden from screen readers, which read the table beside it. The
/// scale shows 0 and the tallest bar's value; below the bars, the first and the last
/// label (days run oldest to newest); a legend names stacked parts.
fn bar_chart(id: &str, title: &str, columns: &[&str], bars: &[Bar]) -> Markup {
    let top = bars
        .iter()
        .map(|b| b.parts.iter().map(|p| p.1).sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let plot = bars.len().max(1) * (BAR_WIDTH + BAR_GAP);
    let width = AXIS_LEFT + plot;
    let height = CHART_HEIGHT + AXIS_BELOW;
    let scaled = |v: u64| v.saturating_mul(CHART_HEIGHT) / top;
    let first = bars.first().map(|b| b.label.as_str()).unwrap_or_default();
    let last = bars.last().map(|b| b.label.as_str()).unwrap_or_default();
    let parts: Vec<&str> = bars
        .first()
        .map(|b| b.parts.iter().map(|p| p.0).collect())
        .unwrap_or_default();
    html! {
        figure.chart {
            svg id=(id) xmlns="http://www.w3.org/2000/svg" width=(width) height=(height)
                viewBox={ "0 0 " (width) " " (height) } aria-hidden="true" focusable="false" {
                text.scale x=(AXIS_LEFT - 6) y="12" text-anchor="end" font-size="11" { (top) }
                text.scale x=(AXIS_LEFT - 6) y=(CHART_HEIGHT) text-anchor="end" font-size="11" { "0" }
                line.axis x1=(AXIS_LEFT) y1=(CHART_HEIGHT) x2=(width) y2=(CHART_HEIGHT) stroke="#5b6570" {}
                @for (i, bar) in bars.iter().enumerate() {
                    g.bar data-label=(bar.label) {
                        @let x = AXIS_LEFT + i * (BAR_WIDTH + BAR_GAP);
                        @for (class, value, y, height) in stacked(bar, &scaled) {
                            rect class=(class) x=(x) y=(y) width=(BAR_WIDTH) height=(height) data-value=(value) {
                                title { (bar.label) ": " (value) }
                            }
                        }
                    }
                }
                text.scale x=(AXIS_LEFT) y=(height - 4) font-size="11" { (first) }
                @if bars.len() > 1 {
                    text.scale x=(width) y=(height - 4) text-anchor="end" font-size="11" { (last) }
                }
            }
            @if parts.len() > 1 {
                figcaption.legend aria-hidden="true" {
                    @for (class, name) in parts.iter().zip(columns) {
                        span class={ "key " (class) } { (name) }
                    }
                }
            }
            table.for-screen-readers id={ (id) "-table" } {
                caption { (title) }
                thead { tr { th { "" } @for c in columns { th { (c) } } } }
                tbody {
                    @for bar in bars {
                        tr { th scope="row" { (bar.label) } @for part in &bar.parts { td { (part.1) } } }
                    }
                }
            }
        }
    }
}

/// A bar's parts as rectangles from the bottom up: (class, value, y, height).
fn stacked(bar: &Bar, scaled: &impl Fn(u64) -> u64) -> Vec<(&'static str, u64, u64, u64)> {
    let mut below = 0;
    bar.parts
        .iter()
        .map(|&(class, value)| {
            let height = scaled(value);
            below += height;
            (class, value, CHART_HEIGHT - below, height)
        })
        .collect()
}
