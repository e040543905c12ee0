//! A pull's pins as every user of the store sees them: [`PublishedPins`] pins digests in this
//! process ([`Inflight`]) and publishes the store's busy set in its work directory for the
//! collectors of other processes (see [`super::work_dir`]).
//!
//! Publishing takes the store lock, which another process may hold across fsyncs and blob
//! removals: it runs on tokio's blocking threads, never on an async worker. Pins dropped
//! without a release (a pull future dropped mid-way, e.g. its pod deleted) are republished
//! in the background, so that stale pins do not keep content from other collectors.

use std::sync::Arc;

use super::inflight::{Inflight, PinGuard};
use super::store::Layout;
use super::store_lock::StoreLockGuard;
use super::{Digest, ImageError};

/// One pull's pins, published; see the module docs.
pub struct PublishedPins {
    layout: Layout,
    inflight: Arc<Inflight>,
    /// `None` once released.
    pin: Option<PinGuard>,
}

impl PublishedPins {
    /// Pin `digests` and publish them: once this returns, no collector (here or in another
    /// process) removes them.
    pub async fn pin(layout: &Layout, inflight: &Arc<Inflight>, digests: Vec<Digest>) -> Result<Self, ImageError> {
        let pins =
            PublishedPins { layout: layout.clone(), inflight: inflight.clone(), pin: Some(inflight.pin(digests)) };
        pins.publish().await?;
        Ok(pins)
    }

    /// Pin more digests (learnt later in the pull) and publish them.
    pub async fn extend(&mut self, digests: Vec<Digest>) -> Result<(), ImageError> {
        if let Some(pin) = &mut self.pin {
            pin.extend(digests);
        }
        self.publish().await
    }

    /// Unpin and publish the busy set without these pins; returns once it is published.
    pub async fn release(mut self) -> Result<(), ImageError> {
        drop(self.pin.take());
        self.publish().await
    }

    /// Unpin and publish under the store lock `held`: the caller indexes the image in the
    /// same locked section, so a collector sees the content either pinned or indexed.
    pub fn release_locked(mut self, held: &StoreLockGuard) -> Result<(), ImageError> {
        drop(self.pin.take());
        self.layout.publish_busy_locked(held, &self.inflight.busy())
    }

    async fn publish(&self) -> Result<(), ImageError> {
        let (layout, inflight) = (self.layout.clone(), self.inflight.clone());
        tokio::task::spawn_blocking(move || layout.publish_busy(|| inflight.busy()))
            .await
            .map_err(|source| ImageError::Task { what: "publishing the store's pinned digests".to_string(), source })?
    }
}

impl Drop for PublishedPins {
    fn drop(&mut self) {
        let Some(pin) = self.pin.take() else { return };
        drop(pin);
        let (layout, inflight) = (self.layout.clone(), self.inflight.clone());
        let republish = move || {
            // Computed under the lock: a newer set published meanwhile is never overwritten
            // by this older one.
            if let Err(e) = layout.publish_busy(|| inflight.busy()) {
                tracing::warn!(error = %crate::error_chain(&e), "cannot update the store's pinned digests");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(republish)),
            Err(_) => republish(),
        }
    }
}
