//! An exec'd process made from the container's own process, as `runc exec ARGS...` makes it
//! from its flags (runc's getProcess): new args, env appended, and the rest replaced only
//! when given.

use std::collections::HashMap;
use std::path::PathBuf;

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, Process};

/// What to change in the container's process. `Default` plus `args` is the kubelet's exec:
/// the container's env, cwd, user and capabilities, another command.
#[derive(Debug, Clone, Default)]
pub struct ExecOverrides {
    pub args: Vec<String>,
    /// Appended to the container's env; a name given again replaces the container's value.
    pub env: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Appended to the container's additional gids.
    pub additional_gids: Vec<u32>,
    /// Added to the bounding, effective and permitted sets, and to the ambient set when the
    /// process has an inheritable set (ambient capabilities need it).
    pub capabilities: Vec<Capability>,
    pub no_new_privileges: Option<bool>,
}

impl ExecOverrides {
    /// `base` (the container's process) with these changes; never a terminal.
    pub fn apply(&self, base: &Process) -> Process {
        let mut process = base.clone();
        process.set_args(Some(self.args.clone()));
        process.set_terminal(Some(false));
        if !self.env.is_empty() {
            let mut env = process.env().clone().unwrap_or_default();
            env.extend(self.env.iter().cloned());
            process.set_env(Some(env));
        }
        if let Some(cwd) = &self.cwd {
            process.set_cwd(cwd.clone());
        }
        let user = process.user_mut();
        if let Some(uid) = self.uid {
            user.set_uid(uid);
        }
        if let Some(gid) = self.gid {
            user.set_gid(gid);
        }
        if !self.additional_gids.is_empty() {
            let mut gids = user.additional_gids().clone().unwrap_or_default();
            gids.extend(&self.additional_gids);
            user.set_additional_gids(Some(gids));
        }
        if let Some(caps) = process.capabilities().clone() {
            process.set_capabilities(Some(add_capabilities(caps, &self.capabilities)));
        }
        if let Some(no_new_privileges) = self.no_new_privileges {
            process.set_no_new_privileges(Some(no_new_privileges));
        }
        process
    }
}

/// A process without capabilities keeps all of them: there is nothing to add to then.
fn add_capabilities(mut caps: LinuxCapabilities, added: &[Capability]) -> LinuxCapabilities {
    if added.is_empty() {
        return caps;
    }
    let with = |set: &Option<Capabilities>| {
        let mut set = set.clone().unwrap_or_default();
        set.extend(added.iter().copied());
        Some(set)
    };
    caps.set_bounding(with(caps.bounding()));
    caps.set_effective(with(caps.effective()));
    caps.set_permitted(with(caps.permitted()));
    if caps.inheritable().is_some() {
        caps.set_ambient(with(caps.ambient()));
    }
    caps
}

/// One entry per name, as runc's prepareEnv: at the place of its first occurrence, with the
/// value of its last.
pub(super) fn dedupe_env(env: &[String]) -> Vec<String> {
    let name = |entry: &str| entry.split_once('=').map_or(entry, |(name, _)| name).to_string();
    let mut last: HashMap<String, &String> = HashMap::new();
    for entry in env {
        last.insert(name(entry), entry);
    }
    let mut out = Vec::with_capacity(last.len());
    for entry in env {
        if let Some(value) = last.remove(&name(entry)) {
            out.push(value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn flags_change_the_containers_process() {
        let base = Process::default(); // args sh, PATH and TERM, uid 0, runc's default caps
        let overrides = ExecOverrides {
            args: strings(&["id", "-u"]),
            env: strings(&["A=b", "TERM=dumb"]),
            cwd: Some(PathBuf::from("/tmp")),
            uid: Some(1000),
            additional_gids: vec![10, 11],
            capabilities: vec![Capability::SysAdmin],
            no_new_privileges: Some(true),
            ..Default::default()
        };
        let process = overrides.apply(&base);
        assert_eq!(process.args(), &Some(strings(&["id", "-u"])));
        let env = process.env().clone().unwrap();
        assert_eq!(env.len(), 4, "appended: {env:?}");
        assert_eq!(dedupe_env(&env)[1], "TERM=dumb", "the last value wins, at the first place");
        assert_eq!(process.cwd(), &PathBuf::from("/tmp"));
        assert_eq!((process.user().uid(), process.user().gid()), (1000, 0), "--user 1000 keeps the gid");
        assert_eq!(process.user().additional_gids(), &Some(vec![10, 11]));
        let caps = process.capabilities().clone().unwrap();
        for set in [caps.bounding(), caps.effective(), caps.permitted()] {
            assert!(set.as_ref().unwrap().contains(&Capability::SysAdmin));
        }
        assert_eq!(process.no_new_privileges(), Some(true));
        assert_eq!(process.terminal(), Some(false));
    }

    #[test]
    fn nothing_given_changes_only_the_args() {
        let base = Process::default();
        let process = ExecOverrides { args: strings(&["true"]), ..Default::default() }.apply(&base);
        assert_eq!(process.env(), base.env());
        assert_eq!(process.capabilities(), base.capabilities());
        assert_eq!(process.user(), base.user());
        assert_eq!(process.no_new_privileges(), base.no_new_privileges());
    }

    #[test]
    fn env_is_deduplicated_like_runc() {
        let env = strings(&["PATH=/bin", "A=1", "PATH=/x", "B", "A=2"]);
        assert_eq!(dedupe_env(&env), strings(&["PATH=/x", "A=2", "B"]));
    }
}
