//! What Weft's two data-plane binaries, the node agent and the waypoint, share:
//! workload certificates from the control plane's CA (`identity`), the configuration
//! subscription (`discovery`), authorization decisions (`policy`), HBONE tunnels
//! (`hbone`), copying between streams (`copy`), logging set-up (`logs`) and the
//! metrics and readiness endpoints (`probes`), and the signals that stop a process
//! (`shutdown`); the label schema of connection metrics (`telemetry`).
#![forbid(unsafe_code)]

pub mod copy;
pub mod discovery;
pub mod hbone;
pub mod identity;
pub mod logs;
pub mod policy;
pub mod probes;
pub mod shutdown;
pub mod telemetry;
