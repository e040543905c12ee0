//! Watch streams: JSON lines of `{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": ...}`
//! from a resourceVersion (410 Gone when it is older than the history), with selector
//! transitions (an object that starts or stops matching is ADDED or DELETED), periodic
//! bookmarks, sendInitialEvents, and timeoutSeconds.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use super::errors::ApiError;
use super::resources::ResourceType;
use super::selectors::Selection;
use super::store::{Change, ChangeType, Store, WatchStart};
use super::strategy::namespace_of;

/// Where a watch begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFrom {
    /// No resourceVersion or "0": synthetic ADDED events of the current state, then changes.
    CurrentState,
    /// Changes after this resourceVersion.
    After(u64),
}

/// Everything one watch request asked for.
pub struct WatchRequest {
    pub resource: &'static ResourceType,
    pub namespace: Option<String>,
    pub selection: Selection,
    pub from: WatchFrom,
    /// sendInitialEvents: Some(true) streams the state then an initial-events-end bookmark;
    /// Some(false) sends no state even from "" or "0".
    pub send_initial_events: Option<bool>,
    pub bookmarks: bool,
    pub bookmark_interval: Duration,
    pub timeout: Option<Duration>,
}

const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn bookmark(resource: &ResourceType, resource_version: u64, initial_end: bool) -> Bytes {
    let mut object = json!({
        "kind": resource.kind,
        "apiVersion": resource.api_version(),
        "metadata": {"resourceVersion": resource_version.to_string()},
    });
    if initial_end {
        object["metadata"]["annotations"] = json!({INITIAL_EVENTS_END: "true"});
    }
    event_line("BOOKMARK", &object)
}

fn error_line(error: &ApiError) -> Bytes {
    event_line("ERROR", &error.to_status())
}

impl WatchRequest {
    fn in_scope(&self, object: &Value) -> bool {
        self.namespace.as_deref().is_none_or(|ns| namespace_of(object) == ns)
    }

    fn visible(&self, object: &Value) -> bool {
        self.in_scope(object) && self.selection.matches(object)
    }

    /// The event a watcher with this filter sees for one change, if any.
    fn translate(&self, change: &Change) -> Option<Bytes> {
        if change.storage != self.resource.storage {
            return None;
        }
        let now = self.visible(&change.object);
        let before = change.previous.as_ref().is_some_and(|p| self.visible(p));
        let kind = match change.change {
            ChangeType::Added if now => "ADDED",
            ChangeType::Deleted if before || now => "DELETED",
            ChangeType::Modified if now && before => "MODIFIED",
            ChangeType::Modified if now => "ADDED",
            ChangeType::Modified if before => "DELETED",
            _ => return None,
        };
        Some(event_line(kind, &change.object))
    }
}

/// Start a watch: returns the receiving end of the JSON-lines body. `closed` fires when the
/// server drops all watches (shutdown, unavailability, or a test's request).
pub fn start(
    store: Arc<Store>,
    request: WatchRequest,
    mut closed: tokio::sync::watch::Receiver<u64>,
) -> mpsc::Receiver<Bytes> {
    let (sender, receiver) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let mut initial: Vec<Bytes> = Vec::new();
        let (mut changes, mut last_version) = match request.from {
            WatchFrom::CurrentState => {
                let (listing, changes) = store.list_and_subscribe(request.resource, request.namespace.as_deref());
                if request.send_initial_events != Some(false) {
                    for object in listing.items.iter().filter(|o| request.selection.matches(o)) {
                        initial.push(event_line("ADDED", object));
                    }
                }
                (changes, listing.resource_version)
            }
            WatchFrom::After(version) => match store.subscribe(Some(version)) {
                (WatchStart::TooOld { oldest_available }, _, _) => {
                    let error = ApiError::gone(format!("too old resource version: {version} ({oldest_available})"));
                    let _ = sender.send(error_line(&error)).await;
                    return;
                }
                (WatchStart::After(history), changes, current) => {
                    if request.send_initial_events == Some(true) {
                        let listing = store.list(request.resource, request.namespace.as_deref());
                        for object in listing.items.iter().filter(|o| request.selection.matches(o)) {
                            initial.push(event_line("ADDED", object));
                        }
                    } else {
                        for change in &history {
                            if let Some(line) = request.translate(change) {
                                initial.push(line);
                            }
                        }
                    }
                    (changes, current)
                }
            },
        };
        if request.send_initial_events == Some(true) {
            initial.push(bookmark(request.resource, last_version, true));
        }
        for line in initial {
            if sender.send(line).await.is_err() {
                return;
            }
        }
        run_stream(&request, &sender, &mut changes, &mut last_version, &mut closed).await;
    });
    receiver
}

async fn run_stream(
    request: &WatchRequest,
    sender: &mpsc::Sender<Bytes>,
    changes: &mut broadcast::Receiver<Arc<Change>>,
    last_version: &mut u64,
    closed: &mut tokio::sync::watch::Receiver<u64>,
) {
    let deadline = request.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut bookmark_timer = tokio::time::interval(request.bookmark_interval);
    bookmark_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    bookmark_timer.tick().await;
    loop {
        let timeout = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = closed.changed() => return,
            _ = sender.closed() => return,
            _ = timeout => return,
            received = changes.recv() => match received {
                Ok(change) => {
                    *last_version = change.resource_version;
                    if let Some(line) = request.translate(&change) {
                        if sender.send(line).await.is_err() {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let error = ApiError::gone("too old resource version: the watch fell behind");
                    let _ = sender.send(error_line(&error)).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = bookmark_timer.tick(), if request.bookmarks => {
                if sender.send(bookmark(request.resource, *last_version, false)).await.is_err() {
                    return;
                }
            }
        }
    }
}
