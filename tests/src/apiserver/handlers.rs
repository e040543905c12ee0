//! Request handling: authentication, routing, authorization, the verbs, and the audit record
//! of every request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::audit::AuditEntry;
use super::authn::UserInfo;
use super::authz::{self, ResourceRequest};
use super::discovery;
use super::errors::ApiError;
use super::openapi;
use super::patch::{apply_patch, PatchType};
use super::request_info::{self, ResourceRequestInfo, Target};
use super::resources::{self, ResourceType};
use super::selectors::{FieldSelector, LabelSelector, Selection};
use super::state::ServerState;
use super::store::{ObjectKey, Write};
use super::strategy::{self, name_of, now_timestamp, prepare_create, prepare_update, ready_to_remove};
use super::table::{self, IncludeObject};
use super::watch::{self, WatchFrom, WatchRequest};

const JSON: &str = "application/json";
const MAX_BODY: usize = 16 << 20;

/// What a handler answers.
pub enum Reply {
    Json { code: u16, body: Value, content_type: &'static str },
    Text { code: u16, body: String },
    Stream(mpsc::Receiver<Bytes>),
}

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply::Json { code: 200, body, content_type: JSON }
    }

    fn created(body: Value) -> Reply {
        Reply::Json { code: 201, body, content_type: JSON }
    }

    fn code(&self) -> u16 {
        match self {
            Reply::Json { code, .. } | Reply::Text { code, .. } => *code,
            Reply::Stream(_) => 200,
        }
    }

    fn into_response(self) -> Response<Body> {
        let (code, content_type, body) = match self {
            Reply::Json { code, body, content_type } => (code, content_type, Body::from(body.to_string())),
            Reply::Text { code, body } => (code, "text/plain; charset=utf-8", Body::from(body)),
            Reply::Stream(receiver) => {
                let stream = futures::stream::unfold(receiver, |mut receiver| async move {
                    receiver.recv().await.map(|chunk| (Ok::<Bytes, std::io::Error>(chunk), receiver))
                });
                (200, JSON, Body::from_stream(stream))
            }
        };
        let mut response = Response::new(body);
        *response.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
            response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    }
}

impl From<ApiError> for Reply {
    fn from(error: ApiError) -> Reply {
        Reply::Json { code: error.code, body: error.to_status(), content_type: JSON }
    }
}

/// The parts of an HTTP request the handlers use.
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    pub accept: String,
    pub content_type: String,
    pub body: Bytes,
}

impl Call {
    fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.param(name), Some("1" | "true" | "True"))
    }
}

fn header(request: &Request<Incoming>, name: hyper::header::HeaderName) -> String {
    request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

/// Paths anyone may read without credentials (system:public-info-viewer).
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/livez" | "/version")
}

