//! The head of an HBONE request (method, target, baggage) as the agent reads it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::hbone_request(data));
