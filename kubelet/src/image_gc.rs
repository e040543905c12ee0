//! Image garbage collection, as kubelet's image GC manager does it: every 5 minutes, when the
//! filesystem holding the images is at least 85% full, remove images no container uses, least
//! recently used first, until it is below 80%. An image is never removed within 2 minutes of
//! being first seen, so a pull is not undone before its container starts. When not enough can
//! be freed, a FreeDiskSpaceFailed warning goes to the node's events.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nodelet_runtime::image::{ImageStore, ImageSummary};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::events::{node_reference, EventRecorder, EventType};

/// kubelet's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImageGcPolicy {
    pub high_threshold_percent: u8,
    pub low_threshold_percent: u8,
    pub minimum_age: Duration,
    pub period: Duration,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        ImageGcPolicy {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            minimum_age: Duration::from_secs(2 * 60),
            period: Duration::from_secs(5 * 60),
        }
    }
}

/// Bytes of the filesystem holding the images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskUsage {
    pub capacity: u64,
    pub available: u64,
}

impl DiskUsage {
    pub fn of(path: &Path) -> std::io::Result<DiskUsage> {
        let stat = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
        let block = stat.fragment_size();
        Ok(DiskUsage { capacity: stat.blocks() * block, available: stat.blocks_available() * block })
    }

    fn used_percent(self) -> u64 {
        if self.capacity == 0 {
            return 0;
        }
        (self.capacity - self.available.min(self.capacity)) * 100 / self.capacity
    }
}

/// When each image (by manifest digest) was first seen and last seen in use.
#[derive(Default)]
pub struct ImageRecords {
    records: HashMap<String, (Instant, Instant)>,
}

impl ImageRecords {
    /// Note the images present now; those in use are used now. Forget the ones gone.
    pub fn observe(&mut self, images: &[ImageSummary], in_use: &HashSet<String>, now: Instant) {
        let present: HashSet<&str> = images.iter().map(|image| image.digest.as_str()).collect();
        self.records.retain(|digest, _| present.contains(digest.as_str()));
        for digest in present {
            let record = self.records.entry(digest.to_string()).or_insert((now, now));
            if in_use.contains(digest) {
                record.1 = now;
            }
        }
    }
}

/// The manifest digests to remove, in order, to bring `usage` below the low threshold (None
/// when below the high one): unused images older than the minimum age, least recently used
/// first. Sizes are what each image's removal is expected to free.
pub fn plan(
    images: &[ImageSummary],
    in_use: &HashSet<String>,
    records: &ImageRecords,
    usage: DiskUsage,
    policy: &ImageGcPolicy,
    now: Instant,
) -> Option<(u64, Vec<String>)> {
    if usage.used_percent() < u64::from(policy.high_threshold_percent) {
        return None;
    }
    let target_available = usage.capacity * (100 - u64::from(policy.low_threshold_percent)) / 100;
    let to_free = target_available.saturating_sub(usage.available);
    let mut candidates: Vec<(Instant, &str)> = Vec::new();
    let mut seen = HashSet::new();
    for image in images {
        let digest = image.digest.as_str();
        if in_use.contains(digest) || !seen.insert(digest) {
            continue;
        }
        let Some(&(first_seen, last_used)) = records.records.get(digest) else {
            continue; // not observed yet: too young to judge
        };
        if now.duration_since(first_seen) < policy.minimum_age {
            continue;
        }
        candidates.push((last_used, digest));
    }
    candidates.sort();
    Some((to_free, candidates.into_iter().map(|(_, digest)| digest.to_string()).collect()))
}

