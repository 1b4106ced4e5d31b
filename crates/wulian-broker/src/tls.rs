//! TLS for the MQTT listeners: the server certificate, and client certificates verified
//! against a set of certificate authorities that can change while the server runs.
//!
//! Why our own [`ClientCertVerifier`]: rustls fixes a server's verifier when the
//! `ServerConfig` is built, but tenants register and delete CA certificates at run time. The
//! verifier here delegates to a webpki verifier that [`ClientCertAuthorities::replace`] swaps
//! atomically, so new handshakes see the new set without restarting listeners. It only checks
//! that the chain leads to *some* registered CA; which device (and tenant) a certificate
//! names, and whether it was revoked, is the authenticator's business.
//!
//! The `ring` provider is used because it builds with a C compiler alone (aws-lc needs cmake).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};

/// Problems building a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {reason}")]
    Pem { what: String, reason: String },
    #[error("{what}: no certificate found")]
    NoCertificate { what: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Whether a TLS listener asks clients for a certificate.
#[derive(Clone, Debug, Default)]
pub enum ClientAuth {
    /// No client certificates (clients authenticate inside MQTT).
    #[default]
    None,
    /// Clients may present a certificate; one that does not verify fails the handshake.
    Optional(Arc<ClientCertAuthorities>),
    /// Clients must present a certificate that verifies.
    Required(Arc<ClientCertAuthorities>),
}

/// A TLS listener's server configuration. Cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    pub(crate) server: Arc<ServerConfig>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsConfig {
    /// From PEM files: `cert` holds the server certificate followed by any intermediates,
    /// `key` its private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(
        cert: &Path,
        key: &Path,
        client_auth: ClientAuth,
    ) -> Result<TlsConfig, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        TlsConfig::from_pem(
            &read(cert)?,
            &read(key)?,
            client_auth,
            &cert.display().to_string(),
        )
    }

    /// From PEM text; `what` names the source in errors.
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        client_auth: ClientAuth,
        what: &str,
    ) -> Result<TlsConfig, TlsError> {
        let chain = certificates_from_pem(cert_pem, what)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem {
            what: format!("private key for {what}"),
            reason: e.to_string(),
        })?;
        TlsConfig::build(chain, key, client_auth)
    }

    /// From DER: the certificate chain (leaf first) and a PKCS#8 private key.
    pub fn from_der(
        chain: Vec<Vec<u8>>,
        pkcs8_key: Vec<u8>,
        client_auth: ClientAuth,
    ) -> Result<TlsConfig, TlsError> {
        let chain = chain.into_iter().map(CertificateDer::from).collect();
        let key = PrivateKeyDer::Pkcs8(pkcs8_key.into());
        TlsConfig::build(chain, key, client_auth)
    }

    fn build(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_auth: ClientAuth,
    ) -> Result<TlsConfig, TlsError> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = match client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Optional(cas) => {
                builder.with_client_cert_verifier(Arc::new(ReloadableVerifier {
                    cas,
                    mandatory: false,
                }))
            }
            ClientAuth::Required(cas) => {
                builder.with_client_cert_verifier(Arc::new(ReloadableVerifier {
                    cas,
                    mandatory: true,
                }))
            }
        };
        let server = builder.with_single_cert(chain, key)?;
        Ok(TlsConfig {
            server: Arc::new(server),
        })
    }
}

/// Parses every `CERTIFICATE` block of a PEM text.
pub fn certificates_from_pem(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            what: what.to_string(),
        });
    }
    Ok(chain)
}

/// The certificate authorities client certificates must chain to; replaceable at run time.
pub struct ClientCertAuthorities {
    provider: Arc<CryptoProvider>,
    /// `None` while no CA is registered: every client certificate is refused.
    current: RwLock<Option<Arc<dyn ClientCertVerifier>>>,
}

impl std::fmt::Debug for ClientCertAuthorities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertAuthorities")
            .field("any", &self.current.read().is_some())
            .finish()
    }
}

impl ClientCertAuthorities {
    /// An empty set: no client certificate verifies until [`replace`](Self::replace).
    pub fn new() -> Arc<ClientCertAuthorities> {
        Arc::new(ClientCertAuthorities {
            provider: provider(),
            current: RwLock::new(None),
        })
    }

    /// Replaces the set with these DER certificates; ones that are not usable as trust
    /// anchors are skipped with a warning. Returns how many were taken.
    pub fn replace(&self, cas: &[Vec<u8>]) -> usize {
        let mut roots = RootCertStore::empty();
        for der in cas {
            if let Err(error) = roots.add(CertificateDer::from(der.as_slice()).into_owned()) {
                tracing::warn!(error = %error, "Unusable CA certificate skipped.");
            }
        }
        let count = roots.len();
        let verifier = if count == 0 {
            None
        } else {
            match WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::clone(&self.provider),
            )
            .build()
            {
                Ok(v) => Some(v),
                Err(error) => {
                    tracing::error!(error = %error, "Client CA set could not be built; refusing client certificates.");
                    None
                }
            }
        };
        *self.current.write() = verifier;
        count
    }
}

/// Delegates to the current webpki verifier of a [`ClientCertAuthorities`].
#[derive(Debug)]
struct ReloadableVerifier {
    cas: Arc<ClientCertAuthorities>,
    mandatory: bool,
}

impl ClientCertVerifier for ReloadableVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    /// No hints: the set changes at run time, and clients send the certificate they have.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let current = self.cas.current.read().clone();
        match current {
            Some(verifier) => verifier.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.cas.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.cas.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.cas
            .provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Can `der` serve as a certificate authority for client certificates?
pub fn check_client_ca(der: &[u8]) -> Result<(), TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(der))?;
    Ok(())
}

/// Does the client certificate `chain` (DER, leaf first) lead to the CA `ca_der`, for client
/// authentication, now? Used after the handshake to tell which tenant's CA issued a
/// certificate, since the handshake only checked that *some* registered CA did.
pub fn chain_verifies(ca_der: &[u8], chain: &[Vec<u8>]) -> bool {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return false;
    };
    let mut roots = RootCertStore::empty();
    if roots.add(CertificateDer::from(ca_der)).is_err() {
        return false;
    }
    let Ok(verifier) =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider()).build()
    else {
        return false;
    };
    let intermediates: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    verifier
        .verify_client_cert(
            &CertificateDer::from(leaf.as_slice()),
            &intermediates,
            UnixTime::now(),
        )
        .is_ok()
}
