//! EndpointSlices by Service, checked once, and the endpoints of one Service port and IP
//! family in them, as kube-proxy's EndpointSliceCache reads them (each family's proxier
//! reads the slices of its `addressType`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use nodelet_ebpf::Backend;

use super::family::IpFamily;
use super::problem::{ObjectRef, Problem};
use super::select::EndpointInfo;
use super::service::{protocol_of, PortSpec};
use super::SERVICE_NAME_LABEL;

/// The IPv4 and IPv6 EndpointSlices of each known Service (by namespace, then name), in slice-name
/// order.
pub(super) struct SliceIndex<'a> {
    by_service: BTreeMap<&'a str, BTreeMap<&'a str, Vec<&'a EndpointSlice>>>,
}

impl<'a> SliceIndex<'a> {
    /// Index `slices` by their Service among `known` ((namespace, name) of every Service,
    /// proxied or not), reporting slices that belong to none and invalid content.
    pub(super) fn new(
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
        known: &BTreeSet<(&str, &str)>,
        problems: &mut BTreeSet<Problem>,
    ) -> SliceIndex<'a> {
        let mut by_service: BTreeMap<&str, BTreeMap<&str, Vec<&EndpointSlice>>> = BTreeMap::new();
        for slice in slices {
            let (namespace, service) = match service_of(slice) {
                Ok(owner) => owner,
                Err(problem) => {
                    problems.insert(problem);
                    continue;
                }
            };
            if admit(slice, known.contains(&(namespace, service)), problems) {
                by_service.entry(namespace).or_default().entry(service).or_default().push(slice);
            }
        }
        for slices in by_service.values_mut().flat_map(BTreeMap::values_mut) {
            slices.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        }
        SliceIndex { by_service }
    }

    /// The slices of Service `namespace/name`.
    pub(super) fn of(&self, namespace: &str, name: &str) -> &[&'a EndpointSlice] {
        self.by_service.get(namespace).and_then(|services| services.get(name)).map_or(&[], Vec::as_slice)
    }
}

/// The Service (namespace, name) a slice belongs to, by its label; `Err` reports a slice
/// without one.
pub(super) fn service_of(slice: &EndpointSlice) -> Result<(&str, &str), Problem> {
    let namespace = slice.metadata.namespace.as_deref().unwrap_or_default();
    let labels = slice.metadata.labels.as_ref();
    match labels.and_then(|labels| labels.get(SERVICE_NAME_LABEL)).filter(|s| !s.is_empty()) {
        Some(service) => Ok((namespace, service.as_str())),
        None => Err(Problem::new(slice_ref(slice), format!("has no {SERVICE_NAME_LABEL} label: not used"))),
    }
}

/// Whether the slice's endpoints are used, given whether its Service exists, reporting
/// what is wrong with it. IPv4 and IPv6 slices are; FQDN ones are not (kube-proxy ignores
/// them: no proxier has that family).
pub(super) fn admit(slice: &EndpointSlice, service_exists: bool, problems: &mut BTreeSet<Problem>) -> bool {
    let object = slice_ref(slice);
    if !service_exists {
        let (namespace, service) = service_of(slice).unwrap_or_default();
        let message = format!("its Service {namespace}/{service} does not exist: not used");
        problems.insert(Problem::new(object, message));
        return false;
    }
    let Some(family) = IpFamily::from_api(&slice.address_type) else {
        return false;
    };
    check(slice, family, &object, problems);
    true
}

fn slice_ref(slice: &EndpointSlice) -> ObjectRef {
    let namespace = slice.metadata.namespace.as_deref().unwrap_or_default();
    ObjectRef::endpoint_slice(namespace, slice.metadata.name.as_deref().unwrap_or_default())
}

