//! `periscope-loadgen`: N concurrent OTLP/gRPC clients sending synthetic log
//! batches, or batches of whole traces (`--signal traces`), to a collector,
//! reporting acknowledged throughput and latency, and optionally verifying
//! through the query API that every acknowledged record became searchable (and
//! none twice).
//!
//! For traces, "records" are spans: `--batch`, `--rate` and `--records` count
//! spans, rounded to whole traces. For metrics (`--signal metrics`) they are
//! samples of `--series` series scraped every `--interval-ms`, sent as OTLP
//! or, with `--remote-write-url`, as Prometheus remote write (to Periscope or
//! to Prometheus itself, for side-by-side runs).
//!
//! Human-readable progress goes to stderr; the final result is one JSON line
//! on stdout, for scripts. Exit code 1 when verification fails or nothing was
//! acknowledged.

mod client;
mod stats;
mod verify;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::Endpoint;

use crate::client::Shared;
use crate::stats::Stats;
use crate::verify::Verify;

/// Sends synthetic OTLP logs or traces to a collector and measures what it
/// acknowledges.
#[derive(Parser, Debug)]
#[command(name = "periscope-loadgen", version)]
struct Cli {
    /// OTLP/gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    /// Signal to send: log records, or whole traces of 10 to 50 spans.
    #[arg(long, value_enum, default_value_t = Signal::Logs)]
    signal: Signal,
    /// Concurrent clients, each with its own connection and one request in flight.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Log records (or spans, rounded to whole traces) per request.
    #[arg(long, default_value_t = 500)]
    batch: u64,
    /// Records (or spans) per second over all clients; 0 sends as fast as
    /// acknowledged.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seconds to send for (default 10 unless --records is given).
    #[arg(long, conflicts_with = "records")]
    duration: Option<f64>,
    /// Total records (or spans) to send, instead of a duration.
    #[arg(long)]
    records: Option<u64>,
    /// Token sent as `authorization: Bearer …` (a collector with --auth-file).
    #[arg(long, env = "PERISCOPE_LOADGEN_TOKEN")]
    token: Option<String>,
    /// CA certificate (PEM) to trust for an `https://` endpoint.
    #[arg(long)]
    tls_ca_file: Option<std::path::PathBuf>,
    /// Server name to verify instead of the endpoint's host.
    #[arg(long)]
    tls_server_name: Option<String>,
    /// Tenant, sent as `x-scope-orgid` metadata (and used for --verify queries).
    #[arg(long)]
    tenant: Option<String>,
    /// Request compression.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    compression: Compression,
    /// After sending, count the run's records (or fetch its traces) through
    /// the query API.
    #[arg(long)]
    verify: bool,
    /// With --signal traces, fetch a random sample of this many acknowledged
    /// traces instead of all of them.
    #[arg(long, requires = "verify")]
    verify_sample: Option<usize>,
    /// Base URL of the query API, for --verify.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    query_url: String,
    /// Seconds --verify waits for all records (or traces) to become searchable.
    #[arg(long, default_value_t = 60.0)]
    verify_timeout: f64,
    /// Seed of the record generator (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Run id stamped on every record (or span) as `loadgen.run` (default: random);
    /// letters and digits only, so it is one search token.
    #[arg(long)]
    run_id: Option<String>,
    /// With --signal metrics: the number of series (half counters, half gauges).
    #[arg(long, default_value_t = 10_000)]
    series: u64,
    /// With --signal metrics: milliseconds between two samples of a series.
    #[arg(long, default_value_t = 15_000)]
    interval_ms: i64,
    /// With --signal metrics: Unix seconds of the first round (default: 24 h
    /// before now, aligned to the interval).
    #[arg(long)]
    metrics_start: Option<i64>,
    /// With --signal metrics: send Prometheus remote write to this URL
    /// (e.g. http://127.0.0.1:4318/api/v1/write) instead of OTLP/gRPC.
    #[arg(long)]
    remote_write_url: Option<String>,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5.0)]
    report_every: f64,
}

