//! MySQL and MariaDB. Identifiers are VARBINARY so comparisons are exact bytes (the default
//! collations fold case and pad spaces, which would merge distinct session ids and key ids).

use std::str::FromStr;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions};
use sqlx::{ConnectOptions, MySql};

use super::apply_migrations;
use super::keyed::keyed_statements;
use crate::config::SqlOptions;

const MIGRATION_LOCK: &str = "wa_auth_store_migrations";

const MIGRATIONS: &[(i64, &[&str])] = &[
    (
        1,
        &[
            "CREATE TABLE IF NOT EXISTS wa_auth_sessions (
            session_id VARBINARY(255) NOT NULL PRIMARY KEY,
            creds LONGBLOB NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL) ENGINE=InnoDB",
            "CREATE TABLE IF NOT EXISTS wa_auth_keys (
            session_id VARBINARY(255) NOT NULL,
            type VARBINARY(128) NOT NULL,
            id VARBINARY(1024) NOT NULL,
            value LONGBLOB NOT NULL,
            updated_at BIGINT NOT NULL,
            PRIMARY KEY (session_id, type, id)) ENGINE=InnoDB",
        ],
    ),
    (
        2,
        &[
            "ALTER TABLE wa_auth_sessions
            ADD COLUMN version BIGINT NOT NULL DEFAULT 0,
            ADD COLUMN creds_version BIGINT NOT NULL DEFAULT 0,
            ADD COLUMN cleared_version BIGINT NOT NULL DEFAULT 0,
            ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE wa_auth_keys
            ADD COLUMN version BIGINT NOT NULL DEFAULT 0,
            MODIFY value LONGBLOB NULL",
            "CREATE TABLE IF NOT EXISTS wa_auth_leases (
            session_id VARBINARY(255) NOT NULL PRIMARY KEY,
            holder VARBINARY(255) NOT NULL,
            epoch BIGINT NOT NULL,
            expires_at BIGINT NOT NULL,
            acquired_at BIGINT NOT NULL) ENGINE=InnoDB",
        ],
    ),
    (
        3,
        &["ALTER TABLE wa_auth_leases ADD COLUMN token VARBINARY(64) NOT NULL DEFAULT ''"],
    ),
    (
        4,
        &[
            "ALTER TABLE wa_auth_sessions ADD COLUMN epoch_seq BIGINT NOT NULL DEFAULT 0",
            "CREATE TABLE IF NOT EXISTS wa_auth_settings (
            name VARBINARY(64) NOT NULL PRIMARY KEY,
            value BIGINT NOT NULL) ENGINE=InnoDB",
        ],
    ),
    (
        5,
        &["ALTER TABLE wa_auth_sessions ADD COLUMN sealed BIGINT NOT NULL DEFAULT 0"],
    ),
];

// In ON DUPLICATE KEY UPDATE, assignments see the columns already assigned to their left: the
// versions are raised last.
keyed_statements!(
    MySql,
    MySqlPool,
    sqlx::MySqlConnection,
    "ON DUPLICATE KEY UPDATE
       creds = IF(VALUES(creds_version) > creds_version, VALUES(creds), creds),
       creds_version = GREATEST(creds_version, VALUES(creds_version)),
       cleared_version = GREATEST(cleared_version, VALUES(cleared_version)),
       updated_at = VALUES(updated_at),
       version = GREATEST(version, VALUES(version))",
    "ON DUPLICATE KEY UPDATE
       value = IF(VALUES(version) > version, VALUES(value), value),
       updated_at = IF(VALUES(version) > version, VALUES(updated_at), updated_at),
       version = GREATEST(version, VALUES(version))",
    "SELECT k.type, CAST(COUNT(*) AS SIGNED), CAST(COALESCE(SUM(LENGTH(k.value)), 0) AS SIGNED)
     FROM wa_auth_keys k",
    "BEGIN",
    " FOR UPDATE",
    "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)",
    "INSERT IGNORE INTO",
    "ON DUPLICATE KEY UPDATE token = VALUES(token), holder = VALUES(holder), epoch = VALUES(epoch),
       expires_at = VALUES(expires_at), acquired_at = VALUES(acquired_at)",
    "GREATEST",
    "ON DUPLICATE KEY UPDATE value = GREATEST(value, VALUES(value))"
);

