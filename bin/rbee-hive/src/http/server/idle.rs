//! The connections that have no request in flight, oldest idle first: the ones a newcomer at
//! the connection cap may take the place of.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The connections that have no request in flight, oldest idle first, each with the token
/// that closes it. A connection is in it only while idle.
#[derive(Clone, Default)]
pub(super) struct IdleConnections {
    // std Mutex: held for a map operation, never across an await.
    by_age: Arc<std::sync::Mutex<std::collections::BTreeMap<(Instant, u64), CancellationToken>>>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
}

impl IdleConnections {
    /// A key for a connection that became idle at `since`.
    fn key(&self, since: Instant) -> (Instant, u64) {
        (since, self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn insert(&self, key: (Instant, u64), evict: CancellationToken) {
        self.lock().insert(key, evict);
    }

    fn remove(&self, key: &(Instant, u64)) {
        self.lock().remove(key);
    }

    /// Closes the connection idle longest; false if none is idle.
    pub(super) fn evict_oldest(&self) -> bool {
        let mut idle = self.lock();
        while let Some((_, evict)) = idle.pop_first() {
            // One already told to go (it had a request when chosen, and is closing) does
            // not give a second place.
            if !evict.is_cancelled() {
                evict.cancel();
                return true;
            }
        }
        false
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<(Instant, u64), CancellationToken>>
    {
        self.by_age.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Takes a connection out of [`IdleConnections`] when it ends.
pub(super) struct IdleEntry {
    pub(super) idle: IdleConnections,
    pub(super) key: Option<(Instant, u64)>,
}

impl IdleEntry {
    /// Listed as idle since `since` (once; never once it was evicted: it is closing).
    pub(super) fn set_idle(&mut self, since: Instant, evict: &CancellationToken) {
        if self.key.is_none() && !evict.is_cancelled() {
            let key = self.idle.key(since);
            self.idle.insert(key, evict.clone());
            self.key = Some(key);
        }
    }

    /// Not idle any more.
    pub(super) fn set_busy(&mut self) {
        if let Some(key) = self.key.take() {
            self.idle.remove(&key);
        }
    }
}

impl Drop for IdleEntry {
    fn drop(&mut self) {
        self.set_busy();
    }
}
