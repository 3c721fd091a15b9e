//! The files a configuration names, read and checked at start so that a
//! missing or invalid one is a configuration error (exit 2, also with
//! `--check-config`): the exporter's TLS files and token file, the relay's
//! auth file and TLS files.

use std::path::PathBuf;

use periscope_auth::TlsFiles;

use periscope_settings::one_line;

use super::{ConfigError, RelaySecurity, bad, valid_tenant};
use crate::export::grpc::TlsOptions;

/// The exporter's token: at most one of `bearer_token` and
/// `bearer_token_file` (empty means unset); the file must hold a token now.
pub(super) fn bearer_token(
    token: Option<String>,
    token_file: Option<String>,
) -> Result<(Option<String>, Option<PathBuf>), ConfigError> {
    let token = token.filter(|s| !s.is_empty());
    let token_file = token_file.filter(|s| !s.is_empty()).map(PathBuf::from);
    match (token, token_file) {
        (Some(_), Some(_)) => Err(ConfigError(
            "bearer_token and bearer_token_file exclude each other: set one".into(),
        )),
        (None, Some(path)) => {
            crate::export::grpc::read_token_file(&path)
                .map_err(|e| ConfigError(format!("bearer_token_file: {e}")))?;
            Ok((None, Some(path)))
        }
        (token, None) => Ok((token, None)),
    }
}

/// Loads the relay's auth file and TLS files; an empty path means unset.
pub(super) fn relay_security(
    auth_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_ca_file: Option<String>,
) -> Result<RelaySecurity, ConfigError> {
    let set = |p: Option<String>| p.filter(|p| !p.is_empty()).map(PathBuf::from);
    let auth = match set(auth_file) {
        None => None,
        Some(path) => Some(
            periscope_auth::open_auth_file(path, valid_tenant)
                .map_err(|e| ConfigError(format!("relay_auth_file: {}", one_line(&e))))?,
        ),
    };
    let tls = match (set(cert_file), set(key_file), set(client_ca_file)) {
        (None, None, None) => None,
        (None, None, Some(_)) => {
            return Err(ConfigError(
                "relay_tls_client_ca_file needs relay_tls_cert_file and relay_tls_key_file".into(),
            ));
        }
        (Some(_), None, _) | (None, Some(_), _) => {
            return Err(ConfigError(
                "relay_tls_cert_file and relay_tls_key_file go together: set both or neither"
                    .into(),
            ));
        }
        (Some(cert), Some(key), client_ca) => Some(
            periscope_auth::tls::open(TlsFiles {
                cert,
                key,
                client_ca,
            })
            .map_err(|e| ConfigError(format!("relay TLS: {}", one_line(&e))))?,
        ),
    };
    Ok(RelaySecurity { auth, tls })
}

/// Reads and checks the TLS files; an empty path or name means unset.
pub(super) fn tls_options(
    ca_file: Option<String>,
    server_name: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
) -> Result<TlsOptions, ConfigError> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    let set = |p: Option<String>| p.filter(|p| !p.is_empty()).map(PathBuf::from);
    let (ca_file, cert_file, key_file) = (set(ca_file), set(cert_file), set(key_file));
    let read = |name: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| ConfigError(format!("cannot read {name} {}: {e}", path.display())))
    };
    let invalid = |name: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        ConfigError(format!("invalid {name} {}: {e}", path.display()))
    };
    let certs = |name: &str, path: &std::path::Path, pem: &[u8]| {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(name, path, &e))?;
        if certs.is_empty() {
            return Err(invalid(name, path, &"no PEM certificate in the file"));
        }
        Ok(certs)
    };

    let mut roots = RootCertStore::empty();
    let ca_pem = match &ca_file {
        Some(path) => {
            let pem = read("tls_ca_file", path)?;
            for cert in certs("tls_ca_file", path, &pem)? {
                roots
                    .add(cert)
                    .map_err(|e| invalid("tls_ca_file", path, &e))?;
            }
            Some(pem)
        }
        None => None,
    };
    let server_name = server_name.filter(|s| !s.trim().is_empty());
    if let Some(n) = &server_name {
        ServerName::try_from(n.as_str()).map_err(|e| bad("tls_server_name", n, e))?;
    }
    let client_identity = match (cert_file, key_file) {
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            return Err(ConfigError(
                "tls_client_cert_file and tls_client_key_file go together: set both or neither"
                    .into(),
            ));
        }
        (Some(cert_path), Some(key_path)) => {
            let cert_pem = read("tls_client_cert_file", &cert_path)?;
            let chain = certs("tls_client_cert_file", &cert_path, &cert_pem)?;
            let key_pem = read("tls_client_key_file", &key_path)?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| invalid("tls_client_key_file", &key_path, &e))?;
            // The same check the connection makes: a key the TLS library
            // cannot use, or one that does not belong to the certificate,
            // is refused here rather than at the first export.
            let provider =
                std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| ConfigError(format!("tls: {e}")))?
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key)
                .map_err(|e| invalid("tls_client_key_file", &key_path, &e))?;
            Some((cert_pem, key_pem))
        }
    };
    Ok(TlsOptions {
        ca_pem,
        server_name,
        client_identity,
    })
}
