//! Configuration documents (what `weftctl validate` and the local source read): any
//! text is parsed and validated without a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| {
    let (docs, _) = controlplane::model::parse("fuzz", text);
    let _ = controlplane::validate::validate(&docs);
    let _ = controlplane::resources::translate(&docs, "cluster.local");
});
