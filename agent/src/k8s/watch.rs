//! The node-scoped pod watch: list this node's pods
//! (`fieldSelector=spec.nodeName=<node>`), then watch from the list's
//! resource version with bookmarks, feeding [`PodCache`]. Transport errors
//! reconnect from the last resource version after a backoff; a 410 Gone
//! (status or `ERROR` event) relists at once; other `ERROR` events relist
//! after a backoff. The server ends each watch after `timeoutSeconds`
//! (randomised, so agents do not reconnect in step), which also picks up a
//! rotated token. Tailing never waits for any of this: until the first list
//! arrives, and while the API server is away, files keep their path metadata.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::Rng;

use super::client::{ApiError, Client};
use super::pods::PodCache;
use super::wire::{self, Event};
use crate::telemetry::Stats;

/// Bound of connecting and the response head.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound of reading a whole pod list.
const LIST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest pod list accepted (a node's pods are a few MiB at most).
const MAX_LIST_BYTES: usize = 64 << 20;
/// Largest watch event accepted (etcd caps an object at 1.5 MiB).
const MAX_EVENT_BYTES: usize = 8 << 20;
/// Watch duration asked of the server, in seconds, before jitter.
const WATCH_SECONDS: u64 = 300;
/// A watch silent for this long past its timeout is considered dead.
const WATCH_SLACK: Duration = Duration::from_secs(60);
/// A watch ended sooner than this waits a backoff before the next request.
const MIN_QUIET_WATCH: Duration = Duration::from_secs(1);
/// How often deleted pods past their grace period are dropped.
const EXPIRE_EVERY: Duration = Duration::from_secs(10);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// At most one warning per this interval; the rest go to debug.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The list request of this node's pods.
pub fn list_path(node: &str) -> String {
    format!(
        "/api/v1/pods?fieldSelector={}",
        encode(&format!("spec.nodeName={node}"))
    )
}

/// The watch request from `resource_version`.
pub fn watch_path(node: &str, resource_version: &str, timeout_s: u64) -> String {
    format!(
        "{}&watch=true&resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds={timeout_s}",
        list_path(node),
        encode(resource_version)
    )
}

/// Splits a byte stream into lines of bounded length.
#[derive(Debug, Default)]
pub struct Lines {
    buf: Vec<u8>,
}

impl Lines {
    /// Appends `data`; complete lines (without `\n`, empty ones skipped) go to `f`.
    pub fn push(
        &mut self,
        data: &[u8],
        max: usize,
        mut f: impl FnMut(&[u8]) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        let mut rest = data;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            let piece = &rest[..i];
            rest = &rest[i + 1..];
            if self.buf.is_empty() {
                if !piece.trim_ascii().is_empty() {
                    f(piece)?;
                }
            } else {
                self.buf.extend_from_slice(piece);
                let line = std::mem::take(&mut self.buf);
                if !line.trim_ascii().is_empty() {
                    f(&line)?;
                }
            }
        }
        self.buf.extend_from_slice(rest);
        if self.buf.len() > max {
            self.buf.clear();
            return Err(ApiError::TooLarge("watch event", max));
        }
        Ok(())
    }
}

/// Rate-limited warnings for a failing API server.
#[derive(Debug, Default)]
struct Warn {
    last: Option<Instant>,
    suppressed: u64,
    failing: bool,
}

impl Warn {
    fn error(&mut self, what: &str, e: &ApiError, stats: &Stats) {
        Stats::add(&stats.k8s_watch_errors, 1);
        self.failing = true;
        let now = Instant::now();
        if self
            .last
            .is_none_or(|t| now.duration_since(t) >= WARN_EVERY)
        {
            tracing::warn!(error = %e, suppressed = self.suppressed, "{what} failed; pods keep the metadata from their log paths until the API server answers");
            self.last = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
            tracing::debug!(error = %e, "{what} failed");
        }
    }

    fn ok(&mut self, what: &str, pods: usize) {
        if self.failing {
            tracing::info!(pods, "{what} succeeded; API-server enrichment resumed");
            self.failing = false;
        }
    }
}

/// Full-jitter exponential backoff.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff { next: BACKOFF_MIN }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    fn delay(&mut self) -> Duration {
        let cap = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        let ms = rand::rng().random_range(cap.as_millis() as u64 / 2..=cap.as_millis() as u64);
        Duration::from_millis(ms)
    }
}

fn publish(cache: &PodCache, stats: &Stats) {
    stats
        .k8s_pods_cached
        .store(cache.len() as u64, Ordering::Relaxed);
}

