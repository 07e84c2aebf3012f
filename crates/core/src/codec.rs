//! Compact stored form of Baileys' values (header byte `0x01`).
//!
//! Baileys' values arrive as UTF-8 JSON in its BufferJSON convention, where every Buffer is
//! `{"type":"Buffer","data":"<base64>"}` and libsignal's session records hold base64 strings.
//! The compact form is a tagged binary tree of the same JSON: Buffers and canonical base64 strings
//! as raw bytes, the object keys Baileys and libsignal use as one-byte references, integers as
//! varints. It decodes back to JSON with the same values (and the same key order).
//!
//! Stored bytes that start with `0x01` are compact; anything else is kept and returned as it was
//! given (JSON text never starts with a control byte), so values written before this format, or
//! values that are not JSON, stay readable.
//!
//! ```text
//! value   = 0x01 node
//! node    = 0x00 null | 0x01 false | 0x02 true
//!         | 0x03 varint(zigzag i64)          integer
//!         | 0x04 f64 (8 bytes, little end.)  other number
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
/// value itself (behind [`VERBATIM`] if it begins with a header byte).
pub fn store_form(value: &[u8], compact: bool) -> Option<Vec<u8>> {
    match value.first() {
        Some(&COMPACT) | Some(&VERBATIM) => {
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

/// The compact form of `value`, or `None` when it is not JSON (kept as given then) or when the
/// compact form would not be smaller.
pub fn encode(value: &[u8]) -> Option<Vec<u8>> {
    if value.first() == Some(&COMPACT) {
        return None;
    }
    let json: Json = serde_json::from_slice(value).ok()?;
    let mut out = Vec::with_capacity(value.len() / 2 + 8);
    out.push(COMPACT);
    node(&json, &mut out);
    (out.len() < value.len()).then_some(out)
}

/// The JSON text of a stored value: compact values are expanded, verbatim ones unwrapped, others
/// returned as they are.
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
        return Err(corrupt("trailing bytes"));
    }
    Ok(out)
}

fn corrupt(what: &str) -> Error {
    Error::CorruptValue(format!("compact value is damaged: {what}"))
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

fn node(v: &Json, out: &mut Vec<u8>) {
    match v {
        Json::Null => out.push(T_NULL),
        Json::Bool(false) => out.push(T_FALSE),
        Json::Bool(true) => out.push(T_TRUE),
        Json::Number(n) => match n.as_i64() {
            Some(i) => {
                out.push(T_INT);
                varint(((i << 1) ^ (i >> 63)) as u64, out);
            }
            None => {
                out.push(T_F64);
                out.extend_from_slice(&n.as_f64().unwrap_or(f64::NAN).to_le_bytes());
            }
        },
        Json::String(s) => match is_canonical_base64(s) {
            Some(bytes) => {
                out.push(T_B64);
                varint(bytes.len() as u64, out);
                out.extend_from_slice(&bytes);
            }
            None => {
                out.push(T_STR);
                varint(s.len() as u64, out);
                out.extend_from_slice(s.as_bytes());
            }
        },
        Json::Array(items) => {
            out.push(T_ARR);
            varint(items.len() as u64, out);
            for item in items {
                node(item, out);
            }
        }
        Json::Object(map) => {
            if let Some(bytes) = buffer_bytes(map) {
                out.push(T_BUF);
                varint(bytes.len() as u64, out);
                out.extend_from_slice(&bytes);
                return;
            }
            out.push(T_OBJ);
            varint(map.len() as u64, out);
            for (k, v) in map {
                match KEYS.iter().position(|known| known == k) {
                    Some(i) => out.push(i as u8),
                    None => {
                        out.push(KEY_LITERAL);
                        varint(k.len() as u64, out);
                        out.extend_from_slice(k.as_bytes());
                    }
                }
                node(v, out);
            }
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

/// Nesting deeper than this is refused (JSON from Baileys is a few levels deep).
const MAX_DEPTH: usize = 128;

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8> {
        let b = *self.b.get(self.at).ok_or_else(|| corrupt("truncated"))?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(n);
            }
        }
        Err(corrupt("varint too long"))
    }

    fn bytes(&mut self) -> Result<&[u8]> {
        let len = usize::try_from(self.varint()?).map_err(|_| corrupt("length"))?;
        let end = self
            .at
            .checked_add(len)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| corrupt("truncated"))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn str(&mut self) -> Result<&str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| corrupt("invalid UTF-8"))
    }

    fn json_str(out: &mut Vec<u8>, s: &str) {
        // serde_json escapes exactly as JSON requires; writing to a Vec cannot fail
        let _ = serde_json::to_writer(&mut *out, s);
    }

    fn node(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(corrupt("nested too deep"));
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
                let f = f64::from_le_bytes(eight);
                let n = Number::from_f64(f).ok_or_else(|| corrupt("number"))?;
                let _ = serde_json::to_writer(&mut *out, &n);
            }
            T_STR => {
                let s = self.str()?.to_owned();
                Self::json_str(out, &s);
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
                    match self.byte()? {
                        KEY_LITERAL => {
                            let k = self.str()?.to_owned();
                            Self::json_str(out, &k);
                        }
                        idx => {
                            let k = KEYS
                                .get(idx as usize)
                                .ok_or_else(|| corrupt("unknown key reference"))?;
                            Self::json_str(out, k);
                        }
                    }
                    out.push(b':');
                    self.node(out, depth + 1)?;
                }
                out.push(b'}');
            }
            _ => return Err(corrupt("unknown tag")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) -> Vec<u8> {
        // kept as text when the compact form would not be smaller
        let c = encode(text.as_bytes()).unwrap_or_else(|| text.as_bytes().to_vec());
        let back = decode(&c).unwrap();
        let a: Json = serde_json::from_str(text).unwrap();
        let b: Json = serde_json::from_slice(&back).unwrap();
        assert_eq!(a, b, "{}", String::from_utf8_lossy(&back));
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
    }
}
