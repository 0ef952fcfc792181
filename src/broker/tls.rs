//! Trust and identity for `amqps://`: a private CA added to the bundled public roots, and a
//! client certificate for brokers that require mutual TLS. The files are read at every
//! connection attempt, so a renewed certificate applies at the next reconnect.

use std::path::{Path, PathBuf};

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::BrokerConfig;

/// Why the broker's TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BrokerTlsError {
    /// A file is missing or unreadable.
    #[error("cannot read {path}: {problem}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        problem: String,
    },
    /// A file does not hold what it should (no PEM certificate, no PEM private key).
    #[error("{path}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

impl BrokerTlsError {
    /// The file at fault.
    pub fn path(&self) -> &Path {
        match self {
            Self::Unreadable { path, .. } | Self::Invalid { path, .. } => path,
        }
    }
}

/// The TLS settings lapin connects with: the CA file's certificates (trusted besides the
/// bundled roots) and the client certificate with its key, each when configured.
pub fn tls_config(config: &BrokerConfig) -> Result<OwnedTLSConfig, BrokerTlsError> {
    let cert_chain = match &config.tls_ca_file {
        Some(path) => Some(ca_bundle(path)?),
        None => None,
    };
    let identity = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => Some(client_identity(cert, key)?),
        // Validation refuses one without the other.
        _ => None,
    };
    Ok(OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

/// The CA file's text, once it is known to hold at least one certificate: lapin silently
/// skips what it cannot parse, which would turn a broken file into an untrusted broker.
pub fn ca_bundle(path: &Path) -> Result<String, BrokerTlsError> {
    let text = read_text(path)?;
    certificates(path, text.as_bytes())?;
    Ok(text)
}

/// The client certificate and key, once both parse.
pub fn client_identity(cert: &Path, key: &Path) -> Result<OwnedIdentity, BrokerTlsError> {
    let pem = read_text(cert)?.into_bytes();
    certificates(cert, &pem)?;
    let key_pem = read_text(key)?.into_bytes();
    PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| BrokerTlsError::Invalid {
        path: key.to_owned(),
        problem: format!("no PEM private key: {e}"),
    })?;
    Ok(OwnedIdentity::PKCS8 { pem, key: key_pem })
}

fn certificates(path: &Path, pem: &[u8]) -> Result<(), BrokerTlsError> {
    let invalid = |problem: String| BrokerTlsError::Invalid {
        path: path.to_owned(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("no PEM certificate in the file".to_owned()));
    }
    Ok(())
}

fn read_text(path: &Path) -> Result<String, BrokerTlsError> {
    std::fs::read_to_string(path).map_err(|e| BrokerTlsError::Unreadable {
        path: path.to_owned(),
        problem: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sb-broker-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn config(ca: Option<PathBuf>, cert: Option<PathBuf>, key: Option<PathBuf>) -> BrokerConfig {
        BrokerConfig {
            tls_ca_file: ca,
            tls_cert_file: cert,
            tls_key_file: key,
            ..BrokerConfig::default()
        }
    }

    #[test]
    fn no_files_means_the_bundled_roots_only() {
        let tls = tls_config(&config(None, None, None)).unwrap();
        assert_eq!(tls, OwnedTLSConfig::default());
    }

    #[test]
    fn a_ca_file_and_a_client_pair_are_passed_on() {
        let dir = scratch("ok");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        let tls = tls_config(&config(
            Some(dir.join("ca.pem")),
            Some(dir.join("ca.pem")),
            Some(dir.join("key.pem")),
        ))
        .unwrap();
        assert_eq!(tls.cert_chain.as_deref(), Some(cert.pem().as_str()));
        assert!(matches!(tls.identity, Some(OwnedIdentity::PKCS8 { .. })));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn missing_and_non_pem_files_are_refused() {
        let dir = scratch("bad");
        let missing = dir.join("missing.pem");
        let err = tls_config(&config(Some(missing), None, None)).unwrap_err();
        assert!(matches!(err, BrokerTlsError::Unreadable { .. }), "{err}");
        std::fs::write(dir.join("junk.pem"), "not a certificate\n").unwrap();
        let err = tls_config(&config(Some(dir.join("junk.pem")), None, None)).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        let key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        let err = tls_config(&config(
            None,
            Some(dir.join("key.pem")),
            Some(dir.join("key.pem")),
        ))
        .unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
