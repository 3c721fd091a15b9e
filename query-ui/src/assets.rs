//! The web UI's static files (`query-ui/web/dist`, built by `npm run build`),
//! embedded into the binary and served at `/` on `--http-addr`.
//!
//! The UI is a single-page app: a path that is not a file (`/traces/abc…`,
//! `/metrics`) gets `index.html` and the app routes on the client. Paths of
//! the APIs (`/api/`, `/prometheus/`, `/jaeger/`, `/metrics`, `/healthz`,
//! `/readyz`) never fall back to the app, so a wrong API URL stays a 404.
//!
//! Vite names the files under `/assets/` after a hash of their content, so
//! they are cached for a year; `index.html`, which names them, is revalidated
//! on every load. The files are embedded at compile time in every profile
//! (`build.rs` reruns the build when `web/dist` changes). When the UI was not
//! built, every app path answers a page that says how to build it.

use std::borrow::Cow;

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(rust_embed::Embed)]
#[folder = "web/dist"]
#[allow_missing = true]
struct Dist;

/// Path prefixes owned by the APIs; the app never answers for them.
const RESERVED: [&str; 6] = [
    "/api/",
    "/prometheus/",
    "/jaeger/",
    "/metrics",
    "/healthz",
    "/readyz",
];

/// Hashed, immutable build outputs.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The page served when `web/dist` was empty at build time.
const NOT_BUILT: &str = "<!doctype html>
<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Periscope</title></head>
<body style=\"font-family: sans-serif; max-width: 40rem; margin: 4rem auto; line-height: 1.5\">
<h1>Periscope</h1>
<p>The collector and its query API are running, but this binary was built
without the web UI. Build the UI, then the binary:</p>
<pre>cd query-ui/web &amp;&amp; npm ci &amp;&amp; npm run build
cargo build -p periscope-collector</pre>
<p>The APIs answer meanwhile: <code>/api/v1/logs/search</code>,
<code>/api/v1/traces</code>, <code>/prometheus/api/v1/query</code>.</p>
</body></html>
";

/// Serves the UI for any request no API route took (the router's fallback).
pub async fn serve_ui(method: Method, uri: Uri) -> Response {
    respond(&method, uri.path(), |p| Dist::get(p).map(|f| f.data))
}

/// The answer for `path`, reading build outputs through `get` (a path
/// relative to `dist`, e.g. `assets/index-3f2a.js`).
fn respond(
    method: &Method,
    path: &str,
    get: impl Fn(&str) -> Option<Cow<'static, [u8]>>,
) -> Response {
    if RESERVED.iter().any(|r| reserved(path, r)) {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": format!("no route for {path}")})),
        )
            .into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
            "the web UI answers GET and HEAD only\n",
        )
            .into_response();
    }
    let rel = path.trim_start_matches('/');
    // A file of the build (never a directory walk: the embedded set is flat
    // names, and `..` cannot name anything in it).
    if !rel.is_empty()
        && rel != "index.html"
        && let Some(data) = get(rel)
    {
        let cache = if rel.starts_with("assets/") {
            IMMUTABLE
        } else {
            "no-cache"
        };
        return file(method, data, content_type(rel), cache);
    }
    // A missing hashed asset is a stale page asking for an old build: a 404,
    // not the app (a browser would try to run HTML as a script).
    if rel != "index.html" && (rel.starts_with("assets/") || looks_like_file(rel)) {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    match get("index.html") {
        Some(data) => file(method, data, "text/html; charset=utf-8", "no-cache"),
        None => file(
            method,
            Cow::Borrowed(NOT_BUILT.as_bytes()),
            "text/html; charset=utf-8",
            "no-cache",
        ),
    }
}

