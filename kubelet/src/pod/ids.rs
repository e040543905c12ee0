//! Names that tie runtime objects back to pods: container ids, annotation keys, sandbox ids.
//!
//! Ids are deterministic so that restarts and adoption after an agent restart find the same
//! objects again without any database: a container id says which pod, which container and
//! which attempt it is.

use std::collections::BTreeMap;

pub const ANNOTATION_POD_UID: &str = "io.kubernetes.pod.uid";
pub const ANNOTATION_POD_NAME: &str = "io.kubernetes.pod.name";
pub const ANNOTATION_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const ANNOTATION_CONTAINER_NAME: &str = "io.kubernetes.container.name";
pub const ANNOTATION_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
/// The image's STOPSIGNAL, kept with the container so that it is known after a restart.
pub const ANNOTATION_STOP_SIGNAL: &str = "io.kubernetes.container.stopSignal";

/// The prefix of `containerID` in container statuses, like containerd's `containerd://`.
pub const CONTAINER_ID_SCHEME: &str = "nodelet://";

/// The runtime id of one attempt of one container of a pod.
pub fn container_id(pod_uid: &str, container_name: &str, attempt: u32) -> String {
    format!("{pod_uid}-{container_name}-{attempt}")
}

/// The sandbox (network namespace) of a pod is named after its uid.
pub fn sandbox_id(pod_uid: &str) -> String {
    pod_uid.to_string()
}

/// What a runtime container's annotations say about where it belongs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerOwner {
    pub pod_uid: String,
    pub pod_name: String,
    pub pod_namespace: String,
    pub container_name: String,
    pub attempt: u32,
}

impl ContainerOwner {
    /// None for containers nodelet's kubelet did not create (no or partial annotations).
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Option<ContainerOwner> {
        Some(ContainerOwner {
            pod_uid: annotations.get(ANNOTATION_POD_UID)?.clone(),
            pod_name: annotations.get(ANNOTATION_POD_NAME).cloned().unwrap_or_default(),
            pod_namespace: annotations.get(ANNOTATION_POD_NAMESPACE).cloned().unwrap_or_default(),
            container_name: annotations.get(ANNOTATION_CONTAINER_NAME)?.clone(),
            attempt: annotations.get(ANNOTATION_RESTART_COUNT)?.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_round_trips_through_annotations() {
        let annotations: BTreeMap<String, String> = [
            (ANNOTATION_POD_UID, "u1"),
            (ANNOTATION_POD_NAME, "web"),
            (ANNOTATION_POD_NAMESPACE, "default"),
            (ANNOTATION_CONTAINER_NAME, "app"),
            (ANNOTATION_RESTART_COUNT, "3"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let owner = ContainerOwner::from_annotations(&annotations).expect("owner");
        assert_eq!(owner.attempt, 3);
        assert_eq!(container_id(&owner.pod_uid, &owner.container_name, 3), "u1-app-3");
    }

    #[test]
    fn foreign_containers_have_no_owner() {
        assert_eq!(ContainerOwner::from_annotations(&BTreeMap::new()), None);
    }
}
