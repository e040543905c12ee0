//! Registry faults, injected by a proxy on 127.0.0.1 in front of a real docker-registry: a
//! blob cut mid-way (resumed with Range), a wrong blob body (refused, nothing kept), Bearer
//! and Basic challenges, 404, 429 with Retry-After, blobs redirected to "storage", 5
//! concurrent pulls of one image that must download each blob once, the bound on parallel
//! layer downloads, a pull killed with SIGKILL mid-download and one whose future is dropped
//! (its pins released). Needs root (the registry script installs packages).

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
use image_common::{require_root, Compression, TarBuilder, TestRegistry};
use nodelet_runtime::image::{Digest, DockerConfig, ImageError, ImageStore, NoProgress, PARALLEL_LAYERS};

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
    /// Answer blob GETs with 307 to `/storage/...` on the proxy, served without auth, as
    /// registries send clients to their blob storage.
    redirect_blobs: bool,
    /// Hold each blob answer this long (so that parallel downloads overlap).
    slow_blobs: Option<Duration>,
    /// Send half of this blob, then nothing, forever.
    stall_blob: Option<String>,
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
    /// Blob requests being answered now, and the most at once since the last `set`.
    active_blobs: Mutex<(usize, usize)>,
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
            active_blobs: Mutex::new((0, 0)),
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
        self.state.active_blobs.lock().unwrap().1 = 0;
    }

    /// The most blob requests answered at the same time since the last `set`.
    fn max_parallel_blobs(&self) -> usize {
        self.state.active_blobs.lock().unwrap().1
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
    let is_blob = path.contains("/blobs/");
    if is_blob {
        let mut active = state.active_blobs.lock().unwrap();
        active.0 += 1;
        active.1 = active.1.max(active.0);
    }
    let slow = state.faults.lock().unwrap().slow_blobs;
    if let (true, Some(delay)) = (is_blob, slow) {
        tokio::time::sleep(delay).await;
    }
    let response = respond(&state, &request, &path, range.as_deref()).await;
    if is_blob {
        state.active_blobs.lock().unwrap().0 -= 1;
    }
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
    if let Some(original) = path.strip_prefix("/storage") {
        // Blob storage: no registry auth, the URL is the credential.
        return forward(state, original, request, Cut::No).await;
    }
    let blob = path.split_once("/blobs/").map(|(_, digest)| digest.to_string());
    let (cut, blob_to_hide, bearer, basic_auth, busy, redirect) = {
        let mut faults = state.faults.lock().unwrap();
        let busy = path.contains("/manifests/") && faults.too_many_requests > 0;
        if busy {
            faults.too_many_requests -= 1;
        }
        let cut = match (&blob, range) {
            (Some(b), None) if faults.drop_blob_once.as_ref() == Some(b) => {
                faults.drop_blob_once = None;
                Cut::Drop
            }
            (Some(b), _) if faults.stall_blob.as_ref() == Some(b) => Cut::Stall,
            _ => Cut::No,
        };
        (cut, faults.blob_not_found.clone(), faults.require_bearer, faults.require_basic, busy, faults.redirect_blobs)
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
    if redirect && blob.is_some() {
        let location = format!("http://{}/storage{}", state.addr, request.uri());
        return full(StatusCode::TEMPORARY_REDIRECT, &[("location", location)], "");
    }
    forward(state, &request.uri().to_string(), request, cut).await
}

/// What to do to a forwarded body.
enum Cut {
    No,
    /// Half the bytes, then an error.
    Drop,
    /// Half the bytes, then nothing until the client goes away.
    Stall,
}

/// Forward a GET of `target` (path and query) to the registry.
async fn forward(state: &ProxyState, target: &str, request: &Request<Incoming>, cut: Cut) -> Response<Body> {
    let blob = target.split_once("/blobs/").map(|(_, digest)| digest.to_string());
    let digest_to_corrupt = state.faults.lock().unwrap().corrupt_blob.clone();
    let mut upstream = state.http.get(format!("http://{}{}", state.upstream, target));
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
    let half = Bytes::copy_from_slice(&body[..body.len() / 2]);
    match cut {
        Cut::No => {}
        Cut::Drop => {
            // hyper aborts the connection short of Content-Length.
            let frames: Vec<Result<Frame<Bytes>, std::io::Error>> =
                vec![Ok(Frame::data(half)), Err(std::io::Error::other("injected cut"))];
            return response.body(StreamBody::new(futures::stream::iter(frames)).boxed()).unwrap();
        }
        Cut::Stall => {
            let frames =
                futures::StreamExt::chain(futures::stream::iter([Ok(Frame::data(half))]), futures::stream::pending());
            return response.body(StreamBody::new(frames).boxed()).unwrap();
        }
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
    assert!(image_common::work_leftovers(store.root()).is_empty(), "no partial download left");
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

    // 8. Blobs redirected to storage: followed, and what storage sends is verified as usual.
    proxy.set(|f| f.redirect_blobs = true);
    let store = fresh_store(work.path(), "redirected");
    store.pull(&web, &NoProgress).await.expect("pull through redirects");
    let seen = proxy.seen();
    assert_eq!(seen.iter().filter(|s| s.status == 307).count(), 3, "config and 2 layers redirected: {seen:?}");
    assert_eq!(seen.iter().filter(|s| s.path.starts_with("/storage/") && s.status == 200).count(), 3, "{seen:?}");

    // 9. The layers of one image download a few at a time, not all at once.
    let tars: Vec<Vec<u8>> =
        (0..6).map(|i| TarBuilder::new().file(&format!("layer-{i}"), format!("{i}").as_bytes()).finish()).collect();
    let layers: Vec<(&[u8], Compression)> = tars.iter().map(|tar| (tar.as_slice(), Compression::Gzip)).collect();
    registry.push_layers_image("nodelet/many", "1", &layers).await;
    proxy.set(|f| f.slow_blobs = Some(Duration::from_millis(300)));
    let store = fresh_store(work.path(), "parallel");
    store.pull(&format!("{}/nodelet/many:1", proxy.addr()), &NoProgress).await.expect("pull of 6 layers");
    assert_eq!(proxy.max_parallel_blobs(), PARALLEL_LAYERS, "downloads at once, of 6 layers");
}

const HELPER_ENV: &str = "NODELET_TEST_PULL_HELPER";

/// Not a test by itself: the process that `sigkill_mid_pull_leaves_nothing_half_done` starts
/// and kills. `NODELET_TEST_PULL_HELPER` is "<store root> <reference>".
#[tokio::test]
#[ignore = "run by sigkill_mid_pull_leaves_nothing_half_done"]
async fn pull_helper_process() {
    let Ok(spec) = std::env::var(HELPER_ENV) else { return };
    let (root, reference) = spec.split_once(' ').unwrap();
    ImageStore::open(root).unwrap().pull(reference, &NoProgress).await.unwrap();
}

/// Kills the helper process on drop, so a failing test leaves no process behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_pull_leaves_nothing_half_done() {
    require_root();
    let registry = TestRegistry::start();
    registry.push_test_images();
    let proxy = FaultProxy::start(&registry.addr).await;
    let (_, layers) = blobs_of(&registry, "nodelet/web").await;
    let (base, base_size) = layers[0].clone();
    proxy.set(|f| f.stall_blob = Some(base.clone()));
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("images");
    let web = format!("{}/nodelet/web:1", proxy.addr());

    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "pull_helper_process", "--ignored", "--nocapture"])
        .env(HELPER_ENV, format!("{} {web}", root.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the pulling process");
    let mut child = KillOnDrop(child);

    // Wait until half of the base layer is on disk, then kill -9.
    let deadline = Instant::now() + Duration::from_secs(60);
    let half_downloaded = || {
        let Ok(dirs) = std::fs::read_dir(root.join("tmp")) else { return false };
        dirs.flatten().flat_map(|dir| std::fs::read_dir(dir.path()).into_iter().flatten().flatten()).any(|file| {
            file.file_name().to_string_lossy().starts_with("download-")
                && file.metadata().is_ok_and(|m| m.len() >= base_size / 2)
        })
    };
    while !half_downloaded() {
        assert!(Instant::now() < deadline, "the helper never got half of the layer");
        assert!(child.0.try_wait().unwrap().is_none(), "the helper exited before the kill");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    // What is under a final name is complete; the rest is swept when the store is opened.
    let store = ImageStore::open(&root).unwrap();
    assert!(store.list().unwrap().is_empty(), "no image indexed");
    assert!(!entries(&root.join("blobs/sha256")).contains(&base["sha256:".len()..].to_string()));
    for name in entries(&root.join("blobs/sha256")) {
        let bytes = std::fs::read(root.join("blobs/sha256").join(&name)).unwrap();
        assert_eq!(Digest::of(&bytes).hex(), name, "a blob under its final name is complete");
    }
    assert_eq!(entries(&root.join("tmp")).len(), 1, "the dead process's work directory is swept");
    assert!(image_common::work_leftovers(&root).is_empty());

    // The next pull completes.
    proxy.set(|_| {});
    let image = store.pull(&web, &NoProgress).await.expect("pull after the kill");
    assert_eq!(image.config.rootfs().diff_ids().len(), 2);
    assert_eq!(entries(&root.join("layers/sha256")).len(), 2);
}

/// The digests that the store's open instances have published as pinned (their busy.json).
fn published_pins(root: &Path) -> Vec<String> {
    let mut pins = Vec::new();
    for dir in std::fs::read_dir(root.join("tmp")).unwrap().flatten() {
        if let Ok(bytes) = std::fs::read(dir.path().join("busy.json")) {
            pins.extend(serde_json::from_slice::<Vec<String>>(&bytes).unwrap());
        }
    }
    pins
}

/// A pull whose future is dropped mid-download (its pod deleted) leaves no pins published:
/// what it downloaded is left to the collectors, here and in other processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_pull_unpins_its_content() {
    require_root();
    let registry = TestRegistry::start();
    registry.push_test_images();
    let proxy = FaultProxy::start(&registry.addr).await;
    let (config, layers) = blobs_of(&registry, "nodelet/web").await;
    proxy.set(|f| f.stall_blob = Some(layers[0].0.clone()));
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("images");
    let store = Arc::new(ImageStore::open(&root).unwrap());
    // Another store on the root: a collector as another process would run it.
    let collector = ImageStore::open(&root).unwrap();
    let web = format!("{}/nodelet/web:1", proxy.addr());
    let pulling = tokio::spawn({
        let store = store.clone();
        async move { store.pull(&web, &NoProgress).await }
    });

    // Wait until the config is stored and pinned, and the stalled layer downloading.
    let config_file = root.join("blobs/sha256").join(&config["sha256:".len()..]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let downloading = || {
        image_common::work_leftovers(&root).iter().any(|path| path.contains("/download-"))
            && config_file.is_file()
            && published_pins(&root).contains(&config)
    };
    while !downloading() {
        assert!(Instant::now() < deadline, "the pull never got to the stalled layer");
        assert!(!pulling.is_finished(), "the pull ended before the stall: {:?}", pulling.await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(collector.collect_garbage().unwrap().blobs, 0, "the config is pinned while the pull runs");

    pulling.abort();
    assert!(pulling.await.unwrap_err().is_cancelled());
    // The pins and the partial download go in the background once the pull is dropped.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !published_pins(&root).is_empty() || !image_common::work_leftovers(&root).is_empty() {
        assert!(
            Instant::now() < deadline,
            "pins still published: {:?}; downloads left: {:?}",
            published_pins(&root),
            image_common::work_leftovers(&root)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The config, and any layer that finished beside the stalled one (downloads run in
    // parallel), are collected: nothing of the dropped pull is kept.
    let collected = collector.collect_garbage().unwrap();
    assert!(collected.blobs >= 1, "the dropped pull's config is collected: {collected:?}");
    assert!(!config_file.exists());
    let left: Vec<_> = std::fs::read_dir(root.join("blobs/sha256")).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "blobs of the dropped pull left: {left:?}");
}