/// Run the collection every `policy.period` until `shutdown`.
pub async fn run_image_gc(
    store: Arc<ImageStore>,
    policy: ImageGcPolicy,
    events: EventRecorder,
    node_name: String,
    shutdown: CancellationToken,
) {
    let mut records = ImageRecords::default();
    loop {
        let store_for_round = store.clone();
        let round = tokio::task::spawn_blocking(move || {
            let images = store_for_round.summaries()?;
            let in_use = store_for_round.images_in_use()?;
            Ok::<_, nodelet_runtime::image::ImageError>((images, in_use))
        })
        .await;
        match round {
            Ok(Ok((images, in_use))) => {
                let now = Instant::now();
                records.observe(&images, &in_use, now);
                collect(&store, &images, &in_use, &records, &policy, now, &events, &node_name).await;
            }
            Ok(Err(error)) => tracing::warn!("image garbage collection: {}", nodelet_runtime::error_chain(&error)),
            Err(error) => tracing::warn!(%error, "image garbage collection"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(policy.period) => {}
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn collect(
    store: &Arc<ImageStore>,
    images: &[ImageSummary],
    in_use: &HashSet<String>,
    records: &ImageRecords,
    policy: &ImageGcPolicy,
    now: Instant,
    events: &EventRecorder,
    node_name: &str,
) {
    let usage = match DiskUsage::of(store.root()) {
        Ok(usage) => usage,
        Err(error) => {
            tracing::warn!(path = %store.root().display(), %error, "image filesystem usage");
            return;
        }
    };
    let Some((to_free, candidates)) = plan(images, in_use, records, usage, policy, now) else {
        return;
    };
    tracing::info!(used_percent = usage.used_percent(), to_free, "image filesystem above the high threshold");
    let target = usage.available + to_free;
    let mut available = usage.available;
    for digest in candidates {
        if available >= target {
            break;
        }
        let store = store.clone();
        let removed = tokio::task::spawn_blocking(move || {
            let removed = store.remove(&digest);
            (removed, DiskUsage::of(store.root()))
        })
        .await;
        match removed {
            Ok((Ok(removed), usage)) => {
                tracing::info!(images = ?removed.images, "image garbage collection removed");
                if let Ok(usage) = usage {
                    available = usage.available;
                }
            }
            Ok((Err(error), _)) => tracing::warn!("removing an image: {}", nodelet_runtime::error_chain(&error)),
            Err(error) => tracing::warn!(%error, "removing an image"),
        }
    }
    if available < target {
        let message = format!(
            "Failed to garbage collect required amount of images. Attempted to free {to_free} bytes, but only found {} bytes eligible to free.",
            available.saturating_sub(usage.available)
        );
        events.record(node_reference(node_name), EventType::Warning, "FreeDiskSpaceFailed", message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(digest: &str) -> ImageSummary {
        ImageSummary {
            reference: format!("r/{digest}:1"),
            digest: digest.to_string(),
            repo_digest: format!("r/{digest}@{digest}"),
            size: 10,
        }
    }

    const GIB: u64 = 1 << 30;

    #[tokio::test(start_paused = true)]
    async fn frees_unused_images_least_recently_used_first_above_the_high_threshold() {
        let policy = ImageGcPolicy::default();
        let images = vec![image("a"), image("b"), image("c"), image("young")];
        let mut records = ImageRecords::default();
        let start = Instant::now();
        records.observe(&images[..3], &HashSet::from(["a".to_string(), "b".to_string()]), start);
        tokio::time::advance(Duration::from_secs(600)).await;
        // a is still in use, b was last used 10 minutes ago, c never; "young" just appeared.
        let in_use = HashSet::from(["a".to_string()]);
        records.observe(&images, &in_use, Instant::now());
        let below = DiskUsage { capacity: 100 * GIB, available: 20 * GIB };
        assert_eq!(plan(&images, &in_use, &records, below, &policy, Instant::now()), None, "80% used: nothing to do");
        let full = DiskUsage { capacity: 100 * GIB, available: 10 * GIB };
        let (to_free, order) = plan(&images, &in_use, &records, full, &policy, Instant::now()).expect("above 85%");
        assert_eq!(to_free, 10 * GIB, "down to 80%");
        assert_eq!(order, ["b", "c"], "in use and young images are kept; b and c were both last used at start");
    }

    #[test]
    fn usage_percent() {
        assert_eq!(DiskUsage { capacity: 200, available: 30 }.used_percent(), 85);
        assert_eq!(DiskUsage { capacity: 0, available: 0 }.used_percent(), 0);
    }
}
