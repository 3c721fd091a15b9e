//! The configuration's tests: merging, defaults, and every kind of
//! invalid value, one line each.

use super::*;
use std::io::Write;

fn cli(args: &[&str]) -> Cli {
    let mut v = vec!["periscope-agent"];
    v.extend_from_slice(args);
    Cli::try_parse_from(v).unwrap()
}

#[test]
fn defaults() {
    let c = cli(&["--node-name", "n1"]).resolve().unwrap();
    assert_eq!(c.endpoint, "http://127.0.0.1:4317");
    assert_eq!(c.include[0].as_str(), "/var/log/pods/*/*/*.log*");
    assert_eq!(c.exclude.len(), 2);
    assert_eq!(c.read_from, ReadFrom::End);
    assert_eq!(c.spool_max_bytes, 1 << 30);
    assert_eq!(c.max_line_bytes, 1 << 20);
    assert_eq!(c.metrics_interval, Some(Duration::from_secs(15)));
    assert!(c.otlp_grpc_addr.is_none());
}

#[test]
fn relay_limits_have_defaults_and_refuse_zero() {
    let c = cli(&["--node-name", "n1"]).resolve().unwrap();
    assert_eq!(c.relay.max_inflight_bytes, 64 << 20);
    assert_eq!(c.relay.max_recv_msg_size, 4 << 20);
    assert_eq!(c.relay.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.relay.body_read_timeout, Duration::from_secs(30));
    assert_eq!(c.relay.max_connections, 1024);
    assert_eq!(c.relay.grpc_max_concurrent_streams, 100);
    let c = cli(&[
        "--node-name",
        "n1",
        "--relay-max-inflight-bytes",
        "1MiB",
        "--relay-body-read-timeout",
        "2s",
    ])
    .resolve()
    .unwrap();
    assert_eq!(c.relay.max_inflight_bytes, 1 << 20);
    assert_eq!(c.relay.body_read_timeout, Duration::from_secs(2));
    for (args, want) in [
        (
            ["--relay-max-inflight-bytes", "0"],
            "relay_max_inflight_bytes",
        ),
        (
            ["--relay-max-recv-msg-size", "0"],
            "relay_max_recv_msg_size",
        ),
        (
            ["--relay-header-read-timeout", "0s"],
            "relay_header_read_timeout",
        ),
        (
            ["--relay-body-read-timeout", "0s"],
            "relay_body_read_timeout",
        ),
        (["--relay-max-connections", "0"], "relay_max_connections"),
        (
            ["--relay-grpc-max-concurrent-streams", "0"],
            "relay_grpc_max_concurrent_streams",
        ),
    ] {
        let mut v = vec!["--node-name", "n1"];
        v.extend_from_slice(&args);
        let e = cli(&v).resolve().unwrap_err();
        assert!(e.0.contains(want), "{want}: {}", e.0);
    }
}

#[test]
fn flag_beats_file_and_unknown_key_fails() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "endpoint = \"http://10.0.0.1:4317\"\nread_from = \"beginning\"\ninclude = [\"/a/*.log\"]"
    )
    .unwrap();
    let p = f.path().to_str().unwrap();
    let c = cli(&["--config", p, "--endpoint", "http://127.0.0.2:1"])
        .resolve()
        .unwrap();
    assert_eq!(c.endpoint, "http://127.0.0.2:1");
    assert_eq!(c.read_from, ReadFrom::Beginning);
    assert_eq!(c.include[0].as_str(), "/a/*.log");

    let mut g = tempfile::NamedTempFile::new().unwrap();
    writeln!(g, "endpont = \"x\"").unwrap();
    let e = cli(&["--config", g.path().to_str().unwrap()])
        .resolve()
        .unwrap_err();
    assert!(e.0.contains("unknown field"), "{e}");
    assert!(!e.0.contains('\n'));
}

#[test]
fn invalid_values() {
    for args in [
        &["--read-from", "middle"][..],
        &["--endpoint", "ftp://x"],
        &["--spool-max-bytes", "12XB"],
        &["--metrics-interval", "5 parsecs"],
        &["--multiline-start", "("],
        &["--http-addr", "nope"],
        &["--include", "[a"],
        &["--k8s-api-url", "ftp://10.0.0.1"],
        &["--k8s-api-url", "10.0.0.1:443"],
        &["--k8s-deleted-pod-grace", "5 minutes"],
    ] {
        // Refused while parsing (a value of the wrong kind) or resolving.
        let parsed = Cli::try_parse_from(["periscope-agent"].iter().chain(args));
        assert!(
            parsed.map(|c| c.resolve().is_err()).unwrap_or(true),
            "{args:?}"
        );
    }
}