/// Handle one HTTP request from a connection whose client certificate identified `cert_user`.
pub async fn handle(
    state: Arc<ServerState>,
    cert_user: Option<UserInfo>,
    request: Request<Incoming>,
) -> Response<Body> {
    let method = request.method().as_str().to_string();
    let path = request.uri().path().to_string();
    let query: HashMap<String, String> = request
        .uri()
        .query()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let accept = header(&request, hyper::header::ACCEPT);
    let content_type = header(&request, hyper::header::CONTENT_TYPE);
    let authorization = header(&request, hyper::header::AUTHORIZATION);

    let user = if authorization.is_empty() { cert_user } else { state.tokens.authenticate(&authorization) };
    let mut entry = AuditEntry {
        user: user.as_ref().map(|u| u.name.clone()).unwrap_or_default(),
        groups: user.as_ref().map(|u| u.groups.clone()).unwrap_or_default(),
        verb: method.to_lowercase(),
        api_group: String::new(),
        resource: String::new(),
        subresource: String::new(),
        namespace: String::new(),
        name: String::new(),
        path: path.clone(),
        code: 0,
    };
    let watch_requested = matches!(query.get("watch").map(String::as_str), Some("1" | "true" | "True"));
    let target = request_info::parse(&method, &path, watch_requested);
    if let Ok(Target::Resource(info)) = &target {
        entry.verb = info.verb.to_string();
        entry.api_group = info.resource.group.to_string();
        entry.resource = info.resource.plural.to_string();
        entry.subresource = info.subresource.clone();
        entry.namespace = info.namespace.clone();
        entry.name = info.name.clone();
    }

    let reply = if state.is_unavailable() {
        Reply::from(ApiError::service_unavailable())
    } else if user.is_none() && !is_public(&path) {
        Reply::from(ApiError::unauthorized())
    } else {
        match axum::body::to_bytes(Body::new(request.into_body()), MAX_BODY).await {
            Err(e) => Reply::from(ApiError::bad_request(format!("reading the request body: {e}"))),
            Ok(body) => {
                let call = Call { method, path, query, accept, content_type, body };
                let user = user.unwrap_or_else(|| UserInfo {
                    name: "system:anonymous".into(),
                    groups: vec!["system:unauthenticated".into()],
                });
                match target {
                    Err(error) => Reply::from(error),
                    Ok(Target::NonResource) => non_resource(&state, &user, &call),
                    Ok(Target::Resource(info)) => {
                        resource_request(&state, &user, &info, &call).unwrap_or_else(Reply::from)
                    }
                }
            }
        }
    };
    entry.code = reply.code();
    tracing::debug!(user = %entry.user, verb = %entry.verb, path = %entry.path, code = entry.code, "request");
    state.audit.record(entry);
    reply.into_response()
}

fn non_resource(state: &ServerState, user: &UserInfo, call: &Call) -> Reply {
    if let Err(e) = authz::authorize_path(user) {
        return Reply::from(e);
    }
    if call.method != "GET" && call.method != "HEAD" {
        return Reply::from(ApiError::forbidden_path(&user.name, &call.method.to_lowercase(), &call.path));
    }
    let aggregated = discovery::wants_aggregated(&call.accept);
    let path = call.path.trim_end_matches('/');
    match path {
        "/healthz" | "/readyz" | "/livez" => Reply::Text { code: 200, body: "ok".into() },
        "/version" => Reply::ok(discovery::version()),
        "/api" if aggregated => {
            Reply::Json { code: 200, body: discovery::aggregated(true), content_type: discovery::AGGREGATED_V2 }
        }
        "/apis" if aggregated => {
            Reply::Json { code: 200, body: discovery::aggregated(false), content_type: discovery::AGGREGATED_V2 }
        }
        "/api" => Reply::ok(discovery::api_versions(&state.server_address)),
        "/apis" => Reply::ok(discovery::api_group_list()),
        "/openapi/v3" => Reply::ok(openapi::index()),
        "/api/v1" => discovery::api_resource_list("", "v1")
            .map(Reply::ok)
            .unwrap_or_else(|| ApiError::not_found_path(path).into()),
        _ => {
            let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            let found = match parts.as_slice() {
                ["apis", group] => discovery::api_group(group),
                ["apis", group, version] => discovery::api_resource_list(group, version),
                ["openapi", "v3", rest @ ..] => openapi::document(&rest.join("/")),
                _ => None,
            };
            found.map(Reply::ok).unwrap_or_else(|| ApiError::not_found_path(path).into())
        }
    }
}

fn key_of(info: &ResourceRequestInfo, name: &str) -> ObjectKey {
    (info.namespace.clone(), name.to_string())
}

fn parse_body(info: &ResourceRequestInfo, call: &Call) -> Result<Value, ApiError> {
    let media = call.content_type.split(';').next().unwrap_or_default().trim();
    let value: Value = if media == "application/yaml" {
        serde_yaml::from_slice(&call.body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
    } else if media.is_empty() || media == JSON {
        serde_json::from_slice(&call.body).map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))?
    } else {
        return Err(ApiError::unsupported_media_type(media));
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(format!("the body of a {} request must be an object", info.verb)));
    }
    Ok(value)
}

