//! `liutong product …` and `liutong catalog`: publishing and browsing data products.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context as _, anyhow};
use clap::Subcommand;
use liutong_proto::v1::publish_request::Part;
use liutong_proto::v1::{
    GetProductRequest, ListProductsRequest, PeerCatalogRequest, Product, PublishMetadata,
    PublishRequest,
};

use super::local_node::LocalArgs;
use super::output::{esc, pages_from, print_json, print_pages, status_error};

use crate::catalog::{UPLOAD_PIECE, publish_end};
use sha2::{Digest, Sha256};

#[derive(Subcommand, Debug)]
pub enum ProductCommand {
    /// Publish a data product (or a new version of one) with its offer policy.
    Publish {
        /// The payload file.
        file: PathBuf,
        #[arg(long)]
        title: String,
        #[arg(long, default_value = "")]
        description: String,
        /// core, important, general-3, general-2 or general-1 (GB/T 43697-2024).
        #[arg(long)]
        classification: String,
        /// csv, jsonl or bytes.
        #[arg(long)]
        format: String,
        /// The offer's policy (TOML, JSON or ODRL JSON-LD; see policy/README.md).
        /// Without it the product is stored but not offered.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Publish a new version of this product instead of a new product.
        #[arg(long)]
        product: Option<String>,
        /// Products this one was derived from (repeat or comma-separate).
        #[arg(long, value_delimiter = ',')]
        derived_from: Vec<String>,
        #[command(flatten)]
        local: LocalArgs,
        #[arg(long)]
        json: bool,
    },
    /// List the latest version of every product.
    List {
        #[command(flatten)]
        local: LocalArgs,
        #[arg(long)]
        json: bool,
    },
    /// Show every version of one product.
    Show {
        product: String,
        #[command(flatten)]
        local: LocalArgs,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: ProductCommand) -> anyhow::Result<()> {
    match cmd {
        ProductCommand::Publish {
            file,
            title,
            description,
            classification,
            format,
            policy,
            product,
            derived_from,
            local,
            json,
        } => {
            let (policy_text, policy_format) = match &policy {
                Some(path) => (
                    std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read the policy {}", path.display()))?,
                    path.extension()
                        .and_then(|e| e.to_str())
                        .unwrap_or_default()
                        .to_owned(),
                ),
                None => (String::new(), String::new()),
            };
            let mut input = std::fs::File::open(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let metadata = PublishRequest {
                part: Some(Part::Metadata(PublishMetadata {
                    product_id: product.unwrap_or_default(),
                    title,
                    description,
                    classification,
                    format,
                    policy: policy_text,
                    policy_format,
                    derived_from,
                })),
            };
            // Read the file in pieces on a blocking thread and stream them.
            let (tx, rx) = tokio::sync::mpsc::channel::<PublishRequest>(4);
            tx.send(metadata)
                .await
                .map_err(|_| anyhow!("upload stopped"))?;
            // The end message goes only after the whole file was read: a read that fails
            // ends the stream without it, and the node stores nothing.
            let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let mut buf = vec![0u8; UPLOAD_PIECE];
                let (mut size, mut hash) = (0u64, Sha256::new());
                loop {
                    let n = input.read(&mut buf)?;
                    if n == 0 {
                        let end = PublishRequest {
                            part: Some(Part::End(publish_end(size, hash.finalize()))),
                        };
                        let _ = tx.blocking_send(end);
                        return Ok(());
                    }
                    size += n as u64;
                    hash.update(&buf[..n]);
                    let piece = PublishRequest {
                        part: Some(Part::Data(buf[..n].to_vec())),
                    };
                    if tx.blocking_send(piece).is_err() {
                        return Ok(());
                    }
                }
            });
            let answer = local
                .admin()
                .await?
                .publish_product(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await;
            // A failed read explains a refused upload better than the node can.
            reader.await?.with_context(|| {
                format!("cannot read {}; nothing was published", file.display())
            })?;
            let answer = answer.map_err(status_error)?.into_inner();
            if json {
                print_json(&product_json(&answer))?;
            } else {
                println!(
                    "published {} version {}: {} bytes in {} chunks, sha256 {}",
                    answer.product_id, answer.version, answer.size, answer.chunks, answer.sha256
                );
                if answer.offer_id.is_empty() {
                    println!("not offered (no --policy)");
                } else {
                    println!("offered as {}", answer.offer_id);
                }
                print_profile(&answer);
            }
            Ok(())
        }
        ProductCommand::List { local, json } => {
            let admin = local.admin().await?;
            print_pages(
                json,
                "no products published yet",
                product_json,
                print_product,
                pages_from(
                    &admin,
                    |mut admin, page_token| async move {
                        admin
                            .list_products(ListProductsRequest {
                                page_size: 0,
                                page_token,
                            })
                            .await
                    },
                    |page| (page.products, page.next_page_token),
                ),
            )
            .await
        }
        ProductCommand::Show {
            product,
            local,
            json,
        } => {
            let admin = local.admin().await?;
            let show = |p: &Product| {
                print_product(p);
                print_profile(p);
                println!();
            };
            let fetch = pages_from(
                &admin,
                move |mut admin, page_token| {
                    let product_id = product.clone();
                    async move {
                        let request = GetProductRequest {
                            product_id,
                            page_size: 0,
                            page_token,
                        };
                        admin.get_product(request).await
                    }
                },
                |page| (page.products, page.next_page_token),
            );
            print_pages(json, "no versions", product_json, show, fetch).await
        }
    }
}

/// Pages of a peer's catalog `liutong catalog --peer` reads at most (of 500 offers).
const MAX_PEER_CATALOG_PAGES: usize = 10_000;

/// `liutong catalog --peer ADDR`.
pub async fn catalog(peer: String, local: LocalArgs, json: bool) -> anyhow::Result<()> {
    let admin = local.admin().await?;
    let mut pages = 0usize;
    print_pages(
        json,
        &format!("the peer at {peer} shows this node no offers"),
        product_json,
        print_product,
        |page_token| {
            pages += 1;
            let (mut admin, address, pages) = (admin.clone(), peer.clone(), pages);
            async move {
                // The peer decides how many pages there are; a bound keeps one that
                // never ends them from holding the command.
                if pages > MAX_PEER_CATALOG_PAGES {
                    anyhow::bail!(
                        "the peer at {address} sent more than {MAX_PEER_CATALOG_PAGES} pages \
                         of offers; the listing stopped there"
                    );
                }
                let page = admin
                    .peer_catalog(PeerCatalogRequest {
                        address,
                        page_size: 500,
                        page_token,
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                Ok((page.offers, page.next_page_token))
            }
        },
    )
    .await
}

fn print_product(p: &Product) {
    println!(
        "{}  v{}  {:<10} {:<5} {:>12} bytes  {}",
        esc(&p.product_id),
        p.version,
        esc(&p.classification),
        esc(&p.format),
        p.size,
        esc(&p.title)
    );
    if !p.offer_id.is_empty() {
        println!("    offer {}  owner {}", esc(&p.offer_id), esc(&p.owner));
    }
}

fn print_profile(p: &Product) {
    let Ok(profile) = serde_json::from_str::<serde_json::Value>(&p.profile_json) else {
        return;
    };
    println!(
        "    {} rows, {} not matching the schema (conformance {:.3})",
        profile["rows"],
        profile["nonconforming_rows"],
        profile["conformance"].as_f64().unwrap_or(0.0)
    );
    for c in profile["columns"].as_array().into_iter().flatten() {
        println!(
            "    column {:<20} {:<8} empty {:.1}%",
            esc(c["name"].as_str().unwrap_or("")),
            esc(c["type"].as_str().unwrap_or("")),
            c["null_ratio"].as_f64().unwrap_or(0.0) * 100.0
        );
    }
}

pub(super) fn product_json(p: &Product) -> serde_json::Value {
    serde_json::json!({
        "product_id": p.product_id,
        "version": p.version,
        "title": p.title,
        "description": p.description,
        "owner": p.owner,
        "classification": p.classification,
        "format": p.format,
        "size": p.size,
        "sha256": p.sha256,
        "chunk_size": p.chunk_size,
        "chunks": p.chunks,
        "profile": serde_json::from_str::<serde_json::Value>(&p.profile_json).unwrap_or(serde_json::Value::Null),
        "offer_id": p.offer_id,
        "policy": serde_json::from_str::<serde_json::Value>(&p.policy_odrl_json).unwrap_or(serde_json::Value::Null),
        "published_at": p.published_at_unix,
        "derived_from": p.derived_from,
    })
}
