//! TLS to the collector, end to end: the `periscope-agent` binary tails a
//! file and exports to an OTLP/gRPC server with TLS on 127.0.0.1, whose
//! certificates come from a private CA made here. Records arrive with the
//! bearer token and tenant; a collector the agent cannot verify is retried,
//! never dropped; mutual TLS works with a client certificate and is refused
//! without one; bad PEM files are configuration errors naming the file.

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

const AGENT: &str = env!("CARGO_BIN_EXE_periscope-agent");
/// The only name in the server certificate: connecting to 127.0.0.1 needs
/// `--tls-server-name`.
const SERVER_NAME: &str = "collector.periscope.test";
/// Generous bound of every wait; the checks are on what arrives, not on time.
const PATIENCE: Duration = Duration::from_secs(60);

/// A private CA that signs server and client certificates.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
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
    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
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

/// What the test collector saw: log bodies and the metadata of each request.
#[derive(Clone, Default)]
struct Seen {
    bodies: Arc<Mutex<Vec<String>>>,
    authorization: Arc<Mutex<Vec<Option<String>>>>,
    tenants: Arc<Mutex<Vec<Option<String>>>>,
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
        self.authorization
            .lock()
            .unwrap()
            .push(meta("authorization"));
        self.tenants.lock().unwrap().push(meta("x-scope-orgid"));
        let mut bodies = self.bodies.lock().unwrap();
        for rl in &req.get_ref().resource_logs {
            for sl in &rl.scope_logs {
                for r in &sl.log_records {
                    if let Some(Value::StringValue(s)) =
                        r.body.as_ref().and_then(|b| b.value.as_ref())
                    {
                        bodies.push(s.clone());
                    }
                }
            }
        }
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

impl Seen {
    fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }

    /// Waits until every line of `want` has arrived.
    fn wait_for(&self, want: &[String], agent: &mut Agent) {
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

/// An OTLP/gRPC logs server with TLS on 127.0.0.1:0, stopped on drop.
struct Collector {
    addr: SocketAddr,
    seen: Seen,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Runs the server; dropped last.
    _rt: tokio::runtime::Runtime,
}

impl Collector {
    /// `client_ca`: require client certificates signed by this CA.
    fn start(cert: &str, key: &str, client_ca: Option<&str>) -> Collector {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(ca));
        }
        let seen = Seen::default();
        let svc = LogsServiceServer::new(seen.clone())
            .accept_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Gzip);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(svc)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            );
        rt.spawn(server);
        Collector {
            addr,
            seen,
            stop: Some(stop),
            _rt: rt,
        }
    }

    fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
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
struct Agent {
    child: Child,
    http: String,
    stderr_path: PathBuf,
}

