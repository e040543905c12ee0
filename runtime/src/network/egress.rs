//! Pod traffic leaving the node, as the bridge CNI plugin's `ipMasq` sets it up: IP forwarding
//! on, and packets from the pod CIDR to anywhere outside the cluster (the cluster CIDR, or the
//! pod CIDR alone when none is given) and not multicast are masqueraded behind the node's
//! address, so that replies find their way back.
//!
//! The rules live in one nat chain of ours, `NODELET-POSTROUTING`, written whole by
//! `iptables-restore --noflush` (one atomic commit, other chains untouched) and jumped to from
//! POSTROUTING. Why the host's `iptables` and no crate: it speaks whichever backend the host
//! uses (nf_tables or legacy), as kube-proxy and the CNI plugins rely on, and no maintained
//! crate covers both.

use std::io::Write;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;

use super::error::NetworkError;

pub(crate) const CHAIN: &str = "NODELET-POSTROUTING";
const JUMP_COMMENT: &str = "nodelet pod egress";
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Forwarding on and the masquerade rules in place. Idempotent.
pub(crate) fn ensure(pod_cidr: Ipv4Net, cluster_cidr: Option<Ipv4Net>) -> Result<(), NetworkError> {
    enable_forwarding()?;
    let inside = cluster_cidr.unwrap_or(pod_cidr);
    let rules = format!(
        "*nat\n:{CHAIN} - [0:0]\n\
         -A {CHAIN} -d {inside} -j RETURN\n\
         -A {CHAIN} -d 224.0.0.0/4 -j RETURN\n\
         -A {CHAIN} -s {pod_cidr} -j MASQUERADE\n\
         COMMIT\n"
    );
    iptables_restore(&rules)?;
    if !jump_present()? {
        iptables(&["-t", "nat", "-A", "POSTROUTING", "-m", "comment", "--comment", JUMP_COMMENT, "-j", CHAIN])?;
    }
    tracing::info!(%pod_cidr, %inside, "pod egress masqueraded");
    Ok(())
}

/// The jump and the chain gone (forwarding is left as it is: other software may rely on it).
/// Idempotent.
pub(crate) fn remove() -> Result<(), NetworkError> {
    while jump_present()? {
        iptables(&["-t", "nat", "-D", "POSTROUTING", "-m", "comment", "--comment", JUMP_COMMENT, "-j", CHAIN])?;
    }
    if iptables(&["-t", "nat", "-S", CHAIN]).is_ok() {
        iptables(&["-t", "nat", "-F", CHAIN])?;
        iptables(&["-t", "nat", "-X", CHAIN])?;
    }
    Ok(())
}

fn jump_present() -> Result<bool, NetworkError> {
    let rules = iptables(&["-t", "nat", "-S", "POSTROUTING"])?;
    Ok(rules.lines().any(|rule| rule.contains(&format!("-j {CHAIN}"))))
}

fn enable_forwarding() -> Result<(), NetworkError> {
    let current = std::fs::read_to_string(IP_FORWARD).map_err(|e| NetworkError::state("read", IP_FORWARD, e))?;
    if current.trim() != "1" {
        std::fs::write(IP_FORWARD, "1").map_err(|e| NetworkError::state("enable IP forwarding in", IP_FORWARD, e))?;
        tracing::info!("IPv4 forwarding enabled for pod egress");
    }
    Ok(())
}

/// `iptables -w ARGS`; its stdout.
fn iptables(args: &[&str]) -> Result<String, NetworkError> {
    let command = format!("iptables {}", args.join(" "));
    let output = Command::new("iptables")
        .arg("-w")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NetworkError::Firewall { command: command.clone(), detail: e.to_string() })?;
    if !output.status.success() {
        let detail = String::from_utf8_lossy(&output.stderr).trim().to_string();
        return Err(NetworkError::Firewall { command, detail: format!("{}: {detail}", output.status) });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn iptables_restore(rules: &str) -> Result<(), NetworkError> {
    let command = "iptables-restore -w --noflush".to_string();
    let firewall = |detail: String| NetworkError::Firewall { command: command.clone(), detail };
    let mut child = Command::new("iptables-restore")
        .args(["-w", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| firewall(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(rules.as_bytes()).map_err(|e| firewall(e.to_string()))?;
    }
    let output = child.wait_with_output().map_err(|e| firewall(e.to_string()))?;
    if !output.status.success() {
        return Err(firewall(format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim())));
    }
    Ok(())
}
