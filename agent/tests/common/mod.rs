//! What the agent's end-to-end tests share: a private CA made with rcgen,
//! an OTLP/gRPC logs server on 127.0.0.1 that records what arrives (with or
//! without TLS), and runs of the `periscope-agent` binary.

#![allow(dead_code, reason = "each test binary uses a part of these helpers")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use periscope_proto::otlp::common::v1::any_value::Value;
use periscope_proto::otlp::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tonic::codec::CompressionEncoding;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

pub const AGENT: &str = env!("CARGO_BIN_EXE_periscope-agent");
/// Generous bound of every wait; the checks are on what arrives, not on time.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A private CA that signs server and client certificates.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf certificate and its key, both PEM.
    pub fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// One log record as the test collector got it, with its request's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Got {
    pub body: String,
    pub tenant: Option<String>,
    pub authorization: Option<String>,
}

/// What the test collector saw; with `require`, requests with another
/// `authorization` are refused UNAUTHENTICATED (and not recorded).
#[derive(Clone, Default)]
pub struct Seen {
    got: Arc<Mutex<Vec<Got>>>,
    pub require: Arc<Mutex<Option<String>>>,
    pub refused: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl LogsService for Seen {
    async fn export(
        &self,
        req: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let meta = |k: &str| {
            req.metadata()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (tenant, authorization) = (meta("x-scope-orgid"), meta("authorization"));
        if let Some(want) = self.require.lock().unwrap().as_deref()
            && authorization.as_deref() != Some(want)
        {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(tonic::Status::unauthenticated("invalid token"));
        }
        let mut got = self.got.lock().unwrap();
        for rl in &req.get_ref().resource_logs {
            for sl in &rl.scope_logs {
                for r in &sl.log_records {
                    if let Some(Value::StringValue(s)) =
                        r.body.as_ref().and_then(|b| b.value.as_ref())
                    {
                        got.push(Got {
                            body: s.clone(),
                            tenant: tenant.clone(),
                            authorization: authorization.clone(),
                        });
                    }
                }
            }
        }
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

impl Seen {
    pub fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    pub fn bodies(&self) -> Vec<String> {
        self.got().into_iter().map(|g| g.body).collect()
    }

    /// The record with this body, once it arrived.
    pub fn find(&self, body: &str) -> Option<Got> {
        self.got().into_iter().find(|g| g.body == body)
    }

    /// Waits until every line of `want` has arrived.
    pub fn wait_for(&self, want: &[String], agent: &mut Agent) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got = self.bodies();
            if want.iter().all(|w| got.contains(w)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "records did not arrive; got {got:?}; agent stderr:\n{}",
                agent.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// An OTLP/gRPC logs server on 127.0.0.1:0, stopped on drop.
pub struct Collector {
    pub addr: SocketAddr,
    pub seen: Seen,
    tls: bool,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Runs the server; dropped last.
    _rt: tokio::runtime::Runtime,
}

impl Collector {
    /// Without TLS.
    pub fn plain() -> Collector {
        Collector::serve(None)
    }

    /// With TLS; `client_ca`: require client certificates signed by this CA.
    pub fn start(cert: &str, key: &str, client_ca: Option<&str>) -> Collector {
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(ca));
        }
        Collector::serve(Some(tls))
    }

    fn serve(tls: Option<ServerTlsConfig>) -> Collector {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Seen::default();
        let svc = LogsServiceServer::new(seen.clone())
            .accept_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Gzip);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let is_tls = tls.is_some();
        let mut builder = Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).unwrap();
        }
        let server = builder.add_service(svc).serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async {
                let _ = stopped.await;
            },
        );
        rt.spawn(server);
        Collector {
            addr,
            seen,
            tls: is_tls,
            stop: Some(stop),
            _rt: rt,
        }
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// One run of the agent binary; killed on drop.
pub struct Agent {
    child: Child,
    /// The JSON line the agent prints once it listens.
    pub listening: serde_json::Value,
    pub http: String,
    stderr_path: PathBuf,
}

impl Agent {
    /// Starts the agent tailing `<dir>/logs/*.log` with its data in
    /// `<dir>/<data>`, and `args`.
    pub fn start(dir: &Path, data: &str, args: &[&str]) -> Agent {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let stderr_path = dir.join(format!("agent-{run}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut child = Command::new(AGENT)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .args(["--data-dir", dir.join(data).to_str().unwrap()])
            .args(["--include", dir.join("logs/*.log").to_str().unwrap()])
            .args(["--read-from", "beginning", "--node-name", "test-node"])
            .args(["--http-addr", "127.0.0.1:0", "--metrics-interval", "0s"])
            .args(["--batch-timeout", "50ms"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut agent = Agent {
            child,
            listening: serde_json::Value::Null,
            http: String::new(),
            stderr_path,
        };
        agent.listening = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("no listening line ({e}): {line:?}\n{}", agent.stderr()));
        agent.http = agent.listening["http"].as_str().unwrap().to_owned();
        agent
    }

    /// An address of the listening line (`otlp_grpc`, `otlp_http`).
    pub fn addr(&self, key: &str) -> SocketAddr {
        self.listening[key].as_str().unwrap().parse().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The agent's `/metrics` text.
    pub fn metrics(&self) -> String {
        let mut s = std::net::TcpStream::connect(&self.http).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.http
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    }

    /// A counter or gauge of the agent's `/metrics`; `name` may carry labels.
    pub fn metric(&self, name: &str) -> u64 {
        let text = self.metrics();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }

    pub fn wait_metric(&mut self, name: &str, at_least: u64) {
        let deadline = Instant::now() + PATIENCE;
        while self.metric(name) < at_least {
            assert!(
                Instant::now() < deadline,
                "{name} stayed below {at_least}; agent stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `signal` (a `kill` name such as `HUP`) to the agent.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} {pid}");
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM, then the exit status (the agent spools what is unsent).
    pub fn stop(mut self) -> i32 {
        self.signal("TERM");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "agent did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn path(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).to_str().unwrap().to_owned()
}

/// Runs the agent binary with `args` until it exits: exit code and stderr.
pub fn run_to_exit(args: &[&str]) -> (i32, String) {
    let out = Command::new(AGENT)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .args(["--node-name", "n"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `--check-config` with `args`: exit code and stderr.
pub fn check_config(args: &[&str]) -> (i32, String) {
    run_to_exit(&[&["--check-config"][..], args].concat())
}
