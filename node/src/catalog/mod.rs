//! Data products and the catalog: what this node publishes and which of its offers a
//! peer may see.
//!
//! - [`product`] stores versioned, chunked products with their hashes and metadata.
//! - [`schema`] infers the columns and quality figures of CSV and JSON Lines data.

pub mod product;
pub mod schema;
