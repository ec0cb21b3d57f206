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

/// JavaScript's `Number.MAX_SAFE_INTEGER`: every integer up to it (and its negative) is a distinct
/// double; above it, neighbours collide (2^53 + 1 reads as 2^53).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
/// Deeper documents are left to `serde_json`, whose recursion limit (128) refuses them.
const MAX_DEPTH: usize = 128;
/// A document with more problems than this is reported by its first ones.
const MAX_FINDINGS: usize = 10;

/// Something in a JSON document that a JavaScript receiver would not get as it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    /// Where, from the document's root: `payload.items[2].id`, `payload["a b"]`; empty for the
    /// root itself.
    pub path: String,
    /// What would happen and what to send instead.
    pub message: String,
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Finds what `JSON.parse` would silently change in `bytes`: integers beyond
/// `MAX_SAFE_INTEGER` (they would arrive rounded), duplicate keys in one object (JavaScript keeps
/// the last), and lone UTF-16 surrogate escapes (`JSON.parse` accepts them, but they are not
/// Unicode text, so they cannot be stored or signed as UTF-8). `-0` is not one: it is delivered as
/// `0`, as `JSON.stringify` writes it, and `===` holds them equal.
///
/// Malformed JSON gives no findings: the parser that runs next reports the syntax error.
pub fn losses(bytes: &[u8]) -> Vec<Loss> {
    let mut scan = Scan {
        b: bytes,
        i: 0,
        found: Vec::new(),
    };
    let mut path = String::new();
    if scan.value(&mut path, 0).is_err() {
        return Vec::new();
    }
    scan.ws();
    if scan.i != bytes.len() {
        return Vec::new();
    }
    scan.found
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    found: Vec<Loss>,
}

/// Not JSON (or too deep): the parser that runs next says why.
struct Syntax;

impl Scan<'_> {
    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), Syntax> {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Syntax)
        }
    }

    fn report(&mut self, path: &str, message: String) {
        if self.found.len() < MAX_FINDINGS {
            self.found.push(Loss {
                path: path.to_string(),
                message,
            });
        }
    }

    fn value(&mut self, path: &mut String, depth: usize) -> Result<(), Syntax> {
        if depth > MAX_DEPTH {
            return Err(Syntax);
        }
        self.ws();
        match self.b.get(self.i) {
            Some(b'{') => self.object(path, depth),
            Some(b'[') => self.array(path, depth),
            Some(b'"') => self.string(path).map(drop),
            Some(b'-' | b'0'..=b'9') => self.number(path),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => Err(Syntax),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Syntax> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Syntax)
        }
    }

    fn object(&mut self, path: &mut String, depth: usize) -> Result<(), Syntax> {
        self.i += 1;
        let mut seen: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
        self.ws();
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            if self.b.get(self.i) != Some(&b'"') {
                return Err(Syntax);
            }
            let len = path.len();
            let key = self.string(path)?;
            push_key(path, &key);
            if !seen.insert(key) {
                let p = path.clone();
                self.report(
                    &p,
                    "this key appears more than once in its object; JavaScript keeps only the last, so the others would be lost: send it once".into(),
                );
            }
            self.eat(b':')?;
            self.value(path, depth + 1)?;
            path.truncate(len);
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Syntax),
            }
        }
    }

    fn array(&mut self, path: &mut String, depth: usize) -> Result<(), Syntax> {
        self.i += 1;
        self.ws();
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
            return Ok(());
        }
        let mut n = 0usize;
        loop {
            let len = path.len();
            path.push_str(&format!("[{n}]"));
            self.value(path, depth + 1)?;
            path.truncate(len);
            n += 1;
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Syntax),
            }
        }
    }

    fn number(&mut self, path: &str) -> Result<(), Syntax> {
        let start = self.i;
        let digits = |s: &mut Self| {
            let from = s.i;
            while s.b.get(s.i).is_some_and(u8::is_ascii_digit) {
                s.i += 1;
            }
            s.i - from
        };
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        let int_start = self.i;
        let int_len = digits(self);
        if int_len == 0 || (int_len > 1 && self.b[int_start] == b'0') {
            return Err(Syntax);
        }
        let mut integer = true;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            integer = false;
            if digits(self) == 0 {
                return Err(Syntax);
            }
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            integer = false;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return Err(Syntax);
            }
        }
        // Only integers written as such: a fraction or an exponent says "this is a double"
        // already, and every JavaScript receiver reads it as the same double we deliver.
        let text = &self.b[int_start..int_start + int_len];
        let beyond = int_len > 16
            || std::str::from_utf8(text)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .is_none_or(|n| n > MAX_SAFE_INTEGER);
        if integer && beyond {
            let literal = String::from_utf8_lossy(&self.b[start..self.i]).into_owned();
            let as_js = serde_json::from_str::<Value>(&literal)
                .map(|v| to_string(&v))
                .unwrap_or_default();
            self.report(
                path,
                format!(
                    "the integer {} is beyond what JavaScript represents exactly (±{MAX_SAFE_INTEGER}, Number.MAX_SAFE_INTEGER); receivers would read {as_js}: send it as a string",
                    truncated(&literal)
                ),
            );
        }
        Ok(())
    }

    /// A string token; returns its decoded bytes (keys are compared decoded: `"a"` and
    /// `"\u0061"` are the same key).
    fn string(&mut self, path: &str) -> Result<Vec<u8>, Syntax> {
        self.i += 1;
        let mut out = Vec::new();
        let mut lone = None;
        loop {
            let c = *self.b.get(self.i).ok_or(Syntax)?;
            self.i += 1;
            match c {
                b'"' => break,
                0x00..=0x1f => return Err(Syntax),
                b'\\' => {
                    let e = *self.b.get(self.i).ok_or(Syntax)?;
                    self.i += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let ch = if (0xD800..0xDC00).contains(&hi) && self.b[self.i..].starts_with(b"\\u") {
                                let save = self.i;
                                self.i += 2;
                                let lo = self.hex4()?;
                                if (0xDC00..0xE000).contains(&lo) {
                                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                                } else {
                                    self.i = save;
                                    None
                                }
                            } else {
                                char::from_u32(hi)
                            };
                            match ch {
                                Some(ch) => out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes()),
                                None => {
                                    lone.get_or_insert(hi);
                                    // Keys with different lone surrogates stay different.
                                    out.extend_from_slice(format!("\\u{hi:04x}").as_bytes());
                                }
                            }
                        }
                        _ => return Err(Syntax),
                    }
                }
                _ => out.push(c),
            }
        }
        if let Some(unit) = lone {
            self.report(
                path,
                format!(
                    "the string has \\u{unit:04x}, a lone UTF-16 surrogate: JavaScript's JSON.parse accepts it, but it is not a Unicode character and cannot be carried as UTF-8, so it cannot be delivered as sent: send a complete surrogate pair, or leave it out"
                ),
            );
        }
        Ok(out)
    }

    fn hex4(&mut self) -> Result<u32, Syntax> {
        let h = self.b.get(self.i..self.i + 4).ok_or(Syntax)?;
        let s = std::str::from_utf8(h).map_err(|_| Syntax)?;
        let v = u32::from_str_radix(s, 16).map_err(|_| Syntax)?;
        self.i += 4;
        Ok(v)
    }
}

