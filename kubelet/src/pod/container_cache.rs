//! The node's containers as the monitor last pushed them ([`Runtime::watch`]): pod workers
//! read their own containers here without a round trip to the monitor, and wake as soon as
//! one of them changes instead of polling (kubelet's evented PLEG, without the relist).
//!
//! Read-your-writes: after a create, start or delete the worker steps again at once, and
//! must see what it just did. The monitor numbers its changes and sends each to watchers
//! before it answers the request that made it; [`ContainerCache::caught_up`] waits until
//! the watch has applied the number on that answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nodelet_runtime::monitor::{ContainerEvent, ContainerState, Runtime};
use tokio::sync::watch;

use super::ids::ANNOTATION_POD_UID;

/// How long a reader waits for the watch to catch up before it asks the monitor itself.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

pub struct ContainerCache {
    inner: Mutex<Inner>,
    /// The change number applied last; 0 while no watch is live.
    applied: watch::Sender<u64>,
}

#[derive(Default)]
struct Inner {
    /// A watch is live and `containers` is current.
    synced: bool,
    containers: HashMap<String, ContainerState>,
    /// One waker per pod uid that a worker subscribed to.
    wakers: HashMap<String, watch::Sender<()>>,
}

impl ContainerCache {
    pub fn new() -> Arc<ContainerCache> {
        Arc::new(ContainerCache { inner: Mutex::default(), applied: watch::channel(0).0 })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The pod's containers; None while no watch is live (ask the monitor instead).
    pub fn pod(&self, pod_uid: &str) -> Option<Vec<ContainerState>> {
        let inner = self.lock();
        inner.synced.then(|| inner.containers.values().filter(|c| pod_uid_of(c) == Some(pod_uid)).cloned().collect())
    }

    /// Fires whenever one of the pod's containers changes, or the watch is lost or renewed.
    pub fn subscribe(&self, pod_uid: &str) -> watch::Receiver<()> {
        let mut inner = self.lock();
        inner.wakers.retain(|_, waker| !waker.is_closed());
        inner.wakers.entry(pod_uid.to_string()).or_insert_with(|| watch::channel(()).0).subscribe()
    }

    /// Wait until the watch has applied change `seq` (the number on a monitor answer). Gives
    /// up after [`CATCH_UP_TIMEOUT`] or when no watch is live: readers then ask the monitor.
    pub async fn caught_up(&self, seq: u64) {
        let mut applied = self.applied.subscribe();
        let _ = tokio::time::timeout(CATCH_UP_TIMEOUT, applied.wait_for(|&at| at == 0 || at >= seq)).await;
    }

    fn replace(&self, states: Vec<ContainerState>, seq: u64) {
        let mut inner = self.lock();
        inner.containers = states.into_iter().map(|state| (state.id.clone(), state)).collect();
        inner.synced = true;
        wake_all(&inner);
        drop(inner);
        self.applied.send_replace(seq);
    }

    fn apply(&self, event: ContainerEvent) {
        let seq = event.seq();
        let mut inner = self.lock();
        let pod = match event {
            ContainerEvent::Changed { state, .. } => {
                let pod = pod_uid_of(&state).map(str::to_string);
                inner.containers.insert(state.id.clone(), state);
                pod
            }
            ContainerEvent::Deleted { id, .. } => {
                inner.containers.remove(&id).and_then(|state| pod_uid_of(&state).map(str::to_string))
            }
        };
        if let Some(waker) = pod.and_then(|uid| inner.wakers.get(&uid)) {
            waker.send_replace(());
        }
        drop(inner);
        self.applied.send_replace(seq);
    }

    fn lost(&self) {
        let mut inner = self.lock();
        if inner.synced {
            inner.synced = false;
            inner.containers.clear();
            wake_all(&inner);
        }
        drop(inner);
        self.applied.send_replace(0);
    }
}

fn wake_all(inner: &Inner) {
    for waker in inner.wakers.values() {
        waker.send_replace(());
    }
}

fn pod_uid_of(state: &ContainerState) -> Option<&str> {
    state.annotations.get(ANNOTATION_POD_UID).map(String::as_str)
}

/// Keep `cache` current from the monitor's watch, reconnecting (and re-listing) whenever
/// the connection ends, e.g. when the monitor restarts. Runs until the task is dropped.
pub async fn keep_current(cache: Arc<ContainerCache>, monitor: Runtime) {
    let mut delay = RETRY_MIN;
    loop {
        match monitor.watch().await {
            Ok(start) => {
                tracing::debug!(containers = start.states.len(), "watching the container monitor");
                cache.replace(start.states, start.seq);
                delay = RETRY_MIN;
                let mut events = start.events;
                loop {
                    match events.next().await {
                        Ok(Some(event)) => cache.apply(event),
                        Ok(None) => {
                            tracing::info!("the container monitor ended its watch");
                            break;
                        }
                        Err(error) => {
                            tracing::warn!("watching the container monitor: {}", nodelet_runtime::error_chain(&error));
                            break;
                        }
                    }
                }
            }
            // A monitor from before watching answers with an error: workers poll it.
            Err(error) => {
                tracing::debug!("cannot watch the container monitor: {}", nodelet_runtime::error_chain(&error))
            }
        }
        cache.lost();
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RETRY_MAX);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use nodelet_runtime::monitor::ContainerStatus;

    use super::*;

    fn state(id: &str, pod: &str, status: ContainerStatus) -> ContainerState {
        ContainerState {
            id: id.to_string(),
            status,
            pid: None,
            bundle: "/b".into(),
            created_at: chrono::Utc::now(),
            started_at: None,
            finished_at: None,
            exit_code: None,
            oom_killed: false,
            annotations: BTreeMap::from([(ANNOTATION_POD_UID.to_string(), pod.to_string())]),
        }
    }

    #[tokio::test]
    async fn reads_only_while_synced_and_wakes_only_the_pod_that_changed() {
        let cache = ContainerCache::new();
        assert_eq!(cache.pod("a"), None, "no watch yet");
        let mut a = cache.subscribe("a");
        let mut b = cache.subscribe("b");
        cache.replace(vec![state("a-c-0", "a", ContainerStatus::Created)], 10);
        assert!(a.has_changed().unwrap() && b.has_changed().unwrap(), "a new list wakes everyone");
        a.borrow_and_update();
        b.borrow_and_update();
        assert_eq!(cache.pod("a").unwrap().len(), 1);
        assert!(cache.pod("b").unwrap().is_empty());

        cache.apply(ContainerEvent::Changed { state: state("a-c-0", "a", ContainerStatus::Running), seq: 11 });
        assert!(a.has_changed().unwrap());
        assert!(!b.has_changed().unwrap());
        assert_eq!(cache.pod("a").unwrap()[0].status, ContainerStatus::Running);

        cache.apply(ContainerEvent::Deleted { id: "a-c-0".to_string(), seq: 12 });
        assert!(cache.pod("a").unwrap().is_empty());

        cache.lost();
        assert_eq!(cache.pod("a"), None);
    }

    #[tokio::test]
    async fn caught_up_waits_for_the_change_number() {
        let cache = ContainerCache::new();
        cache.replace(Vec::new(), 5);
        let waiter = tokio::spawn({
            let cache = cache.clone();
            async move { cache.caught_up(7).await }
        });
        tokio::task::yield_now().await;
        cache.apply(ContainerEvent::Changed { state: state("x", "p", ContainerStatus::Created), seq: 6 });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "6 < 7");
        cache.apply(ContainerEvent::Changed { state: state("x", "p", ContainerStatus::Running), seq: 7 });
        tokio::time::timeout(Duration::from_secs(1), waiter).await.expect("caught up").expect("task");
        // Without a live watch nobody waits.
        cache.lost();
        tokio::time::timeout(Duration::from_millis(100), cache.caught_up(100)).await.expect("no wait when lost");
    }
}
