//! Configuration documents (what `weftctl validate` and the local source read): any
//! text is parsed and validated without a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::config_documents(data));
