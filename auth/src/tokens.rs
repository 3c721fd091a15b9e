//! Tokens and the auth file that lists them.
//!
//! The file holds a SHA-256 of each token, never the token itself:
//!
//! ```toml
//! [[token]]
//! name = "shop-apps"
//! sha256 = "…"
//! tenants = ["shop"]
//! scopes = ["write"]
//!
//! # Optional: what a verified client certificate may do without a token
//! # (mutual TLS on the OTLP listeners).
//! [client_certificate]
//! tenants = ["*"]
//! scopes = ["write"]
//! ```

use std::collections::HashSet;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a credential may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Ingest: OTLP, remote write.
    Write,
    /// Queries and the web UI.
    Read,
    /// Self-metrics and administrative endpoints.
    Admin,
}

impl Scope {
    /// The scope's name in the auth file.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Write => "write",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    /// Parses a scope name.
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "write" => Some(Scope::Write),
            "read" => Some(Scope::Read),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// The tenants a credential reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tenants {
    /// Every tenant (`"*"`).
    Any,
    /// These, in the file's order.
    Listed(Vec<String>),
}

impl Tenants {
    /// Whether `t` is one of them.
    pub fn contains(&self, t: &str) -> bool {
        match self {
            Tenants::Any => true,
            Tenants::Listed(l) => l.iter().any(|x| x == t),
        }
    }

    /// The one tenant, when there is exactly one.
    pub fn single(&self) -> Option<&str> {
        match self {
            Tenants::Listed(l) if l.len() == 1 => Some(&l[0]),
            _ => None,
        }
    }
}

/// What one credential may do: its name (for logs, never the token), its
/// tenants and its scopes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The token's name in the auth file, or `client-certificate`.
    pub name: Arc<str>,
    /// The tenants it reaches.
    pub tenants: Tenants,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

