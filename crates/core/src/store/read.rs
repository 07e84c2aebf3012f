//! Read-through: in-process cache -> Redis -> SQL. A lower-tier hit warms the tiers above with
//! the versions it read, never over a newer record and not at all after a delete raced the read.

use std::collections::HashMap;

use super::AuthStore;
use crate::codec;
use crate::crypto::{self, Record};
use crate::envelope::Opened;
use crate::error::Result;
use crate::ident;
use crate::model::{SessionId, Value};

impl AuthStore {
    /// Stored bytes from Redis or SQL as the JSON text callers read: opened when sealed
    /// (`ERR_DECRYPT` when they do not open), then expanded.
    pub(super) fn reveal(
        &self,
        sid: &SessionId,
        record: Record<'_>,
        version: u64,
        stored: Value,
    ) -> Result<Value> {
        expand(crypto::reveal(
            self.keyring.as_deref(),
            sid,
            record,
            version,
            stored,
        )?)
    }

    /// A read that fell through to SQL: when Redis said it applied version `redis_ver` of the
    /// session, SQL's version is read beside it, and a SQL below it (restored from an older
    /// backup) refuses the read ([`Pipeline::check_sql_behind`]) instead of serving older state.
    async fn read_sql<T>(
        &self,
        sid: &SessionId,
        redis_ver: u64,
        read: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let Some(sql) = self.tiers().sql.as_ref().filter(|_| redis_ver > 0) else {
            return read.await;
        };
        let (got, sv) = tokio::join!(read, sql.session_version(sid));
        if sv? < redis_ver {
            self.pipeline.check_sql_behind(sid).await?;
        }
        got
    }

    /// The creds of a session, as JSON text (the cache holds the expanded form, so a hit costs no
    /// decoding; values from Redis and SQL are expanded as they arrive).
    pub async fn get_creds(&self, sid: &SessionId) -> Result<Option<Value>> {
        self.check_open()?;
        self.touch(sid);
        let t = self.tiers();
        let cache = t.cache_for(sid);
        if let Some(v) = cache.and_then(|c| c.get_creds(sid)) {
            return Ok(Some(v));
        }
        let epoch = cache.map(|c| c.epoch());
        let mut found: Option<(u64, Value)> = None;
        let mut warm_gen = None;
        let mut redis_ver = 0;
        if let Some(redis) = &t.redis {
            let slot = self.pipeline.session(sid).await?;
            let (rec, meta) = redis.get_creds(sid).await?;
            if meta.sql_behind {
                self.pipeline.check_sql_behind(sid).await?;
            }
            redis_ver = meta.ver;
            if meta.ver < slot.floor() {
                self.pipeline.redis_behind(sid, &slot).await?;
            } else {
                // what this process has seen Redis hold: it must never go below that again
                slot.raise_floor(meta.ver);
                t.counters.redis(rec.is_some() as usize, 1);
                match rec {
                    Some(Opened {
                        version,
                        value: Some(v),
                    }) => found = Some((version, v)),
                    Some(Opened { value: None, .. }) => return Ok(None),
                    None => warm_gen = Some(meta.gen),
                }
            }
        }
        if found.is_none() {
            if let Some(sql) = &t.sql {
                let row = self.read_sql(sid, redis_ver, sql.get_creds(sid)).await?;
                t.counters.sql(row.is_some() as usize, 1);
                if let Some((version, v)) = row {
                    if let (Some(redis), Some(gen)) = (&t.redis, &warm_gen) {
                        if let Err(e) = redis.warm_creds(sid, version, &v, gen).await {
                            t.events.warn(
                                e.code(),
                                &format!("could not warm Redis with creds read from SQL: {e}"),
                            );
                        }
                    }
                    found = Some((version, v));
                }
            }
        }
        let found = found
            .map(|(version, v)| self.reveal(sid, Record::Creds, version, v))
            .transpose()?;
        if let (Some(cache), Some(epoch), Some(v)) = (cache, epoch, &found) {
            cache.fill_creds(epoch, sid, v);
        }
        Ok(found)
    }

    /// Answers from the in-process cache alone, without I/O or an async hop: `Some` only when
    /// every id is cached (callers fall back to [`Self::get_keys`]).
    pub fn get_keys_cached(
        &self,
        sid: &SessionId,
        kind: &str,
        ids: &[String],
    ) -> Result<Option<Vec<Value>>> {
        self.check_open()?;
        ident::validate_type(kind)?;
        let t = self.tiers();
        let Some(cache) = t.cache_for(sid) else {
            return Ok(None);
        };
        let Some(found) = cache.get_all(sid, kind, ids) else {
            return Ok(None);
        };
        if let Some(redis) = &t.redis {
            redis.track(sid, None);
        }
        Ok(Some(found))
    }

