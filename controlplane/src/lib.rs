//! Weft's control plane: the certificate authority (`ca`), node authentication
//! (`auth`), the registry of workloads and their nodes (`registry`) and the gRPC
//! server (`server`).
#![forbid(unsafe_code)]

pub mod ca;
