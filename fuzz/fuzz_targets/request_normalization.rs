//! The waypoint's request normalization (what routing, policies and applications see):
//! any request target and host are normalized or refused without a panic, and a
//! normalized path is a fixed point — normalizing it again changes nothing, so no
//! second decoding could reach another path.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: (&str, &str)| {
    let (target, host) = input;
    if let Ok(path) = waypoint::normalize::path(target) {
        assert_eq!(waypoint::normalize::path(&path).as_deref(), Ok(path.as_str()));
    }
    let _ = waypoint::normalize::split_host(host);
    if let Ok(req) = http::Request::get(target).header("host", host).body(()) {
        let _ = waypoint::normalize::request(&req, "10.96.0.10:80");
    }
});
