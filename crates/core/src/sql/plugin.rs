//! A durable tier the application brings (an ORM, a database the store does not speak), in place
//! of the built-in SQL dialects. The core sends it one JSON request per operation and reads a JSON
//! answer; byte values travel as base64. The requests carry the same versioned rows, fences and
//! lease decisions the SQL dialects apply in their transactions, so the guarantees hold where the
//! plug-in applies each session's part of a request atomically. The JavaScript side
//! (`lib/persistence/driver.js`) documents each operation and keeps the row rules in one place.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value as Json};

use super::rules::{Epochs, LeaseRequest, StoredLease, TakeMode, Taken};
use crate::model::{SessionId, Value};

/// How the core reaches a plug-in: one request, one answer, both JSON text. An `Err` is the
/// plug-in's own failure, reported as a database error with its message.
pub trait PluginTransport: Send + Sync + 'static {
    fn call(&self, request: String) -> BoxFuture<'static, std::result::Result<String, String>>;
}

pub(super) type Plugin = Arc<dyn PluginTransport>;

fn protocol(message: String) -> sqlx::Error {
    sqlx::Error::Protocol(message)
}

async fn call<T: DeserializeOwned>(p: &Plugin, request: Json) -> Result<T, sqlx::Error> {
    let op = request["op"].as_str().unwrap_or("?").to_string();
    let text = p
        .call(request.to_string())
        .await
        .map_err(|e| protocol(format!("persistence plug-in failed ({op}): {e}")))?;
    serde_json::from_str(&text).map_err(|e| {
        protocol(format!(
            "persistence plug-in answered {op} with unexpected JSON: {e}"
        ))
    })
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

fn unb64(text: &str) -> Result<Value, sqlx::Error> {
    B64.decode(text)
        .map(Value::from)
        .map_err(|_| protocol("persistence plug-in answered a value that is not base64".into()))
}

fn clamp(v: i64) -> u64 {
    v.max(0) as u64
}

pub(super) async fn migrate(_p: &Plugin) -> Result<(), sqlx::Error> {
    Ok(())
}

#[derive(Deserialize)]
struct CredsAnswer {
    value: String,
    version: i64,
}

pub(super) async fn get_creds(
    p: &Plugin,
    sid: &SessionId,
) -> Result<Option<(u64, Value)>, sqlx::Error> {
    let a: Option<CredsAnswer> = call(p, json!({"op": "getCreds", "sid": &**sid})).await?;
    a.map(|a| Ok((clamp(a.version), unb64(&a.value)?)))
        .transpose()
}

pub(super) async fn session_version(p: &Plugin, sid: &SessionId) -> Result<u64, sqlx::Error> {
    let v: i64 = call(p, json!({"op": "sessionVersion", "sid": &**sid})).await?;
    Ok(clamp(v))
}

pub(super) async fn session_epoch(p: &Plugin, sid: &SessionId) -> Result<u64, sqlx::Error> {
    let v: i64 = call(p, json!({"op": "sessionEpoch", "sid": &**sid})).await?;
    Ok(clamp(v))
}

#[derive(Deserialize)]
struct KeyAnswer {
    id: String,
    value: String,
    version: i64,
}

pub(super) async fn get_keys(
    p: &Plugin,
    sid: &SessionId,
    kind: &str,
    ids: &[String],
) -> Result<Vec<super::VersionedRow>, sqlx::Error> {
    let rows: Vec<KeyAnswer> = call(
        p,
        json!({"op": "getKeys", "sid": &**sid, "type": kind, "ids": ids}),
    )
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(super::VersionedRow {
                id: r.id,
                version: clamp(r.version),
                value: unb64(&r.value)?,
            })
        })
        .collect()
}

#[derive(Deserialize)]
struct Fenced {
    fenced: Vec<String>,
}

