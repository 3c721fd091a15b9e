//! The check every request passes when an auth file is given: who sent it
//! (a token, HTTP Basic's password, a UI session or a verified client
//! certificate), for which tenant, with which scope.
//!
//! Admitted requests go on with `X-Scope-OrgID` set to the tenant the
//! credential was checked for, whatever the client sent, so handlers that
//! read the header get an authorized tenant. Refused ones get 401 (no or
//! unknown credential, with `WWW-Authenticate`) or 403 (a tenant or scope
//! the credential lacks); gRPC gets `UNAUTHENTICATED` / `PERMISSION_DENIED`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::sync::MutexRecover;
use crate::tls::PeerTls;
use crate::tokens::{AuthTable, Grant, Scope, Tenants};
use crate::watched::Watched;

/// The header that names a request's tenant.
pub const TENANT_HEADER: &str = "x-scope-orgid";

/// What a listener knows about a connection's client; listeners put it in
/// every request's extensions (the gRPC listener as its connect info).
#[derive(Clone, Copy, Debug, Default)]
pub struct Peer {
    /// The client's address.
    pub addr: Option<SocketAddr>,
    /// What TLS established.
    pub tls: PeerTls,
}

/// An admitted request's credential and tenant, in its extensions.
#[derive(Clone, Debug)]
pub struct Admitted {
    /// The credential's grant.
    pub grant: Grant,
    /// The tenant it was admitted for; none for administrative requests
    /// (`admin` scope) that named none.
    pub tenant: Option<String>,
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No credential.
    Missing,
    /// An `Authorization` header that is neither Bearer nor Basic.
    Malformed,
    /// A token the auth file does not list.
    Invalid,
    /// The credential lacks the scope.
    Scope { name: String, scope: Scope },
    /// The credential does not reach the tenant.
    Tenant { name: String, tenant: String },
    /// The credential reaches several tenants and the request named none.
    NoTenant { name: String },
}

impl Refusal {
    /// The label of `periscope_auth_refusals_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Malformed => "malformed",
            Refusal::Invalid => "invalid",
            Refusal::Scope { .. } => "scope",
            Refusal::Tenant { .. } => "tenant",
            Refusal::NoTenant { .. } => "no_tenant",
        }
    }

    /// Whether it is an authentication failure (401) rather than an
    /// authorization one (403).
    pub fn unauthenticated(&self) -> bool {
        matches!(
            self,
            Refusal::Missing | Refusal::Malformed | Refusal::Invalid
        )
    }

    fn name(&self) -> &str {
        match self {
            Refusal::Scope { name, .. }
            | Refusal::Tenant { name, .. }
            | Refusal::NoTenant { name } => name,
            _ => "-",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Missing => f.write_str(
                "authentication required: send a token as `Authorization: Bearer <token>` or as the password of HTTP Basic authentication",
            ),
            Refusal::Malformed => {
                f.write_str("unreadable Authorization header: expected Bearer or Basic")
            }
            Refusal::Invalid => f.write_str("invalid token"),
            Refusal::Scope { name, scope } => {
                write!(f, "token {name:?} does not have the {:?} scope", scope.as_str())
            }
            Refusal::Tenant { name, tenant } => {
                write!(f, "token {name:?} does not reach tenant {tenant:?}")
            }
            Refusal::NoTenant { name } => write!(
                f,
                "token {name:?} reaches several tenants: name one with X-Scope-OrgID (or as the Basic user name)"
            ),
        }
    }
}

/// UI sessions: a cookie standing for a token (see the query crate).
pub trait SessionLookup: Send + Sync + 'static {
    /// The grant and chosen tenant of the session the request's cookie
    /// names, when it is valid and its token is still listed in `table`.
    /// `Err` when a session cookie is present but no longer valid.
    fn lookup(&self, headers: &HeaderMap, table: &AuthTable) -> Option<Result<Admitted, ()>>;
}

