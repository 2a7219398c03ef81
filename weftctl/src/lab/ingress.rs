//! The lab's ingress gateways (topology waypoints with `ingress: true`): the waypoint
//! binary in gateway mode, HTTP on 8080 and HTTPS on 8443 of its pod. The HTTPS
//! listener's certificate (for `*.example.com` and `shop.example.com`) is issued by the
//! lab's ingress CA, made once per lab: `/run/weft-lab/ingress/ca.pem` is what clients
//! outside the mesh verify it with.

use std::path::PathBuf;

use anyhow::Context as _;

use super::run_dir;

pub const HTTP_PORT: u16 = 8080;
pub const HTTPS_PORT: u16 = 8443;

/// The names the gateway's certificate is for.
pub const HOSTNAMES: [&str; 2] = ["shop.example.com", "*.example.com"];

pub fn dir() -> PathBuf {
    run_dir().join("ingress")
}

/// The ingress CA's certificate (PEM), which clients trust.
pub fn ca_file() -> PathBuf {
    dir().join("ca.pem")
}

/// Makes the CA and the gateway certificate unless they are there.
pub fn certificates() -> anyhow::Result<()> {
    let (cert_file, key_file) = (dir().join("tls.crt"), dir().join("tls.key"));
    if ca_file().exists() && cert_file.exists() && key_file.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir()).with_context(|| dir().display().to_string())?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Weft lab ingress CA");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_key = rcgen::KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let mut leaf = rcgen::CertificateParams::new(HOSTNAMES.map(str::to_owned).to_vec())?;
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, HOSTNAMES[0]);
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = rcgen::KeyPair::generate()?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
    std::fs::write(ca_file(), ca_cert.pem())?;
    std::fs::write(&cert_file, leaf_cert.pem())?;
    super::build::write_private(&key_file, &leaf_key.serialize_pem())?;
    Ok(())
}

/// The settings of a gateway's process.
pub fn env() -> Vec<(String, String)> {
    vec![
        (
            "WEFT_GATEWAY_HTTP_ADDR".to_owned(),
            format!("0.0.0.0:{HTTP_PORT}"),
        ),
        (
            "WEFT_GATEWAY_HTTPS_ADDR".to_owned(),
            format!("0.0.0.0:{HTTPS_PORT}"),
        ),
        (
            "WEFT_GATEWAY_TLS_CERT".to_owned(),
            dir().join("tls.crt").display().to_string(),
        ),
        (
            "WEFT_GATEWAY_TLS_KEY".to_owned(),
            dir().join("tls.key").display().to_string(),
        ),
    ]
}
