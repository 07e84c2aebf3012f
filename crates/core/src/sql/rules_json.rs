//! The rules of [`super::rules`] for a persistence plug-in's driver (JavaScript), as JSON in and
//! JSON out: the driver reads rows inside its transaction, asks the rule what to write, writes
//! it. No value bytes cross: a rule sees versions and epochs only, and says which rows to keep.
//! Numbers are integers below 2^53 (JavaScript's exact range).

use serde::Deserialize;
use serde_json::{json, Value as Json};

use super::rules::{self, Epochs, LeaseRequest, LeaseWrite, StoredLease, TakeMode, Taken};
use crate::model::SessionId;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredSession {
    epoch: i64,
    creds_version: i64,
    version: i64,
    cleared_version: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Incoming {
    version: i64,
    creds_version: i64,
    cleared: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Commit {
    fence: Option<i64>,
    stored: Option<StoredSession>,
    incoming: Incoming,
    #[serde(default)]
    stored_keys: Vec<Option<i64>>,
    #[serde(default)]
    incoming_keys: Vec<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Lease {
    token: String,
    holder: String,
    epoch: i64,
    expires_at: i64,
    acquired_at: i64,
}

impl From<Lease> for StoredLease {
    fn from(l: Lease) -> Self {
        StoredLease {
            token: l.token,
            holder: l.holder,
            epoch: l.epoch,
            expires_at: l.expires_at,
            acquired_at: l.acquired_at,
        }
    }
}

fn lease_json(l: &StoredLease) -> Json {
    json!({
        "token": l.token,
        "holder": l.holder,
        "epoch": l.epoch,
        "expiresAt": l.expires_at,
        "acquiredAt": l.acquired_at,
    })
}

#[derive(Deserialize)]
struct EpochsIn {
    epoch: i64,
    seq: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TakeIn {
    sid: String,
    token: String,
    holder: String,
    ttl_ms: i64,
    mode: String,
    force: bool,
    check_live: bool,
    since: i64,
    floor: i64,
    #[serde(default)]
    seal: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Take {
    request: TakeIn,
    current: Option<Lease>,
    epochs: EpochsIn,
    missing: bool,
    now: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Renew {
    current: Option<Lease>,
    token: String,
    ttl_ms: i64,
    now: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Allocate {
    /// null: the session has no row (never written, or purged)
    epochs: Option<EpochsIn>,
    floor: i64,
    /// a reacquisition: the epoch the taker held (see `rules::may_reacquire`)
    #[serde(default)]
    since: Option<i64>,
}

#[derive(Deserialize)]
struct Live {
    cleared: i64,
    rows: Vec<(bool, i64)>,
}

fn parse<'a, T: Deserialize<'a>>(name: &str, input: &'a str) -> Result<T, String> {
    serde_json::from_str(input).map_err(|e| format!("persistence rule '{name}': {e}"))
}

/// What a commit does to a session row and its key rows (`commit`), or a clear (`clear`: no
/// keys; the driver then deletes the key rows below `cleared`).
fn commit(c: Commit) -> Json {
    if let Some(fence) = c.fence {
        if rules::is_fenced(c.stored.as_ref().map(|s| s.epoch), fence) {
            return json!({ "fenced": true });
        }
    }
    let i = &c.incoming;
    let session = match &c.stored {
        None => json!({
            "credsFromIncoming": true,
            "credsVersion": i.creds_version,
            "version": i.version,
            "clearedVersion": i.cleared,
        }),
        Some(s) => json!({
            "credsFromIncoming": i.creds_version > s.creds_version,
            "credsVersion": s.creds_version.max(i.creds_version),
            "version": s.version.max(i.version),
            "clearedVersion": s.cleared_version.max(i.cleared),
        }),
    };
    let put: Vec<usize> = c
        .incoming_keys
        .iter()
        .enumerate()
        .filter(|(n, v)| rules::replaces(c.stored_keys.get(*n).copied().flatten(), **v))
        .map(|(n, _)| n)
        .collect();
    json!({ "fenced": false, "session": session, "putKeys": put })
}

fn mode_of(t: &TakeIn) -> Result<TakeMode, String> {
    Ok(match t.mode.as_str() {
        "acquire" => TakeMode::Acquire { force: t.force },
        "claim" => TakeMode::Claim {
            force: t.force,
            check_live: t.check_live,
        },
        "reacquire" => TakeMode::Reacquire { since: t.since },
        other => return Err(format!("unknown take mode '{other}'")),
    })
}

fn take(t: Take) -> Result<Json, String> {
    let sid = SessionId::new(t.request.sid.clone()).map_err(|e| e.to_string())?;
    let req = LeaseRequest {
        sid: &sid,
        token: &t.request.token,
        holder: &t.request.holder,
        ttl_ms: t.request.ttl_ms,
        mode: mode_of(&t.request)?,
        floor: t.request.floor,
        seal: t.request.seal,
    };
    let current: Option<StoredLease> = t.current.map(Into::into);
    let epochs = Epochs {
        epoch: t.epochs.epoch,
        seq: t.epochs.seq,
    };
    Ok(
        match rules::take_lease(&req, current.as_ref(), epochs, t.missing, t.now) {
            Taken::Granted {
                epoch,
                acquired_at,
                expires_at,
                lease,
                epochs,
            } => json!({
                "taken": "granted",
                "epoch": epoch,
                "acquiredAt": acquired_at,
                "expiresAt": expires_at,
                "lease": match &lease {
                    LeaseWrite::Keep => json!({ "write": "keep" }),
                    LeaseWrite::Delete => json!({ "write": "delete" }),
                    LeaseWrite::Put(l) => json!({ "write": "put", "row": lease_json(l) }),
                },
                "epochs": { "epoch": epochs.epoch, "seq": epochs.seq },
            }),
            Taken::Held(l) => json!({ "taken": "held", "epoch": l.epoch, "lease": lease_json(&l) }),
            Taken::Moved { epoch } => json!({ "taken": "moved", "epoch": epoch }),
        },
    )
}

/// Runs the rule `name` on `input` (JSON): `commit`, `clear`, `allocate`, `take`, `renew`,
/// `live`. An error names the rule and what was wrong with the input.
pub fn run(name: &str, input: &str) -> Result<String, String> {
    let out = match name {
        "commit" | "clear" => commit(parse(name, input)?),
        "allocate" => {
            let a: Allocate = parse(name, input)?;
            let epochs = a.epochs.map(|e| Epochs {
                epoch: e.epoch,
                seq: e.seq,
            });
            match a.since {
                // refused: the lease is lost
                Some(since) if !rules::may_reacquire(epochs, since) => Json::Null,
                _ => json!(rules::allocate(epochs.unwrap_or_default(), a.floor)),
            }
        }
        "take" => take(parse(name, input)?)?,
        "renew" => {
            let r: Renew = parse(name, input)?;
            let current: Option<StoredLease> = r.current.map(Into::into);
            json!(rules::renew(current.as_ref(), &r.token, r.ttl_ms, r.now))
        }
        "live" => {
            let l: Live = parse(name, input)?;
            let live: Vec<bool> = l
                .rows
                .iter()
                .map(|(has, v)| rules::is_live(*has, *v, l.cleared))
                .collect();
            json!(live)
        }
        other => return Err(format!("unknown persistence rule '{other}'")),
    };
    Ok(out.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(name: &str, input: Json) -> Json {
        serde_json::from_str(&run(name, &input.to_string()).unwrap()).unwrap()
    }

    #[test]
    fn a_commit_is_fenced_by_a_higher_epoch_or_a_missing_row() {
        let inc = json!({ "version": 9, "credsVersion": 9, "cleared": 0 });
        let stored = json!({ "epoch": 3, "credsVersion": 5, "version": 7, "clearedVersion": 0 });
        assert_eq!(
            go(
                "commit",
                json!({ "fence": 2, "stored": stored, "incoming": inc })
            )["fenced"],
            true
        );
        assert_eq!(
            go(
                "commit",
                json!({ "fence": 3, "stored": stored, "incoming": inc })
            )["fenced"],
            false
        );
        assert_eq!(
            go(
                "commit",
                json!({ "fence": 3, "stored": null, "incoming": inc })
            )["fenced"],
            true
        );
        let flush = go(
            "commit",
            json!({ "fence": null, "stored": null, "incoming": inc }),
        );
        assert_eq!(flush["session"]["version"], 9);
    }

    #[test]
    fn a_reacquisition_is_refused_after_a_purge_or_another_writers_epoch() {
        let at = |epoch: i64| json!({ "epoch": epoch, "seq": epoch });
        assert_eq!(go("allocate", json!({ "epochs": at(5), "floor": 0 })), 6);
        assert_eq!(
            go(
                "allocate",
                json!({ "epochs": at(5), "floor": 0, "since": 5 })
            ),
            6
        );
        // another writer took epoch 6 while the lease of epoch 5 had lapsed
        assert_eq!(
            go(
                "allocate",
                json!({ "epochs": at(6), "floor": 0, "since": 5 })
            ),
            Json::Null
        );
        // the session's row is gone: purged
        assert_eq!(
            go(
                "allocate",
                json!({ "epochs": null, "floor": 0, "since": 5 })
            ),
            Json::Null
        );
    }

    #[test]
    fn a_commit_keeps_newer_rows_and_never_applies_a_tie() {
        let out = go(
            "commit",
            json!({
                "fence": 3,
                "stored": { "epoch": 3, "credsVersion": 12, "version": 12, "clearedVersion": 0 },
                "incoming": { "version": 10, "credsVersion": 10, "cleared": 0 },
                "storedKeys": [null, 9, 10, 11],
                "incomingKeys": [10, 10, 10, 10],
            }),
        );
        assert_eq!(out["putKeys"], json!([0, 1]));
        assert_eq!(out["session"]["credsFromIncoming"], false);
        assert_eq!(out["session"]["version"], 12);
    }

    #[test]
    fn a_take_names_what_to_write() {
        let out = go(
            "take",
            json!({
                "request": { "sid": "s", "token": "a", "holder": "pod", "ttlMs": 1000, "mode": "acquire",
                             "force": false, "checkLive": true, "since": 0, "floor": 0 },
                "current": null, "epochs": { "epoch": 4, "seq": 6 }, "missing": false, "now": 100,
            }),
        );
        assert_eq!(out["taken"], "granted");
        assert_eq!(out["epoch"], 7);
        assert_eq!(out["lease"]["write"], "put");
        assert_eq!(out["lease"]["row"]["expiresAt"], 1100);
        assert!(run("take", "{}").unwrap_err().contains("take"));
        assert!(run("nope", "{}").is_err());
    }
}
