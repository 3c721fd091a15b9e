//! TLS to the collector, end to end: the `periscope-agent` binary tails a
//! file and exports to an OTLP/gRPC server with TLS on 127.0.0.1, whose
//! certificates come from a private CA made here. Records arrive with the
//! bearer token and tenant; a collector the agent cannot verify is retried,
//! never dropped; mutual TLS works with a client certificate and is refused
//! without one; bad PEM files are configuration errors naming the file.

mod common;

use std::io::Write;

use rcgen::ExtendedKeyUsagePurpose;

use common::{Agent, Ca, Collector, check_config, path};

/// The only name in the server certificate: connecting to 127.0.0.1 needs
/// `--tls-server-name`.
const SERVER_NAME: &str = "collector.periscope.test";

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
    for g in collector.seen.got() {
        assert_eq!(g.authorization.as_deref(), Some("Bearer s3cret"));
        assert_eq!(g.tenant.as_deref(), Some("acme"));
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
