//! `--verify`: after the run, checks through the query API that every
//! acknowledged record became searchable (and none twice), and measures how
//! long after the last acknowledgement that happened.
//!
//! Logs are counted with the histogram endpoint (`GET /api/v1/logs/histogram`,
//! one bucket per hour) filtered on `attributes.loadgen.run`, so it costs one
//! small query per poll however many records the run sent. Traces are fetched
//! one by one (`traces.rs`).

mod traces;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::{StatusCode, Url};
use serde_json::json;

/// How often the count is polled; the resolution of "searchable within".
const POLL_EVERY: Duration = Duration::from_millis(100);

/// Where and how to count. Cheap to clone, for concurrent queries.
#[derive(Clone)]
pub struct Verify {
    query_url: Url,
    tenant: Option<String>,
    pub timeout: Duration,
    http: reqwest::Client,
}

/// What the count found.
#[derive(Debug)]
pub enum Outcome {
    /// Every acknowledged record was found, `after` the last acknowledgement.
    Complete { found: u64, after: Duration },
    /// More records than acknowledged: duplicates.
    TooMany { found: u64 },
    /// Not all records were found within the timeout.
    TimedOut {
        found: u64,
        last_error: Option<String>,
    },
}

impl Outcome {
    pub fn ok(&self) -> bool {
        matches!(self, Outcome::Complete { .. })
    }

    /// Prints the outcome to stderr and returns it for the result line.
    pub fn report(&self, run_id: &str, acked: u64, timeout: Duration) -> serde_json::Value {
        match self {
            Outcome::Complete { found, after } => {
                eprintln!(
                    "verify: all {found} acknowledged records searchable within {:.2} s of the last ack",
                    after.as_secs_f64()
                );
                json!({"ok": true, "found": found, "searchable_within_s": after.as_secs_f64()})
            }
            Outcome::TooMany { found } => {
                eprintln!(
                    "verify FAILED: found {found} records of run {run_id} but only {acked} were acknowledged"
                );
                json!({"ok": false, "found": found, "reason": "more records than acknowledged"})
            }
            Outcome::TimedOut { found, last_error } => {
                eprintln!(
                    "verify FAILED: {found} of {acked} records searchable after {:.0} s{}",
                    timeout.as_secs_f64(),
                    last_error
                        .as_deref()
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                );
                json!({"ok": false, "found": found, "reason": "timed out", "last_error": last_error})
            }
        }
    }
}

