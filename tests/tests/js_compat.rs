//! The bytes we sign are what `JSON.stringify(JSON.parse(bytes))` prints for them, checked
//! against Node.js itself on thousands of generated documents (floats of every magnitude, big
//! integers, unicode and control characters, integer-like and duplicate-free keys in any order).

use std::io::Write;
use std::process::{Command, Stdio};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};
use webhooks::jsjson;

const CASES: usize = 3000;

fn string(rng: &mut StdRng) -> String {
    let pool = [
        'a', 'Z', '0', '"', '\\', '/', '\n', '\t', '\r', '\u{1}', '\u{1f}', '\u{7f}', 'é', '✓', '😀', '\u{2028}', ' ',
    ];
    (0..rng.random_range(0..8))
        .map(|_| pool[rng.random_range(0..pool.len())])
        .collect()
}

fn number(rng: &mut StdRng) -> Value {
    match rng.random_range(0..6) {
        0 => Value::from(rng.random::<i64>()),
        1 => Value::from(rng.random::<u64>()),
        2 => Value::from(rng.random_range(-1000i64..1000)),
        3 => serde_json::Number::from_f64(f64::from_bits(rng.random::<u64>()))
            .map(Value::Number)
            .unwrap_or(Value::Null),
        4 => serde_json::Number::from_f64(rng.random_range(-1e6..1e6))
            .map(Value::Number)
            .unwrap_or(Value::Null),
        _ => {
            let text = format!("{}e{}", rng.random_range(1..999), rng.random_range(-30..30));
            serde_json::from_str(&text).unwrap_or(Value::Null)
        }
    }
}

fn value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..if depth > 3 { 4 } else { 6 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => number(rng),
        3 => Value::String(string(rng)),
        4 => Value::Array((0..rng.random_range(0..5)).map(|_| value(rng, depth + 1)).collect()),
        _ => {
            let mut map = Map::new();
            for _ in 0..rng.random_range(0..6) {
                let key = match rng.random_range(0..3) {
                    0 => rng.random_range(0..20u32).to_string(),
                    1 => format!("0{}", rng.random_range(0..9)),
                    _ => string(rng),
                };
                map.insert(key, value(rng, depth + 1));
            }
            Value::Object(map)
        }
    }
}

#[test]
fn signed_bytes_are_what_node_prints() {
    let mut rng = StdRng::seed_from_u64(0x5eed_cafe);
    let docs: Vec<Vec<u8>> = (0..CASES).map(|_| jsjson::to_vec(&value(&mut rng, 0))).collect();
    let mut child = Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/node/stringify.js"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node must be installed (make test installs it)");
    let mut stdin = child.stdin.take().expect("stdin");
    let input: Vec<u8> = docs
        .iter()
        .flat_map(|d| d.iter().copied().chain(std::iter::once(b'\n')))
        .collect();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("node ran");
    writer.join().expect("writer").expect("wrote");
    let lines: Vec<&[u8]> = out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), CASES);
    for (ours, node) in docs.iter().zip(lines) {
        assert_eq!(String::from_utf8_lossy(ours), String::from_utf8_lossy(node));
    }
    println!("js-compat: {CASES} documents byte-identical to Node.js JSON.stringify");
}
