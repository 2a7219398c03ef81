//! Generates the sample app's gRPC service from `proto/sample.proto`. Needs `protoc`
//! (Debian's protobuf-compiler); without it the build fails naming the set-up command.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = std::env::var_os("PROTOC").map_or_else(|| "/usr/bin/protoc".into(), PathBuf::from);
    if !protoc.is_file() {
        return Err(format!(
            "protoc is missing ({}); run `cargo xtask setup` to install it",
            protoc.display()
        )
        .into());
    }
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/sample.proto"], &["proto"])?;
    Ok(())
}
