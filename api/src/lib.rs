//! What Weft's binaries share: workload identity, the agent's admin API client, host
//! mount facts, Kubernetes name rules, and the gRPC protocol as it arrives. No
//! Kubernetes types live here.
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod identity;
pub mod mounts;
pub mod names;
pub mod pattern;
pub mod tls;

/// The gRPC protocol, generated from `proto/`. Generated types stop at the edge: each
/// side converts them into its own types once.
pub mod proto {
    pub mod ca {
        #![allow(clippy::all, clippy::pedantic, missing_docs, reason = "generated code")]
        tonic::include_proto!("weft.ca.v1");
    }
    pub mod config {
        #![allow(clippy::all, clippy::pedantic, missing_docs, reason = "generated code")]
        tonic::include_proto!("weft.config.v1");
    }
}
