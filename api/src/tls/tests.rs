//! Peer validation against certificates made here with rcgen: a good one, and one for
//! each way a peer can be wrong.

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use time::{Duration, OffsetDateTime};

use super::*;

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap().der().clone();
    Ca {
        issuer: Issuer::new(params, key),
        cert,
    }
}

/// Leaf parameters that a peer validation accepts; each test spoils one thing.
fn leaf_params(uris: &[&str]) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI((*u).try_into().unwrap()))
        .collect();
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(1);
    params.not_after = now + Duration::hours(1);
    params
}

fn sign(params: &CertificateParams, ca: &Ca) -> CertificateDer<'static> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    params.signed_by(&key, &ca.issuer).unwrap().der().clone()
}

const CART: &str = "spiffe://cluster.local/ns/shop/sa/cart";

fn bundle(ca: &Ca) -> TrustBundle {
    TrustBundle::new("cluster.local", vec![ca.cert.clone()]).unwrap()
}

fn verify(ca: &Ca, chain: &[CertificateDer<'static>]) -> Result<Identity, PeerError> {
    bundle(ca).verify_peer(chain, PeerRole::Server, None, UnixTime::now())
}

#[test]
fn accepts_a_workload_certificate_and_returns_its_identity() {
    let ca = ca("root");
    let leaf = sign(&leaf_params(&[CART]), &ca);
    let id = verify(&ca, std::slice::from_ref(&leaf)).unwrap();
    assert_eq!(id.to_string(), CART);
    let expected: Identity = CART.parse().unwrap();
    let got = bundle(&ca)
        .verify_peer(&[leaf], PeerRole::Client, Some(&expected), UnixTime::now())
        .unwrap();
    assert_eq!(got, expected);
}

#[test]
fn accepts_a_chain_through_an_intermediate() {
    let root = ca("root");
    let mut inter_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    inter_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    inter_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let inter_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let inter_cert = inter_params
        .signed_by(&inter_key, &root.issuer)
        .unwrap()
        .der()
        .clone();
    let inter = Ca {
        issuer: Issuer::new(inter_params, inter_key),
        cert: inter_cert.clone(),
    };
    let leaf = sign(&leaf_params(&[CART]), &inter);
    assert!(verify(&root, &[leaf.clone(), inter_cert]).is_ok());
    // Without the intermediate the chain does not reach the root.
    assert_eq!(verify(&root, &[leaf]), Err(PeerError::UnknownIssuer));
}

#[test]
fn refuses_two_uri_sans() {
    let ca = ca("root");
    let leaf = sign(
        &leaf_params(&[CART, "spiffe://cluster.local/ns/shop/sa/other"]),
        &ca,
    );
    assert_eq!(
        verify(&ca, &[leaf]),
        Err(PeerError::MultipleUriSans { count: 2 })
    );
}

#[test]
fn refuses_a_nul_byte_in_the_san() {
    let ca = ca("root");
    let leaf = sign(
        &leaf_params(&["spiffe://cluster.local/ns/shop/sa/cart\0.evil"]),
        &ca,
    );
    assert_eq!(verify(&ca, &[leaf]), Err(PeerError::NulInSan));
}

#[test]
fn refuses_a_uri_that_is_not_spiffe() {
    let ca = ca("root");
    let leaf = sign(
        &leaf_params(&["https://cluster.local/ns/shop/sa/cart"]),
        &ca,
    );
    let e = verify(&ca, &[leaf]).unwrap_err();
    assert_eq!(e.reason(), "not_spiffe", "{e}");
}

#[test]
fn refuses_no_uri_san() {
    let ca = ca("root");
    let mut params = leaf_params(&[]);
    params.subject_alt_names = vec![SanType::DnsName("cart.shop".try_into().unwrap())];
    assert_eq!(verify(&ca, &[sign(&params, &ca)]), Err(PeerError::NoUriSan));
}

#[test]
fn refuses_a_foreign_trust_domain() {
    let ca = ca("root");
    let leaf = sign(
        &leaf_params(&["spiffe://evil.example/ns/shop/sa/cart"]),
        &ca,
    );
    assert_eq!(
        verify(&ca, &[leaf]),
        Err(PeerError::ForeignTrustDomain {
            got: "evil.example".into(),
            want: "cluster.local".into()
        })
    );
}

#[test]
fn refuses_a_leaf_with_the_ca_bit() {
    let ca = ca("root");
    let mut params = leaf_params(&[CART]);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    assert_eq!(
        verify(&ca, &[sign(&params, &ca)]),
        Err(PeerError::CaCertificate)
    );
}

#[test]
fn refuses_an_expired_certificate() {
    let ca = ca("root");
    let mut params = leaf_params(&[CART]);
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(2);
    params.not_after = now - Duration::hours(1);
    assert_eq!(verify(&ca, &[sign(&params, &ca)]), Err(PeerError::Expired));
}

#[test]
fn refuses_an_unknown_issuer() {
    let ours = ca("ours");
    let theirs = ca("theirs");
    let leaf = sign(&leaf_params(&[CART]), &theirs);
    assert_eq!(verify(&ours, &[leaf]), Err(PeerError::UnknownIssuer));
}

#[test]
fn refuses_an_unexpected_identity() {
    let ca = ca("root");
    let leaf = sign(&leaf_params(&[CART]), &ca);
    let want: Identity = "spiffe://cluster.local/ns/shop/sa/billing".parse().unwrap();
    let e = bundle(&ca)
        .verify_peer(&[leaf], PeerRole::Server, Some(&want), UnixTime::now())
        .unwrap_err();
    assert_eq!(e.reason(), "unexpected_identity");
}

#[test]
fn refuses_a_certificate_without_the_needed_usage() {
    let ca = ca("root");
    let mut params = leaf_params(&[CART]);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = sign(&params, &ca);
    assert_eq!(
        verify(&ca, std::slice::from_ref(&leaf)),
        Err(PeerError::WrongUsage)
    );
    assert!(
        bundle(&ca)
            .verify_peer(&[leaf], PeerRole::Client, None, UnixTime::now())
            .is_ok()
    );
}

#[test]
fn refuses_an_empty_chain_and_garbage() {
    let ca = ca("root");
    assert_eq!(verify(&ca, &[]), Err(PeerError::NoCertificate));
    assert_eq!(
        verify(&ca, &[CertificateDer::from(vec![0x30, 0x03, 0x01, 0x02])]),
        Err(PeerError::Malformed)
    );
}
