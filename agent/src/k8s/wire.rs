//! The API server's JSON, reduced to the fields the agent reads: a `PodList`
//! (`GET /api/v1/pods`) and watch events (`?watch=true`: one
//! `{"type": ..., "object": ...}` per line, see the Kubernetes API concepts,
//! "Efficient detection of changes"). Everything else in a pod (spec,
//! status) is skipped by serde without being kept.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::pods::{Owner, PodMeta};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectMeta {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    owner_references: Option<Vec<OwnerReference>>,
    #[serde(default)]
    resource_version: String,
}

#[derive(Debug, Deserialize)]
struct OwnerReference {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    controller: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    #[serde(default)]
    resource_version: String,
}

#[derive(Debug, Deserialize)]
struct Pod {
    #[serde(default)]
    metadata: ObjectMeta,
}

#[derive(Debug, Deserialize)]
struct PodListWire {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Option<Vec<Pod>>,
}

/// A watch event's object: a pod, a bookmark (only
/// `metadata.resourceVersion`) or, for `ERROR`, a `Status`.
#[derive(Debug, Deserialize)]
struct EventObject {
    #[serde(default)]
    metadata: ObjectMeta,
    /// `Status.code` (HTTP status) of an `ERROR` event.
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: String,
    object: EventObject,
}

/// A decoded pod list.
#[derive(Debug, PartialEq)]
pub struct PodList {
    /// The pods (those without a UID are skipped).
    pub pods: Vec<PodMeta>,
    /// Where the watch starts.
    pub resource_version: String,
}

/// A decoded watch event.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// `ADDED` or `MODIFIED`: the pod is live.
    Upsert(PodMeta, String),
    /// `DELETED`, with the pod's last state.
    Deleted(PodMeta, String),
    /// `BOOKMARK`: only a newer resource version.
    Bookmark(String),
    /// `ERROR` with a `Status`: code 410 (Gone, the resource version is too
    /// old) means relist.
    Error {
        /// HTTP status code of the `Status` (0 when absent).
        code: u16,
        /// `reason: message`.
        message: String,
    },
    /// A type this agent does not know; skipped.
    Other(String),
}

fn owner(refs: Option<Vec<OwnerReference>>) -> Option<Owner> {
    let refs = refs.unwrap_or_default();
    // The controller is the owner that manages the pod; a pod has at most
    // one. Without one marked, the first reference is the best guess.
    let pick = refs
        .iter()
        .position(|r| r.controller == Some(true))
        .or((!refs.is_empty()).then_some(0))?;
    let r = refs.into_iter().nth(pick)?;
    (!r.kind.is_empty() && !r.name.is_empty()).then_some(Owner {
        kind: r.kind,
        name: r.name,
    })
}

fn pod_meta(m: ObjectMeta) -> (PodMeta, String) {
    let meta = PodMeta {
        uid: m.uid,
        name: m.name,
        namespace: m.namespace,
        labels: m.labels.unwrap_or_default(),
        owner: owner(m.owner_references),
    };
    (meta, m.resource_version)
}

/// Decodes the body of `GET /api/v1/pods`.
pub fn parse_pod_list(body: &[u8]) -> Result<PodList, serde_json::Error> {
    let w: PodListWire = serde_json::from_slice(body)?;
    let pods = w
        .items
        .unwrap_or_default()
        .into_iter()
        .map(|p| pod_meta(p.metadata).0)
        .filter(|p| !p.uid.is_empty())
        .collect();
    Ok(PodList {
        pods,
        resource_version: w.metadata.resource_version,
    })
}

