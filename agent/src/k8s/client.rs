//! A minimal HTTP/1.1 client for the Kubernetes API server: `GET` with the
//! ServiceAccount's bearer token, over TLS verified against the cluster CA
//! (or plain HTTP for `kubectl proxy` and tests), one connection per request.
//!
//! The agent needs two requests (a pod list and a long-lived watch), so it
//! does not use the `kube` and `k8s-openapi` crates: their generated types
//! for every API group take minutes to build on a small machine and bring a
//! large dependency tree for two GETs. It uses hyper and rustls (with the
//! `ring` provider), which the OTLP exporter already links, rather than
//! `reqwest`: turning on a TLS backend in the workspace's `reqwest` would
//! either pull `aws-lc-rs` (a C build) or, without a built-in provider, make
//! every `reqwest::Client` of the workspace panic unless a process-wide
//! provider is installed.
//!
//! The token and the CA are read again for every connection: bound
//! ServiceAccount tokens rotate (the kubelet rewrites the file about hourly),
//! and the watch reconnects at least every few minutes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// Default ServiceAccount token of a pod.
pub const IN_CLUSTER_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Default cluster CA of a pod.
pub const IN_CLUSTER_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// Bytes of an error response body kept for the message.
const ERROR_BODY_BYTES: usize = 4096;

