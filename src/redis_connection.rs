use std::collections::HashMap;
use std::sync::Arc;

use napi::bindgen_prelude::Buffer;
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

    /// Every key matching the glob, raw names (the key prefix is not added), from every primary
    /// of a cluster. For the import tools.
    #[napi]
    pub async fn scan_keys(&self, pattern: String) -> napi::Result<Vec<String>> {
        self.inner.scan_raw(&pattern).await.napi()
    }

    /// A string key's bytes, raw name.
    #[napi]
    pub async fn get_buffer(&self, key: String) -> napi::Result<Option<Buffer>> {
        Ok(self
            .inner
            .get_raw(&key)
            .await
            .napi()?
            .map(|b| Buffer::from(b.to_vec())))
    }

    /// A hash key's fields and their bytes, raw name.
    #[napi]
    pub async fn hgetall_buffers(&self, key: String) -> napi::Result<HashMap<String, Buffer>> {
        Ok(self
            .inner
            .hgetall_raw(&key)
            .await
            .napi()?
            .into_iter()
            .map(|(k, v)| (k, Buffer::from(v.to_vec())))
            .collect())
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
