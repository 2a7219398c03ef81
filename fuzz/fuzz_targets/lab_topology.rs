//! Lab topology files: any text is accepted or refused with problems, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| {
    let _ = weftctl::lab::topology::parse("fuzz", text);
});
