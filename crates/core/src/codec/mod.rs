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
//! The encoder is in `encoder.rs`, the decoder in `decoder.rs`, the table of one-byte keys in
//! `keys.rs`; the tags of the grammar below are defined here.
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
//! key     = byte < 0x80: index into KEYS (keys.rs) | 0xFF varint(len) utf8
//! ```

mod decoder;
mod encoder;
mod keys;

pub use self::decoder::decode;
pub use self::encoder::encode;

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

// The tags of `node` in the grammar above.
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
