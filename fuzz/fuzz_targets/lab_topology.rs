//! Lab topology files: any text is accepted or refused with problems, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::lab_topology(data));
