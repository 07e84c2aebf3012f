//! Listing for tools: scans of the keyspace, a session's types and ids, raw reads.

use std::collections::HashMap;

use fred::bytes::Bytes;
use fred::prelude::*;

use super::{escape_glob, RedisTier};
use crate::envelope::{self};
use crate::error::{Error, Result};
use crate::model::SessionId;
use crate::sql::TypeSummary;

impl RedisTier {
    /// Every key matching the glob `pattern`, raw names (no prefix added), from every primary
    /// of a cluster. For tools: a full scan of the keyspace, in pages of 1,000.
    pub async fn scan_raw(&self, pattern: &str) -> Result<Vec<String>> {
        use futures::TryStreamExt;
        if self.is_closed() {
            return Err(Error::StoreClosed);
        }
        let keys = if self.client.is_clustered() {
            self.client
                .scan_cluster_buffered(pattern.to_string(), Some(1000), None)
                .try_collect::<Vec<_>>()
                .await
        } else {
            self.client
                .scan_buffered(pattern.to_string(), Some(1000), None)
                .try_collect::<Vec<_>>()
                .await
        }
        .map_err(|e| self.err(e))?;
        Ok(keys.into_iter().filter_map(|k| k.into_string()).collect())
    }

    /// The bytes of a string key, raw (no prefix added).
    pub async fn get_raw(&self, key: &str) -> Result<Option<Bytes>> {
        self.call("get", self.client.get(key)).await
    }

    /// Every field of a hash key, raw (no prefix added).
    pub async fn hgetall_raw(&self, key: &str) -> Result<HashMap<String, Bytes>> {
        self.call("hgetall", self.client.hgetall(key)).await
    }

    /// The sessions that have a meta hash in Redis (every session written through this
    /// layout has one), found by scanning.
    pub async fn list_sessions(&self) -> Result<Vec<String>> {
        let head = format!("{}:{{s:", self.prefix);
        let pattern = format!("{}*}}:m", escape_glob(&head));
        let mut out: Vec<String> = self
            .scan_raw(&pattern)
            .await?
            .into_iter()
            .filter_map(|k| {
                let inner = k.strip_prefix(&head)?.strip_suffix("}:m")?;
                crate::ident::unescape(inner)
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The key types the session has in Redis (its `t` set), unescaped.
    pub async fn types(&self, sid: &SessionId) -> Result<Vec<String>> {
        let types: Vec<String> = self
            .call("smembers", self.client.smembers(self.types_key(sid)))
            .await?;
        Ok(types
            .into_iter()
            .filter_map(|t| crate::ident::unescape(&t))
            .collect())
    }

    /// Records and value bytes per key type of one session (reads every value: for tools, not
    /// for hot paths). Tombstones are not counted.
    pub async fn summary(&self, sid: &SessionId) -> Result<Vec<TypeSummary>> {
        let mut types: Vec<String> = self
            .call("smembers", self.client.smembers(self.types_key(sid)))
            .await?;
        types.sort();
        let mut out = Vec::with_capacity(types.len());
        for escaped in types {
            let key = self.session_base(sid) + "k:" + &escaped;
            let all: HashMap<String, Bytes> =
                self.call("hgetall", self.client.hgetall(key)).await?;
            let live: Vec<u64> = all
                .values()
                .filter_map(|v| envelope::open(v).ok()?.value.map(|v| v.len() as u64))
                .collect();
            if !live.is_empty() {
                out.push(TypeSummary {
                    count: live.len() as u64,
                    bytes: live.iter().sum(),
                    kind: crate::ident::unescape(&escaped).unwrap_or(escaped),
                });
            }
        }
        Ok(out)
    }

    /// Ids of one type: those with a value, and those Redis holds a tombstone for.
    pub async fn list_ids(
        &self,
        sid: &SessionId,
        kind: &str,
    ) -> Result<(Vec<String>, Vec<String>)> {
        let all: HashMap<String, Bytes> = self
            .call("hgetall", self.client.hgetall(self.keys_key(sid, kind)))
            .await?;
        let (mut live, mut dead) = (Vec::new(), Vec::new());
        for (id, v) in all {
            match envelope::open(&v)?.value {
                Some(_) => live.push(id),
                None => dead.push(id),
            }
        }
        live.sort();
        Ok((live, dead))
    }
}
