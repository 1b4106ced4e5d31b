//! The web front ends: the operator console under `/console/` and the rider app under
//! `/rider/`, built from `console/` by `build.rs` and embedded in the release binary (a debug
//! build reads `console/dist` from disk, so `npm run build` shows without recompiling).
//!
//! Hashed assets (`/console/assets/…`) are cached for a year as immutable; pages, the manifest
//! and the service worker are revalidated on every load (`no-cache` with an `ETag`). Every text
//! file is also stored brotli- and gzip-compressed; the variant is chosen by `Accept-Encoding`.
//! Paths under an app that name no file get the app's page, so client-side routes such as
//! `/console/devices/bike-0001` load.

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

#[derive(rust_embed::Embed)]
#[folder = "$WULIAN_CONSOLE_DIST"]
struct Dist;

/// The two apps' routes; merged into the API router's `extra` routes. `map_origins` are the
/// tile server's origins (`[map]`), which the pages' Content-Security-Policy lets them load.
pub fn router(map_origins: &[String]) -> Router {
    let csp = content_security_policy(map_origins);
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/rider", get(|| async { Redirect::permanent("/rider/") }))
        .route(
            "/console/",
            get(|h: HeaderMap| async move { app_file("console", "", &h) }),
        )
        .route(
            "/console/{*path}",
            get(|Path(p): Path<String>, h: HeaderMap| async move { app_file("console", &p, &h) }),
        )
        .route(
            "/rider/",
            get(|h: HeaderMap| async move { app_file("rider", "", &h) }),
        )
        .route(
            "/rider/{*path}",
            get(|Path(p): Path<String>, h: HeaderMap| async move { app_file("rider", &p, &h) }),
        )
        .layer(axum::middleware::map_response(move |mut r: Response| {
            let csp = csp.clone();
            async move {
                // Pages carry the policy; files (scripts, the worker) do not need it.
                if r.headers().contains_key(header::CONTENT_SECURITY_POLICY) {
                    r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, csp);
                }
                r
            }
        }))
}

/// [`CSP`] with the tile server's origins added where maps load tiles, styles and glyphs.
fn content_security_policy(map_origins: &[String]) -> HeaderValue {
    let extra: String = map_origins.iter().map(|o| format!(" {o}")).collect();
    let csp = CSP
        .replace(
            "img-src 'self' data: blob:;",
            &format!("img-src 'self' data: blob:{extra};"),
        )
        .replace(
            "connect-src 'self' blob:;",
            &format!("connect-src 'self' blob:{extra};"),
        );
    // The origins passed configuration validation (URL authority characters only).
    HeaderValue::from_str(&csp).unwrap_or_else(|_| HeaderValue::from_static(CSP))
}

/// The file `path` of `app`, or the app's page for a client-side route.
fn app_file(app: &str, path: &str, headers: &HeaderMap) -> Response {
    let file = format!("{app}/{path}");
    if !path.is_empty() && !path.ends_with('/') && Dist::get(&file).is_some() {
        return serve(&file, headers);
    }
    if path.starts_with("assets/") {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    let page = format!("{app}/index.html");
    if Dist::get(&page).is_none() {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "The web console was not built into this binary: build it with Node.js 20 and npm \
             on PATH and without WULIAN_SKIP_CONSOLE_BUILD.\n",
        );
    }
    serve(&page, headers)
}

fn serve(file: &str, headers: &HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (embedded, encoding) = [("br", ".br"), ("gzip", ".gz")]
        .into_iter()
        .filter(|(coding, _)| accepts(accept, coding))
        .find_map(|(coding, ext)| Dist::get(&format!("{file}{ext}")).map(|f| (f, Some(coding))))
        .or_else(|| Dist::get(file).map(|f| (f, None)))
        .expect("the caller checked that the file exists");

    let hash = embedded.metadata.sha256_hash();
    let etag = format!(
        "\"{}{}\"",
        hex::encode(&hash[..12]),
        encoding.map(|e| format!("-{e}")).unwrap_or_default()
    );
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(Body::from(embedded.data.into_owned()));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(file)),
        );
        if let Some(e) = encoding {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(e));
        }
        r
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control(file)),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if file.ends_with(".html") {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
    }
    response
}

