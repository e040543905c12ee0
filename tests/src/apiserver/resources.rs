//! The resource types this server serves: names, kinds, scope, verbs and subresources, as
//! discovery reports them and as the router resolves them.

/// One served resource (a REST collection) of one group/version.
#[derive(Debug)]
pub struct ResourceType {
    /// API group ("" for the core group).
    pub group: &'static str,
    pub version: &'static str,
    /// Plural resource name as it appears in URLs ("pods").
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources served under `<plural>/<name>/<sub>`.
    pub subresources: &'static [&'static str],
    /// Key of the storage this resource lives in (events of both groups are stored apart).
    pub storage: &'static str,
    /// Field labels accepted by fieldSelector besides metadata.name and metadata.namespace.
    pub field_labels: &'static [&'static str],
}

/// Verbs of every collection served here.
pub const RESOURCE_VERBS: &[&str] =
    &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// Verbs of the status subresources.
pub const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

impl ResourceType {
    /// "v1" for the core group, "group/version" otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }

    /// Whether writes to the main resource keep the stored status (a status subresource exists).
    pub fn has_status(&self) -> bool {
        self.has_subresource("status")
    }

    /// Kind-qualified name for messages: `pods`, `leases.coordination.k8s.io`.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

pub static NAMESPACES: ResourceType = ResourceType {
    group: "",
    version: "v1",
    plural: "namespaces",
    singular: "namespace",
    kind: "Namespace",
    namespaced: false,
    short_names: &["ns"],
    categories: &[],
    subresources: &["status", "finalize"],
    storage: "namespaces",
    field_labels: &["status.phase"],
};

pub static NODES: ResourceType = ResourceType {
    group: "",
    version: "v1",
    plural: "nodes",
    singular: "node",
    kind: "Node",
    namespaced: false,
    short_names: &["no"],
    categories: &[],
    subresources: &["status"],
    storage: "nodes",
    field_labels: &["spec.unschedulable"],
};

pub static PODS: ResourceType = ResourceType {
    group: "",
    version: "v1",
    plural: "pods",
    singular: "pod",
    kind: "Pod",
    namespaced: true,
    short_names: &["po"],
    categories: &["all"],
    subresources: &["status", "binding"],
    storage: "pods",
    field_labels: &[
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ],
};

pub static SERVICES: ResourceType = ResourceType {
    group: "",
    version: "v1",
    plural: "services",
    singular: "service",
    kind: "Service",
    namespaced: true,
    short_names: &["svc"],
    categories: &["all"],
    subresources: &["status"],
    storage: "services",
    field_labels: &["spec.clusterIP", "spec.type"],
};

pub static CORE_EVENTS: ResourceType = ResourceType {
    group: "",
    version: "v1",
    plural: "events",
    singular: "event",
    kind: "Event",
    namespaced: true,
    short_names: &["ev"],
    categories: &[],
    subresources: &[],
    storage: "events",
    field_labels: &[
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ],
};

pub static LEASES: ResourceType = ResourceType {
    group: "coordination.k8s.io",
    version: "v1",
    plural: "leases",
    singular: "lease",
    kind: "Lease",
    namespaced: true,
    short_names: &[],
    categories: &[],
    subresources: &[],
    storage: "leases.coordination.k8s.io",
    field_labels: &[],
};

pub static ENDPOINT_SLICES: ResourceType = ResourceType {
    group: "discovery.k8s.io",
    version: "v1",
    plural: "endpointslices",
    singular: "endpointslice",
    kind: "EndpointSlice",
    namespaced: true,
    short_names: &[],
    categories: &[],
    subresources: &[],
    storage: "endpointslices.discovery.k8s.io",
    field_labels: &["addressType"],
};

pub static EVENTS_V1: ResourceType = ResourceType {
    group: "events.k8s.io",
    version: "v1",
    plural: "events",
    singular: "event",
    kind: "Event",
    namespaced: true,
    short_names: &["ev"],
    categories: &[],
    subresources: &[],
    storage: "events.events.k8s.io",
    field_labels: &[
        "regarding.kind",
        "regarding.namespace",
        "regarding.name",
        "regarding.uid",
        "reason",
        "reportingController",
        "type",
    ],
};

pub static SECRETS: ResourceType = ResourceType {
    group: "",
    version: "v1",
    plural: "secrets",
    singular: "secret",
    kind: "Secret",
    namespaced: true,
    short_names: &[],
    categories: &[],
    subresources: &[],
    storage: "secrets",
    field_labels: &["type"],
};

pub static CONFIG_MAPS: ResourceType = ResourceType {
    group: "",
    version: "v1",
    plural: "configmaps",
    singular: "configmap",
    kind: "ConfigMap",
    namespaced: true,
    short_names: &["cm"],
    categories: &[],
    subresources: &[],
    storage: "configmaps",
    field_labels: &[],
};

pub static SERVICE_ACCOUNTS: ResourceType = ResourceType {
    group: "",
    version: "v1",
    plural: "serviceaccounts",
    singular: "serviceaccount",
    kind: "ServiceAccount",
    namespaced: true,
    short_names: &["sa"],
    categories: &[],
    // TokenRequest: POST serviceaccounts/<name>/token.
    subresources: &["token"],
    storage: "serviceaccounts",
    field_labels: &[],
};

/// Every served resource.
pub static ALL: &[&ResourceType] = &[
    &NAMESPACES,
    &NODES,
    &PODS,
    &SERVICES,
    &CORE_EVENTS,
    &LEASES,
    &ENDPOINT_SLICES,
    &EVENTS_V1,
    &SECRETS,
    &CONFIG_MAPS,
    &SERVICE_ACCOUNTS,
];

/// The resource `plural` of `group`/`version`, if served.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    ALL.iter().copied().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Served group/versions, core first: ("", "v1"), ("coordination.k8s.io", "v1"), ...
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in ALL {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// Resources of one group/version, in the order above.
pub fn of_group_version(group: &str, version: &str) -> Vec<&'static ResourceType> {
    ALL.iter().copied().filter(|r| r.group == group && r.version == version).collect()
}
