//! What each fuzz target does with its input, as plain functions of bytes: the targets
//! in `fuzz_targets/` call them under libFuzzer, and the test suite replays the
//! committed corpus (`corpus/<target>/`) through the same functions, with no fuzzing
//! engine (`tests/tests/fuzz_corpus.rs` includes this file). Each one may refuse its
//! input; it must never panic, and the properties it asserts must hold.

use arbitrary::{Arbitrary as _, Unstructured};

/// What a target does with one input.
pub type Target = fn(&[u8]);

/// Every target, by name: what the replay walks.
pub const TARGETS: &[(&str, Target)] = &[
    ("config_documents", config_documents),
    ("lab_topology", lab_topology),
    ("admission_review", admission_review),
    ("csr", csr),
    ("request_normalization", request_normalization),
    ("hbone_request", hbone_request),
    ("admin_bodies", admin_bodies),
    ("cni_stdin", cni_stdin),
];

/// Configuration documents (YAML): parsed, validated and translated, or refused with a
/// field and a reason.
pub fn config_documents(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (docs, _) = controlplane::model::parse("fuzz", text);
    let _ = controlplane::validate::validate(&docs);
    let _ = controlplane::resources::translate(&docs, "cluster.local");
}

/// The lab's topology file.
pub fn lab_topology(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = weftctl::lab::topology::parse("fuzz", text);
}

/// AdmissionReview bodies of the validating webhook.
pub fn admission_review(data: &[u8]) {
    let _ = controlplane::webhook::review(data, &[]);
}

/// Certificate signing requests: signed or refused.
pub fn csr(data: &[u8]) {
    use controlplane::ca::{Authority, Settings, generate_root};
    static CA: std::sync::OnceLock<Authority> = std::sync::OnceLock::new();
    let ca = CA.get_or_init(|| {
        let root = generate_root("cluster.local").expect("root");
        Authority::from_root(&root, Settings::default()).expect("authority")
    });
    let id = "spiffe://cluster.local/ns/shop/sa/cart"
        .parse()
        .expect("identity");
    let _ = ca.sign(data, &id, None);
}

/// The waypoint's request normalization: a normalized path is a fixed point, so no
/// second decoding could reach another path.
pub fn request_normalization(data: &[u8]) {
    let Ok((target, host)) = <(&str, &str)>::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    if let Ok(path) = waypoint::normalize::path(target) {
        assert_eq!(
            waypoint::normalize::path(&path).as_deref(),
            Ok(path.as_str())
        );
    }
    let _ = waypoint::normalize::split_host(host);
    if let Ok(req) = http::Request::get(target).header("host", host).body(()) {
        let _ = waypoint::normalize::request(&req, "10.96.0.10:80");
    }
}

/// The head of an HBONE request as the agent's inbound side reads it: method,
/// target and the baggage naming the original caller. An accepted target is an
/// address in canonical form that the authority named.
pub fn hbone_request(data: &[u8]) {
    #[derive(Debug, arbitrary::Arbitrary)]
    struct Head<'a> {
        method: &'a str,
        target: &'a str,
        headers: Vec<(&'a str, &'a [u8])>,
    }
    let Ok(head) = Head::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut builder = http::Request::builder()
        .method(head.method)
        .uri(head.target);
    for (name, value) in &head.headers {
        builder = builder.header(*name, *value);
    }
    let Ok(req) = builder.body(()) else {
        return;
    };
    if let Ok(target) = agent::inbound::connect_target(&req) {
        assert_eq!(req.method(), http::Method::CONNECT);
        assert_eq!(target.ip(), target.ip().to_canonical());
        let authority = req.uri().authority().expect("a target has an authority");
        let named: std::net::SocketAddr = authority.as_str().parse().expect("it parsed");
        assert_eq!(named.port(), target.port());
    }
    let _ = agent::access::original_caller(req.headers());
}

/// Bodies of the agent's admin API (enroll, unenroll, the CNI plugin's requests):
/// refused, or read into a request that reads back the same once written.
pub fn admin_bodies(data: &[u8]) {
    if let Ok(r) = serde_json::from_slice::<api::admin::NetnsRequest>(data) {
        let again = serde_json::to_vec(&r).expect("serializes");
        assert_eq!(
            serde_json::from_slice::<api::admin::NetnsRequest>(&again).ok(),
            Some(r)
        );
    }
    if let Ok(r) = serde_json::from_slice::<api::admin::CniRequest>(data) {
        let again = serde_json::to_vec(&r).expect("serializes");
        assert_eq!(
            serde_json::from_slice::<api::admin::CniRequest>(&again).ok(),
            Some(r)
        );
    }
}

/// What a container runtime writes to the CNI plugin's stdin: a network
/// configuration, parsed or refused with a CNI error; its version is always named.
pub fn cni_stdin(data: &[u8]) {
    match cni::conf::NetConf::parse(data) {
        Ok(conf) => {
            let _ = conf.result();
        }
        Err(e) => {
            let _ = e.to_json(&cni::conf::version_of(data));
        }
    }
}