/// Lists the node's pods into the cache; returns the resource version.
async fn list(client: &Client, node: &str, cache: &PodCache) -> Result<(String, usize), ApiError> {
    let read = async {
        let mut body = client.get(&list_path(node), CONNECT_TIMEOUT).await?;
        body.read_all(MAX_LIST_BYTES, "pod list").await
    };
    let bytes = tokio::time::timeout(LIST_TIMEOUT, read)
        .await
        .map_err(|_| ApiError::Timeout(LIST_TIMEOUT, "reading the pod list"))??;
    let list = wire::parse_pod_list(&bytes)?;
    let n = list.pods.len();
    cache.replace(list.pods, Instant::now());
    Ok((list.resource_version, n))
}

/// Applies one watch event; advances `rv`.
pub fn apply(event: Event, cache: &PodCache, rv: &mut String) -> Result<(), ApiError> {
    match event {
        Event::Upsert(meta, v) => {
            cache.upsert(meta);
            if !v.is_empty() {
                *rv = v;
            }
        }
        Event::Deleted(meta, v) => {
            cache.delete(meta, Instant::now());
            if !v.is_empty() {
                *rv = v;
            }
        }
        Event::Bookmark(v) => {
            if !v.is_empty() {
                *rv = v;
            }
        }
        Event::Error { code: 410, .. } => return Err(ApiError::Gone),
        Event::Error { code, message } => return Err(ApiError::WatchError { code, message }),
        Event::Other(kind) => tracing::debug!(kind, "watch event skipped"),
    }
    Ok(())
}

/// One watch request, until the server ends it (`Ok`) or an error.
async fn watch(
    client: &Client,
    node: &str,
    rv: &mut String,
    cache: &PodCache,
    stats: &Stats,
) -> Result<(), ApiError> {
    let secs = WATCH_SECONDS + rand::rng().random_range(0..WATCH_SECONDS / 2);
    let mut body = client
        .get(&watch_path(node, rv, secs), CONNECT_TIMEOUT)
        .await?;
    let idle = Duration::from_secs(secs) + WATCH_SLACK;
    let mut lines = Lines::default();
    loop {
        let chunk = tokio::time::timeout(idle, body.chunk())
            .await
            .map_err(|_| ApiError::Timeout(idle, "waiting for watch events"))??;
        let Some(chunk) = chunk else {
            return Ok(());
        };
        lines.push(&chunk, MAX_EVENT_BYTES, |line| {
            Stats::add(&stats.k8s_watch_events, 1);
            let r = apply(wire::parse_event(line)?, cache, rv);
            publish(cache, stats);
            r
        })?;
    }
}