/// What can go wrong talking to the API server.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No URL configured and not running in a pod.
    #[error(
        "no API server: k8s_api_url is not set and KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not in the environment"
    )]
    NotInCluster,
    /// The URL cannot be used.
    #[error("invalid API server URL {url:?}: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The token file cannot be read.
    #[error("cannot read the token file {path}: {source}")]
    Token {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The CA file cannot be read or holds no certificate.
    #[error("cannot load the CA file {path}: {reason}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// TCP connect or TLS handshake failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// HTTP protocol error.
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("cannot build the request: {0}")]
    Request(#[from] hyper::http::Error),
    /// A non-success status.
    #[error("{method} {path}: status {status}: {body}")]
    Status {
        /// `GET`.
        method: &'static str,
        /// Path and query.
        path: String,
        /// The status.
        status: StatusCode,
        /// The start of the response body.
        body: String,
    },
    /// A timeout.
    #[error("timed out after {0:?} {1}")]
    Timeout(Duration, &'static str),
    /// A response larger than allowed.
    #[error("{0} larger than {1} bytes")]
    TooLarge(&'static str, usize),
    /// JSON that does not decode.
    #[error("invalid JSON from the API server: {0}")]
    Decode(#[from] serde_json::Error),
    /// A watch `ERROR` event that is not 410.
    #[error("watch error event: code {code}: {message}")]
    WatchError {
        /// The Status code.
        code: u16,
        /// Reason and message.
        message: String,
    },
    /// 410 Gone: the resource version is too old; relist.
    #[error("resource version expired (410 Gone)")]
    Gone,
}

/// Where and how to reach the API server.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// `https://host:port` or `http://host:port`; `None`: from
    /// `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`.
    pub url: Option<String>,
    /// Bearer token file; `None`: no `Authorization` header.
    pub token_file: Option<PathBuf>,
    /// PEM bundle of the CA for `https`; `None`: the webpki roots.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
struct Target {
    tls: bool,
    host: String,
    port: u16,
    /// Path prefix (a proxy's), without the trailing `/`.
    base: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, ApiError> {
        let bad = |reason: &str| ApiError::BadUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("scheme must be http or https")),
        };
        let host = uri
            .host()
            .ok_or_else(|| bad("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        if uri.query().is_some() {
            return Err(bad("no query allowed"));
        }
        Ok(Target {
            tls,
            host,
            port,
            base: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Checks an API server URL (scheme, host) without connecting.
pub fn validate_url(url: &str) -> Result<(), ApiError> {
    Target::parse(url).map(|_| ())
}

/// The in-cluster API server URL from the environment the kubelet sets.
pub fn in_cluster_url(host: Option<String>, port: Option<String>) -> Result<String, ApiError> {
    let host = host
        .filter(|h| !h.is_empty())
        .ok_or(ApiError::NotInCluster)?;
    let port = port
        .filter(|p| !p.is_empty())
        .ok_or(ApiError::NotInCluster)?;
    Ok(if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    })
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A streaming response body.
#[derive(Debug)]
pub struct Body(Incoming);

impl Body {
    /// The next data chunk; `None` at the end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ApiError> {
        loop {
            match self.0.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(ApiError::Http(e)),
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        return Ok(Some(data));
                    }
                    // Trailers: nothing to read.
                }
            }
        }
    }

    /// The whole body, at most `limit` bytes.
    pub async fn read_all(
        &mut self,
        limit: usize,
        what: &'static str,
    ) -> Result<Vec<u8>, ApiError> {
        let mut out = Vec::new();
        while let Some(c) = self.chunk().await? {
            if out.len() + c.len() > limit {
                return Err(ApiError::TooLarge(what, limit));
            }
            out.extend_from_slice(&c);
        }
        Ok(out)
    }
}

/// The API client.
#[derive(Debug, Clone)]
pub struct Client {
    target: Target,
    token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

impl Client {
    /// A client for `opts`; in-cluster values are read from the environment
    /// when no URL is given.
    pub fn new(opts: &ApiOptions) -> Result<Client, ApiError> {
        let url = match &opts.url {
            Some(u) => u.clone(),
            None => in_cluster_url(
                std::env::var("KUBERNETES_SERVICE_HOST").ok(),
                std::env::var("KUBERNETES_SERVICE_PORT").ok(),
            )?,
        };
        Ok(Client {
            target: Target::parse(&url)?,
            token_file: opts.token_file.clone(),
            ca_file: opts.ca_file.clone(),
        })
    }

    /// The server's `scheme://host:port`, for logs.
    pub fn server(&self) -> String {
        format!(
            "{}://{}{}",
            if self.target.tls { "https" } else { "http" },
            self.target.authority(),
            self.target.base
        )
    }

    fn token(&self) -> Result<Option<String>, ApiError> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let t = std::fs::read_to_string(path).map_err(|source| ApiError::Token {
            path: path.clone(),
            source,
        })?;
        let t = t.trim();
        Ok((!t.is_empty()).then(|| t.to_owned()))
    }

    fn tls_config(&self) -> Result<ClientConfig, ApiError> {
        let mut roots = RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                let ca = |reason: String| ApiError::Ca {
                    path: path.clone(),
                    reason,
                };
                let pem = std::fs::read(path).map_err(|e| ca(e.to_string()))?;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| ca(e.to_string()))?;
                    roots.add(cert).map_err(|e| ca(e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(ca("no certificate in the file".into()));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let cfg = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ApiError::Connect {
                addr: self.target.authority(),
                source: std::io::Error::other(e),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(cfg)
    }

    async fn connect(&self) -> Result<Box<dyn Io>, ApiError> {
        let addr = self.target.authority();
        let conn_err = |source: std::io::Error| ApiError::Connect {
            addr: addr.clone(),
            source,
        };
        let tcp = TcpStream::connect((self.target.host.as_str(), self.target.port))
            .await
            .map_err(conn_err)?;
        let _ = tcp.set_nodelay(true);
        if !self.target.tls {
            return Ok(Box::new(tcp));
        }
        let cfg = self.tls_config()?;
        let name = ServerName::try_from(self.target.host.clone())
            .map_err(|e| conn_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
        let tls = TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .map_err(conn_err)?;
        Ok(Box::new(tls))
    }

    /// `GET path_and_query` (below the URL's path); the body streams.
    /// `timeout` bounds connecting and the response head, not the body.
    pub async fn get(&self, path_and_query: &str, timeout: Duration) -> Result<Body, ApiError> {
        let token = self.token()?;
        let full = format!("{}{}", self.target.base, path_and_query);
        let fut = async {
            let io = self.connect().await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "API server connection ended");
                }
            });
            let mut req = Request::get(full.as_str())
                .header(header::HOST, self.target.authority())
                .header(header::ACCEPT, "application/json")
                .header(
                    header::USER_AGENT,
                    concat!("periscope-agent/", env!("CARGO_PKG_VERSION")),
                );
            if let Some(t) = &token {
                req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let resp = sender
                .send_request(req.body(Empty::<Bytes>::new())?)
                .await?;
            Ok::<_, ApiError>(resp)
        };
        let resp = tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| ApiError::Timeout(timeout, "waiting for the API server's response"))??;
        let status = resp.status();
        let mut body = Body(resp.into_body());
        if status.is_success() {
            return Ok(body);
        }
        if status == StatusCode::GONE {
            return Err(ApiError::Gone);
        }
        // The Status object explains; keep its start.
        let mut text = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(Some(c)) = body.chunk().await {
                text.extend_from_slice(&c[..c.len().min(ERROR_BODY_BYTES - text.len())]);
                if text.len() >= ERROR_BODY_BYTES {
                    break;
                }
            }
        })
        .await;
        Err(ApiError::Status {
            method: "GET",
            path: full,
            status,
            body: String::from_utf8_lossy(&text)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("https://10.96.0.1:443").unwrap();
        assert!(t.tls);
        assert_eq!(
            (t.host.as_str(), t.port, t.base.as_str()),
            ("10.96.0.1", 443, "")
        );
        let t = Target::parse("http://127.0.0.1:8001/proxy/").unwrap();
        assert!(!t.tls);
        assert_eq!((t.port, t.base.as_str()), (8001, "/proxy"));
        let t = Target::parse("https://[fd00::1]:6443").unwrap();
        assert_eq!(
            (t.host.as_str(), t.authority().as_str()),
            ("fd00::1", "[fd00::1]:6443")
        );
        assert_eq!(
            Target::parse("https://kubernetes.default.svc")
                .unwrap()
                .port,
            443
        );
        for bad in ["ftp://x", "127.0.0.1:80", "", "http://", "http://h/?a=b"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            in_cluster_url(Some("10.96.0.1".into()), Some("443".into())).unwrap(),
            "https://10.96.0.1:443"
        );
        assert_eq!(
            in_cluster_url(Some("fd00::1".into()), Some("443".into())).unwrap(),
            "https://[fd00::1]:443"
        );
        assert!(matches!(
            in_cluster_url(None, Some("443".into())),
            Err(ApiError::NotInCluster)
        ));
    }

    #[test]
    fn token_is_read_per_request_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let c = Client::new(&ApiOptions {
            url: Some("http://127.0.0.1:1".into()),
            token_file: Some(path.clone()),
            ca_file: None,
        })
        .unwrap();
        assert!(matches!(c.token(), Err(ApiError::Token { .. })));
        std::fs::write(&path, "first\n").unwrap();
        assert_eq!(c.token().unwrap().as_deref(), Some("first"));
        std::fs::write(&path, "rotated").unwrap();
        assert_eq!(c.token().unwrap().as_deref(), Some("rotated"));
    }

    #[test]
    fn ca_file_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let c = Client::new(&ApiOptions {
            url: Some("https://127.0.0.1:1".into()),
            token_file: None,
            ca_file: Some(path),
        })
        .unwrap();
        let e = c.tls_config().unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
        // Without a CA file, the public roots.
        let c = Client::new(&ApiOptions {
            url: Some("https://127.0.0.1:1".into()),
            token_file: None,
            ca_file: None,
        })
        .unwrap();
        assert!(c.tls_config().is_ok());
    }
}
