//! Configuration: flags, `PERISCOPE_AGENT_*` environment variables and a TOML
//! file, merged with precedence flag > env > file > default, then validated
//! into [`Config`]. A wrong key or value is one line on stderr and exit code 2.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use periscope_auth::{AuthTable, Tls, Watched};
use periscope_settings::{ByteSize, HumanDuration, one_line, read_file};
use regex::Regex;
use serde::Deserialize;

use self::files::{bearer_token, relay_security, tls_options};
use crate::export::grpc::TlsOptions;

mod files;

/// The Periscope node agent: tails logs, adds Kubernetes metadata, ships OTLP.
#[derive(Debug, Parser, Default)]
#[command(name = "periscope-agent", version, about)]
pub struct Cli {
    /// TOML file with the same keys as the flags (snake_case).
    #[arg(long, env = "PERISCOPE_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Validate the configuration, print it and exit.
    #[arg(long)]
    pub check_config: bool,
    /// OTLP/gRPC endpoint of the collector. Default `http://127.0.0.1:4317`.
    #[arg(long, env = "PERISCOPE_AGENT_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Checkpoints and the disk spool live here. Default `./agent-data`.
    #[arg(long, env = "PERISCOPE_AGENT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Glob of files to tail (repeatable). Default `/var/log/pods/*/*/*.log*`.
    #[arg(long, env = "PERISCOPE_AGENT_INCLUDE", value_delimiter = ',')]
    pub include: Vec<String>,
    /// Glob of files never tailed, matched against the path or the file name (repeatable). Default `*.gz`, `*.tmp`.
    #[arg(long, env = "PERISCOPE_AGENT_EXCLUDE", value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// Where files found at the first start begin: `end` or `beginning`. Default `end`.
    #[arg(long, env = "PERISCOPE_AGENT_READ_FROM")]
    pub read_from: Option<String>,
    /// Local OTLP/gRPC relay listen address; empty disables it. Default empty.
    #[arg(long, env = "PERISCOPE_AGENT_OTLP_GRPC_ADDR")]
    pub otlp_grpc_addr: Option<String>,
    /// Local OTLP/HTTP relay listen address; empty disables it. Default empty.
    #[arg(long, env = "PERISCOPE_AGENT_OTLP_HTTP_ADDR")]
    pub otlp_http_addr: Option<String>,
    /// Listen address of `/metrics` and `/healthz`. Default `0.0.0.0:8686`.
    #[arg(long, env = "PERISCOPE_AGENT_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// Node name added as `k8s.node.name` and `host.name`. Default env `NODE_NAME`, else the host name.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Tenant sent as `X-Scope-OrgID`. Default none.
    #[arg(long, env = "PERISCOPE_AGENT_TENANT")]
    pub tenant: Option<String>,
    /// Bearer token sent as `authorization: Bearer ...`. Default none.
    #[arg(long, env = "PERISCOPE_AGENT_BEARER_TOKEN")]
    pub bearer_token: Option<String>,
    /// File holding the bearer token (surrounding whitespace ignored), read again when it changes, e.g. a mounted Kubernetes Secret; not with `bearer_token`. Default none.
    #[arg(long, env = "PERISCOPE_AGENT_BEARER_TOKEN_FILE")]
    pub bearer_token_file: Option<String>,
    /// CA certificates (PEM) trusted for an `https://` endpoint, besides the public web roots. Default none.
    #[arg(long, env = "PERISCOPE_AGENT_TLS_CA_FILE")]
    pub tls_ca_file: Option<String>,
    /// Name the collector's certificate is checked against (and sent as SNI) instead of the endpoint's host, e.g. when connecting by IP. Default none.
    #[arg(long, env = "PERISCOPE_AGENT_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// Client certificate chain (PEM) for mutual TLS; needs `tls_client_key_file`. Default none.
    #[arg(long, env = "PERISCOPE_AGENT_TLS_CLIENT_CERT_FILE")]
    pub tls_client_cert_file: Option<String>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of the client certificate. Default none.
    #[arg(long, env = "PERISCOPE_AGENT_TLS_CLIENT_KEY_FILE")]
    pub tls_client_key_file: Option<String>,
    /// Upper bound of the disk spool (bytes, or with a unit: K/KiB, M/MiB, G/GiB, T/TiB are powers of 1024, KB, MB, GB, TB of 1000); reading pauses at it. Default `1GiB`.
    #[arg(long, env = "PERISCOPE_AGENT_SPOOL_MAX_BYTES")]
    pub spool_max_bytes: Option<ByteSize>,
    /// Bound of the in-memory queue before batches spill to the spool. Default `32MiB`.
    #[arg(long, env = "PERISCOPE_AGENT_MEMORY_QUEUE_BYTES")]
    pub memory_queue_bytes: Option<ByteSize>,
    /// Host metrics interval (ms, s, m, h, d, w); `0` disables them. Default `15s`.
    #[arg(long, env = "PERISCOPE_AGENT_METRICS_INTERVAL")]
    pub metrics_interval: Option<HumanDuration>,
    /// Root under which `/proc` and `/sys` are read (e.g. `/hostfs`). Default `/`.
    #[arg(long, env = "PERISCOPE_AGENT_HOST_ROOT")]
    pub host_root: Option<PathBuf>,
    /// Longer lines are truncated and flagged (`log.truncated`). Default `1MiB`.
    #[arg(long, env = "PERISCOPE_AGENT_MAX_LINE_BYTES")]
    pub max_line_bytes: Option<ByteSize>,
    /// Files unchanged this long are closed and reopened on change. Default `60s`.
    #[arg(long, env = "PERISCOPE_AGENT_IDLE_CLOSE")]
    pub idle_close: Option<HumanDuration>,
    /// Budget of files held open at once. Default `1024`.
    #[arg(long, env = "PERISCOPE_AGENT_MAX_OPEN_FILES")]
    pub max_open_files: Option<usize>,
    /// Regex that starts a multiline record (e.g. `^\S`); unset: one record per line. Default unset.
    #[arg(long, env = "PERISCOPE_AGENT_MULTILINE_START")]
    pub multiline_start: Option<String>,
    /// Parse JSON bodies into attributes. Default `false`.
    #[arg(long, env = "PERISCOPE_AGENT_PARSE_JSON")]
    pub parse_json: Option<bool>,
    /// Add pod labels, owner names and `service.name` from `app.kubernetes.io/name`, watched on the Kubernetes API server. Default `false`.
    #[arg(long, env = "PERISCOPE_AGENT_K8S_API_ENRICHMENT")]
    pub k8s_api_enrichment: Option<bool>,
    /// API server URL (`https://host:port`, or `http://` e.g. for `kubectl proxy`). Default `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`.
    #[arg(long, env = "PERISCOPE_AGENT_K8S_API_URL")]
    pub k8s_api_url: Option<String>,
    /// Bearer token file for the API server, read again at each connection; empty: no token. Default `/var/run/secrets/kubernetes.io/serviceaccount/token`.
    #[arg(long, env = "PERISCOPE_AGENT_K8S_TOKEN_FILE")]
    pub k8s_token_file: Option<String>,
    /// CA bundle (PEM) the API server's certificate is checked against; empty: the public web roots. Default `/var/run/secrets/kubernetes.io/serviceaccount/ca.crt`.
    #[arg(long, env = "PERISCOPE_AGENT_K8S_CA_FILE")]
    pub k8s_ca_file: Option<String>,
    /// How long a deleted pod's metadata is kept for the last lines of its files. Default `5m`.
    #[arg(long, env = "PERISCOPE_AGENT_K8S_DELETED_POD_GRACE")]
    pub k8s_deleted_pod_grace: Option<HumanDuration>,
    /// Records per export batch. Default `2000`.
    #[arg(long, env = "PERISCOPE_AGENT_BATCH_MAX_RECORDS")]
    pub batch_max_records: Option<usize>,
    /// A batch is sent at the latest this long after its first record. Default `200ms`.
    #[arg(long, env = "PERISCOPE_AGENT_BATCH_TIMEOUT")]
    pub batch_timeout: Option<HumanDuration>,
    /// Log filter for the agent's own logs (tracing `EnvFilter` syntax). Default `info`.
    #[arg(long, env = "PERISCOPE_AGENT_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Memory the relay's requests may take at once, charged before their bodies are buffered and for what decoding takes; beyond it clients get 429 / RESOURCE_EXHAUSTED. Default `64MiB`.
    #[arg(long, env = "PERISCOPE_AGENT_RELAY_MAX_INFLIGHT_BYTES")]
    pub relay_max_inflight_bytes: Option<ByteSize>,
    /// Largest relay request, compressed or decompressed. Default `4MiB`.
    #[arg(long, env = "PERISCOPE_AGENT_RELAY_MAX_RECV_MSG_SIZE")]
    pub relay_max_recv_msg_size: Option<ByteSize>,
    /// Time a relay client has to send a request's headers (and the longest an idle connection stays open). Default `10s`.
    #[arg(long, env = "PERISCOPE_AGENT_RELAY_HEADER_READ_TIMEOUT")]
    pub relay_header_read_timeout: Option<HumanDuration>,
    /// Time a relay client has to send a request's body, from the end of its headers; then 408 (gRPC: CANCELLED). Default `30s`.
    #[arg(long, env = "PERISCOPE_AGENT_RELAY_BODY_READ_TIMEOUT")]
    pub relay_body_read_timeout: Option<HumanDuration>,
    /// Connections each relay listener holds at once; beyond it new ones are closed at once. Default `1024`.
    #[arg(long, env = "PERISCOPE_AGENT_RELAY_MAX_CONNECTIONS")]
    pub relay_max_connections: Option<usize>,
    /// Concurrent gRPC streams per relay connection. Default `100`.
    #[arg(long, env = "PERISCOPE_AGENT_RELAY_GRPC_MAX_CONCURRENT_STREAMS")]
    pub relay_grpc_max_concurrent_streams: Option<u32>,
    /// Auth file of the relay listeners (the collector's format): every request needs a token (or client certificate) with the `write` scope and is forwarded for its tenant. Re-read when it changes and on SIGHUP. Default none: no authentication.
    #[arg(long, env = "PERISCOPE_AGENT_RELAY_AUTH_FILE")]
    pub relay_auth_file: Option<String>,
    /// Certificate chain (PEM) of the relay listeners, which then speak TLS only; needs `relay_tls_key_file`. Re-read when it changes. Default none: plain text.
    #[arg(long, env = "PERISCOPE_AGENT_RELAY_TLS_CERT_FILE")]
    pub relay_tls_cert_file: Option<String>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of `relay_tls_cert_file`. Default none.
    #[arg(long, env = "PERISCOPE_AGENT_RELAY_TLS_KEY_FILE")]
    pub relay_tls_key_file: Option<String>,
    /// CA certificates (PEM) that must have signed a relay client's certificate (mutual TLS); needs `relay_tls_cert_file`. Default none.
    #[arg(long, env = "PERISCOPE_AGENT_RELAY_TLS_CLIENT_CA_FILE")]
    pub relay_tls_client_ca_file: Option<String>,
}

