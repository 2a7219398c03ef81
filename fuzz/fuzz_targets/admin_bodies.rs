//! Bodies of the agent's admin API: refused, or read back the same once written.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::admin_bodies(data));
