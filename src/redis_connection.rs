use std::sync::Arc;

use napi_derive::napi;
use wa_auth_core::config::DEFAULT_TIMEOUT;
use wa_auth_core::{RedisOptions, RedisTier};

use crate::error::{millis, IntoNapi};

#[napi(object)]
pub struct RedisConnectOptions {
    /// `redis://`, `rediss://`, `redis-cluster://`, `redis-sentinel://` URL.
    pub url: String,
    /// Prefix of every key (default `wa`).
    pub key_prefix: Option<String>,
    /// Deadline of one command in milliseconds (default 5000).
    pub timeout_ms: Option<f64>,
}

/// One Redis client (fred), shared by the stores built on it.
#[napi]
pub struct RedisConnection {
    pub(crate) inner: Arc<RedisTier>,
}

#[napi]
impl RedisConnection {
    #[napi(factory)]
    pub async fn connect(options: RedisConnectOptions) -> napi::Result<RedisConnection> {
        let mut o = RedisOptions::new(options.url);
        if let Some(p) = options.key_prefix {
            o.key_prefix = p;
        }
        o.timeout = millis(options.timeout_ms, DEFAULT_TIMEOUT)?;
        let inner = RedisTier::connect(o).await.napi()?;
        Ok(RedisConnection { inner })
    }

    #[napi]
    pub async fn ping(&self) -> napi::Result<()> {
        self.inner.ping().await.napi()
    }

    #[napi]
    pub async fn close(&self) -> napi::Result<()> {
        self.inner.close().await;
        Ok(())
    }

    #[napi(getter)]
    pub fn key_prefix(&self) -> String {
        self.inner.prefix().to_string()
    }

    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.inner.is_closed()
    }
}