impl Grant {
    /// Whether it has `scope`.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// One token of the auth file.
#[derive(Clone, Debug)]
struct Entry {
    sha256: [u8; 32],
    grant: Grant,
}

/// The parsed auth file: who may do what.
#[derive(Clone, Debug, Default)]
pub struct AuthTable {
    entries: Vec<Entry>,
    client_certificate: Option<Grant>,
}

/// The name logged for requests admitted by their client certificate.
pub const CLIENT_CERTIFICATE: &str = "client-certificate";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    token: Vec<TokenToml>,
    client_certificate: Option<GrantToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenToml {
    name: String,
    sha256: String,
    tenants: Vec<String>,
    scopes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantToml {
    tenants: Vec<String>,
    scopes: Vec<String>,
}

/// The SHA-256 of a token, as the auth file holds it.
pub fn token_sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The prefix of every token `periscope token new` makes, so that a leaked
/// one is recognised (by people and by secret scanners).
pub const TOKEN_PREFIX: &str = "pscp_";

/// A new random token: the prefix and 32 random bytes (256 bits) in hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the operating system's random source failed");
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// The auth file block for a token.
pub fn file_block(name: &str, token: &str, tenants: &[String], scopes: &[Scope]) -> String {
    let list = |v: Vec<String>| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\ntenants = [{}]\nscopes = [{}]\n",
        hex::encode(token_sha256(token)),
        list(tenants.to_vec()),
        list(scopes.iter().map(|s| s.as_str().to_owned()).collect()),
    )
}

/// Checks a token's name: what the logs and the file call it.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn parse_grant(
    name: Arc<str>,
    tenants: Vec<String>,
    scopes: Vec<String>,
    valid_tenant: &dyn Fn(&str) -> bool,
) -> Result<Grant, String> {
    if tenants.is_empty() {
        return Err(format!("{name}: tenants is empty"));
    }
    let tenants = if tenants.iter().any(|t| t == "*") {
        if tenants.len() > 1 {
            return Err(format!("{name}: \"*\" must be the only tenant"));
        }
        Tenants::Any
    } else {
        if let Some(bad) = tenants.iter().find(|t| !valid_tenant(t)) {
            return Err(format!("{name}: invalid tenant {bad:?}"));
        }
        Tenants::Listed(tenants)
    };
    if scopes.is_empty() {
        return Err(format!("{name}: scopes is empty"));
    }
    let scopes = scopes
        .iter()
        .map(|s| {
            Scope::parse(s).ok_or_else(|| {
                format!("{name}: unknown scope {s:?} (expected write, read or admin)")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Grant {
        name,
        tenants,
        scopes,
    })
}

impl AuthTable {
    /// Parses an auth file. `valid_tenant` checks tenant names.
    pub fn parse(text: &str, valid_tenant: &dyn Fn(&str) -> bool) -> Result<AuthTable, String> {
        let file: FileToml = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut names = HashSet::new();
        let mut hashes = HashSet::new();
        let mut entries = Vec::with_capacity(file.token.len());
        for t in file.token {
            if !valid_name(&t.name) {
                return Err(format!(
                    "invalid token name {:?}: letters, digits, '_', '.', '-', at most 100",
                    t.name
                ));
            }
            if !names.insert(t.name.clone()) {
                return Err(format!("token name {:?} appears twice", t.name));
            }
            let mut sha256 = [0u8; 32];
            hex::decode_to_slice(t.sha256.trim(), &mut sha256).map_err(|_| {
                format!(
                    "{}: sha256 must be 64 hex digits (the SHA-256 of the token)",
                    t.name
                )
            })?;
            if !hashes.insert(sha256) {
                return Err(format!("{}: the same sha256 appears twice", t.name));
            }
            let grant = parse_grant(t.name.as_str().into(), t.tenants, t.scopes, valid_tenant)?;
            entries.push(Entry { sha256, grant });
        }
        let client_certificate = file
            .client_certificate
            .map(|g| parse_grant(CLIENT_CERTIFICATE.into(), g.tenants, g.scopes, valid_tenant))
            .transpose()?;
        Ok(AuthTable {
            entries,
            client_certificate,
        })
    }

    /// The grant of `token`, if the file lists it. Takes the same time
    /// whichever entry matches, or none: every entry's hash is compared in
    /// constant time.
    pub fn lookup(&self, token: &str) -> Option<&Grant> {
        let h = token_sha256(token);
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.sha256.ct_eq(&h)) {
                found = Some(&e.grant);
            }
        }
        found
    }

    /// The grant of a token whose SHA-256 is `h` (a UI session holds it).
    pub fn lookup_sha256(&self, h: &[u8; 32]) -> Option<&Grant> {
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.sha256.ct_eq(h)) {
                found = Some(&e.grant);
            }
        }
        found
    }

    /// What a verified client certificate may do without a token.
    pub fn client_certificate(&self) -> Option<&Grant> {
        self.client_certificate.as_ref()
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file lists no token.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(_: &str) -> bool {
        true
    }

    fn file(token: &str) -> String {
        format!(
            "{}\n{}",
            file_block(
                "shop-apps",
                token,
                &["shop".to_owned()],
                &[Scope::Write, Scope::Read]
            ),
            file_block("ops", "other", &["*".to_owned()], &[Scope::Admin]),
        )
    }

    #[test]
    fn new_tokens_are_long_random_and_prefixed() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        // 256 bits in hex.
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
    }

    #[test]
    fn the_printed_block_parses_and_finds_its_token() {
        let t = new_token();
        let table = AuthTable::parse(&file(&t), &any).unwrap();
        assert_eq!(table.len(), 2);
        let g = table.lookup(&t).unwrap();
        assert_eq!(&*g.name, "shop-apps");
        assert_eq!(g.tenants.single(), Some("shop"));
        assert!(g.allows(Scope::Write) && g.allows(Scope::Read) && !g.allows(Scope::Admin));
        assert_eq!(table.lookup("other").unwrap().tenants, Tenants::Any);
        assert!(table.lookup("nope").is_none());
        assert!(table.lookup(&t[..t.len() - 1]).is_none());
        assert!(table.lookup_sha256(&token_sha256(&t)).is_some());
        assert!(table.client_certificate().is_none());
    }

    #[test]
    fn the_file_never_holds_the_token() {
        let t = new_token();
        assert!(!file(&t).contains(&t[TOKEN_PREFIX.len()..]));
    }

    #[test]
    fn every_mistake_is_refused_with_its_reason() {
        let h = hex::encode(token_sha256("x"));
        let cases: &[(&str, &str)] = &[
            ("[[token]]\nname = \"a\"\n", "missing field"),
            (
                "[[token]]\nname=\"a\"\nsha256=\"zz\"\ntenants=[\"t\"]\nscopes=[\"read\"]",
                "64 hex",
            ),
            (
                &format!("[[token]]\nname=\"a\"\nsha256=\"{h}\"\ntenants=[]\nscopes=[\"read\"]"),
                "tenants is empty",
            ),
            (
                &format!("[[token]]\nname=\"a\"\nsha256=\"{h}\"\ntenants=[\"t\"]\nscopes=[]"),
                "scopes is empty",
            ),
            (
                &format!(
                    "[[token]]\nname=\"a\"\nsha256=\"{h}\"\ntenants=[\"t\"]\nscopes=[\"root\"]"
                ),
                "unknown scope",
            ),
            (
                &format!(
                    "[[token]]\nname=\"a\"\nsha256=\"{h}\"\ntenants=[\"*\", \"t\"]\nscopes=[\"read\"]"
                ),
                "only tenant",
            ),
            (
                &format!(
                    "[[token]]\nname=\"a b\"\nsha256=\"{h}\"\ntenants=[\"t\"]\nscopes=[\"read\"]"
                ),
                "invalid token name",
            ),
            (
                &format!(
                    "[[token]]\nname=\"a\"\nsha256=\"{h}\"\ntenants=[\"t\"]\nscopes=[\"read\"]\n[[token]]\nname=\"a\"\nsha256=\"{}\"\ntenants=[\"t\"]\nscopes=[\"read\"]",
                    hex::encode(token_sha256("y"))
                ),
                "appears twice",
            ),
            (
                &format!(
                    "[[token]]\nname=\"a\"\nsha256=\"{h}\"\ntenants=[\"t\"]\nscopes=[\"read\"]\n[[token]]\nname=\"b\"\nsha256=\"{h}\"\ntenants=[\"t\"]\nscopes=[\"read\"]"
                ),
                "same sha256",
            ),
            (
                &format!(
                    "[[token]]\nname=\"a\"\nsha256=\"{h}\"\ntenants=[\"t\"]\nscopes=[\"read\"]\ntoken=\"secret\""
                ),
                "unknown field",
            ),
            (
                "[client_certificate]\ntenants=[\"t\"]\nscopes=[\"wrote\"]",
                "unknown scope",
            ),
        ];
        for (text, want) in cases {
            let e = AuthTable::parse(text, &any).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        let e = AuthTable::parse(
            &format!(
                "[[token]]\nname=\"a\"\nsha256=\"{h}\"\ntenants=[\"../x\"]\nscopes=[\"read\"]"
            ),
            &|t| !t.contains('/'),
        )
        .unwrap_err();
        assert!(e.contains("invalid tenant"), "{e}");
    }

    #[test]
    fn an_empty_file_lists_nobody_and_client_certificates_get_their_grant() {
        assert!(AuthTable::parse("", &any).unwrap().is_empty());
        let t = AuthTable::parse(
            "[client_certificate]\ntenants=[\"*\"]\nscopes=[\"write\"]",
            &any,
        )
        .unwrap();
        let g = t.client_certificate().unwrap();
        assert_eq!(&*g.name, CLIENT_CERTIFICATE);
        assert!(g.allows(Scope::Write) && !g.allows(Scope::Read));
    }
}
