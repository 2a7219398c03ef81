use api::{
    identity::Identity,
    tls::{PeerRole, TrustBundle, workload_csr},
};
use rcgen::{CertificateParams, KeyPair, SanType};
use rustls_pki_types::UnixTime;
use x509_parser::prelude::FromDer as _;

use super::*;

fn id() -> Identity {
    "spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap()
}

fn p256() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

fn authority() -> Authority {
    let root = generate_root("cluster.local").unwrap();
    Authority::from_root(&root, Settings::default()).unwrap()
}

fn bundle(ca: &Authority) -> TrustBundle {
    TrustBundle::new("cluster.local", ca.roots().to_vec()).unwrap()
}

#[test]
fn issues_a_workload_certificate_that_verifies() {
    let ca = authority();
    let key = p256();
    let chain = ca
        .sign(&workload_csr(&id(), &key).unwrap(), &id(), None)
        .unwrap();
    assert_eq!(chain.len(), 1, "signed by the root itself");
    let got = bundle(&ca)
        .verify_peer(&chain, PeerRole::Server, Some(&id()), UnixTime::now())
        .unwrap();
    assert_eq!(got, id());
    bundle(&ca)
        .verify_peer(&chain, PeerRole::Client, Some(&id()), UnixTime::now())
        .unwrap();

    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(chain[0].as_ref()).unwrap();
    assert!(!cert.is_ca());
    // The certificate carries the agent's public key: the key itself never left.
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert_eq!(lifetime, 24 * 3600 + 60, "24 h plus the backdating");
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
}

#[test]
fn lifetime_is_capped_by_the_maximum_and_by_the_issuer() {
    let ca = authority();
    let csr = workload_csr(&id(), &p256()).unwrap();
    let chain = ca
        .sign(&csr, &id(), Some(Duration::from_secs(365 * 24 * 3600)))
        .unwrap();
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(chain[0].as_ref()).unwrap();
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert_eq!(lifetime, 7 * 24 * 3600 + 60);

    // A root that expires in an hour never issues past it.
    let key = p256();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::hours(1);
    let root = RootPem {
        cert: params.self_signed(&key).unwrap().pem(),
        key: key.serialize_pem(),
    };
    let short = Authority::from_root(&root, Settings::default()).unwrap();
    let chain = short.sign(&csr, &id(), None).unwrap();
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(chain[0].as_ref()).unwrap();
    assert!(cert.validity().not_after.timestamp() <= params.not_after.unix_timestamp());
}

#[test]
fn refuses_oversized_and_malformed_csrs() {
    let ca = authority();
    let e = ca
        .sign(&vec![0x30; MAX_CSR_BYTES + 1], &id(), None)
        .unwrap_err();
    assert_eq!(e.reason(), "csr_too_large");
    let e = ca.sign(b"not a csr", &id(), None).unwrap_err();
    assert_eq!(e.reason(), "malformed_csr");
    // A CSR whose signature does not match (one byte of the key changed).
    let mut csr = workload_csr(&id(), &p256()).unwrap();
    let n = csr.len();
    csr[n - 5] ^= 0x55;
    let e = ca.sign(&csr, &id(), None).unwrap_err();
    assert_eq!(e.reason(), "malformed_csr", "{e}");
}

#[test]
fn refuses_a_csr_for_a_ca_certificate() {
    let ca = authority();
    let key = p256();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::URI(id().to_string().try_into().unwrap())];
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let csr = params.serialize_request(&key).unwrap().der().to_vec();
    let e = ca.sign(&csr, &id(), None).unwrap_err();
    assert_eq!(e.reason(), "csr_requests_ca", "{e}");
}

#[test]
fn refuses_a_csr_with_extra_or_other_sans() {
    let ca = authority();
    let key = p256();
    for sans in [
        vec![
            SanType::URI(id().to_string().try_into().unwrap()),
            SanType::DnsName("evil.example".try_into().unwrap()),
        ],
        vec![SanType::URI(
            "spiffe://cluster.local/ns/kube-system/sa/admin"
                .try_into()
                .unwrap(),
        )],
    ] {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        let csr = params.serialize_request(&key).unwrap().der().to_vec();
        let e = ca.sign(&csr, &id(), None).unwrap_err();
        assert_eq!(e.reason(), "csr_extra_san", "{e}");
    }
}

#[test]
fn refuses_keys_other_than_p256() {
    let ca = authority();
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let e = ca
        .sign(&workload_csr(&id(), &key).unwrap(), &id(), None)
        .unwrap_err();
    assert_eq!(e.reason(), "csr_key_algorithm", "{e}");
}

#[test]
fn local_root_is_created_once_and_kept() {
    let dir = std::env::temp_dir().join(format!("weft-ca-test-{}", rand::random::<u64>()));
    let (first, created) = local::load_or_create(&dir, Settings::default()).unwrap();
    assert!(created);
    let mode = std::fs::metadata(dir.join("root-key.pem"))
        .unwrap()
        .permissions();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(mode.mode() & 0o777, 0o600);
    let (second, created) = local::load_or_create(&dir, Settings::default()).unwrap();
    assert!(!created);
    assert_eq!(first.roots(), second.roots());
    // What the restarted CA issues verifies against the first one's root.
    let chain = second
        .sign(&workload_csr(&id(), &p256()).unwrap(), &id(), None)
        .unwrap();
    bundle(&first)
        .verify_peer(&chain, PeerRole::Server, Some(&id()), UnixTime::now())
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plugged_intermediate_signs_and_the_chain_includes_it() {
    // An operator's PKI: a root, and an intermediate for Weft.
    let root_key = p256();
    let mut root_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    root_params
        .distinguished_name
        .push(DnType::CommonName, "Corp root");
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let root_cert = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root_params, root_key);
    let inter_key = p256();
    let mut inter_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    inter_params
        .distinguished_name
        .push(DnType::CommonName, "Corp Weft intermediate");
    inter_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    inter_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let inter_cert = inter_params.signed_by(&inter_key, &root_issuer).unwrap();

    let ca = Authority::from_pem(
        &inter_cert.pem(),
        &inter_key.serialize_pem(),
        "",
        &root_cert.pem(),
        Settings::default(),
    )
    .unwrap();
    assert_eq!(ca.roots(), &[root_cert.der().clone()]);
    let chain = ca
        .sign(&workload_csr(&id(), &p256()).unwrap(), &id(), None)
        .unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(&chain[1], inter_cert.der());
    bundle(&ca)
        .verify_peer(&chain, PeerRole::Server, Some(&id()), UnixTime::now())
        .unwrap();

    // Pieces that do not belong together are refused at start.
    let stranger = generate_root("cluster.local").unwrap();
    let e = Authority::from_pem(
        &inter_cert.pem(),
        &inter_key.serialize_pem(),
        "",
        &stranger.cert,
        Settings::default(),
    )
    .unwrap_err();
    assert_eq!(e.reason(), "ca_material", "{e}");
}

#[test]
fn pem_encoding_round_trips() {
    let ca = authority();
    let pem = pem_of(&ca.roots()[0]);
    let back = parse_pem_certs("x", &pem).unwrap();
    assert_eq!(back, ca.roots());
}