pub(super) async fn connect(opts: &SqlOptions) -> Result<MySqlPool, sqlx::Error> {
    let url = opts.url.replacen("mariadb://", "mysql://", 1);
    let connect = MySqlConnectOptions::from_str(&url)?.charset("utf8mb4");
    let port = connect.get_port();
    super::nodelay::register(port);
    MySqlPoolOptions::new()
        .max_connections(opts.max_connections)
        .acquire_timeout(opts.timeout)
        .after_connect(move |conn, _| Box::pin(prepare(conn, port)))
        .connect_with(connect)
        .await
}

/// What every new connection gets before its first statement (the pool's and the commit
/// lanes' alike).
async fn prepare(conn: &mut MySqlConnection, port: u16) -> Result<(), sqlx::Error> {
    if !super::nodelay::set_before_connect() {
        super::nodelay::enable_towards(port);
    }
    // REPEATABLE READ (InnoDB's default) takes gap locks on the session rows a write locks
    // before it may insert them: concurrent writes of new sessions deadlock. Every write here is
    // one short transaction; READ COMMITTED is what it needs.
    sqlx::query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .execute(&mut *conn)
        .await?;
    // The lease clock is `UNIX_TIMESTAMP(NOW(3))`, which reads NOW() in the connection's time
    // zone: in a zone with daylight saving time, the hour that repeats in autumn maps to two
    // instants and leases would expire an hour off. UTC has no such hour. sqlx sets UTC unless
    // the URL names another zone (`timezone=`), which this overrides on every connection.
    sqlx::query("SET time_zone = '+00:00'")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A connection of the pool's settings outside the pool (a commit lane's own).
pub(super) async fn connect_one(pool: &MySqlPool) -> Result<MySqlConnection, sqlx::Error> {
    let options = pool.connect_options();
    let mut conn = options.connect().await?;
    prepare(&mut conn, options.get_port()).await?;
    Ok(conn)
}

/// DDL commits implicitly in MySQL, so a named lock (held by this connection) serialises
/// migrations between processes instead of a transaction.
pub(super) async fn migrate(pool: &MySqlPool) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 30)")
        .bind(MIGRATION_LOCK)
        .fetch_one(&mut *conn)
        .await?;
    if got != Some(1) {
        return Err(sqlx::Error::Protocol(
            "another process held the migration lock for 30 s".into(),
        ));
    }
    let result = async {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS wa_auth_migrations (version BIGINT NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL) ENGINE=InnoDB",
        )
        .execute(&mut *conn)
        .await?;
        apply_migrations!(
            conn,
            MIGRATIONS,
            "SELECT CAST(COALESCE(MAX(version), 0) AS SIGNED) FROM wa_auth_migrations",
            "INSERT INTO wa_auth_migrations (version, applied_at) VALUES (?, ?)"
        );
        Ok(())
    }
    .await;
    let released = sqlx::query("SELECT RELEASE_LOCK(?)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await;
    result.and(released.map(|_| ()))
}

#[cfg(test)]
mod tests {
    /// The lease clock (`UNIX_TIMESTAMP(NOW(3))`) is read in UTC on every connection the store
    /// makes, the pool's and a commit lane's, even when the URL asks for another zone (sqlx
    /// applies a URL's `timezone=` after connecting; UTC is its default otherwise).
    #[tokio::test]
    async fn every_connection_reads_the_clock_in_utc() {
        let defaults = [
            "mysql://root@127.0.0.1:3306/test",
            "mysql://wa:wa@127.0.0.1:3306/test",
        ];
        let Some(pool) =
            super::super::test_servers::first("MYSQL_URL", &defaults, |mut o| async move {
                let sep = if o.url.contains('?') { '&' } else { '?' };
                o.url = format!("{}{sep}timezone=%2B05:00", o.url);
                super::connect(&o).await
            })
            .await
        else {
            return;
        };
        let zone = "SELECT @@session.time_zone";
        let pooled: String = sqlx::query_scalar(zone).fetch_one(&pool).await.unwrap();
        let mut lane = super::connect_one(&pool).await.unwrap();
        let own: String = sqlx::query_scalar(zone).fetch_one(&mut lane).await.unwrap();
        assert_eq!((pooled.as_str(), own.as_str()), ("+00:00", "+00:00"));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn mysql_sockets_have_nodelay_before_the_handshake() {
        let connect = |port: u16| async move {
            let mut opts =
                crate::config::SqlOptions::new(format!("mysql://u:p@127.0.0.1:{port}/db"));
            opts.timeout = std::time::Duration::from_millis(500);
            // the test server hangs up: the connect fails, which is all it has to do here
            let _ = super::connect(&opts).await;
        };
        assert!(super::super::nodelay::testing::nodelay_before_handshake(
            connect, false
        ));
    }
}
