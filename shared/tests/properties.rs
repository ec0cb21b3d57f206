//! Generated-input properties of the parsers and guards that face untrusted input: the events
//! queue decoder, the webhook body parsers, the JWT path, the URL/SSRF guard and the JSON
//! writer. (cargo fuzz needs a nightly toolchain, which this project's machines cannot fetch;
//! proptest explores the same inputs on stable.) `PROPTEST_CASES` runs them longer.

use std::net::Ipv4Addr;

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use webhooks::auth::JwtVerifier;
use webhooks::domain::{MAX_EVENTS, MAX_SECRET_LEN, parse_create, parse_update};
use webhooks::event_types::EventFilter;
use webhooks::jsjson;
use webhooks::messages::decode_event;
use webhooks::ssrf::{TargetError, TargetPolicy, check_url, forbidden_reason};

const GUARDED: TargetPolicy = TargetPolicy {
    allow_http: true,
    allow_private: false,
};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("system.info"),
            Just("*"),
            Just("task.*"),
            Just("https://x.com/h"),
            Just("http://127.0.0.1/")
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("url".to_string()),
        Just("events".to_string()),
        Just("secret".to_string()),
        Just("active".to_string()),
        Just("overlapSeconds".to_string()),
        Just("event".to_string()),
        Just("payload".to_string()),
        Just("tenant".to_string()),
        Just("id".to_string()),
        Just("timestamp".to_string()),
        "[0-9]{1,3}",
        "\\PC{0,6}",
    ]
}

/// An integer JavaScript would round, anywhere in `v`.
fn has_unsafe_integer(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            let max = webhooks::jsjson::MAX_SAFE_INTEGER;
            n.as_u64().is_some_and(|u| u > max) || n.as_i64().is_some_and(|i| i.unsigned_abs() > max)
        }
        Value::Array(items) => items.iter().any(has_unsafe_integer),
        Value::Object(map) => map.values().any(has_unsafe_integer),
        _ => false,
    }
}

/// Verification is async for the JWKS path; the HS256 path never waits, so a current-thread
/// runtime is enough.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

proptest! {
    #[test]
    fn event_decoder_never_panics_on_text(body in "\\PC{0,200}") {
        let _ = decode_event(&body, "m", 1);
        let _ = webhooks::jsjson::losses(body.as_bytes());
    }

    /// serde_json writes no duplicate keys and no lone surrogates, so the exactness check finds
    /// something exactly when an integer is beyond JavaScript's safe range, and names where.
    #[test]
    fn exactness_check_finds_exactly_the_unsafe_integers(v in arb_json()) {
        let found = webhooks::jsjson::losses(v.to_string().as_bytes());
        prop_assert_eq!(!found.is_empty(), has_unsafe_integer(&v), "{:?}", found);
        prop_assert!(found.iter().all(|l| l.message.ends_with("send it as a string")));
    }

    #[test]
    fn event_decoder_accepts_only_deliverable_events(v in arb_json()) {
        if let Ok((e, rendered)) = decode_event(&v.to_string(), "m", 1) {
            prop_assert!(!e.tenant.is_empty() && !e.tenant.contains('#'));
            prop_assert!(e.payload.is_object());
            prop_assert_eq!(rendered, webhooks::jsjson::to_string(&e.payload));
            prop_assert!(!e.id.as_str().is_empty());
        }
    }

    #[test]
    fn webhook_bodies_parse_to_valid_values_or_name_a_field(v in arb_json()) {
        match parse_create(&v, GUARDED) {
            Ok(w) => {
                prop_assert!(check_url(&w.url, GUARDED).is_ok());
                prop_assert!(!w.events.is_empty() && w.events.len() <= MAX_EVENTS);
                prop_assert!(w.events.iter().all(|e| EventFilter::parse(e).is_some()));
                let mut dedup = w.events.clone();
                dedup.sort();
                dedup.dedup();
                prop_assert_eq!(dedup.len(), w.events.len());
                prop_assert!(w.secret.as_ref().is_none_or(|s| !s.is_empty() && s.chars().count() <= MAX_SECRET_LEN));
            }
            Err(errors) => prop_assert!(!errors.is_empty() && errors.iter().all(|e| !e.message.is_empty())),
        }
        let _ = parse_update(&v, GUARDED);
        match webhooks::domain::parse_rotate(&v) {
            Ok(r) => {
                prop_assert!(r.overlap_s <= webhooks::domain::MAX_OVERLAP_S);
                prop_assert!(r.secret.as_ref().is_none_or(|s| !s.is_empty() && s.len() <= MAX_SECRET_LEN));
            }
            Err(errors) => prop_assert!(!errors.is_empty() && errors.iter().all(|e| !e.message.is_empty())),
        }
    }

    #[test]
    fn jwt_path_refuses_junk_without_panicking(token in "\\PC{0,300}", header in "\\PC{0,40}") {
        let v = JwtVerifier::new(b"k", Some("iss"), Some("aud"));
        prop_assert!(block_on(v.verify(&token)).is_err());
        let _ = block_on(v.verify_header(Some(&header)));
    }

    #[test]
    fn forged_algorithms_are_refused(alg in prop_oneof![Just("none"), Just("RS256"), Just("HS384"), Just("HS512"), Just("ES256"), Just("PS256"), Just("EdDSA")]) {
        use base64::Engine as _;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B;
        use hmac::{Hmac, Mac};
        let claims = json!({"sub": "a", "exp": webhooks::time::now_ms() / 1000 + 600});
        let input = format!("{}.{}", B.encode(json!({"alg": alg, "typ": "JWT"}).to_string()), B.encode(claims.to_string()));
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(b"k").expect("key");
        mac.update(input.as_bytes());
        let token = format!("{input}.{}", B.encode(mac.finalize().into_bytes()));
        prop_assert!(block_on(JwtVerifier::new(b"k", None, None).verify(&token)).is_err());
    }

    #[test]
    fn every_spelling_of_an_address_gets_the_same_verdict(raw in any::<u32>(), spelling in 0..5usize) {
        let ip = Ipv4Addr::from(raw);
        let o = ip.octets();
        let host = match spelling {
            0 => ip.to_string(),
            1 => raw.to_string(),
            2 => format!("0x{raw:x}"),
            3 => format!("0{:o}.0{:o}.0{:o}.0{:o}", o[0], o[1], o[2], o[3]),
            _ => format!("[::ffff:{ip}]"),
        };
        let verdict = check_url(&format!("http://{host}/hook"), GUARDED);
        let blocked = matches!(verdict, Err(TargetError::Blocked { .. }));
        prop_assert_eq!(blocked, forbidden_reason(ip.into()).is_some(), "{} -> {:?}", host, verdict);
    }

    #[test]
    fn json_writer_is_a_fixed_point(v in arb_json()) {
        let once = jsjson::to_vec(&v);
        let reparsed: Value = serde_json::from_slice(&once).expect("our output is JSON");
        prop_assert_eq!(jsjson::to_vec(&reparsed), once);
    }
}
