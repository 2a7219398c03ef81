//! Rebuild the programs when the linker changes (a new bpf-linker may emit different
//! code for the same source).
fn main() {
    match which::which("bpf-linker") {
        Ok(linker) => println!("cargo:rerun-if-changed={}", linker.display()),
        Err(_) => println!(
            "cargo:warning=bpf-linker not found on PATH; run `cargo xtask setup` to install it"
        ),
    }
}
