//! The Liutong gRPC API.
//!
//! The `.proto` files live in `proto/liutong/v1/`; they are compiled at build time by
//! protox (no system `protoc` needed). [`FILE_DESCRIPTOR_SET`] is the encoded descriptor
//! set of every file, which the node serves through gRPC server reflection.
#![forbid(unsafe_code)]

/// `liutong.v1`: envelopes, the authority's trust-list service, the peer API and the
/// local API.
pub mod v1 {
    #![allow(clippy::doc_overindented_list_items, clippy::large_enum_variant)]
    tonic::include_proto!("liutong.v1");
}

/// Encoded `google.protobuf.FileDescriptorSet` of all Liutong protos, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/liutong_descriptor.bin"));
