//! `weft-waypoint`: the optional per-service L7 proxy. Not built yet.
#![forbid(unsafe_code)]

fn main() {
    eprintln!("weft-waypoint: the L7 waypoint proxy is not implemented yet; nothing was started");
    std::process::exit(2);
}
