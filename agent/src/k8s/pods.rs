//! The node's pods as the API server reports them, keyed by pod UID: labels
//! and the controlling owner, turned into OTel resource attributes.
//!
//! The watch task (`watch.rs`) writes; tailed files read through
//! [`FileResource`](super::FileResource). A generation counter moves only
//! when something a resource is built from changes (a new UID, other labels,
//! another owner), so readers check one atomic per read and rebuild rarely;
//! status-only `MODIFIED` events, which are most of a watch's traffic, cost
//! readers nothing. Deleted pods stay for a grace period so that lines read
//! after the deletion (the file is drained after the container is gone)
//! still find their metadata.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use periscope_proto::otlp::common::v1::KeyValue;

use crate::parse::enrich::kv_str;
use crate::sync::RwLockRecover;

/// Upper bound of cached pods (live and deleted within the grace period); a
/// node runs a few hundred at most, so only deletion churn can approach it,
/// and then the longest-deleted entries go first.
const MAX_PODS: usize = 10_000;

/// Label whose value becomes `service.name` (Kubernetes recommended labels).
pub const SERVICE_NAME_LABEL: &str = "app.kubernetes.io/name";

/// The controller owner of a pod (`ownerReferences` entry with `controller: true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Kind, e.g. `ReplicaSet`.
    pub kind: String,
    /// Name.
    pub name: String,
}

/// What the agent keeps of one pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodMeta {
    /// Pod UID (the cache key, also in the log path).
    pub uid: String,
    /// Pod name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Controller owner, if any.
    pub owner: Option<Owner>,
}

impl PodMeta {
    /// Workload names derivable from the owner: the owner's own kind, plus
    /// the Deployment of a ReplicaSet (its name less `-<pod-template-hash>`,
    /// only when the pod's `pod-template-hash` label is that suffix) and the
    /// CronJob of a Job (its name less a `-<minutes since epoch>` suffix of
    /// at least 8 digits, as the CronJob controller names its Jobs).
    pub fn workloads(&self) -> Vec<(&'static str, String)> {
        let Some(o) = &self.owner else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(2);
        match o.kind.as_str() {
            "ReplicaSet" => {
                out.push(("k8s.replicaset.name", o.name.clone()));
                let deployment = self
                    .labels
                    .get("pod-template-hash")
                    .filter(|h| !h.is_empty())
                    .and_then(|h| o.name.strip_suffix(h.as_str()))
                    .and_then(|s| s.strip_suffix('-'))
                    .filter(|s| !s.is_empty());
                if let Some(d) = deployment {
                    out.push(("k8s.deployment.name", d.to_owned()));
                }
            }
            "StatefulSet" => out.push(("k8s.statefulset.name", o.name.clone())),
            "DaemonSet" => out.push(("k8s.daemonset.name", o.name.clone())),
            "Job" => {
                out.push(("k8s.job.name", o.name.clone()));
                let cronjob = o.name.rsplit_once('-').filter(|(c, suffix)| {
                    !c.is_empty() && suffix.len() >= 8 && suffix.bytes().all(|b| b.is_ascii_digit())
                });
                if let Some((c, _)) = cronjob {
                    out.push(("k8s.cronjob.name", c.to_owned()));
                }
            }
            _ => {}
        }
        out
    }

    /// Resource attributes from the API server: `k8s.pod.label.<key>` per
    /// label and the workload names. (`service.name` is the caller's: it
    /// replaces a value derived from the path.)
    pub fn attributes(&self) -> Vec<KeyValue> {
        let workloads = self.workloads();
        let mut out = Vec::with_capacity(self.labels.len() + workloads.len());
        for (k, v) in &self.labels {
            out.push(kv_str(&format!("k8s.pod.label.{k}"), v.as_str()));
        }
        for (k, v) in workloads {
            out.push(kv_str(k, v));
        }
        out
    }