#[test]
fn k8s_api_enrichment() {
    let off = cli(&["--node-name", "n"]).resolve().unwrap();
    assert!(off.k8s_api.is_none());

    let on = cli(&["--node-name", "n", "--k8s-api-enrichment", "true"])
        .resolve()
        .unwrap();
    let k = on.k8s_api.unwrap();
    assert_eq!(k.api.url, None, "in-cluster, from the environment at start");
    assert_eq!(
        k.api.token_file.as_deref(),
        Some(std::path::Path::new(crate::k8s::IN_CLUSTER_TOKEN))
    );
    assert_eq!(
        k.api.ca_file.as_deref(),
        Some(std::path::Path::new(crate::k8s::IN_CLUSTER_CA))
    );
    assert_eq!(k.deleted_pod_grace, Duration::from_secs(300));

    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "k8s_api_enrichment = true\nk8s_api_url = \"http://127.0.0.1:8001\"\nk8s_token_file = \"\"\nk8s_ca_file = \"/etc/ca.pem\"\nk8s_deleted_pod_grace = \"90s\""
    )
    .unwrap();
    let c = cli(&[
        "--config",
        f.path().to_str().unwrap(),
        "--k8s-deleted-pod-grace",
        "2m",
    ])
    .resolve()
    .unwrap();
    let k = c.k8s_api.unwrap();
    assert_eq!(k.api.url.as_deref(), Some("http://127.0.0.1:8001"));
    assert_eq!(k.api.token_file, None, "empty: no token");
    assert_eq!(
        k.api.ca_file.as_deref(),
        Some(std::path::Path::new("/etc/ca.pem"))
    );
    assert_eq!(
        k.deleted_pod_grace,
        Duration::from_secs(120),
        "flag over file"
    );
}

#[test]
fn tls_options() {
    let none = cli(&["--node-name", "n"]).resolve().unwrap();
    assert!(!none.tls.is_set());

    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["agent".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ca, crt, k) = (
        dir.path().join("ca.pem"),
        dir.path().join("client.pem"),
        dir.path().join("client.key"),
    );
    std::fs::write(&ca, cert.pem()).unwrap();
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "endpoint = \"https://10.0.0.1:4317\"\ntls_ca_file = {:?}\ntls_server_name = \"from-file\"\ntls_client_cert_file = {:?}\ntls_client_key_file = {:?}",
        ca.to_str().unwrap(),
        crt.to_str().unwrap(),
        k.to_str().unwrap()
    )
    .unwrap();
    let file = f.path().to_str().unwrap();
    let c = cli(&["--config", file, "--tls-server-name", "collector.svc"])
        .resolve()
        .unwrap();
    assert_eq!(c.tls.ca_pem.as_deref(), Some(cert.pem().as_bytes()));
    assert_eq!(
        c.tls.server_name.as_deref(),
        Some("collector.svc"),
        "flag over file"
    );
    let (c_pem, k_pem) = c.tls.client_identity.as_ref().unwrap();
    assert_eq!(c_pem, cert.pem().as_bytes());
    assert_eq!(k_pem, key.serialize_pem().as_bytes());
    assert!(
        !format!("{c:?}").contains("PRIVATE KEY"),
        "the key stays out of debug output"
    );

    // An empty flag unsets a file's value; a lone half of the pair fails.
    let c = cli(&[
        "--config",
        file,
        "--tls-ca-file",
        "",
        "--tls-server-name",
        "",
    ])
    .resolve()
    .unwrap();
    assert!(c.tls.ca_pem.is_none() && c.tls.server_name.is_none());
    let e = cli(&["--config", file, "--tls-client-key-file", ""])
        .resolve()
        .unwrap_err();
    assert!(e.0.contains("set both or neither"), "{e}");
    let e = cli(&["--config", file, "--endpoint", "http://10.0.0.1:4317"])
        .resolve()
        .unwrap_err();
    assert!(e.0.contains("not https"), "{e}");
    let e = cli(&[
        "--endpoint",
        "https://h:1",
        "--tls-ca-file",
        k.to_str().unwrap(),
    ])
    .resolve()
    .unwrap_err();
    assert!(
        e.0.contains("client.key") && e.0.contains("tls_ca_file"),
        "{e}"
    );
}