/// The TOML file: the same keys as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    endpoint: Option<String>,
    data_dir: Option<PathBuf>,
    include: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    read_from: Option<String>,
    otlp_grpc_addr: Option<String>,
    otlp_http_addr: Option<String>,
    http_addr: Option<String>,
    node_name: Option<String>,
    tenant: Option<String>,
    bearer_token: Option<String>,
    bearer_token_file: Option<String>,
    tls_ca_file: Option<String>,
    tls_server_name: Option<String>,
    tls_client_cert_file: Option<String>,
    tls_client_key_file: Option<String>,
    spool_max_bytes: Option<ByteSize>,
    memory_queue_bytes: Option<ByteSize>,
    metrics_interval: Option<HumanDuration>,
    host_root: Option<PathBuf>,
    max_line_bytes: Option<ByteSize>,
    idle_close: Option<HumanDuration>,
    max_open_files: Option<usize>,
    multiline_start: Option<String>,
    parse_json: Option<bool>,
    k8s_api_enrichment: Option<bool>,
    k8s_api_url: Option<String>,
    k8s_token_file: Option<String>,
    k8s_ca_file: Option<String>,
    k8s_deleted_pod_grace: Option<HumanDuration>,
    batch_max_records: Option<usize>,
    batch_timeout: Option<HumanDuration>,
    log_level: Option<String>,
    relay_max_inflight_bytes: Option<ByteSize>,
    relay_max_recv_msg_size: Option<ByteSize>,
    relay_header_read_timeout: Option<HumanDuration>,
    relay_body_read_timeout: Option<HumanDuration>,
    relay_max_connections: Option<usize>,
    relay_grpc_max_concurrent_streams: Option<u32>,
    relay_auth_file: Option<String>,
    relay_tls_cert_file: Option<String>,
    relay_tls_key_file: Option<String>,
    relay_tls_client_ca_file: Option<String>,
}

