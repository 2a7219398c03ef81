//! `weft-controlplane`: CA and configuration distribution. Not built yet.
#![forbid(unsafe_code)]

fn main() {
    eprintln!(
        "weft-controlplane: the control plane (CA, configuration distribution) is not \
         implemented yet; nothing was started"
    );
    std::process::exit(2);
}
