//! What the console's handlers share: the node's services and the console's sessions
//! ([`Console`]), and the steps every request takes: the signed-in session, a local API
//! request with its role, a refusal as a page, and a form's CSRF check. The pages live
//! in their own files (`mod.rs`, `flows.rs`) on top of this one.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use tonic::Status;

use super::pages;
use super::session::{COOKIE, Session, Sessions, csrf_matches};
use super::words::Lang;
use crate::alerts::Alerts;
use crate::audit::event::{Event, EventKind};
use crate::audit::log::AuditLog;
use crate::base::clock::now;
use crate::local::SignInLinks;
use crate::service::AdminService;
use crate::service::audit::AuditService;
use crate::service::limits::RefusalLog;
use crate::service::usage::UsageService;

/// What the console's handlers share.
pub struct Console {
    pub admin: AdminService,
    pub audit: AuditService,
    /// `Usage` on the local API: the received copies.
    pub usage: UsageService,
    /// The node's alerting, whose latest alerts the overview shows.
    pub alerts: Alerts,
    pub log: AuditLog,
    pub links: Arc<SignInLinks>,
    pub sessions: Sessions,
    /// `https://host:port`, the only origin forms are accepted from.
    pub origin: String,
    /// The policy decisions counted so far for the charts (counting resumes from here).
    pub tally: crate::audit::tally::DecisionTally,
    /// Where refusals go on record: the local and peer APIs' own log, which gives each
    /// caller a bounded number of entries per window and counts the rest.
    pub refusals: Arc<RefusalLog>,
}

/// Why an answer refused its request, left on the response for the layer that puts
/// every refusal on record ([`super::record_refusals`]).
#[derive(Clone, Debug)]
pub(super) struct Refused {
    pub code: tonic::Code,
    pub message: String,
}

/// `response`, marked as a refusal for the record.
pub(super) fn refusing(mut response: Response, code: tonic::Code, message: &str) -> Response {
    response.extensions_mut().insert(Refused {
        code,
        message: message.to_owned(),
    });
    response
}

/// A request's cookies, by name.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub(super) fn lang_of(headers: &HeaderMap) -> Lang {
    Lang::from_cookie(cookie(headers, Lang::COOKIE))
}

/// The signed-in session, or the page that says how to sign in. The refusal is boxed: a response is large, and the happy path should not carry it.
pub(super) fn signed_in(console: &Console, headers: &HeaderMap) -> Result<Session, Box<Response>> {
    cookie(headers, COOKIE)
        .and_then(|id| console.sessions.find(id))
        .ok_or_else(|| {
            let lang = lang_of(headers);
            let w = lang.words();
            Box::new(refusing(
                pages::message(
                    lang,
                    StatusCode::UNAUTHORIZED,
                    w.sign_in_needed,
                    w.sign_in_help,
                ),
                tonic::Code::Unauthenticated,
                "no signed-in session",
            ))
        })
}

/// The signed-in session, as an extractor: a handler that takes it runs only for a
/// browser that is signed in; any other gets the page that says how to sign in.
pub(super) struct SignedIn(pub Session);

impl axum::extract::FromRequestParts<Arc<Console>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Response> {
        signed_in(console, &parts.headers)
            .map(SignedIn)
            .map_err(|page| *page)
    }
}

/// A local API request made with the session's role.
pub(super) fn as_role<T>(session: &Session, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.extensions_mut().insert(session.role);
    request
}

/// The answer to a refused local API call, as a page.
pub(super) fn refused_page(lang: Lang, status: &Status) -> Response {
    let code = match status.code() {
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::InvalidArgument
        | tonic::Code::FailedPrecondition
        | tonic::Code::OutOfRange
        | tonic::Code::AlreadyExists => StatusCode::BAD_REQUEST,
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    refusing(
        pages::message(lang, code, lang.words().failed, status.message()),
        status.code(),
        status.message(),
    )
}

impl Console {
    /// Puts a sign-in on the audit log. A log that cannot be written is reported, and
    /// the caller's answer stays what it was. (Refusals are recorded by the router's
    /// layer, from the answer.)
    pub(super) async fn record(&self, kind: EventKind, detail: String) {
        if let Err(e) = self.log.append(&Event::new(kind, now(), detail)).await {
            tracing::error!(error = %e, "the console could not write the audit log");
        }
    }

    /// Checks a form: signed in, the session's CSRF token, and (when the browser says)
    /// from the console's own origin. A refusal is recorded.
    pub(super) async fn check_form(
        &self,
        headers: &HeaderMap,
        what: &str,
        token: &str,
    ) -> Result<Session, Box<Response>> {
        let session = signed_in(self, headers)?;
        let origin_ok = headers
            .get(header::ORIGIN)
            .is_none_or(|o| o.as_bytes() == self.origin.as_bytes());
        if origin_ok && csrf_matches(&session, token) {
            return Ok(session);
        }
        let lang = lang_of(headers);
        let w = lang.words();
        Err(Box::new(refusing(
            pages::message(lang, StatusCode::FORBIDDEN, w.failed, w.form_expired),
            tonic::Code::PermissionDenied,
            &format!("{what}: the form's token or origin is not this console's"),
        )))
    }
}

impl Console {
    /// Back to the contracts after an action, or the refusal (recorded) as a page.
    pub(super) fn after_action<T>(
        &self,
        headers: &HeaderMap,
        outcome: Result<tonic::Response<T>, Status>,
    ) -> Response {
        match outcome {
            Ok(_) => Redirect::to("/contracts").into_response(),
            Err(status) => refused_page(lang_of(headers), &status),
        }
    }
}
