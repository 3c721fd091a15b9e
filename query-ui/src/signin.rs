//! The web UI's sign-in, on the query listener beside the APIs.
//!
//! - `GET /api/v1/auth` (open): `{"enabled": bool}`, whether the UI must
//!   sign in (the collector has an auth file).
//! - `POST /api/v1/session` `{"token", "tenant"?}`: checks the token with
//!   the gate (so a wrong one is logged, counted and slowed like any other
//!   refusal) and sets the session cookie (see [`crate::session`]).
//! - `GET /api/v1/session`: who is signed in; `PUT` `{"tenant"}` switches
//!   tenant; `DELETE` signs out.
//!
//! These routes check credentials themselves; the gate's route layer does
//! not cover them. [`csrf_guard`] refuses cross-site requests that would
//! change something: the cookie is `SameSite=Strict`, and on top of that a
//! state-changing request made with the cookie (and every one to
//! `/api/v1/session`) must carry `X-Periscope-Request: 1`, which a form of
//! another site cannot send and a script of another origin cannot send
//! without a CORS preflight this listener never grants, and, when the
//! browser says where it comes from (`Origin`, `Sec-Fetch-Site`), come
//! from this origin.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use periscope_auth::gate::{TENANT_HEADER, http_refusal};
use periscope_auth::tokens::token_sha256;
use periscope_auth::{Admitted, Gate, Peer, Refusal, Scope, Tenants};
use serde::Deserialize;
use serde_json::json;

use crate::session::{Session, Sessions, has_cookie, now_secs};

/// The header the UI sends with every request; see [`csrf_guard`].
pub const REQUEST_HEADER: &str = "x-periscope-request";

/// An early answer of a route (boxed: a response is large).
type Refused = Box<Response>;

/// The largest sign-in or tenant switch body.
const MAX_BODY: usize = 16 << 10;

/// The state of the sign-in routes and of [`csrf_guard`].
#[derive(Clone, Debug)]
pub struct SignIn {
    /// The gate of the listener.
    pub gate: Arc<Gate>,
    /// The sessions; `None` without an auth file.
    pub sessions: Option<Arc<Sessions>>,
    /// The listener's name, for the gate's logs and metrics.
    pub listener: &'static str,
}

/// The sign-in routes.
pub fn session_router(s: SignIn) -> Router {
    Router::new()
        .route("/api/v1/auth", get(auth_status))
        .route(
            "/api/v1/session",
            get(current).post(sign_in).put(switch).delete(sign_out),
        )
        .with_state(s)
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    let kind = match status {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        _ => "bad_data",
    };
    (
        status,
        axum::Json(json!({"status": "error", "errorType": kind, "error": msg.into()})),
    )
        .into_response()
}

async fn auth_status(State(s): State<SignIn>) -> Response {
    axum::Json(json!({"enabled": s.gate.enabled()})).into_response()
}

/// The sessions, or the answer saying sign-in is off.
fn sessions(s: &SignIn) -> Result<&Arc<Sessions>, Refused> {
    match (&s.sessions, s.gate.table()) {
        (Some(x), Some(_)) => Ok(x),
        _ => Err(Box::new(error(
            StatusCode::NOT_FOUND,
            "sign-in is off: the collector runs without --auth-file",
        ))),
    }
}

/// The answer describing a session, with its cookie.
fn signed_in(sessions: &Sessions, s: &Session, a: &Admitted, now: u64) -> Response {
    let tenants = match &a.grant.tenants {
        Tenants::Any => json!("*"),
        Tenants::Listed(l) => json!(l),
    };
    let body = json!({
        "name": &*a.grant.name,
        "tenant": s.tenant,
        "tenants": tenants,
        "scopes": a.grant.scopes.iter().map(|x| x.as_str()).collect::<Vec<_>>(),
        "expires": crate::format_rfc3339_ns(
            i64::try_from(s.expires)
                .unwrap_or(i64::MAX)
                .saturating_mul(1_000_000_000)
        ),
    });
    let mut r = axum::Json(body).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, sessions.set_cookie(s, now));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A 401 that also removes the browser's cookie.
fn signed_out(sessions: &Sessions, msg: &str) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, msg);
    r.headers_mut()
        .insert(header::SET_COOKIE, sessions.clear_cookie());
    r
}

