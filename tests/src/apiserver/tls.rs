//! The server's PKI: a self-made CA, a serving certificate for 127.0.0.1/localhost, client
//! certificates for users, and the rustls server configuration that verifies client
//! certificates against the CA (and still lets bearer-token clients in without one).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// The CA that signs the serving certificate and every client certificate.
pub struct CertificateAuthority {
    certificate: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its private key, PEM-encoded.
pub struct IssuedCertificate {
    pub certificate_pem: String,
    pub key_pem: String,
    pub certificate_der: CertificateDer<'static>,
    pub key_der: PrivateKeyDer<'static>,
}

impl CertificateAuthority {
    pub fn generate() -> anyhow::Result<CertificateAuthority> {
        let key = KeyPair::generate().context("generating the CA key")?;
        let mut params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "nodelet-test-apiserver-ca");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let certificate = params.self_signed(&key).context("self-signing the CA")?;
        Ok(CertificateAuthority { certificate, key })
    }

    pub fn certificate_pem(&self) -> String {
        self.certificate.pem()
    }

    pub fn certificate_der(&self) -> CertificateDer<'static> {
        self.certificate.der().clone()
    }

    fn issue(&self, params: CertificateParams) -> anyhow::Result<IssuedCertificate> {
        let key = KeyPair::generate().context("generating a key")?;
        let certificate = params.signed_by(&key, &self.certificate, &self.key).context("signing a certificate")?;
        Ok(IssuedCertificate {
            certificate_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
            certificate_der: certificate.der().clone(),
            key_der: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }

    /// The serving certificate: SANs 127.0.0.1, ::1, localhost, kubernetes(.default...).
    pub fn issue_serving(&self) -> anyhow::Result<IssuedCertificate> {
        let mut params = CertificateParams::new(vec![
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
        ])
        .context("serving certificate parameters")?;
        params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.subject_alt_names.push(SanType::IpAddress("::1".parse().context("::1")?));
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "kube-apiserver");
        params.distinguished_name = name;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate with CN=`user` and O=`group` (the Kubernetes x509 authenticator's
    /// mapping of user name and group).
    pub fn issue_client(&self, user: &str, group: Option<&str>) -> anyhow::Result<IssuedCertificate> {
        let mut params = CertificateParams::new(Vec::<String>::new()).context("client parameters")?;
        let mut name = DistinguishedName::new();
        if let Some(group) = group {
            name.push(DnType::OrganizationName, group);
        }
        name.push(DnType::CommonName, user);
        params.distinguished_name = name;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    /// rustls server configuration: the serving certificate, client certificates optional but
    /// verified against this CA when presented, ALPN h2 and http/1.1.
    pub fn server_config(&self, serving: &IssuedCertificate) -> anyhow::Result<Arc<ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(self.certificate_der()).context("adding the CA to the client roots")?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .context("building the client certificate verifier")?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![serving.certificate_der.clone()], serving.key_der.clone_key())
            .context("serving certificate")?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Subject of a verified client certificate: common name and organizations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateSubject {
    pub common_name: Option<String>,
    pub organizations: Vec<String>,
}

/// A DER element: tag and content.
struct Element<'a> {
    tag: u8,
    content: &'a [u8],
}

/// Read one DER element from the front of `input`; returns it and the rest.
fn read_element(input: &[u8]) -> Option<(Element<'_>, &[u8])> {
    let tag = *input.first()?;
    let first_length = *input.get(1)?;
    let (length, header) = if first_length & 0x80 == 0 {
        (usize::from(first_length), 2)
    } else {
        let count = usize::from(first_length & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let mut length = 0usize;
        for i in 0..count {
            length = (length << 8) | usize::from(*input.get(2 + i)?);
        }
        (length, 2 + count)
    };
    let content = input.get(header..header.checked_add(length)?)?;
    Some((Element { tag, content }, &input[header + length..]))
}

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
const TAG_EXPLICIT_VERSION: u8 = 0xa0;
/// 2.5.4.3 and 2.5.4.10, DER-encoded.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];

/// The subject CN and O of an X.509 certificate (already verified by rustls).
pub fn certificate_subject(der: &[u8]) -> Option<CertificateSubject> {
    let (certificate, _) = read_element(der)?;
    let (tbs, _) = read_element(certificate.content)?;
    let mut rest = tbs.content;
    let (first, after_first) = read_element(rest)?;
    // version [0] is optional; then serial, signature algorithm, issuer, validity, subject.
    rest = if first.tag == TAG_EXPLICIT_VERSION { after_first } else { rest };
    for _ in 0..4 {
        let (_, next) = read_element(rest)?;
        rest = next;
    }
    let (subject, _) = read_element(rest)?;
    if subject.tag != TAG_SEQUENCE {
        return None;
    }
    let mut result = CertificateSubject::default();
    let mut names = subject.content;
    while !names.is_empty() {
        let (set, next) = read_element(names)?;
        names = next;
        if set.tag != TAG_SET {
            return None;
        }
        let mut attributes = set.content;
        while !attributes.is_empty() {
            let (attribute, next) = read_element(attributes)?;
            attributes = next;
            let (oid, value_rest) = read_element(attribute.content)?;
            let (value, _) = read_element(value_rest)?;
            if oid.tag != TAG_OID {
                continue;
            }
            let text = String::from_utf8_lossy(value.content).into_owned();
            if oid.content == OID_COMMON_NAME {
                result.common_name = Some(text);
            } else if oid.content == OID_ORGANIZATION {
                result.organizations.push(text);
            }
        }
    }
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_of_issued_client_certificate() {
        let ca = CertificateAuthority::generate().expect("ca");
        let issued = ca.issue_client("system:node:n1", Some("system:nodes")).expect("issue");
        let subject = certificate_subject(issued.certificate_der.as_ref()).expect("subject");
        assert_eq!(subject.common_name.as_deref(), Some("system:node:n1"));
        assert_eq!(subject.organizations, vec!["system:nodes".to_string()]);
    }
}
