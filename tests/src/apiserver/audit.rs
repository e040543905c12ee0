//! The in-memory audit log: one entry per request, readable by tests.

use std::sync::Mutex;

/// One request as the server saw and answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// User name ("" when unauthenticated).
    pub user: String,
    pub groups: Vec<String>,
    /// Kubernetes verb (get, list, watch, create, update, patch, delete, deletecollection),
    /// or the lowercase HTTP method for non-resource URLs.
    pub verb: String,
    /// API group of the resource ("" for core).
    pub api_group: String,
    /// Plural resource ("" for non-resource URLs).
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// Request path.
    pub path: String,
    /// HTTP status code of the answer.
    pub code: u16,
}

#[derive(Default)]
pub struct AuditLog {
    entries: Mutex<Vec<AuditEntry>>,
}

impl AuditLog {
    pub fn record(&self, entry: AuditEntry) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).push(entry);
    }

    pub fn entries(&self) -> Vec<AuditEntry> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn clear(&self) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
