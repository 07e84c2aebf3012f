//! Answers of native calls to JavaScript through one long-lived threadsafe function, instead
//! of a promise per call.
//!
//! A napi-rs async call makes a threadsafe function per call (create, call, release: a libuv
//! handle each, opened and closed on the JavaScript thread) and wakes the JavaScript thread once
//! per answer. Here a call carries a request id; its answer joins a queue, and the JavaScript
//! thread is woken once for everything queued by then: under load (a hundred sessions writing)
//! one wake settles many writes. The facade (`lib/completions.js`) keeps the promises by id.
//!
//! Every request is answered exactly once: a task that ends without answering (a panic, a
//! runtime shutting down) answers with an error as it is dropped.

use std::sync::Arc;

use napi::bindgen_prelude::{FnArgs, Function};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use parking_lot::Mutex;

/// What JavaScript's handler receives: request ids, their results (a version as a number), and
/// their errors (`"<CODE>: <message>"`, or null where the call succeeded), index for index.
pub type DoneArgs = FnArgs<(Vec<u32>, Vec<f64>, Vec<Option<String>>)>;

type DoneFn = ThreadsafeFunction<(), (), DoneArgs, napi::Status, false, true>;

/// The answers not yet handed to JavaScript.
type Queue = Arc<Mutex<Vec<(u32, Result<f64, String>)>>>;

pub struct Completions {
    queue: Queue,
    wake: DoneFn,
}

impl Completions {
    /// Answers go to `handler`. The threadsafe function is weak: it never keeps Node running
    /// by itself (the facade keeps the event loop alive while requests are pending).
    pub fn new(handler: Function<DoneArgs, ()>) -> napi::Result<Self> {
        let queue: Queue = Arc::default();
        let drained = queue.clone();
        let wake = handler
            .build_threadsafe_function::<()>()
            .weak::<true>()
            .build_callback(move |_| {
                // on the JavaScript thread: everything answered since the last wake
                let items = std::mem::take(&mut *drained.lock());
                let mut ids = Vec::with_capacity(items.len());
                let mut values = Vec::with_capacity(items.len());
                let mut errors = Vec::with_capacity(items.len());
                for (id, r) in items {
                    ids.push(id);
                    match r {
                        Ok(v) => {
                            values.push(v);
                            errors.push(None);
                        }
                        Err(e) => {
                            values.push(0.0);
                            errors.push(Some(e));
                        }
                    }
                }
                Ok(FnArgs::from((ids, values, errors)))
            })?;
        Ok(Completions { queue, wake })
    }

    /// A request's answer slot: answer it with [`Pending::answer`]; dropped unanswered, it
    /// answers with an error.
    pub fn pending(self: &Arc<Self>, id: u32) -> Pending {
        Pending {
            id,
            to: Some(self.clone()),
        }
    }

    fn push(&self, id: u32, r: Result<f64, String>) {
        let first = {
            let mut q = self.queue.lock();
            q.push((id, r));
            q.len() == 1
        };
        // a wake is already on its way for a queue that was not empty: it takes this one too
        if first {
            self.wake.call((), ThreadsafeFunctionCallMode::NonBlocking);
        }
    }
}

/// One request's answer, owed to JavaScript.
pub struct Pending {
    id: u32,
    to: Option<Arc<Completions>>,
}

impl Pending {
    pub fn answer(mut self, r: napi::Result<f64>) {
        if let Some(to) = self.to.take() {
            to.push(self.id, r.map_err(|e| e.reason));
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(to) = self.to.take() {
            to.push(
                self.id,
                Err(
                    "wa-auth-store: the call's native task ended without an answer (a panic, or \
                     the runtime shutting down)"
                        .into(),
                ),
            );
        }
    }
}
