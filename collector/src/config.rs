//! Configuration: flags, `PERISCOPE_*` environment variables and a TOML file,
//! merged with precedence flag > env > file > default, then validated into
//! [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

/// Periscope: OTLP in, searchable logs out.
#[derive(Debug, Parser)]
#[command(name = "periscope", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the collector: OTLP receivers, storage and the query API.
    Serve(ServeArgs),
    /// Run the collector with a simulated shop sending it traces, logs and metrics.
    Demo(DemoArgs),
    /// Manage access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// `periscope token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new random token, then the block to add to the auth file.
    New(TokenNewArgs),
}

/// Flags of `demo`: those of `serve`, plus the traffic generator's.
#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Simulated requests (traces) per second, at most 1000. Default `10`.
    #[arg(long, env = "PERISCOPE_DEMO_RATE", default_value_t = 10.0)]
    pub demo_rate: f64,
    /// Seed of the generator's random choices, to repeat a run. Default: a new one per run.
    #[arg(long, env = "PERISCOPE_DEMO_SEED")]
    pub demo_seed: Option<u64>,
    /// Also run `periscope-agent` (found next to this binary), tailing pod logs the demo writes under the data dir.
    #[arg(long)]
    pub with_agent: bool,
}

impl DemoArgs {
    /// Checks the generator's flags.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.demo_rate > 0.0 && self.demo_rate <= 1000.0) {
            return Err(ConfigError(format!(
                "invalid value {} for demo_rate: must be above 0 and at most 1000",
                self.demo_rate
            )));
        }
        Ok(())
    }
}

