//! Key naming: every key of a session under its `{s:<sid>}` hash tag, the store's own under
//! `{m}`, ids and type names escaped.

use super::RedisTier;
use crate::ident::escape;
use crate::model::SessionId;

/// The dirty-hash name of the creds record (no escaped type is empty).
pub const CREDS_RECORD: &str = "\0c";

/// The dirty-hash mark of a session written by a store without a SQL tier.
pub const NOSQL_RECORD: &str = "\0n";

/// The dirty-hash name of one record.
pub fn record_name(kind: &str, id: &str) -> String {
    format!("{}\0{id}", escape(kind))
}

/// `text` with the glob characters of `SCAN MATCH` escaped (a key prefix may hold them).
pub(super) fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

impl RedisTier {
    /// The prefix of every key of a session (ends with `:`).
    pub fn session_base(&self, sid: &SessionId) -> String {
        format!("{}:{{s:{}}}:", self.prefix, escape(sid))
    }

    pub fn creds_key(&self, sid: &SessionId) -> String {
        self.session_base(sid) + "c"
    }

    pub fn keys_key(&self, sid: &SessionId, kind: &str) -> String {
        self.session_base(sid) + "k:" + &escape(kind)
    }

    pub fn types_key(&self, sid: &SessionId) -> String {
        self.session_base(sid) + "t"
    }

    pub fn dirty_key(&self, sid: &SessionId) -> String {
        self.session_base(sid) + "d"
    }

    pub fn meta_key(&self, sid: &SessionId) -> String {
        self.session_base(sid) + "m"
    }

    pub fn lease_key(&self, sid: &SessionId) -> String {
        self.session_base(sid) + "l"
    }

    /// A key of the store's own bookkeeping (memory manager, dirty index).
    pub fn mm_key(&self, name: &str) -> String {
        format!("{}:{{m}}:{name}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash tag Redis Cluster hashes a key by: the text between the first `{` and the next `}`.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').unwrap();
        let close = open + key[open..].find('}').unwrap();
        &key[open + 1..close]
    }

    #[test]
    fn every_key_of_a_session_shares_its_hash_tag_and_no_id_reaches_the_stores_own() {
        let ids = ["X", "X0", "X:x", "X*", "{X}", "m", "s:X", "a}b{c", "%7B"];
        let mut tags = std::collections::HashSet::new();
        for id in ids {
            let base = format!("wa:{{s:{}}}:", escape(id));
            let tag = hash_tag(&base).to_string();
            assert!(tag.starts_with("s:"), "{id} -> {tag}");
            assert_ne!(tag, "m");
            for suffix in ["c", "t", "d", "m", "l", "k:pre-key"] {
                assert_eq!(hash_tag(&format!("{base}{suffix}")), tag);
            }
            assert!(tags.insert(tag), "two ids share a hash tag: {id}");
        }
    }

    #[test]
    fn record_names_keep_type_and_id_apart() {
        // types hold no control character and ids no NUL (crate::ident), so the first NUL splits
        assert_eq!(
            record_name("a:b", "c\u{1}").split_once('\0'),
            Some(("a%3Ab", "c\u{1}"))
        );
        assert_eq!(record_name("pre-key", "7"), "pre-key\u{0}7");
        assert!(!record_name("x", "y").starts_with('\0'));
        assert!(CREDS_RECORD.starts_with('\0') && NOSQL_RECORD.starts_with('\0'));
    }

    #[test]
    fn glob_characters_of_a_prefix_are_escaped() {
        assert_eq!(escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(escape_glob("plain:{m}"), "plain:{m}");
    }
}
