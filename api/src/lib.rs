//! What Weft's binaries share: workload identity, the agent's admin API client, host
//! mount facts, and the gRPC protocol as it arrives. No Kubernetes types live here.
#![forbid(unsafe_code)]

pub mod admin;
pub mod identity;
pub mod mounts;
