//! Configuration: flags, `PERISCOPE_*` environment variables and a TOML file,
//! merged with precedence flag > env > file > default, then validated into
//! [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use periscope_settings::{ByteSize, HumanDuration, one_line, read_file};
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
    /// Largest accepted request, compressed or decoded (bytes, or with a unit: K/KiB, M/MiB, G/GiB, T/TiB are powers of 1024, KB, MB, GB, TB of 1000). Default `16MiB`.
    #[arg(long, env = "PERISCOPE_MAX_RECV_MSG_SIZE")]
    pub max_recv_msg_size: Option<ByteSize>,
    /// Budget of request bytes being processed at once; beyond it clients are told to retry. Default `256MiB`.
    #[arg(long, env = "PERISCOPE_MAX_INFLIGHT_BYTES")]
    pub max_inflight_bytes: Option<ByteSize>,
    /// How long logs are kept, at least 1h (ms, s, m, h, d, w). Default `7d`.
    #[arg(long, env = "PERISCOPE_LOGS_RETENTION")]
    pub logs_retention: Option<HumanDuration>,
    /// How long metric samples are kept (ms, s, m, h, d, w). Default `30d`.
    #[arg(long, env = "PERISCOPE_METRICS_RETENTION")]
    pub metrics_retention: Option<HumanDuration>,
    /// The metric head is written to Parquet at least this often (or every million samples). Default `60s`.
    #[arg(long, env = "PERISCOPE_METRICS_FLUSH_INTERVAL")]
    pub metrics_flush_interval: Option<HumanDuration>,
    /// Memory for cached range-query results; `0` turns the cache off. Default `64MiB`.
    #[arg(long, env = "PERISCOPE_QUERY_CACHE_BYTES")]
    pub query_cache_bytes: Option<ByteSize>,
    /// How long spans are kept (ms, s, m, h, d, w). Default `7d`.
    #[arg(long, env = "PERISCOPE_TRACES_RETENTION")]
    pub traces_retention: Option<HumanDuration>,
    /// A trace is complete once no span of it arrived for this long (ms, s, m, h, d, w). Default `5s`.
    #[arg(long, env = "PERISCOPE_TRACE_IDLE")]
    pub trace_idle: Option<HumanDuration>,
    /// A trace is written at the latest this long after its first span arrived. Default `60s`.
    #[arg(long, env = "PERISCOPE_TRACE_MAX_AGE")]
    pub trace_max_age: Option<HumanDuration>,
    /// Completed traces are written to Parquet at least this often. Default `10s`.
    #[arg(long, env = "PERISCOPE_TRACE_FLUSH_INTERVAL")]
    pub trace_flush_interval: Option<HumanDuration>,
    /// Spans kept per trace; the excess is counted and the trace flagged. Default `100000`.
    #[arg(long, env = "PERISCOPE_MAX_SPANS_PER_TRACE")]
    pub max_spans_per_trace: Option<usize>,
    /// Memory for traces waiting to be written; above it the oldest are written early. Default `256MiB`.
    #[arg(long, env = "PERISCOPE_TRACE_BUFFER_BYTES")]
    pub trace_buffer_bytes: Option<ByteSize>,
    /// Origins allowed to call the OTLP/HTTP receiver from browsers (comma-separated, `*` for any). Default none: CORS off.
    #[arg(long, env = "PERISCOPE_CORS_ALLOWED_ORIGINS")]
    pub cors_allowed_origins: Option<String>,
    /// Log filter for Periscope's own logs (tracing `EnvFilter` syntax). Default `info`.
    #[arg(long, env = "PERISCOPE_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Test hook: sleep this long per indexed batch, to exercise backpressure.
    #[arg(long, env = "PERISCOPE_TEST_INDEX_DELAY_MS", hide = true)]
    pub test_index_delay_ms: Option<u64>,
    /// Longest query text (log query, PromQL, trace tags). Default `64KiB`.
    #[arg(long, env = "PERISCOPE_QUERY_MAX_LENGTH")]
    pub query_max_length: Option<ByteSize>,
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
    pub query_timeout: Option<HumanDuration>,
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
    /// Time a client has to send a request's headers on the HTTP listeners, and the longest an idle keep-alive connection stays open (ms, s, m, h, d, w). Default `10s`.
    #[arg(long, env = "PERISCOPE_HTTP_HEADER_READ_TIMEOUT")]
    pub http_header_read_timeout: Option<HumanDuration>,
    /// Time a client has to send a request's body on the HTTP listeners, from the end of its headers; then 408 (ms, s, m, h, d, w). Default `30s`.
    #[arg(long, env = "PERISCOPE_HTTP_BODY_READ_TIMEOUT")]
    pub http_body_read_timeout: Option<HumanDuration>,
    /// Connections each listener holds at once; beyond it new connections are closed at once (HTTP ones after a 503). Default `4096`.
    #[arg(long, env = "PERISCOPE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Concurrent gRPC streams (requests) per connection. Default `100`.
    #[arg(long, env = "PERISCOPE_GRPC_MAX_CONCURRENT_STREAMS")]
    pub grpc_max_concurrent_streams: Option<u32>,
    /// Interval of HTTP/2 keepalive pings on gRPC connections (ms, s, m, h, d, w). Default `60s`.
    #[arg(long, env = "PERISCOPE_GRPC_KEEPALIVE_INTERVAL")]
    pub grpc_keepalive_interval: Option<HumanDuration>,
    /// A gRPC connection whose keepalive ping is not answered within this is closed (ms, s, m, h, d, w). Default `20s`.
    #[arg(long, env = "PERISCOPE_GRPC_KEEPALIVE_TIMEOUT")]
    pub grpc_keepalive_timeout: Option<HumanDuration>,
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
    /// How long a web UI sign-in lasts (with `auth_file`), at least 1s (ms, s, m, h, d, w). Default `12h`.
    #[arg(long, env = "PERISCOPE_UI_SESSION_TTL")]
    pub ui_session_ttl: Option<HumanDuration>,
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
    max_recv_msg_size: Option<ByteSize>,
    max_inflight_bytes: Option<ByteSize>,
    logs_retention: Option<HumanDuration>,
    traces_retention: Option<HumanDuration>,
    metrics_retention: Option<HumanDuration>,
    metrics_flush_interval: Option<HumanDuration>,
    query_cache_bytes: Option<ByteSize>,
    trace_idle: Option<HumanDuration>,
    trace_max_age: Option<HumanDuration>,
    trace_flush_interval: Option<HumanDuration>,
    max_spans_per_trace: Option<usize>,
    trace_buffer_bytes: Option<ByteSize>,
    cors_allowed_origins: Option<Vec<String>>,
    log_level: Option<String>,
    query_max_length: Option<ByteSize>,
    query_max_depth: Option<usize>,
    query_max_samples: Option<usize>,
    query_max_series: Option<usize>,
    query_timeout: Option<HumanDuration>,
    query_max_concurrent: Option<usize>,
    query_max_concurrent_per_tenant: Option<usize>,
    query_threads: Option<usize>,
    query_max_spans_per_response: Option<usize>,
    http_header_read_timeout: Option<HumanDuration>,
    http_body_read_timeout: Option<HumanDuration>,
    max_connections: Option<usize>,
    grpc_max_concurrent_streams: Option<u32>,
    grpc_keepalive_interval: Option<HumanDuration>,
    grpc_keepalive_timeout: Option<HumanDuration>,
    auth_file: Option<PathBuf>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_client_ca_file: Option<PathBuf>,
    ui_session_ttl: Option<HumanDuration>,
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

