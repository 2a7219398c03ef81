//! AdmissionReview bodies from the API server: any bytes get an answer.
#![no_main]

libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    let _ = controlplane::webhook::review(body, &[]);
});