/// Where files found at the first start begin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    /// At their current end: only new lines.
    End,
    /// At offset 0.
    Beginning,
}

/// The validated runtime configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Collector OTLP/gRPC endpoint.
    pub endpoint: String,
    /// Checkpoints and spool.
    pub data_dir: PathBuf,
    /// Include globs.
    pub include: Vec<glob::Pattern>,
    /// Exclude globs.
    pub exclude: Vec<glob::Pattern>,
    /// Start position of files found at the first start.
    pub read_from: ReadFrom,
    /// Relay gRPC address.
    pub otlp_grpc_addr: Option<SocketAddr>,
    /// Relay HTTP address.
    pub otlp_http_addr: Option<SocketAddr>,
    /// Self-metrics address.
    pub http_addr: SocketAddr,
    /// Node name.
    pub node_name: String,
    /// Tenant (`X-Scope-OrgID`).
    pub tenant: Option<String>,
    /// Bearer token.
    pub bearer_token: Option<String>,
    /// File of the bearer token, read again when it changes.
    pub bearer_token_file: Option<PathBuf>,
    /// TLS of an `https://` endpoint, PEM files read and checked.
    pub tls: TlsOptions,
    /// Disk spool bound.
    pub spool_max_bytes: u64,
    /// In-memory queue bound.
    pub memory_queue_bytes: usize,
    /// Host metrics interval; `None` disables.
    pub metrics_interval: Option<Duration>,
    /// Host root for `/proc` and `/sys`.
    pub host_root: PathBuf,
    /// Line length cap.
    pub max_line_bytes: usize,
    /// Idle close delay.
    pub idle_close: Duration,
    /// Open file budget.
    pub max_open_files: usize,
    /// Multiline start pattern.
    pub multiline_start: Option<Regex>,
    /// JSON body parsing.
    pub parse_json: bool,
    /// API-server enrichment; `None` when off.
    pub k8s_api: Option<K8sApi>,
    /// Records per batch.
    pub batch_max_records: usize,
    /// Batch age limit.
    pub batch_timeout: Duration,
    /// Log filter.
    pub log_level: String,
    /// Limits of the relay listeners.
    pub relay: RelayLimits,
    /// Authentication and TLS of the relay listeners.
    pub relay_security: RelaySecurity,
}