fn resource_request(
    state: &ServerState,
    user: &UserInfo,
    info: &ResourceRequestInfo,
    call: &Call,
) -> Result<Reply, ApiError> {
    let resource = info.resource;
    let stored = if info.name.is_empty() { None } else { state.store.get(resource, &key_of(info, &info.name)) };
    let incoming =
        if info.verb == "create" && info.subresource.is_empty() { Some(parse_body(info, call)?) } else { None };
    authz::authorize(
        user,
        &ResourceRequest {
            verb: info.verb,
            resource,
            subresource: &info.subresource,
            namespace: &info.namespace,
            name: &info.name,
        },
        &authz::Context {
            stored: stored.as_ref(),
            incoming: incoming.as_ref(),
            pods_in_namespace: &|namespace| state.store.list(&resources::PODS, Some(namespace)).items,
        },
    )?;
    match info.verb {
        "get" => get(info, call, stored),
        "list" => list(state, info, call),
        "watch" => watch_collection(state, info, call),
        "create" if info.subresource == "binding" => bind_pod(state, info, call),
        "create" if info.subresource == "token" => create_token(state, info, call),
        "create" => create(state, info, call, incoming.unwrap_or(Value::Null)),
        "update" => update(state, info, call),
        "patch" => patch(state, info, call),
        "delete" => delete(state, info, call),
        "deletecollection" => delete_collection(state, info, call),
        other => Err(ApiError::method_not_allowed(format!("verb {other} is not supported"))),
    }
}

fn get(info: &ResourceRequestInfo, call: &Call, stored: Option<Value>) -> Result<Reply, ApiError> {
    let object = stored.ok_or_else(|| ApiError::not_found(info.resource, &info.name))?;
    if table::wants_table(&call.accept) {
        let include = IncludeObject::parse(call.param("includeObject"));
        let rv = strategy::resource_version_of(&object).to_string();
        let body = table::table(info.resource, std::slice::from_ref(&object), &rv, include, None);
        return Ok(Reply::Json { code: 200, body, content_type: table::TABLE_CONTENT_TYPE });
    }
    Ok(Reply::ok(object))
}

fn selection(info: &ResourceRequestInfo, call: &Call) -> Result<Selection, ApiError> {
    let labels = LabelSelector::parse(call.param("labelSelector").unwrap_or_default())?;
    let mut field_text = call.param("fieldSelector").unwrap_or_default().to_string();
    if !info.name.is_empty() {
        // A watch of one object by name (legacy /watch/.../<name>).
        if !field_text.is_empty() {
            field_text.push(',');
        }
        field_text.push_str(&format!("metadata.name={}", info.name));
    }
    let fields = FieldSelector::parse(&field_text, info.resource)?;
    Ok(Selection { labels, fields })
}

fn namespace_filter(info: &ResourceRequestInfo) -> Option<&str> {
    if info.resource.namespaced && !info.namespace.is_empty() {
        Some(info.namespace.as_str())
    } else {
        None
    }
}

/// Continue tokens: "<resourceVersion>/<offset>" in base64.
fn encode_continue(resource_version: u64, offset: usize) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{resource_version}/{offset}"))
}

fn decode_continue(token: &str) -> Result<usize, ApiError> {
    use base64::Engine;
    let invalid = || ApiError::bad_request("continue key is not valid");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(raw).map_err(|_| invalid())?;
    let (_, offset) = text.split_once('/').ok_or_else(invalid)?;
    offset.parse().map_err(|_| invalid())
}

fn list(state: &ServerState, info: &ResourceRequestInfo, call: &Call) -> Result<Reply, ApiError> {
    let selection = selection(info, call)?;
    let listing = state.store.list(info.resource, namespace_filter(info));
    let mut items: Vec<Value> = listing.items.into_iter().filter(|o| selection.matches(o)).collect();
    let offset = match call.param("continue").filter(|t| !t.is_empty()) {
        Some(token) => decode_continue(token)?,
        None => 0,
    };
    items = items.into_iter().skip(offset).collect();
    let limit: usize = call.param("limit").and_then(|l| l.parse().ok()).filter(|l| *l > 0).unwrap_or(usize::MAX);
    let mut continue_token = None;
    let mut remaining = 0;
    if items.len() > limit {
        remaining = items.len() - limit;
        items.truncate(limit);
        continue_token = Some(encode_continue(listing.resource_version, offset + limit));
    }
    let rv = listing.resource_version.to_string();
    if table::wants_table(&call.accept) {
        let include = IncludeObject::parse(call.param("includeObject"));
        let body = table::table(info.resource, &items, &rv, include, continue_token.as_deref());
        return Ok(Reply::Json { code: 200, body, content_type: table::TABLE_CONTENT_TYPE });
    }
    let mut metadata = json!({"resourceVersion": rv});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
        metadata["remainingItemCount"] = json!(remaining);
    }
    Ok(Reply::ok(json!({
        "kind": format!("{}List", info.resource.kind),
        "apiVersion": info.resource.api_version(),
        "metadata": metadata,
        "items": items,
    })))
}