/// The request's session and what it may do, or the 401 to answer.
fn current_session(
    sessions: &Sessions,
    gate: &Gate,
    headers: &HeaderMap,
    now: u64,
) -> Result<(Session, Admitted), Refused> {
    let s = match sessions.from_headers(headers, now) {
        None => return Err(Box::new(error(StatusCode::UNAUTHORIZED, "not signed in"))),
        Some(Err(())) => {
            return Err(Box::new(signed_out(
                sessions,
                "the session expired or was signed out: sign in again",
            )));
        }
        Some(Ok(s)) => s,
    };
    let table = gate.table().map(|t| t.get()).unwrap_or_default();
    match sessions.admit(&s, &table) {
        Some(a) => Ok((s, a)),
        None => Err(Box::new(signed_out(
            sessions,
            "the session's token is no longer valid for its tenant: sign in again",
        ))),
    }
}

async fn current(State(st): State<SignIn>, headers: HeaderMap) -> Response {
    let sessions = match sessions(&st) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let now = now_secs();
    match current_session(sessions, &st.gate, &headers, now) {
        Ok((s, a)) => signed_in(sessions, &s, &a, now),
        Err(r) => *r,
    }
}

/// Reads a small JSON body.
async fn json_body<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, Refused> {
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_BODY} bytes or was cut short"),
        ))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("invalid JSON body: {e}"),
        ))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignInBody {
    token: String,
    #[serde(default)]
    tenant: Option<String>,
}

fn valid_tenant(t: &str) -> Result<(), Refused> {
    periscope_store::TenantId::parse(t)
        .map(|_| ())
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, e.to_string())))
}

async fn sign_in(State(st): State<SignIn>, req: Request) -> Response {
    let sessions = match sessions(&st) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let peer = req.extensions().get::<Peer>().copied();
    let b: SignInBody = match json_body(req.into_body()).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let token = b.token.trim();
    let mut tenant = b
        .tenant
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    if let Some(t) = &tenant
        && let Err(r) = valid_tenant(t)
    {
        return *r;
    }
    // A token of several listed tenants signs in to its first unless the
    // form names one; a token of every tenant must be told which.
    if tenant.is_none()
        && let Some(table) = st.gate.table()
        && let Some(g) = table.get().lookup(token)
        && let Tenants::Listed(l) = &g.tenants
    {
        tenant = l.first().cloned();
    }
    // The token goes through the gate as a request's would.
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        // A token that cannot be a header value is no token of the file:
        // it is refused (and counted) as an unknown one.
        HeaderValue::from_str(&format!("Bearer {token}"))
            .unwrap_or(HeaderValue::from_static("Bearer -")),
    );
    if let Some(t) = &tenant {
        headers.insert(
            TENANT_HEADER,
            HeaderValue::from_str(t).expect("a valid tenant is a header value"),
        );
    }
    let mut ext = axum::http::Extensions::new();
    if let Some(p) = peer {
        ext.insert(p);
    }
    if let Err(r) = st
        .gate
        .admit(&mut headers, &mut ext, Scope::Read, st.listener)
        .await
    {
        return match r {
            Refusal::NoTenant { name } => error(
                StatusCode::FORBIDDEN,
                format!("token {name:?} reaches every tenant: enter the tenant to sign in to"),
            ),
            r => http_refusal(&r),
        };
    }
    let Some(a) = ext.get::<Admitted>().cloned() else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the gate admitted no credential",
        );
    };
    let Some(tenant) = a.tenant.clone() else {
        return error(StatusCode::FORBIDDEN, "no tenant to sign in to");
    };
    let now = now_secs();
    let s = sessions.start(token_sha256(token), tenant, now);
    let Some(a) = sessions.admit(&s, &st.gate.table().map(|t| t.get()).unwrap_or_default()) else {
        // The file changed between the two lookups.
        return http_refusal(&Refusal::Invalid);
    };
    tracing::info!(token = &*a.grant.name, tenant = %s.tenant, "web UI session started");
    signed_in(sessions, &s, &a, now)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchBody {
    tenant: String,
}

async fn switch(State(st): State<SignIn>, req: Request) -> Response {
    let sessions = match sessions(&st) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (parts, body) = req.into_parts();
    let now = now_secs();
    let (mut s, _) = match current_session(sessions, &st.gate, &parts.headers, now) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let b: SwitchBody = match json_body(body).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let tenant = b.tenant.trim().to_owned();
    if let Err(r) = valid_tenant(&tenant) {
        return *r;
    }
    // The gate decides, with the session's credential and the new tenant
    // in the header, so a tenant the token does not reach is refused,
    // logged and counted like any other request's.
    let mut headers = parts.headers.clone();
    headers.remove(header::AUTHORIZATION);
    headers.insert(
        TENANT_HEADER,
        HeaderValue::from_str(&tenant).expect("a valid tenant is a header value"),
    );
    let mut ext = parts.extensions;
    if let Err(r) = st
        .gate
        .admit(&mut headers, &mut ext, Scope::Read, st.listener)
        .await
    {
        return http_refusal(&r);
    }
    s.tenant = tenant;
    match sessions.admit(&s, &st.gate.table().map(|t| t.get()).unwrap_or_default()) {
        Some(a) => signed_in(sessions, &s, &a, now),
        None => http_refusal(&Refusal::Invalid),
    }
}

