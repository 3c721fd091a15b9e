//! The Periscope node agent (`periscope-agent`).
//!
//! Pipeline, one module per stage:
//! `discover` (globs, notify wakeups, periodic scans) → `tail` ([`Tailer`]:
//! rotation, truncation, identity) → `parse` ([`FileParser`]: CRI / Docker /
//! plain, partial join, multiline, JSON, severity) with `k8s` resource
//! attributes → `batch` ([`BatchBuilder`]: OTLP requests carrying checkpoint
//! marks) → `export` ([`Exporter`]: bounded memory queue, disk [`Spool`],
//! gRPC with retries) → acknowledgements advance
//! the checkpoints, persisted atomically. Host metrics and the local OTLP
//! relay feed the same exporter; [`Stats`] counts everything. See
//! `agent/README.md` for the design.
//!
//! ```
//! use periscope_agent::pod_log_from_path;
//! let p = pod_log_from_path("/var/log/pods/shop_web-1_0b1c/nginx/2.log".as_ref()).unwrap();
//! assert_eq!((p.namespace.as_str(), p.pod.as_str(), p.container.as_str(), p.restart), ("shop", "web-1", "nginx", 2));
//! ```

mod app;
mod batch;
mod checkpoint;
mod config;
mod discover;
mod export;
mod hostmetrics;
mod k8s;
mod parse;
mod relay;
mod sync;
mod tail;
mod telemetry;

pub use app::run;
pub use batch::{Batch, BatchBuilder, Payload};
pub use checkpoint::{CheckpointError, Committed, Entry, FileId, Fingerprint, Mark, Store};
pub use config::{Cli, Config, ConfigError, ReadFrom};
pub use discover::Globs;
pub use export::spool::{Spool, SpoolError};
pub use export::{ExportError, ExportOptions, Exporter, Finalizer};
pub use hostmetrics::HostMetrics;
pub use k8s::{
    Owner, PodCache, PodLog, PodMeta, from_path as pod_log_from_path, resource_attributes,
};
pub use parse::{FileParser, Line, ParseOptions, Record, Stream};
pub use tail::{Sink, TailOptions, Tailer};
pub use telemetry::Stats;
