//! Registry faults, injected by a proxy on 127.0.0.1 in front of a real docker-registry: a
//! blob cut mid-way (resumed with Range), a wrong blob body (refused, nothing kept), Bearer
//! and Basic challenges, 404, 429 with Retry-After, and 5 concurrent pulls of one image that
//! must download each blob once. Needs root (the registry script installs packages).

mod image_common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use image_common::{require_root, TestRegistry};
use nodelet_runtime::image::{Digest, DockerConfig, ImageError, ImageStore, NoProgress};

const TOKEN: &str = "test-token-4f2a";
const USER: &str = "puller";
const PASSWORD: &str = "s3cret";

/// What the proxy does to the next requests; every field is a one-shot or a mode.
#[derive(Default)]
struct Faults {
    /// Cut the first full (non-Range) GET of this blob after half its bytes.
    drop_blob_once: Option<String>,
    /// Answer this blob with the right length of wrong bytes.
    corrupt_blob: Option<String>,
    /// Answer this blob with 404 BLOB_UNKNOWN.
    blob_not_found: Option<String>,
    /// Answer /v2/ requests without `Authorization: Bearer TOKEN` with a Bearer challenge.
    require_bearer: bool,
    /// Answer /v2/ requests without Basic USER:PASSWORD with a Basic challenge.
    require_basic: bool,
    /// Answer this many manifest requests with 429 and Retry-After: 1.
    too_many_requests: usize,
}

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    range: Option<String>,
    status: u16,
}

struct ProxyState {
    upstream: String,
    addr: String,
    http: reqwest::Client,
    faults: Mutex<Faults>,
    seen: Mutex<Vec<Seen>>,
}

/// The fault-injecting proxy; stops accepting when dropped.
struct FaultProxy {
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

type Body = BoxBody<Bytes, std::io::Error>;

impl FaultProxy {
    async fn start(upstream: &str) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(ProxyState {
            upstream: upstream.to_string(),
            addr,
            http: reqwest::Client::new(),
            faults: Mutex::new(Faults::default()),
            seen: Mutex::new(Vec::new()),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| handle(state.clone(), request));
                    // Errors here are the cuts we inject.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FaultProxy { state, task }
    }

    fn addr(&self) -> &str {
        &self.state.addr
    }

