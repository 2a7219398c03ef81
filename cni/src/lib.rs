//! `weft-cni`, a CNI 1.0 plugin chained after the cluster's primary plugin.
//!
//! On ADD it tells the node's agent about the new pod (over the agent's admin socket)
//! and waits for its answer: a pod of a mesh namespace is enrolled before ADD returns,
//! so its containers never send a byte outside the mesh. The primary plugin's result is
//! passed on untouched. When the agent does not answer, the pod is refused (the runtime
//! retries) unless what the agent last wrote down says its namespace is not in the mesh.
//!
//! `weft-cni install` is the DaemonSet's init container: it puts the binary into the
//! node's CNI folder and the plugin into the node's network configuration.

pub mod conf;
pub mod install;
pub mod plugin;
