//! Generates the gRPC protocol from `proto/`. Needs `protoc` (Debian's
//! protobuf-compiler); without it the build fails naming the set-up command.
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = std::env::var_os("PROTOC")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/protoc".into());
    if !Path::new(&protoc).is_file() {
        return Err(format!(
            "protoc is missing ({}); run `cargo xtask setup` to install it",
            protoc.display()
        )
        .into());
    }
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .protoc_arg("--experimental_allow_proto3_optional")
        .compile_protos(
            &[
                "proto/weft/ca/v1/ca.proto",
                "proto/weft/config/v1/config.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
