//! Section 1: the cost of building a delivery (canonical body + both signatures) next to one
//! plain HMAC-SHA256 over the same bytes.

use std::hint::black_box;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use webhooks::signing::{self, Envelope};

use crate::payload::{EVENT, payload};
use crate::table::{Table, f2, int, median};

const SECRET: &str = "whsec-bench-0123456789abcdef0123456789abcdef";
const DELIVERY_ID: &str = "dl_01jv9qk3m4r7t2w8x5y6z0abcd";
const ROUNDS: usize = 7;

/// A named operation to time.
pub type Op<'a> = (&'static str, Box<dyn FnMut() + 'a>);

/// How many iterations of `f` take about `budget`.
fn calibrate(f: &mut dyn FnMut(), budget: Duration) -> u64 {
    let mut iters = 1u64;
    for _ in 0..40 {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        let e = t.elapsed();
        if e >= Duration::from_millis(2) {
            return ((iters as f64) * budget.as_secs_f64() / e.as_secs_f64()).max(1.0) as u64;
        }
        iters *= 2;
    }
    iters
}

fn sample(f: &mut dyn FnMut(), iters: u64) -> f64 {
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_nanos() as f64 / iters as f64
}

/// ns/op of each function, sampled in interleaved rounds so drift hits all of them alike.
pub fn measure(fs: &mut [Op<'_>], budget: Duration) -> Vec<f64> {
    let iters: Vec<u64> = fs.iter_mut().map(|(_, f)| calibrate(f.as_mut(), budget)).collect();
    let mut samples = vec![Vec::new(); fs.len()];
    for _ in 0..ROUNDS {
        for (i, (_, f)) in fs.iter_mut().enumerate() {
            samples[i].push(sample(f.as_mut(), iters[i]));
        }
    }
    samples.iter().map(|s| median(s)).collect()
}

pub fn run(quick: bool) -> Table {
    let budget = Duration::from_millis(if quick { 10 } else { 40 });
    let mut table = Table::new(
        "1. Signing: both signatures of a rendered body, and the body built per attempt, vs bare HMAC-SHA256 (median of 7 interleaved samples)",
        &["payload", "body bytes", "operation", "ns/op", "x floor", "x 2 HMACs"],
    );
    let (mut ratio_1k, mut cloned_1k) = (f64::NAN, f64::NAN);
    let now_s = webhooks::time::now_ms() / 1000;
    let timestamp_ms = 1_747_862_829_442;
    for (label, size) in [("~1 KiB", 1024usize), ("~64 KiB", 64 * 1024)] {
        let p = payload(size, None);
        let rendered = webhooks::jsjson::to_string(&p);
        let env = Envelope {
            id: DELIVERY_ID,
            event: EVENT,
            timestamp_ms,
            payload: &rendered,
        };
        let body = env.sign(Some(SECRET), now_s).body;
        let iso = webhooks::time::iso_ms(timestamp_ms);
        let ts = now_s.to_string();
        let keys = [signing::SigningKey::new(SECRET)];
        let (guide_key, standard_key) = (
            <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).expect("any key length"),
            <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).expect("any key length"),
        );
        let mut fs: Vec<Op<'_>> = vec![
            (
                "sign_rendered: both signatures + headers, keys derived before (the dispatcher's attempt)",
                Box::new(|| {
                    black_box(signing::sign_rendered(
                        DELIVERY_ID,
                        EVENT,
                        timestamp_ms,
                        black_box(body.clone()),
                        black_box(&keys),
                        now_s,
                    ));
                }),
            ),
            (
                "  the same, keys derived at this attempt (a KeyCache miss)",
                Box::new(|| {
                    black_box(signing::sign_rendered(
                        DELIVERY_ID,
                        EVENT,
                        timestamp_ms,
                        black_box(body.clone()),
                        &[signing::SigningKey::new(black_box(SECRET))],
                        now_s,
                    ));
                }),
            ),
            (
                "  of which: X-Webhook-Signature (hex HMAC)",
                Box::new(|| {
                    black_box(signing::guide_signature(black_box(SECRET), &body));
                }),
            ),
            (
                "  of which: webhook-signature (v1, base64 HMAC)",
                Box::new(|| {
                    black_box(signing::standard_signature(
                        black_box(SECRET),
                        DELIVERY_ID,
                        now_s,
                        &body,
                    ));
                }),
            ),
            (
                "Envelope::sign: body built per attempt + the above (job format 1)",
                Box::new(|| {
                    black_box(env.sign(Some(black_box(SECRET)), now_s));
                }),
            ),
            (
                "  of which: canonical body (around the rendered payload)",
                Box::new(|| {
                    black_box(signing::delivery_body_rendered(EVENT, black_box(&iso), &rendered));
                }),
            ),
            (
                "  reference: serde_json::to_vec(payload), not JS-exact",
                Box::new(|| {
                    black_box(serde_json::to_vec(black_box(&p)).unwrap_or_default());
                }),
            ),
            (
                "floor for both: two bare HMAC-SHA256 (body; id.ts.body)",
                Box::new(|| {
                    let key = black_box(SECRET).as_bytes();
                    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
                    mac.update(black_box(&body));
                    black_box(mac.finalize().into_bytes());
                    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
                    for part in [DELIVERY_ID.as_bytes(), b".", ts.as_bytes(), b".", black_box(&body)] {
                        mac.update(part);
                    }
                    black_box(mac.finalize().into_bytes());
                }),
            ),
            (
                "two HMACs from keyed states cloned (the key schedule done before)",
                Box::new(|| {
                    let mut mac = black_box(&guide_key).clone();
                    mac.update(black_box(&body));
                    black_box(mac.finalize().into_bytes());
                    let mut mac = black_box(&standard_key).clone();
                    for part in [DELIVERY_ID.as_bytes(), b".", ts.as_bytes(), b".", black_box(&body)] {
                        mac.update(part);
                    }
                    black_box(mac.finalize().into_bytes());
                }),
            ),
            (
                "floor: HMAC-SHA256(body), hmac+sha2",
                Box::new(|| {
                    let mut mac =
                        <Hmac<Sha256> as Mac>::new_from_slice(black_box(SECRET).as_bytes()).expect("any key length");
                    mac.update(black_box(&body));
                    black_box(mac.finalize().into_bytes());
                }),
            ),
        ];
        let ns = measure(&mut fs, budget);
        let floor = ns[ns.len() - 1];
        let cloned2 = ns[ns.len() - 2];
        let floor2 = ns[ns.len() - 3];
        for (i, (name, _)) in fs.iter().enumerate() {
            table.row(vec![
                label.to_string(),
                int(body.len() as f64),
                name.to_string(),
                int(ns[i]),
                f2(ns[i] / floor),
                f2(ns[i] / floor2),
            ]);
        }
        if size == 1024 {
            ratio_1k = ns[0] / floor2;
            cloned_1k = ns[0] / cloned2;
        }
    }
    table.note(
        "note: two signatures are two HMACs over the body (different messages: body vs id.ts.body), so the floor for \
         both is two bare HMACs; job format 2 carries the body rendered once per event, so a delivery attempt only \
         signs (sign_rendered); format 1 jobs (still read) build the body at each attempt (Envelope::sign).",
    );
    table.note(format!(
        "note: the floor keys both HMACs afresh (2 SHA-256 blocks each); the dispatcher keeps each secret's keyed \
         states (KeyCache) and clones them, so part of its margin is that key schedule: against two HMACs from \
         cloned keyed states it takes {cloned_1k:.2}x at 1 KiB"
    ));
    table.verdict(
        ratio_1k <= 1.25,
        format!(
            "both signatures of a 1 KiB body (sign_rendered, keys derived before) take {ratio_1k:.2}x two bare \
             HMAC-SHA256 (target: within 1.25x)"
        ),
    );
    table
}
