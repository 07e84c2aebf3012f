//! Validation of session ids, key types and key ids, and their escaping into Redis key names.

use crate::error::{Error, Result};

/// Longest accepted session id, in bytes.
pub const MAX_SESSION_ID_BYTES: usize = 255;
/// Longest accepted key type name, in bytes.
pub const MAX_TYPE_BYTES: usize = 128;
/// Longest accepted key id, in bytes.
pub const MAX_KEY_ID_BYTES: usize = 1024;

pub fn validate_session_id(sid: &str) -> Result<()> {
    if sid.is_empty() {
        return Err(Error::InvalidSessionId(
            "session id must not be empty".into(),
        ));
    }
    if sid.len() > MAX_SESSION_ID_BYTES {
        return Err(Error::InvalidSessionId(format!(
            "session id is {} bytes long; at most {MAX_SESSION_ID_BYTES} are allowed",
            sid.len()
        )));
    }
    if sid.chars().any(char::is_control) {
        return Err(Error::InvalidSessionId(
            "session id must not contain control characters".into(),
        ));
    }
    Ok(())
}

pub fn validate_type(kind: &str) -> Result<()> {
    if kind.is_empty() {
        return Err(Error::invalid("key type must not be empty"));
    }
    if kind.len() > MAX_TYPE_BYTES {
        return Err(Error::invalid(format!(
            "key type is {} bytes long; at most {MAX_TYPE_BYTES} are allowed",
            kind.len()
        )));
    }
    if kind.chars().any(char::is_control) {
        return Err(Error::invalid(
            "key type must not contain control characters",
        ));
    }
    Ok(())
}

pub fn validate_key_id(id: &str) -> Result<()> {
    if id.len() > MAX_KEY_ID_BYTES {
        return Err(Error::invalid(format!(
            "key id is {} bytes long; at most {MAX_KEY_ID_BYTES} are allowed",
            id.len()
        )));
    }
    if id.contains('\0') {
        return Err(Error::invalid("key id must not contain NUL"));
    }
    Ok(())
}

/// Escapes a name for use inside a Redis key: `%`, the hash-tag braces, glob characters of
/// `SCAN MATCH` and `:` become `%XX`, so no name can close a hash tag, match a pattern it should
/// not, or run into the next key segment. Distinct names stay distinct.
pub fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for ch in name.chars() {
        match ch {
            '%' | '{' | '}' | '*' | '?' | '[' | ']' | '\\' | ':' | ' ' => {
                let mut buf = [0u8; 4];
                for b in ch.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            _ => out.push(ch),
        }
    }
    out
}

/// Undoes [`escape`].
pub fn unescape(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = name.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_validated() {
        assert!(validate_session_id("session-123").is_ok());
        assert!(validate_session_id("X{y}*:?").is_ok());
        assert_eq!(
            validate_session_id("").unwrap_err().code(),
            "ERR_INVALID_SESSION_ID"
        );
        assert!(validate_session_id("a\nb").is_err());
        assert!(validate_session_id(&"x".repeat(256)).is_err());
        assert!(validate_session_id(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn escape_keeps_names_apart_and_round_trips() {
        let names = ["X", "X0", "X:x", "X*", "{X}", "X%3A", "X}", "é{"];
        let escaped: Vec<String> = names.iter().map(|n| escape(n)).collect();
        for (i, a) in escaped.iter().enumerate() {
            assert!(!a.contains(['{', '}', '*', '?', '[', ']', ':']), "{a}");
            assert_eq!(unescape(a).as_deref(), Some(names[i]));
            for b in &escaped[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