/// Runs the list/watch loop forever (the runtime's shutdown ends it).
pub async fn run(client: Client, node: String, cache: Arc<PodCache>, stats: Arc<Stats>) {
    {
        let (cache, stats) = (Arc::clone(&cache), Arc::clone(&stats));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EXPIRE_EVERY);
            loop {
                tick.tick().await;
                if cache.expire(Instant::now()) > 0 {
                    publish(&cache, &stats);
                }
            }
        });
    }
    tracing::info!(server = %client.server(), node = %node, "watching this node's pods on the API server");
    let mut backoff = Backoff::new();
    let mut warn = Warn::default();
    let mut rv: Option<String> = None;
    loop {
        let mut current = match rv.take() {
            Some(v) => v,
            None => match list(&client, &node, &cache).await {
                Ok((v, n)) => {
                    Stats::add(&stats.k8s_relists, 1);
                    publish(&cache, &stats);
                    warn.ok("pod list", n);
                    tracing::debug!(pods = n, resource_version = %v, "pods listed");
                    v
                }
                Err(e) => {
                    warn.error("pod list", &e, &stats);
                    tokio::time::sleep(backoff.delay()).await;
                    continue;
                }
            },
        };
        let started = Instant::now();
        let result = watch(&client, &node, &mut current, &cache, &stats).await;
        // A server that ends watches at once (or answers every one with
        // 410) must not be hammered: such short watches wait a backoff.
        let mut pause = || {
            if started.elapsed() < MIN_QUIET_WATCH {
                Some(backoff.delay())
            } else {
                backoff.reset();
                None
            }
        };
        match result {
            Ok(()) => {
                if let Some(d) = pause() {
                    tokio::time::sleep(d).await;
                }
                warn.ok("pod watch", cache.len());
                rv = Some(current);
            }
            Err(ApiError::Gone) => {
                // Normal after a long disconnection: relist.
                tracing::debug!("watch resource version expired; relisting");
                if let Some(d) = pause() {
                    tokio::time::sleep(d).await;
                }
            }
            Err(e @ ApiError::WatchError { .. }) => {
                warn.error("pod watch", &e, &stats);
                tokio::time::sleep(backoff.delay()).await;
            }
            Err(e) => {
                warn.error("pod watch", &e, &stats);
                rv = Some(current);
                tokio::time::sleep(backoff.delay()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::pods::PodMeta;

    #[test]
    fn paths() {
        assert_eq!(
            list_path("node-1"),
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1"
        );
        assert_eq!(
            watch_path("n", "123", 300),
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dn&watch=true&resourceVersion=123&allowWatchBookmarks=true&timeoutSeconds=300"
        );
    }

    #[test]
    fn lines_split_across_chunks_and_bounded() {
        let mut l = Lines::default();
        let mut got: Vec<String> = Vec::new();
        let mut push = |l: &mut Lines, d: &[u8]| {
            l.push(d, 16, |line| {
                got.push(String::from_utf8(line.to_vec()).unwrap());
                Ok(())
            })
        };
        push(&mut l, b"{\"a\"").unwrap();
        push(&mut l, b":1}\n{\"b\":2}\n\n{").unwrap();
        push(&mut l, b"}\n").unwrap();
        assert!(
            push(&mut l, b"0123456789abcdefXYZ").is_err(),
            "over the bound"
        );
        push(&mut l, b"{}\n").unwrap();
        assert_eq!(got, vec!["{\"a\":1}", "{\"b\":2}", "{}", "{}"]);
    }

    #[test]
    fn events_move_the_resource_version_and_410_relists() {
        let cache = PodCache::new(Duration::from_secs(60));
        let mut rv = "1".to_owned();
        let pod = PodMeta {
            uid: "u".into(),
            ..Default::default()
        };
        apply(Event::Upsert(pod.clone(), "5".into()), &cache, &mut rv).unwrap();
        assert_eq!((rv.as_str(), cache.len()), ("5", 1));
        apply(Event::Bookmark("7".into()), &cache, &mut rv).unwrap();
        assert_eq!(rv, "7");
        apply(Event::Deleted(pod, "8".into()), &cache, &mut rv).unwrap();
        assert_eq!(
            (rv.as_str(), cache.len()),
            ("8", 1),
            "kept for the grace period"
        );
        let gone = Event::Error {
            code: 410,
            message: "Expired".into(),
        };
        assert!(matches!(apply(gone, &cache, &mut rv), Err(ApiError::Gone)));
        let other = Event::Error {
            code: 500,
            message: "x".into(),
        };
        assert!(matches!(
            apply(other, &cache, &mut rv),
            Err(ApiError::WatchError { code: 500, .. })
        ));
        apply(Event::Other("X".into()), &cache, &mut rv).unwrap();
        assert_eq!(rv, "8");
    }

    /// A scripted API server: lists answer from `lists` in turn, watches
    /// stream `watches` in turn (the last one stays open); every request
    /// line and `Authorization` header is recorded.
    async fn fake_api(
        lists: Vec<String>,
        watches: Vec<Vec<String>>,
    ) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            let (mut lists, mut watches) = (lists.into_iter(), watches.into_iter());
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = sock.read(&mut buf).await.unwrap();
                    assert!(n > 0, "request cut short");
                    head.extend_from_slice(&buf[..n]);
                }
                let head = String::from_utf8(head).unwrap();
                let line = head.lines().next().unwrap().to_owned();
                let auth = head
                    .lines()
                    .find_map(|l| l.strip_prefix("authorization: "))
                    .unwrap_or("-")
                    .to_owned();
                log.lock().unwrap().push(format!("{line} {auth}"));
                if line.contains("watch=true") {
                    let events = watches.next().unwrap_or_default();
                    let last = watches.len() == 0;
                    let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
                    for e in events {
                        // Each event split over two chunks, as a proxy may.
                        let (a, b) = e.as_bytes().split_at(e.len() / 2);
                        for part in [a, b, b"\n"] {
                            out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                            out.extend_from_slice(part);
                            out.extend_from_slice(b"\r\n");
                        }
                    }
                    sock.write_all(&out).await.unwrap();
                    if last {
                        // Held open, as a quiet watch is.
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            drop(sock);
                        });
                    } else {
                        sock.write_all(b"0\r\n\r\n").await.unwrap();
                    }
                } else {
                    let body = lists.next().unwrap_or_else(|| {
                        r#"{"metadata":{"resourceVersion":"1"},"items":[]}"#.into()
                    });
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    sock.write_all(resp.as_bytes()).await.unwrap();
                }
            }
        });
        (url, seen)
    }

    fn pod_json(uid: &str, rv: &str) -> String {
        format!(
            r#"{{"metadata":{{"uid":"{uid}","name":"p-{uid}","namespace":"ns","resourceVersion":"{rv}","labels":{{"app.kubernetes.io/name":"svc-{uid}"}}}}}}"#
        )
    }

    #[tokio::test]
    async fn lists_watches_and_relists_after_410() {
        let lists = vec![
            format!(
                r#"{{"metadata":{{"resourceVersion":"10"}},"items":[{}]}}"#,
                pod_json("a", "9")
            ),
            format!(
                r#"{{"metadata":{{"resourceVersion":"20"}},"items":[{}]}}"#,
                pod_json("b", "19")
            ),
        ];
        let watches = vec![
            vec![
                format!(r#"{{"type":"ADDED","object":{}}}"#, pod_json("c", "11")),
                r#"{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"12"}}}"#.to_owned(),
                r#"{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old"}}"#.to_owned(),
            ],
            vec![format!(r#"{{"type":"ADDED","object":{}}}"#, pod_json("d", "21"))],
        ];
        let (url, seen) = fake_api(lists, watches).await;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let client = Client::new(&super::super::ApiOptions {
            url: Some(url),
            token_file: Some(token),
            ca_file: None,
        })
        .unwrap();
        let cache = Arc::new(PodCache::new(Duration::from_secs(300)));
        let stats = Arc::new(Stats::default());
        tokio::spawn(run(
            client,
            "node-1".into(),
            Arc::clone(&cache),
            Arc::clone(&stats),
        ));

        // Bounded wait for the last event of the script (not a timing assertion).
        for _ in 0..400 {
            if cache.get("d").is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(
            cache.get("d").is_some(),
            "requests: {:?}",
            seen.lock().unwrap()
        );
        // a: listed, then gone from the relist (kept for its grace period);
        // b from the relist, c from the first watch, d from the second.
        for uid in ["a", "b", "c", "d"] {
            assert_eq!(
                cache.get(uid).unwrap().service_name(),
                Some(format!("svc-{uid}").as_str())
            );
        }
        let seen = seen.lock().unwrap().clone();
        let sel = "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1";
        let want = [
            format!("GET {sel} HTTP/1.1"),
            format!(
                "GET {sel}&watch=true&resourceVersion=10&allowWatchBookmarks=true&timeoutSeconds="
            ),
            format!("GET {sel} HTTP/1.1"),
            format!(
                "GET {sel}&watch=true&resourceVersion=20&allowWatchBookmarks=true&timeoutSeconds="
            ),
        ];
        assert_eq!(seen.len(), want.len(), "{seen:?}");
        for (got, want) in seen.iter().zip(want) {
            assert!(got.starts_with(&want), "{got} does not start with {want}");
            assert!(got.ends_with(" Bearer s3cret"), "{got}");
        }
        assert_eq!(stats.k8s_relists.load(Ordering::Relaxed), 2);
        assert_eq!(
            stats.k8s_watch_errors.load(Ordering::Relaxed),
            0,
            "410 is not an error"
        );
        assert_eq!(stats.k8s_pods_cached.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn unreachable_server_counts_errors_and_keeps_trying() {
        // A port that refuses: bound, then closed.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let client = Client::new(&super::super::ApiOptions {
            url: Some(format!("http://{addr}")),
            token_file: None,
            ca_file: None,
        })
        .unwrap();
        let cache = Arc::new(PodCache::new(Duration::from_secs(300)));
        let stats = Arc::new(Stats::default());
        tokio::spawn(run(
            client,
            "n".into(),
            Arc::clone(&cache),
            Arc::clone(&stats),
        ));
        for _ in 0..400 {
            if stats.k8s_watch_errors.load(Ordering::Relaxed) >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(stats.k8s_watch_errors.load(Ordering::Relaxed) >= 2);
        assert!(cache.is_empty());
    }

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut b = Backoff::new();
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            last = b.delay();
            assert!(last <= BACKOFF_MAX);
        }
        assert!(last >= BACKOFF_MAX / 2);
        b.reset();
        assert!(b.delay() <= BACKOFF_MIN);
    }
}
