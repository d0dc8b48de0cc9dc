//! The dashboard page (docs/dashboard.md): static files embedded in the binary and served at `/`.
//!
//! The host only serves the files; the page reads everything through the relay's own routes with
//! the token the human signs in with, so every rule stays in the guest.
//!
//! A client that accepts gzip gets each file gzipped (compressed once, at the first request, at
//! the best level; a file that gzip would not make smaller is always sent as it is). The two
//! forms have their own entity tags, and every answer says `Vary: Accept-Encoding`, so a cache
//! never hands one client the other's bytes.

use std::io::Write as _;
use std::sync::LazyLock;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest as _, Sha256};

/// The page's policy: nothing from elsewhere, no inline script or style, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
style-src 'self'; connect-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
form-action 'none'";

/// One embedded file: its path, content type and bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../assets/dashboard/index.html"),
    },
    Asset {
        path: "/dashboard/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/dashboard/app.js"),
    },
    Asset {
        path: "/dashboard/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/dashboard/style.css"),
    },
    Asset {
        path: "/dashboard/icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../assets/dashboard/icon.svg"),
    },
];

/// One file in one encoding: its bytes, its entity tag, and `Content-Encoding` when gzipped.
struct Form {
    body: Bytes,
    etag: String,
    encoding: Option<&'static str>,
}

/// Each file as it is and, when that is smaller, gzipped; made once.
static FORMS: LazyLock<Vec<(Form, Option<Form>)>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = Sha256::digest(asset.body);
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            let plain = Form {
                body: Bytes::from_static(asset.body),
                etag: format!("\"{hex}\""),
                encoding: None,
            };
            let gzipped = gzip(asset.body)
                .filter(|bytes| bytes.len() < asset.body.len())
                .map(|bytes| Form {
                    body: Bytes::from(bytes),
                    etag: format!("\"{hex}-gzip\""),
                    encoding: Some("gzip"),
                });
            (plain, gzipped)
        })
        .collect()
});

fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(body).ok()?;
    encoder.finish().ok()
}

/// Whether `Accept-Encoding` takes gzip: `gzip` (or `*`) listed without `q=0`.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|param| {
                param
                    .trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

fn serve(index: usize, headers: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let (plain, gzipped) = &FORMS[index];
    let form = match gzipped {
        Some(gzipped) if accepts_gzip(headers) => gzipped,
        _ => plain,
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(',').any(|tag| tag.trim() == form.etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = (
            [(header::CONTENT_TYPE, asset.content_type)],
            form.body.clone(),
        )
            .into_response();
        if let Some(encoding) = form.encoding {
            response
                .headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
        }
        response
    };
    let set = response.headers_mut();
    set.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    set.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    set.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    set.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    set.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Revalidated on every load (a new binary may serve a new page), cheap with the tag.
    set.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(&form.etag) {
        set.insert(header::ETAG, value);
    }
    response
}

/// The page's routes (GET only; other methods fall through to the caller's fallback).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new();
    for (index, asset) in ASSETS.iter().enumerate() {
        router = router.route(
            asset.path,
            get(move |headers: HeaderMap| async move { serve(index, &headers) }),
        );
    }
    router
}
