//! `google.rpc.Status`, the error body of OTLP/HTTP responses.

/// The `google.rpc.Status` message (details are never sent).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// A `google.rpc.Code` value.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// A developer-facing message.
    #[prost(string, tag = "2")]
    pub message: String,
}

impl RpcStatus {
    /// The OTLP/JSON form: `{"code":3,"message":"..."}`.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"code": self.code, "message": self.message}))
            .unwrap_or_default()
    }
}
