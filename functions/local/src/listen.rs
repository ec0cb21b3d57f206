//! `webhooks-local listen`: a receiver on 127.0.0.1 for trying webhooks out, like `stripe listen`.
//! It verifies both signature schemes with the secret it is given, prints every delivery, and
//! can forward each one to the receiver being developed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use webhooks::signing::{
    HEADER_EVENT, HEADER_ID, HEADER_SIGNATURE, HEADER_SW_ID, HEADER_SW_SIGNATURE, HEADER_SW_TIMESTAMP,
    verify_guide_signature, verify_standard_signature,
};

/// Bodies longer than this are printed cut, with their size (a payload may be 128 KiB).
pub const PRINT_BODY_BYTES: usize = 4096;
/// How long a forwarded request may take; under the dispatcher's default delivery timeout.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenOptions {
    pub port: u16,
    pub secret: Option<String>,
    pub forward: Option<String>,
}

impl ListenOptions {
    /// `[--port P] [--secret S] [--forward URL]`; errors name the flag.
    pub fn parse(args: &[String]) -> Result<ListenOptions, String> {
        let mut o = ListenOptions {
            port: DEFAULT_PORT,
            ..Default::default()
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = |what: &str| {
                it.next()
                    .filter(|v| !v.starts_with("--"))
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs {what}"))
            };
            match flag.as_str() {
                "--port" => {
                    o.port = value("a port number")?
                        .parse()
                        .map_err(|_| "--port must be a port number from 0 to 65535 (0: any free port)".to_string())?
                }
                "--secret" => o.secret = Some(value("the webhook's secret")?).filter(|s| !s.is_empty()),
                "--forward" => {
                    let url = value("a URL")?;
                    let ok = url::Url::parse(&url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
                    if !ok {
                        return Err(format!(
                            "--forward must be an http(s) URL such as http://127.0.0.1:4000/webhooks, not '{url}'"
                        ));
                    }
                    o.forward = Some(url);
                }
                other => return Err(format!("unknown option '{other}'; {LISTEN_USAGE}")),
            }
        }
        Ok(o)
    }
}

pub const DEFAULT_PORT: u16 = 8080;
pub const LISTEN_USAGE: &str = "usage: webhooks-local listen [--port P (default 8080)] [--secret S] [--forward URL]";

/// Where printed lines go: stdout in the binary, a buffer in tests.
pub type Printer = Arc<dyn Fn(String) + Send + Sync>;

#[derive(Clone)]
struct State {
    secret: Option<String>,
    forward: Option<String>,
    client: reqwest::Client,
    /// Times each delivery id arrived here: retries of one delivery share their id.
    seen: Arc<Mutex<HashMap<String, u32>>>,
    print: Printer,
}

/// Serves until the process ends: every request to any path is a delivery.
pub async fn serve(options: ListenOptions, listener: tokio::net::TcpListener, print: Printer) -> std::io::Result<()> {
    webhooks::delivery::install_tls_provider();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(FORWARD_TIMEOUT)
        .no_proxy()
        .build()
        .map_err(std::io::Error::other)?;
    let state = State {
        secret: options.secret,
        forward: options.forward,
        client,
        seen: Arc::default(),
        print,
    };
    let app = axum::Router::new().fallback(receive).with_state(state);
    axum::serve(listener, app).await
}

/// What the signatures say, as printed.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Verified,
    Failed(String),
    Unsigned,
    NoSecret,
}