fn file(
    method: &Method,
    data: Cow<'static, [u8]>,
    content_type: &'static str,
    cache: &'static str,
) -> Response {
    let len = data.len();
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(data)
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Whether `path` is under the API prefix `r`: `/api/` owns `/api` and
/// everything below it; `/metrics` owns itself and `/metrics/...` (not
/// `/metrics-explorer`).
fn reserved(path: &str, r: &str) -> bool {
    let base = r.trim_end_matches('/');
    path == base
        || path
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// A last path segment with an extension (`favicon.ico`, `app.js.map`):
/// a file request, not a client-side route.
fn looks_like_file(rel: &str) -> bool {
    rel.rsplit('/')
        .next()
        .and_then(|last| last.rsplit_once('.'))
        .is_some_and(|(stem, ext)| {
            !stem.is_empty() && !ext.is_empty() && ext.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// The `Content-Type` of a build output, by extension.
fn content_type(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "txt" => "text/plain; charset=utf-8",
        "wasm" => "application/wasm",
        "webmanifest" => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;

    const INDEX: &str = "<!doctype html><title>app</title>";

    fn fake(path: &str) -> Option<Cow<'static, [u8]>> {
        let data: &'static str = match path {
            "index.html" => INDEX,
            "assets/index-4f3a9c.js" => "console.log(1)",
            "assets/index-77aa01.css" => "body{}",
            "assets/logo-19c2.svg" => "<svg/>",
            "assets/font-0a1b.woff2" => "w2",
            "favicon.svg" => "<svg/>",
            _ => return None,
        };
        Some(Cow::Borrowed(data.as_bytes()))
    }

    async fn get(path: &str) -> (StatusCode, String, String, String) {
        let r = respond(&Method::GET, path, fake);
        let h = |n| {
            r.headers()
                .get(n)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let (status, ct, cc) = (
            r.status(),
            h(header::CONTENT_TYPE),
            h(header::CACHE_CONTROL),
        );
        let body = to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, ct, cc, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn content_types_and_cache_headers() {
        let cases = [
            (
                "/assets/index-4f3a9c.js",
                "text/javascript; charset=utf-8",
                IMMUTABLE,
            ),
            (
                "/assets/index-77aa01.css",
                "text/css; charset=utf-8",
                IMMUTABLE,
            ),
            ("/assets/logo-19c2.svg", "image/svg+xml", IMMUTABLE),
            ("/assets/font-0a1b.woff2", "font/woff2", IMMUTABLE),
            ("/favicon.svg", "image/svg+xml", "no-cache"),
            ("/", "text/html; charset=utf-8", "no-cache"),
            ("/index.html", "text/html; charset=utf-8", "no-cache"),
        ];
        for (path, ct, cc) in cases {
            let (status, got_ct, got_cc, _) = get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(got_ct, ct, "{path}");
            assert_eq!(got_cc, cc, "{path}");
        }
    }

    #[tokio::test]
    async fn client_routes_fall_back_to_the_app() {
        for path in [
            "/logs",
            "/traces/0af7651916cd43dd8448eb211c80319c",
            "/map",
            "/metrics-explorer",
            "/a/b/c",
        ] {
            let (status, ct, cc, body) = get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(ct, "text/html; charset=utf-8", "{path}");
            assert_eq!(cc, "no-cache", "{path}");
            assert_eq!(body, INDEX, "{path}");
        }
    }

    #[tokio::test]
    async fn api_paths_and_missing_files_are_not_the_app() {
        for path in [
            "/api/v1/nope",
            "/prometheus/api/v1/nope",
            "/jaeger/api/nope",
            "/metrics",
            "/metrics/x",
            "/healthz",
            "/readyz",
            "/api",
            "/assets/index-000000.js",
            "/missing.js",
            "/robots.txt",
        ] {
            let (status, _, _, body) = get(path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert_ne!(body, INDEX, "{path}");
        }
    }

    #[tokio::test]
    async fn head_has_headers_without_body_and_post_is_refused() {
        let r = respond(&Method::HEAD, "/assets/index-4f3a9c.js", fake);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "14");
        assert!(to_bytes(r.into_body(), 1024).await.unwrap().is_empty());
        let r = respond(&Method::POST, "/logs", fake);
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn without_a_build_the_app_says_how_to_build_it() {
        let r = respond(&Method::GET, "/logs", |_| None);
        assert_eq!(r.status(), StatusCode::OK);
        let body = to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("npm ci &amp;&amp; npm run build"), "{body}");
    }

    #[tokio::test]
    async fn the_embedded_build_or_the_build_hint_is_served() {
        // Whether or not `web/dist` was built, `/` answers an HTML page.
        let r = serve_ui(Method::GET, Uri::from_static("/")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
    }
}
