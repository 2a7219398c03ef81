//! The waypoint's request normalization (what routing, policies and applications see):
//! any request target and host are normalized or refused without a panic, and a
//! normalized path is a fixed point — normalizing it again changes nothing, so no
//! second decoding could reach another path.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::request_normalization(data));
