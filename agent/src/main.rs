//! `periscope-agent`, the node agent: tails container logs and ships OTLP.
//! Not built yet: it says so and exits non-zero rather than pretending to run.

fn main() {
    eprintln!(
        "periscope-agent is not implemented yet; run `periscope serve` and point OTLP exporters at it"
    );
    std::process::exit(1);
}
