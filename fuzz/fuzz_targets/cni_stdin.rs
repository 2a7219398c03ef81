//! The CNI plugin's stdin: a network configuration, parsed or refused as CNI says.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::cni_stdin(data));
