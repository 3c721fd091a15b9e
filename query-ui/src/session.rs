//! Web UI sessions: a signed cookie that stands for a token of the auth
//! file, so that the UI calls the APIs without the page ever holding the
//! token.
//!
//! The cookie `periscope_session` is `base64url(payload) "." base64url(mac)`.
//! The payload (JSON) holds a random session id, the SHA-256 of the token
//! (the auth file's value, never the token), the chosen tenant and the
//! expiry; the MAC is HMAC-SHA256 under a key kept in the data directory
//! (`ui-session.key`, made on the first start), so sessions outlive a
//! restart. Nothing else is kept per session: every request checks the MAC,
//! the expiry, that the session was not signed out (`ui-sessions-ended`
//! lists the ids of sessions ended before their expiry) and that the auth
//! file in use still lists the token with the session's tenant, so a
//! revoked token's sessions stop at their next request.
//!
//! A session may only read (the `read` scope), whatever else its token may
//! do: the browser sends the cookie by itself, so a session that could
//! write would be a target for cross-site requests and for scripts that
//! found a way into the page. The gate ([`periscope_auth::Gate`]) consults
//! [`Sessions`] through [`SessionLookup`] when a request has no
//! `Authorization` header.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use periscope_auth::gate::SessionLookup;
use periscope_auth::{Admitted, AuthTable, Grant, Scope};
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::sync::MutexRecover;

/// The cookie's name.
pub const COOKIE: &str = "periscope_session";
/// The MAC key's file in the data directory.
pub const KEY_FILE: &str = "ui-session.key";
/// The file listing sessions signed out before their expiry.
pub const ENDED_FILE: &str = "ui-sessions-ended";

/// Signed-out sessions remembered at most (until their expiry). Past it the
/// one closest to its expiry is forgotten; only holders of a valid token
/// can sign out, so only they could push an entry out.
const MAX_ENDED: usize = 100_000;
/// A longer cookie value is not ours: refused before any work.
const MAX_COOKIE_LEN: usize = 1024;
/// Session cookies looked at per request (a request may carry several of
/// the same name, set for other paths or by a sibling domain).
const MAX_CANDIDATES: usize = 4;
/// The payload's format version.
const VERSION: u8 = 1;

/// Why sessions could not be opened or a sign-out could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A file operation failed.
    #[error("failed to {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The key file is not a key.
    #[error(
        "invalid {}: expected 32 bytes, found {len}; delete it to make a new key (which signs out every session)",
        path.display()
    )]
    BadKey { path: PathBuf, len: usize },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SessionError {
    let path = path.to_owned();
    move |source| SessionError::Io { what, path, source }
}

/// One session, as its cookie carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Random; names the session when it is signed out.
    pub id: [u8; 16],
    /// The SHA-256 of the token it stands for.
    pub token_sha256: [u8; 32],
    /// The tenant chosen at sign-in or in the UI's switcher.
    pub tenant: String,
    /// Unix seconds after which it is refused.
    pub expires: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    v: u8,
    id: String,
    sha256: String,
    tenant: String,
    exp: u64,
}

/// Sessions ended before their expiry: id → expiry.
#[derive(Debug, Default)]
struct Ended {
    ids: HashMap<[u8; 16], u64>,
    /// Lines in the file, to know when rewriting it is worth it.
    lines: usize,
}

/// Issues and checks session cookies.
pub struct Sessions {
    key: hmac::Key,
    ttl: Duration,
    secure: bool,
    ended_path: PathBuf,
    ended: Mutex<Ended>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("ttl", &self.ttl)
            .field("secure", &self.secure)
            .finish_non_exhaustive()
    }
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .expect("the operating system's random source failed");
    b
}

/// Writes `bytes` to `path` through a temporary file, readable by the
/// owner only, and makes the rename durable.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SessionError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    f.write_all(bytes).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("sync", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("rename", &tmp))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync", dir))?;
    }
    Ok(())
}