/// Flags of `serve`. Every flag is optional here so that the environment and
/// the file can fill what the command line leaves out.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML file with the same keys as the flags (snake_case).
    #[arg(long, env = "PERISCOPE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the WAL and the indexes live. Default `./data`.
    #[arg(long, env = "PERISCOPE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// OTLP/gRPC listen address. Default `0.0.0.0:4317`.
    #[arg(long, env = "PERISCOPE_OTLP_GRPC_ADDR")]
    pub otlp_grpc_addr: Option<String>,
    /// OTLP/HTTP listen address. Default `0.0.0.0:4318`.
    #[arg(long, env = "PERISCOPE_OTLP_HTTP_ADDR")]
    pub otlp_http_addr: Option<String>,
    /// Query API, UI and self-metrics listen address. Default `0.0.0.0:8080`.
    #[arg(long, env = "PERISCOPE_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// Largest accepted request, compressed or decoded (bytes, or with KiB/MiB/GiB). Default `16MiB`.
    #[arg(long, env = "PERISCOPE_MAX_RECV_MSG_SIZE")]
    pub max_recv_msg_size: Option<String>,
    /// Budget of request bytes being processed at once; beyond it clients are told to retry. Default `256MiB`.
    #[arg(long, env = "PERISCOPE_MAX_INFLIGHT_BYTES")]
    pub max_inflight_bytes: Option<String>,
    /// How long logs are kept (s, m, h, d, w). Default `7d`.
    #[arg(long, env = "PERISCOPE_LOGS_RETENTION")]
    pub logs_retention: Option<String>,
    /// How long metric samples are kept (s, m, h, d, w). Default `30d`.
    #[arg(long, env = "PERISCOPE_METRICS_RETENTION")]
    pub metrics_retention: Option<String>,
    /// The metric head is written to Parquet at least this often (or every million samples). Default `60s`.
    #[arg(long, env = "PERISCOPE_METRICS_FLUSH_INTERVAL")]
    pub metrics_flush_interval: Option<String>,
    /// Memory for cached range-query results (bytes, KiB, MiB, GiB); `0` turns the cache off. Default `64MiB`.
    #[arg(long, env = "PERISCOPE_QUERY_CACHE_BYTES")]
    pub query_cache_bytes: Option<String>,
    /// How long spans are kept (s, m, h, d, w). Default `7d`.
    #[arg(long, env = "PERISCOPE_TRACES_RETENTION")]
    pub traces_retention: Option<String>,
    /// A trace is complete once no span of it arrived for this long (ms, s, m). Default `5s`.
    #[arg(long, env = "PERISCOPE_TRACE_IDLE")]
    pub trace_idle: Option<String>,
    /// A trace is written at the latest this long after its first span arrived. Default `60s`.
    #[arg(long, env = "PERISCOPE_TRACE_MAX_AGE")]
    pub trace_max_age: Option<String>,
    /// Completed traces are written to Parquet at least this often. Default `10s`.
    #[arg(long, env = "PERISCOPE_TRACE_FLUSH_INTERVAL")]
    pub trace_flush_interval: Option<String>,
    /// Spans kept per trace; the excess is counted and the trace flagged. Default `100000`.
    #[arg(long, env = "PERISCOPE_MAX_SPANS_PER_TRACE")]
    pub max_spans_per_trace: Option<usize>,
    /// Memory for traces waiting to be written; above it the oldest are written early. Default `256MiB`.
    #[arg(long, env = "PERISCOPE_TRACE_BUFFER_BYTES")]
    pub trace_buffer_bytes: Option<String>,
    /// Origins allowed to call the OTLP/HTTP receiver from browsers (comma-separated, `*` for any). Default none: CORS off.
    #[arg(long, env = "PERISCOPE_CORS_ALLOWED_ORIGINS")]
    pub cors_allowed_origins: Option<String>,
    /// Log filter for Periscope's own logs (tracing `EnvFilter` syntax). Default `info`.
    #[arg(long, env = "PERISCOPE_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Test hook: sleep this long per indexed batch, to exercise backpressure.
    #[arg(long, env = "PERISCOPE_TEST_INDEX_DELAY_MS", hide = true)]
    pub test_index_delay_ms: Option<u64>,
    /// Longest query text (log query, PromQL, trace tags; bytes, or with KiB/MiB). Default `64KiB`.
    #[arg(long, env = "PERISCOPE_QUERY_MAX_LENGTH")]
    pub query_max_length: Option<String>,
    /// Deepest nesting of a query (brackets, `NOT`s, unary signs, operator chains), at most 512. Default `128`.
    #[arg(long, env = "PERISCOPE_QUERY_MAX_DEPTH")]
    pub query_max_depth: Option<usize>,
    /// Most samples one PromQL query reads or holds. Default `50000000`.
    #[arg(long, env = "PERISCOPE_QUERY_MAX_SAMPLES")]
    pub query_max_samples: Option<usize>,
    /// Most series one PromQL selector, or a series/labels request, may match. Default `500000`.
    #[arg(long, env = "PERISCOPE_QUERY_MAX_SERIES")]
    pub query_max_series: Option<usize>,
    /// Longest any query runs before it is stopped; a client's `timeout` may only lower it. Default `2m`.
    #[arg(long, env = "PERISCOPE_QUERY_TIMEOUT")]
    pub query_timeout: Option<String>,
    /// Queries admitted at once (running or waiting for a query thread), all tenants; beyond it 429. Default eight times the cores, at least 32.
    #[arg(long, env = "PERISCOPE_QUERY_MAX_CONCURRENT")]
    pub query_max_concurrent: Option<usize>,
    /// Queries running at once for one tenant; beyond it 429. Default half of `query_max_concurrent`, at least 1.
    #[arg(long, env = "PERISCOPE_QUERY_MAX_CONCURRENT_PER_TENANT")]
    pub query_max_concurrent_per_tenant: Option<usize>,
    /// Threads that run queries (not those decoding ingest). Default the number of cores.
    #[arg(long, env = "PERISCOPE_QUERY_THREADS")]
    pub query_threads: Option<usize>,
    /// Most spans one Jaeger trace search response holds; further traces are left out with a warning. Default `100000`.
    #[arg(long, env = "PERISCOPE_QUERY_MAX_SPANS_PER_RESPONSE")]
    pub query_max_spans_per_response: Option<usize>,
    /// Time a client has to send a request's headers on the HTTP listeners, and the longest an idle keep-alive connection stays open (ms, s, m). Default `10s`.
    #[arg(long, env = "PERISCOPE_HTTP_HEADER_READ_TIMEOUT")]
    pub http_header_read_timeout: Option<String>,
    /// Time a client has to send a request's body on the HTTP listeners, from the end of its headers; then 408 (ms, s, m). Default `30s`.
    #[arg(long, env = "PERISCOPE_HTTP_BODY_READ_TIMEOUT")]
    pub http_body_read_timeout: Option<String>,
    /// Connections each listener holds at once; beyond it new connections are closed at once (HTTP ones after a 503). Default `4096`.
    #[arg(long, env = "PERISCOPE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Concurrent gRPC streams (requests) per connection. Default `100`.
    #[arg(long, env = "PERISCOPE_GRPC_MAX_CONCURRENT_STREAMS")]
    pub grpc_max_concurrent_streams: Option<u32>,
    /// Interval of HTTP/2 keepalive pings on gRPC connections (ms, s, m). Default `60s`.
    #[arg(long, env = "PERISCOPE_GRPC_KEEPALIVE_INTERVAL")]
    pub grpc_keepalive_interval: Option<String>,
    /// A gRPC connection whose keepalive ping is not answered within this is closed (ms, s, m). Default `20s`.
    #[arg(long, env = "PERISCOPE_GRPC_KEEPALIVE_TIMEOUT")]
    pub grpc_keepalive_timeout: Option<String>,
    /// Auth file (TOML) listing tokens by SHA-256 with their tenants and scopes; every request must then present one. Re-read when it changes and on SIGHUP. Default none: no authentication.
    #[arg(long, env = "PERISCOPE_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,
    /// Certificate chain (PEM) for TLS on all three listeners; needs `tls_key_file`. Re-read when it changes. Default none: plain text.
    #[arg(long, env = "PERISCOPE_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of `tls_cert_file`.
    #[arg(long, env = "PERISCOPE_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// CA (PEM) whose client certificates the OTLP listeners require (mutual TLS); needs `tls_cert_file`. Default none.
    #[arg(long, env = "PERISCOPE_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// How long a web UI sign-in lasts (with `auth_file`), at least 1s (s, m, h, d). Default `12h`.
    #[arg(long, env = "PERISCOPE_UI_SESSION_TTL")]
    pub ui_session_ttl: Option<String>,
}

