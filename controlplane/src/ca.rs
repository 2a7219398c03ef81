//! The certificate authority: a root created at first start and kept (`ca/local.rs`:
//! files; `ca/kubernetes.rs`: a Secret), or a plugged-in root or intermediate loaded
//! from files; and the signing of workload CSRs.
//!
//! Every issued certificate has exactly one URI SAN (the workload's SPIFFE ID), is not a
//! CA, carries the client and server auth usages, is ECDSA P-256, and never outlives
//! the certificate that signs it. What the CSR asks for beyond its public key is
//! checked and refused, never copied.

pub mod kubernetes;
pub mod local;

use std::time::Duration;

use api::identity::Identity;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, pem::PemObject as _};
use time::OffsetDateTime;

/// Largest CSR accepted. A P-256 CSR with one SAN is about 300 bytes.
pub const MAX_CSR_BYTES: usize = 4096;
/// Issued certificates start this far in the past, for clocks that lag.
const BACKDATE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the CSR is {len} bytes; at most {MAX_CSR_BYTES} are accepted")]
    CsrTooLarge { len: usize },
    #[error("the CSR cannot be parsed or its signature is wrong: {detail}")]
    MalformedCsr { detail: String },
    #[error("the CSR key is {algorithm}; only ECDSA P-256 keys are accepted")]
    CsrKeyAlgorithm { algorithm: String },
    #[error("the CSR asks for a CA certificate")]
    CsrRequestsCa,
    #[error("the CSR asks for the subject alternative name {san}, which is not the identity")]
    CsrExtraSan { san: String },
    #[error("the CA's signing certificate expires before any new certificate could be valid")]
    IssuerExpired,
    #[error("signing failed: {detail}")]
    Sign { detail: String },
    #[error("CA material {what}: {detail}")]
    Material { what: String, detail: String },
    #[error("{what}: {detail}")]
    Kubernetes { what: String, detail: String },
    #[error("CA storage {what}: {source}")]
    Storage {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::CsrTooLarge { .. } => "csr_too_large",
            Error::MalformedCsr { .. } => "malformed_csr",
            Error::CsrKeyAlgorithm { .. } => "csr_key_algorithm",
            Error::CsrRequestsCa => "csr_requests_ca",
            Error::CsrExtraSan { .. } => "csr_extra_san",
            Error::IssuerExpired => "issuer_expired",
            Error::Sign { .. } => "sign",
            Error::Material { .. } => "ca_material",
            Error::Storage { .. } => "ca_storage",
            Error::Kubernetes { .. } => "ca_kubernetes",
        }
    }

    /// Whether the caller's request was at fault (as opposed to the CA).
    pub fn is_request_error(&self) -> bool {
        matches!(
            self,
            Error::CsrTooLarge { .. }
                | Error::MalformedCsr { .. }
                | Error::CsrKeyAlgorithm { .. }
                | Error::CsrRequestsCa
                | Error::CsrExtraSan { .. }
        )
    }
}

fn material(what: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |e| Error::Material {
        what: what.to_owned(),
        detail: e.to_string(),
    }
}

/// A root's certificate and key, PEM, as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct RootPem {
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for RootPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootPem").finish_non_exhaustive()
    }
}

/// Settings of issuance.
#[derive(Debug, Clone)]
pub struct Settings {
    pub trust_domain: String,
    /// Lifetime when the request names none.
    pub default_lifetime: Duration,
    /// The longest lifetime a request may get.
    pub max_lifetime: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            trust_domain: api::identity::DEFAULT_TRUST_DOMAIN.to_owned(),
            default_lifetime: Duration::from_secs(24 * 3600),
            max_lifetime: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Creates a new self-signed root for a trust domain (ECDSA P-256, ten years).
pub fn generate_root(trust_domain: &str) -> Result<RootPem, Error> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(material("key"))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(material("root"))?;
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Weft");
    params.distinguished_name.push(
        DnType::CommonName,
        format!("Weft root CA for {trust_domain}"),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + time::Duration::days(3650);
    let cert = params.self_signed(&key).map_err(material("root"))?;
    Ok(RootPem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// The signing side of the CA.
pub struct Authority {
    settings: Settings,
    issuer: Issuer<'static, KeyPair>,
    /// The signing certificate and the intermediates above it, not the root.
    chain: Vec<CertificateDer<'static>>,
    roots: Vec<CertificateDer<'static>>,
    signer_not_after: OffsetDateTime,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("settings", &self.settings)
            .field("chain_len", &self.chain.len())
            .field("roots", &self.roots.len())
            .field("signer_not_after", &self.signer_not_after)
            .finish_non_exhaustive()
    }
}

fn parse_pem_certs(what: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Material {
            what: what.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::Material {
            what: what.to_owned(),
            detail: "no PEM certificate found".to_owned(),
        });
    }
    Ok(certs)
}

fn not_after(what: &str, der: &CertificateDer<'_>) -> Result<OffsetDateTime, Error> {
    use x509_parser::prelude::FromDer as _;
    let (_, cert) =
        x509_parser::certificate::X509Certificate::from_der(der.as_ref()).map_err(|e| {
            Error::Material {
                what: what.to_owned(),
                detail: e.to_string(),
            }
        })?;
    if !cert.is_ca() {
        return Err(Error::Material {
            what: what.to_owned(),
            detail: "the certificate is not a CA".to_owned(),
        });
    }
    Ok(cert.validity().not_after.to_datetime())
}

impl Authority {
    /// A CA that signs with its own root.
    pub fn from_root(root: &RootPem, settings: Settings) -> Result<Self, Error> {
        Self::from_pem(&root.cert, &root.key, "", &root.cert, settings)
    }

