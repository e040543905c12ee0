//! Parsing a request path into what it is about, as the API server's RequestInfoFactory does:
//! group, version, namespace, resource, name, subresource and verb.

use super::errors::ApiError;
use super::resources::{self, ResourceType};

/// A request for a resource (not a discovery or health path).
#[derive(Debug)]
pub struct ResourceRequestInfo {
    pub resource: &'static ResourceType,
    /// "" for cluster-scoped requests and for all-namespace collections.
    pub namespace: String,
    pub name: String,
    pub subresource: String,
    pub verb: &'static str,
}

/// What a path names.
#[derive(Debug)]
pub enum Target {
    Resource(ResourceRequestInfo),
    /// Any other path (discovery, version, health), routed by path.
    NonResource,
}

/// Subresources of a namespace that are not namespaced resources.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// Resolve `path` for HTTP `method`; `watch` is the `watch` query parameter.
pub fn parse(method: &str, path: &str, watch: bool) -> Result<Target, ApiError> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').filter(|p| !p.is_empty()).collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] if !rest.is_empty() => ("", *version, rest),
        ["apis", group, version, rest @ ..] if !rest.is_empty() => (*group, *version, rest),
        _ => return Ok(Target::NonResource),
    };
    let mut rest: Vec<&str> = rest.to_vec();
    let mut watch = watch;
    if rest.first() == Some(&"watch") {
        watch = true;
        rest.remove(0);
    }
    let mut namespace = "";
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        namespace = rest[1];
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
            rest.drain(0..2);
        } else {
            // The namespace object itself: /namespaces/<name>[/status].
            namespace = "";
        }
    }
    let (plural, name, subresource) = match rest.as_slice() {
        [plural] => (*plural, "", ""),
        [plural, name] => (*plural, *name, ""),
        [plural, name, sub] => (*plural, *name, *sub),
        _ => return Err(ApiError::not_found_path(path)),
    };
    let resource = resources::lookup(group, version, plural).ok_or_else(|| ApiError::not_found_path(path))?;
    if !subresource.is_empty() && !resource.has_subresource(subresource) {
        return Err(ApiError::not_found_path(path));
    }
    if resource.namespaced && namespace.is_empty() && !name.is_empty() {
        return Err(ApiError::not_found_path(path));
    }
    if !resource.namespaced && !namespace.is_empty() {
        return Err(ApiError::not_found_path(path));
    }
    let verb = match (method, name.is_empty()) {
        ("GET" | "HEAD", true) if watch => "watch",
        ("GET" | "HEAD", false) if watch => "watch",
        ("GET" | "HEAD", true) => "list",
        ("GET" | "HEAD", false) => "get",
        ("POST", _) => "create",
        ("PUT", false) => "update",
        ("PATCH", false) => "patch",
        ("DELETE", false) => "delete",
        ("DELETE", true) => "deletecollection",
        _ => {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method} {path})"
            )))
        }
    };
    Ok(Target::Resource(ResourceRequestInfo {
        resource,
        namespace: namespace.to_string(),
        name: name.to_string(),
        subresource: subresource.to_string(),
        verb,
    }))
}
