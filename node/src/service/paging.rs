//! Paged listings (AIP-158): a request names `page_size` (0 for the list's default,
//! more than its maximum is read as the maximum) and `page_token` (empty for the first
//! page, else the previous answer's `next_page_token`); an answer's `next_page_token`
//! is empty on the last page.
//!
//! A token is opaque to clients: the list it belongs to and the storage position the
//! next page starts after, in base64url. A token that does not decode, or that belongs
//! to another list, is refused with INVALID_ARGUMENT. Forging one gains nothing: it
//! only moves where a listing the caller may read anyway starts.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use tonic::Status;

/// Page size when the request names none, and the most a page holds.
pub const DEFAULT_PAGE_SIZE: usize = 100;
pub const MAX_PAGE_SIZE: usize = 1000;

/// Longest token accepted, in characters: a storage key is far shorter.
const MAX_TOKEN_CHARS: usize = 4096;

/// Marks a token of this format, before the list's name.
const VERSION: &str = "lt1";

/// A page request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// How many items the page holds at most.
    pub size: usize,
    /// The storage position the page starts after; `None` for the first page.
    pub after: Option<Vec<u8>>,
}

impl PageRequest {
    /// Checks `page_size` and `page_token` for the list called `list`, with the
    /// default page size and maximum of most lists.
    pub fn parse(list: &str, page_size: u32, page_token: &str) -> Result<Self, Status> {
        Self::parse_with(
            list,
            page_size,
            page_token,
            DEFAULT_PAGE_SIZE,
            MAX_PAGE_SIZE,
        )
    }

    /// [`parse`](Self::parse) with a list's own default and maximum.
    pub fn parse_with(
        list: &str,
        page_size: u32,
        page_token: &str,
        default: usize,
        max: usize,
    ) -> Result<Self, Status> {
        let size = match page_size as usize {
            0 => default,
            n => n.min(max),
        };
        let after = if page_token.is_empty() {
            None
        } else {
            Some(decode(list, page_token)?)
        };
        Ok(Self { size, after })
    }

    pub fn after(&self) -> Option<&[u8]> {
        self.after.as_deref()
    }
}

/// The `next_page_token` for the list called `list` whose next page starts after
/// `next`; empty when there is no next page.
pub fn next_page_token(list: &str, next: Option<&[u8]>) -> String {
    let Some(next) = next else {
        return String::new();
    };
    let mut raw = format!("{VERSION}:{list}:").into_bytes();
    raw.extend_from_slice(next);
    B64.encode(raw)
}

fn decode(list: &str, token: &str) -> Result<Vec<u8>, Status> {
    let bad = |why: &str| {
        Status::invalid_argument(format!(
            "page_token: {why}; pass the next_page_token of the previous page of this \
             list unchanged, or none for the first page"
        ))
    };
    if token.len() > MAX_TOKEN_CHARS {
        return Err(bad("too long to be a page token"));
    }
    let raw = B64
        .decode(token)
        .map_err(|_| bad("not a page token of this node"))?;
    let head = format!("{VERSION}:{list}:");
    match raw.strip_prefix(head.as_bytes()) {
        Some(position) if !position.is_empty() => Ok(position.to_vec()),
        _ => Err(bad(&format!("not a page token of the {list} list"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_leads_back_to_its_position() {
        let token = next_page_token("contracts", Some(b"\x80\0key/1"));
        let page = PageRequest::parse("contracts", 0, &token).unwrap();
        assert_eq!(page.after(), Some(&b"\x80\0key/1"[..]));
        assert_eq!(page.size, DEFAULT_PAGE_SIZE);
        assert_eq!(next_page_token("contracts", None), "");
    }

    #[test]
    fn sizes_are_bounded() {
        assert_eq!(PageRequest::parse("x", 1, "").unwrap().size, 1);
        assert_eq!(
            PageRequest::parse("x", u32::MAX, "").unwrap().size,
            MAX_PAGE_SIZE
        );
        assert_eq!(
            PageRequest::parse_with("x", 0, "", 50, 500).unwrap().size,
            50
        );
    }

    #[test]
    fn foreign_and_damaged_tokens_are_refused() {
        let other = next_page_token("products", Some(b"p1"));
        for token in [
            "!!not base64!!".to_owned(),
            other,
            B64.encode("lt1:contracts:"),
            "A".repeat(MAX_TOKEN_CHARS + 1),
        ] {
            let e = PageRequest::parse("contracts", 10, &token).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{token}");
            assert!(e.message().starts_with("page_token: "), "{}", e.message());
        }
    }
}
