//! Kubernetes metadata of tailed files.
//!
//! Always from the log path (`path.rs`): namespace, pod, UID, container,
//! restart count. Optionally (`k8s_api_enrichment`) from the API server:
//! `watch.rs` keeps a node-scoped pod watch (`client.rs` speaks HTTP,
//! `wire.rs` decodes) feeding a [`PodCache`] keyed by pod UID (`pods.rs`),
//! and each file's [`FileResource`] adds the pod's labels
//! (`k8s.pod.label.<key>`), its workload names (`k8s.deployment.name`, ...)
//! and `service.name` from the `app.kubernetes.io/name` label.
//!
//! A pod's metadata may arrive after its file was opened (the watch lags
//! the kubelet, or the API server is away): the file's resource is rebuilt
//! when the cache's generation moves and the pod is found, so later records
//! carry it. Records already read keep the path metadata.

mod client;
mod path;
mod pods;
mod watch;
mod wire;

use std::path::Path;
use std::sync::Arc;

use periscope_proto::otlp::common::v1::KeyValue;

pub use client::{ApiOptions, Client, IN_CLUSTER_CA, IN_CLUSTER_TOKEN, validate_url};
pub use path::{PodLog, from_path, resource_attributes};
pub use pods::{Owner, PodCache, PodMeta};
pub use watch::run as watch_pods;

use crate::parse::enrich::kv_str;

/// The resource attributes of one tailed file, refreshed from the pod cache.
#[derive(Debug)]
pub struct FileResource {
    current: Arc<Vec<KeyValue>>,
    enrich: Option<Enrich>,
}

#[derive(Debug)]
struct Enrich {
    cache: Arc<PodCache>,
    uid: String,
    /// The path-derived attributes the pod's are merged into.
    base: Vec<KeyValue>,
    /// Cache generation last looked at.
    seen: u64,
    /// The pod metadata `current` was built from.
    applied: Option<Arc<PodMeta>>,
}

impl FileResource {
    /// The resource of the file at `path` (already resolved to its
    /// `/var/log/pods` target); with a cache, pod logs are enriched.
    pub fn new(path: &Path, node_name: &str, pods: Option<&Arc<PodCache>>) -> Self {
        let base = resource_attributes(path, node_name);
        let enrich = pods.zip(from_path(path)).map(|(cache, p)| Enrich {
            cache: Arc::clone(cache),
            uid: p.uid,
            base: base.clone(),
            seen: 0,
            applied: None,
        });
        let mut r = FileResource {
            current: Arc::new(base),
            enrich,
        };
        r.refresh();
        r
    }

    /// The attributes to attach now: one atomic load when nothing changed.
    pub fn get(&mut self) -> &Arc<Vec<KeyValue>> {
        self.refresh();
        &self.current
    }

    fn refresh(&mut self) {
        let Some(e) = self.enrich.as_mut() else {
            return;
        };
        let generation = e.cache.generation();
        if generation == e.seen {
            return;
        }
        e.seen = generation;
        // A pod gone from the cache (past its grace period) keeps what the
        // file already carries.
        let Some(meta) = e.cache.get(&e.uid) else {
            return;
        };
        if e.applied.as_ref().is_some_and(|a| Arc::ptr_eq(a, &meta)) {
            return;
        }
        self.current = Arc::new(merge(&e.base, &meta));
        e.applied = Some(meta);
    }
}

/// Path attributes plus the pod's; `service.name` from the
/// `app.kubernetes.io/name` label when set.
pub fn merge(base: &[KeyValue], meta: &PodMeta) -> Vec<KeyValue> {
    let extra = meta.attributes();
    let mut out = Vec::with_capacity(base.len() + extra.len());
    for kv in base {
        match meta.service_name() {
            Some(s) if kv.key == "service.name" => out.push(kv_str("service.name", s)),
            _ => out.push(kv.clone()),
        }
    }
    out.extend(extra);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use periscope_proto::otlp::common::v1::any_value::Value;
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| match &v.value {
                Some(Value::StringValue(s)) => Some(s.as_str()),
                _ => None,
            })
    }

    fn meta(uid: &str, labels: &[(&str, &str)]) -> PodMeta {
        PodMeta {
            uid: uid.into(),
            name: "web-7d9f8c6b5-abcde".into(),
            namespace: "shop".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            owner: Some(Owner {
                kind: "ReplicaSet".into(),
                name: "web-7d9f8c6b5".into(),
            }),
        }
    }

    const PATH: &str = "/var/log/pods/shop_web-7d9f8c6b5-abcde_u-1/nginx/0.log";

    #[test]
    fn late_metadata_refreshes_the_resource() {
        let cache = Arc::new(PodCache::new(Duration::from_secs(60)));
        let mut r = FileResource::new(Path::new(PATH), "node-a", Some(&cache));
        let before = Arc::clone(r.get());
        assert_eq!(get(&before, "service.name"), Some("nginx"));
        assert_eq!(get(&before, "k8s.pod.uid"), Some("u-1"));
        assert!(get(&before, "k8s.deployment.name").is_none());
        // Nothing changed: the very same attributes.
        assert!(Arc::ptr_eq(&before, r.get()));
        // Another pod arrives: looked up, nothing to apply.
        cache.upsert(meta("u-other", &[]));
        assert!(Arc::ptr_eq(&before, r.get()));

        cache.upsert(meta(
            "u-1",
            &[
                ("app.kubernetes.io/name", "checkout"),
                ("pod-template-hash", "7d9f8c6b5"),
            ],
        ));
        let after = Arc::clone(r.get());
        assert_eq!(get(&after, "service.name"), Some("checkout"));
        assert_eq!(get(&after, "k8s.container.name"), Some("nginx"));
        assert_eq!(
            get(&after, "k8s.pod.label.app.kubernetes.io/name"),
            Some("checkout")
        );
        assert_eq!(get(&after, "k8s.replicaset.name"), Some("web-7d9f8c6b5"));
        assert_eq!(get(&after, "k8s.deployment.name"), Some("web"));
        assert_eq!(get(&after, "k8s.node.name"), Some("node-a"));
        assert_eq!(
            after.iter().filter(|kv| kv.key == "service.name").count(),
            1
        );

        // Deleted, then expired: the file keeps what it had.
        let t0 = Instant::now();
        cache.delete(meta("u-1", &[]), t0);
        let relabelled = Arc::clone(r.get());
        assert!(get(&relabelled, "k8s.pod.label.app.kubernetes.io/name").is_none());
        assert_eq!(get(&relabelled, "service.name"), Some("nginx"));
        cache.expire(t0 + Duration::from_secs(61));
        cache.upsert(meta("u-2", &[]));
        assert!(Arc::ptr_eq(&relabelled, r.get()));
    }

    #[test]
    fn known_pod_at_open_and_files_that_are_not_pod_logs() {
        let cache = Arc::new(PodCache::new(Duration::from_secs(60)));
        cache.upsert(meta("u-1", &[("team", "a")]));
        let mut r = FileResource::new(Path::new(PATH), "n", Some(&cache));
        assert_eq!(get(r.get(), "k8s.pod.label.team"), Some("a"));
        assert_eq!(get(r.get(), "service.name"), Some("nginx"));

        let mut plain = FileResource::new(Path::new("/var/log/syslog"), "n", Some(&cache));
        assert_eq!(get(plain.get(), "service.name"), Some("syslog"));
        let mut off = FileResource::new(Path::new(PATH), "n", None);
        assert!(get(off.get(), "k8s.pod.label.team").is_none());
    }
}
