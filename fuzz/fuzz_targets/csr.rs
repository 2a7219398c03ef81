//! Certificate signing requests: any bytes are signed or refused, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::csr(data));
