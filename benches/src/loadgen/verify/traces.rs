//! `--verify` for traces: fetches every acknowledged trace (or a random
//! sample, `--verify-sample`) with `GET /api/v1/traces/{trace_id}` until each
//! holds exactly the spans sent, each span once.
//!
//! Polling goes in rounds: a round fetches the traces still incomplete,
//! [`CONCURRENCY`] at a time, and rounds repeat until none is left or the
//! deadline passes. A trace is settled once the API returns at least as many
//! spans as were sent; anything beyond that is duplicates or strangers, which
//! waiting will not remove.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use periscope_benches::TraceRef;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::task::JoinSet;

use super::{POLL_EVERY, Verify};

/// Trace fetches in flight.
const CONCURRENCY: usize = 16;

/// The spans the API returned for one trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    spans: u64,
    distinct: u64,
}

/// One fetch of a round: which trace, what came back, and when.
struct Fetched {
    index: usize,
    result: anyhow::Result<Option<Seen>>,
    at: Instant,
}

/// What fetching the traces found.
#[derive(Debug)]
pub struct TraceOutcome {
    /// Traces acknowledged with no span rejected.
    pub acked: usize,
    /// Of those, the traces checked: all, or a random sample.
    pub checked: usize,
    /// Spans of the checked traces.
    pub spans: u64,
    /// Checked traces found with exactly their spans, each once.
    pub complete: usize,
    /// Checked traces never found.
    pub not_found: usize,
    /// Spans missing from the checked traces (all of those not found).
    pub missing_spans: u64,
    /// Spans returned more than once.
    pub duplicated_spans: u64,
    /// Distinct spans beyond a trace's span count.
    pub unexpected_spans: u64,
    /// Traces were still incomplete when the timeout ran out.
    pub timed_out: bool,
    /// When every checked trace was complete: how long after the last
    /// acknowledgement the last one was seen complete.
    pub after: Option<Duration>,
    pub last_error: Option<String>,
    pub timeout: Duration,
}

impl TraceOutcome {
    pub fn ok(&self) -> bool {
        self.checked > 0 && self.complete == self.checked
    }

    /// Prints the outcome to stderr and returns it for the result line.
    pub fn report(&self) -> serde_json::Value {
        let sample = if self.checked < self.acked {
            format!(
                " (a sample of {} of {} acknowledged traces)",
                self.checked, self.acked
            )
        } else {
            String::new()
        };
        if let (true, Some(after)) = (self.ok(), self.after) {
            eprintln!(
                "verify: all {} traces ({} spans) complete within {:.2} s of the last ack{sample}",
                self.checked,
                self.spans,
                after.as_secs_f64()
            );
        } else if self.checked == 0 {
            eprintln!("verify FAILED: no request of traces was acknowledged in full");
        } else {
            eprintln!(
                "verify FAILED: {} of {} traces complete{sample}: {} not found, {} spans missing, \
                 {} duplicated, {} unexpected{}{}",
                self.complete,
                self.checked,
                self.not_found,
                self.missing_spans,
                self.duplicated_spans,
                self.unexpected_spans,
                if self.timed_out {
                    format!(" after {:.0} s", self.timeout.as_secs_f64())
                } else {
                    String::new()
                },
                self.last_error
                    .as_deref()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            );
        }
        json!({
            "ok": self.ok(),
            "acked_traces": self.acked,
            "checked_traces": self.checked,
            "checked_spans": self.spans,
            "complete_traces": self.complete,
            "not_found_traces": self.not_found,
            "missing_spans": self.missing_spans,
            "duplicated_spans": self.duplicated_spans,
            "unexpected_spans": self.unexpected_spans,
            "timed_out": self.timed_out,
            "searchable_within_s": self.after.map(|a| a.as_secs_f64()),
            "last_error": self.last_error,
        })
    }
}

impl Verify {
    /// Checks before the run that the query API answers a trace lookup.
    pub async fn preflight_traces(&self) -> anyhow::Result<()> {
        let mut id = [0u8; 16];
        SmallRng::seed_from_u64(periscope_benches::unix_nanos()).fill(&mut id);
        self.fetch_trace(&id)
            .await
            .context("the query api does not answer")?;
        Ok(())
    }