    /// A CA that signs with `cert_pem`/`key_pem` — a root, or an intermediate whose
    /// chain up to the root (exclusive) is `chain_pem` and whose root is `root_pem`.
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        chain_pem: &str,
        root_pem: &str,
        settings: Settings,
    ) -> Result<Self, Error> {
        let key = KeyPair::from_pem(key_pem).map_err(material("signing key"))?;
        let signer = parse_pem_certs("signing certificate", cert_pem)?
            .into_iter()
            .next()
            .expect("non-empty");
        let signer_not_after = not_after("signing certificate", &signer)?;
        let issuer =
            Issuer::from_ca_cert_der(&signer, key).map_err(material("signing certificate"))?;
        let roots = parse_pem_certs("root", root_pem)?;
        let mut chain = Vec::new();
        if !roots.contains(&signer) {
            chain.push(signer);
            if !chain_pem.trim().is_empty() {
                chain.extend(parse_pem_certs("chain", chain_pem)?);
            }
        }
        let authority = Authority {
            settings,
            issuer,
            chain,
            roots,
            signer_not_after,
        };
        authority.self_check()?;
        Ok(authority)
    }

    /// Issues a throw-away certificate and verifies it against the roots: a plugged CA
    /// whose pieces do not fit together is refused at start, not at first use.
    fn self_check(&self) -> Result<(), Error> {
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(material("check"))?;
        let id = Identity::new(&self.settings.trust_domain, "weft-system", "ca-self-check")
            .map_err(|e| Error::Material {
                what: "trust domain".to_owned(),
                detail: e.to_string(),
            })?;
        let csr = api::tls::workload_csr(&id, &key).map_err(material("check"))?;
        let chain = self.sign(&csr, &id, Some(Duration::from_secs(300)))?;
        let bundle = api::tls::TrustBundle::new(&self.settings.trust_domain, self.roots.clone())
            .map_err(|e| Error::Material {
                what: "root".to_owned(),
                detail: e.to_string(),
            })?;
        bundle
            .verify_peer(
                &chain,
                api::tls::PeerRole::Client,
                Some(&id),
                rustls_pki_types::UnixTime::now(),
            )
            .map_err(|e| Error::Material {
                what: "chain".to_owned(),
                detail: format!(
                    "a certificate issued by this CA does not verify against its root: {e}"
                ),
            })?;
        Ok(())
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The root certificates agents and waypoints trust.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// Signs `csr_der` for `identity`; returns the leaf and the intermediates.
    pub fn sign(
        &self,
        csr_der: &[u8],
        identity: &Identity,
        lifetime: Option<Duration>,
    ) -> Result<Vec<CertificateDer<'static>>, Error> {
        if csr_der.len() > MAX_CSR_BYTES {
            return Err(Error::CsrTooLarge { len: csr_der.len() });
        }
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| Error::MalformedCsr {
                    detail: e.to_string(),
                })?;
        if csr.public_key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(Error::CsrKeyAlgorithm {
                algorithm: format!("{:?}", csr.public_key.algorithm()),
            });
        }
        if matches!(csr.params.is_ca, IsCa::Ca(_)) {
            return Err(Error::CsrRequestsCa);
        }
        let uri = identity.to_string();
        for san in &csr.params.subject_alt_names {
            match san {
                SanType::URI(u) if u.as_str() == uri => {}
                other => {
                    return Err(Error::CsrExtraSan {
                        san: format!("{other:?}"),
                    });
                }
            }
        }

        let now = OffsetDateTime::now_utc();
        let lifetime = lifetime
            .filter(|l| !l.is_zero())
            .unwrap_or(self.settings.default_lifetime)
            .min(self.settings.max_lifetime);
        let not_after = (now + lifetime).min(self.signer_not_after);
        if not_after <= now {
            return Err(Error::IssuerExpired);
        }
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| Error::Sign {
            detail: e.to_string(),
        })?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(uri.clone().try_into().map_err(
            |e: rcgen::Error| Error::Sign {
                detail: e.to_string(),
            },
        )?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = now - BACKDATE;
        params.not_after = not_after;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
        params.use_authority_key_identifier_extension = true;
        let leaf = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| Error::Sign {
                detail: e.to_string(),
            })?;
        let mut chain = vec![leaf.der().clone()];
        chain.extend(self.chain.iter().cloned());
        Ok(chain)
    }

    /// A serving certificate for the control plane's own gRPC endpoint (DNS and IP
    /// SANs), with its key, PEM: chain and key.
    pub fn serving_certificate(
        &self,
        names: &[String],
        ips: &[std::net::IpAddr],
    ) -> Result<(String, String), Error> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(material("serving key"))?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(material("serving"))?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params
            .distinguished_name
            .push(DnType::CommonName, "weft-controlplane");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = (now + time::Duration::days(365)).min(self.signer_not_after);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(material("serving"))?;
        let mut pem = cert.pem();
        for c in &self.chain {
            pem.push_str(&pem_of(c));
        }
        Ok((pem, key.serialize_pem()))
    }
}

/// PEM text of a DER certificate.
pub fn pem_of(der: &CertificateDer<'_>) -> String {
    let body = base64_lines(der.as_ref());
    format!("-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n")
}

fn base64_lines(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    let mut line = 0;
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
        line += 4;
        if line == 64 {
            out.push('\n');
            line = 0;
        }
    }
    if line > 0 {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