/// `periscope token new`: prints a new token and its auth file block.
#[derive(Debug, Args)]
pub struct TokenNewArgs {
    /// The token's name, shown in logs and metrics (letters, digits, `_`, `.`, `-`).
    #[arg(long)]
    pub name: String,
    /// A tenant the token reaches (repeat for several); `*` for every tenant.
    #[arg(long = "tenant", required = true)]
    pub tenants: Vec<String>,
    /// What the token may do: `write`, `read`, `admin`, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub scope: Vec<String>,
}

impl TokenNewArgs {
    /// Checks the arguments; returns the token's first line and its block.
    pub fn run(self) -> Result<String, ConfigError> {
        if !periscope_auth::tokens::valid_name(&self.name) {
            return Err(ConfigError(format!(
                "invalid token name {:?}: letters, digits, '_', '.', '-', at most 100",
                self.name
            )));
        }
        let scopes = self
            .scope
            .iter()
            .map(|s| {
                periscope_auth::Scope::parse(s.trim()).ok_or_else(|| {
                    ConfigError(format!(
                        "invalid scope {s:?}: expected write, read or admin"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.tenants.iter().any(|t| t == "*") && self.tenants.len() > 1 {
            return Err(ConfigError("\"*\" must be the only tenant".into()));
        }
        if let Some(t) = self.tenants.iter().find(|t| *t != "*" && !valid_tenant(t)) {
            return Err(ConfigError(format!("invalid tenant {t:?}")));
        }
        let token = periscope_auth::tokens::new_token();
        let block = periscope_auth::tokens::file_block(&self.name, &token, &self.tenants, &scopes);
        Ok(format!(
            "{token}\n\n# Add to the auth file (--auth-file):\n{block}"
        ))
    }
}

/// Whether `t` is a valid tenant id.
pub fn valid_tenant(t: &str) -> bool {
    periscope_store::TenantId::parse(t).is_ok()
}

/// The TOML file: the same keys as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    otlp_grpc_addr: Option<String>,
    otlp_http_addr: Option<String>,
    http_addr: Option<String>,
    max_recv_msg_size: Option<toml::Value>,
    max_inflight_bytes: Option<toml::Value>,
    logs_retention: Option<String>,
    traces_retention: Option<String>,
    metrics_retention: Option<String>,
    metrics_flush_interval: Option<String>,
    query_cache_bytes: Option<toml::Value>,
    trace_idle: Option<String>,
    trace_max_age: Option<String>,
    trace_flush_interval: Option<String>,
    max_spans_per_trace: Option<usize>,
    trace_buffer_bytes: Option<toml::Value>,
    cors_allowed_origins: Option<Vec<String>>,
    log_level: Option<String>,
    query_max_length: Option<toml::Value>,
    query_max_depth: Option<usize>,
    query_max_samples: Option<usize>,
    query_max_series: Option<usize>,
    query_timeout: Option<String>,
    query_max_concurrent: Option<usize>,
    query_max_concurrent_per_tenant: Option<usize>,
    query_threads: Option<usize>,
    query_max_spans_per_response: Option<usize>,
    http_header_read_timeout: Option<String>,
    http_body_read_timeout: Option<String>,
    max_connections: Option<usize>,
    grpc_max_concurrent_streams: Option<u32>,
    grpc_keepalive_interval: Option<String>,
    grpc_keepalive_timeout: Option<String>,
    auth_file: Option<PathBuf>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_client_ca_file: Option<PathBuf>,
    ui_session_ttl: Option<String>,
}

/// The validated runtime configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub otlp_grpc_addr: SocketAddr,
    pub otlp_http_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub max_recv_msg_size: usize,
    pub max_inflight_bytes: usize,
    pub logs_retention: Duration,
    pub traces_retention: Duration,
    pub metrics_retention: Duration,
    pub metrics_flush_interval: Duration,
    pub query_cache_bytes: usize,
    pub trace_idle: Duration,
    pub trace_max_age: Duration,
    pub trace_flush_interval: Duration,
    pub max_spans_per_trace: usize,
    pub trace_buffer_bytes: usize,
    pub cors_allowed_origins: Vec<String>,
    pub log_level: String,
    pub test_index_delay: Duration,
    /// The `query_*` settings.
    pub query_limits: periscope_query::QueryLimits,
    pub http_header_read_timeout: Duration,
    pub http_body_read_timeout: Duration,
    pub max_connections: usize,
    pub grpc_max_concurrent_streams: u32,
    pub grpc_keepalive_interval: Duration,
    pub grpc_keepalive_timeout: Duration,
    /// The auth file's tokens, when one is given.
    pub auth: Option<Arc<periscope_auth::Watched<periscope_auth::AuthTable>>>,
    /// The listeners' TLS material, when given.
    pub tls: Option<Arc<periscope_auth::Tls>>,
    /// How long a web UI session lasts.
    pub ui_session_ttl: Duration,
}

/// A configuration problem: reported in one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn toml_to_string(v: toml::Value) -> String {
    match v {
        toml::Value::String(s) => s,
        toml::Value::Integer(i) => i.to_string(),
        other => format!("{other:?}"),
    }
}

impl ServeArgs {
    /// Merges flags/env (already in `self`) over the file over defaults, and validates.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError(format!("cannot read config file {}: {e}", path.display()))
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| {
                    ConfigError(format!(
                        "invalid config file {}: {}",
                        path.display(),
                        one_line(&e.to_string())
                    ))
                })?
            }
            None => FileConfig::default(),
        };
        let addr = |name: &str,
                    v: Option<String>,
                    f: Option<String>,
                    d: &str|
         -> Result<SocketAddr, ConfigError> {
            let s = v.or(f).unwrap_or_else(|| d.to_owned());
            s.parse()
                .map_err(|e| ConfigError(format!("invalid value {s:?} for {name}: {e}")))
        };
        let size = |name: &str,
                    v: Option<String>,
                    f: Option<toml::Value>,
                    d: &str|
         -> Result<usize, ConfigError> {
            let s = v.or(f.map(toml_to_string)).unwrap_or_else(|| d.to_owned());
            parse_size(&s).map_err(|e| ConfigError(format!("invalid value {s:?} for {name}: {e}")))
        };
        let retention = self
            .logs_retention
            .or(file.logs_retention)
            .unwrap_or_else(|| "7d".into());
        let logs_retention = parse_duration(&retention).map_err(|e| {
            ConfigError(format!(
                "invalid value {retention:?} for logs_retention: {e}"
            ))
        })?;
        let duration = |name: &str,
                        v: Option<String>,
                        f: Option<String>,
                        d: &str|
         -> Result<Duration, ConfigError> {
            let s = v.or(f).unwrap_or_else(|| d.to_owned());
            match parse_duration(&s) {
                Ok(d) if !d.is_zero() => Ok(d),
                Ok(_) => Err(ConfigError(format!(
                    "invalid value {s:?} for {name}: must be positive"
                ))),
                Err(e) => Err(ConfigError(format!("invalid value {s:?} for {name}: {e}"))),
            }
        };
        let traces_retention = duration(
            "traces_retention",
            self.traces_retention,
            file.traces_retention,
            "7d",
        )?;
        let metrics_retention = duration(
            "metrics_retention",
            self.metrics_retention,
            file.metrics_retention,
            "30d",
        )?;
        let metrics_flush_interval = duration(
            "metrics_flush_interval",
            self.metrics_flush_interval,
            file.metrics_flush_interval,
            "60s",
        )?;
        let trace_idle = duration("trace_idle", self.trace_idle, file.trace_idle, "5s")?;
        let trace_max_age = duration(
            "trace_max_age",
            self.trace_max_age,
            file.trace_max_age,
            "60s",
        )?;
        let trace_flush_interval = duration(
            "trace_flush_interval",
            self.trace_flush_interval,
            file.trace_flush_interval,
            "10s",
        )?;
        let max_spans_per_trace = self
            .max_spans_per_trace
            .or(file.max_spans_per_trace)
            .unwrap_or(100_000);
        if max_spans_per_trace == 0 {
            return Err(ConfigError(
                "invalid value 0 for max_spans_per_trace: must be positive".into(),
            ));
        }
        let trace_buffer_bytes = size(
            "trace_buffer_bytes",
            self.trace_buffer_bytes,
            file.trace_buffer_bytes,
            "256MiB",
        )?;
        // Query limits: each unset one keeps `QueryLimits`' default.
        let query_limits = {
            let d = periscope_query::QueryLimits::default();
            let max_concurrent = self
                .query_max_concurrent
                .or(file.query_max_concurrent)
                .unwrap_or(d.max_concurrent);
            let limits = periscope_query::QueryLimits {
                max_length: size(
                    "query_max_length",
                    self.query_max_length,
                    file.query_max_length,
                    "64KiB",
                )?,
                max_depth: self
                    .query_max_depth
                    .or(file.query_max_depth)
                    .unwrap_or(d.max_depth),
                max_samples: self
                    .query_max_samples
                    .or(file.query_max_samples)
                    .unwrap_or(d.max_samples),
                max_series: self
                    .query_max_series
                    .or(file.query_max_series)
                    .unwrap_or(d.max_series),
                timeout: duration(
                    "query_timeout",
                    self.query_timeout,
                    file.query_timeout,
                    "2m",
                )?,
                max_concurrent,
                max_concurrent_per_tenant: self
                    .query_max_concurrent_per_tenant
                    .or(file.query_max_concurrent_per_tenant)
                    .unwrap_or((max_concurrent / 2).max(1)),
                threads: self
                    .query_threads
                    .or(file.query_threads)
                    .unwrap_or(d.threads),
                max_spans_per_response: self
                    .query_max_spans_per_response
                    .or(file.query_max_spans_per_response)
                    .unwrap_or(d.max_spans_per_response),
            };
            limits.validate().map_err(ConfigError)?;
            limits
        };
        let cors_allowed_origins = match self.cors_allowed_origins {
            Some(s) => s
                .split(',')
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            None => file.cors_allowed_origins.unwrap_or_default(),
        };
        let http_header_read_timeout = duration(
            "http_header_read_timeout",
            self.http_header_read_timeout,
            file.http_header_read_timeout,
            "10s",
        )?;
        let http_body_read_timeout = duration(
            "http_body_read_timeout",
            self.http_body_read_timeout,
            file.http_body_read_timeout,
            "30s",
        )?;
        let max_connections = self
            .max_connections
            .or(file.max_connections)
            .unwrap_or(4096);
        // Semaphore permits are counted in u32 when acquired together.
        if max_connections == 0 || max_connections > u32::MAX as usize {
            return Err(ConfigError(format!(
                "invalid value {max_connections} for max_connections: must be between 1 and {}",
                u32::MAX
            )));
        }
        let grpc_max_concurrent_streams = self
            .grpc_max_concurrent_streams
            .or(file.grpc_max_concurrent_streams)
            .unwrap_or(100);
        if grpc_max_concurrent_streams == 0 {
            return Err(ConfigError(
                "invalid value 0 for grpc_max_concurrent_streams: must be positive".into(),
            ));
        }
        let grpc_keepalive_interval = duration(
            "grpc_keepalive_interval",
            self.grpc_keepalive_interval,
            file.grpc_keepalive_interval,
            "60s",
        )?;
        let grpc_keepalive_timeout = duration(
            "grpc_keepalive_timeout",
            self.grpc_keepalive_timeout,
            file.grpc_keepalive_timeout,
            "20s",
        )?;
        let ui_session_ttl = duration(
            "ui_session_ttl",
            self.ui_session_ttl,
            file.ui_session_ttl,
            "12h",
        )?;
        // Cookies count their life in whole seconds.
        if ui_session_ttl < Duration::from_secs(1) {
            return Err(ConfigError(format!(
                "invalid value {ui_session_ttl:?} for ui_session_ttl: at least 1s"
            )));
        }
        let auth = match self.auth_file.or(file.auth_file) {
            None => None,
            Some(p) => Some(
                periscope_auth::open_auth_file(p, valid_tenant)
                    .map_err(|e| ConfigError(format!("invalid auth_file: {}", one_line(&e))))?,
            ),
        };
        let tls = match (
            self.tls_cert_file.or(file.tls_cert_file),
            self.tls_key_file.or(file.tls_key_file),
            self.tls_client_ca_file.or(file.tls_client_ca_file),
        ) {
            (None, None, None) => None,
            (Some(cert), Some(key), client_ca) => Some(
                periscope_auth::tls::open(periscope_auth::TlsFiles {
                    cert,
                    key,
                    client_ca,
                })
                .map_err(|e| ConfigError(format!("invalid TLS settings: {}", one_line(&e))))?,
            ),
            (_, None, _) | (None, _, _) => {
                return Err(ConfigError(
                    "tls_cert_file and tls_key_file go together (tls_client_ca_file needs both)"
                        .into(),
                ));
            }
        };
        let config = Config {
            auth,
            tls,
            ui_session_ttl,
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./data")),
            otlp_grpc_addr: addr(
                "otlp_grpc_addr",
                self.otlp_grpc_addr,
                file.otlp_grpc_addr,
                "0.0.0.0:4317",
            )?,
            otlp_http_addr: addr(
                "otlp_http_addr",
                self.otlp_http_addr,
                file.otlp_http_addr,
                "0.0.0.0:4318",
            )?,
            http_addr: addr("http_addr", self.http_addr, file.http_addr, "0.0.0.0:8080")?,
            max_recv_msg_size: size(
                "max_recv_msg_size",
                self.max_recv_msg_size,
                file.max_recv_msg_size,
                "16MiB",
            )?,
            max_inflight_bytes: size(
                "max_inflight_bytes",
                self.max_inflight_bytes,
                file.max_inflight_bytes,
                "256MiB",
            )?,
            logs_retention,
            traces_retention,
            metrics_retention,
            metrics_flush_interval,
            query_cache_bytes: size(
                "query_cache_bytes",
                self.query_cache_bytes,
                file.query_cache_bytes,
                "64MiB",
            )?,
            trace_idle,
            trace_max_age,
            trace_flush_interval,
            max_spans_per_trace,
            trace_buffer_bytes,
            cors_allowed_origins,
            log_level: self
                .log_level
                .or(file.log_level)
                .unwrap_or_else(|| "info".into()),
            test_index_delay: Duration::from_millis(self.test_index_delay_ms.unwrap_or(0)),
            query_limits,
            http_header_read_timeout,
            http_body_read_timeout,
            max_connections,
            grpc_max_concurrent_streams,
            grpc_keepalive_interval,
            grpc_keepalive_timeout,
        };
        if config.max_recv_msg_size == 0 || config.max_inflight_bytes == 0 {
            return Err(ConfigError(
                "max_recv_msg_size and max_inflight_bytes must be positive".into(),
            ));
        }
        if config.logs_retention < Duration::from_secs(3600) {
            return Err(ConfigError(format!(
                "invalid value {retention:?} for logs_retention: at least 1h"
            )));
        }
        Ok(config)
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parses `1048576`, `512KiB`, `16MiB`, `1GiB`, `10MB`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| "expected a number of bytes like 16MiB".to_owned())?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        u => {
            return Err(format!(
                "unknown size unit {u:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| "size too large".to_owned())
}

/// Parses `500ms`, `30s`, `15m`, `12h`, `7d`, `2w`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a duration like 7d".to_owned())?;
    let millis: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        u => {
            return Err(format!(
                "unknown duration unit {u:?} (use ms, s, m, h, d, w)"
            ));
        }
    };
    n.checked_mul(millis)
        .map(Duration::from_millis)
        .ok_or_else(|| "duration too large".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        for (s, want) in [
            ("16MiB", Some(16 << 20)),
            ("100", Some(100)),
            ("2KB", Some(2000)),
            ("banana", None),
            ("5XB", None),
        ] {
            assert_eq!(parse_size(s).ok(), want, "{s}");
        }
        for (s, want) in [
            ("7d", Some(604_800)),
            ("90m", Some(5400)),
            ("forever", None),
            ("5y", None),
        ] {
            assert_eq!(parse_duration(s).ok().map(|d| d.as_secs()), want, "{s}");
        }
    }

    #[test]
    fn query_limits_come_from_flags_and_file_and_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.toml");
        std::fs::write(
            &path,
            "query_max_depth = 64\nquery_timeout = \"30s\"\nquery_max_length = \"1KiB\"\nquery_max_concurrent = 8\n",
        )
        .unwrap();
        let c = ServeArgs {
            config: Some(path.clone()),
            query_max_depth: Some(32),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let l = &c.query_limits;
        assert_eq!(
            (l.max_depth, l.timeout, l.max_length, l.max_concurrent),
            (32, Duration::from_secs(30), 1024, 8)
        );
        // Per tenant defaults to half of the total.
        assert_eq!(l.max_concurrent_per_tenant, 4);
        for bad in [
            ServeArgs {
                query_max_depth: Some(100_000),
                ..Default::default()
            },
            ServeArgs {
                query_threads: Some(0),
                ..Default::default()
            },
            ServeArgs {
                query_timeout: Some("0s".into()),
                ..Default::default()
            },
        ] {
            assert!(bad.resolve().is_err());
        }
    }

    #[test]
    fn edge_limits_have_defaults_and_refuse_zero() {
        let c = ServeArgs::default().resolve().unwrap();
        assert_eq!(c.http_header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.http_body_read_timeout, Duration::from_secs(30));
        assert_eq!(c.max_connections, 4096);
        assert_eq!(c.grpc_max_concurrent_streams, 100);
        assert_eq!(c.grpc_keepalive_interval, Duration::from_secs(60));
        assert_eq!(c.grpc_keepalive_timeout, Duration::from_secs(20));
        let rows: Vec<(ServeArgs, &str)> = vec![
            (
                ServeArgs {
                    http_header_read_timeout: Some("0s".into()),
                    ..Default::default()
                },
                "http_header_read_timeout: must be positive",
            ),
            (
                ServeArgs {
                    http_body_read_timeout: Some("soon".into()),
                    ..Default::default()
                },
                "for http_body_read_timeout",
            ),
            (
                ServeArgs {
                    max_connections: Some(0),
                    ..Default::default()
                },
                "max_connections: must be between 1",
            ),
            (
                ServeArgs {
                    grpc_max_concurrent_streams: Some(0),
                    ..Default::default()
                },
                "grpc_max_concurrent_streams: must be positive",
            ),
        ];
        for (args, want) in rows {
            let e = args.resolve().unwrap_err();
            assert!(e.0.contains(want), "{want}: {}", e.0);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "http_header_read_timeout = \"2s\"\nmax_connections = 8\ngrpc_keepalive_timeout = \"5s\"\n",
        )
        .unwrap();
        let c = ServeArgs {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.http_header_read_timeout, Duration::from_secs(2));
        assert_eq!(c.max_connections, 8);
        assert_eq!(c.grpc_keepalive_timeout, Duration::from_secs(5));
    }

    #[test]
    fn ui_session_ttl_defaults_to_twelve_hours_and_counts_whole_seconds() {
        let c = ServeArgs::default().resolve().unwrap();
        assert_eq!(c.ui_session_ttl, Duration::from_secs(12 * 3600));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "ui_session_ttl = \"30m\"\n").unwrap();
        let c = ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.ui_session_ttl, Duration::from_secs(1800));
        let c = ServeArgs {
            config: Some(path),
            ui_session_ttl: Some("2s".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.ui_session_ttl, Duration::from_secs(2));
        for (bad, want) in [
            ("500ms", "at least 1s"),
            ("0s", "must be positive"),
            ("soon", "ui_session_ttl"),
        ] {
            let e = ServeArgs {
                ui_session_ttl: Some(bad.into()),
                ..Default::default()
            }
            .resolve()
            .unwrap_err();
            assert!(e.0.contains(want), "{bad}: {}", e.0);
        }
    }

    #[test]
    fn file_fills_what_flags_leave_out_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "data_dir = \"/from/file\"\nhttp_addr = \"127.0.0.1:9999\"\nmax_recv_msg_size = 1024\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            http_addr: Some("127.0.0.1:1".into()),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/file"));
        assert_eq!(c.http_addr.port(), 1);
        assert_eq!(c.max_recv_msg_size, 1024);
        assert_eq!(c.otlp_grpc_addr.port(), 4317);
        std::fs::write(&path, "data_dri = \"x\"\n").unwrap();
        let err = ServeArgs {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(
            err.0.contains("data_dri") && !err.0.contains('\n'),
            "{}",
            err.0
        );
    }
}
