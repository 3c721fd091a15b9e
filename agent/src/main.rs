//! `periscope-agent`, the node agent: tails container and host logs, adds
//! Kubernetes metadata and ships OTLP to the collector. Exit codes: 0 after a
//! clean shutdown, 1 on a runtime failure, 2 on a configuration error.

use clap::Parser;
use periscope_agent::Cli;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // A bad flag or value is a configuration error like any other:
            // one line (clap's first, without its usage and hints), exit 2.
            let text = e.to_string();
            let line = text.lines().next().unwrap_or_default();
            let line = line.strip_prefix("error: ").unwrap_or(line);
            eprintln!("periscope-agent: configuration error: {line}");
            std::process::exit(2);
        }
    };
    let check = cli.check_config;
    let cfg = match cli.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("periscope-agent: configuration error: {e}");
            std::process::exit(2);
        }
    };
    if check {
        println!(
            "configuration ok: endpoint {}, data dir {}, {} include glob(s)",
            cfg.endpoint,
            cfg.data_dir.display(),
            cfg.include.len()
        );
        return;
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    if let Err(e) = periscope_agent::run(cfg) {
        tracing::error!(error = format!("{e:#}"), "periscope-agent failed");
        eprintln!("periscope-agent: {e:#}");
        std::process::exit(1);
    }
}