fn verify(secret: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Verdict {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let guide = h(HEADER_SIGNATURE);
    let standard = h(HEADER_SW_SIGNATURE);
    if guide.is_none() && standard.is_none() {
        return Verdict::Unsigned;
    }
    let Some(secret) = secret else {
        return Verdict::NoSecret;
    };
    let mut failed = Vec::new();
    if let Some(sig) = guide
        && !verify_guide_signature(secret, body, sig)
    {
        failed.push("X-Webhook-Signature");
    }
    if let Some(sig) = standard {
        let id = h(HEADER_SW_ID).unwrap_or_default();
        let ts = h(HEADER_SW_TIMESTAMP).unwrap_or_default();
        if !verify_standard_signature(secret, id, ts, body, sig) {
            failed.push("webhook-signature");
        }
    }
    if failed.is_empty() {
        Verdict::Verified
    } else {
        let verb = if failed.len() > 1 { "do" } else { "does" };
        Verdict::Failed(format!(
            "{} {verb} not match --secret (is it the secret the API returned for this webhook?)",
            failed.join(" and ")
        ))
    }
}

async fn receive(
    axum::extract::State(state): axum::extract::State<State>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("-");
    let id = headers
        .get(HEADER_ID)
        .or_else(|| headers.get(HEADER_SW_ID))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let attempt = {
        let mut seen = state.seen.lock().unwrap_or_else(|e| e.into_inner());
        let n = seen.entry(id.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let verdict = verify(state.secret.as_deref(), &headers, &body);
    let verdict_text = match &verdict {
        Verdict::Verified => "verified (X-Webhook-Signature and webhook-signature)".to_string(),
        Verdict::Failed(why) => format!("NOT VERIFIED: {why}"),
        Verdict::Unsigned => "unsigned (the webhook has no secret)".to_string(),
        Verdict::NoSecret => "not verified (signed, but listen has no --secret)".to_string(),
    };
    let mut text = format!(
        "--> {method} {uri}  event {}  id {id}  attempt {attempt}{}  {verdict_text}\n",
        h(HEADER_EVENT),
        if attempt > 1 { " (a retry)" } else { "" },
    );
    let shown = &body[..body.len().min(PRINT_BODY_BYTES)];
    text.push_str("    ");
    text.push_str(&String::from_utf8_lossy(shown));
    if body.len() > PRINT_BODY_BYTES {
        text.push_str(&format!("… ({} bytes in all)", body.len()));
    }
    // A receiver that verifies answers a bad signature with 401: the sender's log shows it.
    let mut status = match verdict {
        Verdict::Failed(_) => StatusCode::UNAUTHORIZED,
        _ => StatusCode::OK,
    };
    if let (Some(url), StatusCode::OK) = (&state.forward, status) {
        let mut request = state.client.post(url).body(body.clone());
        for (name, value) in &headers {
            if !matches!(
                name.as_str(),
                "host" | "content-length" | "connection" | "transfer-encoding"
            ) {
                request = request.header(name, value);
            }
        }
        match request.send().await {
            Ok(r) => {
                status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                text.push_str(&format!("\n    forwarded to {url}: HTTP {}", r.status()));
            }
            Err(e) => {
                status = StatusCode::BAD_GATEWAY;
                text.push_str(&format!("\n    forward to {url} failed: {e}; answered 502"));
            }
        }
    }
    (state.print)(text);
    (status, "").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn options_name_the_flag_at_fault() {
        assert_eq!(ListenOptions::parse(&[]).expect("defaults").port, DEFAULT_PORT);
        let o = ListenOptions::parse(&args(&[
            "--port",
            "0",
            "--secret",
            "s",
            "--forward",
            "http://127.0.0.1:1/x",
        ]))
        .expect("valid");
        assert_eq!(
            o,
            ListenOptions {
                port: 0,
                secret: Some("s".into()),
                forward: Some("http://127.0.0.1:1/x".into())
            }
        );
        let err = |a: &[&str]| ListenOptions::parse(&args(a)).expect_err("invalid");
        assert!(err(&["--port", "x"]).starts_with("--port must be"));
        assert!(err(&["--port"]).starts_with("--port needs"));
        assert!(err(&["--secret", "--port", "1"]).starts_with("--secret needs"));
        assert!(err(&["--forward", "ftp://x"]).starts_with("--forward must be"));
        assert!(err(&["--nope"]).starts_with("unknown option '--nope'"));
    }
}
