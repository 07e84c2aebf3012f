//! Compact stored form of Baileys' values (header byte `0x01`).
//!
//! Baileys' values arrive as UTF-8 JSON in its BufferJSON convention, where every Buffer is
//! `{"type":"Buffer","data":"<base64>"}` and libsignal's session records hold base64 strings.
//! The compact form is a tagged binary tree of the same JSON: Buffers and canonical base64 strings
//! as raw bytes, the object keys Baileys and libsignal use as one-byte references, integers as
//! varints. It decodes back to JSON with the same values (and the same key order).
//!
//! "The same values" is exact: the decoded text parses, with `serde_json` (as this crate builds
//! it) and with any correctly rounding JSON parser such as `JSON.parse`, to the same value as the
//! text that was given, numbers bit for bit (`-0` stays `-0`, an integer stays an integer). The
//! decoded text may spell a value differently (`1E2` comes back as `100.0`, `"\u0041"` as `"A"`).
//! A value that this form cannot hold exactly is not compacted ([`encode`] declines and the text
//! is stored as it is): integers above `i64::MAX`, and numbers read as an `f64` (a fraction, an
//! exponent, `-0`, an integer beyond `u64`) that would not survive the trip through that `f64` and
//! its shortest spelling (see [`encode`]).
//!
//! Stored bytes that start with `0x01` are compact; anything else is kept and returned as it was
//! given (JSON text never starts with a control byte), so values written before this format, or
//! values that are not JSON, stay readable. `0x02` marks a value kept verbatim because it began
//! with a header byte itself, and `0x03` a sealed value (`crate::crypto`, opened before this
//! form is decoded).
//!
//! ```text
//! value   = 0x01 node
//! node    = 0x00 null | 0x01 false | 0x02 true
//!         | 0x03 varint(zigzag i64)          integer
//!         | 0x04 f64 (8 bytes, little end.)  other number (written in its shortest spelling)
//!         | 0x05 varint(len) utf8            string
//!         | 0x06 varint(len) bytes           {"type":"Buffer","data":"<base64 of bytes>"}
//!         | 0x07 varint(n) node*n            array
//!         | 0x08 varint(n) (key node)*n      object, keys in order
//!         | 0x09 varint(len) bytes           a string that is the canonical base64 of bytes
//! key     = byte < 0x80: index into KEYS | 0xFF varint(len) utf8
//! ```

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{Map, Number, Value as Json};

use crate::error::{Error, Result};

/// First byte of a compact value.
pub const COMPACT: u8 = 0x01;
/// First byte of a value stored verbatim behind a header, because it itself began with a header
/// byte (never JSON text): keeps the store opaque to any bytes.
pub const VERBATIM: u8 = 0x02;

/// What to store for `value`: its compact form when `compact` and that is smaller, else the
/// value itself (behind [`VERBATIM`] if it begins with a header byte: [`COMPACT`], [`VERBATIM`]
/// or the sealed header [`crate::crypto::SEALED`], so no plain stored value looks sealed).
pub fn store_form(value: &[u8], compact: bool) -> Option<Vec<u8>> {
    match value.first() {
        Some(&COMPACT) | Some(&VERBATIM) | Some(&crate::crypto::SEALED) => {
            let mut out = Vec::with_capacity(value.len() + 1);
            out.push(VERBATIM);
            out.extend_from_slice(value);
            Some(out)
        }
        _ if compact => encode(value),
        _ => None,
    }
}