impl Verify {
    /// `query_url` is the base URL of the query API; `tenant` goes into
    /// `X-Scope-OrgID`.
    pub fn new(
        query_url: &str,
        tenant: Option<String>,
        timeout: Duration,
    ) -> anyhow::Result<Verify> {
        let mut base = query_url.to_owned();
        if !base.ends_with('/') {
            base.push('/');
        }
        let query_url =
            Url::parse(&base).with_context(|| format!("invalid query url {query_url:?}"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("failed to build the http client")?;
        Ok(Verify {
            query_url,
            tenant,
            timeout,
            http,
        })
    }

    /// Checks before the run that the query API answers and that no record
    /// carries the run id yet (a reused `--run-id` would count old records).
    pub async fn preflight(&self, run_id: &str, start_secs: u64) -> anyhow::Result<()> {
        let found = self
            .count(run_id, start_secs)
            .await
            .context("the query api does not answer")?;
        if found > 0 {
            bail!("{found} records of run {run_id} are already stored: use another --run-id");
        }
        Ok(())
    }

    /// Polls until `expected` records of `run_id` with timestamps after
    /// `start_secs` are searchable. `last_ack` is when the last record was
    /// acknowledged.
    pub async fn run(
        &self,
        run_id: &str,
        expected: u64,
        start_secs: u64,
        last_ack: Instant,
    ) -> Outcome {
        self.poll(expected, last_ack, POLL_EVERY, || {
            self.count(run_id, start_secs)
        })
        .await
    }

    /// Polls `count` every `every` until it gives `expected` (complete),
    /// more (duplicates) or the timeout passes.
    async fn poll<F, Fut>(
        &self,
        expected: u64,
        last_ack: Instant,
        every: Duration,
        count: F,
    ) -> Outcome
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<u64>>,
    {
        let deadline = Instant::now() + self.timeout;
        let (mut found, mut last_error) = (0, None);
        loop {
            match count().await {
                Ok(n) if n == expected => {
                    return Outcome::Complete {
                        found: n,
                        after: last_ack.elapsed(),
                    };
                }
                Ok(n) if n > expected => return Outcome::TooMany { found: n },
                Ok(n) => found = n,
                Err(e) => last_error = Some(format!("{e:#}")),
            }
            if Instant::now() + every > deadline {
                return Outcome::TimedOut { found, last_error };
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Checks before a metric run that the Prometheus API answers and that
    /// no sample carries the run id yet.
    pub async fn preflight_metrics(
        &self,
        w: &periscope_benches::MetricWorkload,
    ) -> anyhow::Result<()> {
        let found = self
            .count_samples(w, 1)
            .await
            .context("the query api does not answer")?;
        if found > 0 {
            bail!(
                "{found} samples of run {} are already stored: use another --run-id",
                w.run_id()
            );
        }
        Ok(())
    }

    /// Polls until `expected` samples of the run (sequence numbers below
    /// `sent`) are queryable through PromQL, and no more.
    pub async fn metrics(
        &self,
        w: &periscope_benches::MetricWorkload,
        expected: u64,
        sent: u64,
        last_ack: Instant,
    ) -> Outcome {
        let rounds = sent.div_ceil(w.series()).max(1);
        // Each count is one query per hour of samples: poll less often.
        self.poll(expected, last_ack, POLL_EVERY * 10, || {
            self.count_samples(w, rounds)
        })
        .await
    }

    /// Samples of the run's first `rounds` rounds, counted with one
    /// `count_over_time` instant query per hour of sample time. Window ends
    /// fall one millisecond before a round, never on a sample.
    async fn count_samples(
        &self,
        w: &periscope_benches::MetricWorkload,
        rounds: u64,
    ) -> anyhow::Result<u64> {
        const HOUR_MS: i64 = 3_600_000;
        let (first, last) = (w.timestamp_ms(0), w.timestamp_ms(rounds - 1));
        let url = self
            .query_url
            .join("prometheus/api/v1/query")
            .context("invalid query url")?;
        let query = format!(
            "sum(count_over_time({{loadgen_run=\"{}\"}}[1h]))",
            w.run_id()
        );
        let mut total = 0u64;
        let mut t = first - 1 + HOUR_MS;
        loop {
            let mut u = url.clone();
            u.query_pairs_mut()
                .append_pair("query", &query)
                .append_pair("time", &format!("{:.3}", t as f64 / 1000.0));
            let body = self
                .get_json(&u)
                .await?
                .with_context(|| format!("GET {u}: {}", StatusCode::NOT_FOUND))?;
            let result = body
                .pointer("/data/result")
                .and_then(|r| r.as_array())
                .with_context(|| format!("GET {u}: unexpected response {body}"))?;
            if let Some(v) = result.first().and_then(|r| r.pointer("/value/1")) {
                let n: f64 = v
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .with_context(|| format!("GET {u}: not a number: {v}"))?;
                total += n as u64;
            }
            if t >= last {
                return Ok(total);
            }
            t += HOUR_MS;
        }
    }

    async fn count(&self, run_id: &str, start_secs: u64) -> anyhow::Result<u64> {
        // Record timestamps are at most 50 ms before sending; a minute of
        // margin on both sides covers clock steps.
        let end_secs = periscope_benches::unix_nanos() / 1_000_000_000 + 60;
        let mut url = self
            .query_url
            .join("api/v1/logs/histogram")
            .context("invalid query url")?;
        url.query_pairs_mut()
            .append_pair("q", &format!("attributes.loadgen.run:{run_id}"))
            .append_pair("start", &start_secs.saturating_sub(60).to_string())
            .append_pair("end", &end_secs.to_string())
            .append_pair("step", "3600s");
        let body = self
            .get_json(&url)
            .await?
            .with_context(|| format!("GET {url}: {}", StatusCode::NOT_FOUND))?;
        sum_buckets(&body).with_context(|| format!("GET {url}: unexpected response {body}"))
    }

    /// GETs `url` with the tenant header and parses the JSON body; `None`
    /// when the API answers 404.
    async fn get_json(&self, url: &Url) -> anyhow::Result<Option<serde_json::Value>> {
        let mut req = self.http.get(url.clone());
        if let Some(t) = &self.tenant {
            req = req.header("X-Scope-OrgID", t);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("GET {url} failed"))?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            bail!(
                "GET {url}: {status}: {}",
                body.chars().take(300).collect::<String>()
            );
        }
        let body = resp
            .json()
            .await
            .with_context(|| format!("GET {url}: invalid json"))?;
        Ok(Some(body))
    }
}

/// Sums `count` over `{"buckets":[{"start":..,"count":N},..]}`.
fn sum_buckets(body: &serde_json::Value) -> anyhow::Result<u64> {
    let Some(buckets) = body.get("buckets").and_then(|b| b.as_array()) else {
        bail!("no buckets array")
    };
    buckets
        .iter()
        .map(|b| {
            b.get("count")
                .and_then(|c| c.as_u64())
                .context("bucket without a count")
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sums_histogram_buckets() {
        let rows = [
            (json!({"buckets": []}), Some(0)),
            (
                json!({"buckets": [{"start": "2026-01-01T00:00:00Z", "count": 3}, {"start": "x", "count": 4}]}),
                Some(7),
            ),
            (json!({"buckets": [{"start": "x"}]}), None),
            (json!({"error": "bad query"}), None),
        ];
        for (body, want) in rows {
            assert_eq!(sum_buckets(&body).ok(), want, "{body}");
        }
    }
}
