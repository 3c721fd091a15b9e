//! TLS for the listeners, with rustls.
//!
//! The certificate, key and (for mutual TLS) client CA are [`Watched`]
//! files: when cert-manager or an operator replaces them, new connections
//! get the new certificate; open connections keep theirs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
pub use tokio_rustls::server::TlsStream;

use crate::watched::Watched;

/// Where a listener's TLS material is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM), the server's first.
    pub cert: PathBuf,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA (PEM) whose client certificates are required, for mutual TLS.
    pub client_ca: Option<PathBuf>,
}

/// What a listener speaks inside TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// gRPC: HTTP/2 only.
    H2,
    /// HTTP/1.1.
    Http1,
}

/// The loaded material: one server configuration per kind of listener.
#[derive(Debug)]
pub struct TlsConfigs {
    h2: Arc<rustls::ServerConfig>,
    http1: Arc<rustls::ServerConfig>,
    h2_mtls: Option<Arc<rustls::ServerConfig>>,
    http1_mtls: Option<Arc<rustls::ServerConfig>>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load(files: &TlsFiles, bytes: &[Vec<u8>]) -> Result<TlsConfigs, String> {
    let certs = CertificateDer::pem_slice_iter(&bytes[0])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate in the file",
            files.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&bytes[1])
        .map_err(|e| format!("{}: not a PEM private key: {e}", files.key.display()))?;
    let roots = match &files.client_ca {
        None => None,
        Some(p) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&bytes[2]) {
                let c = c.map_err(|e| format!("{}: not a PEM certificate: {e}", p.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("{}: unusable CA certificate: {e}", p.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("{}: no certificate in the file", p.display()));
            }
            Some(Arc::new(roots))
        }
    };
    let build = |alpn: Alpn, mtls: bool| -> Result<Arc<rustls::ServerConfig>, String> {
        let b = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let b = match (&roots, mtls) {
            (Some(r), true) => b.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(r.clone(), provider())
                    .build()
                    .map_err(|e| format!("client CA: {e}"))?,
            ),
            _ => b.with_no_client_auth(),
        };
        let mut c = b
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| {
                format!(
                    "{} and {} do not make a usable certificate and key: {e}",
                    files.cert.display(),
                    files.key.display()
                )
            })?;
        c.alpn_protocols = match alpn {
            Alpn::H2 => vec![b"h2".to_vec()],
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
        };
        Ok(Arc::new(c))
    };
    let mtls = roots.is_some();
    Ok(TlsConfigs {
        h2: build(Alpn::H2, false)?,
        http1: build(Alpn::Http1, false)?,
        h2_mtls: if mtls {
            Some(build(Alpn::H2, true)?)
        } else {
            None
        },
        http1_mtls: if mtls {
            Some(build(Alpn::Http1, true)?)
        } else {
            None
        },
    })
}

/// The listeners' TLS: the watched certificate files and what they load to.
pub type Tls = Watched<TlsConfigs>;

/// Loads `files`; fails with a one-line reason when they are not a usable
/// certificate and key (or CA).
pub fn open(files: TlsFiles) -> Result<Arc<Tls>, String> {
    let mut paths = vec![files.cert.clone(), files.key.clone()];
    paths.extend(files.client_ca.clone());
    Watched::open("tls", paths, move |b| load(&files, b))
}

/// How one listener accepts TLS.
#[derive(Clone, Debug)]
pub struct Acceptor {
    tls: Arc<Tls>,
    alpn: Alpn,
    /// Requires client certificates when the files name a client CA.
    client_certs: bool,
    handshake_timeout: Duration,
}

/// What a TLS handshake established about the client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerTls {
    /// The connection is encrypted.
    pub encrypted: bool,
    /// The client presented a certificate the client CA verified.
    pub client_cert: bool,
}

impl Acceptor {
    /// An acceptor for a listener speaking `alpn`; with `client_certs`, the
    /// client CA (if any) is required.
    pub fn new(tls: Arc<Tls>, alpn: Alpn, client_certs: bool, handshake_timeout: Duration) -> Self {
        Acceptor {
            tls,
            alpn,
            client_certs,
            handshake_timeout,
        }
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_certs(&self) -> bool {
        self.client_certs && self.tls.get().h2_mtls.is_some()
    }

    /// Runs the handshake on `io`, within the handshake timeout.
    pub async fn accept<IO>(&self, io: IO) -> std::io::Result<(TlsStream<IO>, PeerTls)>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let configs = self.tls.get();
        let config = match (self.alpn, self.client_certs) {
            (Alpn::H2, true) => configs.h2_mtls.as_ref().unwrap_or(&configs.h2),
            (Alpn::Http1, true) => configs.http1_mtls.as_ref().unwrap_or(&configs.http1),
            (Alpn::H2, false) => &configs.h2,
            (Alpn::Http1, false) => &configs.http1,
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
        let stream = tokio::time::timeout(self.handshake_timeout, acceptor.accept(io))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
            })??;
        let client_cert = stream.get_ref().1.peer_certificates().is_some();
        Ok((
            stream,
            PeerTls {
                encrypted: true,
                client_cert,
            },
        ))
    }
}

/// A listener's connection: plain text, or TLS once its handshake is done.
pub enum MaybeTls {
    /// Plain text.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair};
    use rustls::pki_types::ServerName;

    use super::*;

    fn self_signed(name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Connects with a client trusting `ca_pem` and returns the server
    /// certificate it got.
    async fn handshake(acceptor: &Acceptor, ca_pem: &str, name: &str) -> std::io::Result<Vec<u8>> {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let (c, s) = tokio::join!(connector.connect(name, client), acceptor.accept(server));
        let (_, peer) = s?;
        assert!(peer.encrypted && !peer.client_cert);
        let c = c?;
        assert_eq!(c.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        Ok(c.get_ref().1.peer_certificates().unwrap()[0].to_vec())
    }

    #[tokio::test]
    async fn a_replaced_certificate_serves_new_connections_and_a_bad_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            client_ca: None,
        };
        let (c1, k1) = self_signed("one.test");
        std::fs::write(&files.cert, &c1).unwrap();
        std::fs::write(&files.key, &k1).unwrap();
        let tls = open(files.clone()).unwrap();
        let acceptor = Acceptor::new(tls.clone(), Alpn::H2, true, Duration::from_secs(5));
        assert!(!acceptor.requires_client_certs(), "no client CA given");
        let first = handshake(&acceptor, &c1, "one.test").await.unwrap();

        let (c2, k2) = self_signed("two.test");
        std::fs::write(&files.cert, &c2).unwrap();
        std::fs::write(&files.key, &k2).unwrap();
        assert!(tls.check(false));
        let second = handshake(&acceptor, &c2, "two.test").await.unwrap();
        assert_ne!(first, second);
        assert!(
            handshake(&acceptor, &c1, "one.test").await.is_err(),
            "the old certificate is gone"
        );

        // A key that does not match the certificate: the last good pair stays.
        std::fs::write(&files.key, &k1).unwrap();
        assert!(!tls.check(false));
        assert!(tls.failing());
        handshake(&acceptor, &c2, "two.test").await.unwrap();

        // At start, the same mistakes stop the start with the reason.
        let e = open(files.clone()).unwrap_err();
        assert!(
            e.contains("do not make a usable certificate and key"),
            "{e}"
        );
        std::fs::write(&files.cert, "not pem").unwrap();
        let e = open(files.clone()).unwrap_err();
        assert!(e.contains("no certificate"), "{e}");
        let e = open(TlsFiles {
            key: dir.path().join("missing"),
            ..files
        })
        .unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }
}
