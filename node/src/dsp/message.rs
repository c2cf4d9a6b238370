//! The JSON-LD envelope every Dataspace Protocol message shares: the `@context` that must
//! name the DSP 2025-1 context, the `@type`, a bounded size; and the error bodies the
//! binding answers refusals with (`CatalogError`, `ContractNegotiationError`,
//! `TransferError`).
//!
//! Messages are read as compacted JSON-LD, as the specification allows: the node checks
//! the context it requires and reads the terms by their compact names.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value as Json, json};

/// The context every DSP 2025-1 message carries in its `@context` array.
pub const CONTEXT: &str = "https://w3id.org/dspace/2025/1/context.jsonld";

/// The protocol version this node speaks.
pub const PROTOCOL_VERSION: &str = "2025-1";

/// The part of the protocol a request belongs to; it names the error type of a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    Catalog,
    Negotiation,
    Transfer,
}

impl Area {
    /// The area of a request path (the binding's endpoints start with it).
    pub fn of_path(path: &str) -> Self {
        if path.starts_with("/negotiations") {
            Area::Negotiation
        } else if path.starts_with("/transfers")
            || path.starts_with("/data/")
            || path.starts_with("/callback/transfers")
        {
            Area::Transfer
        } else {
            Area::Catalog
        }
    }

    /// The `@type` of this area's error message.
    pub fn error_type(self) -> &'static str {
        match self {
            Area::Catalog => "CatalogError",
            Area::Negotiation => "ContractNegotiationError",
            Area::Transfer => "TransferError",
        }
    }
}

/// A refusal as the binding answers it: an HTTP status and a DSP error message whose
/// `reason` says what to change.
#[derive(Clone, Debug)]
pub struct DspError {
    pub status: StatusCode,
    pub area: Area,
    pub reason: String,
    /// The negotiation's (or transfer's) provider and consumer process IDs, as far as
    /// they are known; their error messages always carry both.
    pub pids: Option<(String, String)>,
}

/// Left on a refusal's response so that the layer that authenticated the caller can
/// record it on the audit log (the reason is the caller's to read, so it is recorded as
/// the caller got it).
#[derive(Clone, Debug)]
pub struct Refused {
    pub reason: String,
}

impl DspError {
    pub fn new(status: StatusCode, area: Area, reason: impl Into<String>) -> Self {
        Self {
            status,
            area,
            reason: reason.into(),
            pids: None,
        }
    }

    /// The same refusal, naming the process IDs (provider's, consumer's).
    pub fn with_pids(mut self, provider_pid: &str, consumer_pid: &str) -> Self {
        self.pids = Some((provider_pid.to_owned(), consumer_pid.to_owned()));
        self
    }

    pub fn bad_request(area: Area, reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, area, reason)
    }

    pub fn not_found(area: Area, reason: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, area, reason)
    }

    /// The error message's body.
    pub fn body(&self) -> Json {
        let mut body = json!({
            "@context": [CONTEXT],
            "@type": self.area.error_type(),
            "code": self.status.as_u16().to_string(),
            "reason": [self.reason],
        });
        if matches!(self.area, Area::Negotiation | Area::Transfer) {
            // The schema requires both IDs; one not known (a message that could not be
            // read) is sent empty.
            let (provider, consumer) = self.pids.clone().unwrap_or_default();
            body["providerPid"] = provider.into();
            body["consumerPid"] = consumer.into();
        }
        body
    }
}

impl IntoResponse for DspError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        response.extensions_mut().insert(Refused {
            reason: self.reason,
        });
        response
    }
}

/// The gRPC code a DSP refusal is recorded under, so that refusals over both bindings
/// read alike on the audit log and count alike.
pub fn code_of(status: StatusCode) -> tonic::Code {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => tonic::Code::InvalidArgument,
        StatusCode::UNAUTHORIZED => tonic::Code::Unauthenticated,
        StatusCode::FORBIDDEN => tonic::Code::PermissionDenied,
        StatusCode::NOT_FOUND => tonic::Code::NotFound,
        StatusCode::CONFLICT => tonic::Code::FailedPrecondition,
        StatusCode::TOO_MANY_REQUESTS => tonic::Code::ResourceExhausted,
        StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable,
        _ => tonic::Code::Internal,
    }
}

/// The HTTP status a refusal of the peer API's authentication becomes.
pub fn status_of(code: tonic::Code) -> StatusCode {
    match code {
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        tonic::Code::Internal | tonic::Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::FORBIDDEN,
    }
}

/// Reads a message of type `expected` from a request body already cut at the node's
/// limit: a JSON object whose `@context` is an array naming [`CONTEXT`] (and only
/// strings, as the protocol's context schema requires) and whose `@type` is `expected`.
/// The error is the reason, in words a sender can act on.
pub fn parse(body: &[u8], expected: &str) -> Result<Map<String, Json>, String> {
    let value: Json = serde_json::from_slice(body).map_err(|e| {
        format!("the body is not JSON ({e}); send a {expected} as application/json")
    })?;
    let Json::Object(message) = value else {
        return Err(format!("the body is not a JSON object; send a {expected}"));
    };
    match message.get("@context") {
        None => {
            return Err(format!(
                "@context is missing; a {expected} carries \"@context\": [\"{CONTEXT}\"]"
            ));
        }
        Some(Json::Array(items)) => {
            if !items.iter().all(Json::is_string) {
                return Err(
                    "@context: every entry must be a context URL (a string), as the \
                     Dataspace Protocol's context schema requires"
                        .into(),
                );
            }
            if !items.iter().any(|c| c == CONTEXT) {
                return Err(format!(
                    "@context does not name the Dataspace Protocol {PROTOCOL_VERSION} context; \
                     include \"{CONTEXT}\""
                ));
            }
        }
        Some(_) => {
            return Err(format!(
                "@context must be an array that contains \"{CONTEXT}\""
            ));
        }
    }
    match message.get("@type") {
        Some(Json::String(t)) if t == expected => Ok(message),
        Some(Json::String(t)) => Err(format!(
            "@type is {}, but this endpoint takes a {expected}",
            crate::base::bounded::shown(t, 64)
        )),
        Some(_) => Err(format!("@type must be the string \"{expected}\"")),
        None => Err(format!(
            "@type is missing; this endpoint takes a {expected}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_needs_the_context_in_an_array_and_its_own_type() {
        let ok = br#"{"@context":["https://w3id.org/dspace/2025/1/context.jsonld"],"@type":"CatalogRequestMessage"}"#;
        assert!(parse(ok, "CatalogRequestMessage").is_ok());
        for (body, expected) in [
            (&b"{"[..], "not JSON"),
            (b"[]", "not a JSON object"),
            (br#"{"@type":"CatalogRequestMessage"}"#, "@context is missing"),
            (
                br#"{"@context":"https://w3id.org/dspace/2025/1/context.jsonld","@type":"CatalogRequestMessage"}"#,
                "must be an array",
            ),
            (
                br#"{"@context":["https://w3id.org/dspace/2024/1/context.jsonld"],"@type":"CatalogRequestMessage"}"#,
                "does not name",
            ),
            (
                br#"{"@context":["https://w3id.org/dspace/2025/1/context.jsonld"],"@type":"DatasetRequestMessage"}"#,
                "takes a CatalogRequestMessage",
            ),
            (
                br#"{"@context":["https://w3id.org/dspace/2025/1/context.jsonld"]}"#,
                "@type is missing",
            ),
        ] {
            let e = parse(body, "CatalogRequestMessage").unwrap_err();
            assert!(e.contains(expected), "{}: {e}", String::from_utf8_lossy(body));
        }
    }
}
