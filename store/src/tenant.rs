//! Tenant ids: every record and every query belongs to exactly one.

use crate::StoreError;

/// A validated tenant id, safe to use as a directory name. Follows the rules
/// of Grafana's backends for `X-Scope-OrgID`, minus the characters that are
/// awkward in paths. Any such name is fine, `wal` or `periscope.json`
/// included: tenant directories live apart, under `<data-dir>/tenants/`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    /// The tenant of requests that carry no tenant header.
    pub const DEFAULT: &'static str = "default";

    /// Validates a tenant id.
    pub fn parse(s: &str) -> Result<TenantId, StoreError> {
        let ok = !s.is_empty()
            && s.len() <= 150
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if ok {
            Ok(TenantId(s.to_owned()))
        } else {
            Err(StoreError::InvalidTenant(s.to_owned()))
        }
    }

    /// The `default` tenant.
    pub fn default_tenant() -> TenantId {
        TenantId(Self::DEFAULT.to_owned())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids() {
        for (id, ok) in [
            ("default", true),
            ("team-a.prod_1", true),
            ("", false),
            ("..", false),
            ("a/b", false),
            ("wal", true),
            ("periscope.json", true),
            ("...", true),
            ("é", false),
            (&"x".repeat(151), false),
        ] {
            assert_eq!(TenantId::parse(id).is_ok(), ok, "{id}");
        }
    }
}
