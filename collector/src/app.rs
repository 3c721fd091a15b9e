//! Wiring of `periscope serve`: open the stores, replay the WAL, start the
//! receivers and the query server, and shut down in order on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use periscope_auth::Scope;
use periscope_proto::Signal;
use periscope_query::{QueryState, ServiceRegistry};
use periscope_store::{
    DataDir, LogIndexer, LogStore, LogStoreOptions, MetricStore, MetricStoreOptions, TraceStore,
    TraceStoreOptions, Wal, WalOptions,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::panics::{catch_grpc_panics, catch_panics};
use crate::pipeline::{Dispatcher, Ingest, Replay, WalItem, Worker, now_ns};
use crate::receiver::grpc::{ExportService, LogsSvc, MetricsSvc, TracesSvc};
use crate::receiver::listener::{HttpLimits, limit_incoming, serve_http};
use crate::telemetry::{Listener, Metrics};
use crate::traces::{Assembler, AssemblerOptions};

/// Everything must be durable within this long after a shutdown signal.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(9);

#[derive(Clone)]
struct OpsState {
    ready: Arc<AtomicBool>,
    ingest: Arc<Ingest>,
    logs: Arc<LogStore>,
    traces: Arc<TraceStore>,
    assembler: Arc<Assembler>,
    wal: Arc<Wal<WalItem>>,
    query: Arc<periscope_query::QueryRuntime>,
    auth: Arc<periscope_auth::Gate>,
    tls: Option<Arc<periscope_auth::Tls>>,
}

/// The largest header block of a gRPC request (h2's default is 16 MiB).
/// OTLP requests carry a handful of short headers.
const GRPC_MAX_HEADER_LIST_SIZE: u32 = 64 << 10;

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("failed to bind {what} on {addr}"))
}

/// The addresses the collector listens on (port 0 resolved).
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    /// The OTLP/gRPC receiver.
    pub otlp_grpc: SocketAddr,
    /// The OTLP/HTTP receiver.
    pub otlp_http: SocketAddr,
    /// The query API and UI.
    pub http: SocketAddr,
}

/// How something running in the same process (`periscope demo`) follows the
/// collector's life: told when the receivers accept requests, told first
/// when a shutdown signal arrives.
#[derive(Debug, Default)]
pub struct Hooks {
    /// Sent the bound addresses once the receivers serve.
    pub ready: Option<tokio::sync::oneshot::Sender<Bound>>,
    /// Cancelled as soon as a shutdown signal arrives, before the receivers stop.
    pub shutdown: CancellationToken,
}

/// Runs the collector until a shutdown signal.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    serve_with(cfg, Hooks::default()).await
}

