//! OTLP/gRPC: LogsService, TraceService and MetricsService `Export`, plus the
//! standard health service.
//!
//! The services take the request as raw bytes (a pass-through codec) so the
//! pipeline decodes with precise errors and can store the client's bytes in
//! the WAL without re-encoding them.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use periscope_proto::{Encoding, Signal};
use periscope_store::TenantId;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::pipeline::Ingest;
use crate::telemetry::Transport;

/// Passes message bytes through untouched.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Marker types naming the three OTLP services.
pub trait OtlpService: Send + Sync + 'static {
    const NAME: &'static str;
    const SIGNAL: Signal;
}
pub struct LogsSvc;
pub struct TracesSvc;
pub struct MetricsSvc;
impl OtlpService for LogsSvc {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const SIGNAL: Signal = Signal::Logs;
}
impl OtlpService for TracesSvc {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const SIGNAL: Signal = Signal::Traces;
}
impl OtlpService for MetricsSvc {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const SIGNAL: Signal = Signal::Metrics;
}

/// One OTLP export service over the shared pipeline.
pub struct ExportService<S> {
    ingest: Arc<Ingest>,
    max_msg: usize,
    _s: PhantomData<S>,
}

impl<S> Clone for ExportService<S> {
    fn clone(&self) -> Self {
        ExportService {
            ingest: self.ingest.clone(),
            max_msg: self.max_msg,
            _s: PhantomData,
        }
    }
}

impl<S: OtlpService> ExportService<S> {
    pub fn new(ingest: Arc<Ingest>, max_msg: usize) -> Self {
        ExportService {
            ingest,
            max_msg,
            _s: PhantomData,
        }
    }
}

impl<S: OtlpService> NamedService for ExportService<S> {
    const NAME: &'static str = S::NAME;
}

struct Export<S>(Arc<Ingest>, PhantomData<S>);

impl<S: OtlpService> UnaryService<Bytes> for Export<S> {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let ingest = self.0.clone();
        Box::pin(async move {
            let tenant = match req.metadata().get("x-scope-orgid") {
                None => TenantId::default_tenant(),
                Some(v) => v
                    .to_str()
                    .ok()
                    .and_then(|s| TenantId::parse(s).ok())
                    .ok_or_else(|| {
                        Status::invalid_argument(format!(
                            "invalid tenant id in x-scope-orgid: {v:?}"
                        ))
                    })?,
            };
            // tonic has buffered (at most --max-recv-msg-size) and
            // decompressed the message; charge it before it is decoded.
            let body = req.into_inner();
            let mut charge = ingest.start_charge();
            if let Err(e) = ingest.charge(&mut charge, body.len()) {
                ingest.count_refused(S::SIGNAL, Transport::Grpc, Some(&body));
                return Err(Status::new(super::codes(&e).0, e.to_string()));
            }
            match ingest
                .export(
                    S::SIGNAL,
                    Transport::Grpc,
                    tenant,
                    Encoding::Protobuf,
                    body,
                    charge,
                )
                .await
            {
                Ok(a) => Ok(Response::new(Bytes::from(super::response_protobuf(
                    S::SIGNAL,
                    a.rejected,
                    &a.error_message,
                )))),
                Err(e) => Err(Status::new(super::codes(&e).0, e.to_string())),
            }
        })
    }
}

impl<S: OtlpService, B> Service<http::Request<B>> for ExportService<S>
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let export_path = format!("/{}/Export", S::NAME);
        let ingest = self.ingest.clone();
        let max_msg = self.max_msg;
        Box::pin(async move {
            if req.uri().path() != export_path {
                return Ok(
                    Status::unimplemented(format!("unknown method {}", req.uri().path()))
                        .into_http(),
                );
            }
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .apply_compression_config(
                    tonic::codec::EnabledCompressionEncodings::default(),
                    tonic::codec::EnabledCompressionEncodings::default(),
                )
                .apply_max_message_size_config(Some(max_msg), None);
            grpc = grpc
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                .accept_compressed(tonic::codec::CompressionEncoding::Zstd);
            let mut res = grpc.unary(Export::<S>(ingest, PhantomData), req).await;
            // tonic reports an oversized message as OUT_OF_RANGE; gRPC and the
            // OTLP spec ask for RESOURCE_EXHAUSTED.
            let h = res.headers_mut();
            if h.get("grpc-status").is_some_and(|v| v == "11") {
                h.insert("grpc-status", http::HeaderValue::from_static("8"));
            }
            Ok(res)
        })
    }
}
