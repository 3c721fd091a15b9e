//! `periscope-ack-sink`: an OTLP/gRPC `LogsService` that only acknowledges.
//!
//! It stands in for the collector when the cost of a sender (the node agent,
//! or any OTLP exporter) is measured: it accepts zstd and gzip request
//! compression, walks the decompressed protobuf without allocating to count
//! log records and body bytes, answers an empty `ExportLogsServiceResponse`,
//! and stores nothing. Its own CPU is therefore small and is not the
//! sender's.
//!
//! Output on stdout, one JSON object per line:
//! `{"event":"listening","addr":"127.0.0.1:PORT"}` at start;
//! `{"event":"complete",..}` once `--expect-records` records arrived;
//! `{"event":"counters",..}` on SIGUSR1; `{"event":"exit",..}` at SIGTERM or
//! SIGINT, then exit 0. Counters: requests, records, body bytes, request
//! bytes (decompressed), and the Unix times (ms) of the first and last
//! request.

mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::{Buf, Bytes};
use clap::Parser;
use serde_json::json;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

/// An OTLP/gRPC logs endpoint that counts and acknowledges.
#[derive(Parser, Debug)]
#[command(name = "periscope-ack-sink", version)]
struct Cli {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Print a `complete` event once this many log records arrived (0: never).
    #[arg(long, default_value_t = 0)]
    expect_records: u64,
    /// Largest accepted request after decompression, in MiB.
    #[arg(long, default_value_t = 64)]
    max_request_mib: usize,
}

/// What arrived so far.
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    records: AtomicU64,
    body_bytes: AtomicU64,
    request_bytes: AtomicU64,
    first_ms: AtomicU64,
    last_ms: AtomicU64,
    expect: u64,
    completed: AtomicBool,
}

impl Counters {
    fn json(&self, event: &str) -> serde_json::Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "event": event,
            "requests": g(&self.requests),
            "records": g(&self.records),
            "body_bytes": g(&self.body_bytes),
            "request_bytes": g(&self.request_bytes),
            "first_unix_ms": g(&self.first_ms),
            "last_unix_ms": g(&self.last_ms),
        })
    }

    fn add(&self, c: wire::Count, request_bytes: usize) {
        let now = unix_ms();
        let _ = self
            .first_ms
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        self.last_ms.store(now, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.body_bytes.fetch_add(c.body_bytes, Ordering::Relaxed);
        self.request_bytes
            .fetch_add(request_bytes as u64, Ordering::Relaxed);
        let total = self.records.fetch_add(c.records, Ordering::Relaxed) + c.records;
        if self.expect > 0 && total >= self.expect && !self.completed.swap(true, Ordering::SeqCst) {
            println!("{}", self.json("complete"));
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Hands the decompressed request over as bytes, and writes the empty
/// response (an `ExportLogsServiceResponse` without partial success is zero
/// bytes of protobuf).
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

#[derive(Debug)]
struct RawDecoder;

#[derive(Debug)]
struct EmptyEncoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

impl Encoder for EmptyEncoder {
    type Item = ();
    type Error = Status;
    fn encode(&mut self, _item: (), _dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        Ok(())
    }
}

impl Codec for RawCodec {
    type Encode = ();
    type Decode = Bytes;
    type Encoder = EmptyEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> EmptyEncoder {
        EmptyEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// The unary `Export` method.
#[derive(Clone)]
struct Export(Arc<Counters>);

impl Service<Request<Bytes>> for Export {
    type Response = Response<()>;
    type Error = Status;
    type Future = BoxFuture<Response<()>, Status>;
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let counters = Arc::clone(&self.0);
        Box::pin(async move {
            let body = req.into_inner();
            let c = wire::count_logs(&body)
                .map_err(|e| Status::invalid_argument(format!("malformed request: {e}")))?;
            counters.add(c, body.len());
            Ok(Response::new(()))
        })
    }
}

/// The `LogsService` as a tower service routed by path.
#[derive(Clone)]
struct LogsSink {
    counters: Arc<Counters>,
    max_request: usize,
}

impl NamedService for LogsSink {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
}

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

impl<B> Service<http::Request<B>> for LogsSink
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != EXPORT_PATH {
            return Box::pin(async {
                Ok(Status::unimplemented("only LogsService/Export is served").into_http())
            });
        }
        let method = Export(Arc::clone(&self.counters));
        let max = self.max_request;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .accept_compressed(CompressionEncoding::Zstd)
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max);
            Ok(grpc.unary(method, req).await)
        })
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(serve(cli))
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let counters = Arc::new(Counters {
        expect: cli.expect_records,
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind(cli.addr)
        .await
        .with_context(|| format!("cannot listen on {}", cli.addr))?;
    let addr = listener.local_addr().context("listener address")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut usr1 = signal(SignalKind::user_defined1()).context("SIGUSR1 handler")?;
    let sink = LogsSink {
        counters: Arc::clone(&counters),
        max_request: cli.max_request_mib << 20,
    };
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder()
        .add_service(sink)
        .serve_with_incoming(incoming);
    println!(
        "{}",
        json!({"event": "listening", "addr": addr.to_string()})
    );
    tokio::pin!(server);
    loop {
        tokio::select! {
            r = &mut server => {
                r.context("server failed")?;
                break;
            }
            _ = usr1.recv() => println!("{}", counters.json("counters")),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    println!("{}", counters.json("exit"));
    Ok(())
}
