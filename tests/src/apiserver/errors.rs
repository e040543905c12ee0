//! API errors as `metav1.Status` objects (reason, code, message, details).

use serde_json::{json, Value};

use super::resources::ResourceType;

/// A failed request, answered with a `Status` body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        ApiError { code, reason, message, details: None }
    }

    fn with_details(mut self, resource: &ResourceType, name: &str) -> Self {
        let mut details = json!({ "kind": resource.plural });
        if !name.is_empty() {
            details["name"] = json!(name);
        }
        if !resource.group.is_empty() {
            details["group"] = json!(resource.group);
        }
        self.details = Some(details);
        self
    }

    pub fn not_found(resource: &ResourceType, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{}\" not found", resource.qualified_plural(), name))
            .with_details(resource, name)
    }

    pub fn already_exists(resource: &ResourceType, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{} \"{}\" already exists", resource.qualified_plural(), name))
            .with_details(resource, name)
    }

    /// Optimistic-concurrency conflict (stale resourceVersion) or failed precondition.
    pub fn conflict(resource: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{}\": {}", resource.qualified_plural(), name, why),
        )
        .with_details(resource, name)
    }

    /// Validation failure; `causes` are (field, message) pairs.
    pub fn invalid(resource: &ResourceType, name: &str, causes: &[(String, String)]) -> Self {
        let text: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let message = format!(
            "{} \"{}\" is invalid: {}",
            resource.kind,
            name,
            if text.len() == 1 { text[0].clone() } else { format!("[{}]", text.join(", ")) }
        );
        let mut error = Self::new(422, "Invalid", message).with_details(resource, name);
        if let Some(details) = error.details.as_mut() {
            details["kind"] = json!(resource.kind);
            details["causes"] = causes
                .iter()
                .map(|(field, message)| json!({ "reason": "FieldValueInvalid", "message": message, "field": field }))
                .collect();
        }
        error
    }

    /// Authorization or admission refusal about `resource` (and `name`, empty for collections).
    pub fn forbidden(resource: &ResourceType, name: &str, why: &str) -> Self {
        let subject = if name.is_empty() {
            resource.qualified_plural()
        } else {
            format!("{} \"{}\"", resource.qualified_plural(), name)
        };
        Self::new(403, "Forbidden", format!("{subject} is forbidden: {why}")).with_details(resource, name)
    }

    /// Refusal of a request not about a resource (a non-resource URL).
    pub fn forbidden_path(user: &str, verb: &str, path: &str) -> Self {
        Self::new(403, "Forbidden", format!("forbidden: User \"{user}\" cannot {verb} path \"{path}\""))
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message.into())
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into())
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized".into())
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message.into())
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type:?})"),
        )
    }

    pub fn service_unavailable() -> Self {
        Self::new(503, "ServiceUnavailable", "the server is currently unable to handle the request".into())
    }

    pub fn not_found_path(path: &str) -> Self {
        Self::new(404, "NotFound", format!("the server could not find the requested resource ({path})"))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message.into())
    }

    /// The `metav1.Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}
