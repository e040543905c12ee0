//! Golden tests of the table: `golden/<case>.yaml` (Services and
//! EndpointSlices, and optionally the Node the table is built for: its name, zone label and
//! addresses, and a `kind: TestProxyConfig` document with `nodePortAddresses`, the CIDRs (or
//! `primary`) of kube-proxy's `--nodeport-addresses`) must give `golden/<case>.table`. Set
//! NODELET_UPDATE_GOLDEN=1 to rewrite the expected files.

use std::fs;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Node;
use nodelet_proxy::{
    build_table, parse_service_objects, BuiltTable, FrontendKind, NodePortAddresses, NodeTopology, SessionAffinity,
};
use serde::Deserialize;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// One line per frontend: `ip:port/proto -> backend backend...`, with its kind in
/// parentheses when it is not a ClusterIP and `[ClientIP <timeout>s]` when it has session
/// affinity; then one line per frontend of traffic entering the node: `entering
/// ip:port/proto -> local <backends> remote <backends>`, with `from <ranges>` when
/// loadBalancerSourceRanges restrict it; then one line per health check: `health check: <namespace>/<name> on
/// :<port>, <n> local endpoints`; then one line per problem: `problem: <Kind>
/// <namespace>/<name>: <what, and what was done>`.
fn render(built: &BuiltTable) -> String {
    let frontends = built.table.iter().map(|(frontend, entry)| {
        let backends = if entry.backends.is_empty() {
            String::from("(none)")
        } else {
            entry.backends.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")
        };
        let affinity = match entry.affinity {
            SessionAffinity::None => String::new(),
            affinity => format!(" [{affinity}]"),
        };
        let kind = match built.kinds.get(frontend) {
            Some(FrontendKind::ClusterIp) => String::new(),
            Some(kind) => format!(" ({kind})"),
            None => String::from(" (no kind!)"),
        };
        format!("{frontend}{kind}{affinity} -> {backends}\n")
    });
    let list = |items: Vec<String>| if items.is_empty() { String::from("(none)") } else { items.join(" ") };
    let entering = built.ingress.iter().map(|(frontend, service)| {
        let local = list(service.backends.iter().map(ToString::to_string).collect());
        let remote = list(service.remote_backends.iter().map(ToString::to_string).collect());
        let ranges = match service.source_ranges.as_slice() {
            [] => String::new(),
            ranges => format!(" from {}", list(ranges.iter().map(ToString::to_string).collect())),
        };
        format!("entering {frontend} -> local {local} remote {remote}{ranges}\n")
    });
    let health = built.health_checks.iter().map(|(service, check)| {
        format!("health check: {service} on :{}, {} local endpoints\n", check.node_port, check.local_endpoints)
    });
    let problems = built.problems.iter().map(|problem| format!("problem: {problem}\n"));
    frontends.chain(entering).chain(health).chain(problems).collect()
}

/// The node of the case: its `kind: Node` document, if any, with the NodePort address
/// filter of its `kind: TestProxyConfig` document (none: all addresses).
fn node_of(yaml: &str) -> NodeTopology {
    let mut node = None;
    let mut filter = NodePortAddresses::default();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_yaml::Value::deserialize(document).expect("yaml");
        match value.get("kind").and_then(serde_yaml::Value::as_str) {
            Some("Node") => node = Some(serde_yaml::from_value::<Node>(value).expect("a Node")),
            Some("TestProxyConfig") => {
                let cidrs = value.get("nodePortAddresses").cloned().expect("nodePortAddresses");
                let cidrs: Vec<String> = serde_yaml::from_value(cidrs).expect("a list");
                filter = cidrs.join(",").parse().expect("CIDRs or primary");
            }
            _ => {}
        }
    }
    match node {
        Some(node) => NodeTopology::from_node(&node, &filter),
        None => NodeTopology::default(),
    }
}

#[test]
fn tables_match_golden_files() {
    let mut cases: Vec<PathBuf> = fs::read_dir(golden_dir())
        .expect("read golden dir")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 12, "golden cases found: {cases:?}");
    let update = std::env::var("NODELET_UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    for input in cases {
        let yaml = fs::read_to_string(&input).expect("read input");
        let objects = parse_service_objects(&yaml, &input.display().to_string()).expect("parse input");
        let rendered = render(&build_table(&objects.services, &objects.slices, &node_of(&yaml)));
        let expected_path = input.with_extension("table");
        if update {
            fs::write(&expected_path, &rendered).expect("write golden");
            continue;
        }
        let expected = fs::read_to_string(&expected_path).expect("read expected table");
        assert_eq!(rendered, expected, "golden case {}", input.display());
    }
}

#[test]
fn manifest_errors_name_the_document() {
    let yaml = "kind: Service\nmetadata: {name: a}\n---\nkind: EndpointSlice\nmetadata: {name: b}\nendpoints: 7\n";
    let error = parse_service_objects(yaml, "bad.yaml").expect_err("invalid slice");
    assert!(error.to_string().contains("bad.yaml: document 1"), "{error}");
}
