//! Checks shared by the codec fuzz targets.

#![allow(dead_code)]

use serde_json::Value as Json;
use wa_auth_core::codec;

/// Equal as `serde_json` values and more: objects in the same key order, numbers of the same kind
/// (`u64`, `i64` or `f64`), floats bit for bit (`-0.0` is not `0.0`).
pub fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => {
            if x.is_u64() || y.is_u64() {
                x.as_u64().is_some() && x.as_u64() == y.as_u64()
            } else if x.is_i64() || y.is_i64() {
                x.as_i64().is_some() && x.as_i64() == y.as_i64()
            } else {
                x.as_f64().map(f64::to_bits) == y.as_f64().map(f64::to_bits)
            }
        }
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, a), (kb, b))| ka == kb && same(a, b))
        }
        _ => a == b,
    }
}

/// The number tokens of valid JSON text as written, and its count of object members.
pub fn tokens(text: &str) -> (Vec<&str>, usize) {
    let b = text.as_bytes();
    let (mut numbers, mut members, mut i) = (Vec::new(), 0, 0);
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b':' => {
                members += 1;
                i += 1;
            }
            c if c == b'-' || c.is_ascii_digit() => {
                let start = i;
                while i < b.len() && matches!(b[i], b'0'..=b'9' | b'+' | b'-' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                numbers.push(&text[start..i]);
            }
            _ => i += 1,
        }
    }
    (numbers, members)
}

fn members(v: &Json) -> usize {
    match v {
        Json::Array(a) => a.iter().map(members).sum(),
        Json::Object(m) => m.len() + m.values().map(members).sum::<usize>(),
        _ => 0,
    }
}

/// The codec's promise for the value `text`: the store keeps it as given, or in a compact form
/// that decodes to text reading as the same value for serde_json (kinds, key order and float bits
/// included) and, number by number, for a correctly rounding parser such as `JSON.parse`.
pub fn check_round_trip(text: &str) {
    let stored = codec::store_form(text.as_bytes(), true);
    let given: Json = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => {
            assert!(
                codec::encode(text.as_bytes()).is_none(),
                "not JSON but compacted"
            );
            let s = stored.as_deref().unwrap_or(text.as_bytes());
            assert_eq!(codec::decode(s).unwrap(), text.as_bytes());
            return;
        }
    };
    assert_eq!(stored, codec::encode(text.as_bytes()));
    let Some(c) = stored else {
        return;
    };
    assert_eq!(c[0], codec::COMPACT);
    assert!(c.len() < text.len());
    let back = codec::decode(&c).expect("a compact form made by encode decodes");
    let back = std::str::from_utf8(&back).expect("decoded text is UTF-8");
    let read: Json = serde_json::from_str(back).expect("decoded text is JSON");
    assert!(same(&given, &read), "value changed:\n{text}\n{back}");
    let (written, written_members) = tokens(text);
    if written_members == members(&given) {
        // no repeated keys: the numbers of both texts pair up
        let (decoded, _) = tokens(back);
        assert_eq!(written.len(), decoded.len(), "{text}\n{back}");
        for (x, y) in written.iter().zip(&decoded) {
            let (p, q) = (x.parse::<f64>().unwrap(), y.parse::<f64>().unwrap());
            assert_eq!(p.to_bits(), q.to_bits(), "number {x} came back as {y}");
        }
    }
}

/// Error messages of `codec::decode`: fixed words and numbers only, never stored content.
pub fn check_error_message(msg: &str) {
    const TEMPLATES: &[&str] = &[
        "compact value is damaged at byte #: truncated",
        "compact value is damaged at byte #: # trailing bytes",
        "compact value is damaged at byte #: varint longer than # bytes",
        "compact value is damaged at byte #: length # but only # bytes follow",
        "compact value is damaged at byte #: string of # bytes is not UTF-#",
        "compact value is damaged at byte #: nested deeper than # levels",
        "compact value is damaged at byte #: number is not finite",
        "compact value is damaged at byte #: unknown key reference #",
        "compact value is damaged at byte #: unknown tag #",
    ];
    let mut shape = String::new();
    for c in msg.chars() {
        if c.is_ascii_digit() {
            if !shape.ends_with('#') {
                shape.push('#');
            }
        } else {
            shape.push(c);
        }
    }
    assert!(
        TEMPLATES.contains(&shape.as_str()),
        "unexpected error message: {msg}"
    );
}