/// The flag or environment value, else the file's, else the default.
macro_rules! merge {
    ($args:ident, $file:ident, $name:ident, $default:expr) => {
        $args.$name.or($file.$name).unwrap_or($default)
    };
}

/// `d` as a `Duration`, refused when zero.
fn positive(name: &str, d: HumanDuration) -> Result<Duration, ConfigError> {
    if d.get().is_zero() {
        return Err(ConfigError(format!(
            "invalid value {d} for {name}: must be positive"
        )));
    }
    Ok(d.get())
}

impl ServeArgs {
    /// Merges flags/env (already in `self`) over the file over defaults, and validates.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let args = self;
        let file = match &args.config {
            Some(path) => read_file::<FileConfig>(path).map_err(|e| ConfigError(e.to_string()))?,
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
        let logs_retention = merge!(args, file, logs_retention, HumanDuration::days(7));
        let traces_retention = positive(
            "traces_retention",
            merge!(args, file, traces_retention, HumanDuration::days(7)),
        )?;
        let metrics_retention = positive(
            "metrics_retention",
            merge!(args, file, metrics_retention, HumanDuration::days(30)),
        )?;
        let metrics_flush_interval = positive(
            "metrics_flush_interval",
            merge!(args, file, metrics_flush_interval, HumanDuration::secs(60)),
        )?;
        let trace_idle = positive(
            "trace_idle",
            merge!(args, file, trace_idle, HumanDuration::secs(5)),
        )?;
        let trace_max_age = positive(
            "trace_max_age",
            merge!(args, file, trace_max_age, HumanDuration::secs(60)),
        )?;
        let trace_flush_interval = positive(
            "trace_flush_interval",
            merge!(args, file, trace_flush_interval, HumanDuration::secs(10)),
        )?;
        let max_spans_per_trace = merge!(args, file, max_spans_per_trace, 100_000);
        if max_spans_per_trace == 0 {
            return Err(ConfigError(
                "invalid value 0 for max_spans_per_trace: must be positive".into(),
            ));
        }
        let trace_buffer_bytes =
            merge!(args, file, trace_buffer_bytes, ByteSize::mib(256)).as_usize();
        // Query limits: each unset one keeps `QueryLimits`' default.
        let query_limits = {
            let d = periscope_query::QueryLimits::default();
            let max_concurrent = merge!(args, file, query_max_concurrent, d.max_concurrent);
            let limits = periscope_query::QueryLimits {
                max_length: merge!(args, file, query_max_length, ByteSize::kib(64)).as_usize(),
                max_depth: merge!(args, file, query_max_depth, d.max_depth),
                max_samples: merge!(args, file, query_max_samples, d.max_samples),
                max_series: merge!(args, file, query_max_series, d.max_series),
                timeout: positive(
                    "query_timeout",
                    merge!(args, file, query_timeout, HumanDuration::mins(2)),
                )?,
                max_concurrent,
                max_concurrent_per_tenant: merge!(
                    args,
                    file,
                    query_max_concurrent_per_tenant,
                    (max_concurrent / 2).max(1)
                ),
                threads: merge!(args, file, query_threads, d.threads),
                max_spans_per_response: merge!(
                    args,
                    file,
                    query_max_spans_per_response,
                    d.max_spans_per_response
                ),
            };
            limits.validate().map_err(ConfigError)?;
            limits
        };
        let cors_allowed_origins = match args.cors_allowed_origins {
            Some(s) => s
                .split(',')
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            None => file.cors_allowed_origins.unwrap_or_default(),
        };
        let http_header_read_timeout = positive(
            "http_header_read_timeout",
            merge!(
                args,
                file,
                http_header_read_timeout,
                HumanDuration::secs(10)
            ),
        )?;
        let http_body_read_timeout = positive(
            "http_body_read_timeout",
            merge!(args, file, http_body_read_timeout, HumanDuration::secs(30)),
        )?;
        let max_connections = merge!(args, file, max_connections, 4096);
        // Semaphore permits are counted in u32 when acquired together.
        if max_connections == 0 || max_connections > u32::MAX as usize {
            return Err(ConfigError(format!(
                "invalid value {max_connections} for max_connections: must be between 1 and {}",
                u32::MAX
            )));
        }
        let grpc_max_concurrent_streams = merge!(args, file, grpc_max_concurrent_streams, 100);
        if grpc_max_concurrent_streams == 0 {
            return Err(ConfigError(
                "invalid value 0 for grpc_max_concurrent_streams: must be positive".into(),
            ));
        }
        let grpc_keepalive_interval = positive(
            "grpc_keepalive_interval",
            merge!(args, file, grpc_keepalive_interval, HumanDuration::secs(60)),
        )?;
        let grpc_keepalive_timeout = positive(
            "grpc_keepalive_timeout",
            merge!(args, file, grpc_keepalive_timeout, HumanDuration::secs(20)),
        )?;
        let ui_session_ttl = positive(
            "ui_session_ttl",
            merge!(args, file, ui_session_ttl, HumanDuration::hours(12)),
        )?;
        // Cookies count their life in whole seconds.
        if ui_session_ttl < Duration::from_secs(1) {
            return Err(ConfigError(format!(
                "invalid value {ui_session_ttl:?} for ui_session_ttl: at least 1s"
            )));
        }
        let auth = match args.auth_file.or(file.auth_file) {
            None => None,
            Some(p) => Some(
                periscope_auth::open_auth_file(p, valid_tenant)
                    .map_err(|e| ConfigError(format!("invalid auth_file: {}", one_line(&e))))?,
            ),
        };
        let tls = match (
            args.tls_cert_file.or(file.tls_cert_file),
            args.tls_key_file.or(file.tls_key_file),
            args.tls_client_ca_file.or(file.tls_client_ca_file),
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
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./data")),
            otlp_grpc_addr: addr(
                "otlp_grpc_addr",
                args.otlp_grpc_addr,
                file.otlp_grpc_addr,
                "0.0.0.0:4317",
            )?,
            otlp_http_addr: addr(
                "otlp_http_addr",
                args.otlp_http_addr,
                file.otlp_http_addr,
                "0.0.0.0:4318",
            )?,
            http_addr: addr("http_addr", args.http_addr, file.http_addr, "0.0.0.0:8080")?,
            max_recv_msg_size: merge!(args, file, max_recv_msg_size, ByteSize::mib(16)).as_usize(),
            max_inflight_bytes: merge!(args, file, max_inflight_bytes, ByteSize::mib(256))
                .as_usize(),
            logs_retention: logs_retention.get(),
            traces_retention,
            metrics_retention,
            metrics_flush_interval,
            query_cache_bytes: merge!(args, file, query_cache_bytes, ByteSize::mib(64)).as_usize(),
            trace_idle,
            trace_max_age,
            trace_flush_interval,
            max_spans_per_trace,
            trace_buffer_bytes,
            cors_allowed_origins,
            log_level: args
                .log_level
                .or(file.log_level)
                .unwrap_or_else(|| "info".into()),
            test_index_delay: Duration::from_millis(args.test_index_delay_ms.unwrap_or(0)),
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
                "invalid value {logs_retention} for logs_retention: at least 1h"
            )));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `periscope serve ARGS`, parsed as the binary parses it (flags and
    /// `PERISCOPE_*` variables), then resolved.
    fn serve(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(["periscope", "serve"].iter().chain(args))
            .map_err(|e| e.to_string())?;
        let Command::Serve(serve) = cli.command else {
            unreachable!("parsed a serve command")
        };
        serve.resolve().map_err(|e| e.0)
    }

    /// `periscope serve --config FILE` with the file holding `text`.
    fn serve_file(text: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, text).unwrap();
        serve(&["--config", path.to_str().unwrap()])
    }

    /// The grammar's table, through a flag and the file: the agent's tests
    /// check the same table, so both binaries take the same strings.
    #[test]
    fn sizes_and_durations_follow_the_shared_grammar() {
        use periscope_settings::examples::{DURATIONS, SIZES};
        // `query_cache_bytes` takes 0 (no cache), so the grammar alone decides.
        for &(s, want) in SIZES {
            let want = want.map(|b| b as usize);
            let flag = serve(&["--query-cache-bytes", s]).map(|c| c.query_cache_bytes);
            assert_eq!(flag.as_ref().ok(), want.as_ref(), "flag {s:?}: {flag:?}");
            let file = serve_file(&format!("query_cache_bytes = {s:?}\n"));
            let file = file.map(|c| c.query_cache_bytes);
            assert_eq!(file.as_ref().ok(), want.as_ref(), "file {s:?}: {file:?}");
        }
        // No duration of the collector may be 0: `trace_idle` refuses it as
        // a setting, after the grammar took it.
        for &(s, want) in DURATIONS {
            let flag = serve(&["--trace-idle", s]).map(|c| c.trace_idle);
            let file = serve_file(&format!("trace_idle = {s:?}\n")).map(|c| c.trace_idle);
            for (how, got) in [("flag", flag), ("file", file)] {
                match want {
                    Some(0) => assert!(
                        got.as_ref().is_err_and(|e| e.contains("must be positive")),
                        "{how} {s:?}: {got:?}"
                    ),
                    Some(ms) => {
                        assert_eq!(got, Ok(Duration::from_millis(ms)), "{how} {s:?}")
                    }
                    None => assert!(got.is_err(), "{how} {s:?}: {got:?}"),
                }
            }
        }
        // Integers in the file: bytes for a size, only 0 for a duration.
        assert_eq!(
            serve_file("max_recv_msg_size = 1024\n").map(|c| c.max_recv_msg_size),
            Ok(1024)
        );
        assert!(serve_file("trace_idle = 5\n").is_err());
    }

    /// Each help text's "Default `X`" is what the setting is when unset:
    /// passing `X` explicitly gives the same configuration.
    #[test]
    fn documented_defaults_are_the_defaults() {
        use clap::CommandFactory;
        let default = format!("{:?}", serve(&[]).unwrap());
        let cmd = Cli::command();
        let serve_cmd = cmd.find_subcommand("serve").unwrap();
        let mut checked = 0;
        for arg in serve_cmd.get_arguments() {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let Some((_, rest)) = help.split_once("Default `") else {
                continue;
            };
            let value = rest.split('`').next().unwrap();
            let flag = format!("--{}", arg.get_long().unwrap());
            let got = format!("{:?}", serve(&[&flag, value]).unwrap());
            assert_eq!(got, default, "{flag} {value}");
            checked += 1;
        }
        assert!(checked >= 25, "only {checked} documented defaults");
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
                query_timeout: Some(HumanDuration::secs(0)),
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
                    http_header_read_timeout: Some(HumanDuration::secs(0)),
                    ..Default::default()
                },
                "http_header_read_timeout: must be positive",
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
        let c = serve(&["--config", path.to_str().unwrap(), "--ui-session-ttl", "2s"]).unwrap();
        assert_eq!(c.ui_session_ttl, Duration::from_secs(2));
        for (bad, want) in [
            ("500ms", "at least 1s"),
            ("0s", "must be positive"),
            ("soon", "ui-session-ttl"),
        ] {
            let e = serve(&["--ui-session-ttl", bad]).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
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
