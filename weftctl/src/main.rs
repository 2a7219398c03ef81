//! `weftctl`: Weft's command line. Its commands (install, enroll, waypoint, status,
//! validate, lab) arrive with the capabilities they drive.
#![forbid(unsafe_code)]

fn main() {
    eprintln!("weftctl: no command is implemented yet; run the agent with `cargo xtask agent`");
    std::process::exit(2);
}
