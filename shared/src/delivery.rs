//! Sending one signed request: the code path of both the test endpoint and the dispatcher.

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::signing::SignedRequest;
use crate::ssrf::{self, TargetError, TargetPolicy};

/// At most this many bytes of a receiver's response body are kept in the delivery log: enough
/// to read an error message, and small enough that a delivery record stays under the 1 KB of
/// one DynamoDB write unit.
pub const MAX_RESPONSE_BODY: usize = 256;
/// Target URLs whose check is remembered per container (see `Deliverer::send`); past this
/// many the memory starts again empty, as the signing keys' does.
pub const MAX_CACHED_URLS: usize = 10_000;
/// Connecting (DNS, TCP, TLS) must finish within this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What became of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Delivered,
    HttpError,
    Timeout,
    ConnectionRefused,
    DnsFailed,
    TlsError,
    NotAllowed,
    ConnectionFailed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptReport {
    pub outcome: Outcome,
    pub status_code: Option<u16>,
    pub duration_ms: u64,
    /// A sentence a person can act on.
    pub message: String,
    /// The first `MAX_RESPONSE_BODY` bytes of the response, lossily decoded.
    pub response_body: Option<String>,
    /// A `Retry-After` the receiver sent with a failure, in seconds.
    pub retry_after_s: Option<u64>,
}

impl AttemptReport {
    pub fn success(&self) -> bool {
        self.outcome == Outcome::Delivered
    }

    fn failed(outcome: Outcome, message: String, started: Instant) -> Self {
        AttemptReport {
            outcome,
            status_code: None,
            duration_ms: started.elapsed().as_millis() as u64,
            message,
            response_body: None,
            retry_after_s: None,
        }
    }
}

/// Name resolution, as a port: the system resolver in production; a fixed table in tests, so
/// that "a name that resolves to a private address" can be tested without any DNS traffic.
#[derive(Clone, Default)]
pub enum Dns {
    #[default]
    System,
    /// Names not in the table do not resolve.
    Static(Arc<std::collections::HashMap<String, Vec<IpAddr>>>),
}

impl Dns {
    pub fn fixed(entries: &[(&str, IpAddr)]) -> Dns {
        let mut map: std::collections::HashMap<String, Vec<IpAddr>> = std::collections::HashMap::new();
        for (name, ip) in entries {
            map.entry(name.to_ascii_lowercase()).or_default().push(*ip);
        }
        Dns::Static(Arc::new(map))
    }

    /// The addresses of `host`, empty when it does not resolve.
    pub async fn lookup(&self, host: &str) -> Vec<IpAddr> {
        match self {
            Dns::System => match tokio::net::lookup_host((host, 0)).await {
                Ok(addrs) => addrs.map(|a| a.ip()).collect(),
                Err(_) => Vec::new(),
            },
            Dns::Static(map) => map
                .get(&host.trim_end_matches('.').to_ascii_lowercase())
                .cloned()
                .unwrap_or_default(),
        }
    }
}

/// Resolves names, then refuses the answer when any address is forbidden by the policy.
/// Because the HTTP client connects only to what this returns, the guard applies to the
/// address actually used, whatever DNS said at registration time.
struct GuardedResolver {
    policy: TargetPolicy,
    dns: Dns,
}

