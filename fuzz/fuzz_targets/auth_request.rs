//! The credentials of a request as a hostile client sends them: any
//! `Authorization` (Bearer, Basic with any base64), any `X-Scope-OrgID` and
//! any `Cookie` (a session cookie with any payload and signature, or a
//! real one with bytes changed) go through the gate for every scope: an
//! answer, never a panic, and a tampered session is never admitted.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use periscope_auth::tokens::file_block;
use periscope_auth::{AuthTable, Gate, Peer, Scope, Watched};
use periscope_query::Sessions;

struct Harness {
    gate: Arc<Gate>,
    sessions: Arc<Sessions>,
    session: periscope_query::Session,
    cookie: String,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let auth = dir.path().join("auth.toml");
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        std::fs::write(
            &auth,
            [
                file_block("one", "pscp_one", &s(&["shop"]), &[Scope::Read, Scope::Write]),
                file_block("many", "pscp_many", &s(&["a", "b"]), &[Scope::Read]),
                file_block("all", "pscp_all", &s(&["*"]), &[Scope::Admin, Scope::Read]),
            ]
            .join("\n"),
        )
        .expect("auth file");
        let table = Watched::open("auth", vec![auth], |b| {
            AuthTable::parse(std::str::from_utf8(&b[0]).map_err(|e| e.to_string())?, &|_| true)
        })
        .expect("auth file loads");
        let gate = Gate::new(Some(table));
        let sessions = Arc::new(
            Sessions::open(dir.path(), Duration::from_secs(3600), false).expect("sessions open"),
        );
        gate.set_sessions(sessions.clone());
        let session = sessions.start(periscope_auth::tokens::token_sha256("pscp_many"), "a".into(), now());
        let cookie = sessions.encode(&session);
        Harness {
            gate,
            sessions,
            session,
            cookie,
            _dir: dir,
        }
    })
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let mut parts = data.split(|b| *b == 0xff);
    let mut headers = HeaderMap::new();
    for name in [
        header::AUTHORIZATION,
        header::HeaderName::from_static("x-scope-orgid"),
        header::COOKIE,
    ] {
        if let Some(v) = parts.next().and_then(|p| HeaderValue::from_bytes(p).ok()) {
            headers.insert(name, v);
        }
    }
    let peer = Peer::default();
    for scope in [Scope::Read, Scope::Write, Scope::Admin] {
        let _ = h.gate.check(&headers, Some(&peer), scope);
    }
    // A real session cookie with the input written over part of it.
    if let Some(p) = parts.next().filter(|p| !p.is_empty()) {
        let mut c = h.cookie.clone().into_bytes();
        let at = usize::from(p[0]) % c.len();
        for (i, b) in p[1..].iter().enumerate() {
            if let Some(x) = c.get_mut(at + i) {
                *x = *b;
            }
        }
        if c != h.cookie.as_bytes() {
            if let Ok(text) = std::str::from_utf8(&c) {
                // Another encoding of the same session may decode; other
                // content never does.
                if let Some(s) = h.sessions.decode(text, now()) {
                    assert_eq!(s, h.session, "a tampered session cookie decoded: {text}");
                }
            }
        }
    }
});
