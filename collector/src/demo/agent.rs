//! `--with-agent`: the node agent as a child process, tailing the simulated
//! pods' logs and sending them to this collector. The demo goes on without
//! it when the binary is missing or the agent fails; on shutdown it gets
//! SIGTERM (to save its checkpoints), then SIGKILL if it lingers.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The agent's binary name, looked for next to `periscope`.
pub const AGENT_BIN: &str = "periscope-agent";
/// How long the agent may take to stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(4);

/// Where the agent binary should be: next to the running executable.
pub fn agent_path() -> std::io::Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name(AGENT_BIN))
}

/// The agent's command line: send to `collector`, keep state in
/// `data_dir`, tail files matching `include` from their beginning, and open
/// no OTLP relay of its own.
pub fn agent_args(collector: SocketAddr, data_dir: &Path, include: &str) -> Vec<OsString> {
    vec![
        "--endpoint".into(),
        format!("http://{collector}").into(),
        "--data-dir".into(),
        data_dir.into(),
        "--include".into(),
        include.into(),
        "--read-from".into(),
        "beginning".into(),
        "--http-addr".into(),
        "127.0.0.1:0".into(),
        "--otlp-grpc-addr".into(),
        "".into(),
        "--otlp-http-addr".into(),
        "".into(),
    ]
}

/// Runs the agent at `bin` with `args` until `stop`. Problems are printed
/// to stderr for the person running the demo; they never stop the demo.
pub async fn supervise(bin: PathBuf, args: Vec<OsString>, stop: CancellationToken) {
    if !bin.is_file() {
        eprintln!(
            "error: --with-agent: {} not found (build it with `cargo build -p periscope-agent`); the demo goes on without the agent",
            bin.display()
        );
        return;
    }
    let mut child = match tokio::process::Command::new(&bin)
        .args(&args)
        .stdin(Stdio::null())
        // The agent's stdout would mix with the demo's own; send it to stderr.
        .stdout(Stdio::from(std::io::stderr()))
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "error: --with-agent: failed to start {}: {e}; the demo goes on without the agent",
                bin.display()
            );
            return;
        }
    };
    tracing::info!(pid = child.id(), bin = %bin.display(), "started the node agent");
    tokio::select! {
        status = child.wait() => {
            match status {
                Ok(s) if s.success() => eprintln!("periscope-agent exited; the demo goes on without it"),
                Ok(s) => eprintln!("error: periscope-agent exited with {s}; the demo goes on without it"),
                Err(e) => eprintln!("error: failed to wait for periscope-agent: {e}; the demo goes on without it"),
            }
        }
        _ = stop.cancelled() => {
            let term = child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .and_then(rustix::process::Pid::from_raw)
                .map(|pid| rustix::process::kill_process(pid, rustix::process::Signal::TERM));
            let stopped = match term {
                Some(Ok(())) => tokio::time::timeout(STOP_GRACE, child.wait()).await.is_ok(),
                _ => false,
            };
            if !stopped {
                tracing::warn!("the node agent did not stop after SIGTERM; killing it");
                let _ = child.kill().await;
            }
        }
    }
}
