//! What tools need: listing sessions, types and ids, rekeying a session under the current
//! encryption key, purging a session's last traces.

use std::collections::{BTreeMap, HashSet};

use super::{AuthStore, Op, Ticket};
use crate::error::{Error, Result};
use crate::ident;
use crate::lease::{locked, Fence};
use crate::model::{KeyWrite, SessionId, WriteBatch, WriteOptions};
use crate::sql::TypeSummary;

/// Ids read per `get_keys` while a session is rekeyed.
pub(super) const REKEY_CHUNK: usize = 500;

/// What [`AuthStore::rekey_session`] rewrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RekeyReport {
    /// The creds were rewritten.
    pub creds: bool,
    /// Records rewritten per key type, in type order.
    pub types: Vec<(String, u64)>,
    /// The version of the write (0: the session holds nothing).
    pub version: u64,
}

/// A session as [`AuthStore::list_sessions`] finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: String,
    /// SQL has a row for it (possibly the tombstone of a deleted session).
    pub in_sql: bool,
    /// Redis has its meta hash.
    pub in_redis: bool,
    /// SQL's row holds creds.
    pub sql_has_creds: bool,
    /// The highest version SQL committed for it.
    pub version: u64,
    /// SQL's last write, epoch ms.
    pub updated_at_ms: Option<i64>,
}

impl AuthStore {
    /// Re-seals every record of a session (its creds and every key) under the current
    /// encryption key, through the normal write path: one atomic write at the session's next
    /// version, in its call order. Writes called before it land first (and are what it
    /// rewrites); writes called after it wait until it is queued. Plain records (written before
    /// encryption was turned on) are sealed too. Once every session was rekeyed, `previousKeys`
    /// can be dropped. The write carries the lease epoch taken before the records are read, so a
    /// process that took the session meanwhile fences it instead of being rolled back.
    pub async fn rekey_session(&self, sid: &SessionId, force: bool) -> Result<RekeyReport> {
        self.check_open()?;
        if self.keyring.is_none() {
            return Err(Error::Config(
                "rekey needs the store's encryption option (the key to seal under)".into(),
            ));
        }
        let ticket = self.ticket(sid);
        ticket.slot.wait_turn(ticket.n).await;
        let fence = self.fence(sid, force).await?;
        // what it writes back was read under this fence: if another writer took the session
        // meanwhile, the rewrite is refused, never claimed again over that writer's records
        let once = Fence {
            claimed: false,
            ..fence
        };
        self.rekey_in_turn(sid, once, ticket).await.map_err(|e| match e {
            Error::SessionLocked(_) if fence.claimed => locked(
                "another writer wrote the session while it was rekeyed; nothing was rewritten: run rekey again",
            ),
            e => e,
        })
    }

    pub(super) async fn rekey_in_turn(
        &self,
        sid: &SessionId,
        fence: Fence,
        ticket: Ticket,
    ) -> Result<RekeyReport> {
        // every write queued before this one has gone through both stages
        let slot = self.pipeline.session(sid).await?;
        self.pipeline.submit(sid, slot, Op::Barrier).await?;
        let kinds = self.list_types(sid).await?;
        let mut batch = WriteBatch {
            creds: self.get_creds(sid).await?,
            keys: Vec::new(),
        };
        let mut report = RekeyReport {
            creds: batch.creds.is_some(),
            ..Default::default()
        };
        for kind in kinds {
            let ids = self.list_ids(sid, &kind).await?;
            let mut count = 0;
            for chunk in ids.chunks(REKEY_CHUNK) {
                let got = self.get_keys(sid, &kind, chunk).await?;
                for (id, value) in chunk.iter().zip(got) {
                    if let Some(v) = value {
                        count += 1;
                        batch.keys.push(KeyWrite {
                            kind: kind.clone(),
                            id: id.clone(),
                            value: Some(v),
                        });
                    }
                }
            }
            if count > 0 {
                report.types.push((kind, count));
            }
        }
        if batch.is_empty() {
            return Ok(report);
        }
        report.version = self
            .write_fenced(sid, batch, &WriteOptions::default(), Some(fence), ticket)
            .await?;
        Ok(report)
    }