impl Agent {
    fn start(dir: &Path, data: &str, args: &[&str]) -> Agent {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let stderr_path = dir.join(format!("agent-{run}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut child = Command::new(AGENT)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .args(["--data-dir", dir.join(data).to_str().unwrap()])
            .args(["--include", dir.join("logs/*.log").to_str().unwrap()])
            .args(["--read-from", "beginning", "--node-name", "tls-node"])
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
            http: String::new(),
            stderr_path,
        };
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("no listening line ({e}): {line:?}\n{}", agent.stderr()));
        agent.http = v["http"].as_str().unwrap().to_owned();
        agent
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// A counter or gauge of the agent's `/metrics`.
    fn metric(&self, name: &str) -> u64 {
        let mut s = std::net::TcpStream::connect(&self.http).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.http
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }

    fn wait_metric(&mut self, name: &str, at_least: u64) {
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

    /// SIGTERM, then the exit status (the agent spools what is unsent).
    fn stop(mut self) -> i32 {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM {pid}");
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

/// A directory with the CA and server files and a log of `n` lines.
fn setup(ca: &Ca, tag: &str, n: usize) -> (tempfile::TempDir, Vec<String>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let lines: Vec<String> = (0..n).map(|i| format!("{tag} line {i}")).collect();
    let mut f = std::fs::File::create(dir.path().join("logs/app.log")).unwrap();
    for l in &lines {
        writeln!(f, "{l}").unwrap();
    }
    let (cert, key) = ca.leaf(&[SERVER_NAME], ExtendedKeyUsagePurpose::ServerAuth);
    (dir, lines, cert, key)
}

fn path(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).to_str().unwrap().to_owned()
}

#[test]
fn records_arrive_over_tls_with_token_and_tenant() {
    let ca = Ca::new("Periscope test CA");
    let (dir, lines, cert, key) = setup(&ca, "tls-basic", 50);
    let collector = Collector::start(&cert, &key, None);
    let ca_file = path(&dir, "ca.pem");
    let mut agent = Agent::start(
        dir.path(),
        "data",
        &[
            "--endpoint",
            &collector.endpoint(),
            "--tls-ca-file",
            &ca_file,
            "--tls-server-name",
            SERVER_NAME,
            "--tenant",
            "acme",
            "--bearer-token",
            "s3cret",
        ],
    );
    collector.seen.wait_for(&lines, &mut agent);
    for a in collector.seen.authorization.lock().unwrap().iter() {
        assert_eq!(a.as_deref(), Some("Bearer s3cret"));
    }
    for t in collector.seen.tenants.lock().unwrap().iter() {
        assert_eq!(t.as_deref(), Some("acme"));
    }
    assert_eq!(agent.stop(), 0);
}

#[test]
fn unverifiable_collector_is_retried_not_dropped() {
    let ca = Ca::new("Periscope test CA");
    let other = Ca::new("Some other CA");
    let (dir, lines, cert, key) = setup(&ca, "tls-wrong-ca", 20);
    std::fs::write(dir.path().join("other-ca.pem"), &other.pem).unwrap();
    let collector = Collector::start(&cert, &key, None);
    let endpoint = collector.endpoint();

    // Trusting another CA, and then the right CA without the name override
    // (the certificate does not name 127.0.0.1): the handshake fails,
    // nothing reaches the collector, and the agent keeps retrying.
    let other_ca = path(&dir, "other-ca.pem");
    let right_ca = path(&dir, "ca.pem");
    let wrong_setups: [(&[&str], &str); 2] = [
        (
            &["--tls-ca-file", &other_ca, "--tls-server-name", SERVER_NAME],
            "UnknownIssuer",
        ),
        (&["--tls-ca-file", &right_ca], "not valid for name"),
    ];
    for (wrong, why) in wrong_setups {
        let mut args = vec!["--endpoint", endpoint.as_str()];
        args.extend_from_slice(wrong);
        let mut agent = Agent::start(dir.path(), "data", &args);
        agent.wait_metric("periscope_agent_export_retries_total", 3);
        assert_eq!(agent.metric("periscope_agent_records_rejected_total"), 0);
        assert_eq!(
            agent.metric("periscope_agent_records_acknowledged_total"),
            0
        );
        assert!(collector.seen.bodies().is_empty());
        // The log says why.
        assert!(agent.stderr().contains(why), "{}", agent.stderr());
        assert_eq!(agent.stop(), 0);
    }

    // The same data directory with the right CA and name: every line arrives.
    let mut agent = Agent::start(
        dir.path(),
        "data",
        &[
            "--endpoint",
            &endpoint,
            "--tls-ca-file",
            &right_ca,
            "--tls-server-name",
            SERVER_NAME,
        ],
    );
    collector.seen.wait_for(&lines, &mut agent);
    assert_eq!(agent.stop(), 0);
}

#[test]
fn mutual_tls_needs_the_client_certificate() {
    let ca = Ca::new("Periscope test CA");
    let (dir, lines, cert, key) = setup(&ca, "tls-mutual", 20);
    let (client_cert, client_key) = ca.leaf(&["agent"], ExtendedKeyUsagePurpose::ClientAuth);
    std::fs::write(dir.path().join("client.pem"), client_cert).unwrap();
    std::fs::write(dir.path().join("client.key"), client_key).unwrap();
    let collector = Collector::start(&cert, &key, Some(&ca.pem));
    let endpoint = collector.endpoint();
    let ca_file = path(&dir, "ca.pem");
    let server = [
        "--endpoint",
        endpoint.as_str(),
        "--tls-ca-file",
        &ca_file,
        "--tls-server-name",
        SERVER_NAME,
    ];

    // Without a client certificate the server refuses the connection.
    let mut agent = Agent::start(dir.path(), "data", &server);
    agent.wait_metric("periscope_agent_export_retries_total", 3);
    assert!(collector.seen.bodies().is_empty());
    assert_eq!(agent.metric("periscope_agent_records_rejected_total"), 0);
    assert_eq!(agent.stop(), 0);

    // With it, everything arrives.
    let (cert_file, key_file) = (path(&dir, "client.pem"), path(&dir, "client.key"));
    let mut args = server.to_vec();
    args.extend([
        "--tls-client-cert-file",
        &cert_file,
        "--tls-client-key-file",
        &key_file,
    ]);
    let mut agent = Agent::start(dir.path(), "data", &args);
    collector.seen.wait_for(&lines, &mut agent);
    assert_eq!(agent.stop(), 0);
}

/// `--check-config` with `args`: exit code and stderr.
fn check_config(args: &[&str]) -> (i32, String) {
    let out = Command::new(AGENT)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .args(["--check-config", "--node-name", "n"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_tls_files_are_configuration_errors_naming_the_file() {
    let ca = Ca::new("Periscope test CA");
    let dir = tempfile::tempdir().unwrap();
    let (client_cert, client_key) = ca.leaf(&["agent"], ExtendedKeyUsagePurpose::ClientAuth);
    let (_, other_key) = ca.leaf(&["other"], ExtendedKeyUsagePurpose::ClientAuth);
    let files = [
        ("ca.pem", ca.pem.as_str()),
        ("client.pem", &client_cert),
        ("client.key", &client_key),
        ("other.key", &other_key),
        (
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
        ),
        ("empty.pem", "nothing here\n"),
    ];
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let p = |name: &str| path(&dir, name);
    let (ca_pem, client_pem, client_key) = (p("ca.pem"), p("client.pem"), p("client.key"));
    let (other_key, garbage, empty, missing) = (
        p("other.key"),
        p("garbage.pem"),
        p("empty.pem"),
        p("missing.pem"),
    );
    let https = ["--endpoint", "https://127.0.0.1:4317"];

    let ok = [
        &https[..],
        &["--tls-ca-file", &ca_pem, "--tls-server-name", "collector"],
        &["--tls-client-cert-file", &client_pem],
        &["--tls-client-key-file", &client_key],
    ]
    .concat();
    let (code, err) = check_config(&ok);
    assert_eq!(code, 0, "{err}");

    let cert = ["--tls-client-cert-file", client_pem.as_str()];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--tls-ca-file", &missing], "missing.pem"),
        (vec!["--tls-ca-file", &garbage], "garbage.pem"),
        (vec!["--tls-ca-file", &empty], "empty.pem"),
        (cert.to_vec(), "set both or neither"),
        (
            vec!["--tls-client-key-file", &client_key],
            "set both or neither",
        ),
        (
            [&cert[..], &["--tls-client-key-file", &empty]].concat(),
            "empty.pem",
        ),
        (
            [&cert[..], &["--tls-client-key-file", &other_key]].concat(),
            "other.key",
        ),
        (vec!["--tls-server-name", "not a name"], "tls_server_name"),
    ];
    for (args, named) in cases {
        let all = [&https[..], &args].concat();
        let (code, err) = check_config(&all);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(named), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // TLS options without https: a mistake, not silently plaintext.
    let (code, err) = check_config(&[
        "--endpoint",
        "http://127.0.0.1:4317",
        "--tls-ca-file",
        &ca_pem,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("https"), "{err}");
}
