//! The health check servers of LoadBalancer Services with `externalTrafficPolicy: Local`,
//! over HTTP on 127.0.0.1, driven by the reconciler as Services and EndpointSlices change:
//! 200 with local endpoints, 503 without, closed when the Service goes.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodelet_proxy::datapath::FakeDatapath;
use nodelet_proxy::{parse_service_objects, Changes, HealthServers, NodeTopology, Reconciler, ServiceObjects};

/// A free port on 127.0.0.1 (free when asked; nothing else in this test binds it).
fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind").local_addr().expect("addr").port()
}

/// A LoadBalancer Service with eTP Local and `health_port`, and a slice with one endpoint
/// on `endpoint_node` and one not ready on node-a.
fn objects(health_port: u16, endpoint_node: &str) -> ServiceObjects {
    let yaml = format!(
        "
kind: Service
apiVersion: v1
metadata: {{name: lb, namespace: shop}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.50
  externalTrafficPolicy: Local
  healthCheckNodePort: {health_port}
  ports: [{{name: http, port: 80, nodePort: 31000}}]
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {{name: lb-1, namespace: shop, labels: {{kubernetes.io/service-name: lb}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints:
  - {{addresses: [10.244.0.1], nodeName: {endpoint_node}}}
  - {{addresses: [10.244.0.2], nodeName: node-a, conditions: {{ready: false}}}}
"
    );
    parse_service_objects(&yaml, "test").expect("parse")
}

/// An HTTP answer: status code, headers (lowercase names) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// `GET /` on 127.0.0.1:`port`; `None` when nothing listens.
fn get(port: u16) -> Option<Answer> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    stream.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut lines = head.lines();
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_owned()))
        .collect();
    Some(Answer { status, headers, body: body.to_owned() })
}

/// Poll `get` until `done` holds for its answer (10 s at most); the last answer.
async fn until(port: u16, done: impl Fn(&Option<Answer>) -> bool) -> Option<Answer> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = tokio::task::spawn_blocking(move || get(port)).await.expect("get");
        if done(&answer) {
            return answer;
        }
        assert!(Instant::now() < deadline, "no expected answer on :{port} within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_follow_the_local_endpoints_and_the_service() {
    let port = free_port();
    let servers = HealthServers::new(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("in a runtime");
    let mut reconciler = Reconciler::new(FakeDatapath::new()).with_health_servers(servers);
    let node = NodeTopology::named("node-a");

    let local = objects(port, "node-a");
    reconciler.sync(&local.services, &local.slices, &node).expect("sync");
    let answer = until(port, |a| a.is_some()).await.expect("an answer");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    let body: serde_json::Value = serde_json::from_str(&answer.body).expect("JSON");
    let expected = serde_json::json!({
        "service": {"namespace": "shop", "name": "lb"},
        "localEndpoints": 1,
        "serviceProxyHealthy": true,
    });
    assert_eq!(body, expected);

    // The ready endpoint moves to another node: this node has none ready any more.
    let mut changes = Changes::new();
    changes.slice_applied(Arc::new(objects(port, "node-b").slices[0].clone()));
    reconciler.apply_changes(changes).expect("partial sync");
    let answer = until(port, |a| a.as_ref().is_some_and(|a| a.status == 503)).await.expect("an answer");
    let body: serde_json::Value = serde_json::from_str(&answer.body).expect("JSON");
    assert_eq!(body["localEndpoints"], 0);

    let mut changes = Changes::new();
    changes.service_deleted(&local.services[0]);
    reconciler.apply_changes(changes).expect("partial sync");
    assert!(reconciler.health_checks().is_empty());
    until(port, Option::is_none).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_not_fatal_and_the_rest_is_served() {
    let taken = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let taken_port = taken.local_addr().expect("addr").port();
    let free = free_port();
    let servers = HealthServers::new(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("in a runtime");
    let mut reconciler = Reconciler::new(FakeDatapath::new()).with_health_servers(servers);
    let node = NodeTopology::named("node-a");

    let mut first = objects(taken_port, "node-a");
    let mut second = objects(free, "node-a");
    second.services[0].metadata.name = Some("other".into());
    second.services[0].spec.as_mut().expect("spec").cluster_ip = Some("10.96.0.51".into());
    second.services[0].spec.as_mut().expect("spec").ports.as_mut().expect("ports")[0].node_port = Some(31001);
    first.services.append(&mut second.services);
    reconciler.sync(&first.services, &first.slices, &node).expect("sync");

    let answer = until(free, |a| a.is_some()).await.expect("the other Service's health check");
    assert_eq!(answer.status, 503, "no slice of its own: no local endpoint");
    let ports = reconciler.health_servers().expect("servers").ports();
    assert_eq!(ports.values().copied().collect::<Vec<_>>(), [taken_port, free], "both kept, one retrying");
    drop(taken);
}