#[derive(Debug, thiserror::Error)]
#[error("DNS lookup failed for {host}")]
struct DnsFailed {
    host: String,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let dns = self.dns.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = dns
                .lookup(&host)
                .await
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            if addrs.is_empty() {
                return Err(Box::new(DnsFailed { host }) as Box<dyn StdError + Send + Sync>);
            }
            if !policy.allow_private {
                ssrf::check_addrs(&addrs).map_err(|e| Box::new(e) as Box<dyn StdError + Send + Sync>)?;
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(not(any(feature = "aws", feature = "tls-ring")))]
compile_error!("the `webhooks` crate needs a TLS provider: enable its `aws` feature (aws-lc-rs) or `tls-ring`");

/// With `aws`, reqwest uses aws-lc-rs itself, as the AWS SDK does. Without it, ring is made the
/// process's rustls provider (once; a provider someone installed first is kept). Call it before
/// building any other reqwest client.
pub fn install_tls_provider() {
    #[cfg(all(feature = "tls-ring", not(feature = "aws")))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build the delivery HTTP client: {0}")]
pub struct DelivererError(String);

/// One HTTP client for every delivery: connection reuse across a batch and across warm
/// invocations, rustls, no redirects (a redirect could lead to a private address, and the
/// receiver's signature check is about the URL that was registered).
#[derive(Clone)]
pub struct Deliverer {
    client: reqwest::Client,
    policy: TargetPolicy,
    dns: Dns,
    /// URLs that passed `ssrf::check_url` under `policy`, parsed. That check reads nothing but
    /// the string (syntax, scheme, IP literals; names are checked at connect time by the
    /// resolver), so its verdict for a string never changes, and a busy webhook's URL is
    /// parsed once per container instead of once per attempt. Refused URLs are not kept.
    checked: Arc<std::sync::Mutex<std::collections::HashMap<String, url::Url>>>,
}

impl Deliverer {
    /// The one HTTP client of deliveries. Failing to build it is fatal: falling back to a
    /// default client would follow redirects, take proxies from the environment and skip the
    /// SSRF guard.
    pub fn new(policy: TargetPolicy) -> Result<Self, DelivererError> {
        Self::with_dns(policy, Dns::System)
    }

    pub fn with_dns(policy: TargetPolicy, dns: Dns) -> Result<Self, DelivererError> {
        install_tls_provider();
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                policy,
                dns: dns.clone(),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .user_agent(concat!("webhooks/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .build()
            .map_err(|e| DelivererError(e.to_string()))?;
        Ok(Deliverer {
            client,
            policy,
            dns,
            checked: Default::default(),
        })
    }

    pub fn policy(&self) -> TargetPolicy {
        self.policy
    }

    /// The registration-time check of a target: the URL itself, then its current DNS answers
    /// (a name that does not resolve yet is accepted; the send-time guard still applies).
    pub async fn check_target(&self, url: &str) -> Result<(), TargetError> {
        let parsed = ssrf::check_url(url, self.policy).inspect_err(|e| e.log_setting(url))?;
        if self.policy.allow_private {
            return Ok(());
        }
        let Some(url::Host::Domain(name)) = parsed.host() else {
            return Ok(());
        };
        let lookup = self.dns.lookup(name);
        let addrs = tokio::time::timeout(Duration::from_secs(2), lookup)
            .await
            .unwrap_or_default();
        for ip in addrs {
            ssrf::check_ip(ip).inspect_err(|e| e.log_setting(name))?;
        }
        Ok(())
    }

    /// `ssrf::check_url`, remembered for the URLs that pass it.
    fn checked_url(&self, url: &str) -> Result<url::Url, TargetError> {
        let lock = || self.checked.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(parsed) = lock().get(url) {
            return Ok(parsed.clone());
        }
        let parsed = ssrf::check_url(url, self.policy)?;
        let mut checked = lock();
        if checked.len() >= MAX_CACHED_URLS {
            checked.clear();
        }
        checked.insert(url.to_string(), parsed.clone());
        Ok(parsed)
    }

    /// POSTs `request` to `url`, waiting at most `timeout` for the whole exchange.
    pub async fn send(&self, url: &str, request: &SignedRequest, timeout: Duration) -> AttemptReport {
        let timeout = timeout.max(Duration::from_millis(1));
        let started = Instant::now();
        // IP literals never reach the resolver, so they are checked here. The URL parsed for
        // the check is the one sent: reqwest would parse the string a second time.
        let parsed = match self.checked_url(url) {
            Ok(parsed) => parsed,
            Err(e) => {
                e.log_setting(url);
                let outcome = match e {
                    TargetError::Blocked { .. } | TargetError::BlockedName { .. } => Outcome::NotAllowed,
                    _ => Outcome::ConnectionFailed,
                };
                return AttemptReport::failed(outcome, capitalise(&e.to_string()), started);
            }
        };
        if let Some(name) = request.invalid {
            return AttemptReport::failed(
                Outcome::ConnectionFailed,
                format!("Could not build the request: its {name} header is not a valid header value"),
                started,
            );
        }
        // `Bytes`: the body and the header values are shared with the request, not copied.
        let mut builder = self.client.post(parsed).timeout(timeout).body(request.body.clone());
        for (name, value) in &request.headers {
            builder = builder.header(name.clone(), value.clone());
        }
        let mut response = match builder.send().await {
            Ok(r) => r,
            Err(e) => return classify(&e, timeout, started),
        };
        let status = response.status();
        let retry_after_s = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, crate::time::now_ms() / 1000));
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_RESPONSE_BODY - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if body.len() >= MAX_RESPONSE_BODY {
                        break;
                    }
                }
                Ok(None) => break,
                // The status already arrived; a body cut short does not change the verdict.
                Err(_) => break,
            }
        }
        let code = status.as_u16();
        let (outcome, message) = if status.is_success() {
            (Outcome::Delivered, "Webhook delivered successfully".to_string())
        } else {
            let reason = status.canonical_reason().map(|r| format!(" {r}")).unwrap_or_default();
            (Outcome::HttpError, format!("Receiver answered HTTP {code}{reason}"))
        };
        AttemptReport {
            outcome,
            status_code: Some(code),
            duration_ms: started.elapsed().as_millis() as u64,
            message,
            response_body: Some(String::from_utf8_lossy(&body).into_owned()),
            retry_after_s: if status.is_success() { None } else { retry_after_s },
        }
    }
}

