//! Where pod IPs come from: the --pod-cidr flag, or else the Node's spec.podCIDR, which the
//! controller manager may assign only after registration, so it is waited for.

use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use tokio_util::sync::CancellationToken;

const POLL: Duration = Duration::from_secs(5);

/// The pod CIDR, or None when shutdown came first.
pub async fn resolve(
    client: &kube::Client,
    node_name: &str,
    flag: Option<Ipv4Net>,
    shutdown: &CancellationToken,
) -> Option<Ipv4Net> {
    if flag.is_some() {
        return flag;
    }
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        match nodes.get_opt(node_name).await {
            Ok(Some(node)) => match node_pod_cidr(&node) {
                Some(Ok(cidr)) => return Some(cidr),
                Some(Err(text)) => {
                    tracing::error!(node = node_name, cidr = %text, "spec.podCIDR is not an IPv4 CIDR; waiting for a usable one (or pass --pod-cidr)")
                }
                None => tracing::info!(node = node_name, "waiting for spec.podCIDR (or pass --pod-cidr)"),
            },
            Ok(None) => tracing::info!(node = node_name, "waiting for the Node to be registered"),
            Err(err) => tracing::warn!(node = node_name, error = %err, "reading the Node for its pod CIDR"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

fn node_pod_cidr(node: &Node) -> Option<Result<Ipv4Net, String>> {
    let spec = node.spec.as_ref()?;
    let candidates = spec.pod_cidrs.iter().flatten().chain(spec.pod_cidr.iter());
    let mut first_bad = None;
    for text in candidates {
        match text.parse::<Ipv4Net>() {
            Ok(cidr) => return Some(Ok(cidr)),
            Err(_) => first_bad = first_bad.or(Some(text.clone())),
        }
    }
    first_bad.map(Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(cidr: Option<&str>, cidrs: &[&str]) -> Node {
        Node {
            spec: Some(k8s_openapi::api::core::v1::NodeSpec {
                pod_cidr: cidr.map(str::to_string),
                pod_cidrs: (!cidrs.is_empty()).then(|| cidrs.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn prefers_the_ipv4_entry_of_dual_stack_pod_cidrs() {
        let n = node(Some("fd00::/64"), &["fd00::/64", "10.244.1.0/24"]);
        assert_eq!(node_pod_cidr(&n), Some(Ok("10.244.1.0/24".parse().unwrap())));
    }

    #[test]
    fn none_without_a_cidr_and_the_text_when_unusable() {
        assert_eq!(node_pod_cidr(&node(None, &[])), None);
        assert_eq!(node_pod_cidr(&node(Some("bogus"), &[])), Some(Err("bogus".into())));
    }
}
