//! Wiring: the tailer thread, the exporter thread, the checkpoint writer,
//! the HTTP server (`/metrics`, `/healthz`), host metrics and the relay; and
//! the shutdown path (SIGTERM: stop reading → cut the last batch → exporter
//! sends or spools what is queued → checkpoints persisted → exit 0).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::batch::{Batch, BatchBuilder};
use crate::checkpoint::{Committed, Store};
use crate::config::{Config, K8sApi};
use crate::discover::{Globs, Wakeup};
use crate::export::grpc::ClientOptions;
use crate::export::{ExportOptions, Exporter};
use crate::k8s::PodCache;
use crate::parse::{FLUSH_TIMEOUT, ParseOptions};
use crate::tail::{TailOptions, Tailer};
use crate::telemetry::Stats;

/// How often the tailer is offered a periodic scan (it spaces slow scans
/// further, see `Tailer::scan`); file events ask for scans sooner.
const SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait between reads of quiet files.
const IDLE_WAIT: Duration = Duration::from_millis(250);
/// Approximate bytes at which a batch is cut.
const BATCH_BYTES: usize = 2 << 20;
/// Capacity of the tailer → exporter channel, in batches.
const CHANNEL_BATCHES: usize = 4;
/// Per-attempt timeout of exports.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of the tailer derived from the configuration.
pub fn tail_options(cfg: &Config) -> TailOptions {
    TailOptions {
        globs: Globs {
            include: cfg.include.clone(),
            exclude: cfg.exclude.clone(),
        },
        read_from: cfg.read_from,
        max_line_bytes: cfg.max_line_bytes,
        idle_close: cfg.idle_close,
        max_open_files: cfg.max_open_files,
        read_quantum: 256 << 10,
        round_budget: 2 << 20,
        rotate_wait: Duration::from_secs(5),
        node_name: cfg.node_name.clone(),
        pods: None,
        parse: ParseOptions {
            max_line_bytes: cfg.max_line_bytes,
            multiline_start: cfg.multiline_start.clone(),
            parse_json: cfg.parse_json,
            flush_timeout: FLUSH_TIMEOUT,
        },
    }
}

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(cfg: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data directory {}", cfg.data_dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("agent-rt")
        .build()
        .context("cannot start the async runtime")?;
    let stats = Arc::new(Stats::default());
    let shutdown = Arc::new(AtomicBool::new(false));
    let store = Store::new(&cfg.data_dir);
    let loaded = store.load().context("cannot load checkpoints")?;
    let first_start = loaded.is_none();
    let committed = Committed::from_entries(loaded.unwrap_or_default());
    if first_start {
        // Record that the first start happened, so that a restart before
        // any file was found does not honour `read_from` again.
        store
            .save(committed.snapshot())
            .context("cannot write checkpoints")?;
    }

    let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(CHANNEL_BATCHES);
    let tail_done = Arc::new(AtomicBool::new(false));
    let exporter = Exporter::new(
        ExportOptions {
            client: ClientOptions {
                endpoint: cfg.endpoint.clone(),
                tenant: cfg.tenant.clone(),
                bearer_token: cfg.bearer_token.clone(),
                bearer_token_file: cfg.bearer_token_file.clone(),
                timeout: RPC_TIMEOUT,
                tls: cfg.tls.clone(),
            },
            spool_dir: cfg.data_dir.join("spool"),
            spool_max_bytes: cfg.spool_max_bytes,
            memory_queue_bytes: cfg.memory_queue_bytes,
        },
        rx,
        committed.clone(),
        Arc::clone(&stats),
        Arc::clone(&shutdown),
        Arc::clone(&tail_done),
        rt.handle().clone(),
    )?;

    let http = rt
        .block_on(tokio::net::TcpListener::bind(cfg.http_addr))
        .with_context(|| format!("cannot listen on {}", cfg.http_addr))?;
    let http_addr = http.local_addr().context("http listener address")?;
    let healthy = Arc::new(AtomicBool::new(true));
    rt.spawn(crate::relay::serve_http_self(
        http,
        Arc::clone(&stats),
        Arc::clone(&healthy),
    ));
    // Stops the polling of the relay's auth and TLS files.
    let stop_watching = tokio_util::sync::CancellationToken::new();
    let relay = rt
        .block_on(crate::relay::start(
            &cfg,
            tx.clone(),
            Arc::clone(&stats),
            Arc::clone(&shutdown),
            stop_watching.clone(),
        ))
        .context("cannot start the local OTLP relay")?;
    let pods = cfg
        .k8s_api
        .as_ref()
        .and_then(|k| start_pod_watch(k, &cfg.node_name, &stats, rt.handle()));
    if let Some(interval) = cfg.metrics_interval {
        rt.spawn(crate::hostmetrics::run(
            cfg.host_root.clone(),
            cfg.node_name.clone(),
            interval,
            tx.clone(),
            Arc::clone(&stats),
        ));
    }
    println!(
        "{}",
        serde_json::json!({
            "event": "listening",
            "http": http_addr.to_string(),
            "otlp_grpc": relay.grpc.map(|a| a.to_string()),
            "otlp_http": relay.http.map(|a| a.to_string()),
        })
    );
    tracing::info!(endpoint = %cfg.endpoint, http = %http_addr, node = %cfg.node_name, "periscope-agent started");

    {
        let shutdown = Arc::clone(&shutdown);
        rt.spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            shutdown.store(true, Ordering::SeqCst);
        });
    }

    let exporter_thread = std::thread::Builder::new()
        .name("exporter".into())
        .spawn(move || exporter.run())
        .context("cannot start the exporter thread")?;
    let persister = {
        let (store, committed, shutdown) =
            (store.clone(), committed.clone(), Arc::clone(&shutdown));
        std::thread::Builder::new()
            .name("checkpoints".into())
            .spawn(move || persist_loop(&store, &committed, &shutdown))
            .context("cannot start the checkpoint thread")?
    };
    let tailer = {
        let opts = TailOptions {
            pods,
            ..tail_options(&cfg)
        };
        let (committed, stats, shutdown) =
            (committed.clone(), Arc::clone(&stats), Arc::clone(&shutdown));
        let (max_records, timeout) = (cfg.batch_max_records, cfg.batch_timeout);
        std::thread::Builder::new()
            .name("tailer".into())
            .spawn(move || {
                tail_loop(
                    opts,
                    committed,
                    first_start,
                    stats,
                    shutdown,
                    tx,
                    max_records,
                    timeout,
                )
            })
            .context("cannot start the tailer thread")?
    };

    let tail_ok = tailer.join().is_ok();
    stop_watching.cancel();
    tail_done.store(true, Ordering::SeqCst);
    let export_ok = exporter_thread.join().is_ok();
    let _ = persister.join();
    healthy.store(false, Ordering::Relaxed);
    store
        .save(committed.snapshot())
        .context("cannot write checkpoints at shutdown")?;
    if !tail_ok || !export_ok {
        anyhow::bail!("a pipeline thread panicked");
    }
    rt.shutdown_timeout(Duration::from_secs(2));
    tracing::info!("stopped; checkpoints saved");
    Ok(())
}