pub(super) async fn write(
    p: &Plugin,
    m: &super::Merged<'_>,
    _now: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let sessions: Vec<Json> = m
        .sessions
        .iter()
        .map(|s| {
            json!({
                "sid": s.sid,
                "version": s.version,
                "creds": s.creds.map(b64),
                "credsVersion": s.creds_version,
                "cleared": s.cleared,
            })
        })
        .collect();
    let keys: Vec<Json> = m
        .keys
        .iter()
        .map(|k| {
            json!({
                "sid": k.sid,
                "type": k.kind,
                "id": k.id,
                "value": k.value.map(b64),
                "version": k.version,
            })
        })
        .collect();
    let fences: Vec<Json> = m
        .fences
        .iter()
        .map(|(sid, epoch)| json!({"sid": sid, "epoch": epoch}))
        .collect();
    let a: Fenced = call(
        p,
        json!({"op": "commit", "sessions": sessions, "keys": keys, "fences": fences}),
    )
    .await?;
    Ok(a.fenced)
}

pub(super) async fn clear(
    p: &Plugin,
    row: &super::SessionRow<'_>,
    _now: i64,
    fence: Option<i64>,
) -> Result<bool, sqlx::Error> {
    call(
        p,
        json!({
            "op": "clear",
            "sid": row.sid,
            "version": row.version,
            "keepCreds": row.creds_version == 0,
            "epoch": fence,
        }),
    )
    .await
}

#[derive(Deserialize)]
struct Allocated {
    epoch: i64,
    sealed: bool,
}

/// None: a reacquisition (`since`) the session no longer allows (`rules::may_reacquire`).
pub(super) async fn allocate_epoch(
    p: &Plugin,
    sid: &SessionId,
    floor: i64,
    seal: bool,
    _now: i64,
    since: Option<i64>,
) -> Result<Option<(i64, bool)>, sqlx::Error> {
    let a: Option<Allocated> = call(
        p,
        json!({"op": "allocateEpoch", "sid": &**sid, "floor": floor, "seal": seal, "since": since}),
    )
    .await?;
    Ok(a.map(|a| (a.epoch, a.sealed)))
}

pub(super) async fn raise_epoch(
    p: &Plugin,
    sid: &SessionId,
    epoch: i64,
) -> Result<bool, sqlx::Error> {
    call(
        p,
        json!({"op": "raiseEpoch", "sid": &**sid, "epoch": epoch}),
    )
    .await
}

/// A lease row as the plug-in's driver sends it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LeaseAnswer {
    token: String,
    holder: String,
    epoch: i64,
    expires_at: i64,
    acquired_at: i64,
}

