//! `weftctl`'s commands, as a library so the end-to-end tests drive the same code.

pub mod check;
pub mod cluster;
pub mod dashboards;
pub mod enroll;
pub mod install;
pub mod kubeconfig;
pub mod lab;
pub mod observe;
pub mod output;
pub mod proxy_config;
pub mod status;
#[cfg(test)]
mod testing;
