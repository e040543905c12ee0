//! One download per digest at a time within a process: concurrent pulls of the same image, or
//! of images sharing a layer, take a per-digest async lock; the first holder downloads and
//! unpacks, the others wait and then find the content in the store.
//!
//! The garbage collector consults the same map, so it never removes content that a pull is
//! still writing.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use super::Digest;

#[derive(Default)]
pub struct Inflight {
    locks: Mutex<HashMap<Digest, Arc<AsyncMutex<()>>>>,
    /// Digests (blobs and diff ids) of pulls not yet recorded in the index, with how many
    /// pulls need each: content written but not yet referenced must survive a collection.
    pins: Mutex<HashMap<Digest, usize>>,
}

/// Keeps a pull's digests from the garbage collector until dropped (owns its `Inflight`, so
/// that it can move to a blocking thread with the index update that ends it).
pub struct PinGuard {
    inflight: Arc<Inflight>,
    digests: Vec<Digest>,
}

/// Held while a digest's content is being fetched; releases and forgets the lock on drop.
pub struct InflightGuard<'a> {
    inflight: &'a Inflight,
    digest: Digest,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Inflight {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<AsyncMutex<()>>>> {
        // The map stays consistent through a panic (single inserts and removes).
        self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wait until no one else in this process works on `digest`, then own it.
    pub async fn lock(&self, digest: &Digest) -> InflightGuard<'_> {
        let lock = self.map().entry(digest.clone()).or_default().clone();
        let guard = lock.lock_owned().await;
        InflightGuard { inflight: self, digest: digest.clone(), guard: Some(guard) }
    }

    fn pin_map(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, usize>> {
        self.pins.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn pin(self: &Arc<Self>, digests: Vec<Digest>) -> PinGuard {
        let mut pins = self.pin_map();
        for digest in &digests {
            *pins.entry(digest.clone()).or_default() += 1;
        }
        PinGuard { inflight: self.clone(), digests }
    }

    /// Digests some pull is working on, waiting for or has not indexed yet.
    pub fn busy(&self) -> HashSet<Digest> {
        let mut busy: HashSet<Digest> = self.map().keys().cloned().collect();
        busy.extend(self.pin_map().keys().cloned());
        busy
    }
}

impl PinGuard {
    /// Pin more digests (learnt later in the pull, e.g. diff ids from the config).
    pub fn extend(&mut self, digests: Vec<Digest>) {
        let mut pins = self.inflight.pin_map();
        for digest in &digests {
            *pins.entry(digest.clone()).or_default() += 1;
        }
        self.digests.extend(digests);
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let mut pins = self.inflight.pin_map();
        for digest in &self.digests {
            if let Some(count) = pins.get_mut(digest) {
                *count -= 1;
                if *count == 0 {
                    pins.remove(digest);
                }
            }
        }
    }
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.inflight.map();
        // Only the map's own reference left: no holder and no waiter, forget the entry. New
        // waiters clone the Arc under the same map lock, so this cannot race with them.
        if map.get(&self.digest).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            map.remove(&self.digest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serialises_per_digest_and_forgets_released_entries() {
        let inflight = Arc::new(Inflight::default());
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let first = inflight.lock(&a).await;
        // Another digest is independent.
        let other = inflight.lock(&b).await;
        assert_eq!(inflight.busy().len(), 2);
        drop(other);
        assert_eq!(inflight.busy(), HashSet::from([a.clone()]));
        // The same digest waits for the first holder.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), inflight.lock(&a)).await;
        assert!(waiting.is_err(), "a second lock of the same digest must wait");
        drop(first);
        let again = inflight.lock(&a).await;
        drop(again);
        assert!(inflight.busy().is_empty());

        let pinned = inflight.pin(vec![b.clone()]);
        let twice = inflight.pin(vec![b.clone()]);
        drop(pinned);
        assert_eq!(inflight.busy(), HashSet::from([b.clone()]));
        drop(twice);
        assert!(inflight.busy().is_empty());
    }
}
