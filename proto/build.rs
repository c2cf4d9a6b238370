//! Compiles `liutong/v1/*.proto` with protox (pure Rust, no system `protoc`) and
//! writes the file descriptor set that the node serves for gRPC reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "liutong/v1/envelope.proto",
    "liutong/v1/authority.proto",
    "liutong/v1/node.proto",
    "liutong/v1/catalog.proto",
    "liutong/v1/contract.proto",
    "liutong/v1/transfer.proto",
    "liutong/v1/admin.proto",
    "liutong/v1/audit.proto",
    "liutong/v1/usage.proto",
    "liutong/v1/query.proto",
];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| manifest.join(p)).collect();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&manifest]).expect("the .proto files compile");
    std::fs::write(out.join("liutong_descriptor.bin"), fds.encode_to_vec())
        .expect("OUT_DIR is writable");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Transfer chunks are decoded without a copy of their (about 1 MiB) bytes.
        .bytes(".liutong.v1.Chunk.data")
        .compile_fds(fds)
        .expect("code generation succeeds");
}