async fn sign_out(State(st): State<SignIn>, headers: HeaderMap) -> Response {
    let sessions = match sessions(&st) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let now = now_secs();
    if let Some(Ok(s)) = sessions.from_headers(&headers, now) {
        let x = sessions.clone();
        let ended = tokio::task::spawn_blocking(move || x.end(&s, now)).await;
        match ended {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "failed to record a web UI sign-out");
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the sign-out could not be recorded: {e}"),
                );
            }
            Err(e) => {
                return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
            }
        }
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, sessions.clear_cookie());
    r
}

/// Axum middleware on the query listener: refuses cross-site requests
/// that would change something. Applies, with an auth file, to every
/// request to `/api/v1/session` but `GET`, and to any other request but
/// `GET`, `HEAD` and `OPTIONS` that carries a session cookie and no
/// `Authorization` header (with one, the gate reads that, not the cookie).
pub async fn csrf_guard(State(st): State<SignIn>, req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !st.gate.enabled() || safe {
        return next.run(req).await;
    }
    let h = req.headers();
    let by_cookie = has_cookie(h) && !h.contains_key(header::AUTHORIZATION);
    if req.uri().path() != "/api/v1/session" && !by_cookie {
        return next.run(req).await;
    }
    match same_origin(h, req.uri()) {
        Ok(()) => next.run(req).await,
        Err(why) => {
            let mut r = error(
                StatusCode::FORBIDDEN,
                format!("cross-site request refused: {why}"),
            );
            periscope_auth::gate::close_if_body_unread(h, &mut r);
            r
        }
    }
}

/// Whether a request shows it comes from a page of this origin.
fn same_origin(h: &HeaderMap, uri: &axum::http::Uri) -> Result<(), String> {
    if h.get(REQUEST_HEADER).is_none_or(|v| v != "1") {
        return Err("send the header X-Periscope-Request: 1 (the web UI does)".into());
    }
    if let Some(site) = h.get("sec-fetch-site")
        && site != "same-origin"
        && site != "none"
    {
        return Err(format!(
            "the browser says it comes from another site (Sec-Fetch-Site: {})",
            String::from_utf8_lossy(site.as_bytes())
        ));
    }
    let Some(origin) = h.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    let authority = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, a)| a);
    match (authority, host) {
        (Some(a), Some(host)) if a.eq_ignore_ascii_case(host) => Ok(()),
        _ => Err(format!(
            "Origin {} is not this collector's ({})",
            String::from_utf8_lossy(origin.as_bytes()),
            host.unwrap_or("no Host header")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn only_same_origin_requests_with_the_ui_header_pass() {
        let uri: axum::http::Uri = "/api/v1/session".parse().unwrap();
        let ok = |pairs: &[(&str, &str)]| same_origin(&headers(pairs), &uri).is_ok();
        let host = ("host", "127.0.0.1:8080");
        let ui = ("x-periscope-request", "1");
        let rows: &[(&[(&str, &str)], bool)] = &[
            (&[host, ui], true),
            (&[host, ui, ("origin", "http://127.0.0.1:8080")], true),
            (&[host, ui, ("origin", "https://127.0.0.1:8080")], true),
            (&[host, ui, ("sec-fetch-site", "same-origin")], true),
            (&[host], false),
            (&[host, ("x-periscope-request", "0")], false),
            (&[host, ui, ("origin", "http://evil.example")], false),
            (&[host, ui, ("origin", "http://127.0.0.1:8081")], false),
            (&[host, ui, ("origin", "null")], false),
            (&[host, ui, ("sec-fetch-site", "cross-site")], false),
            (&[host, ui, ("sec-fetch-site", "same-site")], false),
            (&[ui, ("origin", "http://127.0.0.1:8080")], false),
        ];
        for (pairs, want) in rows {
            assert_eq!(ok(pairs), *want, "{pairs:?}");
        }
    }
}