/// Decodes one line of a watch stream.
pub fn parse_event(line: &[u8]) -> Result<Event, serde_json::Error> {
    let e: RawEvent = serde_json::from_slice(line)?;
    Ok(match e.kind.as_str() {
        "ADDED" | "MODIFIED" | "DELETED" if e.object.metadata.uid.is_empty() => {
            Event::Other(format!("{} without a uid", e.kind))
        }
        "ADDED" | "MODIFIED" => {
            let (m, rv) = pod_meta(e.object.metadata);
            Event::Upsert(m, rv)
        }
        "DELETED" => {
            let (m, rv) = pod_meta(e.object.metadata);
            Event::Deleted(m, rv)
        }
        "BOOKMARK" => Event::Bookmark(e.object.metadata.resource_version),
        "ERROR" => Event::Error {
            code: e.object.code.unwrap_or(0),
            message: format!(
                "{}: {}",
                e.object.reason.unwrap_or_default(),
                e.object.message.unwrap_or_default()
            ),
        },
        other => Event::Other(other.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD_LIST: &str = r#"{
      "kind": "PodList", "apiVersion": "v1",
      "metadata": {"resourceVersion": "1234"},
      "items": [
        {"metadata": {"name": "web-7d9f8c6b5-x2x4z", "namespace": "shop", "uid": "u-1",
           "resourceVersion": "1200",
           "labels": {"app.kubernetes.io/name": "checkout", "pod-template-hash": "7d9f8c6b5"},
           "ownerReferences": [
             {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "x"},
             {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8c6b5", "uid": "rs", "controller": true, "blockOwnerDeletion": true}
           ]},
         "spec": {"nodeName": "node-1", "containers": [{"name": "nginx", "image": "nginx"}]},
         "status": {"phase": "Running", "podIP": "10.0.0.7"}},
        {"metadata": {"name": "static", "namespace": "kube-system", "uid": "u-2", "labels": null}},
        {"metadata": {"name": "no-uid", "namespace": "x"}}
      ]
    }"#;

    #[test]
    fn pod_list() {
        let l = parse_pod_list(POD_LIST.as_bytes()).unwrap();
        assert_eq!(l.resource_version, "1234");
        assert_eq!(l.pods.len(), 2, "the pod without a uid is skipped");
        let p = &l.pods[0];
        assert_eq!(
            (p.uid.as_str(), p.name.as_str(), p.namespace.as_str()),
            ("u-1", "web-7d9f8c6b5-x2x4z", "shop")
        );
        assert_eq!(p.labels["app.kubernetes.io/name"], "checkout");
        assert_eq!(
            p.owner,
            Some(Owner {
                kind: "ReplicaSet".into(),
                name: "web-7d9f8c6b5".into()
            }),
            "the controller reference, not the first"
        );
        assert!(l.pods[1].labels.is_empty());
        assert_eq!(l.pods[1].owner, None);
        // An empty list (`items: null` from some servers).
        let e = parse_pod_list(br#"{"metadata":{"resourceVersion":"9"},"items":null}"#).unwrap();
        assert_eq!((e.pods.len(), e.resource_version.as_str()), (0, "9"));
        assert!(parse_pod_list(b"{not json").is_err());
        assert!(parse_pod_list(br#"{"items": 5}"#).is_err());
    }

    #[test]
    fn watch_events() {
        let pod = |uid: &str, labels: &[(&str, &str)]| PodMeta {
            uid: uid.into(),
            name: "p".into(),
            namespace: "ns".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            owner: None,
        };
        let cases: Vec<(&str, Event)> = vec![
            (
                r#"{"type":"ADDED","object":{"kind":"Pod","metadata":{"uid":"a","name":"p","namespace":"ns","resourceVersion":"10","labels":{"x":"1"}},"status":{"phase":"Pending"}}}"#,
                Event::Upsert(pod("a", &[("x", "1")]), "10".into()),
            ),
            (
                r#"{"type":"MODIFIED","object":{"kind":"Pod","metadata":{"uid":"a","name":"p","namespace":"ns","resourceVersion":"11"}}}"#,
                Event::Upsert(pod("a", &[]), "11".into()),
            ),
            (
                r#"{"type":"DELETED","object":{"kind":"Pod","metadata":{"uid":"a","name":"p","namespace":"ns","resourceVersion":"12","deletionTimestamp":"2026-12-05T10:00:00Z"}}}"#,
                Event::Deleted(pod("a", &[]), "12".into()),
            ),
            (
                r#"{"type":"BOOKMARK","object":{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"13","annotations":{"k8s.io/initial-events-end":"true"}}}}"#,
                Event::Bookmark("13".into()),
            ),
            (
                r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 5 (1234)","reason":"Expired","code":410}}"#,
                Event::Error {
                    code: 410,
                    message: "Expired: too old resource version: 5 (1234)".into(),
                },
            ),
            (
                r#"{"type":"ERROR","object":{"kind":"Status","status":"Failure","message":"etcd timeout","reason":"InternalError","code":500}}"#,
                Event::Error {
                    code: 500,
                    message: "InternalError: etcd timeout".into(),
                },
            ),
            (
                r#"{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"no-uid"}}}"#,
                Event::Other("ADDED without a uid".into()),
            ),
            (
                r#"{"type":"SOMETHING","object":{}}"#,
                Event::Other("SOMETHING".into()),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse_event(line.as_bytes()).unwrap(), want, "{line}");
        }
        for bad in [
            &b""[..],
            b"{",
            br#"{"type":"ADDED"}"#,
            br#"{"object":{}}"#,
            br#"{"type":"ADDED","object":{"metadata":{"uid":5}}}"#,
            b"\xff\xfe",
        ] {
            assert!(
                parse_event(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
