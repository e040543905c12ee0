//! The container an exec goes into, and the process it runs there once the container's
//! defaults are filled in.

use std::path::{Path, PathBuf};

use nix::unistd::Pid;
use oci_spec::runtime::{Process, Spec};

use super::overrides::dedupe_env;
use super::ExecError;
use crate::cgroups::ContainerCgroup;

/// A running container: its init (a host pid), the cgroups it joined, and its spec, whose
/// process gives an exec'd process its defaults and whose seccomp profile applies to it.
#[derive(Debug, Clone)]
pub struct ExecTarget {
    pub id: String,
    pub init_pid: Pid,
    /// The init's start time (`/proc/<pid>/stat`), when known: a process that later got the
    /// same pid is refused.
    pub init_start_time: Option<u64>,
    /// The `cgroup.procs` file of each of the container's cgroups; the init must be listed in
    /// the first one. With neither cgroups nor a start time, the pid is taken on trust.
    pub cgroup_procs: Vec<PathBuf>,
    pub spec: Spec,
}

impl ExecTarget {
    /// A container whose bundle holds its config.json and whose `linux.cgroupsPath` names its
    /// cgroups on this host (the monitor's containers).
    pub fn from_bundle(id: &str, init_pid: Pid, bundle: &Path) -> Result<ExecTarget, ExecError> {
        let spec = crate::container::load_bundle(bundle)
            .map_err(|source| ExecError::Spec { id: id.to_string(), source: Box::new(source) })?;
        let cgroups_path = spec.linux().as_ref().and_then(|l| l.cgroups_path().as_ref());
        let cgroup_procs = match cgroups_path {
            Some(path) => ContainerCgroup::on_host(&path.to_string_lossy())
                .map_err(|source| ExecError::Cgroup { id: id.to_string(), source: Box::new(source) })?
                .procs_files(),
            None => Vec::new(),
        };
        Ok(ExecTarget { id: id.to_string(), init_pid, init_start_time: None, cgroup_procs, spec })
    }

    /// The container's own process (config.json's), the base of an exec'd one.
    pub fn container_process(&self) -> Option<&Process> {
        self.spec.process().as_ref()
    }

    /// `process` checked as runc checks it, with what it leaves unset taken from the
    /// container's process as runc does (capabilities, rlimits, noNewPrivileges,
    /// oomScoreAdj), and its environment without duplicate names (the last value wins).
    pub(super) fn effective_process(&self, process: &Process) -> Result<Process, ExecError> {
        self.validate(process)?;
        let mut process = process.clone();
        if let Some(container) = self.container_process() {
            if process.capabilities().is_none() {
                process.set_capabilities(container.capabilities().clone());
            }
            if process.rlimits().as_ref().is_none_or(|r| r.is_empty()) {
                process.set_rlimits(container.rlimits().clone());
            }
            if process.no_new_privileges().is_none() {
                process.set_no_new_privileges(container.no_new_privileges());
            }
            if process.oom_score_adj().is_none() {
                process.set_oom_score_adj(container.oom_score_adj());
            }
        }
        let env = process.env().as_deref().map(dedupe_env);
        process.set_env(env);
        Ok(process)
    }

    /// runc's validateProcessSpec.
    fn validate(&self, process: &Process) -> Result<(), ExecError> {
        let invalid = |reason| Err(ExecError::InvalidProcess { id: self.id.clone(), reason });
        if process.cwd().as_os_str().is_empty() {
            return invalid("cwd must not be empty");
        }
        if !process.cwd().is_absolute() {
            return invalid("cwd must be an absolute path");
        }
        if process.args().as_ref().is_none_or(|a| a.is_empty()) {
            return invalid("args must not be empty");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use oci_spec::runtime::{LinuxCapabilities, ProcessBuilder, UserBuilder};

    use super::*;

    fn target() -> ExecTarget {
        let mut spec = Spec::default();
        let mut process = spec.process().clone().unwrap();
        process.set_no_new_privileges(Some(true));
        process.set_oom_score_adj(Some(500));
        spec.set_process(Some(process));
        ExecTarget {
            id: "c1".to_string(),
            init_pid: Pid::from_raw(1),
            init_start_time: None,
            cgroup_procs: Vec::new(),
            spec,
        }
    }

    fn bare(args: &[&str], cwd: &str) -> Process {
        let mut process: Process =
            serde_json::from_value(serde_json::json!({ "user": { "uid": 0, "gid": 0 }, "cwd": cwd })).unwrap();
        process.set_args(Some(args.iter().map(|a| a.to_string()).collect()));
        process
    }

    #[test]
    fn unset_fields_come_from_the_container() {
        let target = target();
        let process = target.effective_process(&bare(&["id"], "/")).unwrap();
        let container = target.container_process().unwrap();
        assert_eq!(process.capabilities(), container.capabilities());
        assert_eq!(process.rlimits(), container.rlimits());
        assert_eq!(process.no_new_privileges(), Some(true));
        assert_eq!(process.oom_score_adj(), Some(500));
        assert_eq!(process.env(), &None, "no env stays no env, as with runc");
    }

    #[test]
    fn given_fields_win() {
        let caps = LinuxCapabilities::default();
        let mut given = ProcessBuilder::default()
            .args(vec!["id".to_string()])
            .cwd("/tmp")
            .user(UserBuilder::default().uid(5u32).gid(6u32).build().unwrap())
            .no_new_privileges(false)
            .env(vec!["A=1".to_string(), "B=2".to_string(), "A=3".to_string()])
            .build()
            .unwrap();
        given.set_capabilities(Some(caps.clone()));
        let process = target().effective_process(&given).unwrap();
        assert_eq!(process.capabilities(), &Some(caps));
        assert_eq!(process.no_new_privileges(), Some(false));
        assert_eq!(process.env(), &Some(vec!["A=3".to_string(), "B=2".to_string()]));
        assert_eq!(process.user().uid(), 5);
    }

    #[test]
    fn runc_checks_the_process() {
        let target = target();
        let reason = |process: &Process| match target.effective_process(process) {
            Err(ExecError::InvalidProcess { reason, .. }) => reason,
            other => panic!("expected an invalid process, got {other:?}"),
        };
        assert_eq!(reason(&bare(&[], "/")), "args must not be empty");
        assert_eq!(reason(&bare(&["id"], "tmp")), "cwd must be an absolute path");
        assert_eq!(reason(&bare(&["id"], "")), "cwd must not be empty");
        let mut tty = bare(&["sh"], "/");
        tty.set_terminal(Some(true));
        assert!(target.effective_process(&tty).is_ok(), "a terminal is the launcher's business");
    }
}
