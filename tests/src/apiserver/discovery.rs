//! Discovery documents: /api, /apis, /api/v1, /apis/<group>/<version> (APIVersions,
//! APIGroupList, APIResourceList), the aggregated discovery format (apidiscovery.k8s.io/v2
//! APIGroupDiscoveryList) for /api and /apis, and /version.

use serde_json::{json, Value};

use super::resources::{self, ResourceType, RESOURCE_VERBS, STATUS_VERBS};

/// Media type of aggregated discovery, as clients ask for it in `Accept`.
pub const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether an `Accept` header asks for aggregated discovery v2.
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.first() == Some(&"application/json")
            && params.contains(&"g=apidiscovery.k8s.io")
            && params.contains(&"v=v2")
            && params.contains(&"as=APIGroupDiscoveryList")
    })
}

pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn named_groups() -> Vec<(&'static str, &'static str)> {
    resources::group_versions().into_iter().filter(|(g, _)| !g.is_empty()).collect()
}

fn group_document(group: &str, version: &str) -> Value {
    let group_version = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({
        "name": group,
        "versions": [group_version.clone()],
        "preferredVersion": group_version,
    })
}

pub fn api_group_list() -> Value {
    let groups: Vec<Value> = named_groups().into_iter().map(|(g, v)| group_document(g, v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// The APIGroup document of /apis/<group>, if served.
pub fn api_group(group: &str) -> Option<Value> {
    named_groups().into_iter().find(|(g, _)| *g == group).map(|(g, v)| {
        let mut doc = group_document(g, v);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        doc
    })
}

fn subresource_verbs(sub: &str) -> &'static [&'static str] {
    match sub {
        "binding" => &["create"],
        "finalize" => &["update"],
        _ => STATUS_VERBS,
    }
}

fn subresource_kind(resource: &ResourceType, sub: &str) -> &'static str {
    match sub {
        "binding" => "Binding",
        _ => resource.kind,
    }
}

/// The APIResourceList of one group/version, if served.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let served = resources::of_group_version(group, version);
    if served.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for r in served {
        list.push(json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": RESOURCE_VERBS,
            "shortNames": r.short_names,
            "categories": r.categories,
        }));
        for sub in r.subresources {
            list.push(json!({
                "name": format!("{}/{}", r.plural, sub),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": subresource_kind(r, sub),
                "verbs": subresource_verbs(sub),
            }));
        }
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": list,
    }))
}

fn aggregated_group(group: &str, version: &str) -> Value {
    let resources: Vec<Value> = resources::of_group_version(group, version)
        .into_iter()
        .map(|r| {
            let subresources: Vec<Value> = r
                .subresources
                .iter()
                .map(|sub| {
                    json!({
                        "subresource": sub,
                        "responseKind": {"group": if *sub == "binding" { "" } else { r.group }, "version": r.version, "kind": subresource_kind(r, sub)},
                        "verbs": subresource_verbs(sub),
                    })
                })
                .collect();
            let mut doc = json!({
                "resource": r.plural,
                "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": r.singular,
                "verbs": RESOURCE_VERBS,
            });
            if !r.short_names.is_empty() {
                doc["shortNames"] = json!(r.short_names);
            }
            if !r.categories.is_empty() {
                doc["categories"] = json!(r.categories);
            }
            if !subresources.is_empty() {
                doc["subresources"] = json!(subresources);
            }
            doc
        })
        .collect();
    json!({
        "metadata": {"name": group, "creationTimestamp": null},
        "versions": [{"version": version, "resources": resources, "freshness": "Current"}],
    })
}

/// Aggregated discovery of /api (legacy = true: the core group) or /apis (named groups).
pub fn aggregated(legacy: bool) -> Value {
    let items: Vec<Value> = if legacy {
        vec![aggregated_group("", "v1")]
    } else {
        named_groups().into_iter().map(|(g, v)| aggregated_group(g, v)).collect()
    };
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-nodelet-test",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.23",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}
