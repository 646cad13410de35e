//! TLS over TCP with rustls and its `ring` provider (the `tls` feature).
//!
//! The client configuration is built anew for every connection: the CA file, the system's
//! roots and the client certificate are read each time, so a certificate rotated on disk is
//! picked up by the next (re)connection without a restart.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::TlsOptions;
use crate::error::{CertificateProblem, TlsError};

/// Runs the TLS handshake on `tcp`, verifying the server's certificate against `host` (or
/// the configured server name, which is also what is sent as SNI).
pub(crate) async fn connect(
    tcp: TcpStream,
    host: &str,
    options: &TlsOptions,
) -> Result<TlsStream<TcpStream>, TlsError> {
    let config = client_config(options)?;
    let name = options.server_name.as_deref().unwrap_or(host);
    let server_name = ServerName::try_from(name.to_owned())
        .map_err(|_| TlsError::InvalidServerName(name.to_owned()))?;
    TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| from_io(&e).unwrap_or_else(|| TlsError::Handshake(e.to_string())))
}

/// The TLS failure inside an I/O error from a TLS stream, if there is one.
pub(crate) fn from_io(error: &io::Error) -> Option<TlsError> {
    let tls = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match tls {
        rustls::Error::InvalidCertificate(e) => TlsError::InvalidCertificate {
            problem: problem(e),
            detail: e.to_string(),
        },
        rustls::Error::AlertReceived(alert) => TlsError::AlertReceived(format!("{alert:?}")),
        other => TlsError::Handshake(other.to_string()),
    })
}

fn problem(e: &CertificateError) -> CertificateProblem {
    match e {
        CertificateError::UnknownIssuer => CertificateProblem::UnknownIssuer,
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            CertificateProblem::NotValidForName
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            CertificateProblem::Expired
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            CertificateProblem::NotValidYet
        }
        CertificateError::Revoked => CertificateProblem::Revoked,
        _ => CertificateProblem::Other,
    }
}

fn client_config(options: &TlsOptions) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Handshake(e.to_string()))?;
    let builder = if options.accept_invalid_certificates {
        tracing::warn!("TLS without verification of the server's certificate (verify_none)");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
    } else {
        builder.with_root_certificates(trusted_roots(options)?)
    };
    match &options.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some(client) => {
            let chain = certificates(&client.cert_file)?;
            let key =
                PrivateKeyDer::from_pem_file(&client.key_file).map_err(|e| TlsError::File {
                    path: client.key_file.clone(),
                    reason: format!("no usable private key: {e}"),
                })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::File {
                    path: client.key_file.clone(),
                    reason: e.to_string(),
                })
        }
    }
}

/// The CA file's certificates, or the system's.
fn trusted_roots(options: &TlsOptions) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match &options.ca_file {
        Some(path) => {
            for cert in certificates(path)? {
                roots.add(cert).map_err(|e| TlsError::File {
                    path: path.clone(),
                    reason: format!("not a usable CA certificate: {e}"),
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
                return Err(TlsError::NoTrustedRoots(if why.is_empty() {
                    "the system has none; give a CA file (cacertfile)".to_owned()
                } else {
                    why.join("; ")
                }));
            }
        }
    }
    Ok(roots)
}

/// Every certificate of a PEM file; none is an error.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error("no PEM certificate in the file".to_owned()));
    }
    Ok(certs)
}

/// `verify_none`: any certificate is accepted, but the handshake's signatures are still
/// checked against it, so the session is encrypted to whoever holds that certificate's key.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