#[test]
fn relay_security_files_are_loaded_and_checked() {
    let none = cli(&["--node-name", "n"]).resolve().unwrap();
    assert!(none.relay_security.auth.is_none() && none.relay_security.tls.is_none());

    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["relay".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let other_key = rcgen::KeyPair::generate().unwrap();
    let block = periscope_auth::tokens::file_block(
        "apps",
        "pscp_apps",
        &["shop".to_owned()],
        &[periscope_auth::Scope::Write],
    );
    for (name, text) in [
        ("auth.toml", block.clone()),
        ("bad-tenant.toml", block.replace("\"shop\"", "\"../etc\"")),
        ("bad-syntax.toml", "[[token]\nname = \n".to_owned()),
        ("tls.crt", cert.pem()),
        ("tls.key", key.serialize_pem()),
        ("other.key", other_key.serialize_pem()),
        ("ca.crt", cert.pem()),
        ("garbage.pem", "nothing here\n".to_owned()),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "relay_auth_file = {:?}\nrelay_tls_cert_file = {:?}\nrelay_tls_key_file = {:?}\nrelay_tls_client_ca_file = {:?}",
        p("auth.toml"),
        p("tls.crt"),
        p("tls.key"),
        p("ca.crt"),
    )
    .unwrap();
    let file = f.path().to_str().unwrap();
    let c = cli(&["--config", file]).resolve().unwrap();
    let auth = c.relay_security.auth.as_ref().expect("auth file loaded");
    assert_eq!(auth.get().len(), 1);
    assert!(c.relay_security.tls.is_some());
    // An empty flag unsets a file's value.
    let c = cli(&["--config", file, "--relay-auth-file", ""])
        .resolve()
        .unwrap();
    assert!(c.relay_security.auth.is_none() && c.relay_security.tls.is_some());

    let (auth, crt, k) = (p("auth.toml"), p("tls.crt"), p("tls.key"));
    let rows: Vec<(Vec<String>, &[&str])> = vec![
        (
            vec!["--relay-auth-file".into(), p("missing.toml")],
            &["relay_auth_file", "missing.toml", "cannot read"],
        ),
        (
            vec!["--relay-auth-file".into(), p("bad-tenant.toml")],
            &["relay_auth_file", "bad-tenant.toml", "invalid tenant"],
        ),
        (
            vec!["--relay-auth-file".into(), p("bad-syntax.toml")],
            &["relay_auth_file", "bad-syntax.toml"],
        ),
        (
            vec!["--relay-tls-cert-file".into(), crt.clone()],
            &["set both or neither"],
        ),
        (
            vec!["--relay-tls-key-file".into(), k.clone()],
            &["set both or neither"],
        ),
        (
            vec!["--relay-tls-client-ca-file".into(), p("ca.crt")],
            &["relay_tls_client_ca_file needs relay_tls_cert_file"],
        ),
        (
            vec![
                "--relay-tls-cert-file".into(),
                crt.clone(),
                "--relay-tls-key-file".into(),
                p("other.key"),
            ],
            &["relay TLS", "other.key", "do not make a usable certificate"],
        ),
        (
            vec![
                "--relay-tls-cert-file".into(),
                p("garbage.pem"),
                "--relay-tls-key-file".into(),
                k.clone(),
            ],
            &["relay TLS", "garbage.pem"],
        ),
        (
            vec![
                "--relay-tls-cert-file".into(),
                crt.clone(),
                "--relay-tls-key-file".into(),
                k.clone(),
                "--relay-tls-client-ca-file".into(),
                p("garbage.pem"),
            ],
            &["relay TLS", "garbage.pem"],
        ),
    ];
    for (args, want) in rows {
        let mut v = vec!["--node-name", "n"];
        v.extend(args.iter().map(String::as_str));
        let e = cli(&v).resolve().unwrap_err();
        for w in want {
            assert!(e.0.contains(w), "{args:?}: {w:?} not in {e}");
        }
        assert!(!e.0.contains('\n'), "one line: {e}");
    }
    let ok = ["--relay-auth-file", &auth, "--relay-tls-cert-file", &crt];
    let c = cli(&[&ok[..], &["--relay-tls-key-file", &k]].concat())
        .resolve()
        .unwrap();
    assert!(c.relay_security.auth.is_some() && c.relay_security.tls.is_some());
}

#[test]
fn bearer_token_file_excludes_bearer_token_and_must_hold_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "pscp_abc\n").unwrap();
    let t = token.to_str().unwrap();
    let c = cli(&["--node-name", "n", "--bearer-token-file", t])
        .resolve()
        .unwrap();
    assert_eq!(c.bearer_token_file.as_deref(), Some(token.as_path()));
    assert_eq!(c.bearer_token, None);

    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "bearer_token = \"s3cret\"").unwrap();
    let file = f.path().to_str().unwrap();
    let e = cli(&["--config", file, "--bearer-token-file", t])
        .resolve()
        .unwrap_err();
    assert!(e.0.contains("exclude each other"), "{e}");
    // An empty value unsets the other one.
    let c = cli(&[
        "--config",
        file,
        "--bearer-token-file",
        t,
        "--bearer-token",
        "",
    ])
    .resolve()
    .unwrap();
    assert!(c.bearer_token.is_none() && c.bearer_token_file.is_some());

    for (content, want) in [(&b" \n"[..], "is empty"), (b"two words", "visible ASCII")] {
        std::fs::write(&token, content).unwrap();
        let e = cli(&["--node-name", "n", "--bearer-token-file", t])
            .resolve()
            .unwrap_err();
        assert!(e.0.starts_with("bearer_token_file: "), "{e}");
        assert!(e.0.contains(want), "{e}");
    }
    let missing = dir.path().join("missing");
    let e = cli(&["--bearer-token-file", missing.to_str().unwrap()])
        .resolve()
        .unwrap_err();
    assert!(
        e.0.contains("cannot read") && e.0.contains("missing"),
        "{e}"
    );
}

