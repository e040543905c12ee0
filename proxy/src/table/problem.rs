//! What was wrong with one object the table was built from.

use std::fmt;

/// An object by kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn service(namespace: &str, name: &str) -> ObjectRef {
        ObjectRef { kind: "Service", namespace: namespace.to_owned(), name: name.to_owned() }
    }

    pub fn endpoint_slice(namespace: &str, name: &str) -> ObjectRef {
        ObjectRef { kind: "EndpointSlice", namespace: namespace.to_owned(), name: name.to_owned() }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One thing wrong with one object, and what the table did about it (the message ends
/// with it: "skipped", "not used", ...).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Problem {
    pub object: ObjectRef,
    pub message: String,
}

impl Problem {
    pub fn new(object: ObjectRef, message: impl Into<String>) -> Problem {
        Problem { object, message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.object.kind, self.object, self.message)
    }
}