    fn set(&self, change: impl FnOnce(&mut Faults)) {
        let mut faults = self.state.faults.lock().unwrap();
        *faults = Faults::default();
        change(&mut faults);
        self.state.seen.lock().unwrap().clear();
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Successful or cut GETs per blob digest.
    fn blob_gets(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for seen in self.seen() {
            if let Some((_, digest)) = seen.path.split_once("/blobs/") {
                if seen.status != 401 {
                    *counts.entry(digest.to_string()).or_default() += 1;
                }
            }
        }
        counts
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn full(status: StatusCode, headers: &[(&str, String)], body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(*name, value);
    }
    response.body(Full::new(body.into()).map_err(|never| match never {}).boxed()).unwrap()
}

async fn handle(state: Arc<ProxyState>, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path().to_string();
    let range = request.headers().get("range").and_then(|v| v.to_str().ok()).map(str::to_string);
    let response = respond(&state, &request, &path, range.as_deref()).await;
    state.seen.lock().unwrap().push(Seen { path, range, status: response.status().as_u16() });
    Ok(response)
}

async fn respond(state: &ProxyState, request: &Request<Incoming>, path: &str, range: Option<&str>) -> Response<Body> {
    let authorization = request.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    let basic = format!("Basic {}", base64_encode(&format!("{USER}:{PASSWORD}")));
    if path == "/token" {
        // Tokens only for the scope the registry challenged with.
        let query = request.uri().query().unwrap_or("");
        assert!(query.contains("scope=repository%3Anodelet%2F"), "token request without the scope: {query}");
        return full(
            StatusCode::OK,
            &[("content-type", "application/json".into())],
            format!(r#"{{"token":"{TOKEN}"}}"#),
        );
    }
    let blob = path.split_once("/blobs/").map(|(_, digest)| digest.to_string());
    let (digest_to_cut, digest_to_corrupt, blob_to_hide, bearer, basic_auth, busy) = {
        let mut faults = state.faults.lock().unwrap();
        let busy = path.contains("/manifests/") && faults.too_many_requests > 0;
        if busy {
            faults.too_many_requests -= 1;
        }
        let cut = match (&blob, range) {
            (Some(b), None) if faults.drop_blob_once.as_ref() == Some(b) => faults.drop_blob_once.take(),
            _ => None,
        };
        (
            cut,
            faults.corrupt_blob.clone(),
            faults.blob_not_found.clone(),
            faults.require_bearer,
            faults.require_basic,
            busy,
        )
    };
    if bearer && path.starts_with("/v2/") && authorization != format!("Bearer {TOKEN}") {
        let repository = path.trim_start_matches("/v2/").split("/manifests/").next().unwrap_or("");
        let repository = repository.split("/blobs/").next().unwrap_or("");
        let challenge = format!(
            r#"Bearer realm="http://{}/token",service="fault-proxy",scope="repository:{repository}:pull""#,
            state.addr
        );
        return full(StatusCode::UNAUTHORIZED, &[("www-authenticate", challenge)], "{}");
    }
    if basic_auth && path.starts_with("/v2/") && authorization != basic {
        return full(StatusCode::UNAUTHORIZED, &[("www-authenticate", r#"Basic realm="fault-proxy""#.into())], "{}");
    }
    if busy {
        return full(StatusCode::TOO_MANY_REQUESTS, &[("retry-after", "1".into())], "slow down");
    }
    if blob.is_some() && blob == blob_to_hide {
        let body = r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#;
        return full(StatusCode::NOT_FOUND, &[("content-type", "application/json".into())], body);
    }

    // Forward to the registry.
    let mut upstream = state.http.get(format!("http://{}{}", state.upstream, request.uri()));
    for name in ["accept", "range"] {
        if let Some(value) = request.headers().get(name) {
            upstream = upstream.header(name, value.as_bytes());
        }
    }
    let answer = upstream.send().await.expect("the registry answers the proxy");
    let status = answer.status();
    let headers: Vec<(String, String)> = answer
        .headers()
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "transfer-encoding" | "connection" | "content-length"))
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or("").to_string()))
        .collect();
    let mut body = answer.bytes().await.expect("registry body").to_vec();
    let mut response = Response::builder().status(status.as_u16()).header("content-length", body.len());
    for (name, value) in &headers {
        response = response.header(name, value);
    }
    if digest_to_cut.is_some() {
        // Half the bytes, then an error: hyper aborts the connection short of Content-Length.
        let half = Bytes::copy_from_slice(&body[..body.len() / 2]);
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> =
            vec![Ok(Frame::data(half)), Err(std::io::Error::other("injected cut"))];
        return response.body(StreamBody::new(futures::stream::iter(frames)).boxed()).unwrap();
    }
    if blob.is_some() && blob == digest_to_corrupt && status.is_success() {
        for byte in body.iter_mut().take(64) {
            *byte ^= 0x5a;
        }
    }
    response.body(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed()).unwrap()
}

fn base64_encode(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The config and layer digests of an image, from the registry itself.
async fn blobs_of(registry: &TestRegistry, repository: &str) -> (String, Vec<(String, u64)>) {
    let manifest: serde_json::Value = reqwest::Client::new()
        .get(registry.url(&format!("/v2/{repository}/manifests/1")))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap().to_string();
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["digest"].as_str().unwrap().to_string(), l["size"].as_u64().unwrap()))
        .collect();
    (config, layers)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

fn fresh_store(work: &Path, name: &str) -> ImageStore {
    ImageStore::open(work.join(name)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registry_faults_through_a_proxy() {
    require_root();
    let registry = TestRegistry::start();
    registry.push_test_images();
    let proxy = FaultProxy::start(&registry.addr).await;
    let work = tempfile::tempdir().unwrap();
    let web = format!("{}/nodelet/web:1", proxy.addr());
    let busybox = format!("{}/nodelet/busybox:1", proxy.addr());
    let (web_config, web_layers) = blobs_of(&registry, "nodelet/web").await;
    let (base_layer, base_size) = web_layers[0].clone();
    let top_layer = web_layers[1].0.clone();
    assert!(base_size > 100_000, "the busybox layer is big enough to cut in half");

    // 1. A blob cut mid-way is resumed with a Range request for the rest.
    proxy.set(|f| f.drop_blob_once = Some(base_layer.clone()));
    let store = fresh_store(work.path(), "cut");
    let image = store.pull(&web, &NoProgress).await.expect("a cut blob is resumed");
    let ranges: Vec<Seen> = proxy.seen().into_iter().filter(|s| s.path.ends_with(&base_layer)).collect();
    assert_eq!(ranges.len(), 2, "one cut GET and one resumed GET: {ranges:?}");
    assert_eq!(ranges[0].range, None);
    let resumed_from: u64 = ranges[1]
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .unwrap()
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(resumed_from > 0 && resumed_from < base_size, "resumed at {resumed_from} of {base_size}");
    assert_eq!(ranges[1].status, 206);
    let blob = std::fs::read(store.root().join("blobs/sha256").join(&base_layer["sha256:".len()..])).unwrap();
    assert_eq!(Digest::of(&blob).as_str(), base_layer, "the resumed file is the whole blob");
    assert_eq!(image.id, web_config);

    // 2. A wrong body: the pull fails naming the digest, and nothing of it is kept.
    proxy.set(|f| f.corrupt_blob = Some(top_layer.clone()));
    let store = fresh_store(work.path(), "corrupt");
    let error = store.pull(&web, &NoProgress).await.expect_err("a corrupt blob must fail the pull");
    let message = error.to_string();
    assert!(matches!(error, ImageError::DigestMismatch { .. }), "{error:?}");
    assert!(message.contains(&top_layer), "the error names the digest: {message}");
    assert!(!entries(&store.root().join("blobs/sha256")).contains(&top_layer["sha256:".len()..].to_string()));
    assert!(entries(&store.root().join("tmp")).is_empty(), "no partial download left");
    assert!(store.list().unwrap().is_empty(), "no image indexed");
    let removed = store.collect_garbage().unwrap();
    assert!(removed.layers <= 1, "at most the other layer was kept for a retry");
    assert!(entries(&store.root().join("layers/sha256")).is_empty());

    // 3. A Bearer challenge, answered by the proxy's token endpoint.
    proxy.set(|f| f.require_bearer = true);
    let store = fresh_store(work.path(), "bearer");
    store.pull(&busybox, &NoProgress).await.expect("pull with a bearer token");
    let seen = proxy.seen();
    assert_eq!(seen.iter().filter(|s| s.path == "/token").count(), 1, "one token per pull: {seen:?}");
    assert_eq!(seen.iter().filter(|s| s.status == 401).count(), 1, "the token is reused: {seen:?}");

    // 4. Basic auth from a Docker config.json; refused without it.
    proxy.set(|f| f.require_basic = true);
    let error = fresh_store(work.path(), "anonymous").pull(&busybox, &NoProgress).await.expect_err("no credentials");
    assert!(matches!(error, ImageError::Unauthorized { .. }), "{error:?}");
    assert!(error.to_string().contains("no credentials"), "{error}");
    let config = work.path().join("config.json");
    let auth = base64_encode(&format!("{USER}:{PASSWORD}"));
    std::fs::write(&config, format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, proxy.addr())).unwrap();
    let store = fresh_store(work.path(), "basic").with_docker_config(&config).unwrap();
    store.pull(&busybox, &NoProgress).await.expect("pull with basic auth from config.json");

    // 4b. A pod's pull secrets, as kubelet uses them: a refused entry passes the turn to the
    // next match (here the repository-scoped key comes first), and the secrets come before
    // the node's config.
    let wrong = base64_encode(&format!("{USER}:not-the-password"));
    let secret = DockerConfig::parse(
        format!(r#"{{"auths":{{"{0}/nodelet":{{"auth":"{wrong}"}},"{0}":{{"auth":"{auth}"}}}}}}"#, proxy.addr())
            .as_bytes(),
    )
    .unwrap();
    let before = proxy.seen().len();
    let store = fresh_store(work.path(), "secrets");
    store.pull_with_secrets(&busybox, &NoProgress, &[secret]).await.expect("the second matching entry works");
    let refused = proxy.seen()[before..].iter().filter(|s| s.status == 401).count();
    assert!(refused >= 1, "the wrong entry was tried first and refused");
    let only_wrong =
        DockerConfig::parse(format!(r#"{{"auths":{{"{}":{{"auth":"{wrong}"}}}}}}"#, proxy.addr()).as_bytes()).unwrap();
    let error = fresh_store(work.path(), "wrong-secret")
        .pull_with_secrets(&busybox, &NoProgress, &[only_wrong])
        .await
        .expect_err("only a wrong password");
    assert!(error.to_string().contains("refused the configured credentials"), "{error}");

    // 5. 404s: an unknown tag, a missing blob.
    proxy.set(|_| {});
    let store = fresh_store(work.path(), "missing");
    let error = store.pull(&format!("{}/nodelet/web:nope", proxy.addr()), &NoProgress).await.expect_err("no such tag");
    assert!(matches!(error, ImageError::ManifestUnknown { .. }) && error.to_string().contains("web:nope"), "{error}");
    proxy.set(|f| f.blob_not_found = Some(top_layer.clone()));
    let error = store.pull(&web, &NoProgress).await.expect_err("missing blob");
    assert!(matches!(error, ImageError::BlobUnknown { .. }) && error.to_string().contains(&top_layer), "{error}");

    // 6. 429 with Retry-After: 1: the pull waits and succeeds.
    proxy.set(|f| f.too_many_requests = 1);
    let store = fresh_store(work.path(), "busy");
    let started = Instant::now();
    store.pull(&busybox, &NoProgress).await.expect("pull after a 429");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(1), "Retry-After honoured (took {waited:?})");
    assert_eq!(proxy.seen().iter().filter(|s| s.status == 429).count(), 1);

    // 7. Five concurrent pulls of one image in one store: one GET per blob.
    proxy.set(|_| {});
    let store = fresh_store(work.path(), "concurrent");
    let pulls = (0..5).map(|_| store.pull(&web, &NoProgress));
    let images = futures::future::join_all(pulls).await;
    for image in &images {
        assert_eq!(image.as_ref().expect("concurrent pull").digest, images[0].as_ref().unwrap().digest);
    }
    let gets = proxy.blob_gets();
    let expected: BTreeMap<String, usize> =
        [web_config.clone(), base_layer.clone(), top_layer.clone()].into_iter().map(|d| (d, 1)).collect();
    assert_eq!(gets, expected, "exactly one download per blob");
    println!("blob GETs for 5 concurrent pulls: {gets:?}");
}
