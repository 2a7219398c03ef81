//! `weftctl`'s commands, as a library so the end-to-end tests drive the same code.

pub mod install;
pub mod lab;