/// Reads the key, or makes one on the first start.
fn load_key(path: &Path) -> Result<[u8; 32], SessionError> {
    match std::fs::read(path) {
        Ok(b) => {
            let len = b.len();
            b.try_into().map_err(|_| SessionError::BadKey {
                path: path.to_owned(),
                len,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = random::<32>();
            write_private(path, &key)?;
            tracing::info!(path = %path.display(), "made a new key for web UI sessions");
            Ok(key)
        }
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// Reads the signed-out sessions still unexpired. Unreadable lines are
/// skipped: a torn last line is a sign-out whose answer never left.
fn load_ended(path: &Path, now: u64) -> Result<Ended, SessionError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ended::default()),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    let mut ended = Ended::default();
    for line in text.lines() {
        ended.lines += 1;
        let Some((id, exp)) = line.split_once(' ') else {
            continue;
        };
        let mut b = [0u8; 16];
        if let (Ok(()), Ok(exp)) = (hex::decode_to_slice(id, &mut b), exp.parse::<u64>())
            && exp > now
        {
            ended.ids.insert(b, exp);
        }
    }
    Ok(ended)
}

fn ended_text(ended: &Ended) -> String {
    ended
        .ids
        .iter()
        .map(|(id, exp)| format!("{} {exp}\n", hex::encode(id)))
        .collect()
}

impl Sessions {
    /// Opens the sessions kept in `dir` (the data directory): reads or
    /// makes the key, reads the signed-out sessions. Cookies last `ttl`
    /// and are marked `Secure` when `secure` (the listener serves TLS).
    pub fn open(dir: &Path, ttl: Duration, secure: bool) -> Result<Sessions, SessionError> {
        let key = load_key(&dir.join(KEY_FILE))?;
        let ended_path = dir.join(ENDED_FILE);
        let ended = load_ended(&ended_path, now_secs())?;
        if ended.lines > ended.ids.len() {
            write_private(&ended_path, ended_text(&ended).as_bytes())?;
        }
        let ended = Ended {
            lines: ended.ids.len(),
            ..ended
        };
        Ok(Sessions {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            ttl,
            secure,
            ended_path,
            ended: Mutex::new(ended),
        })
    }

    /// A new session for the token whose SHA-256 is `token_sha256`.
    pub fn start(&self, token_sha256: [u8; 32], tenant: String, now: u64) -> Session {
        Session {
            id: random(),
            token_sha256,
            tenant,
            expires: now.saturating_add(self.ttl.as_secs()),
        }
    }

    /// The cookie value of `s`.
    pub fn encode(&self, s: &Session) -> String {
        let payload = serde_json::to_vec(&Payload {
            v: VERSION,
            id: hex::encode(s.id),
            sha256: hex::encode(s.token_sha256),
            tenant: s.tenant.clone(),
            exp: s.expires,
        })
        .expect("a payload always serializes");
        let body = URL_SAFE_NO_PAD.encode(payload);
        let mac = hmac::sign(&self.key, body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()))
    }

    /// The session of a cookie value: its MAC verified before anything in
    /// it is read, then refused when expired at `now` or signed out.
    pub fn decode(&self, value: &str, now: u64) -> Option<Session> {
        if value.len() > MAX_COOKIE_LEN {
            return None;
        }
        let (body, mac) = value.split_once('.')?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        hmac::verify(&self.key, body.as_bytes(), &mac).ok()?;
        let p: Payload = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        if p.v != VERSION || p.exp <= now {
            return None;
        }
        let mut s = Session {
            id: [0; 16],
            token_sha256: [0; 32],
            tenant: p.tenant,
            expires: p.exp,
        };
        hex::decode_to_slice(&p.id, &mut s.id).ok()?;
        hex::decode_to_slice(&p.sha256, &mut s.token_sha256).ok()?;
        let ended = self.ended.lock_or_recover();
        (!ended.ids.contains_key(&s.id)).then_some(s)
    }

    /// The session a request's cookies name: `None` without a session
    /// cookie, `Err` when none of them is valid.
    pub fn from_headers(&self, headers: &HeaderMap, now: u64) -> Option<Result<Session, ()>> {
        let mut found = false;
        for v in cookie_values(headers).take(MAX_CANDIDATES) {
            found = true;
            if let Some(s) = self.decode(v, now) {
                return Some(Ok(s));
            }
        }
        found.then_some(Err(()))
    }

    /// What `s` may do with the auth file `table`: its token's grant
    /// narrowed to reading, for the session's tenant. `None` when the file
    /// no longer lists the token, or its tenant or the `read` scope.
    pub fn admit(&self, s: &Session, table: &AuthTable) -> Option<Admitted> {
        let g = table.lookup_sha256(&s.token_sha256)?;
        if !g.allows(Scope::Read) || !g.tenants.contains(&s.tenant) {
            return None;
        }
        Some(Admitted {
            grant: Grant {
                name: g.name.clone(),
                tenants: g.tenants.clone(),
                scopes: vec![Scope::Read],
            },
            tenant: Some(s.tenant.clone()),
        })
    }

    /// Ends `s` before its expiry: its cookie, and every copy of it, is
    /// refused from now on, after a restart too. Blocks on a file write.
    pub fn end(&self, s: &Session, now: u64) -> Result<(), SessionError> {
        let mut ended = self.ended.lock_or_recover();
        if ended.ids.len() >= MAX_ENDED {
            ended.ids.retain(|_, exp| *exp > now);
        }
        if ended.ids.len() >= MAX_ENDED
            && let Some(soonest) = ended.ids.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k)
        {
            ended.ids.remove(&soonest);
        }
        ended.ids.insert(s.id, s.expires);
        if ended.lines > 2 * ended.ids.len() + 1000 {
            ended.ids.retain(|_, exp| *exp > now);
            write_private(&self.ended_path, ended_text(&ended).as_bytes())?;
            ended.lines = ended.ids.len();
            return Ok(());
        }
        let line = format!("{} {}\n", hex::encode(s.id), s.expires);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.ended_path)
            .map_err(io_err("open", &self.ended_path))?;
        f.write_all(line.as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(io_err("write", &self.ended_path))?;
        ended.lines += 1;
        Ok(())
    }

    /// The `Set-Cookie` value that stores `s` in the browser.
    pub fn set_cookie(&self, s: &Session, now: u64) -> HeaderValue {
        let max_age = s.expires.saturating_sub(now).max(1);
        self.cookie_header(&self.encode(s), max_age)
    }

    /// The `Set-Cookie` value that removes the cookie.
    pub fn clear_cookie(&self) -> HeaderValue {
        self.cookie_header("", 0)
    }

    fn cookie_header(&self, value: &str, max_age: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
        ))
        .expect("a cookie of base64url and ASCII attributes is a valid header")
    }
}

impl SessionLookup for Sessions {
    fn lookup(&self, headers: &HeaderMap, table: &AuthTable) -> Option<Result<Admitted, ()>> {
        Some(match self.from_headers(headers, now_secs())? {
            Ok(s) => self.admit(&s, table).ok_or(()),
            Err(()) => Err(()),
        })
    }
}

/// The values of every `periscope_session` cookie of a request.
pub(crate) fn cookie_values(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| {
            let (name, value) = c.trim().split_once('=')?;
            (name == COOKIE).then_some(value.trim_matches('"'))
        })
}

/// Whether a request carries a session cookie (valid or not).
pub(crate) fn has_cookie(headers: &HeaderMap) -> bool {
    cookie_values(headers).next().is_some()
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
