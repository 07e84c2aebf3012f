//! The encoder: JSON text to the compact form, and the checks that decline a value the form
//! could not give back exactly (integers above `i64::MAX`, numbers whose `f64` would not
//! survive the trip, base64 strings and Buffers that are not canonical).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{Map, Value as Json};

use super::decoder::f64_text;
use super::keys::{KEYS, KEY_LITERAL};
use super::{COMPACT, T_ARR, T_B64, T_BUF, T_F64, T_FALSE, T_INT, T_NULL, T_OBJ, T_STR, T_TRUE};

/// The compact form of `value`, or `None` when it is not JSON (kept as given then), when the
/// compact form would not be smaller, or when it could not hold every value exactly:
///
/// - an integer above `i64::MAX` (`serde_json` reads it as a `u64`, which no tag holds);
/// - a number with a fraction or an exponent (or `-0`, or an integer beyond `u64`) that `serde_json`
///   reads as an `f64` unless that `f64` is both what a correctly rounding parser makes of the
///   number as written, and what `serde_json` reads back from the shortest spelling that
///   [`decode`] writes. `serde_json` (without its `float_roundtrip` feature) rounds some
///   decimals differently from `JSON.parse`, and so would change such a number on the trip.
///
/// Declining keeps such a value exactly as written.
///
/// [`decode`]: super::decode
pub fn encode(value: &[u8]) -> Option<Vec<u8>> {
    let out = compact(value)?;
    (out.len() < value.len()).then_some(out)
}

/// [`encode`] without the size test.
fn compact(value: &[u8]) -> Option<Vec<u8>> {
    if value.first() == Some(&COMPACT) {
        return None;
    }
    let json: Json = serde_json::from_slice(value).ok()?;
    let mut enc = Encoder {
        text: value,
        root: &json,
        numbers: None,
        seen: 0,
        out: Vec::with_capacity(value.len() / 2 + 8),
    };
    enc.out.push(COMPACT);
    enc.node(&json)?;
    Some(enc.out)
}

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn is_canonical_base64(s: &str) -> Option<Vec<u8>> {
    if s.len() < 12 || !s.len().is_multiple_of(4) {
        return None;
    }
    let bytes = STANDARD.decode(s).ok()?;
    (STANDARD.encode(&bytes) == s).then_some(bytes)
}

fn buffer_bytes(map: &Map<String, Json>) -> Option<Vec<u8>> {
    if map.len() != 2 {
        return None;
    }
    let mut it = map.iter();
    let (k1, v1) = it.next()?;
    let (k2, v2) = it.next()?;
    if k1 != "type" || v1.as_str() != Some("Buffer") || k2 != "data" {
        return None;
    }
    let data = v2.as_str()?;
    let bytes = STANDARD.decode(data).ok()?;
    (STANDARD.encode(&bytes) == data).then_some(bytes)
}

/// Whether a number written as `written`, which `serde_json` read as the `f64` `f`, comes back
/// from [`decode`] as the same number for `serde_json` and for a correctly rounding parser.
///
/// [`decode`]: super::decode
fn f64_is_exact(written: &str, f: f64) -> bool {
    let Ok(correct) = written.parse::<f64>() else {
        return false;
    };
    if correct.to_bits() != f.to_bits() {
        return false; // serde_json misrounded the text: JSON.parse reads another number
    }
    let Some(text) = f64_text(f) else {
        return false;
    };
    // the shortest spelling reads back as `f` in any correct parser; check serde_json too
    matches!(
        serde_json::from_slice::<Json>(&text),
        Ok(Json::Number(n)) if n.is_f64() && n.as_f64().map(f64::to_bits) == Some(f.to_bits())
    )
}