fn watch_collection(state: &ServerState, info: &ResourceRequestInfo, call: &Call) -> Result<Reply, ApiError> {
    let selection = selection(info, call)?;
    let from = match call.param("resourceVersion").unwrap_or_default() {
        "" | "0" => WatchFrom::CurrentState,
        rv => WatchFrom::After(rv.parse().map_err(|_| {
            ApiError::bad_request(format!("resourceVersion: Invalid value: {rv:?}: must be an integer"))
        })?),
    };
    let send_initial_events = match call.param("sendInitialEvents") {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    };
    let timeout = call.param("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).map(Duration::from_secs);
    let request = WatchRequest {
        resource: info.resource,
        namespace: namespace_filter(info).map(str::to_string),
        selection,
        from,
        send_initial_events,
        bookmarks: call.flag("allowWatchBookmarks"),
        bookmark_interval: state.bookmark_interval(),
        timeout,
    };
    Ok(Reply::Stream(watch::start(state.store.clone(), request, state.watch_closer())))
}

fn dry_run(call: &Call) -> bool {
    call.param("dryRun") == Some("All")
}

/// The namespace of a namespaced write must exist and not be terminating.
fn check_namespace(state: &ServerState, info: &ResourceRequestInfo, name: &str) -> Result<(), ApiError> {
    if !info.resource.namespaced {
        return Ok(());
    }
    let namespace = state
        .store
        .get(&resources::NAMESPACES, &(String::new(), info.namespace.clone()))
        .ok_or_else(|| ApiError::not_found(&resources::NAMESPACES, &info.namespace))?;
    if namespace.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") {
        return Err(ApiError::forbidden(
            info.resource,
            name,
            &format!("unable to create new content in namespace {} because it is being terminated", info.namespace),
        ));
    }
    Ok(())
}

fn create(state: &ServerState, info: &ResourceRequestInfo, call: &Call, body: Value) -> Result<Reply, ApiError> {
    if info.resource.namespaced && info.namespace.is_empty() {
        return Err(ApiError::not_found_path(&call.path));
    }
    let mut object = body;
    let generate_name = object.pointer("/metadata/generateName").and_then(Value::as_str).map(str::to_string);
    if name_of(&object).is_empty() {
        if let Some(prefix) = &generate_name {
            object["metadata"]["name"] = json!(format!("{prefix}{}", strategy::random_suffix()));
        }
    }
    check_namespace(state, info, name_of(&object))?;
    let prepared = prepare_create(info.resource, object, &info.namespace, &mut || state.allocate_service_ip())?;
    let name = name_of(&prepared).to_string();
    if dry_run(call) {
        return Ok(Reply::created(prepared));
    }
    let key = key_of(info, &name);
    let stored = state.store.write(info.resource, &key, |current| match current {
        Some(_) => Err(ApiError::already_exists(info.resource, &name)),
        None => Ok(Write::Put(prepared)),
    })?;
    Ok(Reply::created(stored.unwrap_or(Value::Null)))
}