fn truncated(s: &str) -> String {
    if s.len() > 40 {
        format!("{}…", &s[..40])
    } else {
        s.to_string()
    }
}

/// `a.b` for identifier-like keys, `a["b c"]` otherwise (the key JSON-escaped).
fn push_key(path: &mut String, key: &[u8]) {
    let key = String::from_utf8_lossy(key);
    let ident = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if ident {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(&key);
    } else {
        let mut quoted = Vec::new();
        write_string(&mut quoted, &key);
        path.push('[');
        path.push_str(&String::from_utf8_lossy(&quoted));
        path.push(']');
    }
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

    fn found(input: &str) -> Vec<String> {
        losses(input.as_bytes()).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn finds_what_javascript_would_change() {
        assert_eq!(
            found(r#"{"payload":{"id":12345678901234567890,"ok":9007199254740991,"neg":-9007199254740991}}"#),
            vec![
                "payload.id: the integer 12345678901234567890 is beyond what JavaScript represents exactly (±9007199254740991, Number.MAX_SAFE_INTEGER); receivers would read 12345678901234567000: send it as a string"
            ]
        );
        let f = found(r#"{"a":[1,{"n":-9007199254740992}],"b c":{"x":1,"\u0078":2},"s":"\ud800 and \udc00"}"#);
        assert_eq!(f.len(), 3, "{f:?}");
        assert!(f[0].starts_with("a[1].n: the integer -9007199254740992 "), "{}", f[0]);
        assert!(
            f[1].starts_with(r#"["b c"].x: this key appears more than once"#),
            "{}",
            f[1]
        );
        assert!(
            f[2].starts_with(r#"s: the string has \ud800, a lone UTF-16 surrogate"#),
            "{}",
            f[2]
        );
        // Doubles are doubles already, -0 is documented as 0, pairs are whole characters.
        assert!(
            found(r#"{"a":1.5e300,"b":12345678901234567890.0,"c":-0,"d":"\ud83d\ude00","e":{"x":{"x":1}}}"#).is_empty()
        );
        // Malformed input is the parser's to report.
        assert!(found(r#"{"a":12345678901234567890"#).is_empty());
        assert!(found(r#"{"a":01}"#).is_empty());
        assert!(found("[1] x").is_empty());
    }
}
