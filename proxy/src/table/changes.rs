//! Changes of Services and EndpointSlices since the last sync, merged per object (each
//! object's latest state, or its deletion), as kube-proxy's ServiceChangeTracker and
//! EndpointsChangeTracker merge them: a burst of updates to one object costs one rebuild.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// An object by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub(crate) fn new(namespace: &str, name: &str) -> ObjectKey {
        ObjectKey { namespace: namespace.to_owned(), name: name.to_owned() }
    }

    /// The key of a Service (namespace and name both set, as the API sets them), or of an
    /// EndpointSlice (name set; the namespace may be empty, as in a manifest without one).
    fn of(metadata: &ObjectMeta, namespace_required: bool) -> Option<ObjectKey> {
        let namespace = match metadata.namespace.as_deref() {
            Some(namespace) => namespace,
            None if namespace_required => return None,
            None => "",
        };
        Some(ObjectKey::new(namespace, metadata.name.as_deref()?))
    }
}

/// The latest state of each changed object: `Some` applied (added or updated), `None`
/// deleted. Objects without a name are not tracked (the API never sends one).
#[derive(Clone, Debug, Default)]
pub struct Changes {
    services: HashMap<ObjectKey, Option<Arc<Service>>>,
    slices: HashMap<ObjectKey, Option<Arc<EndpointSlice>>>,
}

impl Changes {
    pub fn new() -> Changes {
        Changes::default()
    }

    /// A Service was added or updated.
    pub fn service_applied(&mut self, service: Arc<Service>) {
        if let Some(key) = ObjectKey::of(&service.metadata, true) {
            self.services.insert(key, Some(service));
        }
    }

    /// A Service was deleted.
    pub fn service_deleted(&mut self, service: &Service) {
        if let Some(key) = ObjectKey::of(&service.metadata, true) {
            self.services.insert(key, None);
        }
    }

    /// An EndpointSlice was added or updated.
    pub fn slice_applied(&mut self, slice: Arc<EndpointSlice>) {
        if let Some(key) = ObjectKey::of(&slice.metadata, false) {
            self.slices.insert(key, Some(slice));
        }
    }

    /// An EndpointSlice was deleted.
    pub fn slice_deleted(&mut self, slice: &EndpointSlice) {
        if let Some(key) = ObjectKey::of(&slice.metadata, false) {
            self.slices.insert(key, None);
        }
    }

    /// `later` on top of these: its state of an object wins.
    pub fn merge(&mut self, later: Changes) {
        self.services.extend(later.services);
        self.slices.extend(later.slices);
    }

    /// Changed objects (Services and EndpointSlices).
    pub fn len(&self) -> usize {
        self.services.len() + self.slices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.slices.is_empty()
    }

    /// Changed Services, then changed EndpointSlices, by key.
    #[allow(clippy::type_complexity)]
    pub(crate) fn into_parts(
        self,
    ) -> (HashMap<ObjectKey, Option<Arc<Service>>>, HashMap<ObjectKey, Option<Arc<EndpointSlice>>>) {
        (self.services, self.slices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, ip: &str) -> Service {
        let mut service = Service::default();
        service.metadata.namespace = Some("default".into());
        service.metadata.name = Some(name.into());
        service.spec =
            Some(k8s_openapi::api::core::v1::ServiceSpec { cluster_ip: Some(ip.into()), ..Default::default() });
        service
    }

    #[test]
    fn the_latest_state_of_an_object_wins() {
        let mut changes = Changes::new();
        changes.service_applied(Arc::new(service("web", "10.96.0.1")));
        let mut later = Changes::new();
        later.service_applied(Arc::new(service("web", "10.96.0.2")));
        later.service_deleted(&service("api", "10.96.0.3"));
        changes.merge(later);
        assert_eq!(changes.len(), 2);
        let (services, slices) = changes.into_parts();
        assert!(slices.is_empty());
        let web = services[&ObjectKey::new("default", "web")].as_ref().expect("applied");
        assert_eq!(web.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()), Some("10.96.0.2"));
        assert!(services[&ObjectKey::new("default", "api")].is_none(), "deleted");
    }

    #[test]
    fn objects_without_a_name_are_not_tracked() {
        let mut changes = Changes::new();
        changes.service_applied(Arc::new(Service::default()));
        changes.slice_applied(Arc::new(EndpointSlice::default()));
        assert!(changes.is_empty());
    }
}