/// The pages load only their own scripts; MapLibre runs its worker from a `blob:` URL, and its
/// worker fetches the fleet map's bikes from a `blob:` URL (console/src/console/fleetworker.ts).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data: blob:; worker-src 'self' blob:; connect-src 'self' blob:; \
    frame-ancestors 'none'; base-uri 'self'; object-src 'none'";

/// Whether `Accept-Encoding` allows `coding` (listed without `q=0`).
fn accepts(accept: &str, coding: &str) -> bool {
    accept.split(',').any(|item| {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        name.eq_ignore_ascii_case(coding) && !refused
    })
}

fn cache_control(file: &str) -> &'static str {
    if file.starts_with("console/assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    }
}

fn content_type(file: &str) -> &'static str {
    match file.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("webmanifest") => "application/manifest+json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("wasm") => "application/wasm",
        Some("pbf") => "application/x-protobuf",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_follow_accept_encoding() {
        assert!(accepts("gzip, deflate, br, zstd", "br"));
        assert!(accepts("gzip;q=0.8, br;q=1.0", "gzip"));
        assert!(!accepts("gzip, br;q=0", "br"));
        assert!(!accepts("identity", "gzip"));
        assert!(!accepts("", "br"));
    }

    #[test]
    fn hashed_assets_are_immutable_and_pages_revalidate() {
        assert_eq!(
            cache_control("console/assets/console-abc123.js"),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(cache_control("console/index.html"), "no-cache");
        assert_eq!(cache_control("rider/sw.js"), "no-cache");
        assert_eq!(
            content_type("rider/manifest.webmanifest"),
            "application/manifest+json"
        );
        assert_eq!(
            content_type("console/assets/maplibre-gl-worker-x.mjs"),
            "text/javascript; charset=utf-8"
        );
    }

    #[test]
    fn the_policy_names_the_tile_server() {
        let plain = content_security_policy(&[]);
        assert_eq!(plain.to_str().expect("ascii"), CSP);
        let csp = content_security_policy(&["https://tiles.example.com:8443".into()]);
        let csp = csp.to_str().expect("ascii");
        assert!(csp.contains("img-src 'self' data: blob: https://tiles.example.com:8443;"));
        assert!(csp.contains("connect-src 'self' blob: https://tiles.example.com:8443;"));
        assert!(
            csp.contains("script-src 'self';"),
            "scripts stay the installation's own"
        );
    }

    #[tokio::test]
    async fn pages_assets_and_client_routes() {
        use tower::ServiceExt;
        let get = |uri: &str, enc: &str| {
            axum::http::Request::get(uri)
                .header(header::ACCEPT_ENCODING, enc)
                .body(Body::empty())
                .expect("request")
        };
        let app = router(&[]);
        let r = app
            .clone()
            .oneshot(get("/console", ""))
            .await
            .expect("answer");
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        let r = app
            .clone()
            .oneshot(get("/console/assets/missing.js", ""))
            .await
            .expect("answer");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        if Dist::get("console/index.html").is_none() {
            // Built with WULIAN_SKIP_CONSOLE_BUILD and no dist: the hint.
            let r = app.oneshot(get("/console/", "")).await.expect("answer");
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            return;
        }
        for uri in ["/console/", "/console/devices/bike-0001", "/rider/ride/t-1"] {
            let r = app.clone().oneshot(get(uri, "br")).await.expect("answer");
            assert_eq!(r.status(), StatusCode::OK, "{uri}");
            assert_eq!(
                r.headers()[header::CONTENT_TYPE],
                "text/html; charset=utf-8"
            );
            assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        }
        // A hashed script, brotli when asked, gzip otherwise, and revalidation by ETag.
        let script = Dist::iter()
            .find(|f| f.starts_with("console/assets/") && f.ends_with(".js"))
            .expect("a built script");
        let uri = format!("/{script}");
        let r = app
            .clone()
            .oneshot(get(&uri, "gzip, br"))
            .await
            .expect("answer");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_ENCODING], "br");
        assert_eq!(
            r.headers()[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        let etag = r.headers()[header::ETAG].clone();
        let r = app
            .clone()
            .oneshot(get(&uri, "gzip"))
            .await
            .expect("answer");
        assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
        let mut again = get(&uri, "gzip, br");
        again.headers_mut().insert(header::IF_NONE_MATCH, etag);
        let r = app.oneshot(again).await.expect("answer");
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    }
}
