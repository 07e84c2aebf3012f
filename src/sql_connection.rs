use std::collections::HashMap;
use std::sync::Arc;

use napi::bindgen_prelude::{Buffer, Either3, Promise};
use napi::threadsafe_function::ThreadsafeFunction;
use napi_derive::napi;
use wa_auth_core::config::DEFAULT_TIMEOUT;
use wa_auth_core::sql::plugin::PluginTransport;
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

/// What a persistence plug-in's handler is: a JSON request in, a Promise of the JSON answer out.
/// Weak: an idle store keeps no Node process alive (a call in flight has the store's own
/// pending promise keeping the loop alive).
type PluginFn = ThreadsafeFunction<String, Promise<String>, String, napi::Status, false, true>;

struct JsPlugin(Arc<PluginFn>);

impl PluginTransport for JsPlugin {
    fn call(
        &self,
        request: String,
    ) -> futures_boxed::BoxFuture<'static, std::result::Result<String, String>> {
        let f = self.0.clone();
        Box::pin(async move {
            let answer = f.call_async(request).await.map_err(|e| e.reason.clone())?;
            answer.await.map_err(|e| e.reason.clone())
        })
    }
}

mod futures_boxed {
    pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
}

#[napi(object)]
pub struct PluginConnectOptions {
    /// Deadline of one operation in milliseconds (default 5000).
    pub timeout_ms: Option<f64>,
    /// Group commits sent to the plug-in at once (default 2).
    pub parallel: Option<u32>,
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

    /// The durable tier of a persistence plug-in: `handler(requestJson)` answers each operation
    /// (lib/persistence/driver.js builds it from a Persistence object).
    #[napi(
        factory,
        ts_args_type = "handler: (request: string) => Promise<string>, options?: PluginConnectOptions | undefined | null"
    )]
    pub fn from_plugin(
        handler: PluginFn,
        options: Option<PluginConnectOptions>,
    ) -> napi::Result<SqlConnection> {
        let (timeout_ms, parallel) = options.map_or((None, None), |o| (o.timeout_ms, o.parallel));
        let timeout = millis(timeout_ms, DEFAULT_TIMEOUT)?;
        let inner = SqlStore::from_plugin(
            Arc::new(JsPlugin(Arc::new(handler))),
            timeout,
            parallel.unwrap_or(2),
        )
        .napi()?;
        Ok(SqlConnection { inner })
    }

    /// `postgres`, `mysql`, `sqlite` or `plugin`.
    #[napi(getter)]
    pub fn dialect(&self) -> &'static str {
        match self.inner.dialect() {
            Dialect::Postgres => "postgres",
            Dialect::MySql => "mysql",
            Dialect::Sqlite => "sqlite",
            Dialect::Plugin => "plugin",
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
