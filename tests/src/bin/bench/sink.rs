//! A lean webhook receiver on 127.0.0.1: answers 200 `ok` at once, counts requests, and (when
//! asked) records the arrival `Instant` of each request keyed by the payload's `seq` field.
//! `webhooks_tests::Receiver` keeps every request's headers and body, which is right for
//! assertions but would make the receiver, not the code under test, the bottleneck here.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::serve::ListenerExt;

#[derive(Clone)]
pub struct Sink {
    pub addr: SocketAddr,
    count: Arc<AtomicU64>,
    arrivals: Arc<Mutex<Vec<(u64, Instant)>>>,
}

impl Sink {
    pub async fn start(record: bool) -> Sink {
        let count = Arc::new(AtomicU64::new(0));
        let arrivals: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::new(Mutex::new(Vec::with_capacity(64 * 1024)));
        let (c, a) = (count.clone(), arrivals.clone());
        let app = axum::Router::new().fallback(move |body: Bytes| {
            let (c, a) = (c.clone(), a.clone());
            async move {
                let at = Instant::now();
                if record && let Some(seq) = seq_of(&body) {
                    a.lock().unwrap_or_else(|p| p.into_inner()).push((seq, at));
                }
                c.fetch_add(1, Ordering::Release);
                (StatusCode::OK, "ok")
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let addr = listener.local_addr().expect("sink address");
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Sink { addr, count, arrivals }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Waits (bounded) until `n` requests have arrived in all; false on timeout.
    pub async fn wait_for(&self, n: u64, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.count() < n {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        true
    }

    /// Every (seq, arrival) recorded so far.
    pub fn arrivals(&self) -> Vec<(u64, Instant)> {
        self.arrivals.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The `seq` number of a delivery body `{"event":…,"timestamp":…,"payload":{"seq":N,…}}`,
/// found without parsing the whole body.
fn seq_of(body: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"seq\":";
    let at = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits: &[u8] = &body[at..];
    let end = digits.iter().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}
