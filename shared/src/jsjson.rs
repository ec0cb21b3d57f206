//! JSON written exactly as JavaScript's `JSON.stringify` writes it.
//!
//! Receivers that follow the guide verify `JSON.stringify(req.body)`, not the raw bytes. For
//! both kinds of receiver to verify, the bytes we sign must be a fixed point of
//! `JSON.stringify(JSON.parse(bytes))`. That means ECMAScript number formatting (every number
//! is a double: `1.0` prints `1`, `1e21` prints `1e+21`, 2^64 loses its low digits), JavaScript's
//! property order (integer-like keys first, ascending, then the rest in insertion order) and
//! `JSON.stringify`'s string escapes.

use std::io::Write as _;

use serde_json::{Map, Number, Value};

/// Appends `value` to `out` as `JSON.stringify(value)` would print it.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(out, map),
    }
}

pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write_value(&mut out, value);
    out
}

pub fn to_string(value: &Value) -> String {
    String::from_utf8(to_vec(value)).unwrap_or_default()
}

fn write_object(out: &mut Vec<u8>, map: &Map<String, Value>) {
    out.push(b'{');
    let mut first = true;
    let mut emit = |out: &mut Vec<u8>, k: &str, v: &Value| {
        if !first {
            out.push(b',');
        }
        first = false;
        write_string(out, k);
        out.push(b':');
        write_value(out, v);
    };
    // Integer-like keys come first in ascending order in every JavaScript engine
    // (OrdinaryOwnPropertyKeys); the rest keep the order in which they were first seen.
    let mut indices: Vec<(u32, &String, &Value)> = map
        .iter()
        .filter_map(|(k, v)| array_index(k).map(|i| (i, k, v)))
        .collect();
    if !indices.is_empty() {
        indices.sort_unstable_by_key(|(i, _, _)| *i);
        for (_, k, v) in &indices {
            emit(out, k, v);
        }
    }
    for (k, v) in map {
        if indices.is_empty() || array_index(k).is_none() {
            emit(out, k, v);
        }
    }
    out.push(b'}');
}

/// `Some(n)` when `key` is a canonical array index: the decimal form of an integer below
/// 2^32 - 1, without sign or leading zeros.
fn array_index(key: &str) -> Option<u32> {
    let b = key.as_bytes();
    if b.is_empty() || b.len() > 10 || !b.iter().all(u8::is_ascii_digit) || (b.len() > 1 && b[0] == b'0') {
        return None;
    }
    let n: u64 = key.parse().ok()?;
    (n < u32::MAX as u64).then_some(n as u32)
}

fn write_number(out: &mut Vec<u8>, n: &Number) {
    // JavaScript has one number type: a double. Integers that fit are printed as such;
    // everything else goes through the ECMAScript Number::toString algorithm (ryu-js).
    if let Some(i) = n.as_i64().filter(|i| i.unsigned_abs() <= (1u64 << 53)) {
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{i}");
        return;
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if !f.is_finite() {
        out.extend_from_slice(b"null");
    } else if f == 0.0 {
        out.push(b'0');
    } else {
        let mut buf = ryu_js::Buffer::new();
        out.extend_from_slice(buf.format_finite(f).as_bytes());
    }
}

/// `JSON.stringify`'s string escapes: `"` and `\`, the short forms for \b \f \n \r \t, and
/// `\u00xx` (lowercase) for the other control characters. Everything else, non-ASCII and
/// `/` and U+2028 included, is written as it is.
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn js(input: &str) -> String {
        let v: Value = serde_json::from_str(input).expect("valid json");
        to_string(&v)
    }

    // Expected outputs are what node 20 prints for JSON.stringify(JSON.parse(input)).
    #[test]
    fn numbers_follow_ecmascript() {
        assert_eq!(
            js("[1.0,1.5,-0,-0.0,1e21,1e-7,123456789012345678901234567890]"),
            "[1,1.5,0,0,1e+21,1e-7,1.2345678901234568e+29]"
        );
        assert_eq!(
            js("[12345678901234567890,9007199254740993,-9007199254740993,0.1,100,1e2,2.5E-3]"),
            "[12345678901234567000,9007199254740992,-9007199254740992,0.1,100,100,0.0025]"
        );
        assert_eq!(
            js("[1e300, 5e-324, 0.000001, 1e-6, 123e18, 1.7976931348623157e308]"),
            "[1e+300,5e-324,0.000001,0.000001,123000000000000000000,1.7976931348623157e+308]"
        );
    }

    #[test]
    fn keys_follow_javascript_property_order() {
        assert_eq!(
            js(r#"{"b":1,"2":2,"a":3,"1":4,"01":5,"4294967295":6,"4294967294":7}"#),
            r#"{"1":4,"2":2,"4294967294":7,"b":1,"a":3,"01":5,"4294967295":6}"#
        );
        assert_eq!(js(r#"{"a":1,"b":2,"a":3}"#), r#"{"a":3,"b":2}"#);
        assert_eq!(js(r#"{"z":{"y":[{"x":1,"w":2}]}}"#), r#"{"z":{"y":[{"x":1,"w":2}]}}"#);
    }

    #[test]
    fn strings_follow_json_stringify() {
        assert_eq!(
            js(r#""a\"b\\c\/d\n\t\r\b\f\u0001\u001f\u007f""#),
            "\"a\\\"b\\\\c/d\\n\\t\\r\\b\\f\\u0001\\u001f\u{7f}\""
        );
        assert_eq!(js(r#""héllo \u2028 😀 \ud83d\ude00""#), "\"héllo \u{2028} 😀 😀\"");
    }
}