/// `Retry-After` in either form RFC 9110 allows: delay-seconds, or an HTTP date (a date in
/// the past means now).
pub fn parse_retry_after(value: &str, now_s: u64) -> Option<u64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(seconds);
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?.timestamp();
    Some((at.max(0) as u64).saturating_sub(now_s))
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn classify(e: &reqwest::Error, timeout: Duration, started: Instant) -> AttemptReport {
    let mut source: Option<&(dyn StdError + 'static)> = e.source();
    let mut chain = String::new();
    while let Some(err) = source {
        if let Some(t) = err.downcast_ref::<TargetError>() {
            t.log_setting(e.url().and_then(|u| u.host_str()).unwrap_or("-"));
            return AttemptReport::failed(Outcome::NotAllowed, capitalise(&t.to_string()), started);
        }
        if let Some(d) = err.downcast_ref::<DnsFailed>() {
            return AttemptReport::failed(Outcome::DnsFailed, capitalise(&d.to_string()), started);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return AttemptReport::failed(
                Outcome::ConnectionRefused,
                "Connection refused: nothing is listening at the receiver's address".into(),
                started,
            );
        }
        chain.push_str(&err.to_string());
        chain.push_str("; ");
        source = err.source();
    }
    if e.is_timeout() {
        let secs = timeout.as_secs_f64();
        return AttemptReport::failed(
            Outcome::Timeout,
            format!("Timed out after {secs} s waiting for the receiver"),
            started,
        );
    }
    let lower = chain.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") || lower.contains("ssl") {
        let detail = chain.trim_end_matches("; ");
        return AttemptReport::failed(Outcome::TlsError, format!("TLS error: {detail}"), started);
    }
    let detail = if chain.is_empty() {
        e.to_string()
    } else {
        chain.trim_end_matches("; ").to_string()
    };
    AttemptReport::failed(
        Outcome::ConnectionFailed,
        format!("Could not reach the receiver: {detail}"),
        started,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_urls_are_remembered_refused_ones_are_not_and_the_memory_is_bounded() {
        let deliverer = Deliverer::new(TargetPolicy::default()).expect("client");
        let kept = || deliverer.checked.lock().expect("lock").len();
        for _ in 0..2 {
            assert!(matches!(
                deliverer.checked_url("https://127.0.0.1/hook"),
                Err(TargetError::Blocked { .. })
            ));
            assert!(matches!(
                deliverer.checked_url("http://example.com/hook"),
                Err(TargetError::Scheme)
            ));
        }
        assert_eq!(kept(), 0, "a refused URL is checked again each time");
        let first = deliverer.checked_url("https://example.com/a?b=1").expect("public");
        assert_eq!(first.as_str(), "https://example.com/a?b=1");
        assert_eq!(
            deliverer.checked_url("https://example.com/a?b=1").expect("again"),
            first
        );
        assert_eq!(kept(), 1);
        for i in 0..MAX_CACHED_URLS + 5 {
            deliverer
                .checked_url(&format!("https://example.com/{i}"))
                .expect("public");
            assert!(kept() <= MAX_CACHED_URLS);
        }
    }

    #[tokio::test]
    async fn a_request_with_an_invalid_header_is_reported_and_not_sent() {
        let keys = [crate::signing::SigningKey::new("a-plain-secret-of-some-length")];
        let request = crate::signing::sign_rendered("dl_1\nx: y", "system.info", 1, bytes::Bytes::new(), &keys, 5);
        let deliverer = Deliverer::new(TargetPolicy::PERMISSIVE).expect("client");
        // Port 9 of 127.0.0.1: nothing is sent, so nothing needs to listen.
        let report = deliverer
            .send("http://127.0.0.1:9/hook", &request, Duration::from_secs(1))
            .await;
        assert_eq!(report.outcome, Outcome::ConnectionFailed);
        assert_eq!(
            report.message,
            "Could not build the request: its x-webhook-id header is not a valid header value"
        );
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("120", 0), Some(120));
        // RFC 9110's example date, 784111777 s after the epoch.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_777 - 90),
            Some(90)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_777 + 5),
            Some(0)
        );
        assert_eq!(parse_retry_after("soon", 0), None);
    }
}
