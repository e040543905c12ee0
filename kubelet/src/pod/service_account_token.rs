//! Service account tokens for projected volumes, as kubelet's token manager gets them: a
//! TokenRequest (`serviceaccounts/<name>/token`) bound to the pod, cached, and requested again
//! once 80% of its lifetime has passed (or after 24 hours), so the file in the volume is
//! renewed by the volume resync well before it expires.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::Api;

/// kubelet's default and the API's minimum lifetime of a projected token.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// A token older than this is renewed whatever its lifetime.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("request a token for serviceaccount {namespace}/{name}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("the token request for serviceaccount {namespace}/{name} returned no expiration")]
    NoExpiration { namespace: String, name: String },
    #[error("cannot request a token for serviceaccount {namespace}/{name}: static pods may not refer to API objects")]
    NoApiServer { namespace: String, name: String },
}

/// What a projected serviceAccountToken source asks for, for one pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TokenWanted {
    pub namespace: String,
    pub service_account: String,
    /// Empty: the API server's own audiences.
    pub audience: String,
    pub expiration_seconds: i64,
    pub pod_name: String,
    pub pod_uid: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    pub expires: DateTime<Utc>,
    pub lifetime_seconds: i64,
}

/// kubelet's requiresRefresh: past 80% of the lifetime, or older than 24 hours.
pub fn needs_refresh(token: &IssuedToken, now: DateTime<Utc>) -> bool {
    let issued = token.expires - chrono::Duration::seconds(token.lifetime_seconds);
    let max_ttl = chrono::Duration::from_std(MAX_TTL).unwrap_or(chrono::Duration::MAX);
    let refresh_at = token.expires - chrono::Duration::seconds(token.lifetime_seconds * 20 / 100);
    now >= issued + max_ttl || now >= refresh_at
}

/// Issued tokens by request, kept until they expire or their pod is released.
#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<TokenWanted, IssuedToken>>,
}

impl TokenCache {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<TokenWanted, IssuedToken>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached token unless it needs a refresh; expired tokens are dropped on the way.
    pub fn fresh(&self, wanted: &TokenWanted, now: DateTime<Utc>) -> Option<IssuedToken> {
        let mut entries = self.entries();
        entries.retain(|_, token| token.expires > now);
        entries.get(wanted).filter(|t| !needs_refresh(t, now)).cloned()
    }

    pub fn insert(&self, wanted: TokenWanted, token: IssuedToken) {
        self.entries().insert(wanted, token);
    }

    /// Drop every token bound to the pod, as kubelet's token manager does when the pod's
    /// volumes are torn down (a token may live for a year).
    pub fn forget_pod(&self, pod_uid: &str) {
        self.entries().retain(|wanted, _| wanted.pod_uid != pod_uid);
    }
}

/// Tokens from the API server, cached until they need a refresh.
pub struct ApiTokens {
    client: kube::Client,
    cache: TokenCache,
}

impl ApiTokens {
    pub fn new(client: kube::Client) -> ApiTokens {
        ApiTokens { client, cache: TokenCache::default() }
    }

    /// The pod was released: its tokens go.
    pub fn forget_pod(&self, pod_uid: &str) {
        self.cache.forget_pod(pod_uid);
    }

    async fn request(&self, wanted: &TokenWanted) -> Result<IssuedToken, TokenError> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &wanted.namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: if wanted.audience.is_empty() { Vec::new() } else { vec![wanted.audience.clone()] },
                expiration_seconds: Some(wanted.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".to_string()),
                    kind: Some("Pod".to_string()),
                    name: Some(wanted.pod_name.clone()),
                    uid: Some(wanted.pod_uid.clone()),
                }),
            },
            ..TokenRequest::default()
        };
        let names = || (wanted.namespace.clone(), wanted.service_account.clone());
        let response = api
            .create_token_request(&wanted.service_account, &PostParams::default(), &request)
            .await
            .map_err(|source| {
                let (namespace, name) = names();
                TokenError::Api { namespace, name, source: Box::new(source) }
            })?;
        let Some(status) = response.status.filter(|s| s.expiration_timestamp.0.timestamp() != 0) else {
            let (namespace, name) = names();
            return Err(TokenError::NoExpiration { namespace, name });
        };
        let expires = status.expiration_timestamp.0;
        let lifetime_seconds = response.spec.expiration_seconds.unwrap_or(wanted.expiration_seconds);
        Ok(IssuedToken { token: status.token, expires, lifetime_seconds })
    }
}

impl ApiTokens {
    /// The cached token, or a new one when there is none or it needs a refresh.
    pub async fn token(&self, wanted: &TokenWanted) -> Result<IssuedToken, TokenError> {
        if let Some(token) = self.cache.fresh(wanted, Utc::now()) {
            return Ok(token);
        }
        let token = self.request(wanted).await?;
        self.cache.insert(wanted.clone(), token.clone());
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn refreshed_after_eighty_percent_of_its_life_or_a_day() {
        let issued = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
        let hour =
            IssuedToken { token: "t".into(), expires: issued + chrono::Duration::hours(1), lifetime_seconds: 3600 };
        assert!(!needs_refresh(&hour, issued));
        assert!(!needs_refresh(&hour, issued + chrono::Duration::minutes(47)));
        assert!(needs_refresh(&hour, issued + chrono::Duration::minutes(48)));
        assert!(needs_refresh(&hour, issued + chrono::Duration::hours(2)));
        let week =
            IssuedToken { token: "t".into(), expires: issued + chrono::Duration::days(7), lifetime_seconds: 7 * 86400 };
        assert!(!needs_refresh(&week, issued + chrono::Duration::hours(23)));
        assert!(needs_refresh(&week, issued + chrono::Duration::hours(24)));
    }

    fn wanted(pod_uid: &str, audience: &str) -> TokenWanted {
        TokenWanted {
            namespace: "ns".into(),
            service_account: "robot".into(),
            audience: audience.into(),
            expiration_seconds: 365 * 86400,
            pod_name: format!("pod-{pod_uid}"),
            pod_uid: pod_uid.into(),
        }
    }

    #[test]
    fn released_pods_lose_their_tokens() {
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
        let year = IssuedToken {
            token: "t".into(),
            expires: now + chrono::Duration::days(365),
            lifetime_seconds: 365 * 86400,
        };
        let cache = TokenCache::default();
        cache.insert(wanted("gone", ""), year.clone());
        cache.insert(wanted("gone", "vault"), year.clone());
        cache.insert(wanted("stays", ""), year.clone());
        assert_eq!(cache.fresh(&wanted("gone", "vault"), now), Some(year.clone()));
        cache.forget_pod("gone");
        assert_eq!(cache.fresh(&wanted("gone", "vault"), now), None);
        assert_eq!(cache.fresh(&wanted("gone", ""), now), None);
        assert_eq!(cache.fresh(&wanted("stays", ""), now), Some(year));
    }
}
