//! The output every command shares: refusals as readable errors, `--json` output,
//! listings, and [`esc`], which every line printed for a person passes text through
//! that came from others (a peer, a stored record, a node's answer).

use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;

use anyhow::{anyhow, bail};
use serde::ser::{SerializeSeq as _, Serializer as _};

pub(super) use crate::base::bounded::escape as esc;

/// A gRPC refusal as an error a person can read; its words may quote a peer, so they
/// are escaped.
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow!("{:?}: {}", s.code(), esc(s.message()))
}

/// Prints `value` as indented JSON: the `--json` output of every command.
pub(super) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// One page's items and its `next_page_token`, as [`pages_from`] fetches them.
pub(super) type PageFuture<T> = Pin<Box<dyn Future<Output = anyhow::Result<(Vec<T>, String)>>>>;

/// The `fetch` of [`print_pages`] for a listing call: `call(client, page_token)` asks for
/// one page on its own clone of `client`, and `split(page)` gives the page's items and its
/// `next_page_token`.
pub(super) fn pages_from<C, P, T, Fut>(
    client: &C,
    call: impl Fn(C, String) -> Fut,
    split: impl Fn(P) -> (Vec<T>, String) + Copy + 'static,
) -> impl FnMut(String) -> PageFuture<T>
where
    C: Clone,
    Fut: Future<Output = Result<tonic::Response<P>, tonic::Status>> + 'static,
    P: 'static,
    T: 'static,
{
    let client = client.clone();
    move |page_token| {
        let page = call(client.clone(), page_token);
        Box::pin(async move { Ok(split(page.await.map_err(status_error)?.into_inner())) })
    }
}

/// Prints a listing the way every `list` command does, page by page as they arrive:
/// `fetch(page_token)` asks for one page and gives its items and its `next_page_token`;
/// pages are asked for until that is empty. With `--json`, one JSON array of
/// `to_json(item)`, written as the pages come; otherwise `line(item)` for each item, or
/// the line `empty` when there is none.
pub(super) async fn print_pages<T, Fut>(
    json: bool,
    empty: &str,
    to_json: impl Fn(&T) -> serde_json::Value,
    mut line: impl FnMut(&T),
    mut fetch: impl FnMut(String) -> Fut,
) -> anyhow::Result<()>
where
    Fut: Future<Output = anyhow::Result<(Vec<T>, String)>>,
{
    let mut writer = std::io::BufWriter::new(std::io::stdout());
    let mut ser = serde_json::Serializer::pretty(&mut writer);
    let mut array = if json {
        Some((&mut ser).serialize_seq(None)?)
    } else {
        None
    };
    let mut token = String::new();
    let mut printed = 0usize;
    loop {
        let (items, next) = fetch(token.clone()).await?;
        for item in &items {
            match array.as_mut() {
                Some(array) => array.serialize_element(&to_json(item))?,
                None => line(item),
            }
        }
        printed += items.len();
        if next.is_empty() {
            break;
        }
        if next == token {
            bail!("the node answered the same page again; the listing is incomplete");
        }
        token = next;
    }
    match array {
        Some(array) => {
            array.end()?;
            writeln!(writer)?;
        }
        None if printed == 0 => println!("{empty}"),
        None => {}
    }
    writer.flush()?;
    Ok(())
}
