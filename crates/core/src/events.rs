//! Background failures (a flush that failed, a record Redis lost, an invalidation that did not
//! reach Redis) go to a sink the user gives (the addon forwards them to the JavaScript logger),
//! or to stderr, and are counted. Nothing in the core fails silently.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Where reports go. `code` is a stable `ERR_*`/`WARN_*` name; `message` carries no secret.
pub trait EventSink: Send + Sync {
    fn emit(&self, level: Level, code: &str, message: &str);
}

#[derive(Default)]
pub struct Events {
    sink: RwLock<Option<Arc<dyn EventSink>>>,
    warnings: AtomicU64,
    errors: AtomicU64,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("warnings", &self.warnings.load(Ordering::Relaxed))
            .field("errors", &self.errors.load(Ordering::Relaxed))
            .finish()
    }
}

impl Events {
    pub fn set_sink(&self, sink: Option<Arc<dyn EventSink>>) {
        *self.sink.write() = sink;
    }

    pub fn report(&self, level: Level, code: &str, message: &str) {
        match level {
            Level::Warn => &self.warnings,
            Level::Error => &self.errors,
        }
        .fetch_add(1, Ordering::Relaxed);
        let sink = self.sink.read().clone();
        match sink {
            Some(s) => s.emit(level, code, message),
            None => eprintln!("wa-auth-store {}: {code}: {message}", level.as_str()),
        }
    }

    pub fn warn(&self, code: &str, message: &str) {
        self.report(Level::Warn, code, message)
    }

    pub fn error(&self, code: &str, message: &str) {
        self.report(Level::Error, code, message)
    }

    /// Warnings and errors reported so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.warnings.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}