/// What the clients send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Signal {
    Logs,
    Traces,
    Metrics,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Logs => "logs",
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
        }
    }

    /// What the counts count, plural and singular.
    fn unit(self) -> &'static str {
        match self {
            Signal::Logs => "records",
            Signal::Traces => "spans",
            Signal::Metrics => "samples",
        }
    }

    fn unit_one(self) -> &'static str {
        match self {
            Signal::Logs => "record",
            Signal::Traces => "span",
            Signal::Metrics => "sample",
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

/// When the run stops sending.
#[derive(Clone, Copy, Debug)]
enum StopAt {
    After(Duration),
    Records(u64),
}

/// The validated run configuration.
pub struct Plan {
    pub signal: Signal,
    pub endpoint: Endpoint,
    pub clients: usize,
    pub batch: u64,
    /// Records per second per client, when rate-limited.
    pub rate_per_client: Option<f64>,
    stop_at: StopAt,
    pub tenant: Option<AsciiMetadataValue>,
    /// `Bearer <token>`, when a token is given.
    pub authorization: Option<AsciiMetadataValue>,
    pub compression: Option<CompressionEncoding>,
    pub run_id: String,
    pub seed: u64,
    pub verify: Option<Verify>,
    /// Traces `--verify` checks, when not all.
    verify_sample: Option<usize>,
    report_every: Duration,
    /// The metric workload, for `--signal metrics`.
    pub metrics: Option<periscope_benches::MetricWorkload>,
    pub remote_write_url: Option<reqwest::Url>,
    cli: Cli,
}

impl Plan {
    fn from_cli(cli: Cli) -> anyhow::Result<Plan> {
        if cli.clients == 0 || cli.batch == 0 {
            bail!("--clients and --batch must be at least 1");
        }
        let stop_at = match (cli.duration, cli.records) {
            (_, Some(0)) => bail!("--records must be at least 1"),
            (_, Some(n)) => StopAt::Records(n),
            (Some(d), None) if !(d > 0.0 && d.is_finite()) => {
                bail!("--duration must be a positive number of seconds")
            }
            (Some(d), None) => StopAt::After(Duration::from_secs_f64(d)),
            (None, None) => StopAt::After(Duration::from_secs(10)),
        };
        let endpoint = Endpoint::from_shared(cli.endpoint.clone())
            .with_context(|| format!("invalid --endpoint {:?}", cli.endpoint))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let endpoint = match &cli.tls_ca_file {
            None => endpoint,
            Some(p) => {
                let pem =
                    std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
                let mut tls = tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(pem));
                if let Some(n) = &cli.tls_server_name {
                    tls = tls.domain_name(n.clone());
                }
                endpoint.tls_config(tls).context("invalid TLS settings")?
            }
        };
        if cli.verify && (cli.token.is_some() || cli.tls_ca_file.is_some()) {
            bail!(
                "--verify queries without a token over plain HTTP: not with --token or --tls-ca-file"
            );
        }
        let authorization = match &cli.token {
            None => None,
            Some(t) => {
                Some(MetadataValue::try_from(format!("Bearer {t}")).context("invalid --token")?)
            }
        };
        let tenant = match &cli.tenant {
            None => None,
            Some(t) => {
                periscope_store::TenantId::parse(t)
                    .with_context(|| format!("invalid --tenant {t:?}"))?;
                Some(
                    MetadataValue::try_from(t.as_str())
                        .with_context(|| format!("invalid --tenant {t:?}"))?,
                )
            }
        };
        let seed = cli
            .seed
            .unwrap_or_else(|| periscope_benches::unix_nanos() ^ u64::from(std::process::id()));
        let run_id = match &cli.run_id {
            Some(r)
                if r.is_empty()
                    || r.len() > 32
                    || !r.bytes().all(|b| b.is_ascii_alphanumeric()) =>
            {
                bail!("--run-id must be 1 to 32 letters or digits (one search token), got {r:?}")
            }
            Some(r) => r.to_ascii_lowercase(),
            None => format!(
                "lg{:012x}",
                (periscope_benches::unix_nanos() ^ seed.rotate_left(17)) & 0xffff_ffff_ffff
            ),
        };
        let verify = if cli.verify {
            if !(cli.verify_timeout > 0.0 && cli.verify_timeout.is_finite()) {
                bail!("--verify-timeout must be a positive number of seconds");
            }
            let timeout = Duration::from_secs_f64(cli.verify_timeout);
            Some(
                Verify::new(&cli.query_url, cli.tenant.clone(), timeout)
                    .context("invalid --query-url")?,
            )
        } else {
            None
        };
        match (cli.verify_sample, cli.signal) {
            (Some(0), _) => bail!("--verify-sample must be at least 1"),
            (Some(_), Signal::Logs) => bail!("--verify-sample applies to --signal traces only"),
            _ => {}
        }
        if !(cli.report_every > 0.0 && cli.report_every.is_finite()) {
            bail!("--report-every must be a positive number of seconds");
        }
        if cli.signal != Signal::Metrics && cli.remote_write_url.is_some() {
            bail!("--remote-write-url applies to --signal metrics only");
        }
        if cli.series < 2 || cli.interval_ms < 1 {
            bail!("--series must be at least 2 and --interval-ms at least 1");
        }
        let metrics = (cli.signal == Signal::Metrics).then(|| {
            let interval_s = (cli.interval_ms / 1000).max(1);
            let start_s = cli.metrics_start.unwrap_or_else(|| {
                let now = (periscope_benches::unix_nanos() / 1_000_000_000) as i64;
                (now - 86_400) / interval_s * interval_s
            });
            periscope_benches::MetricWorkload::new(
                run_id.clone(),
                cli.series,
                start_s * 1000,
                cli.interval_ms,
            )
        });
        let remote_write_url = match &cli.remote_write_url {
            None => None,
            Some(u) => Some(
                reqwest::Url::parse(u)
                    .with_context(|| format!("invalid --remote-write-url {u:?}"))?,
            ),
        };
        Ok(Plan {
            metrics,
            remote_write_url,
            signal: cli.signal,
            endpoint,
            clients: cli.clients,
            batch: cli.batch,
            rate_per_client: (cli.rate > 0).then(|| cli.rate as f64 / cli.clients as f64),
            stop_at,
            tenant,
            authorization,
            compression: match cli.compression {
                Compression::None => None,
                Compression::Gzip => Some(CompressionEncoding::Gzip),
                Compression::Zstd => Some(CompressionEncoding::Zstd),
            },
            run_id,
            seed,
            verify,
            verify_sample: cli.verify_sample,
            report_every: Duration::from_secs_f64(cli.report_every),
            cli,
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = Plan::from_cli(cli).and_then(|plan| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("failed to start tokio")?;
        rt.block_on(run(Arc::new(plan)))
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the load, reports, verifies. `Ok(false)` when the run failed its checks.
async fn run(plan: Arc<Plan>) -> anyhow::Result<bool> {
    let start_secs = periscope_benches::unix_nanos() / 1_000_000_000;
    if let Some(v) = &plan.verify {
        match (plan.signal, &plan.metrics) {
            (Signal::Logs, _) => v.preflight(&plan.run_id, start_secs).await,
            (Signal::Traces, _) => v.preflight_traces().await,
            (Signal::Metrics, Some(w)) => v.preflight_metrics(w).await,
            (Signal::Metrics, None) => unreachable!("metric plans carry a workload"),
        }
        .context("--verify")?;
    }
    let shared = Arc::new(Shared {
        stats: Stats::new(),
        next_seq: AtomicU64::new(0),
        remaining: match plan.stop_at {
            StopAt::Records(n) => Some(AtomicU64::new(n)),
            StopAt::After(_) => None,
        },
        stop: CancellationToken::new(),
        abort: CancellationToken::new(),
    });
    let unit = plan.signal.unit();
    eprintln!(
        "periscope-loadgen: run {} -> {}, {}, {} clients, batch {}, {}, {:?}",
        plan.run_id,
        plan.cli.endpoint,
        plan.signal.name(),
        plan.clients,
        plan.batch,
        match plan.cli.rate {
            0 => "unlimited rate".to_owned(),
            r => format!("{r} {unit}/s"),
        },
        plan.stop_at,
    );

    if let StopAt::After(d) = plan.stop_at {
        let stop = shared.stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            stop.cancel();
        });
    }
    {
        let s = shared.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: stopping");
                s.stop.cancel();
                s.abort.cancel();
            }
        });
    }
    let progress_stop = CancellationToken::new();
    let progress = {
        let (s, stop, every) = (shared.clone(), progress_stop.clone(), plan.report_every);
        tokio::spawn(async move { stats::report_progress(&s.stats, every, unit, stop).await })
    };
    let clients: Vec<_> = (0..plan.clients)
        .map(|i| tokio::spawn(client::run(i, plan.clone(), shared.clone())))
        .collect();
    let mut acked_traces = Vec::new();
    for c in clients {
        acked_traces.extend(c.await.context("client task failed")?);
    }
    let elapsed = shared.stats.started.elapsed();
    progress_stop.cancel();
    let _ = progress.await;

    let st = &shared.stats;
    let acked = st.acked_records.load(Ordering::Relaxed);
    let acked_bytes = st.acked_bytes.load(Ordering::Relaxed);
    let secs = elapsed.as_secs_f64();
    let [p50, p99, max] = st.latency_ms();
    let (retries, errors) = (
        st.retries.load(Ordering::Relaxed),
        st.errors.load(Ordering::Relaxed),
    );
    eprintln!(
        "sent for {secs:.1} s: {acked} {unit} acknowledged, {:.0} {unit}/s, {:.2} MB/s of OTLP protobuf \
         ({acked_bytes} bytes, {:.0} bytes/{}), latency p50 {p50:.1} ms p99 {p99:.1} ms max {max:.1} ms, \
         retries {retries}, errors {errors}",
        acked as f64 / secs,
        acked_bytes as f64 / secs / 1e6,
        acked_bytes as f64 / acked.max(1) as f64,
        plan.signal.unit_one(),
    );
    if let Some(e) = st.last_error() {
        eprintln!("last error: {e}");
    }

    let mut ok = acked > 0;
    let verified = match &plan.verify {
        None => serde_json::Value::Null,
        Some(v) => {
            let last_ack = st.last_ack().unwrap_or_else(std::time::Instant::now);
            match plan.signal {
                Signal::Logs => {
                    let outcome = v.run(&plan.run_id, acked, start_secs, last_ack).await;
                    ok &= outcome.ok();
                    outcome.report(&plan.run_id, acked, v.timeout)
                }
                Signal::Traces => {
                    let outcome = v
                        .traces(acked_traces, plan.verify_sample, plan.seed, last_ack)
                        .await;
                    ok &= outcome.ok();
                    outcome.report()
                }
                Signal::Metrics => {
                    let w = plan
                        .metrics
                        .as_ref()
                        .expect("metric plans carry a workload");
                    let sent = shared.next_seq.load(Ordering::Relaxed);
                    let outcome = v.metrics(w, acked, sent, last_ack).await;
                    ok &= outcome.ok();
                    outcome.report(&plan.run_id, acked, v.timeout)
                }
            }
        }
    };

    let summary = json!({
        "run_id": plan.run_id,
        "signal": plan.signal.name(),
        "endpoint": plan.cli.endpoint,
        "clients": plan.clients,
        "batch": plan.batch,
        "rate": plan.cli.rate,
        "compression": format!("{:?}", plan.cli.compression).to_lowercase(),
        "tenant": plan.cli.tenant,
        "elapsed_s": secs,
        "acked_records": acked,
        "acked_traces": (plan.signal == Signal::Traces)
            .then(|| st.acked_traces.load(Ordering::Relaxed)),
        "records_per_s": acked as f64 / secs,
        "otlp_bytes": acked_bytes,
        "otlp_mb_per_s": acked_bytes as f64 / secs / 1e6,
        "otlp_bytes_sent": st.sent_bytes.load(Ordering::Relaxed),
        "bytes_per_record": acked_bytes as f64 / acked.max(1) as f64,
        "requests": st.requests.load(Ordering::Relaxed),
        "latency_p50_ms": p50,
        "latency_p99_ms": p99,
        "latency_max_ms": max,
        "retries": retries,
        "errors": errors,
        "rejected_records": st.rejected_records.load(Ordering::Relaxed),
        "failed_records": st.failed_records.load(Ordering::Relaxed),
        "loadgen_cpu_s": cpu_seconds(),
        "verify": verified,
        "ok": ok,
    });
    println!("{summary}");
    Ok(ok)
}

/// CPU seconds this process used (user + system), from `/proc/self/stat`;
/// `None` off Linux. On a small machine the load generator competes with the
/// collector for cores, so the figure belongs next to the throughput.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every mainstream Linux architecture.
    Some(ticks as f64 / 100.0)
}