/// [`serve`], reporting to `hooks`.
pub async fn serve_with(cfg: Config, hooks: Hooks) -> anyhow::Result<()> {
    let mut signals = ShutdownSignals::install()?;
    let data = DataDir::open(&cfg.data_dir)
        .with_context(|| format!("failed to open data dir {}", cfg.data_dir.display()))?;
    // Held until serving ends: a second collector on this directory fails here.
    let _lock = data.lock()?;
    periscope_query::promql::set_results_cache_bytes(cfg.query_cache_bytes);
    let logs = LogStore::open(
        &data,
        LogStoreOptions {
            retention: cfg.logs_retention,
            test_apply_delay: cfg.test_index_delay,
            ..Default::default()
        },
    )
    .context("failed to open log store")?;
    let traces = TraceStore::open(
        &data,
        TraceStoreOptions {
            retention: cfg.traces_retention,
            ..Default::default()
        },
    )
    .context("failed to open span store")?;
    let metrics_store = MetricStore::open(
        &data,
        MetricStoreOptions {
            retention: cfg.metrics_retention,
        },
    )
    .context("failed to open metric store")?;
    let wal: Arc<Wal<WalItem>> = Arc::new(
        Wal::open(
            &data.wal_dir(),
            WalOptions::default(),
            logs.max_committed_lsn()
                .max(traces.max_lsn())
                .max(metrics_store.max_durable_lsn())
                + 1,
        )
        .context("failed to open wal")?,
    );

    let traces_durable = traces.durable_lsn();
    let assembler = Assembler::new(
        AssemblerOptions {
            idle: cfg.trace_idle,
            max_age: cfg.trace_max_age,
            flush_interval: cfg.trace_flush_interval,
            max_spans_per_trace: cfg.max_spans_per_trace,
            buffer_bytes: cfg.trace_buffer_bytes,
            ..Default::default()
        },
        traces_durable,
    );
    assembler.send_metrics_to(metrics_store.clone());
    let metrics = Arc::new(Metrics::default());
    let services = Arc::new(ServiceRegistry::default());
    let ingest = Arc::new(Ingest::new(
        wal.clone(),
        cfg.max_inflight_bytes,
        crate::pipeline::Retention {
            logs: cfg.logs_retention,
            traces: cfg.traces_retention,
            metrics: cfg.metrics_retention,
        },
        metrics.clone(),
    ));
    // A tenant whose traces cannot be written stops taking spans once they
    // hold a quarter of the trace buffer, so it cannot stall the others.
    let gate = assembler.clone();
    ingest.refuse_spans_when(Arc::new(move |tenant| gate.refuses_spans(tenant)));
    let ready = Arc::new(AtomicBool::new(false));

    // Bind everything first so the addresses (port 0 included) are known.
    let grpc_l = bind(cfg.otlp_grpc_addr, "otlp grpc").await?;
    let otlp_http_l = bind(cfg.otlp_http_addr, "otlp http").await?;
    let http_l = bind(cfg.http_addr, "http").await?;
    let addrs = (
        grpc_l.local_addr()?,
        otlp_http_l.local_addr()?,
        http_l.local_addr()?,
    );
    println!(
        "{}",
        serde_json::json!({"event": "listening", "otlp_grpc": addrs.0.to_string(), "otlp_http": addrs.1.to_string(), "http": addrs.2.to_string()})
    );
    tracing::info!(otlp_grpc = %addrs.0, otlp_http = %addrs.1, http = %addrs.2, data_dir = %cfg.data_dir.display(), tls = cfg.tls.is_some(), auth = cfg.auth.is_some(), "periscope listening");
    warn_if_open(&cfg, addrs);

    // Authentication (when an auth file is given) and TLS: their files are
    // read again when they change, and at once on SIGHUP.
    let auth_gate = periscope_auth::Gate::new(cfg.auth.clone());
    let watch_stop = CancellationToken::new();
    let _stop_watching = watch_stop.clone().drop_guard();
    if let Some(a) = &cfg.auth {
        a.spawn_poll(watch_stop.clone());
    }
    if let Some(t) = &cfg.tls {
        t.spawn_poll(watch_stop.clone());
    }
    spawn_sighup_reload(cfg.auth.clone(), cfg.tls.clone(), watch_stop.clone())?;
    let acceptor = |alpn, client_certs| {
        cfg.tls.clone().map(|t| {
            periscope_auth::Acceptor::new(t, alpn, client_certs, cfg.http_header_read_timeout)
        })
    };

    // Queries run on threads of their own, not the blocking pool ingest uses.
    let query_runtime = periscope_query::QueryRuntime::new(cfg.query_limits.clone())
        .context("failed to start query threads")?;
    let query_token = CancellationToken::new();
    let ops = OpsState {
        ready: ready.clone(),
        ingest: ingest.clone(),
        logs: logs.clone(),
        traces: traces.clone(),
        assembler: assembler.clone(),
        wal: wal.clone(),
        query: query_runtime.clone(),
        auth: auth_gate.clone(),
        tls: cfg.tls.clone(),
    };
    // With an auth file the web UI signs in to a cookie session, which the
    // gate accepts on every API route in place of a token; its key lives in
    // the data directory so that sessions outlive a restart.
    let sessions = match &cfg.auth {
        None => None,
        Some(_) => {
            let s =
                periscope_query::Sessions::open(data.root(), cfg.ui_session_ttl, cfg.tls.is_some())
                    .context("failed to open web UI sessions")?;
            let s = Arc::new(s);
            auth_gate.set_sessions(s.clone());
            Some(s)
        }
    };
    let sign_in = periscope_query::SignIn {
        gate: auth_gate.clone(),
        sessions,
        listener: Listener::Http.as_str(),
    };
    let query_app = periscope_query::router(QueryState {
        logs: logs.clone(),
        services: services.clone(),
        traces: traces.clone(),
        live: assembler.clone(),
        metrics: metrics_store.clone(),
        runtime: query_runtime.clone(),
    })
    // Every API route needs `read` (a token, or the UI's session cookie);
    // the fallback (the UI's static files, which hold no data) stays open
    // so that the sign-in page loads.
    .route_layer(gate_layer(&auth_gate, Listener::Http, |_, _| {
        Some(Scope::Read)
    }))
    .merge(
        crate::receiver::remote_write::router(ingest.clone(), cfg.max_recv_msg_size).route_layer(
            gate_layer(&auth_gate, Listener::Http, |_, _| Some(Scope::Write)),
        ),
    )
    .merge(
        Router::new()
            .route("/metrics", get(self_metrics))
            .route_layer(gate_layer(&auth_gate, Listener::Http, |_, _| {
                Some(Scope::Admin)
            }))
            .with_state(ops.clone()),
    )
    // Probes stay open.
    .merge(
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .with_state(ops),
    )
    // Sign-in checks the token itself (through the gate).
    .merge(periscope_query::session_router(sign_in.clone()))
    // Before any gate: a cross-site request that would change something
    // with the session cookie is refused outright.
    .layer(axum::middleware::from_fn_with_state(
        sign_in,
        periscope_query::csrf_guard,
    ));
    let query_app = catch_panics(query_app, Listener::Http, metrics.clone());
    let http_limits = HttpLimits {
        header_read_timeout: cfg.http_header_read_timeout,
        body_read_timeout: cfg.http_body_read_timeout,
        max_connections: cfg.max_connections,
    };
    let query_server = tokio::spawn(serve_http(
        http_l,
        query_app,
        Listener::Http,
        http_limits,
        metrics.clone(),
        query_token.clone(),
        acceptor(periscope_auth::Alpn::Http1, false),
    ));

    // The indexer; the WAL releases segments as its commits land.
    let (index_tx, index_rx) = std::sync::mpsc::sync_channel(16);
    let wal_rel = wal.clone();
    // A partition whose writer fails (full disk) is rebuilt from the WAL.
    let reread = crate::pipeline::reread_logs(wal.clone());
    let indexer = LogIndexer::spawn_with_reread(
        logs.clone(),
        index_rx,
        move |lsn| wal_rel.release(Signal::Logs, lsn),
        Some(reread),
    )
    .context("failed to start log indexer")?;
    let (metric_tx, metric_rx) = std::sync::mpsc::sync_channel(64);
    let metric_ingest = crate::pipeline::spawn_metric_ingest(metrics_store.clone(), metric_rx)
        .context("failed to start metric ingest")?;
    let dispatcher = Arc::new(Dispatcher {
        indexer: index_tx,
        services: services.clone(),
        assembler: assembler.clone(),
        metrics: metric_tx,
    });

    // The trace flusher; the WAL releases segments as traces are written.
    // It runs during replay (replayed traces must be written to make room),
    // but releases WAL segments only once replay has read them all.
    let replay_done = Arc::new(AtomicBool::new(false));
    let (a, t, w, rd) = (
        assembler.clone(),
        traces.clone(),
        wal.clone(),
        replay_done.clone(),
    );
    let trace_flusher = Worker::spawn("trace-flusher", move |stop| {
        a.run_flusher(t, stop, |lsn| {
            let go = rd.load(Ordering::SeqCst);
            if go {
                w.release(Signal::Traces, lsn);
            }
            go
        })
    })
    .context("failed to start trace flusher")?;
    let metric_flusher = crate::pipeline::metric_flusher(
        metrics_store.clone(),
        wal.clone(),
        cfg.metrics_flush_interval,
        replay_done.clone(),
        metrics.clone(),
    )
    .context("failed to start metric flusher")?;
    let metric_compactor = crate::pipeline::metric_compactor(metrics_store.clone())
        .context("failed to start metric compactor")?;

    // Replay what the stores have not made durable, then start the writer.
    // Spans of entries above the span store's durable position may already
    // be stored (traces are written out of WAL order): the replay filter
    // knows which.
    let replay_filter = traces
        .replay_filter(traces_durable)
        .context("failed to read recent span files for replay")?;
    let replay = Replay {
        traces_durable,
        written_traces: replay_filter,
        metrics: metrics_store.clone(),
    };
    let (w, d) = (wal.clone(), dispatcher.clone());
    let replayed = tokio::task::spawn_blocking(move || replay.run(&w, &d))
        .await?
        .context("wal replay failed")?;
    tracing::info!(entries = replayed, "wal replay finished");
    replay_done.store(true, Ordering::SeqCst);
    wal.start(move |lsn, signal, item| dispatcher.dispatch(lsn, signal, item))
        .context("failed to start wal writer")?;

    // Receivers.
    let otlp_token = CancellationToken::new();
    let (health_reporter, health_svc) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ExportService<LogsSvc>>()
        .await;
    health_reporter
        .set_serving::<ExportService<TracesSvc>>()
        .await;
    health_reporter
        .set_serving::<ExportService<MetricsSvc>>()
        .await;
    let max = cfg.max_recv_msg_size;
    // tonic reads (and decompresses) a whole message before the handler
    // charges it to the in-flight budget: at most this many gRPC requests
    // are read at once, so what is held before it is charged stays within
    // one budget's worth. The others wait, their bytes held back by HTTP/2
    // flow control on the client's side.
    let grpc_reading = (cfg.max_inflight_bytes / cfg.max_recv_msg_size).max(1);
    let grpc = tonic::transport::Server::builder()
        .layer(catch_grpc_panics(Listener::OtlpGrpc, metrics.clone()))
        // Before the read limit: a refused request takes no reading slot.
        .layer(periscope_auth::GrpcGateLayer::new(
            auth_gate.clone(),
            Listener::OtlpGrpc.as_str(),
        ))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(grpc_reading))
        // Streams are requests: a connection may not run more at once.
        .max_concurrent_streams(cfg.grpc_max_concurrent_streams)
        // Pings find peers that vanished without closing their connection.
        .http2_keepalive_interval(Some(cfg.grpc_keepalive_interval))
        .http2_keepalive_timeout(Some(cfg.grpc_keepalive_timeout))
        .http2_max_header_list_size(GRPC_MAX_HEADER_LIST_SIZE)
        // A request (its message included) that takes longer fails with
        // CANCELLED, as a slow HTTP body gets 408.
        .timeout(cfg.http_body_read_timeout)
        .add_service(health_svc)
        .add_service(ExportService::<LogsSvc>::new(ingest.clone(), max))
        .add_service(ExportService::<TracesSvc>::new(ingest.clone(), max))
        .add_service(ExportService::<MetricsSvc>::new(ingest.clone(), max));
    let t = otlp_token.clone();
    let (max_connections, header_timeout, grpc_metrics) = (
        cfg.max_connections,
        cfg.http_header_read_timeout,
        metrics.clone(),
    );
    let incoming = limit_incoming(
        grpc_l,
        max_connections,
        header_timeout,
        Listener::OtlpGrpc,
        grpc_metrics,
        acceptor(periscope_auth::Alpn::H2, true),
        t.clone(),
    );
    let grpc_server = tokio::spawn(async move {
        grpc.serve_with_incoming_shutdown(incoming, t.cancelled_owned())
            .await
    });
    let http_app = crate::receiver::http::router(ingest.clone(), max, &cfg.cors_allowed_origins)
        .merge(crate::receiver::remote_write::router(ingest.clone(), max))
        // Everything on this listener is ingest, unknown paths included;
        // CORS preflights carry no credential and reach no data.
        .layer(gate_layer(&auth_gate, Listener::OtlpHttp, |m, _| {
            (m != axum::http::Method::OPTIONS).then_some(Scope::Write)
        }));
    let http_app = catch_panics(http_app, Listener::OtlpHttp, metrics.clone());
    let otlp_http_server = tokio::spawn(serve_http(
        otlp_http_l,
        http_app,
        Listener::OtlpHttp,
        http_limits,
        metrics.clone(),
        otlp_token.clone(),
        acceptor(periscope_auth::Alpn::Http1, true),
    ));

    ready.store(true, Ordering::SeqCst);
    if let Some(tx) = hooks.ready {
        let (otlp_grpc, otlp_http, http) = addrs;
        let _ = tx.send(Bound {
            otlp_grpc,
            otlp_http,
            http,
        });
    }

    // Retention, and compaction of span files.
    let (rl, rt, rm) = (logs.clone(), traces.clone(), metrics_store.clone());
    let retention = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let (l, t, m) = (rl.clone(), rt.clone(), rm.clone());
            let done = tokio::task::spawn_blocking(move || {
                m.apply_retention(now_ns().div_euclid(1_000_000));
                if let Err(e) = l.apply_retention(now_ns()) {
                    tracing::warn!(error = %e, "log retention failed");
                }
                if let Err(e) = t.apply_retention(now_ns()) {
                    tracing::warn!(error = %e, "span retention failed");
                }
                if let Err(e) = t.compact() {
                    tracing::warn!(error = %e, "span file compaction failed");
                }
            });
            let _ = done.await;
        }
    });

    signals.recv().await;
    hooks.shutdown.cancel();
    tracing::info!("shutting down: no new requests; draining");
    ready.store(false, Ordering::SeqCst);
    health_reporter
        .set_not_serving::<ExportService<LogsSvc>>()
        .await;
    let drain = async {
        otlp_token.cancel();
        let _ = grpc_server.await;
        let _ = otlp_http_server.await;
        retention.abort();
        // Everything acknowledged is already in the WAL; let the writer pass
        // queued entries on, then the indexer makes a final commit.
        let (w, a) = (wal.clone(), assembler.clone());
        tokio::task::spawn_blocking(move || {
            w.close();
            let _ = indexer.join();
            let _ = metric_ingest.join();
            // The flushers write every pending trace and sample, then stop.
            trace_flusher.stop();
            metric_flusher.stop();
            a.close();
            trace_flusher.join();
            metric_flusher.join();
            // Told to stop but not waited for: a merge cut short leaves
            // only an unlisted file, deleted on the next start.
            metric_compactor.stop();
        })
        .await
    };
    match tokio::time::timeout(SHUTDOWN_DEADLINE, drain).await {
        Ok(_) => tracing::info!("shutdown complete"),
        Err(_) => {
            tracing::warn!("shutdown deadline passed; unindexed entries stay in the wal for replay")
        }
    }
    query_token.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), query_server).await;
    Ok(())
}

