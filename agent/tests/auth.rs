//! Authentication end to end, against the `periscope-agent` binary: the
//! relay listeners with an auth file and TLS (certificates from a private
//! CA made here) admit a token for its tenant and forward the request for
//! that tenant, refuse requests without a token (401 / UNAUTHENTICATED)
//! or for another tenant or scope (403 / PERMISSION_DENIED), refuse plain
//! text on their TLS ports and, with a client CA, clients without a
//! certificate; a changed auth file applies without a restart; the
//! admitted tenant stays with a relayed request through the disk spool;
//! bad files stop the start (exit 2). The exporter's `bearer_token_file`, rotated as
//! Kubernetes rotates a mounted Secret, reaches the collector without a
//! restart.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use periscope_auth::Scope;
use periscope_auth::tokens::file_block;
use periscope_proto::otlp::ExportLogsServiceRequest;
use periscope_proto::otlp::common::v1::{AnyValue, any_value::Value};
use periscope_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use rcgen::ExtendedKeyUsagePurpose;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use common::{Agent, Ca, Collector, PATIENCE, check_config, path, run_to_exit};

/// The only name in the relay's certificate.
const SERVER_NAME: &str = "relay.periscope.test";
/// Write scope, tenant `shop`.
const SHOP: &str = "pscp_shop_apps_token";
/// Read scope only, tenant `shop`.
const READER: &str = "pscp_shop_reader_token";
/// Write scope, tenant `fresh`: added to the auth file while the agent runs.
const FRESH: &str = "pscp_fresh_token";

/// The auth file: `shop-apps`, `reader` and, with `fresh`, `fresh-apps`;
/// a verified client certificate may write for tenant `certs`.
fn auth_file(fresh: bool) -> String {
    let t = |s: &str| vec![s.to_owned()];
    let mut blocks = vec![
        file_block("shop-apps", SHOP, &t("shop"), &[Scope::Write]),
        file_block("reader", READER, &t("shop"), &[Scope::Read]),
        "[client_certificate]\ntenants = [\"certs\"]\nscopes = [\"write\"]\n".to_owned(),
    ];
    if fresh {
        blocks.push(file_block(
            "fresh-apps",
            FRESH,
            &t("fresh"),
            &[Scope::Write],
        ));
    }
    blocks.join("\n")
}

/// A directory with the CA, the relay's certificate and key, the auth
/// file and `logs/app.log` holding `line`.
fn setup(ca: &Ca, line: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.leaf(&[SERVER_NAME], ExtendedKeyUsagePurpose::ServerAuth);
    for (name, text) in [
        ("ca.pem", ca.pem.clone()),
        ("tls.crt", cert),
        ("tls.key", key),
        ("auth.toml", auth_file(false)),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let mut f = std::fs::File::create(dir.path().join("logs/app.log")).unwrap();
    writeln!(f, "{line}").unwrap();
    dir
}

/// How a test client speaks TLS to the relay.
struct ClientTls {
    ca: String,
    /// Client certificate and key (PEM).
    identity: Option<(String, String)>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn connector(t: &ClientTls) -> tokio_rustls::TlsConnector {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(t.ca.as_bytes()).unwrap())
        .unwrap();
    let builder = ClientConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match &t.identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// An OTLP/JSON logs request with one record.
fn json(body: &str) -> String {
    format!(
        r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"body":{{"stringValue":"{body}"}}}}]}}]}}]}}"#
    )
}

