use std::collections::HashMap;
use std::sync::Arc;

use napi::bindgen_prelude::{Buffer, Either3};
use napi_derive::napi;
use wa_auth_core::config::DEFAULT_TIMEOUT;
use wa_auth_core::sql::raw::Cell;
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
    /// Create or upgrade the store's schema (default true; false for a database the tools only
    /// read).
    pub migrate: Option<bool>,
    /// Open a SQLite file read-only and unchanged (default false).
    pub read_only: Option<bool>,
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
        o.migrate = options.migrate.unwrap_or(true);
        o.read_only = options.read_only.unwrap_or(false);
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

    /// Runs one statement written for this dialect (`$1` / `?` placeholders, parameters bound as
    /// text) and returns its rows as objects: text as strings, bytes as Buffers, numbers as
    /// numbers, NULL as null. For the import tools, which read other packages' tables.
    #[napi(ts_return_type = "Promise<Array<Record<string, string | Buffer | number | null>>>")]
    pub async fn query(
        &self,
        sql: String,
        params: Option<Vec<String>>,
    ) -> napi::Result<Vec<HashMap<String, Option<Either3<String, Buffer, f64>>>>> {
        let rows = self
            .inner
            .query_rows(&sql, &params.unwrap_or_default())
            .await
            .napi()?;
        Ok(rows
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|(name, cell)| {
                        let v = match cell {
                            Cell::Null => None,
                            Cell::Text(s) => Some(Either3::A(s)),
                            Cell::Bytes(b) => Some(Either3::B(Buffer::from(b))),
                            Cell::Int(i) => Some(Either3::C(i as f64)),
                            Cell::Float(f) => Some(Either3::C(f)),
                        };
                        (name, v)
                    })
                    .collect()
            })
            .collect())
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
