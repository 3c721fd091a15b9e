//! Services seen in spans and metrics (logs answer from their index).

use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;

use periscope_store::TenantId;

use crate::sync::RwLockRecover;

/// Service names per tenant, from every signal that has no index of its own yet.
#[derive(Debug, Default)]
pub struct ServiceRegistry {
    inner: RwLock<HashMap<TenantId, BTreeSet<String>>>,
}

impl ServiceRegistry {
    /// Records services seen for a tenant.
    pub fn add(&self, tenant: &TenantId, names: impl IntoIterator<Item = String>) {
        let names: Vec<String> = names.into_iter().collect();
        {
            let r = self.inner.read_or_recover();
            if r.get(tenant)
                .is_some_and(|s| names.iter().all(|n| s.contains(n)))
            {
                return;
            }
        }
        let mut w = self.inner.write_or_recover();
        w.entry(tenant.clone()).or_default().extend(names);
    }

    /// The services recorded for a tenant.
    pub fn get(&self, tenant: &TenantId) -> BTreeSet<String> {
        self.inner
            .read_or_recover()
            .get(tenant)
            .cloned()
            .unwrap_or_default()
    }
}
