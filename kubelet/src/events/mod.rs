//! Events about pods and the node, as kubelet records them with client-go's recorder: core/v1
//! Events from source `{component: kubelet, host: <node>}`. A repeat of the same event bumps
//! the count of the one already sent instead of creating another, and a noisy object is rate
//! limited (a burst of 25, then one per 5 minutes) — see [`correlator`]. Recording never
//! blocks the caller: events go through a bounded queue to one sender task ([`recorder`])
//! and are dropped when the queue is full or the API refuses them, as client-go drops them.

pub mod correlator;
pub mod recorder;
mod token_bucket;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};

pub use correlator::{Correlator, Decision};
pub use recorder::{ApiEventSink, EventLimits, EventRecorder, EventSink, EventSinkError};

/// The source component of kubelet's events.
pub const COMPONENT: &str = "kubelet";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// One event to record.
#[derive(Clone, Debug, PartialEq)]
pub struct EventInput {
    pub object: ObjectReference,
    pub event_type: EventType,
    pub reason: String,
    pub message: String,
}

/// A reference to the Node, as kubelet makes it (the uid is the node's name).
pub fn node_reference(node_name: &str) -> ObjectReference {
    ObjectReference {
        kind: Some("Node".to_string()),
        name: Some(node_name.to_string()),
        uid: Some(node_name.to_string()),
        ..ObjectReference::default()
    }
}

/// A reference to `pod`, or with `container` to one of its containers (the field path kubelet
/// uses: `spec.containers{name}`, `spec.initContainers{name}` for init containers).
pub fn pod_reference(pod: &Pod, container: Option<&str>) -> ObjectReference {
    let init = container.is_some_and(|name| {
        pod.spec
            .as_ref()
            .and_then(|spec| spec.init_containers.as_ref())
            .is_some_and(|list| list.iter().any(|c| c.name == name))
    });
    ObjectReference {
        api_version: Some("v1".to_string()),
        kind: Some("Pod".to_string()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone().or_else(|| Some("default".to_string())),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        field_path: container.map(|name| {
            if init {
                format!("spec.initContainers{{{name}}}")
            } else {
                format!("spec.containers{{{name}}}")
            }
        }),
    }
}