/// Byte ranges of the number tokens of valid JSON `text`, in order, and how many object members
/// it has (the `:` outside strings).
fn number_tokens(text: &[u8]) -> (Vec<(usize, usize)>, usize) {
    let mut numbers = Vec::new();
    let mut members = 0;
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        match b {
            b'"' => {
                i += 1;
                while let Some(&c) = text.get(i) {
                    i += if c == b'\\' { 2 } else { 1 };
                    if c == b'"' {
                        break;
                    }
                }
            }
            b':' => {
                members += 1;
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while text
                    .get(i)
                    .is_some_and(|c| matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                {
                    i += 1;
                }
                numbers.push((start, i));
            }
            _ => i += 1,
        }
    }
    (numbers, members)
}

/// How many numbers and object members `v` holds.
fn count(v: &Json, numbers: &mut usize, members: &mut usize) {
    match v {
        Json::Number(_) => *numbers += 1,
        Json::Array(items) => items.iter().for_each(|v| count(v, numbers, members)),
        Json::Object(map) => {
            *members += map.len();
            map.values().for_each(|v| count(v, numbers, members));
        }
        _ => {}
    }
}

struct Encoder<'a> {
    /// The JSON text `root` was read from.
    text: &'a [u8],
    root: &'a Json,
    /// Byte ranges of the number tokens of `text`, found when the first `f64` needs its spelling.
    numbers: Option<Vec<(usize, usize)>>,
    /// Numbers met so far (the next one's index in `numbers`).
    seen: usize,
    out: Vec<u8>,
}

