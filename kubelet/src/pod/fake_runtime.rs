//! An in-memory [`PodRuntime`] for tests: containers whose exits the test scripts, images
//! that exist or not, and a journal of every call in order.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;
use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};
use tokio::time::Instant;

use super::runtime_port::{ContainerInfo, ExecResult, ImageInfo, PodRuntime, PortError, RunState, SandboxInfo};

#[derive(Default)]
struct State {
    images: BTreeSet<String>,
    /// References whose pull fails.
    broken_registry: BTreeSet<String>,
    sandboxes: BTreeMap<String, SandboxInfo>,
    containers: BTreeMap<String, ContainerInfo>,
    /// Containers that exit with this code as soon as they start.
    exit_on_start: BTreeMap<String, i32>,
    /// Containers that ignore SIGTERM.
    ignore_term: bool,
    journal: Vec<String>,
    next_ip: u8,
    /// Exit codes of exec by command (joined with spaces); a command not listed is
    /// unsupported, as with a runtime without exec.
    exec_exits: BTreeMap<String, i32>,
    /// Every exec: the command and when (tokio's clock, paused in tests).
    exec_calls: Vec<(String, Instant)>,
}

#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
}

impl FakeRuntime {
    pub fn new() -> FakeRuntime {
        FakeRuntime::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state.lock().expect("fake runtime lock");
        f(&mut state)
    }

    pub fn add_image(&self, reference: &str) {
        self.with(|s| s.images.insert(reference.to_string()));
    }

    pub fn break_registry(&self, reference: &str) {
        self.with(|s| s.broken_registry.insert(reference.to_string()));
    }

    /// Every container whose name (from annotations) is `container` exits with `code` on start.
    pub fn exit_on_start(&self, container: &str, code: i32) {
        self.with(|s| s.exit_on_start.insert(container.to_string(), code));
    }

    pub fn ignore_term(&self) {
        self.with(|s| s.ignore_term = true);
    }

    /// Make a running container exit now.
    pub fn exit(&self, id: &str, code: i32) {
        self.with(|s| {
            if let Some(c) = s.containers.get_mut(id) {
                c.state = RunState::Stopped;
                c.exit_code = Some(code);
                c.finished_at = Some(Utc::now());
            }
        });
    }

    /// Add a line to the journal (a test sink records its calls in the same order).
    pub fn note(&self, line: String) {
        self.with(|s| s.journal.push(line));
    }

    pub fn journal(&self) -> Vec<String> {
        self.with(|s| s.journal.clone())
    }

    pub fn container(&self, id: &str) -> Option<ContainerInfo> {
        self.with(|s| s.containers.get(id).cloned())
    }

    pub fn container_ids(&self) -> Vec<String> {
        self.with(|s| s.containers.keys().cloned().collect())
    }

    pub fn sandbox_ids(&self) -> Vec<String> {
        self.with(|s| s.sandboxes.keys().cloned().collect())
    }

    /// Put a container straight into the runtime, as one left by an earlier agent.
    pub fn insert_container(&self, info: ContainerInfo) {
        self.with(|s| s.containers.insert(info.id.clone(), info));
    }

    /// From now on, exec of `command` (joined with spaces) exits with `code`.
    pub fn exec_exits(&self, command: &str, code: i32) {
        self.with(|s| s.exec_exits.insert(command.to_string(), code));
    }

    /// When each exec of `command` ran.
    pub fn exec_calls(&self, command: &str) -> Vec<Instant> {
        self.with(|s| s.exec_calls.iter().filter(|(c, _)| c == command).map(|(_, at)| *at).collect())
    }

    pub fn insert_sandbox(&self, sandbox: SandboxInfo) {
        self.with(|s| s.sandboxes.insert(sandbox.id.clone(), sandbox));
    }
}

fn image_info(reference: &str) -> ImageInfo {
    ImageInfo {
        reference: reference.to_string(),
        image_id: format!("{reference}@sha256:0000"),
        size: 1234,
        config: ImageConfigurationBuilder::default()
            .config(ConfigBuilder::default().cmd(vec!["/bin/app".to_string()]).build().expect("config"))
            .build()
            .expect("image config"),
    }
}

fn fake_error(operation: &'static str, subject: &str, message: &str) -> PortError {
    PortError::runtime(operation, subject, message.to_string())
}

#[async_trait::async_trait]
impl PodRuntime for FakeRuntime {
    async fn setup_sandbox(&self, id: &str) -> Result<SandboxInfo, PortError> {
        Ok(self.with(|s| {
            s.journal.push(format!("setup_sandbox {id}"));
            s.next_ip += 1;
            let ip = Ipv4Addr::new(10, 88, 0, 1 + s.next_ip);
            s.sandboxes
                .entry(id.to_string())
                .or_insert_with(|| SandboxInfo {
                    id: id.to_string(),
                    netns_path: PathBuf::from(format!("/run/nodelet/netns/{id}")),
                    ip,
                })
                .clone()
        }))
    }