/// Store `next` as the new version of an existing object, or remove it when a pending
/// deletion is complete (no finalizers, no grace left).
fn write_decision(current: &Value, next: Value) -> Write {
    if ready_to_remove(&next) {
        return Write::Remove;
    }
    let mut comparable = next.clone();
    comparable["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
    if &comparable == current {
        Write::Unchanged
    } else {
        Write::Put(next)
    }
}

fn update(state: &ServerState, info: &ResourceRequestInfo, call: &Call) -> Result<Reply, ApiError> {
    let body = parse_body(info, call)?;
    let key = key_of(info, &info.name);
    if dry_run(call) {
        let current =
            state.store.get(info.resource, &key).ok_or_else(|| ApiError::not_found(info.resource, &info.name))?;
        return Ok(Reply::ok(prepare_update(info.resource, &info.subresource, &current, body)?));
    }
    let stored = state.store.write(info.resource, &key, |current| {
        let current = current.ok_or_else(|| ApiError::not_found(info.resource, &info.name))?;
        let next = prepare_update(info.resource, &info.subresource, current, body)?;
        Ok::<_, ApiError>(write_decision(current, next))
    })?;
    Ok(Reply::ok(stored.unwrap_or(Value::Null)))
}

fn patch(state: &ServerState, info: &ResourceRequestInfo, call: &Call) -> Result<Reply, ApiError> {
    let patch_type = PatchType::from_content_type(&call.content_type)?;
    let key = key_of(info, &info.name);
    if patch_type == PatchType::Apply && state.store.get(info.resource, &key).is_none() && info.subresource.is_empty() {
        // Server-side apply of a new object creates it.
        let body: Value = serde_yaml::from_slice(&call.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        return create(state, info, call, body);
    }
    let compute = |current: &Value| -> Result<Value, ApiError> {
        let patched = apply_patch(patch_type, current, &call.body)?;
        prepare_update(info.resource, &info.subresource, current, patched)
    };
    if dry_run(call) {
        let current =
            state.store.get(info.resource, &key).ok_or_else(|| ApiError::not_found(info.resource, &info.name))?;
        return Ok(Reply::ok(compute(&current)?));
    }
    let stored = state.store.write(info.resource, &key, |current| {
        let current = current.ok_or_else(|| ApiError::not_found(info.resource, &info.name))?;
        let next = compute(current)?;
        Ok::<_, ApiError>(write_decision(current, next))
    })?;
    Ok(Reply::ok(stored.unwrap_or(Value::Null)))
}

/// DeleteOptions from the body and the query.
struct DeleteOptions {
    grace_period: Option<i64>,
    uid: Option<String>,
    resource_version: Option<String>,
}

fn delete_options(call: &Call) -> Result<DeleteOptions, ApiError> {
    let body: Value = if call.body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&call.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
    };
    let grace_period = call
        .param("gracePeriodSeconds")
        .and_then(|g| g.parse().ok())
        .or_else(|| body.get("gracePeriodSeconds").and_then(Value::as_i64));
    let text = |pointer: &str| body.pointer(pointer).and_then(Value::as_str).map(str::to_string);
    Ok(DeleteOptions {
        grace_period,
        uid: text("/preconditions/uid"),
        resource_version: text("/preconditions/resourceVersion"),
    })
}

/// Resources whose DELETE answers with the object rather than a Status.
fn returns_deleted_object(resource: &ResourceType) -> bool {
    ["Pod", "Service", "Namespace"].contains(&resource.kind) && resource.group.is_empty()
}

/// The pod's effective grace period for this deletion (0 = remove now).
fn pod_grace_period(pod: &Value, requested: Option<i64>) -> i64 {
    let unbound = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default().is_empty();
    let terminal = matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"));
    if unbound || terminal {
        return 0;
    }
    let grace =
        requested.or_else(|| pod.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64)).unwrap_or(30);
    if grace < 0 {
        1
    } else {
        grace
    }
}