/// Starts the API-server pod watch; `None` (path metadata only, logged)
/// when no API server can be named. Tailing never waits for the watch.
fn start_pod_watch(
    k: &K8sApi,
    node: &str,
    stats: &Arc<Stats>,
    rt: &tokio::runtime::Handle,
) -> Option<Arc<PodCache>> {
    let client = match crate::k8s::Client::new(&k.api) {
        Ok(c) => c,
        Err(e) => {
            Stats::add(&stats.k8s_watch_errors, 1);
            tracing::error!(error = %e, "k8s_api_enrichment is on but there is no API server to watch; pods get the metadata from their log paths only");
            return None;
        }
    };
    let cache = Arc::new(PodCache::new(k.deleted_pod_grace));
    rt.spawn(crate::k8s::watch_pods(
        client,
        node.to_owned(),
        Arc::clone(&cache),
        Arc::clone(stats),
    ));
    Some(cache)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot install a SIGTERM handler; only SIGINT stops the agent");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn persist_loop(store: &Store, committed: &Committed, shutdown: &AtomicBool) {
    let mut last = None;
    while !shutdown.load(Ordering::Relaxed) {
        // About once a second, and only when an entry may have moved: a
        // snapshot of thousands of files costs milliseconds.
        std::thread::sleep(Duration::from_secs(1));
        let generation = committed.generation();
        if last == Some(generation) {
            continue;
        }
        match store.save(committed.snapshot()) {
            Ok(()) => last = Some(generation),
            Err(e) => tracing::error!(error = %e, "cannot persist checkpoints"),
        }
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "thread entry point taking its owned state"
)]
fn tail_loop(
    opts: TailOptions,
    committed: Committed,
    first_start: bool,
    stats: Arc<Stats>,
    shutdown: Arc<AtomicBool>,
    tx: SyncSender<Batch>,
    max_records: usize,
    batch_timeout: Duration,
) {
    let wake = Wakeup::new(&opts.globs.roots());
    let mut tailer = Tailer::new(opts, committed, first_start, stats);
    let mut bb = BatchBuilder::default();
    let mut last_scan: Option<Instant> = None;
    let mut last_cut = Instant::now();
    loop {
        if shutdown.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        // Files that appeared, moved or went away ask for a scan; changes
        // of known files only need those files looked at (a walk of the
        // whole tree on every write would cost a core on a large node).
        let woken = wake.take();
        if woken.rescan {
            tailer.request_scan();
        }
        tailer.touched(&woken.changed, now);
        if tailer.scan_requested()
            || last_scan.is_none_or(|t| now.duration_since(t) >= SCAN_INTERVAL)
        {
            tailer.scan(now);
            last_scan = Some(now);
        }
        let n = tailer.poll(now, &mut bb);
        tailer.flush_idle(now, &mut bb);
        let due = bb
            .started()
            .is_some_and(|t| now.duration_since(t) >= batch_timeout)
            || (bb.is_empty() && now.duration_since(last_cut) >= batch_timeout);
        if bb.len() >= max_records || bb.bytes() >= BATCH_BYTES || due {
            let marks = tailer.marks();
            last_cut = now;
            if !bb.is_empty() || !marks.is_empty() {
                // Blocks while the exporter is paused: that is the backpressure.
                if tx.send(bb.take(marks)).is_err() {
                    break;
                }
            }
        }
        if n == 0 {
            wake.wait(IDLE_WAIT.min(batch_timeout));
        }
    }
    let marks = tailer.marks();
    if !bb.is_empty() || !marks.is_empty() {
        let _ = tx.send(bb.take(marks));
    }
}