    /// Accepts SQL's state of a session SQL was found behind Redis (`ERR_SQL_BEHIND`: SQL
    /// restored from an older backup): Redis forgets what it held of it, reads come from SQL
    /// again, and the session is written again from SQL's state. An operator's decision: the
    /// newer state Redis held is dropped. Returns whether the session was refused before.
    pub async fn accept_sql_state(&self, sid: &SessionId) -> Result<bool> {
        self.check_open()?;
        let t = self.tiers();
        let (Some(redis), Some(sql)) = (&t.redis, &t.sql) else {
            return Ok(false);
        };
        let (meta, _) = redis.meta_and_dirty(sid).await?;
        let sv = sql.session_version(sid).await?;
        redis.accept_sql(sid, sv).await?;
        if let Some(cache) = &t.cache {
            cache.remove_session(sid, false);
        }
        let slot = self.pipeline.slot(sid);
        let mut s = slot.state.lock();
        s.floor = sv;
        s.validated = false;
        drop(s);
        Ok(meta.sql_behind)
    }

    /// Removes a deleted session's last traces (its SQL tombstone row and Redis meta), for tools
    /// and tests that own the whole deployment.
    /// A session refused with `ERR_SQL_BEHIND` is purged too (what is purged is gone from every
    /// tier, whichever copy was newer).
    pub async fn purge_session(&self, sid: &SessionId) -> Result<()> {
        match self.delete_session(sid, false).await {
            Err(Error::SqlBehind(_)) => {
                self.accept_sql_state(sid).await?;
                self.delete_session(sid, false).await?;
            }
            r => r?,
        }
        let t = self.tiers();
        if let Some(sql) = &t.sql {
            sql.purge(sid).await?;
        }
        if let Some(redis) = &t.redis {
            redis.purge(sid).await?;
        }
        self.pipeline.slots.lock().remove(&**sid);
        Ok(())
    }

    /// Records and bytes per type of one session, from the durable tier when there is one.
    pub async fn summary(&self, sid: &SessionId) -> Result<Vec<TypeSummary>> {
        self.check_open()?;
        let t = self.tiers();
        match (&t.sql, &t.redis) {
            (Some(sql), _) => sql.summary(sid).await,
            (None, Some(redis)) => redis.summary(sid).await,
            (None, None) => Ok(Vec::new()),
        }
    }

    /// Every key type the session has records of in either tier (Redis may hold types SQL has
    /// not got yet: write-behind, `syncToDatabase: false`), in name order.
    pub async fn list_types(&self, sid: &SessionId) -> Result<Vec<String>> {
        self.check_open()?;
        let t = self.tiers();
        let mut kinds: std::collections::BTreeSet<String> = Default::default();
        if let Some(sql) = &t.sql {
            kinds.extend(sql.summary(sid).await?.into_iter().map(|s| s.kind));
        }
        if let Some(redis) = &t.redis {
            kinds.extend(redis.types(sid).await?);
        }
        Ok(kinds.into_iter().collect())
    }

    /// Every session either tier knows, in id order: SQL's rows (deleted sessions keep one,
    /// without creds) and the sessions Redis holds a meta hash for.
    pub async fn list_sessions(&self) -> Result<Vec<SessionInfo>> {
        self.check_open()?;
        let t = self.tiers();
        let mut out: BTreeMap<String, SessionInfo> = BTreeMap::new();
        if let Some(sql) = &t.sql {
            for row in sql.list_sessions().await? {
                out.insert(
                    row.id.clone(),
                    SessionInfo {
                        id: row.id,
                        in_sql: true,
                        in_redis: false,
                        sql_has_creds: row.has_creds,
                        version: row.version,
                        updated_at_ms: Some(row.updated_at_ms),
                    },
                );
            }
        }
        if let Some(redis) = &t.redis {
            for id in redis.list_sessions().await? {
                out.entry(id.clone())
                    .or_insert_with(|| SessionInfo {
                        id,
                        in_sql: false,
                        in_redis: false,
                        sql_has_creds: false,
                        version: 0,
                        updated_at_ms: None,
                    })
                    .in_redis = true;
            }
        }
        Ok(out.into_values().collect())
    }

    /// Every id of one type in one session: what SQL and Redis hold, less what Redis holds
    /// deleted but not yet flushed.
    pub async fn list_ids(&self, sid: &SessionId, kind: &str) -> Result<Vec<String>> {
        self.check_open()?;
        ident::validate_type(kind)?;
        let t = self.tiers();
        let mut ids = Vec::new();
        let mut dead = HashSet::new();
        if let Some(redis) = &t.redis {
            self.pipeline.session(sid).await?;
            let (live, tombs) = redis.list_ids(sid, kind).await?;
            ids.extend(live);
            dead.extend(tombs);
        }
        if let Some(sql) = &t.sql {
            ids.extend(sql.list_ids(sid, kind).await?);
        }
        ids.retain(|id| !dead.contains(id));
        ids.sort();
        ids.dedup();
        Ok(ids)
    }
}