/// Authentication and TLS of the relay listeners (see the `relay_auth_file`
/// and `relay_tls_*` flags), their files loaded and checked; the agent
/// watches them for changes once it runs.
#[derive(Clone, Debug, Default)]
pub struct RelaySecurity {
    /// The auth file's tokens; `None`: requests are not authenticated.
    pub auth: Option<Arc<Watched<AuthTable>>>,
    /// Certificate, key and optional client CA; `None`: plain text.
    pub tls: Option<Arc<Tls>>,
}

/// Limits of the relay listeners (see the `relay_*` flags).
#[derive(Clone, Copy, Debug)]
pub struct RelayLimits {
    /// In-flight budget, bytes.
    pub max_inflight_bytes: usize,
    /// Largest request, bytes.
    pub max_recv_msg_size: usize,
    /// Header read (and keep-alive idle) timeout.
    pub header_read_timeout: Duration,
    /// Body read timeout.
    pub body_read_timeout: Duration,
    /// Connections per listener.
    pub max_connections: usize,
    /// gRPC streams per connection.
    pub grpc_max_concurrent_streams: u32,
}

/// API-server enrichment settings.
#[derive(Clone, Debug)]
pub struct K8sApi {
    /// Where and how to connect (URL `None`: in-cluster from the environment).
    pub api: crate::k8s::ApiOptions,
    /// How long deleted pods stay in the cache.
    pub deleted_pod_grace: Duration,
}

