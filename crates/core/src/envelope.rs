//! What Redis stores for a record: the version that wrote it and the value, or a tombstone.
//!
//! ```text
//! envelope = version (u64, big-endian, 8 bytes) flag (1 byte: 0 value, 1 tombstone) value*
//! ```
//! Big-endian versions compare as byte strings, so the Lua scripts order envelopes with `<` on
//! their first 8 bytes.

use crate::error::{Error, Result};
use crate::model::Value;

/// Bytes before the value.
pub const HEADER: usize = 9;
const VALUE: u8 = 0;
const TOMBSTONE: u8 = 1;

/// The envelope of `value` (`None`: a tombstone) written at `version`.
pub fn seal(version: u64, value: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + value.map_or(0, <[u8]>::len));
    out.extend_from_slice(&version.to_be_bytes());
    match value {
        Some(v) => {
            out.push(VALUE);
            out.extend_from_slice(v);
        }
        None => out.push(TOMBSTONE),
    }
    out
}

/// The version of an envelope, 8 bytes as the scripts compare them.
pub fn version_bytes(version: u64) -> [u8; 8] {
    version.to_be_bytes()
}

/// A record read from Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    pub version: u64,
    /// `None`: deleted (a tombstone).
    pub value: Option<Value>,
}

/// Opens an envelope; anything that is not one is corrupt (the message names no stored byte).
pub fn open(bytes: &[u8]) -> Result<Opened> {
    if bytes.len() < HEADER {
        return Err(Error::CorruptValue(format!(
            "a Redis record of {} bytes is shorter than its {HEADER}-byte header",
            bytes.len()
        )));
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&bytes[..8]);
    let version = u64::from_be_bytes(v);
    match bytes[8] {
        VALUE => Ok(Opened {
            version,
            value: Some(Value::from(&bytes[HEADER..])),
        }),
        TOMBSTONE if bytes.len() == HEADER => Ok(Opened {
            version,
            value: None,
        }),
        flag => Err(Error::CorruptValue(format!(
            "a Redis record has an unknown flag {flag} or a tombstone with a value"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_orders_by_bytes() {
        let a = seal(7, Some(b"x"));
        let b = seal(300, None);
        assert_eq!(open(&a).unwrap().value.as_deref(), Some(&b"x"[..]));
        assert_eq!(
            open(&b).unwrap(),
            Opened {
                version: 300,
                value: None
            }
        );
        assert!(a[..8] < b[..8]);
        assert_eq!(open(b"short").unwrap_err().code(), "ERR_CORRUPT_VALUE");
        let mut bad = seal(1, None);
        bad.push(0);
        assert!(open(&bad).is_err());
    }
}
