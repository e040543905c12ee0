//! tcpSocket probes: success when a connection opens within the timeout (kubelet's
//! DoTCPProbe). The connection is closed at once; nothing is sent.

use std::time::Duration;

use tokio::net::TcpStream;

use super::Outcome;

pub async fn probe(host: &str, port: u16, timeout: Duration) -> Outcome {
    let address = join_host_port(host, port);
    match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(_stream)) => Outcome::Success,
        Ok(Err(error)) => Outcome::Failure(format!("dial tcp {address}: {error}")),
        Err(_) => Outcome::Failure(format!("dial tcp {address}: i/o timeout")),
    }
}

/// Go's net.JoinHostPort: IPv6 literals in brackets.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn open_port_succeeds_and_closed_port_fails() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert_eq!(probe("127.0.0.1", port, Duration::from_secs(1)).await, Outcome::Success);
        drop(listener);
        let Outcome::Failure(message) = probe("127.0.0.1", port, Duration::from_secs(1)).await else {
            panic!("a closed port succeeded");
        };
        assert!(message.starts_with(&format!("dial tcp 127.0.0.1:{port}: ")), "{message}");
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert_eq!(join_host_port("fd00::2", 80), "[fd00::2]:80");
        assert_eq!(join_host_port("10.88.0.2", 80), "10.88.0.2:80");
    }
}
