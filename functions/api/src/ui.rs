//! The webhook management UI: one HTML page and its script, style sheet and icon, embedded in
//! the binary at build time and served by the API function itself (`GET /`, `GET /ui/...`).
//!
//! The files hold no data and need no token: the page is a client of the public JSON API and
//! sends the user's bearer token with each call. Every UI response carries a strict
//! Content-Security-Policy (no inline script or style, nothing from another origin), so the
//! page works offline and a stored value can never run as code.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The policy of every UI response. `connect-src 'self'` is the JSON API on the same origin.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file and the path it is served at.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// Every file of the UI. Paths under `/ui/` are referenced relatively from the page, so the
/// UI also works behind a path-mapped custom domain.
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../ui/index.html"),
    },
    Asset {
        path: "/ui/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../ui/app.js"),
    },
    Asset {
        path: "/ui/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../ui/app.css"),
    },
    Asset {
        path: "/ui/icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../ui/icon.svg"),
    },
];

/// FNV-1a over the content: a strong validator that changes with every build that changes
/// the file, so browsers revalidate (`no-cache`) and get 304 until a deploy.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

fn serve(asset: &'static Asset, request: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", fnv1a(asset.body));
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    response
}

/// The UI's routes (GET, and so HEAD), to merge into the API router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(
            asset.path,
            get(move |headers: HeaderMap| async move { serve(asset, &headers) }),
        )
    })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    use super::*;

    async fn get(path: &str, if_none_match: Option<&str>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut request = Request::builder().uri(path);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        let request = request.body(Body::empty()).expect("request");
        let response = routes::<()>().oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        (status, headers, body)
    }

    #[tokio::test]
    async fn each_file_is_served_with_its_type_the_csp_and_a_validator() {
        for asset in ASSETS {
            let (status, headers, body) = get(asset.path, None).await;
            assert_eq!(status, StatusCode::OK, "{}", asset.path);
            assert_eq!(headers[header::CONTENT_TYPE], asset.content_type, "{}", asset.path);
            assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CSP);
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(body, asset.body);
            let etag = headers[header::ETAG].to_str().expect("ascii").to_string();
            let (status, headers, body) = get(asset.path, Some(&etag)).await;
            assert_eq!(status, StatusCode::NOT_MODIFIED, "{}", asset.path);
            assert_eq!(headers[header::ETAG], etag.as_str());
            assert!(body.is_empty());
        }
        let (_, headers, body) = get("/", None).await;
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .expect("ascii")
                .starts_with("text/html")
        );
        assert!(String::from_utf8(body).expect("utf-8").starts_with("<!doctype html>"));
    }

    #[test]
    fn the_policy_allows_nothing_inline_and_no_other_origin() {
        assert!(CSP.starts_with("default-src 'self';"));
        assert!(!CSP.contains("unsafe") && !CSP.contains("http") && !CSP.contains('*'));
        for directive in [
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(CSP.contains(directive), "{directive}");
        }
    }

    #[test]
    fn every_asset_the_page_references_is_served() {
        let page = std::str::from_utf8(ASSETS[0].body).expect("utf-8");
        for asset in &ASSETS[1..] {
            let relative = asset.path.trim_start_matches('/');
            assert!(
                page.contains(&format!("\"{relative}\"")),
                "index.html does not reference {relative}"
            );
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let page = std::str::from_utf8(ASSETS[0].body).expect("utf-8");
        assert!(!page.contains("<style"), "inline <style> would be refused by the CSP");
        assert!(
            !page.contains(" style="),
            "inline style attributes would be refused by the CSP"
        );
        let handler = page.match_indices(" on").any(|(i, _)| {
            let rest = &page[i + 3..];
            let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            name_len > 0 && rest[name_len..].starts_with('=')
        });
        assert!(!handler, "inline event handlers would be refused by the CSP");
        for script in page.split("<script").skip(1) {
            assert!(
                script.contains(" src=\""),
                "inline <script> would be refused by the CSP"
            );
        }
        // Everything the page loads or links to is its own: `ui/...` or a fragment route.
        for attr in [" src=\"", " href=\""] {
            for value in page.split(attr).skip(1) {
                assert!(value.starts_with("ui/") || value.starts_with('#'), "{attr}{value:.40}");
            }
        }
    }

    #[test]
    fn the_ui_weighs_under_100_kb() {
        let total: usize = ASSETS.iter().map(|a| a.body.len()).sum();
        assert!(total < 100 * 1024, "the UI is {total} bytes");
    }
}
