//! Authentication: bearer tokens (static token file semantics) and verified client
//! certificates (CN = user, O = groups), as the x509 and token authenticators do.

use std::collections::HashMap;
use std::sync::RwLock;

use super::tls::CertificateSubject;

pub const GROUP_MASTERS: &str = "system:masters";
pub const GROUP_NODES: &str = "system:nodes";
pub const GROUP_AUTHENTICATED: &str = "system:authenticated";
pub const NODE_USER_PREFIX: &str = "system:node:";

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    fn new(name: &str, groups: &[String]) -> UserInfo {
        let mut groups = groups.to_vec();
        if !groups.iter().any(|g| g == GROUP_AUTHENTICATED) {
            groups.push(GROUP_AUTHENTICATED.to_string());
        }
        UserInfo { name: name.to_string(), groups }
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The node name of a node identity (user system:node:<name> in group system:nodes).
    pub fn node_name(&self) -> Option<&str> {
        if !self.in_group(GROUP_NODES) {
            return None;
        }
        self.name.strip_prefix(NODE_USER_PREFIX).filter(|n| !n.is_empty())
    }
}

/// Known bearer tokens.
#[derive(Default)]
pub struct TokenAuthenticator {
    tokens: RwLock<HashMap<String, UserInfo>>,
}

impl TokenAuthenticator {
    pub fn add(&self, token: &str, user: &str, groups: &[String]) {
        let mut tokens = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        tokens.insert(token.to_string(), UserInfo::new(user, groups));
    }

    /// The user of an `Authorization` header value, if it is a known bearer token.
    pub fn authenticate(&self, authorization: &str) -> Option<UserInfo> {
        let token = authorization.strip_prefix("Bearer ")?.trim();
        let tokens = self.tokens.read().unwrap_or_else(|p| p.into_inner());
        tokens.get(token).cloned()
    }
}

/// The user of a client certificate that rustls verified against the CA.
pub fn user_from_certificate(subject: &CertificateSubject) -> Option<UserInfo> {
    let name = subject.common_name.as_deref().filter(|n| !n.is_empty())?;
    Some(UserInfo::new(name, &subject.organizations))
}