/// Object keys of Baileys' creds and keys and of libsignal's records. Append only: an index,
/// once written, must keep its meaning.
const KEYS: &[&str] = &[
    "type",
    "data",
    "public",
    "private",
    "_sessions",
    "registrationId",
    "currentRatchet",
    "ephemeralKeyPair",
    "pubKey",
    "privKey",
    "lastRemoteEphemeralKey",
    "previousCounter",
    "rootKey",
    "indexInfo",
    "baseKey",
    "baseKeyType",
    "closed",
    "used",
    "created",
    "remoteIdentityKey",
    "_chains",
    "chainKey",
    "counter",
    "key",
    "chainType",
    "messageKeys",
    "version",
    "keyData",
    "fingerprint",
    "rawId",
    "currentIndex",
    "deviceIndexes",
    "timestamp",
    "hash",
    "indexValueMap",
    "valueMac",
    "token",
    "senderTimestamp",
    "senderKeyId",
    "senderChainKey",
    "iteration",
    "seed",
    "senderSigningKey",
    "senderMessageKeys",
    "noiseKey",
    "pairingEphemeralKeyPair",
    "signedIdentityKey",
    "signedPreKey",
    "keyPair",
    "signature",
    "keyId",
    "advSecretKey",
    "processedHistoryMessages",
    "nextPreKeyId",
    "firstUnuploadedPreKeyId",
    "accountSyncCounter",
    "accountSettings",
    "unarchiveChats",
    "registered",
    "pairingCode",
    "me",
    "id",
    "name",
    "lid",
    "account",
    "details",
    "accountSignatureKey",
    "accountSignature",
    "deviceSignature",
    "signalIdentities",
    "identifier",
    "deviceId",
    "identifierKey",
    "platform",
    "routingInfo",
    "lastAccountSyncTimestamp",
    "myAppStateKeyId",
    "additionalData",
    "lastPropHash",
    "pendingPreKey",
    "preKeyId",
    "signedKeyId",
    "verifiedName",
    "notify",
];

const T_NULL: u8 = 0;
const T_FALSE: u8 = 1;
const T_TRUE: u8 = 2;
const T_INT: u8 = 3;
const T_F64: u8 = 4;
const T_STR: u8 = 5;
const T_BUF: u8 = 6;
const T_ARR: u8 = 7;
const T_OBJ: u8 = 8;
const T_B64: u8 = 9;
const KEY_LITERAL: u8 = 0xFF;

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

/// The JSON text [`decode`] writes for an `f64` (its shortest spelling), `None` if not finite.
fn f64_text(f: f64) -> Option<Vec<u8>> {
    serde_json::to_vec(&Number::from_f64(f)?).ok()
}

/// Whether a number written as `written`, which `serde_json` read as the `f64` `f`, comes back
/// from [`decode`] as the same number for `serde_json` and for a correctly rounding parser.
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

/// The JSON text of a stored value: compact values are expanded, verbatim ones unwrapped, others
/// returned as they are.
///
/// A damaged compact value is an [`Error::CorruptValue`] whose message names only offsets,
/// lengths, counts and tag numbers, never stored bytes or text (they may be key material).
pub fn decode(stored: &[u8]) -> Result<Vec<u8>> {
    match stored.first() {
        Some(&COMPACT) => {}
        Some(&VERBATIM) => return Ok(stored[1..].to_vec()),
        _ => return Ok(stored.to_vec()),
    }
    let mut r = Reader { b: stored, at: 1 };
    let mut out = Vec::with_capacity(stored.len() * 2);
    r.node(&mut out, 0)?;
    if r.at != stored.len() {
        return Err(corrupt(
            r.at,
            format_args!("{} trailing bytes", stored.len() - r.at),
        ));
    }
    Ok(out)
}

