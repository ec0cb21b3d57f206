//! The management UI as the API function serves it: through the local runner over HTTP, next
//! to the JSON API on the same router. (The browser suite, tests/browser/, drives the page.)

use webhooks_api::ui::{ASSETS, CSP};
use webhooks_tests::{JWT_SECRET, bearer};

async fn local_runner() -> String {
    let config =
        webhooks_local::local_config(|k| (k == "JWT_SECRET").then(|| String::from_utf8_lossy(JWT_SECRET).into_owned()))
            .expect("config");
    let runner = webhooks_local::Runner::new(&config, JWT_SECRET, &webhooks_local::Backend::Memory).expect("runner");
    let addr = runner.spawn(0).await.expect("serve");
    format!("http://{addr}")
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_their_types_and_a_strict_csp() {
    let base = local_runner().await;
    let http = reqwest::Client::new();

    let page = http.get(format!("{base}/")).send().await.expect("send");
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(page.headers()["content-security-policy"], CSP);
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let html = page.text().await.expect("body");
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains(r#"<script type="module" src="ui/app.js"></script>"#));
    assert!(html.contains(r#"<link rel="stylesheet" href="ui/app.css">"#));

    for (path, content_type) in [
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let res = http.get(format!("{base}{path}")).send().await.expect("send");
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["content-type"], content_type, "{path}");
        assert_eq!(res.headers()["content-security-policy"], CSP, "{path}");
        assert_eq!(res.headers()["x-content-type-options"], "nosniff", "{path}");
        let served = res.bytes().await.expect("body");
        let embedded = ASSETS.iter().find(|a| a.path == path).expect("embedded");
        assert_eq!(served.as_ref(), embedded.body, "{path}");
    }

    // HEAD works like GET; other verbs and unknown assets get the API's problem details.
    let head = http.head(format!("{base}/")).send().await.expect("send");
    assert_eq!(head.status(), 200);
    let post = http.post(format!("{base}/")).send().await.expect("send");
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["content-type"], "application/problem+json");
    let missing = http.get(format!("{base}/ui/missing.js")).send().await.expect("send");
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn the_ui_needs_no_token_and_opens_no_api_route() {
    let base = local_runner().await;
    let http = reqwest::Client::new();
    // The files are public; the data behind them is not.
    assert_eq!(http.get(format!("{base}/")).send().await.expect("send").status(), 200);
    let res = http.get(format!("{base}/api/webhooks")).send().await.expect("send");
    assert_eq!(res.status(), 401);
    let res = http
        .get(format!("{base}/api/webhooks"))
        .header("authorization", bearer("ui"))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    // The UI's paths are not part of the JSON API's document.
    let doc: serde_json::Value = http
        .get(format!("{base}/api/openapi.json"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.keys().all(|p| p.starts_with("/api/")), "{:?}", paths.keys());
}
