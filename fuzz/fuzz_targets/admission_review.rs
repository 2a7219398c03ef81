//! AdmissionReview bodies from the API server: any bytes get an answer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::admission_review(data));