    /// Values of `ids`, aligned with `ids` (`None` where a record does not exist), as JSON text
    /// (expanded from the stored form as they arrive from Redis or SQL; the cache holds them
    /// expanded).
    pub async fn get_keys(
        &self,
        sid: &SessionId,
        kind: &str,
        ids: &[String],
    ) -> Result<Vec<Option<Value>>> {
        self.check_open()?;
        ident::validate_type(kind)?;
        for id in ids {
            ident::validate_key_id(id)?;
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.touch(sid);
        let t = self.tiers();
        let cache = t.cache_for(sid);
        let mut out: Vec<Option<Value>> = match cache {
            Some(c) => c.get_keys(sid, kind, ids),
            None => vec![None; ids.len()],
        };
        let epoch = cache.map(|c| c.epoch());
        let mut todo: Vec<usize> = (0..ids.len()).filter(|&i| out[i].is_none()).collect();
        if todo.is_empty() {
            return Ok(out);
        }
        let mut filled: Vec<usize> = Vec::new();
        let mut warm_gen = None;
        let mut redis_ver = 0;
        if let Some(redis) = &t.redis {
            let slot = self.pipeline.session(sid).await?;
            let want: Vec<String> = todo.iter().map(|&i| ids[i].clone()).collect();
            let (got, meta) = redis.get_keys(sid, kind, &want).await?;
            if meta.sql_behind {
                self.pipeline.check_sql_behind(sid).await?;
            }
            redis_ver = meta.ver;
            if meta.ver < slot.floor() {
                // Redis lost writes since we last looked: rebuild it, read everything from SQL
                self.pipeline.redis_behind(sid, &slot).await?;
            } else {
                slot.raise_floor(meta.ver);
                let mut missing = Vec::new();
                let asked = todo.len();
                for (&i, rec) in todo.iter().zip(got) {
                    match rec {
                        Some(Opened {
                            version,
                            value: Some(v),
                        }) => {
                            let record = Record::Key { kind, id: &ids[i] };
                            out[i] = Some(self.reveal(sid, record, version, v)?);
                            filled.push(i);
                        }
                        // deleted in Redis only (write-behind): SQL's copy is older
                        Some(Opened { value: None, .. }) => {}
                        None => missing.push(i),
                    }
                }
                t.counters.redis(asked - missing.len(), asked);
                todo = missing;
                warm_gen = Some(meta.gen);
            }
        }
        if !todo.is_empty() {
            if let Some(sql) = &t.sql {
                let want: Vec<String> = todo.iter().map(|&i| ids[i].clone()).collect();
                let rows = self
                    .read_sql(sid, redis_ver, sql.get_keys(sid, kind, &want))
                    .await?;
                t.counters.sql(rows.len(), todo.len());
                if !rows.is_empty() {
                    let by_id: HashMap<&str, (u64, &Value)> = rows
                        .iter()
                        .map(|r| (r.id.as_str(), (r.version, &r.value)))
                        .collect();
                    for &i in &todo {
                        if let Some((version, v)) = by_id.get(ids[i].as_str()) {
                            let record = Record::Key { kind, id: &ids[i] };
                            out[i] = Some(self.reveal(sid, record, *version, (*v).clone())?);
                            filled.push(i);
                        }
                    }
                    if let (Some(redis), Some(gen)) = (&t.redis, &warm_gen) {
                        let found: Vec<(&str, u64, &Value)> = rows
                            .iter()
                            .map(|r| (r.id.as_str(), r.version, &r.value))
                            .collect();
                        if let Err(e) = redis.warm_keys(sid, kind, &found, gen).await {
                            t.events.warn(
                                e.code(),
                                &format!("could not warm Redis with keys read from SQL: {e}"),
                            );
                        }
                    }
                }
            }
        }
        if let (Some(cache), Some(epoch)) = (cache, epoch) {
            cache.fill_keys(
                epoch,
                sid,
                kind,
                filled
                    .iter()
                    .filter_map(|&i| out[i].as_ref().map(|v| (ids[i].as_str(), v))),
            );
        }
        Ok(out)
    }
}

/// The stored form as the JSON text it encodes (compact values expanded, others as they are).
pub(super) fn expand(v: Value) -> Result<Value> {
    match v.first() {
        Some(&codec::COMPACT) | Some(&codec::VERBATIM) => Ok(Value::from(codec::decode(&v)?)),
        _ => Ok(v),
    }
}
