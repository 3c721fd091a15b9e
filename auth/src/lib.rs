//! Who may reach Periscope's listeners: tokens listed in an auth file,
//! checked on every request with the tenant and scope they grant, and TLS
//! (with optional client certificates) on the listeners. Used by the
//! collector and by the agent's relay, so both check the same way.

pub mod gate;
mod sync;
pub mod tls;
pub mod tokens;
pub mod watched;

pub use gate::{Admitted, Gate, GrpcGateLayer, HttpGate, Peer, Refusal, ScopeFor, http_middleware};
pub use tls::{Acceptor, Alpn, PeerTls, Tls, TlsFiles};
pub use tokens::{AuthTable, Grant, Scope, Tenants};
pub use watched::Watched;

/// Opens an auth file: its tokens, watched for changes. `valid_tenant`
/// checks the tenant names it lists.
pub fn open_auth_file(
    path: std::path::PathBuf,
    valid_tenant: fn(&str) -> bool,
) -> Result<std::sync::Arc<Watched<AuthTable>>, String> {
    let shown = path.display().to_string();
    Watched::open("auth", vec![path], move |b| {
        let text = std::str::from_utf8(&b[0]).map_err(|_| format!("{shown}: not UTF-8"))?;
        AuthTable::parse(text, &valid_tenant).map_err(|e| format!("{shown}: {e}"))
    })
}
