//! One run of a probe's handler against one container attempt: network probes go from the
//! agent to the pod IP over the bridge, exec probes through the runtime's exec.

use std::sync::Arc;
use std::time::Duration;

use super::http::HttpProber;
use super::spec::Handler;
use super::{grpc, tcp, Outcome};
use crate::pod::runtime_port::{error_chain, ExecResult, PodRuntime, PortError};

/// What a probe is run against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The runtime's id of the attempt, for exec.
    pub container_id: String,
    /// The host of network probes that name none.
    pub pod_ip: String,
}

pub struct HandlerRunner {
    runtime: Arc<dyn PodRuntime>,
    /// Built at the first httpGet run, then reused by the probe.
    http: Option<HttpProber>,
}

impl HandlerRunner {
    pub fn new(runtime: Arc<dyn PodRuntime>) -> HandlerRunner {
        HandlerRunner { runtime, http: None }
    }

    pub async fn run(&mut self, handler: &Handler, target: &Target, timeout: Duration) -> Outcome {
        match handler {
            Handler::Exec { command } => exec(self.runtime.as_ref(), &target.container_id, command, timeout).await,
            Handler::Http(get) => match self.http_prober() {
                Ok(prober) => prober.probe(get, &target.pod_ip, timeout).await,
                Err(error) => Outcome::Unknown(format!("HTTP client: {}", error_chain(&error))),
            },
            Handler::Tcp { host, port } => tcp::probe(host.as_deref().unwrap_or(&target.pod_ip), *port, timeout).await,
            Handler::Grpc { port, service } => grpc::probe(&target.pod_ip, *port, service, timeout).await,
            Handler::Invalid(message) => Outcome::Unknown(message.clone()),
        }
    }

    fn http_prober(&mut self) -> Result<&HttpProber, reqwest::Error> {
        match &mut self.http {
            Some(prober) => Ok(prober),
            empty => Ok(empty.insert(HttpProber::new()?)),
        }
    }
}

/// kubelet's exec probe: exit code 0 is a success, anything else a failure with the
/// command's output. A runtime without exec fails the probe, saying so.
async fn exec(runtime: &dyn PodRuntime, container_id: &str, command: &[String], timeout: Duration) -> Outcome {
    match tokio::time::timeout(timeout, runtime.exec_sync(container_id, command, timeout)).await {
        Err(_) => Outcome::Failure(format!("command {:?} timed out", command.join(" "))),
        Ok(Ok(ExecResult { exit_code: 0, .. })) => Outcome::Success,
        Ok(Ok(result)) => Outcome::Failure(failure_output(command, &result)),
        Ok(Err(error @ PortError::Unsupported { .. })) => Outcome::Failure(error.to_string()),
        Ok(Err(error)) => Outcome::Unknown(error_chain(&error)),
    }
}

fn failure_output(command: &[String], result: &ExecResult) -> String {
    let output = [result.stdout.as_slice(), result.stderr.as_slice()].concat();
    let output = String::from_utf8_lossy(&output);
    let output = output.trim_end();
    if output.is_empty() {
        format!("command {:?} exited with {}", command.join(" "), result.exit_code)
    } else {
        output.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::fake_runtime::FakeRuntime;

    #[test]
    fn a_failed_command_says_what_it_printed_or_how_it_exited() {
        let command = ["cat".to_string(), "/tmp/healthy".to_string()];
        let printed = ExecResult { exit_code: 1, stdout: Vec::new(), stderr: b"cat: can't open\n".to_vec() };
        assert_eq!(failure_output(&command, &printed), "cat: can't open");
        let silent = ExecResult { exit_code: 3, ..ExecResult::default() };
        assert_eq!(failure_output(&command, &silent), "command \"cat /tmp/healthy\" exited with 3");
    }

    #[tokio::test]
    async fn invalid_probes_are_unknown_and_exec_without_support_fails() {
        let mut runner = HandlerRunner::new(Arc::new(FakeRuntime::new()));
        let target = Target { container_id: "u1-app-0".into(), pod_ip: "10.88.0.2".into() };
        let invalid = Handler::Invalid("port \"metrics\" not found".into());
        let timeout = Duration::from_secs(1);
        assert_eq!(runner.run(&invalid, &target, timeout).await, Outcome::Unknown("port \"metrics\" not found".into()));
        let exec = Handler::Exec { command: vec!["true".into()] };
        assert_eq!(
            runner.run(&exec, &target, timeout).await,
            Outcome::Failure("exec in a container is not supported by this runtime".into())
        );
    }
}