impl From<LeaseAnswer> for StoredLease {
    fn from(a: LeaseAnswer) -> Self {
        StoredLease {
            token: a.token,
            holder: a.holder,
            epoch: a.epoch,
            expires_at: a.expires_at,
            acquired_at: a.acquired_at,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TakeAnswer {
    taken: String,
    epoch: i64,
    #[serde(default)]
    acquired_at: i64,
    #[serde(default)]
    expires_at: i64,
    #[serde(default)]
    lease: Option<LeaseAnswer>,
    #[serde(default)]
    sealed: bool,
    now: i64,
}

/// The request of a lease decision, as the driver passes it to `rules::take_lease` (through the
/// binding's `persistenceRule`).
pub(crate) fn take_request(req: &LeaseRequest<'_>) -> Json {
    let (mode, force, check_live, since) = match req.mode {
        TakeMode::Acquire { force } => ("acquire", force, true, 0),
        TakeMode::Claim { force, check_live } => ("claim", force, check_live, 0),
        TakeMode::Reacquire { since } => ("reacquire", false, true, since),
    };
    json!({
        "sid": &**req.sid,
        "token": req.token,
        "holder": req.holder,
        "ttlMs": req.ttl_ms,
        "mode": mode,
        "force": force,
        "checkLive": check_live,
        "since": since,
        "floor": req.floor,
        "seal": req.seal,
    })
}

pub(super) async fn lease_take(
    p: &Plugin,
    req: &LeaseRequest<'_>,
) -> Result<(Taken, i64, bool), sqlx::Error> {
    let mut request = take_request(req);
    request["op"] = json!("leaseTake");
    let a: TakeAnswer = call(p, request).await?;
    let taken = match a.taken.as_str() {
        "granted" => Taken::Granted {
            epoch: a.epoch,
            acquired_at: a.acquired_at,
            expires_at: a.expires_at,
            // what the driver wrote is its own business: the store reads the outcome only
            lease: super::rules::LeaseWrite::Keep,
            epochs: Epochs {
                epoch: a.epoch,
                seq: a.epoch,
            },
        },
        "held" => Taken::Held(
            a.lease
                .ok_or_else(|| {
                    protocol("persistence plug-in answered held without the lease".into())
                })?
                .into(),
        ),
        "moved" => Taken::Moved { epoch: a.epoch },
        other => {
            return Err(protocol(format!(
                "persistence plug-in answered leaseTake with '{}'",
                other.chars().take(20).collect::<String>()
            )))
        }
    };
    Ok((taken, a.now, a.sealed))
}

pub(super) async fn lease_renew(
    p: &Plugin,
    sid: &SessionId,
    token: &str,
    ttl_ms: i64,
) -> Result<bool, sqlx::Error> {
    call(
        p,
        json!({"op": "leaseRenew", "sid": &**sid, "token": token, "ttlMs": ttl_ms}),
    )
    .await
}

pub(super) async fn lease_release(
    p: &Plugin,
    sid: &SessionId,
    token: &str,
) -> Result<(), sqlx::Error> {
    let _: Json = call(
        p,
        json!({"op": "leaseRelease", "sid": &**sid, "token": token}),
    )
    .await?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InfoAnswer {
    #[serde(flatten)]
    lease: LeaseAnswer,
    now: i64,
}

pub(super) async fn lease_info(
    p: &Plugin,
    sid: &SessionId,
) -> Result<Option<(StoredLease, i64)>, sqlx::Error> {
    let a: Option<InfoAnswer> = call(p, json!({"op": "leaseInfo", "sid": &**sid})).await?;
    Ok(a.map(|a| (a.lease.into(), a.now)))
}

#[derive(Deserialize)]
struct SummaryAnswer {
    #[serde(rename = "type")]
    kind: String,
    count: i64,
    bytes: i64,
}

pub(super) async fn summary(
    p: &Plugin,
    sid: &SessionId,
) -> Result<Vec<super::TypeSummary>, sqlx::Error> {
    let rows: Vec<SummaryAnswer> = call(p, json!({"op": "summary", "sid": &**sid})).await?;
    Ok(rows
        .into_iter()
        .map(|r| super::TypeSummary {
            kind: r.kind,
            count: clamp(r.count),
            bytes: clamp(r.bytes),
        })
        .collect())
}

pub(super) async fn list_ids(
    p: &Plugin,
    sid: &SessionId,
    kind: &str,
) -> Result<Vec<String>, sqlx::Error> {
    call(p, json!({"op": "listIds", "sid": &**sid, "type": kind})).await
}

pub(super) async fn purge(p: &Plugin, sid: &SessionId) -> Result<(), sqlx::Error> {
    let _: Json = call(p, json!({"op": "purge", "sid": &**sid})).await?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionAnswer {
    sid: String,
    has_creds: bool,
    version: i64,
    updated_at: Option<i64>,
}

pub(super) async fn list_sessions(p: &Plugin) -> Result<Vec<super::SessionListing>, sqlx::Error> {
    let rows: Vec<SessionAnswer> = call(p, json!({"op": "listSessions"})).await?;
    Ok(rows
        .into_iter()
        .map(|r| super::SessionListing {
            id: r.sid,
            has_creds: r.has_creds,
            version: clamp(r.version),
            updated_at_ms: r.updated_at.unwrap_or(0),
        })
        .collect())
}

pub(super) async fn close(p: &Plugin) {
    let _: Result<Json, _> = call(p, json!({"op": "close"})).await;
}