#[test]
fn tenant_names() {
    for (t, ok) in [
        ("shop", true),
        ("team-a.prod_1", true),
        (&"x".repeat(150), true),
        (&"x".repeat(151), false),
        ("", false),
        (".", false),
        ("..", false),
        ("a/b", false),
        ("a b", false),
        ("café", false),
    ] {
        assert_eq!(valid_tenant(t), ok, "{t:?}");
    }
}

/// `periscope-agent ARGS`, parsed as the binary parses them, then resolved.
fn agent(args: &[&str]) -> Result<Config, String> {
    let v = ["periscope-agent", "--node-name", "n"].iter().chain(args);
    let cli = Cli::try_parse_from(v).map_err(|e| e.to_string())?;
    cli.resolve().map_err(|e| e.0)
}

/// The agent with a config file holding `text`.
fn agent_file(text: &str) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).unwrap();
    agent(&["--config", path.to_str().unwrap()])
}

/// The grammar's table, through a flag and the file: the collector's tests
/// check the same table, so both binaries take the same strings.
#[test]
fn sizes_and_durations_follow_the_shared_grammar() {
    use periscope_settings::examples::{DURATIONS, SIZES};
    // `spool_max_bytes` and `metrics_interval` take 0, so the grammar alone
    // decides.
    for &(s, want) in SIZES {
        let flag = agent(&["--spool-max-bytes", s]).map(|c| c.spool_max_bytes);
        assert_eq!(flag.as_ref().ok(), want.as_ref(), "flag {s:?}: {flag:?}");
        let file = agent_file(&format!("spool_max_bytes = {s:?}")).map(|c| c.spool_max_bytes);
        assert_eq!(file.as_ref().ok(), want.as_ref(), "file {s:?}: {file:?}");
    }
    for &(s, want) in DURATIONS {
        let want = want.map(|ms| (ms != 0).then(|| Duration::from_millis(ms)));
        let flag = agent(&["--metrics-interval", s]).map(|c| c.metrics_interval);
        assert_eq!(flag.as_ref().ok(), want.as_ref(), "flag {s:?}: {flag:?}");
        let file = agent_file(&format!("metrics_interval = {s:?}")).map(|c| c.metrics_interval);
        assert_eq!(file.as_ref().ok(), want.as_ref(), "file {s:?}: {file:?}");
    }
    // Integers in the file: bytes for a size, only 0 for a duration.
    assert_eq!(
        agent_file("max_line_bytes = 1024").map(|c| c.max_line_bytes),
        Ok(1024)
    );
    assert!(agent_file("batch_timeout = 200").is_err());
}

/// Each help text's "Default `X`" is what the setting is when unset:
/// passing `X` explicitly gives the same configuration.
#[test]
fn documented_defaults_are_the_defaults() {
    use clap::CommandFactory;
    let default = format!("{:?}", agent(&[]).unwrap());
    let mut checked = 0;
    for arg in Cli::command().get_arguments() {
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        let Some((_, rest)) = help.split_once("Default `") else {
            continue;
        };
        let value = rest.split('`').next().unwrap();
        let flag = format!("--{}", arg.get_long().unwrap());
        // Lists (only their first glob is quoted first) and a default
        // computed from the environment.
        if ["--include", "--exclude", "--k8s-api-url"].contains(&flag.as_str()) {
            continue;
        }
        let got = format!("{:?}", agent(&[&flag, value]).unwrap());
        assert_eq!(got, default, "{flag} {value}");
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} documented defaults");
}
