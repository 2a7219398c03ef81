//! The agent's DNS for the pods enrolled in the mesh, whose UDP and TCP port 53 traffic
//! is redirected to it.
//!
//! Mesh service names resolve to their virtual IPs (VIPs) and the hosts of external
//! services to their configured addresses; the agent is authoritative for the cluster
//! domain, so other names in it do not exist. Everything else is forwarded to the pod's
//! upstream resolver.
//!
//! The message format ([`wire`]) and what the agent knows ([`table`]) have no I/O;
//! [`server`] is the resolver in each pod's namespace.

pub mod server;
pub mod table;
pub mod wire;

pub use server::{Resolver, Settings};
