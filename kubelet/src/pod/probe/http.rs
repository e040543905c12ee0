//! httpGet probes as kubelet's: a GET to `<scheme>://<host or pod IP>:<port><path>` with the
//! probe's headers, no certificate verification over HTTPS, no node proxy, no keep-alive.
//! 200 to 399 is a success. Redirects are followed only to the same host (at most 10); a
//! redirect elsewhere is not followed and counts as a success with a warning.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, USER_AGENT};
use reqwest::redirect::{Action, Attempt, Policy};
use reqwest::Url;

use super::spec::HttpGet;
use super::tcp::join_host_port;
use super::Outcome;

/// Go's http.Client limit, which kubelet keeps for same-host redirects.
const MAX_REDIRECTS: usize = 10;
/// kubelet reads at most 10 KiB of a response body.
const MAX_BODY: usize = 10 * 1024;

pub struct HttpProber {
    client: reqwest::Client,
}

impl HttpProber {
    pub fn new() -> Result<HttpProber, reqwest::Error> {
        let client = reqwest::Client::builder()
            // A pod's certificate is not for the pod IP, nor signed by anything the node
            // trusts: kubelet does not verify it either.
            .danger_accept_invalid_certs(true)
            .tls_built_in_root_certs(false)
            .no_proxy()
            .pool_max_idle_per_host(0)
            .redirect(Policy::custom(same_host_redirects))
            .build()?;
        Ok(HttpProber { client })
    }

    pub async fn probe(&self, get: &HttpGet, pod_ip: &str, timeout: Duration) -> Outcome {
        let url = match probe_url(get, pod_ip) {
            Ok(url) => url,
            Err(message) => return Outcome::Unknown(message),
        };
        let headers = match request_headers(&get.headers) {
            Ok(headers) => headers,
            Err(message) => return Outcome::Unknown(message),
        };
        let mut response = match self.client.get(url.clone()).headers(headers).timeout(timeout).send().await {
            Ok(response) => response,
            Err(error) => return Outcome::Failure(request_error(&url, &error)),
        };
        let status = response.status().as_u16();
        if !(200..400).contains(&status) {
            return Outcome::Failure(format!("HTTP probe failed with statuscode: {status}"));
        }
        if status < 300 {
            return Outcome::Success;
        }
        // A redirect that was not followed: kubelet's warning carries the start of the body.
        let mut body = Vec::new();
        while body.len() < MAX_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(error) => return Outcome::Failure(request_error(&url, &error)),
            }
        }
        body.truncate(MAX_BODY);
        Outcome::Warning(format!("Probe terminated redirects, Response body: {}", String::from_utf8_lossy(&body)))
    }
}

/// kubelet's redirect check: stop (and use the redirect response) when the host changes.
fn same_host_redirects(attempt: Attempt<'_>) -> Action {
    let original = attempt.previous().first().and_then(Url::host_str).map(str::to_string);
    if attempt.url().host_str() != original.as_deref() {
        return attempt.stop();
    }
    if attempt.previous().len() >= MAX_REDIRECTS {
        return attempt.error(format!("stopped after {MAX_REDIRECTS} redirects"));
    }
    attempt.follow()
}

fn probe_url(get: &HttpGet, pod_ip: &str) -> Result<Url, String> {
    let scheme = if get.https { "https" } else { "http" };
    let host = get.host.as_deref().unwrap_or(pod_ip);
    let slash = if get.path.starts_with('/') { "" } else { "/" };
    let text = format!("{scheme}://{}{slash}{}", join_host_port(host, get.port), get.path);
    Url::parse(&text).map_err(|error| format!("invalid probe URL {text:?}: {error}"))
}

/// The probe's headers, then kubelet's defaults for those it does not set: User-Agent
/// kube-probe and Accept */* (an empty Accept removes it). A Host header sets the host.
fn request_headers(pairs: &[(String, String)]) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("header name {name:?}: {e}"))?;
        let value = HeaderValue::from_str(value).map_err(|e| format!("header {name} value {value:?}: {e}"))?;
        headers.append(name, value);
    }
    if !headers.contains_key(USER_AGENT) {
        headers.insert(USER_AGENT, HeaderValue::from_static(super::USER_AGENT));
    }
    match headers.get(ACCEPT) {
        None => {
            headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        }
        Some(value) if value.is_empty() => {
            headers.remove(ACCEPT);
        }
        Some(_) => {}
    }
    Ok(headers)
}

/// As Go words a failed GET: the URL, then what went wrong underneath (reqwest's own layers
/// would only repeat the URL).
fn request_error(url: &Url, error: &reqwest::Error) -> String {
    if error.is_timeout() {
        // kubelet's (Go's) wording, which people search logs and events for.
        return format!(
            "Get {:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
            url.as_str()
        );
    }
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    format!("Get {:?}: {cause}", url.as_str())
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
