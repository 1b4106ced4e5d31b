//! TLS for the `connections` scenario: the certificates of a mutual-TLS run (`device-certs`)
//! and the client side of the handshake.
//!
//! Both brokers get the same server certificate and trust the same CA, and every device has
//! its own ECDSA P-256 key and certificate (subject common name = device id), so a run
//! compares the brokers' handshake paths with the same key types on both sides.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::{Value, json};
use tokio_rustls::TlsConnector;

use crate::cli::DeviceCerts;

/// Writes OUT/ca.pem, OUT/server.pem + .key (for `localhost` and 127.0.0.1) and
/// OUT/devices/{id}.pem + .key for every id. Returns a JSON summary.
pub fn make_certs(args: &DeviceCerts, ids: &[String]) -> anyhow::Result<Value> {
    let started = std::time::Instant::now();
    let devices = args.out.join("devices");
    std::fs::create_dir_all(&devices).with_context(|| format!("Create {}", devices.display()))?;

    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "wulian-bench CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().context("Generate the CA key")?;
    let ca_cert = ca.self_signed(&ca_key).context("Sign the CA certificate")?;
    write(&args.out.join("ca.pem"), &ca_cert.pem())?;
    write(&args.out.join("ca.key"), &ca_key.serialize_pem())?;
    let issuer = Issuer::new(ca, ca_key);

    let server_sans = vec![
        SanType::DnsName("localhost".try_into().context("DNS name")?),
        SanType::IpAddress(IpAddr::from([127, 0, 0, 1])),
    ];
    let (cert, key) = leaf(
        &issuer,
        "localhost",
        server_sans,
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    write(&args.out.join("server.pem"), &cert)?;
    write(&args.out.join("server.key"), &key)?;

    for id in ids {
        let (cert, key) = leaf(&issuer, id, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)?;
        write(&devices.join(format!("{id}.pem")), &cert)?;
        write(&devices.join(format!("{id}.key")), &key)?;
    }
    Ok(json!({
        "dir": args.out.display().to_string(),
        "devices": ids.len(),
        "key_type": "ECDSA P-256",
        "seconds": started.elapsed().as_secs_f64(),
    }))
}

/// A certificate signed by `issuer` and its new key, both PEM.
fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
) -> anyhow::Result<(String, String)> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().context("Generate a key")?;
    let cert = params
        .signed_by(&key, issuer)
        .with_context(|| format!("Sign the certificate of {cn}"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("Write {}", path.display()))
}

/// How the `connections` scenario reaches the broker over TLS.
pub struct ClientTls {
    server_name: ServerName<'static>,
    /// One configuration per client (its own certificate), or one shared by all.
    configs: Vec<Arc<ClientConfig>>,
    mutual: bool,
}

impl ClientTls {
    /// Trusts `ca_pem`; with `cert_dir`, client `i` presents `cert_dir/{ids[i]}.pem` and
    /// `.key`. Session resumption is off, so every connection is a full handshake.
    pub fn load(
        host: &str,
        ca_pem: &Path,
        cert_dir: Option<&Path>,
        ids: &[String],
    ) -> anyhow::Result<ClientTls> {
        let server_name = ServerName::try_from(host.to_owned())
            .with_context(|| format!("{host} is not a valid TLS server name"))?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_pem)
            .with_context(|| format!("Read {}", ca_pem.display()))?
        {
            let cert = cert.with_context(|| format!("Parse {}", ca_pem.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("Trust {}", ca_pem.display()))?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = || {
            ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(Arc::clone(&roots)))
                .context("TLS client configuration")
        };
        let finish = |mut config: ClientConfig| {
            config.resumption = rustls::client::Resumption::disabled();
            Arc::new(config)
        };
        let configs = match cert_dir {
            None => vec![finish(builder()?.with_no_client_auth())],
            Some(_) if ids.is_empty() => anyhow::bail!("client certificates need client ids"),
            Some(dir) => {
                let mut configs = Vec::with_capacity(ids.len());
                for id in ids {
                    let cert_path = dir.join(format!("{id}.pem"));
                    let key_path = dir.join(format!("{id}.key"));
                    let chain = CertificateDer::pem_file_iter(&cert_path)
                        .with_context(|| format!("Read {}", cert_path.display()))?
                        .collect::<Result<Vec<_>, _>>()
                        .with_context(|| format!("Parse {}", cert_path.display()))?;
                    let key = PrivateKeyDer::from_pem_file(&key_path)
                        .with_context(|| format!("Read {}", key_path.display()))?;
                    let config = builder()?
                        .with_client_auth_cert(chain, key)
                        .with_context(|| format!("Client certificate of {id}"))?;
                    configs.push(finish(config));
                }
                configs
            }
        };
        Ok(ClientTls {
            server_name,
            configs,
            mutual: cert_dir.is_some(),
        })
    }

    /// The connector for client `i` (None past the certificates loaded).
    pub fn connector(&self, i: usize) -> Option<(TlsConnector, ServerName<'static>)> {
        let config = if self.mutual {
            self.configs.get(i)?
        } else {
            self.configs.first()?
        };
        Some((
            TlsConnector::from(Arc::clone(config)),
            self.server_name.clone(),
        ))
    }

    /// Whether clients present certificates (and so log in without a password).
    pub fn mutual(&self) -> bool {
        self.mutual
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The certificates `device-certs` writes are the ones the scenario loads: one client
    /// configuration per device, none past them.
    #[test]
    fn device_certificates_load_as_client_identities() {
        let out = std::env::temp_dir().join(format!("wulian-bench-certs-{}", std::process::id()));
        let ids = vec!["bench-000000".to_owned(), "bench-000001".to_owned()];
        let args = DeviceCerts {
            out: out.clone(),
            count: ids.len(),
        };
        let summary = make_certs(&args, &ids).unwrap();
        assert_eq!(summary["devices"], 2);
        let devices = out.join("devices");
        let tls = ClientTls::load("127.0.0.1", &out.join("ca.pem"), Some(&devices), &ids).unwrap();
        assert!(tls.mutual());
        assert!(tls.connector(1).is_some());
        assert!(tls.connector(2).is_none());
        let plain = ClientTls::load("localhost", &out.join("ca.pem"), None, &[]).unwrap();
        assert!(!plain.mutual());
        assert!(plain.connector(7).is_some());
        let missing = ClientTls::load(
            "127.0.0.1",
            &out.join("ca.pem"),
            Some(&devices),
            &["nope".to_owned()],
        );
        assert!(missing.is_err());
        std::fs::remove_dir_all(&out).unwrap();
    }
}
