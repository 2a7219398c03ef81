//! Weft's kernel programs. The programs themselves live in the binary target
//! (`src/main.rs`), which `agent/build.rs` builds for `bpfel-unknown-none`; this
//! library target exists so the agent can name the crate as a build dependency.
#![no_std]
