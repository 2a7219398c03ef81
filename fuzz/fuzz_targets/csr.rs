//! Certificate signing requests: any bytes are signed or refused, never a panic.
#![no_main]

use std::sync::OnceLock;

use controlplane::ca::{Authority, Settings, generate_root};

fn authority() -> &'static Authority {
    static CA: OnceLock<Authority> = OnceLock::new();
    CA.get_or_init(|| {
        let root = generate_root("cluster.local").expect("root");
        Authority::from_root(&root, Settings::default()).expect("authority")
    })
}

libfuzzer_sys::fuzz_target!(|der: &[u8]| {
    let id = "spiffe://cluster.local/ns/shop/sa/cart"
        .parse()
        .expect("identity");
    let _ = authority().sign(der, &id, None);
});
