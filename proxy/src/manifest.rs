//! Services and EndpointSlices from YAML manifests (standalone mode, tests).

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;

use crate::error::ProxyError;

/// The objects the proxy reads from a manifest.
#[derive(Clone, Debug, Default)]
pub struct ServiceObjects {
    pub services: Vec<Service>,
    pub slices: Vec<EndpointSlice>,
}

/// Parse a multi-document YAML stream, keeping the Services and
/// EndpointSlices and ignoring other kinds. `origin` names the source in errors.
pub fn parse_service_objects(yaml: &str, origin: &str) -> Result<ServiceObjects, ProxyError> {
    let mut objects = ServiceObjects::default();
    for (index, document) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let value = serde_yaml::Value::deserialize(document)
            .map_err(|source| ProxyError::Manifest { origin: origin.to_owned(), source })?;
        let kind = value.get("kind").and_then(serde_yaml::Value::as_str).unwrap_or_default();
        let invalid =
            |source| ProxyError::ManifestObject { origin: origin.to_owned(), index, kind: kind.to_owned(), source };
        match kind {
            "Service" => objects.services.push(serde_yaml::from_value(value.clone()).map_err(invalid)?),
            "EndpointSlice" => objects.slices.push(serde_yaml::from_value(value.clone()).map_err(invalid)?),
            _ => {}
        }
    }
    Ok(objects)
}
