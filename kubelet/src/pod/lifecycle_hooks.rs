//! Container lifecycle hooks as kubelet runs them: postStart right after the container
//! started (a failure kills the container, which then restarts per restartPolicy), preStop
//! before the stop signal when a container is stopped (its time counts against the grace
//! period). Handlers: exec (inside the container), httpGet (from the agent to the pod IP) and
//! sleep. The stop signal is the image's STOPSIGNAL, SIGTERM by default.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler};
use nix::sys::signal::Signal;

use super::probe::handler::{HandlerRunner, Target};
use super::probe::spec::HttpGet;
use super::probe::{Handler, Outcome};
use super::runtime_port::PodRuntime;

/// What a hook does.
#[derive(Clone, Debug, PartialEq)]
pub enum HookAction {
    Exec(Vec<String>),
    Http(HttpGet),
    Sleep(Duration),
    /// Written so that it cannot run (no handler, a port name the container lacks).
    Invalid(String),
}

impl HookAction {
    pub fn parse(handler: &LifecycleHandler, container: &Container) -> HookAction {
        if let Some(exec) = &handler.exec {
            return HookAction::Exec(exec.command.clone().unwrap_or_default());
        }
        if let Some(http) = &handler.http_get {
            return HttpGet::parse(http, container).map_or_else(HookAction::Invalid, HookAction::Http);
        }
        if let Some(sleep) = &handler.sleep {
            return HookAction::Sleep(Duration::from_secs(sleep.seconds.max(0).unsigned_abs()));
        }
        if handler.tcp_socket.is_some() {
            // Deprecated in the API and never run by kubelet.
            return HookAction::Invalid("tcpSocket is not supported as a lifecycle handler".into());
        }
        HookAction::Invalid("missing lifecycle handler".into())
    }
}

/// A container's postStart and preStop hooks.
pub fn post_start(container: &Container) -> Option<HookAction> {
    let handler = container.lifecycle.as_ref()?.post_start.as_ref()?;
    Some(HookAction::parse(handler, container))
}

pub fn pre_stop(container: &Container) -> Option<HookAction> {
    let handler = container.lifecycle.as_ref()?.pre_stop.as_ref()?;
    Some(HookAction::parse(handler, container))
}

/// Run `action` against the container `container_id` of the pod at `pod_ip`, for at most
/// `timeout`. The error is kubelet's message for the hook's event.
pub async fn run_hook(
    runtime: Arc<dyn PodRuntime>,
    action: &HookAction,
    container_id: &str,
    pod_ip: &str,
    timeout: Duration,
) -> Result<(), String> {
    let target = Target { container_id: container_id.to_string(), pod_ip: pod_ip.to_string() };
    let outcome = match action {
        HookAction::Sleep(duration) => {
            tokio::time::sleep((*duration).min(timeout)).await;
            return Ok(());
        }
        HookAction::Invalid(message) => return Err(message.clone()),
        HookAction::Exec(command) => {
            HandlerRunner::new(runtime).run(&Handler::Exec { command: command.clone() }, &target, timeout).await
        }
        HookAction::Http(get) => HandlerRunner::new(runtime).run(&Handler::Http(get.clone()), &target, timeout).await,
    };
    match outcome {
        Outcome::Success | Outcome::Warning(_) => Ok(()),
        Outcome::Failure(message) | Outcome::Unknown(message) => Err(message),
    }
}

/// The signal that asks a container to stop: the image's STOPSIGNAL ("SIGQUIT", "QUIT" or
/// "3"), else SIGTERM.
pub fn stop_signal(image_stop_signal: Option<&str>) -> Signal {
    let Some(text) = image_stop_signal.map(str::trim).filter(|t| !t.is_empty()) else {
        return Signal::SIGTERM;
    };
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).unwrap_or(Signal::SIGTERM);
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    Signal::from_str(&name).unwrap_or(Signal::SIGTERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(lifecycle: serde_json::Value) -> Container {
        serde_json::from_value(serde_json::json!({
            "name": "app", "ports": [{"name": "http", "containerPort": 8080}], "lifecycle": lifecycle
        }))
        .expect("container")
    }

    #[test]
    fn hooks_are_read_with_their_ports_resolved() {
        let c = container(serde_json::json!({
            "postStart": {"exec": {"command": ["touch", "/ready"]}},
            "preStop": {"httpGet": {"path": "/quit", "port": "http"}}
        }));
        assert_eq!(post_start(&c), Some(HookAction::Exec(vec!["touch".into(), "/ready".into()])));
        let Some(HookAction::Http(get)) = pre_stop(&c) else { panic!("httpGet preStop") };
        assert_eq!((get.port, get.path.as_str()), (8080, "/quit"));
        let sleepy = container(serde_json::json!({"preStop": {"sleep": {"seconds": 5}}}));
        assert_eq!(pre_stop(&sleepy), Some(HookAction::Sleep(Duration::from_secs(5))));
        let bad = container(serde_json::json!({"preStop": {"httpGet": {"port": "admin"}}}));
        assert!(matches!(pre_stop(&bad), Some(HookAction::Invalid(m)) if m.contains("admin")));
        assert_eq!(post_start(&container(serde_json::json!({}))), None);
    }

    #[test]
    fn stop_signals_by_name_or_number() {
        assert_eq!(stop_signal(None), Signal::SIGTERM);
        assert_eq!(stop_signal(Some("SIGQUIT")), Signal::SIGQUIT);
        assert_eq!(stop_signal(Some("int")), Signal::SIGINT);
        assert_eq!(stop_signal(Some("10")), Signal::SIGUSR1);
        assert_eq!(stop_signal(Some("SIGNOPE")), Signal::SIGTERM);
    }
}
