//! An in-memory `NodeApi` that behaves like an API server for the few calls the node part
//! makes (resourceVersion checks, AlreadyExists, merge of patches), with injectable failures.
#![allow(dead_code)] // each test file uses a different part

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeStatus};
use nodelet_kubelet::node::{ApiError, ApiErrorKind, ApiResult, HugePages, NodeApi, NodeConfig, NodeFacts};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    GetNode,
    CreateNode,
    PatchNode,
    PatchNodeStatus,
    GetLease,
    CreateLease,
    ReplaceLease,
}

#[derive(Default)]
struct State {
    node: Option<Node>,
    lease: Option<Lease>,
    next_rv: u64,
    failures: VecDeque<(Op, ApiErrorKind)>,
    calls: Vec<(Op, tokio::time::Instant)>,
}

#[derive(Default)]
pub struct FakeApi {
    state: Mutex<State>,
}

impl FakeApi {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().expect("fake api lock"))
    }

    /// Make the next call of `op` fail with `kind`, `times` times.
    pub fn fail(&self, op: Op, kind: ApiErrorKind, times: usize) {
        self.with(|s| s.failures.extend(std::iter::repeat_n((op, kind), times)));
    }

    pub fn node(&self) -> Option<Node> {
        self.with(|s| s.node.clone())
    }

    pub fn lease(&self) -> Option<Lease> {
        self.with(|s| s.lease.clone())
    }

    pub fn set_node(&self, mut node: Node) {
        self.with(|s| {
            s.next_rv += 1;
            node.metadata.resource_version = Some(s.next_rv.to_string());
            node.metadata.uid.get_or_insert_with(|| "uid-preexisting".into());
            s.node = Some(node);
        });
    }

    /// Another writer bumps the lease's resourceVersion (as a competing update would).
    pub fn bump_lease_version(&self) {
        self.with(|s| {
            s.next_rv += 1;
            let rv = s.next_rv.to_string();
            if let Some(lease) = s.lease.as_mut() {
                lease.metadata.resource_version = Some(rv);
            }
        });
    }

    pub fn calls(&self) -> Vec<(Op, tokio::time::Instant)> {
        self.with(|s| s.calls.clone())
    }

    pub fn count(&self, op: Op) -> usize {
        self.with(|s| s.calls.iter().filter(|(o, _)| *o == op).count())
    }

    fn enter(&self, op: Op) -> ApiResult<()> {
        self.with(|s| {
            s.calls.push((op, tokio::time::Instant::now()));
            match s.failures.iter().position(|(o, _)| *o == op) {
                Some(i) => {
                    let (_, kind) = s.failures.remove(i).expect("position is valid");
                    Err(ApiError::new(kind, format!("injected {kind:?}")))
                }
                None => Ok(()),
            }
        })
    }
}

/// Strategic-merge-like: maps merged, conditions merged by type, other lists replaced.
fn merge_status(current: &mut NodeStatus, patch: NodeStatus) {
    if let Some(conditions) = patch.conditions {
        let existing = current.conditions.get_or_insert_with(Vec::new);
        for condition in conditions {
            match existing.iter_mut().find(|c| c.type_ == condition.type_) {
                Some(slot) => *slot = condition,
                None => existing.push(condition),
            }
        }
    }
    macro_rules! replace {
        ($($field:ident),*) => { $( if patch.$field.is_some() { current.$field = patch.$field; } )* };
    }
    replace!(addresses, allocatable, capacity, daemon_endpoints, node_info, images);
}

fn merge_map(current: &mut Option<BTreeMap<String, String>>, patch: Option<BTreeMap<String, String>>) {
    if let Some(patch) = patch {
        current.get_or_insert_with(BTreeMap::new).extend(patch);
    }
}

impl NodeApi for FakeApi {
    async fn get_node(&self, _name: &str, _from_cache: bool) -> ApiResult<Option<Node>> {
        self.enter(Op::GetNode)?;
        Ok(self.node())
    }

