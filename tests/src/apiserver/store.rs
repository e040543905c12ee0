//! The object store: JSON objects per resource keyed by namespace/name, one global
//! monotonically increasing resourceVersion, a bounded history of change events (watches
//! resume from it; older versions are "Gone"), and a broadcast of new events.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::broadcast;

use super::resources::ResourceType;

/// Namespace ("" for cluster-scoped objects) and name.
pub type ObjectKey = (String, String);

/// Kind of a change event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One change of one object, as stored in the history and sent to watchers.
#[derive(Debug, Clone)]
pub struct Change {
    pub storage: &'static str,
    pub change: ChangeType,
    pub resource_version: u64,
    /// The object after the change (for Deleted: the last state, with the deletion's RV).
    pub object: Value,
    /// The object before the change (Modified and Deleted).
    pub previous: Option<Value>,
}

/// What a read-modify-write decided.
pub enum Write {
    /// Store this object (create or update).
    Put(Value),
    /// Remove the object.
    Remove,
    /// Nothing changes (a no-op update): no new resourceVersion, no event.
    Unchanged,
}

struct StoreState {
    objects: HashMap<&'static str, BTreeMap<ObjectKey, Value>>,
    resource_version: u64,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Events at or below this resourceVersion are no longer in the history.
    compacted_through: u64,
}

/// The store shared by all requests.
pub struct Store {
    state: Mutex<StoreState>,
    changes: broadcast::Sender<Arc<Change>>,
}

/// A snapshot of a collection.
pub struct Listing {
    pub items: Vec<Value>,
    pub resource_version: u64,
}

/// Where a watch starts.
pub enum WatchStart {
    /// Replay the history after this resourceVersion.
    After(Vec<Arc<Change>>),
    /// The resourceVersion is older than the history.
    TooOld { oldest_available: u64 },
}

impl Store {
    pub fn new(history_limit: usize) -> Store {
        let (changes, _) = broadcast::channel(history_limit.max(16) * 4);
        Store {
            state: Mutex::new(StoreState {
                objects: HashMap::new(),
                resource_version: 1,
                history: VecDeque::new(),
                history_limit,
                compacted_through: 1,
            }),
            changes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, StoreState> {
        // A panic while holding the lock leaves consistent data (writes are single inserts).
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn current_resource_version(&self) -> u64 {
        self.lock().resource_version
    }

    pub fn get(&self, resource: &ResourceType, key: &ObjectKey) -> Option<Value> {
        self.lock().objects.get(resource.storage).and_then(|objects| objects.get(key)).cloned()
    }

    /// All objects of `resource` (of `namespace` if given), in key order.
    pub fn list(&self, resource: &ResourceType, namespace: Option<&str>) -> Listing {
        let state = self.lock();
        let items = state
            .objects
            .get(resource.storage)
            .map(|objects| {
                objects
                    .iter()
                    .filter(|((ns, _), _)| namespace.is_none_or(|wanted| wanted == ns))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default();
        Listing { items, resource_version: state.resource_version }
    }

    /// Atomically read the object at `key` and decide what to write. The closure gets the next
    /// resourceVersion to stamp; the store sets metadata.resourceVersion itself. Returns the
    /// closure's error, or the stored object (for Remove: the removed object).
    pub fn write<E>(
        &self,
        resource: &ResourceType,
        key: &ObjectKey,
        decide: impl FnOnce(Option<&Value>) -> Result<Write, E>,
    ) -> Result<Option<Value>, E> {
        let mut state = self.lock();
        let current = state.objects.get(resource.storage).and_then(|objects| objects.get(key)).cloned();
        let decision = decide(current.as_ref())?;
        let resource_version = state.resource_version + 1;
        let (change, mut object) = match decision {
            Write::Put(object) => (if current.is_some() { ChangeType::Modified } else { ChangeType::Added }, object),
            Write::Remove => match current.clone() {
                Some(object) => (ChangeType::Deleted, object),
                None => return Ok(None),
            },
            Write::Unchanged => return Ok(current),
        };
        object["metadata"]["resourceVersion"] = Value::String(resource_version.to_string());
        state.resource_version = resource_version;
        let objects = state.objects.entry(resource.storage).or_default();
        if change == ChangeType::Deleted {
            objects.remove(key);
        } else {
            objects.insert(key.clone(), object.clone());
        }
        let event = Arc::new(Change {
            storage: resource.storage,
            change,
            resource_version,
            object: object.clone(),
            previous: current,
        });
        state.history.push_back(event.clone());
        while state.history.len() > state.history_limit {
            if let Some(dropped) = state.history.pop_front() {
                state.compacted_through = dropped.resource_version;
            }
        }
        // No receivers is fine.
        let _ = self.changes.send(event);
        Ok(Some(object))
    }

    /// Subscribe to new changes and get the history after `after` (atomically, so nothing is
    /// missed or seen twice). `None`: start now with no history.
    pub fn subscribe(&self, after: Option<u64>) -> (WatchStart, broadcast::Receiver<Arc<Change>>, u64) {
        let state = self.lock();
        let receiver = self.changes.subscribe();
        let start = match after {
            None => WatchStart::After(Vec::new()),
            Some(rv) if rv < state.compacted_through => {
                WatchStart::TooOld { oldest_available: state.compacted_through + 1 }
            }
            Some(rv) => WatchStart::After(state.history.iter().filter(|c| c.resource_version > rv).cloned().collect()),
        };
        (start, receiver, state.resource_version)
    }

    /// Subscribe to new changes and take a snapshot of a collection at the same instant.
    pub fn list_and_subscribe(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
    ) -> (Listing, broadcast::Receiver<Arc<Change>>) {
        let state = self.lock();
        let receiver = self.changes.subscribe();
        let items = state
            .objects
            .get(resource.storage)
            .map(|objects| {
                objects
                    .iter()
                    .filter(|((ns, _), _)| namespace.is_none_or(|wanted| wanted == ns))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default();
        (Listing { items, resource_version: state.resource_version }, receiver)
    }

    /// Forget the whole event history, as an etcd compaction does: watches from any earlier
    /// resourceVersion get 410 Gone.
    pub fn compact(&self) {
        let mut state = self.lock();
        state.history.clear();
        state.compacted_through = state.resource_version;
    }

    /// Change how many events the history keeps.
    pub fn set_history_limit(&self, limit: usize) {
        let mut state = self.lock();
        state.history_limit = limit;
        while state.history.len() > limit {
            if let Some(dropped) = state.history.pop_front() {
                state.compacted_through = dropped.resource_version;
            }
        }
    }
}