/// Decide what a DELETE does to `current`.
fn delete_decision(resource: &ResourceType, current: &Value, options: &DeleteOptions) -> Result<Write, ApiError> {
    let name = name_of(current);
    let meta = &current["metadata"];
    if let Some(uid) = &options.uid {
        let actual = meta["uid"].as_str().unwrap_or_default();
        if uid != actual {
            return Err(ApiError::conflict(
                resource,
                name,
                &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"),
            ));
        }
    }
    if let Some(rv) = &options.resource_version {
        let actual = meta["resourceVersion"].as_str().unwrap_or_default();
        if rv != actual {
            return Err(ApiError::conflict(
                resource,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in meta: {actual}"
                ),
            ));
        }
    }
    let has_finalizers = meta["finalizers"].as_array().is_some_and(|f| !f.is_empty());
    let grace =
        if std::ptr::eq(resource, &resources::PODS) { pod_grace_period(current, options.grace_period) } else { 0 };
    let pending = meta.get("deletionTimestamp").is_some();
    if pending {
        let existing = meta["deletionGracePeriodSeconds"].as_i64().unwrap_or(0);
        if grace >= existing {
            return if existing == 0 && !has_finalizers { Ok(Write::Remove) } else { Ok(Write::Unchanged) };
        }
    }
    if grace == 0 && !has_finalizers {
        return Ok(Write::Remove);
    }
    let mut next = current.clone();
    next["metadata"]["deletionTimestamp"] = json!(strategy::timestamp_in(grace));
    next["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
    if let Some(generation) = meta["generation"].as_i64() {
        next["metadata"]["generation"] = json!(generation + 1);
    }
    if std::ptr::eq(resource, &resources::NAMESPACES) {
        next["status"]["phase"] = json!("Terminating");
    }
    Ok(Write::Put(next))
}

fn success_status(resource: &ResourceType, object: &Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": name_of(object),
            "group": resource.group,
            "kind": resource.plural,
            "uid": object["metadata"]["uid"],
        },
    })
}

/// Delete one object; returns what was stored last and whether it is gone.
fn delete_object(
    state: &ServerState,
    resource: &'static ResourceType,
    key: &ObjectKey,
    options: &DeleteOptions,
) -> Result<(Value, bool), ApiError> {
    let mut removed = false;
    let result = state.store.write(resource, key, |current| {
        let current = current.ok_or_else(|| ApiError::not_found(resource, &key.1))?;
        let decision = delete_decision(resource, current, options)?;
        removed = matches!(decision, Write::Remove);
        Ok::<_, ApiError>(decision)
    })?;
    let object = result.unwrap_or(Value::Null);
    if std::ptr::eq(resource, &resources::NAMESPACES) {
        terminate_namespace(state, &key.1);
    } else if removed && resource.namespaced {
        finish_namespace_if_empty(state, &key.0);
    }
    Ok((object, removed))
}

fn delete(state: &ServerState, info: &ResourceRequestInfo, call: &Call) -> Result<Reply, ApiError> {
    let options = delete_options(call)?;
    let key = key_of(info, &info.name);
    if dry_run(call) {
        let current =
            state.store.get(info.resource, &key).ok_or_else(|| ApiError::not_found(info.resource, &info.name))?;
        delete_decision(info.resource, &current, &options)?;
        return Ok(Reply::ok(current));
    }
    let (object, removed) = delete_object(state, info.resource, &key, &options)?;
    let body =
        if returns_deleted_object(info.resource) || !removed { object } else { success_status(info.resource, &object) };
    Ok(Reply::ok(body))
}

