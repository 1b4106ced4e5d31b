//! Throw-away X.509 material for TLS and mutual-TLS tests: a CA and leaf certificates it signs.
//! Test fixtures: they panic on failure, which fails the test that asked for them.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;

/// A certificate authority: its certificate and what it signs with.
pub struct Ca {
    pub der: CertificateDer<'static>,
    pub issuer: Issuer<'static, KeyPair>,
}

/// A new self-signed CA named `name`.
pub fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("generate a CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("self-sign the CA");
    Ca {
        der: cert.der().clone(),
        issuer: Issuer::new(params, key),
    }
}

/// (certificate DER, PKCS#8 key DER) signed by `ca`, with common name `name`: a server
/// certificate for the DNS name `name` when `server`, else a client (device) certificate.
pub fn leaf(ca: &Ca, name: &str, server: bool) -> (Vec<u8>, Vec<u8>) {
    let key = KeyPair::generate().expect("generate a key");
    let sans = if server {
        vec![name.to_string()]
    } else {
        vec![]
    };
    let mut params = CertificateParams::new(sans).expect("certificate parameters");
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let cert = params
        .signed_by(&key, &ca.issuer)
        .expect("sign the certificate");
    (cert.der().to_vec(), key.serialize_der())
}
