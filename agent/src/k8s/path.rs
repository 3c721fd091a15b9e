//! Kubernetes metadata from the kubelet's log path, available immediately
//! without the API server:
//! `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log[.<suffix>]`.
//! The pod UID found here is the key into the API-server cache (`pods.rs`).

use std::path::Path;

use periscope_proto::otlp::common::v1::KeyValue;

use crate::parse::enrich::{kv_int, kv_str};

/// Metadata of one container log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLog {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Pod UID.
    pub uid: String,
    /// Container name.
    pub container: String,
    /// Restart count (the file's numeric stem).
    pub restart: i64,
}

/// Recognises a kubelet pod log path; `None` for any other file.
pub fn from_path(path: &Path) -> Option<PodLog> {
    let comps: Vec<&str> = path.iter().filter_map(|c| c.to_str()).collect();
    let n = comps.len();
    if n < 3 {
        return None;
    }
    let (pod_dir, container, file) = (comps[n - 3], comps[n - 2], comps[n - 1]);
    // Namespaces and pod names cannot contain `_`; the UID is the last part.
    let mut it = pod_dir.splitn(3, '_');
    let namespace = it.next().filter(|s| !s.is_empty())?;
    let pod = it.next().filter(|s| !s.is_empty())?;
    let uid = it.next().filter(|s| !s.is_empty())?;
    let stem = file.split('.').next()?;
    let restart: i64 = stem.parse().ok()?;
    if !file[stem.len()..].starts_with(".log") || container.is_empty() {
        return None;
    }
    Some(PodLog {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        uid: uid.to_owned(),
        container: container.to_owned(),
        restart,
    })
}

/// Resource attributes of a tailed file: Kubernetes metadata when the path is
/// a pod log, always the node and the file path.
pub fn resource_attributes(path: &Path, node_name: &str) -> Vec<KeyValue> {
    let mut attrs = Vec::with_capacity(9);
    match from_path(path) {
        Some(p) => {
            attrs.push(kv_str("k8s.namespace.name", p.namespace));
            attrs.push(kv_str("k8s.pod.name", p.pod));
            attrs.push(kv_str("k8s.pod.uid", p.uid));
            attrs.push(kv_str("service.name", p.container.clone()));
            attrs.push(kv_str("k8s.container.name", p.container));
            attrs.push(kv_int("k8s.container.restart_count", p.restart));
        }
        None => {
            let stem = path
                .file_name()
                .and_then(|f| f.to_str())
                .and_then(|f| f.split('.').next())
                .unwrap_or("unknown");
            attrs.push(kv_str("service.name", stem));
        }
    }
    attrs.push(kv_str("k8s.node.name", node_name));
    attrs.push(kv_str("host.name", node_name));
    attrs.push(kv_str("log.file.path", path.to_string_lossy()));
    attrs
}

#[cfg(test)]
mod tests {
    use super::*;
    use periscope_proto::otlp::common::v1::any_value::Value;

    fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    #[test]
    fn fake_pod_tree() {
        let dir = tempfile::tempdir().unwrap();
        let pods = dir.path().join("var/log/pods");
        let cases = [
            (
                "default_web-7d9f_0b1c-22",
                "nginx",
                "0.log",
                Some(("default", "web-7d9f", "0b1c-22", "nginx", 0)),
            ),
            (
                "kube-system_coredns-x_uid9",
                "coredns",
                "3.log",
                Some(("kube-system", "coredns-x", "uid9", "coredns", 3)),
            ),
            (
                "ns_p_u",
                "c",
                "1.log.20261122-101010",
                Some(("ns", "p", "u", "c", 1)),
            ),
            ("nounderscore", "c", "0.log", None),
            ("ns_p_u", "c", "app.log", None),
            ("ns_p_u", "c", "0.txt", None),
        ];
        for (pod_dir, container, file, want) in cases {
            let d = pods.join(pod_dir).join(container);
            std::fs::create_dir_all(&d).unwrap();
            let f = d.join(file);
            std::fs::write(&f, b"x\n").unwrap();
            let got = from_path(&f);
            let want = want.map(|(ns, pod, uid, c, r)| PodLog {
                namespace: ns.into(),
                pod: pod.into(),
                uid: uid.into(),
                container: c.into(),
                restart: r,
            });
            assert_eq!(got, want, "{}", f.display());
        }
        let f = pods.join("default_web-7d9f_0b1c-22/nginx/0.log");
        let attrs = resource_attributes(&f, "node-a");
        assert_eq!(
            get(&attrs, "k8s.namespace.name"),
            Some(&Value::StringValue("default".into()))
        );
        assert_eq!(
            get(&attrs, "k8s.pod.name"),
            Some(&Value::StringValue("web-7d9f".into()))
        );
        assert_eq!(
            get(&attrs, "k8s.pod.uid"),
            Some(&Value::StringValue("0b1c-22".into()))
        );
        assert_eq!(
            get(&attrs, "k8s.container.name"),
            Some(&Value::StringValue("nginx".into()))
        );
        assert_eq!(
            get(&attrs, "service.name"),
            Some(&Value::StringValue("nginx".into()))
        );
        assert_eq!(
            get(&attrs, "k8s.container.restart_count"),
            Some(&Value::IntValue(0))
        );
        assert_eq!(
            get(&attrs, "k8s.node.name"),
            Some(&Value::StringValue("node-a".into()))
        );
        let plain = resource_attributes(Path::new("/var/log/syslog"), "n");
        assert_eq!(
            get(&plain, "service.name"),
            Some(&Value::StringValue("syslog".into()))
        );
        assert!(get(&plain, "k8s.pod.name").is_none());
    }
}