/// The error for damage found at byte `at`; `what` must name no stored content.
fn corrupt(at: usize, what: std::fmt::Arguments<'_>) -> Error {
    Error::CorruptValue(format!("compact value is damaged at byte {at}: {what}"))
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

/// Nesting deeper than this is refused (JSON from Baileys is a few levels deep).
const MAX_DEPTH: usize = 128;

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8> {
        let b = *self
            .b
            .get(self.at)
            .ok_or_else(|| corrupt(self.at, format_args!("truncated")))?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64> {
        let start = self.at;
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(n);
            }
        }
        Err(corrupt(start, format_args!("varint longer than 10 bytes")))
    }

    fn bytes(&mut self) -> Result<&[u8]> {
        let start = self.at;
        let len = self.varint()?;
        let left = self.b.len() - self.at;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= left)
            .ok_or_else(|| {
                corrupt(
                    start,
                    format_args!("length {len} but only {left} bytes follow"),
                )
            })?;
        let s = &self.b[self.at..self.at + len];
        self.at += len;
        Ok(s)
    }

    fn str(&mut self) -> Result<&str> {
        let start = self.at;
        let s = self.bytes()?;
        std::str::from_utf8(s).map_err(|_| {
            corrupt(
                start,
                format_args!("string of {} bytes is not UTF-8", s.len()),
            )
        })
    }

    fn json_str(out: &mut Vec<u8>, s: &str) {
        // serde_json escapes exactly as JSON requires; writing to a Vec cannot fail
        let _ = serde_json::to_writer(&mut *out, s);
    }

    fn node(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<()> {
        let at = self.at;
        if depth > MAX_DEPTH {
            return Err(corrupt(
                at,
                format_args!("nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        match self.byte()? {
            T_NULL => out.extend_from_slice(b"null"),
            T_FALSE => out.extend_from_slice(b"false"),
            T_TRUE => out.extend_from_slice(b"true"),
            T_INT => {
                let z = self.varint()?;
                let i = ((z >> 1) as i64) ^ -((z & 1) as i64);
                out.extend_from_slice(i.to_string().as_bytes());
            }
            T_F64 => {
                let mut eight = [0u8; 8];
                for b in &mut eight {
                    *b = self.byte()?;
                }
                let text = f64_text(f64::from_le_bytes(eight))
                    .ok_or_else(|| corrupt(at, format_args!("number is not finite")))?;
                out.extend_from_slice(&text);
            }
            T_STR => {
                let s = self.str()?;
                Self::json_str(out, s);
            }
            T_B64 => {
                let b64 = STANDARD.encode(self.bytes()?);
                out.push(b'"');
                out.extend_from_slice(b64.as_bytes());
                out.push(b'"');
            }
            T_BUF => {
                let b64 = STANDARD.encode(self.bytes()?);
                out.extend_from_slice(br#"{"type":"Buffer","data":""#);
                out.extend_from_slice(b64.as_bytes());
                out.extend_from_slice(br#""}"#);
            }
            T_ARR => {
                let n = self.varint()?;
                out.push(b'[');
                for i in 0..n {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.node(out, depth + 1)?;
                }
                out.push(b']');
            }
            T_OBJ => {
                let n = self.varint()?;
                out.push(b'{');
                for i in 0..n {
                    if i > 0 {
                        out.push(b',');
                    }
                    let key_at = self.at;
                    match self.byte()? {
                        KEY_LITERAL => {
                            let k = self.str()?;
                            Self::json_str(out, k);
                        }
                        idx => {
                            let k = KEYS.get(idx as usize).ok_or_else(|| {
                                corrupt(key_at, format_args!("unknown key reference {idx}"))
                            })?;
                            Self::json_str(out, k);
                        }
                    }
                    out.push(b':');
                    self.node(out, depth + 1)?;
                }
                out.push(b'}');
            }
            tag => return Err(corrupt(at, format_args!("unknown tag {tag}"))),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn non_json_and_old_values_pass_through() {
        assert!(encode(b"\x00\x01binary").is_none());
        assert!(encode(b"1").is_none(), "no gain, kept as text");
        assert_eq!(decode(b"{\"plain\":1}").unwrap(), b"{\"plain\":1}");
        assert_eq!(decode(b"").unwrap(), b"");
    }

    #[test]
    fn bytes_that_look_like_headers_are_kept_verbatim() {
        for v in [
            &[COMPACT, 9, 9][..],
            &[VERBATIM][..],
            &[VERBATIM, COMPACT][..],
            &[crate::crypto::SEALED, 1, 2][..],
        ] {
            let stored = store_form(v, true).unwrap();
            assert_eq!(stored[0], VERBATIM);
            assert_eq!(decode(&stored).unwrap(), v);
        }
        assert!(store_form(b"{\"a\":1}", false).is_none());
        assert!(store_form(b"\x00raw", true).is_none());
    }

    #[test]
    fn damage_is_an_error_not_garbage() {
        let c =
            encode(br#"{"public":{"type":"Buffer","data":"AQEBAQEBAQEBAQEBAQEBAQ=="}}"#).unwrap();
        for cut in 1..c.len() {
            assert_eq!(decode(&c[..cut]).unwrap_err().code(), "ERR_CORRUPT_VALUE");
        }
        assert!(decode(&[COMPACT, 0x42]).is_err());
        let mut deep = vec![COMPACT];
        deep.extend(std::iter::repeat_n([T_ARR, 1], 200).flatten());
        deep.push(T_NULL);
        assert!(decode(&deep).is_err());
        let mut nan = vec![COMPACT, T_F64];
        nan.extend_from_slice(&f64::NAN.to_le_bytes());
        assert!(decode(&nan).is_err());
        assert!(decode(&[
            COMPACT, T_INT, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01
        ])
        .is_err());
        assert!(decode(&[COMPACT, T_STR, 2, 0xC3, 0x28]).is_err());
        assert!(decode(&[COMPACT, T_OBJ, 1, 0x7F, T_NULL]).is_err());
        assert!(decode(&[COMPACT, T_NULL, T_NULL]).is_err());
    }

    #[test]
    fn damage_reports_name_no_stored_content() {
        const SECRET: &str = "SeCrEtKeyMaterial\u{e9}-7c4f";
        let secret_bytes: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37) ^ 0xA5).collect();
        let b64 = STANDARD.encode(&secret_bytes);
        let text = format!(
            r#"{{"{SECRET}":"{SECRET}","private":{{"type":"Buffer","data":"{b64}"}},"x":"{b64}","n":[1234567,0.125]}}"#
        );
        let good = encode(text.as_bytes()).unwrap();
        // every way of damaging it: cut, each byte set to a few values, bytes after it
        let mut damaged: Vec<Vec<u8>> = (1..good.len()).map(|cut| good[..cut].to_vec()).collect();
        for i in 1..good.len() {
            for v in [
                0x00,
                0x7F,
                0x80,
                0xC3,
                0xFE,
                0xFF,
                good[i] ^ 0x01,
                good[i].wrapping_add(9),
            ] {
                let mut d = good.clone();
                d[i] = v;
                damaged.push(d);
            }
        }
        damaged.push([&good[..], SECRET.as_bytes()].concat());
        let mut errors = 0;
        for d in &damaged {
            let Err(e) = decode(d) else { continue };
            errors += 1;
            assert_eq!(e.code(), "ERR_CORRUPT_VALUE");
            let msg = e.to_string();
            // only fixed words, offsets, lengths, counts and tag numbers
            let words: String = msg
                .chars()
                .map(|c| if c.is_ascii_digit() { '#' } else { c })
                .collect();
            let templates = [
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
            let collapsed = words
                .split('#')
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join("#");
            assert!(
                templates.iter().any(|t| t
                    .split('#')
                    .filter(|p| !p.is_empty())
                    .collect::<Vec<_>>()
                    .join("#")
                    == collapsed),
                "unexpected message: {msg}"
            );
            for needle in [&SECRET[..8], &b64[..8], "SeCr", "e9", "A5"] {
                assert!(!msg.contains(needle), "{msg}");
            }
        }
        assert!(errors > damaged.len() / 4, "{errors} of {}", damaged.len());
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

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut stored = vec![COMPACT];
            stored.extend(bytes);
            if let Ok(text) = decode(&stored) {
                prop_assert!(serde_json::from_slice::<serde::de::IgnoredAny>(&text).is_ok());
            }
        }
    }
}