/// Failures remembered per address: the window in which they count.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Failures an address may have in the window before it is slowed down.
const FREE_FAILURES: u32 = 5;
/// The longest a refusal is held back.
const MAX_DELAY: Duration = Duration::from_secs(5);
/// Addresses remembered at most.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Default)]
struct Throttle {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Throttle {
    /// Records a failure of `ip`; returns how long to hold its answer.
    fn fail(&self, ip: IpAddr) -> Duration {
        let now = Instant::now();
        let mut m = self.failures.lock_or_recover();
        if m.len() >= MAX_TRACKED && !m.contains_key(&ip) {
            m.retain(|_, (_, at)| now.duration_since(*at) < FAILURE_WINDOW);
            if m.len() >= MAX_TRACKED {
                // A flood of addresses: slow every new one.
                return MAX_DELAY;
            }
        }
        let e = m.entry(ip).or_insert((0, now));
        if now.duration_since(e.1) >= FAILURE_WINDOW {
            *e = (0, now);
        }
        e.0 += 1;
        e.1 = now;
        let over = e.0.saturating_sub(FREE_FAILURES);
        if over == 0 {
            return Duration::ZERO;
        }
        (Duration::from_millis(50) * 2u32.saturating_pow(over.min(16))).min(MAX_DELAY)
    }
}

/// The counters of `/metrics`.
#[derive(Debug, Default)]
struct Counters {
    refusals: BTreeMap<(&'static str, &'static str), u64>,
    admitted: BTreeMap<&'static str, u64>,
    slowed: u64,
}

/// Authentication and tenant authorization for a process's listeners.
pub struct Gate {
    table: Option<Arc<Watched<AuthTable>>>,
    throttle: Throttle,
    counters: Mutex<Counters>,
    sessions: OnceLock<Arc<dyn SessionLookup>>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// How credentials arrived.
enum Presented<'a> {
    None,
    Bad,
    Bearer(&'a str),
    Basic { user: String, password: String },
}

fn presented(headers: &HeaderMap) -> Presented<'_> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Presented::None;
    };
    let Ok(v) = v.to_str() else {
        return Presented::Bad;
    };
    let (kind, rest) = v.split_once(' ').unwrap_or((v, ""));
    let rest = rest.trim();
    if kind.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Presented::Bearer(rest);
    }
    if kind.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        if let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
            return Presented::Basic {
                user: user.to_owned(),
                password: password.to_owned(),
            };
        }
    }
    Presented::Bad
}

/// The tenant a request with `grant` is for: the header's, else the Basic
/// user name when it is one of the grant's tenants, else the grant's only
/// tenant.
fn tenant_for(grant: &Grant, header: Option<&str>, user: Option<&str>) -> Result<String, Refusal> {
    let name = || grant.name.to_string();
    if let Some(t) = header {
        return if grant.tenants.contains(t) {
            Ok(t.to_owned())
        } else {
            Err(Refusal::Tenant {
                name: name(),
                tenant: t.to_owned(),
            })
        };
    }
    if let Some(u) = user.filter(|u| !u.is_empty() && *u != "*" && grant.tenants.contains(u)) {
        return Ok(u.to_owned());
    }
    match &grant.tenants {
        Tenants::Listed(l) if l.len() == 1 => Ok(l[0].clone()),
        _ => Err(Refusal::NoTenant { name: name() }),
    }
}

/// Administrative endpoints (`/metrics`) are not per tenant: a credential
/// with several tenants need not name one.
fn tenant_optional(r: Refusal, scope: Scope) -> Result<Option<String>, Refusal> {
    match r {
        Refusal::NoTenant { .. } if scope == Scope::Admin => Ok(None),
        r => Err(r),
    }
}

impl Gate {
    /// A gate checking requests against `table`; `None` admits everything
    /// as it is (no auth file).
    pub fn new(table: Option<Arc<Watched<AuthTable>>>) -> Arc<Gate> {
        Arc::new(Gate {
            table,
            throttle: Throttle::default(),
            counters: Mutex::default(),
            sessions: OnceLock::new(),
        })
    }

