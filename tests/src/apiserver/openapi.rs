//! A minimal OpenAPI v3 document set: per group/version, the paths with their
//! x-kubernetes-group-version-kind and the fieldValidation parameter. kubectl reads it to learn
//! that the server validates fields itself (then it sends `fieldValidation=Strict`). Schemas are
//! not served (`kubectl explain` does not work).

use serde_json::{json, Map, Value};

use super::resources::{self, ResourceType};

/// Relative path of one group/version's document: "api/v1", "apis/<group>/<version>".
fn document_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// GET /openapi/v3: the index of documents.
pub fn index() -> Value {
    let mut paths = Map::new();
    for (group, version) in resources::group_versions() {
        let path = document_path(group, version);
        paths.insert(path.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash=0")}));
    }
    json!({"paths": paths})
}

fn operation(resource: &ResourceType, action: &str) -> Value {
    json!({
        "operationId": format!("{action}{}", resource.kind),
        "parameters": [
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        ],
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": resource.group, "version": resource.version, "kind": resource.kind},
    })
}

/// GET /openapi/v3/<api|apis/group>/<version>, if served.
pub fn document(relative: &str) -> Option<Value> {
    let (group, version) = resources::group_versions().into_iter().find(|(g, v)| document_path(g, v) == relative)?;
    let mut paths = Map::new();
    for resource in resources::of_group_version(group, version) {
        let base = format!("/{}", document_path(group, version));
        let collection = if resource.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", resource.plural)
        } else {
            format!("{base}/{}", resource.plural)
        };
        paths.insert(collection.clone(), json!({"post": operation(resource, "post")}));
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({"put": operation(resource, "put"), "patch": operation(resource, "patch")}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}