impl Encoder<'_> {
    /// How the number at `index` (in document order) is written in the text; `None` when the
    /// numbers of the text and of the value do not pair up, which happens when an object repeats
    /// a key (the value keeps one of them, in another place).
    fn written(&mut self, index: usize) -> Option<&str> {
        if self.numbers.is_none() {
            let (tokens, members) = number_tokens(self.text);
            let (mut n, mut m) = (0, 0);
            count(self.root, &mut n, &mut m);
            if tokens.len() != n || members != m {
                return None;
            }
            self.numbers = Some(tokens);
        }
        let &(start, end) = self.numbers.as_ref()?.get(index)?;
        std::str::from_utf8(self.text.get(start..end)?).ok()
    }

    fn node(&mut self, v: &Json) -> Option<()> {
        match v {
            Json::Null => self.out.push(T_NULL),
            Json::Bool(false) => self.out.push(T_FALSE),
            Json::Bool(true) => self.out.push(T_TRUE),
            Json::Number(n) => {
                let index = self.seen;
                self.seen += 1;
                if let Some(i) = n.as_i64() {
                    self.out.push(T_INT);
                    varint(((i << 1) ^ (i >> 63)) as u64, &mut self.out);
                } else if n.is_f64() {
                    let f = n.as_f64()?;
                    if !f64_is_exact(self.written(index)?, f) {
                        return None;
                    }
                    self.out.push(T_F64);
                    self.out.extend_from_slice(&f.to_le_bytes());
                } else {
                    return None; // a u64 above i64::MAX
                }
            }
            Json::String(s) => match is_canonical_base64(s) {
                Some(bytes) => {
                    self.out.push(T_B64);
                    varint(bytes.len() as u64, &mut self.out);
                    self.out.extend_from_slice(&bytes);
                }
                None => {
                    self.out.push(T_STR);
                    varint(s.len() as u64, &mut self.out);
                    self.out.extend_from_slice(s.as_bytes());
                }
            },
            Json::Array(items) => {
                self.out.push(T_ARR);
                varint(items.len() as u64, &mut self.out);
                for item in items {
                    self.node(item)?;
                }
            }
            Json::Object(map) => {
                if let Some(bytes) = buffer_bytes(map) {
                    self.out.push(T_BUF);
                    varint(bytes.len() as u64, &mut self.out);
                    self.out.extend_from_slice(&bytes);
                    return Some(());
                }
                self.out.push(T_OBJ);
                varint(map.len() as u64, &mut self.out);
                for (k, v) in map {
                    match KEYS.iter().position(|known| known == k) {
                        Some(i) => self.out.push(i as u8),
                        None => {
                            self.out.push(KEY_LITERAL);
                            varint(k.len() as u64, &mut self.out);
                            self.out.extend_from_slice(k.as_bytes());
                        }
                    }
                    self.node(v)?;
                }
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, store_form};
    use proptest::prelude::*;

    /// Equal as `serde_json` values and more: objects in the same key order, numbers of the same
    /// kind (`u64`, `i64` or `f64`), floats bit for bit (`-0.0` is not `0.0`).
    fn same(a: &Json, b: &Json) -> bool {
        match (a, b) {
            (Json::Number(x), Json::Number(y)) => {
                match (x.as_u64(), x.as_i64(), y.as_u64(), y.as_i64()) {
                    (Some(p), _, Some(q), _) => p == q,
                    (None, Some(p), None, Some(q)) => p == q,
                    (None, None, None, None) => {
                        x.as_f64().map(f64::to_bits) == y.as_f64().map(f64::to_bits)
                    }
                    _ => false,
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

    /// The number tokens of JSON text, as written (an implementation apart from the encoder's).
    fn numbers_in(text: &str) -> Vec<&str> {
        let (mut found, mut in_str, mut escaped, mut start) = (Vec::new(), false, false, None);
        for (i, c) in text.char_indices().chain([(text.len(), ' ')]) {
            if in_str {
                (in_str, escaped) = (escaped || c != '"', !escaped && c == '\\');
                continue;
            }
            match start {
                None if c == '-' || c.is_ascii_digit() => start = Some(i),
                Some(s) if !(c.is_ascii_digit() || "+-.eE".contains(c)) => {
                    found.push(&text[s..i]);
                    start = None;
                }
                _ => {}
            }
            in_str = c == '"';
        }
        found
    }

    /// Whether an object in `v` is written with a repeated key in `text`: then the text holds
    /// more members than the value.
    fn has_repeated_keys(text: &str, v: &Json) -> bool {
        fn members(v: &Json) -> usize {
            match v {
                Json::Array(a) => a.iter().map(members).sum(),
                Json::Object(m) => m.len() + m.values().map(members).sum::<usize>(),
                _ => 0,
            }
        }
        let written = serde_json::from_str::<serde::de::IgnoredAny>(text).map(|_| ());
        assert!(written.is_ok());
        let colons = {
            let mut n = 0;
            let (mut in_str, mut escaped) = (false, false);
            for c in text.chars() {
                if in_str {
                    (in_str, escaped) = (escaped || c != '"', !escaped && c == '\\');
                } else if c == '"' {
                    in_str = true;
                } else if c == ':' {
                    n += 1;
                }
            }
            n
        };
        colons != members(v)
    }

    /// Checks the codec's promise for JSON `text`: not compacted, or decoded to text that reads
    /// as the same value, for serde_json and (numbers) for a correctly rounding parser.
    fn check_exact(text: &str) -> Option<Vec<u8>> {
        let given: Json = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => {
                assert!(compact(text.as_bytes()).is_none());
                return None;
            }
        };
        let c = compact(text.as_bytes());
        if all_i64(&given) {
            assert!(
                c.is_some(),
                "declined although all numbers are integers: {text}"
            );
        }
        let c = c?;
        assert_eq!(c[0], COMPACT);
        let back = decode(&c).unwrap();
        let back = std::str::from_utf8(&back).unwrap();
        let read: Json = serde_json::from_str(back).unwrap();
        assert!(same(&given, &read), "{text}\n became {back}");
        if !has_repeated_keys(text, &given) {
            let (a, b) = (numbers_in(text), numbers_in(back));
            assert_eq!(a.len(), b.len(), "{text}\n became {back}");
            for (x, y) in a.iter().zip(&b) {
                let (x, y) = (x.parse::<f64>().unwrap(), y.parse::<f64>().unwrap());
                assert_eq!(x.to_bits(), y.to_bits(), "{text}\n became {back}");
            }
        }
        // and through the store's entry point
        let stored = store_form(text.as_bytes(), true).unwrap_or_else(|| text.as_bytes().to_vec());
        let read: Json = serde_json::from_slice(&decode(&stored).unwrap()).unwrap();
        assert!(same(&given, &read));
        Some(c)
    }

    fn all_i64(v: &Json) -> bool {
        match v {
            Json::Number(n) => n.as_i64().is_some(),
            Json::Array(a) => a.iter().all(all_i64),
            Json::Object(m) => m.values().all(all_i64),
            _ => true,
        }
    }

    fn round_trip(text: &str) -> Vec<u8> {
        // kept as text when the compact form would not be smaller
        let c = encode(text.as_bytes()).unwrap_or_else(|| text.as_bytes().to_vec());
        let back = decode(&c).unwrap();
        let a: Json = serde_json::from_str(text).unwrap();
        let b: Json = serde_json::from_slice(&back).unwrap();
        assert!(same(&a, &b), "{}", String::from_utf8_lossy(&back));
        check_exact(text);
        c
    }

    #[test]
    fn pre_keys_shrink_to_about_their_key_material() {
        let pk = r#"{"public":{"type":"Buffer","data":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="},"private":{"type":"Buffer","data":"AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="}}"#;
        let c = round_trip(pk);
        assert_eq!(c[0], COMPACT);
        assert!(c.len() <= 73, "{} bytes of {}", c.len(), pk.len());
        assert_eq!(
            decode(&c).unwrap(),
            pk.as_bytes(),
            "same text, same key order"
        );
    }

    #[test]
    fn every_json_shape_round_trips() {
        round_trip(
            r#"{"a":null,"b":[true,false,1,-7,1700000000000,0.5,-1e-7,"x"],"c":{"d":"é\"\n"}}"#,
        );
        round_trip(
            r#"[{"type":"Buffer","data":""},{"type":"Buffer","data":"AQI="},{"type":"Buf"}]"#,
        );
        round_trip(
            r#"{"_sessions":{"BT9hFXM4GKL6tnR2ud2f4Hr+12K4kh4tNIKp6VYZ8qkf":{"registrationId":105}},"version":"v1"}"#,
        );
        round_trip(r#"{"5511999@s.whatsapp.net":true,"not base64 at all":"hello world!"}"#);
        round_trip(r#""a string value""#);
        // a non-canonical base64 string stays a string
        round_trip(r#"{"k":"AQIDBAUGBwgJCgsM","j":"AQIDBAUGBwgJCgs="}"#);
        // key order is kept, known and unknown keys alike
        let c = round_trip(r#"{"z":1,"type":2,"a":3,"data":{"y":4,"b":5}}"#);
        assert_eq!(
            decode(&c).unwrap(),
            br#"{"z":1,"type":2,"a":3,"data":{"y":4,"b":5}}"#
        );
    }

    /// A value around `n` big enough for its compact form to be smaller than its text.
    fn holding(n: &str) -> String {
        format!(
            r#"{{"registrationId":{n},"signedPreKey":{{"type":"Buffer","data":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="}}}}"#
        )
    }

    #[test]
    fn numbers_come_back_exactly_or_the_value_is_kept_as_text() {
        let compacted = [
            "0",
            "-1",
            "9223372036854775807",
            "-9223372036854775808",
            "-0",
            "-0.0",
            "0.0",
            "1e21",
            "1E2",
            "1e+2",
            "0.1",
            "0.30000000000000004",
            "5e-324",
            "4.9406564584124654e-324",
            "2.2250738585072014e-308",
            "1.7976931348623157e308",
            "-1.7976931348623157e308",
            "1e-400",
            "-9223372036854775809",
            "18446744073709551616",
            "123456789012345678901234567890",
        ];
        for n in compacted {
            let text = holding(n);
            assert!(check_exact(&text).is_some(), "{n} should be compacted");
            assert!(encode(text.as_bytes()).is_some(), "{n} should be compacted");
        }
        let c = check_exact(&holding("-0")).unwrap();
        let back: Json = serde_json::from_slice(&decode(&c).unwrap()).unwrap();
        assert!(back["registrationId"].as_f64().unwrap().is_sign_negative());

        let kept = [
            // u64 above i64::MAX: no tag holds it (it used to come back as a float)
            "9223372036854775808",
            "18446744073709551615",
            // serde_json reads 9007199254740994, JSON.parse 9007199254740992
            "9007199254740993.0",
            "2.2250738585072011e-308",
            // serde_json reads it right, but not the shortest spelling decode would write
            "8144.00654060743450",
            "924.94021924356729869032",
            // shortest spellings that serde_json misreads
            "98770.55461952741",
            "98184.66503200543",
        ];
        for n in kept {
            let text = holding(n);
            assert!(check_exact(&text).is_none(), "{n} must be kept as text");
            assert_eq!(store_form(text.as_bytes(), true), None, "{n}");
        }
        assert!(encode(b"1e400").is_none(), "not a number serde_json reads");
    }

    #[test]
    fn repeated_keys_keep_numbers_apart() {
        // serde_json keeps the last value in the first key's place: the numbers of the text no
        // longer pair with the value's, so a value with a float and a repeated key is kept
        for text in [
            r#"{"a":"x","b":0.5,"a":0.25,"c":{"type":"Buffer","data":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB"}}"#,
            r#"{"a":0.5,"b":1,"a":{"c":0.25},"d":{"type":"Buffer","data":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB"}}"#,
        ] {
            assert!(check_exact(text).is_none(), "{text}");
        }
        // without floats the value is compacted as serde_json reads it
        let c = check_exact(
            r#"{"a":"x","b":5,"a":7,"c":{"type":"Buffer","data":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB"}}"#,
        )
        .unwrap();
        assert!(decode(&c).unwrap().starts_with(br#"{"a":7,"b":5,"#));
    }

    #[test]
    fn the_deepest_json_round_trips() {
        let mut depth = 1;
        while serde_json::from_str::<Json>(&format!(
            "{}1{}",
            "[".repeat(depth + 1),
            "]".repeat(depth + 1)
        ))
        .is_ok()
        {
            depth += 1;
        }
        let text = format!("{}0.5{}", "[".repeat(depth), "]".repeat(depth));
        let c = check_exact(&text).unwrap();
        assert_eq!(decode(&c).unwrap(), text.as_bytes());
    }

    /// A JSON tree whose numbers are kept as written.
    #[derive(Clone, Debug)]
    enum Tree {
        Null,
        Bool(bool),
        Num(String),
        Str(String),
        Arr(Vec<Tree>),
        Obj(Vec<(String, Tree)>),
    }

    fn write_str(s: &str, ascii: bool, out: &mut String) {
        if !ascii {
            out.push_str(&serde_json::to_string(s).unwrap());
            return;
        }
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                ' '..='~' => out.push(c),
                _ => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{u:04x}"));
                    }
                }
            }
        }
        out.push('"');
    }

    fn write_tree(t: &Tree, ascii: bool, out: &mut String) {
        match t {
            Tree::Null => out.push_str("null"),
            Tree::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Tree::Num(n) => out.push_str(n),
            Tree::Str(s) => write_str(s, ascii, out),
            Tree::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(if ascii { ", " } else { "," });
                    }
                    write_tree(item, ascii, out);
                }
                out.push(']');
            }
            Tree::Obj(members) => {
                out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(k, ascii, out);
                    out.push_str(if ascii { " : " } else { ":" });
                    write_tree(v, ascii, out);
                }
                out.push('}');
            }
        }
    }

    fn number() -> impl Strategy<Value = String> {
        let finite = any::<f64>().prop_filter("finite", |f| f.is_finite());
        prop_oneof![
            any::<i64>().prop_map(|i| i.to_string()),
            any::<u64>().prop_map(|u| u.to_string()),
            (0u32..2000).prop_map(|u| u.to_string()),
            finite
                .clone()
                .prop_map(|f| String::from_utf8(f64_text(f).unwrap()).unwrap()),
            finite.clone().prop_map(|f| format!("{f:e}")),
            finite.prop_map(|f| format!("{f}")),
            (-1000.0f64..1000.0).prop_map(|f| format!("{f}")),
            (any::<i32>(), 0u32..6)
                .prop_map(|(i, d)| format!("{}", f64::from(i) / 10f64.powi(d as i32))),
            "-?(0|[1-9][0-9]{0,24})(\\.[0-9]{1,22})?([eE][+-]?[0-9]{1,3})?",
            prop::sample::select(
                &[
                    "-0",
                    "-0.0",
                    "0.0",
                    "1e21",
                    "1e22",
                    "1e23",
                    "5e-324",
                    "-5e-324",
                    "1.7976931348623157e308",
                    "1.7976931348623158e308",
                    "2.2250738585072011e-308",
                    "9223372036854775807",
                    "9223372036854775808",
                    "-9223372036854775808",
                    "-9223372036854775809",
                    "18446744073709551615",
                    "18446744073709551616",
                    "9007199254740993",
                    "9007199254740993.0",
                    "0.30000000000000004",
                    "1e-400",
                    "1e400",
                    "8144.00654060743450",
                    "629.3592588076389",
                ][..]
            )
            .prop_map(str::to_owned),
        ]
    }

    fn base64ish() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..48).prop_map(|b| STANDARD.encode(b)),
            // one character off canonical: padding bits set, a wrong length, a bad character
            (
                prop::collection::vec(any::<u8>(), 9..40),
                0usize..3,
                any::<prop::sample::Index>()
            )
                .prop_map(|(b, how, at)| {
                    let mut s = STANDARD.encode(b).into_bytes();
                    let i = at.index(s.len());
                    match how {
                        0 => s[i] = b'-',
                        1 => {
                            s.remove(i);
                        }
                        _ => {
                            let last = s.iter().rposition(|&c| c != b'=').unwrap();
                            s[last] = if s[last] == b'A' { b'B' } else { b'A' };
                        }
                    }
                    String::from_utf8(s).unwrap()
                }),
        ]
    }

    fn string() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "\\PC{0,16}",
            base64ish(),
            prop::sample::select(KEYS).prop_map(str::to_owned),
            Just("Buffer".to_owned()),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(KEYS).prop_map(str::to_owned),
            1 => "[a-z]{1,3}",
            1 => any::<String>(),
        ]
    }

    fn buffer() -> impl Strategy<Value = Tree> {
        (prop::collection::vec(any::<u8>(), 0..40), any::<bool>()).prop_map(|(b, canonical)| {
            let mut data = STANDARD.encode(b);
            if !canonical {
                data.push('=');
            }
            Tree::Obj(vec![
                ("type".into(), Tree::Str("Buffer".into())),
                ("data".into(), Tree::Str(data)),
            ])
        })
    }

    fn tree() -> impl Strategy<Value = Tree> {
        let leaf = prop_oneof![
            1 => Just(Tree::Null),
            1 => any::<bool>().prop_map(Tree::Bool),
            3 => number().prop_map(Tree::Num),
            3 => string().prop_map(Tree::Str),
            2 => buffer(),
        ];
        leaf.prop_recursive(5, 96, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Tree::Arr),
                prop::collection::vec((key(), inner), 0..8).prop_map(Tree::Obj),
            ]
        })
    }

    proptest! {
        // 256 cases unless PROPTEST_CASES says otherwise; failures are printed, not saved
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn any_json_comes_back_exactly_or_is_kept(t in tree(), ascii in any::<bool>()) {
            let mut text = String::new();
            write_tree(&t, ascii, &mut text);
            check_exact(&text);
        }
    }
}