    /// Whether requests are checked.
    pub fn enabled(&self) -> bool {
        self.table.is_some()
    }

    /// The watched auth file.
    pub fn table(&self) -> Option<&Arc<Watched<AuthTable>>> {
        self.table.as_ref()
    }

    /// Lets UI sessions stand for tokens.
    pub fn set_sessions(&self, s: Arc<dyn SessionLookup>) {
        let _ = self.sessions.set(s);
    }

    /// Checks a request's credentials for `scope`.
    pub fn check(
        &self,
        headers: &HeaderMap,
        peer: Option<&Peer>,
        scope: Scope,
    ) -> Result<Option<Admitted>, Refusal> {
        let Some(table) = &self.table else {
            return Ok(None);
        };
        let table = table.get();
        let header_tenant = match headers.get(TENANT_HEADER) {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| Refusal::Tenant {
                name: "-".into(),
                tenant: String::from_utf8_lossy(v.as_bytes()).into_owned(),
            })?),
        };
        let (grant, user) = match presented(headers) {
            Presented::Bad => return Err(Refusal::Malformed),
            Presented::Bearer(t) => (table.lookup(t).ok_or(Refusal::Invalid)?.clone(), None),
            Presented::Basic { user, password } => (
                table.lookup(&password).ok_or(Refusal::Invalid)?.clone(),
                Some(user),
            ),
            Presented::None => {
                if let Some(s) = self.sessions.get().and_then(|s| s.lookup(headers, &table)) {
                    let a = s.map_err(|()| Refusal::Invalid)?;
                    if !a.grant.allows(scope) {
                        return Err(Refusal::Scope {
                            name: a.grant.name.to_string(),
                            scope,
                        });
                    }
                    // A session's tenant is the one chosen at sign-in or
                    // in the UI's switcher; a header may name another of
                    // the token's tenants.
                    let tenant = tenant_for(&a.grant, header_tenant.or(a.tenant.as_deref()), None)
                        .map(Some)
                        .or_else(|r| tenant_optional(r, scope))?;
                    return Ok(Some(Admitted {
                        grant: a.grant,
                        tenant,
                    }));
                }
                match (peer, table.client_certificate()) {
                    (Some(p), Some(g)) if p.tls.client_cert => (g.clone(), None),
                    _ => return Err(Refusal::Missing),
                }
            }
        };
        if !grant.allows(scope) {
            return Err(Refusal::Scope {
                name: grant.name.to_string(),
                scope,
            });
        }
        let tenant = tenant_for(&grant, header_tenant, user.as_deref())
            .map(Some)
            .or_else(|r| tenant_optional(r, scope))?;
        Ok(Some(Admitted { grant, tenant }))
    }

    /// [`Gate::check`], then the bookkeeping: an admitted request's tenant
    /// header is set to its tenant and its credential removed; a refusal
    /// is counted, logged (the token's name, never its value) and, after
    /// repeated failures from one address, held back.
    pub async fn admit(
        &self,
        headers: &mut HeaderMap,
        extensions: &mut http::Extensions,
        scope: Scope,
        listener: &'static str,
    ) -> Result<(), Refusal> {
        let peer = extensions.get::<Peer>().copied();
        match self.check(headers, peer.as_ref(), scope) {
            Ok(None) => Ok(()),
            Ok(Some(a)) => {
                headers.remove(header::AUTHORIZATION);
                match a.tenant.as_deref().map(HeaderValue::from_str) {
                    Some(Ok(v)) => {
                        headers.insert(TENANT_HEADER, v);
                    }
                    _ => {
                        headers.remove(TENANT_HEADER);
                    }
                }
                *self
                    .counters
                    .lock_or_recover()
                    .admitted
                    .entry(listener)
                    .or_default() += 1;
                extensions.insert(a);
                Ok(())
            }
            Err(r) => {
                let addr = peer.and_then(|p| p.addr);
                tracing::warn!(
                    listener,
                    token = r.name(),
                    addr = %addr.map_or_else(|| "-".to_owned(), |a| a.to_string()),
                    reason = r.reason(),
                    "request refused: {r}"
                );
                let delay = match (r.unauthenticated(), addr) {
                    (true, Some(a)) => self.throttle.fail(a.ip()),
                    _ => Duration::ZERO,
                };
                {
                    let mut c = self.counters.lock_or_recover();
                    *c.refusals.entry((listener, r.reason())).or_default() += 1;
                    if !delay.is_zero() {
                        c.slowed += 1;
                    }
                }
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Err(r)
            }
        }
    }

    /// Writes the gate's metrics, and the reload state of the auth file and
    /// of `tls`, in the Prometheus text format.
    pub fn render(&self, out: &mut String, tls: Option<&crate::Tls>) {
        if self.table.is_some() || tls.is_some() {
            out.push_str(crate::watched::RENDER_HEADER);
        }
        if let Some(t) = &self.table {
            t.render(out);
        }
        if let Some(t) = tls {
            t.render(out);
        }
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP periscope_auth_enabled Whether requests are authenticated (an auth file is given).\n# TYPE periscope_auth_enabled gauge\nperiscope_auth_enabled {}",
            u8::from(self.enabled())
        );
        let c = self.counters.lock_or_recover();
        out.push_str("# HELP periscope_auth_refusals_total Requests refused, by listener and reason.\n# TYPE periscope_auth_refusals_total counter\n");
        for ((l, r), n) in &c.refusals {
            let _ = writeln!(
                out,
                "periscope_auth_refusals_total{{listener=\"{l}\",reason=\"{r}\"}} {n}"
            );
        }
        out.push_str("# HELP periscope_auth_admitted_total Requests admitted with a credential, by listener.\n# TYPE periscope_auth_admitted_total counter\n");
        for (l, n) in &c.admitted {
            let _ = writeln!(out, "periscope_auth_admitted_total{{listener=\"{l}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP periscope_auth_slowed_total Refusals held back because their address failed repeatedly.\n# TYPE periscope_auth_slowed_total counter\nperiscope_auth_slowed_total {}",
            c.slowed
        );
        if let Some(t) = &self.table {
            let _ = writeln!(
                out,
                "# HELP periscope_auth_tokens Tokens listed in the auth file in use.\n# TYPE periscope_auth_tokens gauge\nperiscope_auth_tokens {}",
                t.get().len()
            );
        }
    }
}