    /// The `app.kubernetes.io/name` label, when set and not empty.
    pub fn service_name(&self) -> Option<&str> {
        self.labels
            .get(SERVICE_NAME_LABEL)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}

#[derive(Debug)]
struct Entry {
    meta: Arc<PodMeta>,
    deleted_at: Option<Instant>,
}

/// Pods of this node by UID; shared by the watch task and the tailer.
#[derive(Debug)]
pub struct PodCache {
    pods: RwLock<HashMap<String, Entry>>,
    generation: AtomicU64,
    grace: Duration,
}

impl PodCache {
    /// An empty cache keeping deleted pods for `grace`.
    pub fn new(grace: Duration) -> Self {
        PodCache {
            pods: RwLock::new(HashMap::new()),
            // Starts at 1 so that a reader's initial 0 always looks once.
            generation: AtomicU64::new(1),
            grace,
        }
    }

    /// Moves whenever a pod appears or its labels or owner change.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The pod with this UID, live or deleted within the grace period.
    pub fn get(&self, uid: &str) -> Option<Arc<PodMeta>> {
        let pods = self.pods.read_or_recover();
        pods.get(uid).map(|e| Arc::clone(&e.meta))
    }

    /// Pods held, deleted ones within their grace period included.
    pub fn len(&self) -> usize {
        self.pods.read_or_recover().len()
    }

    /// No pod held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A pod was added or modified (it is live).
    pub fn upsert(&self, meta: PodMeta) {
        let mut pods = self.pods.write_or_recover();
        if Self::upsert_locked(&mut pods, meta) {
            self.bump();
        }
    }

    /// Returns whether readers must look again.
    fn upsert_locked(pods: &mut HashMap<String, Entry>, meta: PodMeta) -> bool {
        match pods.get_mut(&meta.uid) {
            Some(e) => {
                e.deleted_at = None;
                if *e.meta == meta {
                    false
                } else {
                    e.meta = Arc::new(meta);
                    true
                }
            }
            None => {
                let uid = meta.uid.clone();
                pods.insert(
                    uid,
                    Entry {
                        meta: Arc::new(meta),
                        deleted_at: None,
                    },
                );
                true
            }
        }
    }

    /// A pod was deleted: kept until `now + grace`. Its last state is taken
    /// too, in case the pod was never seen alive.
    pub fn delete(&self, meta: PodMeta, now: Instant) {
        let mut pods = self.pods.write_or_recover();
        let changed = Self::upsert_locked(&mut pods, meta.clone());
        if let Some(e) = pods.get_mut(&meta.uid) {
            e.deleted_at = Some(now);
        }
        Self::enforce_cap(&mut pods);
        drop(pods);
        if changed {
            self.bump();
        }
    }

    /// The result of a full list: every listed pod is live, every other live
    /// pod was deleted while the watch was away (kept for the grace period).
    pub fn replace(&self, list: Vec<PodMeta>, now: Instant) {
        let mut pods = self.pods.write_or_recover();
        let mut changed = false;
        let mut listed = std::collections::HashSet::with_capacity(list.len());
        for meta in list {
            listed.insert(meta.uid.clone());
            changed |= Self::upsert_locked(&mut pods, meta);
        }
        for (uid, e) in pods.iter_mut() {
            if e.deleted_at.is_none() && !listed.contains(uid) {
                e.deleted_at = Some(now);
            }
        }
        Self::enforce_cap(&mut pods);
        drop(pods);
        if changed {
            self.bump();
        }
    }

    /// Forgets pods deleted at least the grace period before `now`; returns
    /// how many. Files that already carry their metadata keep it.
    pub fn expire(&self, now: Instant) -> usize {
        let mut pods = self.pods.write_or_recover();
        let before = pods.len();
        pods.retain(|_, e| {
            e.deleted_at
                .is_none_or(|d| now.saturating_duration_since(d) < self.grace)
        });
        before - pods.len()
    }

