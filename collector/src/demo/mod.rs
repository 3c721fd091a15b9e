//! `periscope demo`: the collector exactly as `serve` runs it, plus a
//! simulated shop sending it traffic through real OTLP/gRPC, so a first run
//! shows a live service map, traces with errors, correlated logs and
//! metrics.
//!
//! The shop ([`shop`]) is five services; [`scenario`] simulates the
//! requests a browser makes and what each service does for them, with
//! [`trace`] building the spans and logs; [`metrics`] counts them as the
//! services' SDKs would; [`generator`] paces and sends it all. With
//! `--with-agent`, [`pods`] writes the services' container logs and
//! [`agent`] runs the node agent that tails them.

mod agent;
mod generator;
mod metrics;
mod pods;
mod scenario;
mod shop;
#[cfg(test)]
mod tests;
mod trace;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio_util::sync::CancellationToken;

use crate::app::{self, Bound, Hooks};
use crate::config::Config;

/// The generator's settings (flags of `demo`, already checked).
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Simulated requests per second.
    pub rate: f64,
    /// Seed of the random choices; `None` draws one.
    pub seed: Option<u64>,
    /// Also run the node agent on simulated pod logs.
    pub with_agent: bool,
}

/// How long the generator and the agent may take to stop once the
/// collector has.
const COMPANION_STOP: Duration = Duration::from_secs(6);

/// Where a client on this machine reaches a listener bound to `addr`:
/// loopback instead of the unspecified address.
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// Runs the collector and, once it serves, the simulated shop (and the
/// agent), until a shutdown signal.
pub async fn run(cfg: Config, opts: DemoOptions) -> anyhow::Result<()> {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Bound>();
    let stop = CancellationToken::new();
    let hooks = Hooks {
        ready: Some(ready_tx),
        shutdown: stop.clone(),
    };
    let data_dir = cfg.data_dir.clone();
    let companion_stop = stop.clone();
    let companion = tokio::spawn(async move {
        // Dropped unsent when the collector fails to start.
        let Ok(bound) = ready_rx.await else { return };
        companions(bound, data_dir, opts, companion_stop).await;
    });
    let result = app::serve_with(cfg, hooks).await;
    // The collector has stopped (or failed): so do its companions.
    stop.cancel();
    if tokio::time::timeout(COMPANION_STOP, companion)
        .await
        .is_err()
    {
        tracing::warn!("the demo traffic generator did not stop in time");
    }
    result
}

async fn companions(bound: Bound, data_dir: PathBuf, opts: DemoOptions, stop: CancellationToken) {
    let seed = opts.seed.unwrap_or_else(rand::random);
    let mut rng = SmallRng::seed_from_u64(seed);
    let shop = shop::Shop::new(&mut rng);
    let grpc = reachable(bound.otlp_grpc);
    println!(
        "Periscope demo: open http://{}/ in a browser (a simulated shop sends {} requests/s; Ctrl-C stops)",
        reachable(bound.http),
        opts.rate
    );
    tracing::info!(
        seed,
        rate = opts.rate,
        otlp_grpc = %grpc,
        otlp_http = %reachable(bound.otlp_http),
        "demo traffic starting; send your own OTLP to the same endpoints"
    );
    let mut agent_task = None;
    let mut pods = None;
    if opts.with_agent {
        let demo_dir =
            std::path::absolute(data_dir.join("demo")).unwrap_or_else(|_| data_dir.join("demo"));
        let logs = pods::PodLogs::new(demo_dir.join("pods"), &shop);
        let glob = logs.glob();
        let prepared = tokio::task::spawn_blocking(move || logs.prepare().map(|()| logs)).await;
        match prepared {
            Ok(Ok(logs)) => {
                pods = Some(logs);
                match agent::agent_path() {
                    Ok(bin) => {
                        let args = agent::agent_args(grpc, &demo_dir.join("agent"), &glob);
                        agent_task = Some(tokio::spawn(agent::supervise(bin, args, stop.clone())));
                    }
                    Err(e) => eprintln!(
                        "error: --with-agent: cannot tell where this binary is ({e}); the demo goes on without the agent"
                    ),
                }
            }
            Ok(Err(e)) => eprintln!(
                "error: --with-agent: cannot create the demo pod log directory {}: {e}; the demo goes on without the agent",
                demo_dir.display()
            ),
            Err(e) => eprintln!("error: --with-agent: {e}; the demo goes on without the agent"),
        }
    }
    generator::Generator::new(rng, shop, opts.rate)
        .run(grpc, pods, stop)
        .await;
    if let Some(t) = agent_task {
        let _ = t.await;
    }
}