/// POSTs `body` (OTLP/JSON logs) to the HTTP relay, over TLS with `tls`:
/// the status and the whole response, or why no HTTP response came.
fn post(
    addr: SocketAddr,
    tls: Option<&ClientTls>,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String), String> {
    let mut req = format!(
        "POST /v1/logs HTTP/1.1\r\nHost: {SERVER_NAME}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        // A read error after a whole response (a peer closing without
        // close_notify) still leaves the response in `out`.
        let read = match tls {
            None => {
                let mut s = tcp;
                s.write_all(req.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                s.read_to_end(&mut out).await
            }
            Some(t) => {
                let name = SERVER_NAME.try_into().unwrap();
                let mut s = connector(t)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
                s.write_all(req.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                s.read_to_end(&mut out).await
            }
        };
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok());
        match (status, read) {
            (Some(s), _) => Ok((s, text)),
            (None, Err(e)) => Err(format!("no HTTP response: {e}")),
            (None, Ok(_)) => Err(format!("no HTTP response: {text:?}")),
        }
    };
    runtime().block_on(async {
        tokio::time::timeout(Duration::from_secs(30), exchange)
            .await
            .map_err(|_| "timed out".to_owned())?
    })
}

/// Exports one log record to the gRPC relay, over TLS with `tls`, with
/// `token` and `tenant` metadata.
fn grpc(
    addr: SocketAddr,
    tls: Option<&ClientTls>,
    token: Option<&str>,
    tenant: Option<&str>,
    body: &str,
) -> Result<(), tonic::Status> {
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    body: Some(AnyValue {
                        value: Some(Value::StringValue(body.to_owned())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    runtime().block_on(async {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .unwrap()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10));
        if let Some(t) = tls {
            let mut c = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&t.ca))
                .domain_name(SERVER_NAME);
            if let Some((cert, key)) = &t.identity {
                c = c.identity(Identity::from_pem(cert, key));
            }
            ep = ep.tls_config(c).unwrap();
        }
        let channel = ep
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connect: {e:?}")))?;
        let mut req = tonic::Request::new(request);
        if let Some(t) = token {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        if let Some(t) = tenant {
            req.metadata_mut()
                .insert("x-scope-orgid", t.parse().unwrap());
        }
        LogsServiceClient::new(channel)
            .export(req)
            .await
            .map(|_| ())
    })
}

fn bearer(token: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {token}"))
}

/// The agent with both relay listeners, an auth file and TLS from `dir`;
/// its own tenant `node` and token `agent-token`.
fn agent_with_relay(dir: &tempfile::TempDir, collector: &Collector, extra: &[&str]) -> Agent {
    let (auth, cert, key) = (
        path(dir, "auth.toml"),
        path(dir, "tls.crt"),
        path(dir, "tls.key"),
    );
    let endpoint = collector.endpoint();
    let mut args = vec![
        "--endpoint",
        &endpoint,
        "--tenant",
        "node",
        "--bearer-token",
        "agent-token",
        "--otlp-grpc-addr",
        "127.0.0.1:0",
        "--otlp-http-addr",
        "127.0.0.1:0",
        "--relay-auth-file",
        &auth,
        "--relay-tls-cert-file",
        &cert,
        "--relay-tls-key-file",
        &key,
    ];
    args.extend_from_slice(extra);
    Agent::start(dir.path(), "data", &args)
}

#[test]
fn relay_over_tls_admits_tokens_and_forwards_their_tenant() {
    let ca = Ca::new("Periscope relay test CA");
    let dir = setup(&ca, "relay file line");
    let collector = Collector::plain();
    let mut agent = agent_with_relay(&dir, &collector, &[]);
    let (http, grpc_addr) = (agent.addr("otlp_http"), agent.addr("otlp_grpc"));
    let tls = ClientTls {
        ca: ca.pem.clone(),
        identity: None,
    };
    let shop = bearer(SHOP);
    let shop_h = (shop.0, shop.1.as_str());

    // Admitted: forwarded for the token's tenant, with the agent's own
    // token; the files the agent tails keep the agent's tenant.
    let ok = post(http, Some(&tls), &[shop_h], &json("http implied")).unwrap();
    assert_eq!(ok.0, 200, "{}", ok.1);
    let named = [shop_h, ("X-Scope-OrgID", "shop")];
    let ok = post(http, Some(&tls), &named, &json("http named")).unwrap();
    assert_eq!(ok.0, 200, "{}", ok.1);
    grpc(grpc_addr, Some(&tls), Some(SHOP), None, "grpc implied").unwrap();
    let want = [
        "relay file line",
        "http implied",
        "http named",
        "grpc implied",
    ];
    collector
        .seen
        .wait_for(&want.map(str::to_owned), &mut agent);
    for (body, tenant) in [
        ("relay file line", "node"),
        ("http implied", "shop"),
        ("http named", "shop"),
        ("grpc implied", "shop"),
    ] {
        let got = collector.seen.find(body).unwrap();
        assert_eq!(got.tenant.as_deref(), Some(tenant), "{body}");
        assert_eq!(
            got.authorization.as_deref(),
            Some("Bearer agent-token"),
            "{body}: the application's token goes no further than the relay"
        );
    }

    // Refused: no or unknown token 401 (with a challenge), another tenant
    // or scope 403; gRPC the same as statuses.
    let reader = bearer(READER);
    let nope = bearer("pscp_guessed");
    let refusals: [(&[(&str, &str)], u16); 4] = [
        (&[], 401),
        (&[(nope.0, &nope.1)], 401),
        (&[shop_h, ("X-Scope-OrgID", "other")], 403),
        (&[(reader.0, &reader.1)], 403),
    ];
    for (headers, want) in refusals {
        let (status, text) = post(http, Some(&tls), headers, &json("refused")).unwrap();
        assert_eq!(status, want, "{headers:?}: {text}");
        assert_eq!(
            text.to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            want == 401,
            "{text}"
        );
    }
    for (token, tenant, want) in [
        (None, None, tonic::Code::Unauthenticated),
        (Some(SHOP), Some("other"), tonic::Code::PermissionDenied),
        (Some(READER), None, tonic::Code::PermissionDenied),
    ] {
        let e = grpc(grpc_addr, Some(&tls), token, tenant, "refused").unwrap_err();
        assert_eq!(e.code(), want, "{token:?} {tenant:?}: {e:?}");
    }

    // Plain text on the TLS ports gets no answer.
    let plain = post(http, None, &[shop_h], &json("plain text"));
    assert!(plain.is_err(), "{plain:?}");
    let plain = grpc(grpc_addr, None, Some(SHOP), None, "plain text");
    assert!(plain.is_err(), "{plain:?}");
    agent.wait_metric("periscope_agent_relay_tls_handshake_failures_total", 2);

    assert_eq!(agent.metric("periscope_agent_relay_requests_total"), 3);
    for b in collector.seen.bodies() {
        assert!(want.contains(&b.as_str()), "refused, yet forwarded: {b}");
    }
    for (metric, want) in [
        ("periscope_auth_enabled", 1),
        (
            "periscope_auth_admitted_total{listener=\"relay_otlp_http\"}",
            2,
        ),
        (
            "periscope_auth_admitted_total{listener=\"relay_otlp_grpc\"}",
            1,
        ),
        (
            "periscope_auth_refusals_total{listener=\"relay_otlp_http\",reason=\"missing\"}",
            1,
        ),
        (
            "periscope_auth_refusals_total{listener=\"relay_otlp_http\",reason=\"invalid\"}",
            1,
        ),
        (
            "periscope_auth_refusals_total{listener=\"relay_otlp_http\",reason=\"tenant\"}",
            1,
        ),
        (
            "periscope_auth_refusals_total{listener=\"relay_otlp_http\",reason=\"scope\"}",
            1,
        ),
        (
            "periscope_auth_refusals_total{listener=\"relay_otlp_grpc\",reason=\"missing\"}",
            1,
        ),
        ("periscope_config_reload_ok{file=\"auth\"}", 1),
        ("periscope_config_reload_ok{file=\"tls\"}", 1),
    ] {
        assert_eq!(agent.metric(metric), want, "{metric}");
    }
    assert_eq!(agent.stop(), 0);
}

#[test]
fn relay_mutual_tls_refuses_clients_without_a_certificate() {
    let ca = Ca::new("Periscope relay test CA");
    let dir = setup(&ca, "mtls file line");
    let collector = Collector::plain();
    let client_ca = path(&dir, "ca.pem");
    let mut agent = agent_with_relay(
        &dir,
        &collector,
        &["--relay-tls-client-ca-file", &client_ca],
    );
    let (http, grpc_addr) = (agent.addr("otlp_http"), agent.addr("otlp_grpc"));
    let shop = bearer(SHOP);
    let shop_h = (shop.0, shop.1.as_str());

    // Without a client certificate the handshake is refused, token or not.
    let anonymous = ClientTls {
        ca: ca.pem.clone(),
        identity: None,
    };
    let r = post(http, Some(&anonymous), &[shop_h], &json("no certificate"));
    assert!(r.is_err(), "{r:?}");
    let r = grpc(
        grpc_addr,
        Some(&anonymous),
        Some(SHOP),
        None,
        "no certificate",
    );
    assert!(r.is_err(), "{r:?}");
    agent.wait_metric("periscope_agent_relay_tls_handshake_failures_total", 2);

    // With one, the certificate stands for a token (the auth file's
    // `[client_certificate]`, tenant `certs`) on both listeners; a token
    // still names its own tenant.
    let (cert, key) = ca.leaf(&["app"], ExtendedKeyUsagePurpose::ClientAuth);
    let app = ClientTls {
        ca: ca.pem.clone(),
        identity: Some((cert, key)),
    };
    let ok = post(http, Some(&app), &[], &json("http certificate")).unwrap();
    assert_eq!(ok.0, 200, "{}", ok.1);
    grpc(grpc_addr, Some(&app), None, None, "grpc certificate").unwrap();
    let ok = post(
        http,
        Some(&app),
        &[shop_h],
        &json("http certificate and token"),
    )
    .unwrap();
    assert_eq!(ok.0, 200, "{}", ok.1);
    let want = [
        "mtls file line",
        "http certificate",
        "grpc certificate",
        "http certificate and token",
    ];
    collector
        .seen
        .wait_for(&want.map(str::to_owned), &mut agent);
    for (body, tenant) in [
        ("mtls file line", "node"),
        ("http certificate", "certs"),
        ("grpc certificate", "certs"),
        ("http certificate and token", "shop"),
    ] {
        let got = collector.seen.find(body).unwrap();
        assert_eq!(got.tenant.as_deref(), Some(tenant), "{body}");
    }
    assert!(collector.seen.find("no certificate").is_none());
    assert_eq!(agent.metric("periscope_agent_relay_requests_total"), 3);
    assert_eq!(agent.stop(), 0);
}

#[test]
fn relay_auth_file_changes_apply_without_a_restart() {
    let ca = Ca::new("Periscope relay test CA");
    let dir = setup(&ca, "reload file line");
    let collector = Collector::plain();
    let auth = path(&dir, "auth.toml");
    let endpoint = collector.endpoint();
    // Plain text: authentication does not need TLS.
    let mut agent = Agent::start(
        dir.path(),
        "data",
        &[
            "--endpoint",
            &endpoint,
            "--otlp-http-addr",
            "127.0.0.1:0",
            "--relay-auth-file",
            &auth,
        ],
    );
    let http = agent.addr("otlp_http");
    let fresh = bearer(FRESH);
    let fresh_h = [(fresh.0, fresh.1.as_str())];
    assert_eq!(
        post(http, None, &fresh_h, &json("too early")).unwrap().0,
        401
    );

    // The new token works once the file is read again (SIGHUP, or the
    // poll every 2 s); SIGHUP does not stop the agent.
    std::fs::write(dir.path().join("auth.toml"), auth_file(true)).unwrap();
    agent.signal("HUP");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, text) = post(http, None, &fresh_h, &json("fresh")).unwrap();
        if status == 200 {
            break;
        }
        assert_eq!(status, 401, "{text}");
        assert!(Instant::now() < deadline, "{}", agent.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(agent.running());
    collector.seen.wait_for(&["fresh".to_owned()], &mut agent);
    assert_eq!(
        collector.seen.find("fresh").unwrap().tenant.as_deref(),
        Some("fresh")
    );
    assert!(collector.seen.find("too early").is_none());

    // A broken version keeps the last good one, and says so in /metrics.
    std::fs::write(dir.path().join("auth.toml"), "[[token]]\nname = \n").unwrap();
    let deadline = Instant::now() + PATIENCE;
    while agent.metric("periscope_config_reload_ok{file=\"auth\"}") != 0 {
        assert!(Instant::now() < deadline, "{}", agent.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(agent.metric("periscope_config_reload_failures_total{file=\"auth\"}") >= 1);
    assert_eq!(
        post(http, None, &fresh_h, &json("still fresh")).unwrap().0,
        200
    );
    assert_eq!(agent.stop(), 0);
}

#[test]
fn relayed_tenant_survives_the_spool_across_a_restart() {
    let ca = Ca::new("Periscope relay test CA");
    let dir = setup(&ca, "spool file line");
    let auth = path(&dir, "auth.toml");
    // Nothing listens there: the request waits, and at SIGTERM goes to
    // the spool with its tenant.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down = format!("http://{down}");
    let relay = [
        "--tenant",
        "node",
        "--otlp-http-addr",
        "127.0.0.1:0",
        "--relay-auth-file",
        &auth,
    ];
    let mut agent = Agent::start(
        dir.path(),
        "data",
        &[&["--endpoint", down.as_str()][..], &relay].concat(),
    );
    let shop = bearer(SHOP);
    let ok = post(
        agent.addr("otlp_http"),
        None,
        &[(shop.0, &shop.1)],
        &json("spooled relay record"),
    )
    .unwrap();
    assert_eq!(ok.0, 200, "{}", ok.1);
    agent.wait_metric("periscope_agent_export_retries_total", 1);
    assert_eq!(agent.stop(), 0);
    assert!(agent_spool_bytes(&dir.path().join("data/spool")) > 0);

    let collector = Collector::plain();
    let endpoint = collector.endpoint();
    let mut agent = Agent::start(
        dir.path(),
        "data",
        &[&["--endpoint", endpoint.as_str()][..], &relay].concat(),
    );
    let want = ["spool file line", "spooled relay record"].map(str::to_owned);
    collector.seen.wait_for(&want, &mut agent);
    for (body, tenant) in [
        ("spool file line", "node"),
        ("spooled relay record", "shop"),
    ] {
        let got = collector.seen.find(body).unwrap();
        assert_eq!(got.tenant.as_deref(), Some(tenant), "{body}");
    }
    assert_eq!(agent.stop(), 0);
}

/// Bytes of the spool's segment files.
fn agent_spool_bytes(spool: &Path) -> u64 {
    std::fs::read_dir(spool)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn bad_relay_and_token_files_stop_the_start_with_exit_code_2() {
    let ca = Ca::new("Periscope relay test CA");
    let dir = setup(&ca, "unused");
    let (_, other_key) = ca.leaf(&["other"], ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(dir.path().join("other.key"), other_key).unwrap();
    std::fs::write(
        dir.path().join("bad-tenant.toml"),
        auth_file(false).replace("\"shop\"", "\"a/b\""),
    )
    .unwrap();
    std::fs::write(dir.path().join("empty-token"), "\n").unwrap();
    let p = |name: &str| path(&dir, name);
    let (cert, key, auth) = (p("tls.crt"), p("tls.key"), p("auth.toml"));
    let (missing, bad_tenant, other_key, empty) = (
        p("missing.toml"),
        p("bad-tenant.toml"),
        p("other.key"),
        p("empty-token"),
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--relay-auth-file", &missing], "missing.toml"),
        (vec!["--relay-auth-file", &bad_tenant], "invalid tenant"),
        (
            vec![
                "--relay-tls-cert-file",
                &cert,
                "--relay-tls-key-file",
                &other_key,
            ],
            "other.key",
        ),
        (vec!["--relay-tls-cert-file", &cert], "set both or neither"),
        (vec!["--bearer-token-file", &empty], "empty-token is empty"),
        (
            vec!["--bearer-token-file", &empty, "--bearer-token", "x"],
            "exclude each other",
        ),
    ];
    let data = p("data");
    for (args, named) in cases {
        let start = [
            &args[..],
            &["--data-dir", &data, "--http-addr", "127.0.0.1:0"],
        ]
        .concat();
        for (what, (code, err)) in [
            ("start", run_to_exit(&start)),
            ("check", check_config(&args)),
        ] {
            assert_eq!(code, 2, "{what} {args:?}: {err}");
            assert!(err.contains(named), "{what} {args:?}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
        }
    }
    let ok = [
        "--relay-auth-file",
        &auth,
        "--relay-tls-cert-file",
        &cert,
        "--relay-tls-key-file",
        &key,
        "--relay-tls-client-ca-file",
        &p("ca.pem"),
    ];
    let (code, err) = check_config(&ok);
    assert_eq!(code, 0, "{err}");
}

/// A Kubernetes Secret volume: `<dir>/token` links to `..data/token`,
/// `..data` to a timestamped directory; an update writes a new directory
/// and swaps `..data` in one rename.
fn secret_write(dir: &Path, version: u32, token: &str) {
    let v = dir.join(format!("..v{version}"));
    std::fs::create_dir_all(&v).unwrap();
    std::fs::write(v.join("token"), format!("{token}\n")).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..v{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    if !dir.join("token").exists() {
        std::os::unix::fs::symlink("..data/token", dir.join("token")).unwrap();
    }
}

#[test]
fn rotated_bearer_token_file_reaches_the_collector_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    secret_write(&secret, 1, "first");
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let log = dir.path().join("logs/app.log");
    let write_lines = |tag: &str| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let lines: Vec<String> = (0..20).map(|i| format!("{tag} {i}")).collect();
        for l in &lines {
            writeln!(f, "{l}").unwrap();
        }
        lines
    };
    let collector = Collector::plain();
    *collector.seen.require.lock().unwrap() = Some("Bearer first".into());
    let endpoint = collector.endpoint();
    let token_file = secret.join("token");
    let mut agent = Agent::start(
        dir.path(),
        "data",
        &[
            "--endpoint",
            &endpoint,
            "--bearer-token-file",
            token_file.to_str().unwrap(),
        ],
    );
    let before = write_lines("before rotation");
    collector.seen.wait_for(&before, &mut agent);

    // The Secret is rotated and the collector takes only the new token
    // from now on: what is read afterwards arrives with it, nothing is lost.
    secret_write(&secret, 2, "second");
    *collector.seen.require.lock().unwrap() = Some("Bearer second".into());
    let after = write_lines("after rotation");
    collector.seen.wait_for(&after, &mut agent);
    for g in collector.seen.got() {
        let want = if g.body.starts_with("before") {
            "Bearer first"
        } else {
            "Bearer second"
        };
        assert_eq!(g.authorization.as_deref(), Some(want), "{}", g.body);
    }
    assert_eq!(agent.metric("periscope_agent_records_rejected_total"), 0);
    assert_eq!(agent.stop(), 0);
}