fn delete_collection(state: &ServerState, info: &ResourceRequestInfo, call: &Call) -> Result<Reply, ApiError> {
    let options = delete_options(call)?;
    let selection = selection(info, call)?;
    let listing = state.store.list(info.resource, namespace_filter(info));
    let mut items = Vec::new();
    for object in listing.items.iter().filter(|o| selection.matches(o)) {
        let key = (strategy::namespace_of(object).to_string(), name_of(object).to_string());
        if dry_run(call) {
            items.push(object.clone());
            continue;
        }
        match delete_object(state, info.resource, &key, &options) {
            Ok((object, _)) => items.push(object),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Reply::ok(json!({
        "kind": format!("{}List", info.resource.kind),
        "apiVersion": info.resource.api_version(),
        "metadata": {"resourceVersion": state.store.current_resource_version().to_string()},
        "items": items,
    })))
}

/// What the namespace controller does for a namespace marked for deletion: delete its
/// content (pods bound to nodes gracefully), then the namespace once empty.
fn terminate_namespace(state: &ServerState, namespace: &str) {
    let options = DeleteOptions { grace_period: None, uid: None, resource_version: None };
    for resource in resources::ALL.iter().copied().filter(|r| r.namespaced) {
        for object in state.store.list(resource, Some(namespace)).items {
            let key = (namespace.to_string(), name_of(&object).to_string());
            let _ = state.store.write(resource, &key, |current| match current {
                Some(current) => delete_decision(resource, current, &options),
                None => Ok::<_, ApiError>(Write::Unchanged),
            });
        }
    }
    finish_namespace_if_empty(state, namespace);
}

fn finish_namespace_if_empty(state: &ServerState, namespace: &str) {
    let key = (String::new(), namespace.to_string());
    let Some(ns) = state.store.get(&resources::NAMESPACES, &key) else {
        return;
    };
    if ns.pointer("/metadata/deletionTimestamp").is_none() {
        return;
    }
    let empty =
        resources::ALL.iter().filter(|r| r.namespaced).all(|r| state.store.list(r, Some(namespace)).items.is_empty());
    if empty {
        let _ = state.store.write(&resources::NAMESPACES, &key, |_| Ok::<_, ApiError>(Write::Remove));
    }
}

/// POST pods/<name>/binding: assign the pod to a node (what the scheduler does).
fn bind_pod(state: &ServerState, info: &ResourceRequestInfo, call: &Call) -> Result<Reply, ApiError> {
    let binding = parse_body(info, call)?;
    let node = binding.pointer("/target/name").and_then(Value::as_str).unwrap_or_default().to_string();
    if node.is_empty() {
        return Err(ApiError::invalid(info.resource, &info.name, &[("target.name".into(), "Required value".into())]));
    }
    let key = key_of(info, &info.name);
    state.store.write(info.resource, &key, |current| {
        let current = current.ok_or_else(|| ApiError::not_found(info.resource, &info.name))?;
        let assigned = current.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
        if !assigned.is_empty() {
            return Err(ApiError::conflict(info.resource, &info.name, &format!("pod {} is already assigned to node \"{assigned}\"", info.name)));
        }
        let mut next = current.clone();
        next["spec"]["nodeName"] = json!(node);
        let mut conditions = next.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
        conditions.retain(|c| c["type"] != "PodScheduled");
        conditions.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now_timestamp()}));
        next["status"]["conditions"] = json!(conditions);
        Ok(Write::Put(next))
    })?;
    Ok(Reply::created(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})))
}

/// POST serviceaccounts/<name>/token: a TokenRequest (authentication.k8s.io/v1). The token is
/// an opaque bearer token that this server then authenticates as the service account, valid
/// for `spec.expirationSeconds` (3600 by default, at least 600 as the API validates it).
fn create_token(state: &ServerState, info: &ResourceRequestInfo, call: &Call) -> Result<Reply, ApiError> {
    let mut request = parse_body(info, call)?;
    if state.store.get(info.resource, &key_of(info, &info.name)).is_none() {
        return Err(ApiError::not_found(info.resource, &info.name));
    }
    let seconds = request.pointer("/spec/expirationSeconds").and_then(Value::as_i64).unwrap_or(3600);
    if seconds < 600 {
        let cause =
            ("spec.expirationSeconds".to_string(), "may not specify a duration less than 10 minutes".to_string());
        return Err(ApiError::invalid(info.resource, &info.name, &[cause]));
    }
    let token = format!("sa.{}.{}", info.name, (0..4).map(|_| strategy::random_suffix()).collect::<String>());
    let namespace = &info.namespace;
    state.tokens.add(
        &token,
        &format!("system:serviceaccount:{namespace}:{}", info.name),
        &["system:serviceaccounts".to_string(), format!("system:serviceaccounts:{namespace}")],
    );
    request["apiVersion"] = json!("authentication.k8s.io/v1");
    request["kind"] = json!("TokenRequest");
    request["metadata"] = json!({"name": info.name, "namespace": namespace, "creationTimestamp": now_timestamp()});
    request["spec"]["expirationSeconds"] = json!(seconds);
    request["status"] = json!({"token": token, "expirationTimestamp": strategy::timestamp_in(seconds)});
    Ok(Reply::created(request))
}