    async fn create_node(&self, node: &Node) -> ApiResult<Node> {
        self.enter(Op::CreateNode)?;
        self.with(|s| {
            if s.node.is_some() {
                return Err(ApiError::new(ApiErrorKind::AlreadyExists, "node exists"));
            }
            s.next_rv += 1;
            let mut created = node.clone();
            created.metadata.uid = Some("uid-created".into());
            created.metadata.resource_version = Some(s.next_rv.to_string());
            s.node = Some(created.clone());
            Ok(created)
        })
    }

    async fn patch_node(&self, _name: &str, patch: &Node) -> ApiResult<Node> {
        self.enter(Op::PatchNode)?;
        self.with(|s| {
            s.next_rv += 1;
            let rv = s.next_rv.to_string();
            let node = s.node.as_mut().ok_or_else(|| ApiError::new(ApiErrorKind::NotFound, "no node"))?;
            merge_map(&mut node.metadata.labels, patch.metadata.labels.clone());
            merge_map(&mut node.metadata.annotations, patch.metadata.annotations.clone());
            node.metadata.resource_version = Some(rv);
            Ok(node.clone())
        })
    }

    async fn patch_node_status(&self, _name: &str, patch: &Node) -> ApiResult<Node> {
        self.enter(Op::PatchNodeStatus)?;
        self.with(|s| {
            s.next_rv += 1;
            let rv = s.next_rv.to_string();
            let node = s.node.as_mut().ok_or_else(|| ApiError::new(ApiErrorKind::NotFound, "no node"))?;
            if let Some(status) = patch.status.clone() {
                merge_status(node.status.get_or_insert_with(NodeStatus::default), status);
            }
            node.metadata.resource_version = Some(rv);
            Ok(node.clone())
        })
    }

    async fn get_lease(&self, _name: &str) -> ApiResult<Option<Lease>> {
        self.enter(Op::GetLease)?;
        Ok(self.lease())
    }

    async fn create_lease(&self, lease: &Lease) -> ApiResult<Lease> {
        self.enter(Op::CreateLease)?;
        self.with(|s| {
            if s.lease.is_some() {
                return Err(ApiError::new(ApiErrorKind::AlreadyExists, "lease exists"));
            }
            s.next_rv += 1;
            let mut created = lease.clone();
            created.metadata.resource_version = Some(s.next_rv.to_string());
            s.lease = Some(created.clone());
            Ok(created)
        })
    }

    async fn replace_lease(&self, lease: &Lease) -> ApiResult<Lease> {
        self.enter(Op::ReplaceLease)?;
        self.with(|s| {
            let current = s.lease.as_ref().ok_or_else(|| ApiError::new(ApiErrorKind::NotFound, "no lease"))?;
            if current.metadata.resource_version != lease.metadata.resource_version {
                return Err(ApiError::new(ApiErrorKind::Conflict, "stale resourceVersion"));
            }
            s.next_rv += 1;
            let mut replaced = lease.clone();
            replaced.metadata.resource_version = Some(s.next_rv.to_string());
            s.lease = Some(replaced.clone());
            Ok(replaced)
        })
    }
}

pub fn config() -> NodeConfig {
    NodeConfig {
        node_name: "worker-1".into(),
        labels: BTreeMap::from([("node-role.kubernetes.io/worker".into(), String::new())]),
        ..NodeConfig::default()
    }
}

pub fn facts() -> NodeFacts {
    NodeFacts {
        hostname: "host-a".into(),
        cpu_count: 2,
        memory_bytes: 8_148_064 * 1024,
        ephemeral_storage_bytes: 100 * 1024 * 1024 * 1024,
        kernel_version: "6.18.44".into(),
        os_image: "Debian GNU/Linux 12 (bookworm)".into(),
        machine_id: "0123456789abcdef".into(),
        system_uuid: "uuid-1".into(),
        boot_id: "boot-1".into(),
        architecture: "amd64".into(),
        internal_ip: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2))),
        hugepages: vec![
            HugePages { page_size_bytes: 2 * 1024 * 1024, count: 0 },
            HugePages { page_size_bytes: 1024 * 1024 * 1024, count: 0 },
        ],
    }
}

pub fn condition<'a>(node: &'a Node, type_: &str) -> &'a NodeCondition {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == type_))
        .expect("condition present")
}
