//! Types shared by Weft's control plane, agent and waypoint: workload identity today,
//! the gRPC protocol as it arrives. No Kubernetes types live here.
#![forbid(unsafe_code)]

pub mod identity;
