//! A container's probes as the prober runs them: Kubernetes' defaults applied, the port
//! resolved (by number, or by name from the container's ports), the handler picked.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::ProbeKind;

/// Kubernetes' defaults for a probe's timing and thresholds.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(10);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 1;
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;

#[derive(Clone, Debug, PartialEq)]
pub struct ProbeSpec {
    pub handler: Handler,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    /// The probe's own terminationGracePeriodSeconds, for the kill its failure causes.
    pub termination_grace: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Handler {
    Exec {
        command: Vec<String>,
    },
    Http(HttpGet),
    Tcp {
        host: Option<String>,
        port: u16,
    },
    Grpc {
        port: u16,
        service: String,
    },
    /// The probe cannot run as written (no handler, a port name the container lacks): every
    /// run is Unknown, as kubelet's prober errors are.
    Invalid(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpGet {
    pub https: bool,
    /// None: the pod IP.
    pub host: Option<String>,
    pub port: u16,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl HttpGet {
    /// An httpGet action (of a probe or a lifecycle hook), its port resolved.
    pub fn parse(http: &HTTPGetAction, container: &Container) -> Result<HttpGet, String> {
        Ok(HttpGet {
            https: http.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("https")),
            host: http.host.clone().filter(|h| !h.is_empty()),
            port: resolve_port(&http.port, container)?,
            path: http.path.clone().unwrap_or_default(),
            headers: http.http_headers.iter().flatten().map(|h| (h.name.clone(), h.value.clone())).collect(),
        })
    }
}

/// The probes one container declares.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerProbes {
    pub startup: Option<ProbeSpec>,
    pub liveness: Option<ProbeSpec>,
    pub readiness: Option<ProbeSpec>,
}

impl ContainerProbes {
    pub fn from_container(container: &Container) -> ContainerProbes {
        let parse = |probe: &Option<Probe>, kind| probe.as_ref().map(|p| ProbeSpec::parse(p, kind, container));
        ContainerProbes {
            startup: parse(&container.startup_probe, ProbeKind::Startup),
            liveness: parse(&container.liveness_probe, ProbeKind::Liveness),
            readiness: parse(&container.readiness_probe, ProbeKind::Readiness),
        }
    }

    pub fn get(&self, kind: ProbeKind) -> Option<&ProbeSpec> {
        match kind {
            ProbeKind::Startup => self.startup.as_ref(),
            ProbeKind::Liveness => self.liveness.as_ref(),
            ProbeKind::Readiness => self.readiness.as_ref(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.startup.is_none() && self.liveness.is_none() && self.readiness.is_none()
    }
}

impl ProbeSpec {
    pub fn parse(probe: &Probe, kind: ProbeKind, container: &Container) -> ProbeSpec {
        let seconds = |value: Option<i32>, default: Duration| match value {
            Some(s) if s > 0 => Duration::from_secs(s.unsigned_abs().into()),
            _ => default,
        };
        let count = |value: Option<i32>| value.and_then(|v| u32::try_from(v).ok()).filter(|&v| v > 0);
        let success_threshold = match kind {
            // The API rejects anything else for them; a static pod cannot slip one through.
            ProbeKind::Liveness | ProbeKind::Startup => 1,
            ProbeKind::Readiness => count(probe.success_threshold).unwrap_or(DEFAULT_SUCCESS_THRESHOLD),
        };
        ProbeSpec {
            handler: Handler::parse(probe, container),
            initial_delay: seconds(probe.initial_delay_seconds, Duration::ZERO),
            period: seconds(probe.period_seconds, DEFAULT_PERIOD),
            timeout: seconds(probe.timeout_seconds, DEFAULT_TIMEOUT),
            success_threshold,
            failure_threshold: count(probe.failure_threshold).unwrap_or(DEFAULT_FAILURE_THRESHOLD),
            termination_grace: match kind {
                ProbeKind::Readiness => None,
                _ => probe.termination_grace_period_seconds.map(|s| Duration::from_secs(s.max(0).unsigned_abs())),
            },
        }
    }
}

impl Handler {
    fn parse(probe: &Probe, container: &Container) -> Handler {
        let port = |port: &IntOrString| resolve_port(port, container);
        if let Some(exec) = &probe.exec {
            return Handler::Exec { command: exec.command.clone().unwrap_or_default() };
        }
        if let Some(http) = &probe.http_get {
            return HttpGet::parse(http, container).map_or_else(Handler::Invalid, Handler::Http);
        }
        if let Some(tcp) = &probe.tcp_socket {
            return match port(&tcp.port) {
                Ok(port) => Handler::Tcp { host: tcp.host.clone().filter(|h| !h.is_empty()), port },
                Err(message) => Handler::Invalid(message),
            };
        }
        if let Some(grpc) = &probe.grpc {
            return match valid_port(grpc.port) {
                Ok(port) => Handler::Grpc { port, service: grpc.service.clone().unwrap_or_default() },
                Err(message) => Handler::Invalid(message),
            };
        }
        Handler::Invalid("missing probe handler".to_string())
    }
}

/// kubelet's ResolveContainerPort: a number, or the name of one of the container's ports.
fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(number) => valid_port(*number),
        IntOrString::String(name) => {
            let declared = container.ports.iter().flatten().find(|p| p.name.as_deref() == Some(name.as_str()));
            match declared {
                Some(p) => valid_port(p.container_port),
                None => Err(format!("port {name:?} not found")),
            }
        }
    }
}

fn valid_port(number: i32) -> Result<u16, String> {
    u16::try_from(number).ok().filter(|&p| p > 0).ok_or_else(|| format!("invalid port number: {number}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(probes: serde_json::Value) -> Container {
        let mut value = json!({"name": "app", "ports": [{"name": "http", "containerPort": 8080}]});
        value.as_object_mut().expect("object").extend(probes.as_object().expect("object").clone());
        serde_json::from_value(value).expect("container")
    }

    #[test]
    fn kubernetes_defaults_fill_what_is_not_set() {
        let probes = ContainerProbes::from_container(&container(json!({
            "readinessProbe": {"tcpSocket": {"port": 8080}},
        })));
        let readiness = probes.readiness.expect("readiness");
        assert_eq!(readiness.period, Duration::from_secs(10));
        assert_eq!(readiness.timeout, Duration::from_secs(1));
        assert_eq!(readiness.initial_delay, Duration::ZERO);
        assert_eq!((readiness.success_threshold, readiness.failure_threshold), (1, 3));
        assert_eq!(readiness.handler, Handler::Tcp { host: None, port: 8080 });
        assert!(probes.liveness.is_none() && probes.startup.is_none());
    }

    #[test]
    fn liveness_success_threshold_is_always_one_and_keeps_its_grace() {
        let probes = ContainerProbes::from_container(&container(json!({
            "livenessProbe": {
                "httpGet": {"port": "http", "path": "/healthz", "scheme": "HTTPS",
                            "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                "successThreshold": 3, "failureThreshold": 5, "periodSeconds": 2,
                "terminationGracePeriodSeconds": 7
            },
        })));
        let liveness = probes.liveness.expect("liveness");
        assert_eq!((liveness.success_threshold, liveness.failure_threshold), (1, 5));
        assert_eq!(liveness.period, Duration::from_secs(2));
        assert_eq!(liveness.termination_grace, Some(Duration::from_secs(7)));
        let Handler::Http(get) = liveness.handler else { panic!("not http: {:?}", liveness.handler) };
        assert!(get.https);
        assert_eq!((get.port, get.path.as_str(), get.host), (8080, "/healthz", None));
        assert_eq!(get.headers, [("X-Probe".to_string(), "1".to_string())]);
    }

    #[test]
    fn unknown_port_names_and_missing_handlers_are_invalid() {
        let probes = ContainerProbes::from_container(&container(json!({
            "readinessProbe": {"httpGet": {"port": "metrics"}},
            "livenessProbe": {"periodSeconds": 1},
            "startupProbe": {"grpc": {"port": 70000}},
        })));
        assert_eq!(probes.readiness.expect("readiness").handler, Handler::Invalid("port \"metrics\" not found".into()));
        assert_eq!(probes.liveness.expect("liveness").handler, Handler::Invalid("missing probe handler".into()));
        assert_eq!(probes.startup.expect("startup").handler, Handler::Invalid("invalid port number: 70000".into()));
    }
}
