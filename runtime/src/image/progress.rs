//! Pull progress callbacks, one call per received chunk of each layer.

/// Told how far each layer's download has got. `downloaded == total` once a layer is complete
/// (also reported, once, for a layer that was already in the store).
pub trait PullProgress: Send + Sync {
    fn layer(&self, digest: &str, downloaded: u64, total: u64);
}

/// Progress that goes nowhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl PullProgress for NoProgress {
    fn layer(&self, _digest: &str, _downloaded: u64, _total: u64) {}
}
