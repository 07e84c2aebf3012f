use std::sync::Arc;

use napi_derive::napi;
use wa_auth_core::config::DEFAULT_TIMEOUT;
use wa_auth_core::sql::Dialect;
use wa_auth_core::{SqlOptions, SqlStore};

use crate::error::{millis, IntoNapi};

#[napi(object)]
pub struct SqlConnectOptions {
    /// `postgres://…`, `mysql://…`, `mariadb://…`, `sqlite://path`, `sqlite::memory:`.
    pub url: String,
    /// Pool size (default 10; SQLite files use at most 4, SQLite in memory 1).
    pub max_connections: Option<u32>,
    /// Deadline of one statement or transaction in milliseconds (default 5000).
    pub timeout_ms: Option<f64>,
}

/// One SQL pool (sqlx) with the schema migrated, shared by the stores built on it.
#[napi]
pub struct SqlConnection {
    pub(crate) inner: Arc<SqlStore>,
}

#[napi]
impl SqlConnection {
    #[napi(factory)]
    pub async fn connect(options: SqlConnectOptions) -> napi::Result<SqlConnection> {
        let mut o = SqlOptions::new(options.url);
        if let Some(n) = options.max_connections {
            o.max_connections = n;
        }
        o.timeout = millis(options.timeout_ms, DEFAULT_TIMEOUT)?;
        let inner = SqlStore::connect(o).await.napi()?;
        Ok(SqlConnection { inner })
    }

    /// `postgres`, `mysql` or `sqlite`.
    #[napi(getter)]
    pub fn dialect(&self) -> &'static str {
        match self.inner.dialect() {
            Dialect::Postgres => "postgres",
            Dialect::MySql => "mysql",
            Dialect::Sqlite => "sqlite",
        }
    }

    #[napi]
    pub async fn schema_version(&self) -> napi::Result<i64> {
        self.inner.schema_version().await.napi()
    }

    #[napi]
    pub async fn close(&self) -> napi::Result<()> {
        self.inner.close().await;
        Ok(())
    }

    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.inner.is_closed()
    }
}