/// The gate in front of a router's routes, for requests needing `scope`.
fn gate_layer(
    gate: &Arc<periscope_auth::Gate>,
    listener: Listener,
    scope_for: periscope_auth::ScopeFor,
) -> periscope_auth::gate::GateLayer {
    periscope_auth::HttpGate {
        gate: gate.clone(),
        listener: listener.as_str(),
        scope_for,
    }
    .layer()
}

/// Without an auth file, says in one line which listeners anyone beyond
/// this machine can reach without a credential.
fn warn_if_open(cfg: &Config, addrs: (SocketAddr, SocketAddr, SocketAddr)) {
    if cfg.auth.is_some() {
        return;
    }
    let open: Vec<String> = [
        ("otlp_grpc", addrs.0),
        ("otlp_http", addrs.1),
        ("http", addrs.2),
    ]
    .iter()
    .filter(|(_, a)| !a.ip().is_loopback())
    .map(|(n, a)| format!("{n} {a}"))
    .collect();
    if !open.is_empty() {
        tracing::warn!(
            "no --auth-file: anyone who reaches these listeners reads and writes every tenant: {}",
            open.join(", ")
        );
    }
}

/// Re-reads the auth file and the TLS files at once on SIGHUP.
fn spawn_sighup_reload(
    auth: Option<Arc<periscope_auth::Watched<periscope_auth::AuthTable>>>,
    tls: Option<Arc<periscope_auth::Tls>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).context("failed to listen for SIGHUP")?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                r = hup.recv() => if r.is_none() { break },
            }
            tracing::info!("SIGHUP: reading the auth and TLS files again");
            let (a, t) = (auth.clone(), tls.clone());
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(a) = a {
                    a.check(true);
                }
                if let Some(t) = t {
                    t.check(true);
                }
            })
            .await;
        }
    });
    Ok(())
}

/// SIGTERM and SIGINT listeners, installed before anything else starts so a
/// signal that arrives during startup is kept, not lost or fatal.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<ShutdownSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignals {
            term: signal(SignalKind::terminate()).context("failed to listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("failed to listen for SIGINT")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

async fn readyz(State(st): State<OpsState>) -> impl IntoResponse {
    if st.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "replaying wal")
    }
}

async fn self_metrics(State(st): State<OpsState>) -> impl IntoResponse {
    st.ingest.refresh_gauges();
    let mut body =
        st.ingest
            .metrics
            .render(st.wal.stats(), st.logs.stats(), st.ingest.budget_bytes());
    crate::telemetry::render_traces(&mut body, &st.assembler.stats, st.traces.stats());
    st.ingest
        .metrics
        .render_flush_failures(&mut body, &st.assembler.stats);
    st.query.render_metrics(&mut body);
    st.auth.render(&mut body, st.tls.as_deref());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
}
