//! Bearer-token authentication (the Docker/OCI token flow): a registry answers 401 with
//! `WWW-Authenticate: Bearer realm=...,service=...,scope=...`; we ask the realm for a token
//! (with basic credentials when we have some for the registry, anonymously otherwise) and retry
//! with `Authorization: Bearer <token>`.

use std::collections::HashMap;

use serde::Deserialize;

use super::credentials::Credentials;
use super::ImageError;

/// A parsed `Bearer` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BearerChallenge {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
}

/// Parse a `WWW-Authenticate` value. `Ok(None)` for non-Bearer schemes (e.g. Basic), which
/// need credentials we do not have.
pub fn parse_challenge(header: &str) -> Option<BearerChallenge> {
    let header = header.trim();
    let (scheme, params) = header.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(params);
    Some(BearerChallenge {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

/// `key="value", key2=value2`: values may be quoted and contain commas (scopes do).
fn parse_params(text: &str) -> HashMap<String, String> {
    let mut params = HashMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ',' || c.is_whitespace()).is_some() {}
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            break;
        }
        if chars.next_if_eq(&'=').is_none() {
            continue;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    params
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// Fetch a token for `challenge`; `default_scope` is used when the challenge has none (some
/// registries only send realm and service).
pub async fn fetch_token(
    http: &reqwest::Client,
    challenge: &BearerChallenge,
    default_scope: &str,
    credentials: Option<&Credentials>,
) -> Result<String, ImageError> {
    let token_error = |reason: String| ImageError::Token { url: challenge.realm.clone(), reason };
    let mut url = reqwest::Url::parse(&challenge.realm).map_err(|e| token_error(format!("bad realm url: {e}")))?;
    {
        let mut query = url.query_pairs_mut();
        if let Some(service) = &challenge.service {
            query.append_pair("service", service);
        }
        query.append_pair("scope", challenge.scope.as_deref().unwrap_or(default_scope));
    }
    let mut request = http.get(url.clone());
    if let Some(credentials) = credentials {
        request = request.header(reqwest::header::AUTHORIZATION, credentials.basic_header());
    }
    let response = request.send().await.map_err(|e| token_error(format!("request failed: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        return Err(token_error(format!("status {}", status.as_u16())));
    }
    let body = response.bytes().await.map_err(|e| token_error(format!("reading body: {e}")))?;
    let parsed: TokenResponse =
        serde_json::from_slice(&body).map_err(|e| token_error(format!("bad token response: {e}")))?;
    parsed
        .token
        .or(parsed.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| token_error("response has no token".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://auth.docker.io/token");
        assert_eq!(c.service.as_deref(), Some("registry.docker.io"));
        assert_eq!(c.scope.as_deref(), Some("repository:library/busybox:pull,push"));

        let c = parse_challenge("bearer realm=http://127.0.0.1:1/t, service=x").unwrap();
        assert_eq!(c.realm, "http://127.0.0.1:1/t");
        assert_eq!(c.service.as_deref(), Some("x"));
        assert_eq!(c.scope, None);

        assert_eq!(parse_challenge(r#"Basic realm="registry""#), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }
}