/// The HTTP answer to a refusal: 401 with `WWW-Authenticate`, or 403; a
/// JSON body in the Prometheus API's error shape, which the other APIs'
/// clients read as well.
pub fn http_refusal(r: &Refusal) -> Response {
    let (status, kind) = if r.unauthenticated() {
        (StatusCode::UNAUTHORIZED, "unauthorized")
    } else {
        (StatusCode::FORBIDDEN, "forbidden")
    };
    let body = serde_json::json!({"status": "error", "errorType": kind, "error": r.to_string()})
        .to_string();
    let mut resp = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if r.unauthenticated() {
        let h = resp.headers_mut();
        h.append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"periscope\""),
        );
    }
    resp
}

/// Marks a refusal of a request whose body was not read with
/// `Connection: close`: the server closes such a connection after the
/// answer (the unread body is still on it), and a client that was not told
/// so may send its next request on it as it closes.
pub fn close_if_body_unread(request: &HeaderMap, response: &mut Response) {
    let has_body = request.contains_key(header::TRANSFER_ENCODING)
        || request
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|n| n.trim() != "0");
    if has_body {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// The gRPC status of a refusal.
pub fn grpc_refusal(r: &Refusal) -> tonic::Status {
    if r.unauthenticated() {
        tonic::Status::unauthenticated(r.to_string())
    } else {
        tonic::Status::permission_denied(r.to_string())
    }
}

/// Which scope a request on an HTTP listener needs; `None`: it is open.
pub type ScopeFor = fn(&Method, &str) -> Option<Scope>;

/// The state of [`http_middleware`].
#[derive(Clone)]
pub struct HttpGate {
    /// The gate.
    pub gate: Arc<Gate>,
    /// The listener's name, for logs and metrics.
    pub listener: &'static str,
    /// The scope each path needs.
    pub scope_for: ScopeFor,
}

/// The middleware's function, boxed so that its layer has a type to name.
pub type GateFn = fn(
    State<HttpGate>,
    Request,
    Next,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>;

/// The layer [`HttpGate::layer`] makes.
pub type GateLayer = axum::middleware::FromFnLayer<GateFn, HttpGate, (State<HttpGate>, Request)>;

impl HttpGate {
    /// The gate as an axum layer, for `Router::layer` or `Router::route_layer`.
    pub fn layer(self) -> GateLayer {
        axum::middleware::from_fn_with_state(self, |s, r, n| Box::pin(http_middleware(s, r, n)))
    }
}

/// Axum middleware: every request passes the gate before its route.
/// `router.layer(axum::middleware::from_fn_with_state(g, http_middleware))`.
pub async fn http_middleware(State(g): State<HttpGate>, req: Request, next: Next) -> Response {
    if !g.gate.enabled() {
        return next.run(req).await;
    }
    let Some(scope) = (g.scope_for)(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let (mut parts, body) = req.into_parts();
    let basic = matches!(presented(&parts.headers), Presented::Basic { .. });
    match g
        .gate
        .admit(&mut parts.headers, &mut parts.extensions, scope, g.listener)
        .await
    {
        Ok(()) => next.run(Request::from_parts(parts, body)).await,
        Err(r) => {
            let mut resp = http_refusal(&r);
            close_if_body_unread(&parts.headers, &mut resp);
            if basic && r.unauthenticated() {
                resp.headers_mut().append(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"periscope\", charset=\"UTF-8\""),
                );
            }
            resp
        }
    }
}

/// A tower layer for tonic servers: every call but the health service's
/// passes the gate with the `write` scope.
#[derive(Clone, Debug)]
pub struct GrpcGateLayer {
    gate: Arc<Gate>,
    listener: &'static str,
}

impl GrpcGateLayer {
    /// The layer for `listener`.
    pub fn new(gate: Arc<Gate>, listener: &'static str) -> Self {
        GrpcGateLayer { gate, listener }
    }
}

impl<S> tower::Layer<S> for GrpcGateLayer {
    type Service = GrpcGate<S>;

    fn layer(&self, inner: S) -> GrpcGate<S> {
        GrpcGate {
            inner,
            gate: self.gate.clone(),
            listener: self.listener,
        }
    }
}

/// The service [`GrpcGateLayer`] makes.
#[derive(Clone, Debug)]
pub struct GrpcGate<S> {
    inner: S,
    gate: Arc<Gate>,
    listener: &'static str,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for GrpcGate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The service that was polled ready serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (gate, listener) = (self.gate.clone(), self.listener);
        Box::pin(async move {
            if !gate.enabled() || req.uri().path().starts_with("/grpc.health.v1.Health/") {
                return inner.call(req).await;
            }
            let (mut parts, body) = req.into_parts();
            match gate
                .admit(
                    &mut parts.headers,
                    &mut parts.extensions,
                    Scope::Write,
                    listener,
                )
                .await
            {
                Ok(()) => inner.call(http::Request::from_parts(parts, body)).await,
                Err(r) => Ok(grpc_refusal(&r).into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::file_block;

    const SHOP: &str = "pscp_shop";
    const MULTI: &str = "pscp_multi";
    const READER: &str = "pscp_reader";

    fn gate(dir: &std::path::Path) -> Arc<Gate> {
        let p = dir.join("auth.toml");
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        std::fs::write(
            &p,
            [
                file_block(
                    "shop-apps",
                    SHOP,
                    &s(&["shop"]),
                    &[Scope::Write, Scope::Read],
                ),
                file_block("multi", MULTI, &s(&["a", "b"]), &[Scope::Read]),
                file_block("reader", READER, &s(&["*"]), &[Scope::Read]),
                "[client_certificate]\ntenants = [\"certs\"]\nscopes = [\"write\"]\n".to_owned(),
            ]
            .join("\n"),
        )
        .unwrap();
        let t = Watched::open("auth", vec![p], |b| {
            AuthTable::parse(std::str::from_utf8(&b[0]).unwrap(), &|_| true)
        })
        .unwrap();
        Gate::new(Some(t))
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn basic(user: &str, pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    }

    fn tenant(r: Result<Option<Admitted>, Refusal>) -> Result<String, Refusal> {
        r.map(|a| a.unwrap().tenant.unwrap_or_default())
    }

    #[test]
    fn every_refusal_and_every_way_in() {
        let dir = tempfile::tempdir().unwrap();
        let g = gate(dir.path());
        let bearer = |t: &str| format!("Bearer {t}");
        let check = |h: &[(&str, &str)], s| tenant(g.check(&headers(h), None, s));
        // No or bad credentials: 401.
        assert_eq!(check(&[], Scope::Read), Err(Refusal::Missing));
        assert_eq!(
            check(&[("authorization", "Token x")], Scope::Read),
            Err(Refusal::Malformed)
        );
        assert_eq!(
            check(&[("authorization", "Basic !!")], Scope::Read),
            Err(Refusal::Malformed)
        );
        assert_eq!(
            check(&[("authorization", &bearer("pscp_nope"))], Scope::Read),
            Err(Refusal::Invalid)
        );
        assert_eq!(
            check(&[("authorization", &basic("shop", "nope"))], Scope::Read),
            Err(Refusal::Invalid)
        );
        // One tenant: implied, or named by the header.
        assert_eq!(
            check(&[("authorization", &bearer(SHOP))], Scope::Write),
            Ok("shop".into())
        );
        assert_eq!(
            check(
                &[("authorization", &bearer(SHOP)), ("x-scope-orgid", "shop")],
                Scope::Read
            ),
            Ok("shop".into())
        );
        assert!(matches!(
            check(
                &[("authorization", &bearer(SHOP)), ("x-scope-orgid", "other")],
                Scope::Write
            ),
            Err(Refusal::Tenant { .. })
        ));
        assert!(matches!(
            check(&[("authorization", &bearer(SHOP))], Scope::Admin),
            Err(Refusal::Scope { .. })
        ));
        assert!(matches!(
            check(&[("authorization", &bearer(MULTI))], Scope::Write),
            Err(Refusal::Scope { .. })
        ));
        // Several tenants: the header or the Basic user name says which.
        assert!(matches!(
            check(&[("authorization", &bearer(MULTI))], Scope::Read),
            Err(Refusal::NoTenant { .. })
        ));
        assert_eq!(
            check(
                &[("authorization", &bearer(MULTI)), ("x-scope-orgid", "b")],
                Scope::Read
            ),
            Ok("b".into())
        );
        assert_eq!(
            check(&[("authorization", &basic("a", MULTI))], Scope::Read),
            Ok("a".into())
        );
        // A user name that is not a tenant of the token is not one.
        assert!(matches!(
            check(&[("authorization", &basic("grafana", MULTI))], Scope::Read),
            Err(Refusal::NoTenant { .. })
        ));
        assert_eq!(
            check(&[("authorization", &basic("grafana", SHOP))], Scope::Read),
            Ok("shop".into())
        );
        assert!(matches!(
            check(
                &[
                    ("authorization", &basic("a", MULTI)),
                    ("x-scope-orgid", "c")
                ],
                Scope::Read
            ),
            Err(Refusal::Tenant { .. })
        ));
        assert_eq!(
            check(
                &[
                    ("authorization", &bearer(READER)),
                    ("x-scope-orgid", "anyone")
                ],
                Scope::Read
            ),
            Ok("anyone".into())
        );
        assert!(matches!(
            check(&[("authorization", &bearer(READER))], Scope::Read),
            Err(Refusal::NoTenant { .. })
        ));
        // A verified client certificate stands in for a token when the
        // file says what it may do.
        let cert = Peer {
            addr: None,
            tls: PeerTls {
                encrypted: true,
                client_cert: true,
            },
        };
        assert_eq!(
            tenant(g.check(&headers(&[]), Some(&cert), Scope::Write)),
            Ok("certs".into())
        );
        assert!(matches!(
            g.check(&headers(&[]), Some(&cert), Scope::Read),
            Err(Refusal::Scope { .. })
        ));
        let plain = Peer::default();
        assert_eq!(
            tenant(g.check(&headers(&[]), Some(&plain), Scope::Write)),
            Err(Refusal::Missing)
        );
    }

    #[test]
    fn no_auth_file_admits_everything_as_it_is() {
        let g = Gate::new(None);
        assert!(
            g.check(&headers(&[]), None, Scope::Admin)
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn admitted_requests_carry_their_tenant_and_repeated_failures_are_slowed() {
        let dir = tempfile::tempdir().unwrap();
        let g = gate(dir.path());
        let mut ext = http::Extensions::new();
        ext.insert(Peer {
            addr: Some("10.0.0.1:5000".parse().unwrap()),
            tls: PeerTls::default(),
        });
        let mut h = headers(&[("authorization", &format!("Bearer {SHOP}"))]);
        g.admit(&mut h, &mut ext, Scope::Write, "test")
            .await
            .unwrap();
        assert_eq!(h.get(TENANT_HEADER).unwrap(), "shop");
        assert!(
            h.get(header::AUTHORIZATION).is_none(),
            "the credential goes no further"
        );
        assert_eq!(
            ext.get::<Admitted>().unwrap().grant.name.as_ref(),
            "shop-apps"
        );
        let mut took = Vec::new();
        for _ in 0..8 {
            let mut h = headers(&[("authorization", "Bearer pscp_guess")]);
            let t0 = std::time::Instant::now();
            assert_eq!(
                g.admit(&mut h, &mut ext, Scope::Write, "test").await,
                Err(Refusal::Invalid)
            );
            took.push(t0.elapsed());
        }
        assert!(
            took[..5].iter().all(|d| *d < Duration::from_millis(40)),
            "{took:?}"
        );
        assert!(
            took[5] >= Duration::from_millis(50) && took[7] >= Duration::from_millis(200),
            "{took:?}"
        );
        let mut out = String::new();
        g.render(&mut out, None);
        assert!(
            out.contains("periscope_auth_refusals_total{listener=\"test\",reason=\"invalid\"} 8"),
            "{out}"
        );
        assert!(out.contains("periscope_auth_slowed_total 3"), "{out}");
        assert!(
            out.contains("periscope_auth_admitted_total{listener=\"test\"} 1"),
            "{out}"
        );
        assert!(out.contains("periscope_auth_tokens 3"), "{out}");
    }

    #[test]
    fn a_refused_request_with_an_unread_body_closes_its_connection() {
        for (h, close) in [
            (headers(&[("content-length", "12")]), true),
            (headers(&[("transfer-encoding", "chunked")]), true),
            (headers(&[("content-length", "0")]), false),
            (headers(&[]), false),
        ] {
            let mut r = http_refusal(&Refusal::Missing);
            close_if_body_unread(&h, &mut r);
            assert_eq!(
                r.headers().get(header::CONNECTION).is_some(),
                close,
                "{h:?}"
            );
        }
    }

    #[test]
    fn refusals_answer_401_with_a_challenge_or_403() {
        let r = http_refusal(&Refusal::Missing);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_some());
        let r = http_refusal(&Refusal::NoTenant {
            name: "x\"y".into(),
        });
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            grpc_refusal(&Refusal::Invalid).code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            grpc_refusal(&Refusal::Scope {
                name: "a".into(),
                scope: Scope::Write
            })
            .code(),
            tonic::Code::PermissionDenied
        );
    }
}
