//! The `periscope` binary: parses the command line, installs logging, and
//! decides exit codes (2 for configuration errors, 1 for runtime failures).

mod app;
mod config;
mod demo;
mod panics;
mod pipeline;
mod receiver;
mod sync;
mod telemetry;
mod traces;

use clap::Parser;

// glibc malloc contends under tantivy's indexing threads; mimalloc measured
// about 40 % faster on the ingest ceiling bench (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use config::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let (args, demo) = match cli.command {
        Command::Serve(args) => (args, None),
        Command::Token(config::TokenCommand::New(t)) => match t.run() {
            Ok(out) => {
                print!("{out}");
                return;
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        },
        Command::Demo(d) => {
            if let Err(e) = d.validate() {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
            let opts = demo::DemoOptions {
                rate: d.demo_rate,
                seed: d.demo_seed,
                with_agent: d.with_agent,
            };
            (d.serve, Some(opts))
        }
    };
    let cfg = match args.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if demo.is_some() && (cfg.auth.is_some() || cfg.tls.is_some()) {
        eprintln!(
            "error: periscope demo sends its simulated traffic without a token over plain text: \
             --auth-file and --tls-* are for periscope serve"
        );
        std::process::exit(2);
    }
    let filter = match tracing_subscriber::EnvFilter::try_new(&cfg.log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "error: invalid value {:?} for log_level: {e}",
                cfg.log_level
            );
            std::process::exit(2);
        }
    };
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async {
        match demo {
            None => app::serve(cfg).await,
            Some(opts) => demo::run(cfg, opts).await,
        }
    });
    // `serve` has already made everything durable or left it in the WAL; do
    // not wait on a tantivy merge still running in a blocking task.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