    fn enforce_cap(pods: &mut HashMap<String, Entry>) {
        if pods.len() <= MAX_PODS {
            return;
        }
        let mut deleted: Vec<(Instant, String)> = pods
            .iter()
            .filter_map(|(uid, e)| e.deleted_at.map(|d| (d, uid.clone())))
            .collect();
        deleted.sort();
        let excess = pods.len() - MAX_PODS;
        for (_, uid) in deleted.into_iter().take(excess) {
            pods.remove(&uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, labels: &[(&str, &str)], owner: Option<(&str, &str)>) -> PodMeta {
        PodMeta {
            uid: uid.into(),
            name: format!("pod-{uid}"),
            namespace: "ns".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            owner: owner.map(|(kind, name)| Owner {
                kind: kind.into(),
                name: name.into(),
            }),
        }
    }

    #[test]
    fn owner_derivation() {
        let hash = [("pod-template-hash", "7d9f8c6b5")];
        let cases: Vec<(PodMeta, Vec<(&str, &str)>)> = vec![
            (
                pod("a", &hash, Some(("ReplicaSet", "web-7d9f8c6b5"))),
                vec![
                    ("k8s.replicaset.name", "web-7d9f8c6b5"),
                    ("k8s.deployment.name", "web"),
                ],
            ),
            (
                pod("a", &hash, Some(("ReplicaSet", "my-web-app-7d9f8c6b5"))),
                vec![
                    ("k8s.replicaset.name", "my-web-app-7d9f8c6b5"),
                    ("k8s.deployment.name", "my-web-app"),
                ],
            ),
            // A ReplicaSet of its own (no Deployment): the hash label does not match.
            (
                pod("a", &[], Some(("ReplicaSet", "web-abc"))),
                vec![("k8s.replicaset.name", "web-abc")],
            ),
            (
                pod(
                    "a",
                    &[("pod-template-hash", "zzz")],
                    Some(("ReplicaSet", "web-abc")),
                ),
                vec![("k8s.replicaset.name", "web-abc")],
            ),
            (
                pod(
                    "a",
                    &[("pod-template-hash", "abc")],
                    Some(("ReplicaSet", "webabc")),
                ),
                vec![("k8s.replicaset.name", "webabc")],
            ),
            (
                pod("a", &[], Some(("StatefulSet", "db"))),
                vec![("k8s.statefulset.name", "db")],
            ),
            (
                pod("a", &[], Some(("DaemonSet", "fluent"))),
                vec![("k8s.daemonset.name", "fluent")],
            ),
            (
                pod("a", &[], Some(("Job", "backup-29412345"))),
                vec![
                    ("k8s.job.name", "backup-29412345"),
                    ("k8s.cronjob.name", "backup"),
                ],
            ),
            (
                pod("a", &[], Some(("Job", "migrate-v2"))),
                vec![("k8s.job.name", "migrate-v2")],
            ),
            (
                pod("a", &[], Some(("Job", "migrate-123"))),
                vec![("k8s.job.name", "migrate-123")],
            ),
            (pod("a", &[], Some(("Node", "node-1"))), vec![]),
            (pod("a", &[], None), vec![]),
        ];
        for (p, want) in cases {
            let got = p.workloads();
            let got: Vec<(&str, &str)> = got.iter().map(|(k, v)| (*k, v.as_str())).collect();
            assert_eq!(got, want, "{:?}", p.owner);
        }
    }

    #[test]
    fn attributes_and_service_name() {
        let p = pod(
            "u",
            &[("app.kubernetes.io/name", "checkout"), ("tier", "web")],
            Some(("StatefulSet", "db")),
        );
        let attrs: Vec<(String, String)> = p
            .attributes()
            .into_iter()
            .map(|kv| {
                let v = match kv.value.and_then(|v| v.value) {
                    Some(periscope_proto::otlp::common::v1::any_value::Value::StringValue(s)) => s,
                    other => panic!("{other:?}"),
                };
                (kv.key, v)
            })
            .collect();
        assert_eq!(
            attrs,
            vec![
                (
                    "k8s.pod.label.app.kubernetes.io/name".into(),
                    "checkout".into()
                ),
                ("k8s.pod.label.tier".into(), "web".into()),
                ("k8s.statefulset.name".into(), "db".into()),
            ]
        );
        assert_eq!(p.service_name(), Some("checkout"));
        assert_eq!(
            pod("u", &[(SERVICE_NAME_LABEL, "")], None).service_name(),
            None
        );
        assert_eq!(pod("u", &[], None).service_name(), None);
    }

    #[test]
    fn generation_moves_only_on_relevant_changes() {
        let c = PodCache::new(Duration::from_secs(60));
        let g0 = c.generation();
        c.upsert(pod("a", &[("x", "1")], None));
        let g1 = c.generation();
        assert!(g1 > g0);
        // The same labels and owner again (a status-only MODIFIED): no change.
        c.upsert(pod("a", &[("x", "1")], None));
        assert_eq!(c.generation(), g1);
        c.upsert(pod("a", &[("x", "2")], None));
        let g2 = c.generation();
        assert!(g2 > g1);
        assert_eq!(c.get("a").unwrap().labels["x"], "2");
        // Deleting a known pod changes nothing readers see.
        c.delete(pod("a", &[("x", "2")], None), Instant::now());
        assert_eq!(c.generation(), g2);
        assert!(c.get("a").is_some());
        // A deletion of a pod never seen alive brings its metadata.
        c.delete(pod("b", &[], None), Instant::now());
        assert!(c.generation() > g2);
        assert!(c.get("b").is_some());
    }

    #[test]
    fn grace_period_expiry() {
        let grace = Duration::from_secs(300);
        let c = PodCache::new(grace);
        let t0 = Instant::now();
        c.upsert(pod("live", &[], None));
        c.upsert(pod("gone", &[], None));
        c.delete(pod("gone", &[], None), t0);
        assert_eq!(c.expire(t0 + grace - Duration::from_secs(1)), 0);
        assert!(c.get("gone").is_some(), "kept within the grace period");
        assert_eq!(c.expire(t0 + grace), 1);
        assert!(c.get("gone").is_none());
        assert!(c.get("live").is_some(), "live pods never expire");
        assert_eq!(c.expire(t0 + grace * 100), 0);

        // Re-added within the grace period: live again, never expires.
        c.upsert(pod("back", &[], None));
        c.delete(pod("back", &[], None), t0);
        c.upsert(pod("back", &[], None));
        assert_eq!(c.expire(t0 + grace * 2), 0);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn relist_marks_missing_pods_deleted() {
        let grace = Duration::from_secs(60);
        let c = PodCache::new(grace);
        let t0 = Instant::now();
        c.upsert(pod("a", &[], None));
        c.upsert(pod("b", &[], None));
        c.replace(vec![pod("b", &[], None), pod("c", &[], None)], t0);
        assert_eq!(c.len(), 3, "a is kept for its grace period");
        assert_eq!(c.expire(t0 + grace), 1);
        assert!(c.get("a").is_none());
        assert!(c.get("b").is_some() && c.get("c").is_some());
    }

    #[test]
    fn cap_drops_longest_deleted_first() {
        let c = PodCache::new(Duration::from_secs(3600));
        let t0 = Instant::now();
        c.upsert(pod("live", &[], None));
        for i in 0..MAX_PODS {
            c.delete(
                pod(&format!("d{i}"), &[], None),
                t0 + Duration::from_millis(i as u64),
            );
        }
        assert_eq!(c.len(), MAX_PODS);
        assert!(c.get("live").is_some());
        assert!(c.get("d0").is_none(), "the longest-deleted went first");
        assert!(c.get(&format!("d{}", MAX_PODS - 1)).is_some());
    }
}
