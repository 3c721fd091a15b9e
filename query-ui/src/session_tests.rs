//! Tests of UI sessions: cookies, expiry, tampering, revocation, sign-out
//! and the key across restarts; then the sign-in routes end to end in
//! process, through the gate.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use periscope_auth::tokens::{file_block, token_sha256};
use periscope_auth::{AuthTable, Gate, Refusal, Scope, Watched};
use tower::ServiceExt;

use super::*;

const SHOP: &str = "pscp_shop";
const MULTI: &str = "pscp_multi";
const EVERY: &str = "pscp_every";
const WRITER: &str = "pscp_writer";

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn auth_text(with_shop: bool) -> String {
    let mut blocks = vec![
        file_block("multi", MULTI, &s(&["a", "b"]), &[Scope::Read]),
        file_block("every", EVERY, &s(&["*"]), &[Scope::Read, Scope::Admin]),
        file_block("writer", WRITER, &s(&["shop"]), &[Scope::Write]),
    ];
    if with_shop {
        blocks.push(file_block(
            "shop-apps",
            SHOP,
            &s(&["shop"]),
            &[Scope::Write, Scope::Read],
        ));
    }
    blocks.join("\n")
}

fn table(with_shop: bool) -> AuthTable {
    AuthTable::parse(&auth_text(with_shop), &|_| true).unwrap()
}

fn open(dir: &Path) -> Sessions {
    Sessions::open(dir, Duration::from_secs(3600), false).unwrap()
}

fn cookie(v: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::COOKIE,
        HeaderValue::from_str(&format!("theme=dark; {COOKIE}={v}; other=1")).unwrap(),
    );
    h
}

#[test]
fn a_cookie_names_its_session_until_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let x = open(dir.path());
    let now = 1_000_000;
    let sess = x.start(token_sha256(SHOP), "shop".into(), now);
    assert_eq!(sess.expires, now + 3600);
    let v = x.encode(&sess);
    assert!(!v.contains(SHOP), "the cookie never holds the token");
    assert_eq!(x.decode(&v, now), Some(sess.clone()));
    assert_eq!(x.decode(&v, now + 3599), Some(sess.clone()));
    assert_eq!(x.decode(&v, now + 3600), None, "expired");
    assert_eq!(x.from_headers(&cookie(&v), now), Some(Ok(sess.clone())));
    assert_eq!(x.from_headers(&HeaderMap::new(), now), None);
    assert_eq!(x.from_headers(&cookie("garbage"), now), Some(Err(())));
    // Two ids never repeat.
    assert_ne!(x.start(token_sha256(SHOP), "shop".into(), now).id, sess.id);
}

#[test]
fn tampered_or_foreign_cookies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let x = open(dir.path());
    let now = 1_000_000;
    let sess = x.start(token_sha256(SHOP), "shop".into(), now);
    let v = x.encode(&sess);
    let (body, mac) = v.split_once('.').unwrap();
    // The same payload with another tenant or a later expiry, signed by
    // nobody.
    let forged = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut p: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
        f(&mut p);
        format!(
            "{}.{mac}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&p).unwrap())
        )
    };
    let other_key = tempfile::tempdir().unwrap();
    let rows: Vec<(&str, String)> = vec![
        ("another tenant", forged(&|p| p["tenant"] = "other".into())),
        (
            "a later expiry",
            forged(&|p| p["exp"] = (now + 1_000_000).into()),
        ),
        ("no MAC", body.to_owned()),
        ("an empty MAC", format!("{body}.")),
        (
            "a truncated MAC",
            format!("{body}.{}", &mac[..mac.len() - 2]),
        ),
        ("a flipped byte", {
            let mut b = body.as_bytes().to_vec();
            b[5] = if b[5] == b'A' { b'B' } else { b'A' };
            format!("{}.{mac}", String::from_utf8(b).unwrap())
        }),
        ("another key", open(other_key.path()).encode(&sess)),
        ("too long", format!("{}.{mac}", "A".repeat(2000))),
        ("empty", String::new()),
    ];
    for (what, v) in rows {
        assert_eq!(x.decode(&v, now), None, "{what}");
    }
    assert!(x.decode(&v, now).is_some());
}

