//! One owner per session: the lease and its fencing, on every backend combination.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use wa_auth_core::lease::{LeaseOptions, LeaseOutcome};
use wa_auth_core::{
    AuthStore, KeyWrite, RedisOptions, RedisTier, SessionId, SqlStore, StoreOptions, WriteBatch,
    WriteOptions,
};

fn leased() -> StoreOptions {
    StoreOptions {
        leases: true,
        ..Default::default()
    }
}

fn one(v: &[u8]) -> WriteBatch {
    WriteBatch {
        creds: None,
        keys: vec![KeyWrite::put("session", "a", v.to_vec())],
    }
}

fn lease(holder: &str, ttl_ms: u64) -> LeaseOptions {
    LeaseOptions {
        ttl: Duration::from_millis(ttl_ms),
        holder: holder.into(),
        force: false,
    }
}

type Make = Box<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = AuthStore>>>>;

/// Two stores on separate connections to the same backends, as two processes would have.
async fn combos() -> Vec<(&'static str, Make)> {
    let mut out: Vec<(&'static str, Make)> = Vec::new();
    let dir = std::env::temp_dir().join(unique("wa-lease"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = format!("sqlite://{}/auth.db", dir.display());
    let f = file.clone();
    out.push((
        "sqlite file",
        Box::new(move || {
            let f = f.clone();
            Box::pin(async move {
                let sql = SqlStore::connect(options(&f)).await.unwrap();
                AuthStore::new(None, Some(sql), leased()).unwrap()
            })
        }),
    ));
    if postgres().await.is_some() {
        out.push((
            "postgres",
            Box::new(|| {
                Box::pin(async { AuthStore::new(None, postgres().await, leased()).unwrap() })
            }),
        ));
    }
    if mysql().await.is_some() {
        out.push((
            "mysql",
            Box::new(|| Box::pin(async { AuthStore::new(None, mysql().await, leased()).unwrap() })),
        ));
    }
    if redis().await.is_some() {
        out.push((
            "redis",
            Box::new(|| Box::pin(async { AuthStore::new(redis().await, None, leased()).unwrap() })),
        ));
        if postgres().await.is_some() {
            out.push((
                "redis+postgres",
                Box::new(|| {
                    Box::pin(async {
                        AuthStore::new(redis().await, postgres().await, leased()).unwrap()
                    })
                }),
            ));
        }
        let f = file.clone();
        out.push((
            "redis+sqlite",
            Box::new(move || {
                let f = f.clone();
                Box::pin(async move {
                    let sql = SqlStore::connect(options(&f)).await.unwrap();
                    AuthStore::new(redis().await, Some(sql), leased()).unwrap()
                })
            }),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_owner_is_refused_and_a_successor_fences_the_first() {
    for (name, make) in combos().await {
        let (a, b) = (make().await, make().await);
        let s = SessionId::new(unique("lease")).unwrap();
        // a forced take waits out what is left of the holder's lease: a short one keeps it quick
        let first = match a.acquire_lease(&s, &lease("pod-a", 3_000)).await.unwrap() {
            LeaseOutcome::Acquired(i) => i,
            other => panic!("{name}: {other:?}"),
        };
        a.write(&s, one(b"{\"a\":1}"), &WriteOptions::default())
            .await
            .unwrap();
        // a second owner learns who holds it
        match b.acquire_lease(&s, &lease("pod-b", 60_000)).await.unwrap() {
            LeaseOutcome::Held(i) => {
                assert_eq!(
                    (i.holder.as_str(), i.epoch),
                    ("pod-a", first.epoch),
                    "{name}"
                );
                assert!(i.expires_in_ms > 1_000, "{name}: {i:?}");
            }
            other => panic!("{name}: {other:?}"),
        }
        // its writes and clears are refused ...
        let err = b
            .write(&s, one(b"{\"b\":1}"), &WriteOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), "ERR_SESSION_LOCKED", "{name}: {err}");
        assert!(err.to_string().contains("pod-a"), "{name}: {err}");
        assert_eq!(
            b.delete_session(&s, true).await.unwrap_err().code(),
            "ERR_SESSION_LOCKED"
        );
        // ... unless forced, which fences the holder
        let forced = WriteOptions {
            force: true,
            ..Default::default()
        };
        b.write(&s, one(b"{\"admin\":1}"), &forced).await.unwrap();
        let err = a
            .write(&s, one(b"{\"a\":2}"), &WriteOptions::default())
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            "ERR_SESSION_LOCKED",
            "{name}: the old holder is fenced"
        );
        assert!(!a.holds_lease(&s), "{name}");
        let reader = make().await;
        let got = reader.get_keys(&s, "session", &["a".into()]).await.unwrap();
        assert_eq!(got[0].as_deref(), Some(&b"{\"admin\":1}"[..]), "{name}");
        // a lease that expires (its holder paused or died) goes to the next opener, higher epoch
        let c = make().await;
        let s2 = SessionId::new(unique("lease-expiry")).unwrap();
        let LeaseOutcome::Acquired(old) = a.acquire_lease(&s2, &lease("pod-a", 300)).await.unwrap()
        else {
            panic!("{name}")
        };
        a.write(&s2, one(b"{\"v\":1}"), &WriteOptions::default())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(450)).await;
        let LeaseOutcome::Acquired(new) =
            c.acquire_lease(&s2, &lease("pod-c", 60_000)).await.unwrap()
        else {
            panic!("{name}: the expired lease was not taken")
        };
        assert!(new.epoch > old.epoch, "{name}: {new:?} after {old:?}");
        c.write(&s2, one(b"{\"v\":2}"), &WriteOptions::default())
            .await
            .unwrap();
        // the paused holder resumes: its renewal fails, its write lands nowhere
        assert!(!a.renew_lease(&s2).await.unwrap(), "{name}");
        let err = a
            .write(&s2, one(b"{\"v\":3}"), &WriteOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), "ERR_SESSION_LOCKED", "{name}");
        let got = reader
            .get_keys(&s2, "session", &["a".into()])
            .await
            .unwrap();
        assert_eq!(got[0].as_deref(), Some(&b"{\"v\":2}"[..]), "{name}");
        // release lets the next one in at once
        c.release_lease(&s2).await.unwrap();
        assert!(matches!(
            b.acquire_lease(&s2, &lease("pod-b", 60_000)).await.unwrap(),
            LeaseOutcome::Acquired(_)
        ));
        b.release_lease(&s2).await.unwrap();
        for sid in [&s, &s2] {
            reader.purge_session(sid).await.unwrap();
        }
    }
}

/// The fence also holds in each tier on its own: a holder whose write bypasses the lease check
/// (it still believes it holds the lease) is refused by the SQL transaction and by the Redis
/// script, and the epoch survives a Redis that restarts empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_survives_a_redis_restarted_empty() {
    let (Some(mut own), Some(_)) = (OwnRedis::start(), postgres().await) else {
        return;
    };
    let connect = |url: String| async move {
        let mut o = RedisOptions::new(url);
        o.timeout = Duration::from_millis(500);
        RedisTier::connect(o).await.unwrap()
    };
    let a = Arc::new(
        AuthStore::new(Some(connect(own.url()).await), postgres().await, leased()).unwrap(),
    );
    let s = SessionId::new(unique("lease-restart")).unwrap();
    let LeaseOutcome::Acquired(first) = a.acquire_lease(&s, &lease("pod-a", 60_000)).await.unwrap()
    else {
        panic!()
    };
    a.write(&s, one(b"{\"a\":1}"), &WriteOptions::default())
        .await
        .unwrap();
    own.kill();
    own = OwnRedis::restart(own);
    // Redis lost the lease and the session's epoch; SQL kept the epoch
    let b = AuthStore::new(Some(connect(own.url()).await), postgres().await, leased()).unwrap();
    let LeaseOutcome::Acquired(second) =
        b.acquire_lease(&s, &lease("pod-b", 60_000)).await.unwrap()
    else {
        panic!("b could not take the lease Redis forgot")
    };
    assert!(second.epoch > first.epoch, "{second:?} {first:?}");
    b.write(&s, one(b"{\"b\":1}"), &WriteOptions::default())
        .await
        .unwrap();
    // a still believes it holds the lease (its local lease is not expired): the tiers refuse it
    let mut refused = None;
    for _ in 0..40 {
        match a
            .write(&s, one(b"{\"a\":2}"), &WriteOptions::default())
            .await
        {
            Err(e) if e.code() == "ERR_SESSION_LOCKED" => {
                refused = Some(e);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await, // reconnecting
            Ok(_) => panic!("a fenced holder's write landed"),
        }
    }
    assert!(refused.is_some(), "the old holder was never refused");
    let reader = uncached(None, postgres().await);
    let got = reader.get_keys(&s, "session", &["a".into()]).await.unwrap();
    assert_eq!(got[0].as_deref(), Some(&b"{\"b\":1}"[..]));
    reader.purge_session(&s).await.unwrap();
}