    /// Fetches `traces` (a random sample of `sample` of them, drawn with
    /// `seed`, when given) until each is complete or the timeout runs out.
    /// `last_ack` is when the last request was acknowledged.
    pub async fn traces(
        &self,
        mut traces: Vec<TraceRef>,
        sample: Option<usize>,
        seed: u64,
        last_ack: Instant,
    ) -> TraceOutcome {
        let deadline = Instant::now() + self.timeout;
        let acked = traces.len();
        if let Some(n) = sample
            && n < traces.len()
        {
            traces = traces
                .partial_shuffle(&mut SmallRng::seed_from_u64(seed), n)
                .0
                .to_vec();
        }
        let traces: Arc<[TraceRef]> = traces.into();
        let mut seen: Vec<Option<Seen>> = vec![None; traces.len()];
        let settled = |seen: &[Option<Seen>], i: usize| {
            seen[i].is_some_and(|s| s.spans >= u64::from(traces[i].spans))
        };
        let mut pending: Vec<usize> = (0..traces.len()).collect();
        let (mut last_error, mut last_settled) = (None, last_ack);
        while !pending.is_empty() {
            let round_started = Instant::now();
            for f in self.fetch_round(&traces, &pending, deadline).await {
                match f.result {
                    Ok(Some(s)) => {
                        seen[f.index] = Some(s);
                        if settled(&seen, f.index) {
                            last_settled = last_settled.max(f.at);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => last_error = Some(format!("{e:#}")),
                }
            }
            pending.retain(|&i| !settled(&seen, i));
            if pending.is_empty() || Instant::now() + POLL_EVERY > deadline {
                break;
            }
            tokio::time::sleep(POLL_EVERY.saturating_sub(round_started.elapsed())).await;
        }

        let mut outcome = TraceOutcome {
            acked,
            checked: traces.len(),
            spans: traces.iter().map(|t| u64::from(t.spans)).sum(),
            complete: 0,
            not_found: 0,
            missing_spans: 0,
            duplicated_spans: 0,
            unexpected_spans: 0,
            timed_out: !pending.is_empty(),
            after: None,
            last_error,
            timeout: self.timeout,
        };
        for (trace, seen) in traces.iter().zip(&seen) {
            let expected = u64::from(trace.spans);
            let Some(s) = seen else {
                outcome.not_found += 1;
                outcome.missing_spans += expected;
                continue;
            };
            if s.distinct == expected && s.spans == expected {
                outcome.complete += 1;
            }
            outcome.missing_spans += expected.saturating_sub(s.distinct);
            outcome.duplicated_spans += s.spans - s.distinct;
            outcome.unexpected_spans += s.distinct.saturating_sub(expected);
        }
        if outcome.ok() {
            outcome.after = Some(last_settled.saturating_duration_since(last_ack));
        }
        outcome
    }

    /// Fetches the traces at `pending`, [`CONCURRENCY`] at a time, starting
    /// no fetch after `deadline`.
    async fn fetch_round(
        &self,
        traces: &Arc<[TraceRef]>,
        pending: &[usize],
        deadline: Instant,
    ) -> Vec<Fetched> {
        let pending: Arc<[usize]> = pending.into();
        let next = Arc::new(AtomicUsize::new(0));
        let mut workers = JoinSet::new();
        for _ in 0..CONCURRENCY.min(pending.len()) {
            let (verify, traces, pending, next) =
                (self.clone(), traces.clone(), pending.clone(), next.clone());
            workers.spawn(async move {
                let mut fetched = Vec::new();
                while Instant::now() < deadline {
                    let Some(&index) = pending.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    let result = verify.fetch_trace(&traces[index].trace_id).await;
                    fetched.push(Fetched {
                        index,
                        result,
                        at: Instant::now(),
                    });
                }
                fetched
            });
        }
        workers.join_all().await.into_iter().flatten().collect()
    }

    /// The spans of one trace; `None` while the API does not know it.
    async fn fetch_trace(&self, trace_id: &[u8; 16]) -> anyhow::Result<Option<Seen>> {
        let mut path = String::from("api/v1/traces/");
        for b in trace_id {
            // Writing to a String cannot fail.
            let _ = write!(path, "{b:02x}");
        }
        let url = self.query_url.join(&path).context("invalid query url")?;
        let Some(body) = self.get_json(&url).await? else {
            return Ok(None);
        };
        count_spans(&body).map(Some).with_context(|| {
            let body = body.to_string();
            format!(
                "GET {url}: unexpected response {}",
                body.chars().take(300).collect::<String>()
            )
        })
    }
}

/// Counts the spans and distinct span ids of
/// `{"trace_id": .., "spans": [{"span_id": .., ..}, ..]}`.
fn count_spans(body: &serde_json::Value) -> anyhow::Result<Seen> {
    let Some(spans) = body.get("spans").and_then(|s| s.as_array()) else {
        bail!("no spans array")
    };
    let mut ids = HashSet::with_capacity(spans.len());
    for span in spans {
        let id = span
            .get("span_id")
            .and_then(|id| id.as_str())
            .context("span without a span_id")?;
        ids.insert(id);
    }
    Ok(Seen {
        spans: spans.len() as u64,
        distinct: ids.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, VecDeque};
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;

    /// Answers of a scripted query API, by trace id: one per GET, the last
    /// repeating; unknown ids get 404.
    type Script = HashMap<String, VecDeque<(u16, serde_json::Value)>>;

    /// Serves `script` on a port of 127.0.0.1 from a thread; returns the base
    /// URL and the `X-Scope-OrgID` of every request.
    fn serve(script: Script) -> (String, Arc<Mutex<Vec<Option<String>>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let tenants = Arc::new(Mutex::new(Vec::new()));
        let seen_tenants = tenants.clone();
        let mut script = script;
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or_default();
                let tenant = head.lines().find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("x-scope-orgid")
                        .then(|| value.trim().to_owned())
                });
                seen_tenants.lock().unwrap().push(tenant);
                let id = path.rsplit('/').next().unwrap_or_default();
                let (status, body) = match script.get_mut(id) {
                    Some(answers) if answers.len() > 1 => answers.pop_front().unwrap(),
                    Some(answers) => answers[0].clone(),
                    None => (404, json!({"error": "trace not found"})),
                };
                let body = body.to_string();
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (url, tenants)
    }

    fn trace(byte: u8, spans: u32) -> (TraceRef, String) {
        let trace_id = [byte; 16];
        let hex = trace_id.iter().map(|b| format!("{b:02x}")).collect();
        (TraceRef { trace_id, spans }, hex)
    }

    fn found(ids: &[&str]) -> (u16, serde_json::Value) {
        let spans: Vec<_> = ids
            .iter()
            .map(|id| json!({"span_id": id, "name": "GET"}))
            .collect();
        (200, json!({"trace_id": "x", "spans": spans}))
    }

    #[tokio::test]
    async fn retries_until_traces_are_complete_and_counts_what_is_wrong() {
        let (late, late_id) = trace(0xa1, 3);
        let (whole, whole_id) = trace(0xb2, 2);
        let (doubled, doubled_id) = trace(0xc3, 2);
        let (lost, _) = trace(0xd4, 4);
        let script = Script::from([
            (
                late_id,
                VecDeque::from([
                    (404, json!({})),
                    found(&["1", "2"]),
                    found(&["1", "2", "3"]),
                ]),
            ),
            (whole_id, VecDeque::from([found(&["1", "2"])])),
            (doubled_id, VecDeque::from([found(&["1", "2", "2"])])),
        ]);
        let (url, tenants) = serve(script);
        let verify = Verify::new(&url, Some("acme".into()), Duration::from_secs(1)).unwrap();
        verify.preflight_traces().await.unwrap();

        let outcome = verify
            .traces(vec![late, whole, doubled, lost], None, 1, Instant::now())
            .await;
        assert!(!outcome.ok());
        assert_eq!(
            (outcome.checked, outcome.complete, outcome.not_found),
            (4, 2, 1)
        );
        assert_eq!(
            (
                outcome.missing_spans,
                outcome.duplicated_spans,
                outcome.unexpected_spans
            ),
            (4, 1, 0)
        );
        assert!(outcome.timed_out);
        assert_eq!(outcome.after, None);
        let tenants = tenants.lock().unwrap();
        assert!(tenants.len() > 5, "the lost trace was retried");
        assert!(tenants.iter().all(|t| t.as_deref() == Some("acme")));
    }

    #[tokio::test]
    async fn checks_a_sample() {
        let traces: Vec<(TraceRef, String)> = (1..=20).map(|b| trace(b, 2)).collect();
        let script = traces
            .iter()
            .map(|(_, id)| (id.clone(), VecDeque::from([found(&["1", "2"])])))
            .collect();
        let (url, tenants) = serve(script);
        let verify = Verify::new(&url, None, Duration::from_secs(5)).unwrap();
        let acked = traces.into_iter().map(|(t, _)| t).collect();
        let outcome = verify.traces(acked, Some(5), 7, Instant::now()).await;
        assert!(outcome.ok(), "{outcome:?}");
        assert_eq!((outcome.acked, outcome.checked, outcome.spans), (20, 5, 10));
        assert!(outcome.after.is_some() && !outcome.timed_out);
        let tenants = tenants.lock().unwrap();
        assert_eq!(tenants.len(), 5);
        assert!(tenants.iter().all(Option::is_none));
    }

    #[test]
    fn counts_distinct_span_ids() {
        let seen = |spans, distinct| Some(Seen { spans, distinct });
        let rows = [
            (json!({"trace_id": "ab", "spans": []}), seen(0, 0)),
            (
                json!({"trace_id": "ab", "spans": [{"span_id": "01", "name": "GET"}, {"span_id": "02"}]}),
                seen(2, 2),
            ),
            (
                json!({"spans": [{"span_id": "01"}, {"span_id": "02"}, {"span_id": "01"}]}),
                seen(3, 2),
            ),
            (json!({"spans": [{"name": "GET"}]}), None),
            (json!({"spans": [{"span_id": 1}]}), None),
            (json!({"error": "not found"}), None),
        ];
        for (body, want) in rows {
            assert_eq!(count_spans(&body).ok(), want, "{body}");
        }
    }
}