#[test]
fn a_session_only_reads_and_stops_with_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let x = open(dir.path());
    let now = now_secs();
    let shop = x.start(token_sha256(SHOP), "shop".into(), now);
    let a = x.admit(&shop, &table(true)).unwrap();
    assert_eq!(&*a.grant.name, "shop-apps");
    assert_eq!(a.tenant.as_deref(), Some("shop"));
    assert_eq!(
        a.grant.scopes,
        vec![Scope::Read],
        "never write, whatever the token may"
    );
    // The token removed from the file: refused at once.
    assert!(x.admit(&shop, &table(false)).is_none());
    // A tenant the token does not (or no longer) reach; a token that may
    // not read.
    let elsewhere = Session {
        tenant: "c".into(),
        ..x.start(token_sha256(MULTI), "c".into(), now)
    };
    assert!(x.admit(&elsewhere, &table(true)).is_none());
    assert!(
        x.admit(
            &x.start(token_sha256(WRITER), "shop".into(), now),
            &table(true)
        )
        .is_none()
    );
    assert!(
        x.admit(
            &x.start(token_sha256(EVERY), "any".into(), now),
            &table(true)
        )
        .is_some()
    );
    // Through the trait the gate calls.
    let h = cookie(&x.encode(&shop));
    assert!(matches!(x.lookup(&h, &table(true)), Some(Ok(_))));
    assert!(matches!(x.lookup(&h, &table(false)), Some(Err(()))));
    assert!(x.lookup(&HeaderMap::new(), &table(true)).is_none());
}

#[test]
fn the_key_and_sign_outs_outlive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_secs();
    let (kept, ended) = {
        let x = open(dir.path());
        let kept = x.start(token_sha256(SHOP), "shop".into(), now);
        let ended = x.start(token_sha256(SHOP), "shop".into(), now);
        x.end(&ended, now).unwrap();
        assert!(x.decode(&x.encode(&ended), now).is_none(), "ended at once");
        (x.encode(&kept), x.encode(&ended))
    };
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join(KEY_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let x = open(dir.path());
    assert!(
        x.decode(&kept, now).is_some(),
        "the same key after a restart"
    );
    assert!(x.decode(&ended, now).is_none(), "still signed out");
    // Expired sign-outs are dropped from the file on open.
    let old = Session {
        expires: now - 10,
        ..x.start(token_sha256(SHOP), "shop".into(), now)
    };
    x.end(&old, now).unwrap();
    drop(x);
    let text = std::fs::read_to_string(dir.path().join(ENDED_FILE)).unwrap();
    assert_eq!(text.lines().count(), 2);
    let _ = open(dir.path());
    let text = std::fs::read_to_string(dir.path().join(ENDED_FILE)).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    // A key file that is not a key stops the start.
    std::fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
    let e = Sessions::open(dir.path(), Duration::from_secs(60), false).unwrap_err();
    assert!(e.to_string().contains("expected 32 bytes"), "{e}");
}

#[test]
fn cookies_are_http_only_strict_and_secure_under_tls() {
    let dir = tempfile::tempdir().unwrap();
    let now = 1_000_000;
    for secure in [false, true] {
        let x = Sessions::open(dir.path(), Duration::from_secs(7200), secure).unwrap();
        let sess = x.start(token_sha256(SHOP), "shop".into(), now);
        let c = x.set_cookie(&sess, now + 200);
        let c = c.to_str().unwrap();
        assert!(
            c.starts_with(&format!("{COOKIE}={}; ", x.encode(&sess))),
            "{c}"
        );
        for attr in ["Path=/", "Max-Age=7000", "HttpOnly", "SameSite=Strict"] {
            assert!(c.split("; ").any(|a| a == attr), "{attr} in {c}");
        }
        assert_eq!(c.ends_with("; Secure"), secure, "{c}");
        let gone = x.clear_cookie();
        assert!(gone.to_str().unwrap().contains("Max-Age=0"));
    }
}

// ----- the routes, through the gate -----

struct App {
    router: axum::Router,
    auth: std::path::PathBuf,
    watched: Arc<Watched<AuthTable>>,
    gate: Arc<Gate>,
    _dir: tempfile::TempDir,
}

