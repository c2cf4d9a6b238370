//! `liutong trace`: which agreement a found copy of a tabular product was delivered
//! under, by its watermark (provider side).

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use liutong_proto::v1::{TraceCopyRequest, TraceCopyResponse};

use super::local_node::LocalArgs;
use super::output::{esc, print_json, status_error};
use crate::service::catalog::TRACE_MAX;

/// The flags of `liutong trace` (its help is on the command in `cli.rs`).
#[derive(Args, Debug)]
pub struct TraceArgs {
    /// The found copy: CSV with its header row, or JSON Lines.
    pub file: PathBuf,
    /// Compare with this product's agreements only [default: every product's].
    #[arg(long)]
    pub product: Option<String>,
    #[command(flatten)]
    pub local: LocalArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: TraceArgs) -> anyhow::Result<()> {
    let data = read_start(&args.file)?;
    let answer = args
        .local
        .admin()
        .await?
        .trace_copy(TraceCopyRequest {
            data,
            product_id: args.product.clone().unwrap_or_default(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if args.json {
        print_json(&answer_json(&answer))
    } else {
        print!("{}", answer_text(&answer));
        Ok(())
    }
}

/// The file's first [`TRACE_MAX`] bytes, cut at the last line end within them (the
/// marks of the whole rows there are enough to trace a copy).
fn read_start(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut data = Vec::new();
    file.take(TRACE_MAX as u64 + 1)
        .read_to_end(&mut data)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if data.len() > TRACE_MAX {
        data.truncate(TRACE_MAX);
        let end = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        data.truncate(end);
    }
    Ok(data)
}

/// The answer for a person: the finding, then the best candidates.
pub fn answer_text(a: &TraceCopyResponse) -> String {
    let mut out = format!("{}\n", esc(&a.verdict));
    for c in &a.candidates {
        out.push_str(&format!(
            "  {}  consumer {}  {} v{}  score {:.1} ({} of {} values marked)\n",
            esc(&c.agreement_id),
            esc(&c.consumer),
            esc(&c.product_id),
            c.version,
            c.score,
            c.matches,
            c.cells
        ));
    }
    out.push_str(&format!(
        "threshold {:.1}: a copy not from an agreement reaches it with probability below \
         1.6e-8 per agreement compared\n",
        a.threshold
    ));
    out
}

fn answer_json(a: &TraceCopyResponse) -> serde_json::Value {
    serde_json::json!({
        "traced": a.traced,
        "verdict": a.verdict,
        "threshold": a.threshold,
        "agreements": a.agreements,
        "cells": a.cells,
        "candidates": a.candidates.iter().map(|c| serde_json::json!({
            "agreement_id": c.agreement_id,
            "consumer": c.consumer,
            "product_id": c.product_id,
            "version": c.version,
            "cells": c.cells,
            "matches": c.matches,
            "score": c.score,
        })).collect::<Vec<_>>(),
    })
}