/// A configuration problem: reported in one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn bad(name: &str, v: &str, e: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("invalid value {v:?} for {name}: {e}"))
}

/// The flag or environment value, else the file's, else the default.
macro_rules! merge {
    ($args:ident, $file:ident, $name:ident, $default:expr) => {
        $args.$name.or($file.$name).unwrap_or($default)
    };
}

fn opt_addr(name: &str, s: Option<String>) -> Result<Option<SocketAddr>, ConfigError> {
    match s {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|e| bad(name, &s, e)),
    }
}

impl Cli {
    /// Merges flags/env (already in `self`) over the file over defaults, and validates.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file::<FileConfig>(path).map_err(|e| ConfigError(e.to_string()))?,
            None => FileConfig::default(),
        };
        let globs = |name: &str, v: Vec<String>, f: Option<Vec<String>>, d: &[&str]| {
            let list = if !v.is_empty() {
                v
            } else {
                f.unwrap_or_else(|| d.iter().map(|s| (*s).to_owned()).collect())
            };
            list.iter()
                .filter(|s| !s.is_empty())
                .map(|s| glob::Pattern::new(s).map_err(|e| bad(name, s, e)))
                .collect::<Result<Vec<_>, _>>()
        };

        let endpoint = self
            .endpoint
            .or(file.endpoint)
            .unwrap_or_else(|| "http://127.0.0.1:4317".into());
        let uri: Result<tonic::transport::Uri, _> = endpoint.parse();
        match uri {
            Ok(u) if matches!(u.scheme_str(), Some("http") | Some("https")) => {}
            Ok(_) => return Err(bad("endpoint", &endpoint, "scheme must be http or https")),
            Err(e) => return Err(bad("endpoint", &endpoint, e)),
        }
        let tls = tls_options(
            self.tls_ca_file.or(file.tls_ca_file),
            self.tls_server_name.or(file.tls_server_name),
            self.tls_client_cert_file.or(file.tls_client_cert_file),
            self.tls_client_key_file.or(file.tls_client_key_file),
        )?;
        if tls.is_set() && !endpoint.starts_with("https://") {
            return Err(bad(
                "endpoint",
                &endpoint,
                "tls_* options are set but the endpoint is not https://",
            ));
        }
        let read_from_s = self
            .read_from
            .or(file.read_from)
            .unwrap_or_else(|| "end".into());
        let read_from = match read_from_s.as_str() {
            "end" => ReadFrom::End,
            "beginning" => ReadFrom::Beginning,
            _ => {
                return Err(bad(
                    "read_from",
                    &read_from_s,
                    "expected \"end\" or \"beginning\"",
                ));
            }
        };
        let include = globs(
            "include",
            self.include,
            file.include,
            &["/var/log/pods/*/*/*.log*"],
        )?;
        if include.is_empty() {
            return Err(ConfigError("include: at least one glob is required".into()));
        }
        let exclude = globs("exclude", self.exclude, file.exclude, &["*.gz", "*.tmp"])?;
        let http_s = self
            .http_addr
            .or(file.http_addr)
            .unwrap_or_else(|| "0.0.0.0:8686".into());
        let http_addr = http_s.parse().map_err(|e| bad("http_addr", &http_s, e))?;
        let otlp_grpc_addr = opt_addr(
            "otlp_grpc_addr",
            self.otlp_grpc_addr.or(file.otlp_grpc_addr),
        )?;
        let otlp_http_addr = opt_addr(
            "otlp_http_addr",
            self.otlp_http_addr.or(file.otlp_http_addr),
        )?;
        let node_name = self
            .node_name
            .or(file.node_name)
            .filter(|s| !s.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|s| s.trim().to_owned())
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into());
        let metrics_interval = merge!(self, file, metrics_interval, HumanDuration::secs(15)).get();
        let max_line_bytes = merge!(self, file, max_line_bytes, ByteSize::mib(1));
        if max_line_bytes.bytes() < 16 {
            return Err(bad(
                "max_line_bytes",
                &max_line_bytes.to_string(),
                "must be at least 16",
            ));
        }
        let max_line_bytes = max_line_bytes.as_usize();
        let max_open_files = self.max_open_files.or(file.max_open_files).unwrap_or(1024);
        if max_open_files == 0 {
            return Err(bad("max_open_files", "0", "must be at least 1"));
        }
        let multiline_start = match self.multiline_start.or(file.multiline_start) {
            Some(s) if !s.is_empty() => Some(
                Regex::new(&s).map_err(|e| bad("multiline_start", &s, one_line(&e.to_string())))?,
            ),
            _ => None,
        };
        // The API server settings are checked even while enrichment is off,
        // so a typo surfaces before it is switched on.
        let k8s_api_url = self
            .k8s_api_url
            .or(file.k8s_api_url)
            .filter(|s| !s.trim().is_empty());
        if let Some(u) = &k8s_api_url {
            crate::k8s::validate_url(u).map_err(|e| bad("k8s_api_url", u, e))?;
        }
        // An empty path means "none".
        let some_path = |p: Option<String>, d: &str| match p {
            Some(p) if p.is_empty() => None,
            Some(p) => Some(PathBuf::from(p)),
            None => Some(PathBuf::from(d)),
        };
        let deleted_pod_grace =
            merge!(self, file, k8s_deleted_pod_grace, HumanDuration::mins(5)).get();
        let k8s_api = self
            .k8s_api_enrichment
            .or(file.k8s_api_enrichment)
            .unwrap_or(false)
            .then(|| K8sApi {
                api: crate::k8s::ApiOptions {
                    url: k8s_api_url,
                    token_file: some_path(
                        self.k8s_token_file.or(file.k8s_token_file),
                        crate::k8s::IN_CLUSTER_TOKEN,
                    ),
                    ca_file: some_path(
                        self.k8s_ca_file.or(file.k8s_ca_file),
                        crate::k8s::IN_CLUSTER_CA,
                    ),
                },
                deleted_pod_grace,
            });
        let batch_max_records = self
            .batch_max_records
            .or(file.batch_max_records)
            .unwrap_or(2000);
        if batch_max_records == 0 {
            return Err(bad("batch_max_records", "0", "must be at least 1"));
        }
        let positive = |name: &str, d: HumanDuration| {
            if d.get().is_zero() {
                Err(bad(name, &d.to_string(), "must be positive"))
            } else {
                Ok(d.get())
            }
        };
        let batch_timeout = positive(
            "batch_timeout",
            merge!(self, file, batch_timeout, HumanDuration::millis(200)),
        )?;
        let idle_close = merge!(self, file, idle_close, HumanDuration::secs(60)).get();
        let spool_max_bytes = merge!(self, file, spool_max_bytes, ByteSize::gib(1)).bytes();
        let memory_queue_bytes =
            merge!(self, file, memory_queue_bytes, ByteSize::mib(32)).as_usize();
        let relay = RelayLimits {
            max_inflight_bytes: merge!(self, file, relay_max_inflight_bytes, ByteSize::mib(64))
                .as_usize(),
            max_recv_msg_size: merge!(self, file, relay_max_recv_msg_size, ByteSize::mib(4))
                .as_usize(),
            header_read_timeout: positive(
                "relay_header_read_timeout",
                merge!(
                    self,
                    file,
                    relay_header_read_timeout,
                    HumanDuration::secs(10)
                ),
            )?,
            body_read_timeout: positive(
                "relay_body_read_timeout",
                merge!(self, file, relay_body_read_timeout, HumanDuration::secs(30)),
            )?,
            max_connections: merge!(self, file, relay_max_connections, 1024),
            grpc_max_concurrent_streams: merge!(self, file, relay_grpc_max_concurrent_streams, 100),
        };
        for (name, v) in [
            ("relay_max_inflight_bytes", relay.max_inflight_bytes),
            ("relay_max_recv_msg_size", relay.max_recv_msg_size),
            ("relay_max_connections", relay.max_connections),
            (
                "relay_grpc_max_concurrent_streams",
                relay.grpc_max_concurrent_streams as usize,
            ),
        ] {
            // Budgets and slots are semaphore permits, taken in u32 amounts.
            if v == 0 || v > u32::MAX as usize {
                return Err(bad(
                    name,
                    &v.to_string(),
                    "must be between 1 and 4294967295",
                ));
            }
        }
        let relay_security = relay_security(
            self.relay_auth_file.or(file.relay_auth_file),
            self.relay_tls_cert_file.or(file.relay_tls_cert_file),
            self.relay_tls_key_file.or(file.relay_tls_key_file),
            self.relay_tls_client_ca_file
                .or(file.relay_tls_client_ca_file),
        )?;
        let (bearer_token, bearer_token_file) = bearer_token(
            self.bearer_token.or(file.bearer_token),
            self.bearer_token_file.or(file.bearer_token_file),
        )?;
        let log_level = self
            .log_level
            .or(file.log_level)
            .unwrap_or_else(|| "info".into());
        tracing_subscriber::EnvFilter::try_new(&log_level)
            .map_err(|e| bad("log_level", &log_level, e))?;
        Ok(Config {
            endpoint,
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./agent-data")),
            include,
            exclude,
            read_from,
            otlp_grpc_addr,
            otlp_http_addr,
            http_addr,
            node_name,
            tenant: self.tenant.or(file.tenant).filter(|s| !s.is_empty()),
            bearer_token,
            bearer_token_file,
            tls,
            spool_max_bytes,
            memory_queue_bytes: memory_queue_bytes.max(1),
            metrics_interval: (!metrics_interval.is_zero()).then_some(metrics_interval),
            host_root: self
                .host_root
                .or(file.host_root)
                .unwrap_or_else(|| PathBuf::from("/")),
            max_line_bytes,
            idle_close,
            max_open_files,
            multiline_start,
            parse_json: self.parse_json.or(file.parse_json).unwrap_or(false),
            k8s_api,
            batch_max_records,
            batch_timeout,
            log_level,
            relay,
            relay_security,
        })
    }
}

/// Whether `t` may name a tenant: the collector's rule (1 to 150 ASCII
/// letters, digits, `_`, `.` or `-`; not `.` or `..`), checked on the tenants
/// of the relay's auth file and on the tenants the relay forwards.
pub fn valid_tenant(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 150
        && t != "."
        && t != ".."
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

#[cfg(test)]
mod tests;
