//! The output every command shares: refusals as readable errors, `--json` output,
//! listings, and [`esc`], which every line printed for a person passes text through
//! that came from others (a peer, a stored record, a node's answer).

use anyhow::anyhow;

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

/// Prints a listing the way every `list` command does: with `--json`, one JSON array of
/// `to_json(item)`; otherwise `line(item)` for each item, or the line `empty` when there
/// is none.
pub(super) fn print_list<T>(
    items: &[T],
    json: bool,
    empty: &str,
    to_json: impl Fn(&T) -> serde_json::Value,
    line: impl FnMut(&T),
) -> anyhow::Result<()> {
    if json {
        let all: Vec<_> = items.iter().map(to_json).collect();
        return print_json(&all);
    }
    if items.is_empty() {
        println!("{empty}");
    }
    items.iter().for_each(line);
    Ok(())
}