    async fn teardown_sandbox(&self, id: &str) -> Result<(), PortError> {
        self.with(|s| {
            s.journal.push(format!("teardown_sandbox {id}"));
            s.sandboxes.remove(id);
        });
        Ok(())
    }

    async fn list_sandboxes(&self) -> Result<Vec<SandboxInfo>, PortError> {
        Ok(self.with(|s| s.sandboxes.values().cloned().collect()))
    }

    async fn local_image(&self, reference: &str) -> Result<Option<ImageInfo>, PortError> {
        Ok(self.with(|s| s.images.contains(reference).then(|| image_info(reference))))
    }

    async fn pull_image(
        &self,
        reference: &str,
        _secrets: &[nodelet_runtime::image::DockerConfig],
    ) -> Result<ImageInfo, PortError> {
        self.with(|s| {
            s.journal.push(format!("pull {reference}"));
            if s.broken_registry.contains(reference) {
                return Err(fake_error("pull image", reference, "connection refused"));
            }
            s.images.insert(reference.to_string());
            Ok(image_info(reference))
        })
    }

    async fn mount_rootfs(&self, _image: &ImageInfo, container_dir: &Path) -> Result<PathBuf, PortError> {
        Ok(container_dir.join("rootfs"))
    }

    async fn unmount_rootfs(&self, _container_dir: &Path) -> Result<(), PortError> {
        Ok(())
    }

    async fn create_container(&self, id: &str, bundle: &Path, _log_path: &Path) -> Result<ContainerInfo, PortError> {
        let spec = oci_spec::runtime::Spec::load(bundle.join("config.json"))
            .map_err(|e| PortError::runtime("read bundle", id, e))?;
        let annotations: BTreeMap<String, String> =
            spec.annotations().clone().unwrap_or_default().into_iter().collect();
        self.with(|s| {
            s.journal.push(format!("create {id}"));
            if s.containers.contains_key(id) {
                return Err(fake_error("create container", id, "already exists"));
            }
            let info = ContainerInfo {
                id: id.to_string(),
                state: RunState::Created,
                created_at: Utc::now(),
                started_at: None,
                finished_at: None,
                exit_code: None,
                oom_killed: false,
                annotations,
            };
            s.containers.insert(id.to_string(), info.clone());
            Ok(info)
        })
    }

    async fn start_container(&self, id: &str) -> Result<(), PortError> {
        self.with(|s| {
            s.journal.push(format!("start {id}"));
            let exit = {
                let c = s.containers.get(id).ok_or_else(|| PortError::ContainerNotFound { id: id.to_string() })?;
                let name = c.annotations.get(super::ids::ANNOTATION_CONTAINER_NAME).cloned().unwrap_or_default();
                s.exit_on_start.get(&name).copied()
            };
            let c = s.containers.get_mut(id).ok_or_else(|| PortError::ContainerNotFound { id: id.to_string() })?;
            c.state = RunState::Running;
            c.started_at = Some(Utc::now());
            if let Some(code) = exit {
                c.state = RunState::Stopped;
                c.exit_code = Some(code);
                c.finished_at = Some(Utc::now());
            }
            Ok(())
        })
    }

    async fn container_state(&self, id: &str) -> Result<Option<ContainerInfo>, PortError> {
        Ok(self.with(|s| s.containers.get(id).cloned()))
    }

    async fn kill_container(&self, id: &str, signal: i32) -> Result<(), PortError> {
        self.with(|s| {
            s.journal.push(format!("kill {id} {signal}"));
            let ignore = s.ignore_term && signal == 15;
            let c = s.containers.get_mut(id).ok_or_else(|| PortError::ContainerNotFound { id: id.to_string() })?;
            if c.state != RunState::Stopped && !ignore {
                c.state = RunState::Stopped;
                c.exit_code = Some(128 + signal);
                c.finished_at = Some(Utc::now());
            }
            Ok(())
        })
    }

    async fn delete_container(&self, id: &str, _force: bool) -> Result<(), PortError> {
        self.with(|s| {
            if s.containers.remove(id).is_some() {
                s.journal.push(format!("delete {id}"));
            }
        });
        Ok(())
    }

    async fn list_containers(&self) -> Result<Vec<ContainerInfo>, PortError> {
        Ok(self.with(|s| s.containers.values().cloned().collect()))
    }

    async fn exec_sync(&self, _id: &str, cmd: &[String], _timeout: Duration) -> Result<ExecResult, PortError> {
        let command = cmd.join(" ");
        self.with(|s| {
            s.exec_calls.push((command.clone(), Instant::now()));
            match s.exec_exits.get(&command) {
                Some(&exit_code) => Ok(ExecResult { exit_code, ..ExecResult::default() }),
                None => Err(PortError::Unsupported { operation: "exec in a container" }),
            }
        })
    }
}
