//! The decoder: the compact form back to JSON text, refusing damaged bytes with an error that
//! names no stored content.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Number;

use super::keys::{KEYS, KEY_LITERAL};
use super::{
    COMPACT, T_ARR, T_B64, T_BUF, T_F64, T_FALSE, T_INT, T_NULL, T_OBJ, T_STR, T_TRUE, VERBATIM,
};
use crate::error::{Error, Result};

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

/// Nesting deeper than this is refused (JSON from Baileys is a few levels deep). The deepest JSON
/// `serde_json` reads still decodes: `the_deepest_json_round_trips`, in the encoder's tests.
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

/// The JSON text [`decode`] writes for an `f64` (its shortest spelling), `None` if not finite.
pub(super) fn f64_text(f: f64) -> Option<Vec<u8>> {
    serde_json::to_vec(&Number::from_f64(f)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode;
    use proptest::prelude::*;

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

    proptest! {
        // 256 cases unless PROPTEST_CASES says otherwise; failures are printed, not saved
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

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