fn app() -> App {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.toml");
    std::fs::write(&auth, auth_text(true)).unwrap();
    let watched = Watched::open("auth", vec![auth.clone()], |b| {
        AuthTable::parse(std::str::from_utf8(&b[0]).unwrap(), &|_| true)
    })
    .unwrap();
    let gate = Gate::new(Some(watched.clone()));
    let sessions = Arc::new(open(dir.path()));
    gate.set_sessions(sessions.clone());
    let st = crate::SignIn {
        gate: gate.clone(),
        sessions: Some(sessions),
        listener: "http",
    };
    let router = crate::session_router(st.clone())
        .route("/api/v1/write", axum::routing::post(|| async { "written" }))
        .layer(axum::middleware::from_fn_with_state(st, crate::csrf_guard));
    App {
        router,
        auth,
        watched,
        gate,
        _dir: dir,
    }
}

async fn call(
    app: &App,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, HeaderMap, serde_json::Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1:8080");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .router
        .clone()
        .oneshot(req.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (parts.status, parts.headers, json)
}

const UI: (&str, &str) = ("x-periscope-request", "1");

/// The `name=value` part of a response's cookie.
fn jar(h: &HeaderMap) -> String {
    let c = h.get(header::SET_COOKIE).unwrap().to_str().unwrap();
    c.split("; ").next().unwrap().to_owned()
}

#[tokio::test]
async fn sign_in_switch_and_sign_out() {
    let app = app();
    let (st, _, j) = call(&app, "GET", "/api/v1/auth", &[], "").await;
    assert_eq!((st, j["enabled"].as_bool()), (StatusCode::OK, Some(true)));
    let (st, _, _) = call(&app, "GET", "/api/v1/session", &[], "").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // Wrong token, or a token that may not read: refused by the gate.
    let (st, _, j) = call(
        &app,
        "POST",
        "/api/v1/session",
        &[UI],
        r#"{"token":"pscp_no"}"#,
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{j}");
    let body = format!(r#"{{"token":"{WRITER}"}}"#);
    let (st, _, _) = call(&app, "POST", "/api/v1/session", &[UI], &body).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // A token of every tenant needs one named.
    let body = format!(r#"{{"token":"{EVERY}"}}"#);
    let (st, _, j) = call(&app, "POST", "/api/v1/session", &[UI], &body).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(
        j["error"].as_str().unwrap().contains("enter the tenant"),
        "{j}"
    );
    let body = format!(r#"{{"token":" {EVERY} ","tenant":"lab"}}"#);
    let (st, _, j) = call(&app, "POST", "/api/v1/session", &[UI], &body).await;
    assert_eq!(st, StatusCode::OK, "{j}");
    assert_eq!(
        (j["tenant"].as_str(), j["tenants"].as_str()),
        (Some("lab"), Some("*"))
    );
    // Several tenants: the first unless one is named.
    let body = format!(r#"{{"token":"{MULTI}"}}"#);
    let (st, h, j) = call(&app, "POST", "/api/v1/session", &[UI], &body).await;
    assert_eq!(st, StatusCode::OK, "{j}");
    assert_eq!(j["tenant"], "a");
    assert_eq!(j["tenants"], serde_json::json!(["a", "b"]));
    assert_eq!(j["scopes"], serde_json::json!(["read"]));
    assert_eq!(j["name"], "multi");
    let c = jar(&h);
    let (st, _, j) = call(&app, "GET", "/api/v1/session", &[("cookie", &c)], "").await;
    assert_eq!((st, j["tenant"].as_str()), (StatusCode::OK, Some("a")));
    // Switching: to a tenant of the token, not beyond.
    let (st, h, j) = call(
        &app,
        "PUT",
        "/api/v1/session",
        &[UI, ("cookie", &c)],
        r#"{"tenant":"b"}"#,
    )
    .await;
    assert_eq!(
        (st, j["tenant"].as_str()),
        (StatusCode::OK, Some("b")),
        "{j}"
    );
    let b = jar(&h);
    let (st, _, j) = call(
        &app,
        "PUT",
        "/api/v1/session",
        &[UI, ("cookie", &b)],
        r#"{"tenant":"c"}"#,
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{j}");
    // The gate reads the session's tenant.
    let mut hm = HeaderMap::new();
    hm.insert(header::COOKIE, HeaderValue::from_str(&b).unwrap());
    let a = app.gate.check(&hm, None, Scope::Read).unwrap().unwrap();
    assert_eq!(a.tenant.as_deref(), Some("b"));
    assert!(matches!(
        app.gate.check(&hm, None, Scope::Write),
        Err(Refusal::Scope { .. })
    ));
    // Signing out ends the session and every copy of its cookie, the one
    // from before the switch included.
    let (st, h, _) = call(&app, "DELETE", "/api/v1/session", &[UI, ("cookie", &b)], "").await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert!(
        h.get(header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    for old in [&b, &c] {
        let (st, h, _) = call(&app, "GET", "/api/v1/session", &[("cookie", old)], "").await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        assert!(
            h.get(header::SET_COOKIE).is_some(),
            "the browser is told to drop it"
        );
        assert!(matches!(
            app.gate.check(&hm, None, Scope::Read),
            Err(Refusal::Invalid)
        ));
    }
}

#[tokio::test]
async fn a_revoked_token_ends_its_sessions_at_once() {
    let app = app();
    let body = format!(r#"{{"token":"{SHOP}"}}"#);
    let (st, h, j) = call(&app, "POST", "/api/v1/session", &[UI], &body).await;
    assert_eq!((st, j["tenant"].as_str()), (StatusCode::OK, Some("shop")));
    let c = jar(&h);
    let (st, _, _) = call(&app, "GET", "/api/v1/session", &[("cookie", &c)], "").await;
    assert_eq!(st, StatusCode::OK);
    std::fs::write(&app.auth, auth_text(false)).unwrap();
    assert!(app.watched.check(true));
    let (st, _, _) = call(&app, "GET", "/api/v1/session", &[("cookie", &c)], "").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let mut hm = HeaderMap::new();
    hm.insert(header::COOKIE, HeaderValue::from_str(&c).unwrap());
    assert!(matches!(
        app.gate.check(&hm, None, Scope::Read),
        Err(Refusal::Invalid)
    ));
}

#[tokio::test]
async fn cross_site_requests_are_refused() {
    let app = app();
    let body = format!(r#"{{"token":"{SHOP}"}}"#);
    // Sign-in itself: without the UI's header, or from another origin.
    let (st, _, j) = call(&app, "POST", "/api/v1/session", &[], &body).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(
        j["error"].as_str().unwrap().contains("X-Periscope-Request"),
        "{j}"
    );
    let evil = ("origin", "https://evil.example");
    let (st, _, _) = call(&app, "POST", "/api/v1/session", &[UI, evil], &body).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, h, _) = call(
        &app,
        "POST",
        "/api/v1/session",
        &[UI, ("origin", "http://127.0.0.1:8080")],
        &body,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let c = jar(&h);
    // Any other state-changing request made with the cookie; not one made
    // with a token, nor a read.
    let (st, _, _) = call(&app, "POST", "/api/v1/write", &[("cookie", &c)], "").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, _) = call(
        &app,
        "DELETE",
        "/api/v1/session",
        &[("cookie", &c), evil],
        "",
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, _) = call(
        &app,
        "POST",
        "/api/v1/write",
        &[("cookie", &c), ("authorization", "Bearer x")],
        "",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, _) = call(&app, "POST", "/api/v1/write", &[], "").await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, _) = call(&app, "GET", "/api/v1/session", &[("cookie", &c), evil], "").await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, _) = call(&app, "DELETE", "/api/v1/session", &[("cookie", &c), UI], "").await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn without_an_auth_file_there_is_no_sign_in() {
    let gate = Gate::new(None);
    let st = crate::SignIn {
        gate,
        sessions: None,
        listener: "http",
    };
    let app = App {
        router: crate::session_router(st.clone())
            .route("/x", axum::routing::post(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(st, crate::csrf_guard)),
        auth: Default::default(),
        watched: Watched::open("auth", vec![], |_| Ok(AuthTable::default())).unwrap(),
        gate: Gate::new(None),
        _dir: tempfile::tempdir().unwrap(),
    };
    let (st, _, j) = call(&app, "GET", "/api/v1/auth", &[], "").await;
    assert_eq!((st, j["enabled"].as_bool()), (StatusCode::OK, Some(false)));
    let (st, _, _) = call(&app, "POST", "/api/v1/session", &[UI], r#"{"token":"x"}"#).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // A stale cookie changes nothing.
    let (st, _, _) = call(
        &app,
        "POST",
        "/x",
        &[("cookie", "periscope_session=old")],
        "",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
}
