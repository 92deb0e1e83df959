//! TLS for the https this project calls out to: webhook and InStore callback receivers,
//! subscription challenges, and an authorizer behind https for the CLI, the load generator
//! and the simulators.

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// A rustls client configuration that trusts the Mozilla root certificates (bundled, so
/// it works on an image without a system store) and, when `ca_file` names one, every
/// certificate in that PEM file: a private CA, or a receiver's self-signed certificate.
/// An unreadable file, or one with no certificate, is an error that names the file.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let shown = path.display();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("{shown}: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{shown}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{shown}: no PEM certificate in it"));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("{shown}: a certificate rustls cannot use: {e}"))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS versions: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The command-line tools' TLS, made once: the bundled roots and, when the environment
/// names one, the certificates of `SSL_CERT_FILE` (the variable OpenSSL-based tools read), so
/// an authorizer or receiver behind a private CA can be reached. A named file that cannot be
/// used ends the process with the reason (exit 2): a tool should not run with a trust that
/// silently differs from the one asked for.
pub fn tls_from_env() -> Arc<rustls::ClientConfig> {
    static TLS: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    TLS.get_or_init(|| {
        let file = std::env::var_os("SSL_CERT_FILE").filter(|f| !f.is_empty());
        tls_config(file.as_deref().map(Path::new)).unwrap_or_else(|e| {
            eprintln!("SSL_CERT_FILE: {e}");
            std::process::exit(2)
        })
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_is_read_or_named_in_the_error() {
        assert!(tls_config(None).is_ok());
        let dir = std::env::temp_dir().join(format!("tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let e = tls_config(Some(&missing)).unwrap_err();
        assert!(e.contains("missing.pem"), "{e}");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = tls_config(Some(&empty)).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