/// Report what `endpoints` will skip in the slice, once per slice rather than per port.
fn check(slice: &EndpointSlice, family: IpFamily, object: &ObjectRef, problems: &mut BTreeSet<Problem>) {
    for port in slice.ports.iter().flatten() {
        let name = port.name.as_deref().unwrap_or("");
        if let Some(number) = port.port.filter(|n| u16::try_from(*n).ok().is_none_or(|n| n == 0)) {
            problems
                .insert(Problem::new(object.clone(), format!("port {name:?} has invalid number {number}: skipped")));
        }
        if protocol_of(port.protocol.as_deref()).is_none() {
            let protocol = port.protocol.as_deref().unwrap_or("");
            let message = format!("port {name:?} has unknown protocol {protocol:?}: skipped");
            problems.insert(Problem::new(object.clone(), message));
        }
    }
    let unusable: Vec<String> = slice
        .endpoints
        .iter()
        .filter(|endpoint| address_of(endpoint, family).is_none())
        .map(|endpoint| endpoint.addresses.first().map_or_else(|| String::from("no address"), |a| format!("{a:?}")))
        .collect();
    if let Some(first) = unusable.first() {
        let message = format!("{} endpoints without an {family} address (first: {first}): skipped", unusable.len());
        problems.insert(Problem::new(object.clone(), message));
    }
}

/// The endpoint's address: its first, as kube-proxy takes (the others are the same pod's),
/// when it is of the slice's `family`.
fn address_of(endpoint: &Endpoint, family: IpFamily) -> Option<IpAddr> {
    let ip = super::service::canonical(endpoint.addresses.first()?.parse::<IpAddr>().ok()?);
    (IpFamily::of(ip) == family).then_some(ip)
}

/// The endpoints of Service port `port` in the `family` slices of `slices`, on the number
/// each slice gives the port of the same name and protocol, sorted and unique. An endpoint
/// listed twice (while slices are rebalanced) counts once: the first slice's, or a local one.
pub(super) fn endpoints(
    slices: &[&EndpointSlice],
    port: &PortSpec<'_>,
    family: IpFamily,
    publish_not_ready: bool,
    node_name: Option<&str>,
) -> Vec<EndpointInfo> {
    let mut found: BTreeMap<Backend, EndpointInfo> = BTreeMap::new();
    let of_family = slices.iter().filter(|slice| IpFamily::from_api(&slice.address_type) == Some(family));
    for slice in of_family {
        let target_port = slice.ports.iter().flatten().find_map(|slice_port| {
            let same_name = slice_port.name.as_deref().unwrap_or("") == port.name;
            let same_protocol = protocol_of(slice_port.protocol.as_deref()) == Some(port.protocol);
            (same_name && same_protocol).then_some(slice_port.port).flatten().and_then(|n| u16::try_from(n).ok())
        });
        let Some(target_port) = target_port.filter(|n| *n != 0) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let Some(ip) = address_of(endpoint, family) else {
                continue;
            };
            let backend = Backend { ip, port: target_port };
            let info = endpoint_info(endpoint, backend, publish_not_ready, node_name);
            if found.get(&backend).is_none_or(|seen| info.local && !seen.local) {
                found.insert(backend, info);
            }
        }
    }
    found.into_values().collect()
}

/// Conditions unset mean ready and serving, not terminating (the EndpointSlice API's
/// defaults). With `publishNotReadyAddresses` every endpoint is ready, as the
/// EndpointSlice controller would have written it.
fn endpoint_info(endpoint: &Endpoint, backend: Backend, publish_not_ready: bool, node: Option<&str>) -> EndpointInfo {
    let conditions = endpoint.conditions.as_ref();
    let zone_hints: Option<BTreeSet<String>> = endpoint
        .hints
        .as_ref()
        .and_then(|hints| hints.for_zones.as_ref())
        .filter(|zones| !zones.is_empty())
        .map(|zones| zones.iter().map(|zone| zone.name.clone()).collect());
    EndpointInfo {
        backend,
        ready: publish_not_ready || conditions.and_then(|c| c.ready).unwrap_or(true),
        serving: conditions.and_then(|c| c.serving).unwrap_or(true),
        terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
        local: node.is_some() && endpoint.node_name.as_deref() == node,
        zone_hints,
    }
}
