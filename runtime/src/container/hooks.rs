//! OCI lifecycle hooks (runtime-spec config.md "POSIX-platform Hooks"): each hook is a program
//! run with its own args and env, the container's state JSON on stdin, and an optional
//! timeout after which it is killed. One rule for every kind: a hook without a timeout has
//! no deadline (it runs as long as its process lives), as runc does. Which process runs
//! which hooks, and when, belongs to the callers (the init for createContainer and
//! startContainer, the runtime side for the rest).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use oci_spec::runtime::{Hook, Hooks, Spec};
use serde::Serialize;

/// What is kept of a hook's stdout and stderr for the error message.
const OUTPUT_LIMIT: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookKind {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl HookKind {
    /// The hooks of this kind in `hooks` (none when absent).
    pub fn list(self, hooks: Option<&Hooks>) -> &[Hook] {
        let Some(hooks) = hooks else {
            return &[];
        };
        #[allow(deprecated)] // prestart is deprecated by the spec, yet still to be run
        let list = match self {
            HookKind::Prestart => hooks.prestart(),
            HookKind::CreateRuntime => hooks.create_runtime(),
            HookKind::CreateContainer => hooks.create_container(),
            HookKind::StartContainer => hooks.start_container(),
            HookKind::Poststart => hooks.poststart(),
            HookKind::Poststop => hooks.poststop(),
        };
        list.as_deref().unwrap_or(&[])
    }

    const ALL: [HookKind; 6] = [
        HookKind::Prestart,
        HookKind::CreateRuntime,
        HookKind::CreateContainer,
        HookKind::StartContainer,
        HookKind::Poststart,
        HookKind::Poststop,
    ];
}

impl std::fmt::Display for HookKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HookKind::Prestart => "prestart",
            HookKind::CreateRuntime => "createRuntime",
            HookKind::CreateContainer => "createContainer",
            HookKind::StartContainer => "startContainer",
            HookKind::Poststart => "poststart",
            HookKind::Poststop => "poststop",
        })
    }
}

/// The runtime spec's state document, as a hook reads it on stdin.
#[derive(Clone, Debug, Serialize)]
pub struct HookState {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub status: &'static str,
    /// The init's pid on the host; left out once the container has stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub bundle: PathBuf,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl HookState {
    /// The state of container `id` of `spec`, without status and pid yet.
    pub fn of_spec(spec: &Spec, id: &str, bundle: &Path) -> HookState {
        HookState {
            oci_version: spec.version().clone(),
            id: id.to_string(),
            status: "creating",
            pid: None,
            bundle: bundle.to_path_buf(),
            annotations: spec.annotations().clone().unwrap_or_default().into_iter().collect(),
        }
    }

    pub fn with(&self, status: &'static str, pid: Option<i32>) -> HookState {
        HookState { status, pid, ..self.clone() }
    }
}

/// runc's wording: "error running createRuntime hook #0: ...".
#[derive(Debug, thiserror::Error)]
#[error("error running {kind} hook #{index} ({path})")]
pub struct HookError {
    pub kind: HookKind,
    pub index: usize,
    pub path: PathBuf,
    #[source]
    pub source: HookFailure,
}

#[derive(Debug, thiserror::Error)]
pub enum HookFailure {
    #[error("the hook path must be absolute")]
    RelativePath,
    #[error("timeout must be greater than zero, not {0}")]
    BadTimeout(i64),
    #[error("env entry {0:?} is not KEY=VALUE")]
    BadEnv(String),
    #[error("cannot encode the container state")]
    Encode(#[source] serde_json::Error),
    #[error("cannot prepare the hook's {what}")]
    Pipe {
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("cannot start the hook")]
    Spawn(#[source] std::io::Error),
    #[error("cannot wait for the hook (pid {pid})")]
    Wait {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("{}, stdout: {stdout}, stderr: {stderr}", describe(status))]
    Exited { status: ExitStatus, stdout: String, stderr: String },
    #[error("hook ran past specified timeout of {seconds}s")]
    Timeout { seconds: i64 },
}

/// Go's wording, which runc's messages carry: "exit status 3", "signal: SIGKILL".
fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => match nix::sys::signal::Signal::try_from(sig) {
            Ok(sig) => format!("signal: {sig}"),
            Err(_) => format!("signal: {sig}"),
        },
        (None, None) => status.to_string(),
    }
}

/// Check every hook of the spec before anything is created: absolute paths, positive
/// timeouts, KEY=VALUE env entries.
pub fn validate(hooks: Option<&Hooks>) -> Result<(), HookError> {
    for kind in HookKind::ALL {
        for (index, hook) in kind.list(hooks).iter().enumerate() {
            check(hook).map_err(|source| HookError { kind, index, path: hook.path().clone(), source })?;
        }
    }
    Ok(())
}

fn check(hook: &Hook) -> Result<(), HookFailure> {
    if !hook.path().is_absolute() {
        return Err(HookFailure::RelativePath);
    }
    if let Some(t) = hook.timeout().filter(|t| *t <= 0) {
        return Err(HookFailure::BadTimeout(t));
    }
    if let Some(bad) = hook.env().iter().flatten().find(|e| !e.contains('=')) {
        return Err(HookFailure::BadEnv(bad.clone()));
    }
    Ok(())
}

/// Run the hooks of `kind` in order, stopping at the first failure (the create-time and
/// startContainer hooks, whose failure fails the operation). `cwd` is the hooks' working
/// directory (the caller's when None).
pub fn run_all(kind: HookKind, hooks: Option<&Hooks>, state: &HookState, cwd: Option<&Path>) -> Result<(), HookError> {
    for (index, hook) in kind.list(hooks).iter().enumerate() {
        run_nth(kind, index, hook, state, cwd)?;
        tracing::debug!(%kind, index, path = %hook.path().display(), "hook succeeded");
    }
    Ok(())
}

/// Run every hook of `kind`, logging failures and going on: poststart and poststop hooks,
/// whose failure the spec says to report as a warning only.
pub fn run_logged(kind: HookKind, hooks: Option<&Hooks>, state: &HookState, cwd: Option<&Path>) {
    for (index, hook) in kind.list(hooks).iter().enumerate() {
        if let Err(e) = run_nth(kind, index, hook, state, cwd) {
            tracing::warn!("{}", crate::error_chain(&e));
        }
    }
}

/// Run `hook`, number `index` of `kind`, with `state` encoded on its stdin.
fn run_nth(kind: HookKind, index: usize, hook: &Hook, state: &HookState, cwd: Option<&Path>) -> Result<(), HookError> {
    let fail = |source| HookError { kind, index, path: hook.path().clone(), source };
    let input = serde_json::to_vec(state).map_err(|e| fail(HookFailure::Encode(e)))?;
    run_one(hook, &input, cwd).map_err(fail)
}

/// The longest the hooks of `kind` may take together; None (no deadline) when one of them
/// sets no timeout: such a hook runs as long as it lives, whichever process runs it.
pub fn total_timeout(kind: HookKind, hooks: Option<&Hooks>) -> Option<Duration> {
    kind.list(hooks)
        .iter()
        .map(|h| h.timeout().map(|t| Duration::from_secs(t.max(0).unsigned_abs())))
        .sum::<Option<Duration>>()
}

fn run_one(hook: &Hook, input: &[u8], cwd: Option<&Path>) -> Result<(), HookFailure> {
    check(hook)?;
    let stdin = filled_pipe(input)?;
    let (out_r, out_w) = pipe("stdout")?;
    let (err_r, err_w) = pipe("stderr")?;
    let mut command = command(hook, cwd);
    command.stdin(Stdio::from(stdin)).stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
    let child = command.spawn().map_err(HookFailure::Spawn)?;
    drop(command); // closes our copies of the write ends, so EOF comes when the hook exits
    let timeout = hook.timeout().map(|s| (s, Instant::now() + Duration::from_secs(s.unsigned_abs())));
    let (status, output) = wait_capturing(child, [out_r, err_r], timeout)?;
    if status.success() {
        return Ok(());
    }
    let [stdout, stderr] = output.map(|o| String::from_utf8_lossy(&o).trim_end().to_string());
    Err(HookFailure::Exited { status, stdout, stderr })
}

/// args[0] is argv0 (the path when there are no args); env replaces ours when given.
fn command(hook: &Hook, cwd: Option<&Path>) -> Command {
    let mut command = Command::new(hook.path());
    if let Some((argv0, rest)) = hook.args().as_deref().and_then(|a| a.split_first()) {
        command.arg0(argv0).args(rest);
    }
    if let Some(env) = hook.env() {
        command.env_clear();
        for (key, value) in env.iter().filter_map(|e| e.split_once('=')) {
            command.env(key, value);
        }
    }
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    // Its own process group, so that a timeout kills what it started too.
    command.process_group(0);
    command
}

fn pipe(what: &'static str) -> Result<(OwnedFd, OwnedFd), HookFailure> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|source| HookFailure::Pipe { what, source })
}

/// A pipe already holding `input`, its write end closed: the hook reads the state and then
/// EOF, and we never block on (or get SIGPIPE from) a hook that does not read its stdin.
fn filled_pipe(input: &[u8]) -> Result<OwnedFd, HookFailure> {
    let err = |source| HookFailure::Pipe { what: "stdin", source };
    let (read, write) = pipe("stdin")?;
    let capacity = fcntl(&write, FcntlArg::F_GETPIPE_SZ).map_err(err)?;
    if usize::try_from(capacity).unwrap_or(0) < input.len() {
        let wanted = i32::try_from(input.len()).unwrap_or(i32::MAX);
        fcntl(&write, FcntlArg::F_SETPIPE_SZ(wanted)).map_err(err)?;
    }
    let mut written = 0;
    while written < input.len() {
        written += nix::unistd::write(&write, &input[written..]).map_err(err)?;
    }
    Ok(read)
}

/// Wait for the hook to exit (killing it at the deadline), reading its stdout and stderr
/// meanwhile so that it never blocks on a full pipe.
fn wait_capturing(
    mut child: Child,
    pipes: [OwnedFd; 2],
    timeout: Option<(i64, Instant)>,
) -> Result<(ExitStatus, [Vec<u8>; 2]), HookFailure> {
    let pid = child.id();
    let wait_err = |source| HookFailure::Wait { pid, source };
    let pidfd = crate::sys::pidfd_open(nix::unistd::Pid::from_raw(pid as i32)).map_err(|e| wait_err(e.into()))?;
    let mut readers: Vec<Option<std::fs::File>> = pipes.into_iter().map(|fd| Some(std::fs::File::from(fd))).collect();
    let mut output = [Vec::new(), Vec::new()];
    loop {
        let remaining = match timeout {
            Some((seconds, deadline)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    let group = nix::unistd::Pid::from_raw(pid as i32);
                    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                    let _ = child.wait();
                    return Err(HookFailure::Timeout { seconds });
                }
                PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        fds.extend(readers.iter().flatten().map(|r| PollFd::new(r.as_fd(), PollFlags::POLLIN)));
        match poll(&mut fds, remaining) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(wait_err(e.into())),
        }
        let exited = fds[0].any().unwrap_or(false);
        let ready: Vec<bool> = fds[1..].iter().map(|f| f.any().unwrap_or(false)).collect();
        drop(fds);
        let mut ready = ready.into_iter();
        for (reader, out) in readers.iter_mut().zip(output.iter_mut()) {
            if reader.is_some() && ready.next().unwrap_or(false) && !read_some(reader.as_mut(), out) {
                *reader = None;
            }
        }
        if exited {
            break;
        }
    }
    // What the hook wrote just before exiting; a child it left behind may keep the pipes open,
    // so read only what is there.
    for (reader, out) in readers.into_iter().zip(output.iter_mut()) {
        if let Some(mut reader) = reader {
            let _ = fcntl(&reader, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
            while read_some(Some(&mut reader), out) {}
        }
    }
    let status = child.wait().map_err(wait_err)?;
    Ok((status, output))
}

/// One read into `out` (kept up to OUTPUT_LIMIT); false at EOF or error.
fn read_some(reader: Option<&mut std::fs::File>, out: &mut Vec<u8>) -> bool {
    let Some(reader) = reader else {
        return false;
    };
    let mut buf = [0u8; 4096];
    match reader.read(&mut buf) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            let keep = n.min(OUTPUT_LIMIT.saturating_sub(out.len()));
            out.extend_from_slice(&buf[..keep]);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{HookBuilder, HooksBuilder};

    fn hook(script: &str, timeout: Option<i64>) -> Hook {
        let mut b = HookBuilder::default().path("/bin/sh").args(vec!["sh".into(), "-c".into(), script.into()]);
        if let Some(t) = timeout {
            b = b.timeout(t);
        }
        b.build().unwrap()
    }

    fn state() -> HookState {
        HookState {
            oci_version: "1.2.0".into(),
            id: "c1".into(),
            status: "creating",
            pid: Some(42),
            bundle: "/b".into(),
            annotations: [("a".to_string(), "b".to_string())].into(),
        }
    }

    #[test]
    fn state_goes_to_stdin_and_args_env_apply() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!(
            "cat > {0}; echo \" $0 $1 $FOO:$HOME\" >> {0}; tr '\\0' ' ' < /proc/$$/cmdline >> {0}",
            out.display()
        );
        let mut h = hook(&script, Some(5));
        h.set_args(Some(vec!["myname".into(), "-c".into(), script.clone(), "zero".into(), "one".into()]));
        h.set_env(Some(vec!["FOO=bar".into()]));
        let hooks = HooksBuilder::default().create_runtime(vec![h]).build().unwrap();
        run_all(HookKind::CreateRuntime, Some(&hooks), &state(), None).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let state =
            r#"{"ociVersion":"1.2.0","id":"c1","status":"creating","pid":42,"bundle":"/b","annotations":{"a":"b"}}"#;
        assert_eq!(text, format!("{state} zero one bar:\nmyname -c {script} zero one "));
    }

    #[test]
    fn failure_reports_status_and_output() {
        let hooks = HooksBuilder::default()
            .create_runtime(vec![hook("true", None), hook("echo out; echo err >&2; exit 3", None)])
            .build()
            .unwrap();
        let err = run_all(HookKind::CreateRuntime, Some(&hooks), &state(), None).unwrap_err();
        assert_eq!(err.index, 1);
        let text = crate::error_chain(&err);
        assert!(
            text.starts_with("error running createRuntime hook #1 (/bin/sh): exit status 3, stdout: out, stderr: err"),
            "{text}"
        );
    }

    #[test]
    fn a_killed_hook_names_its_signal() {
        let hooks = HooksBuilder::default().poststop(vec![hook("kill -9 $$", None)]).build().unwrap();
        let err = run_all(HookKind::Poststop, Some(&hooks), &state(), None).unwrap_err();
        assert!(crate::error_chain(&err).contains("signal: SIGKILL, stdout: , stderr: "), "{err:?}");
    }

    #[test]
    fn timeout_kills_the_hook_and_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        // The shell forks the sleep (a second command follows), then waits for it.
        let script = format!("sleep 30 & echo $! > {}; wait; true", pid_file.display());
        let hooks = HooksBuilder::default().poststart(vec![hook(&script, Some(1))]).build().unwrap();
        let started = Instant::now();
        let err = run_all(HookKind::Poststart, Some(&hooks), &state(), None).unwrap_err();
        assert!(matches!(err.source, HookFailure::Timeout { seconds: 1 }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let sleep: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        // Killed with its group; gone once init reaped it.
        let gone = (0..500).any(|_| {
            let alive = std::fs::read_to_string(format!("/proc/{sleep}/stat"))
                .is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'));
            if alive {
                std::thread::sleep(Duration::from_millis(10));
            }
            !alive
        });
        assert!(gone, "the hook's child {sleep} survived the timeout");
    }

    #[test]
    fn large_state_and_unread_stdin_do_not_block() {
        let mut s = state();
        s.annotations = (0..5000).map(|i| (format!("key{i}"), "v".repeat(20))).collect();
        let hooks = HooksBuilder::default().poststop(vec![hook("exit 0", Some(5))]).build().unwrap();
        run_all(HookKind::Poststop, Some(&hooks), &s, None).unwrap();
    }

    #[test]
    fn validation_names_the_bad_hook() {
        let mut relative = hook("true", None);
        relative.set_path("sh".into());
        let hooks = HooksBuilder::default().poststop(vec![hook("true", None), relative]).build().unwrap();
        let err = validate(Some(&hooks)).unwrap_err();
        assert_eq!((err.kind, err.index), (HookKind::Poststop, 1));
        let zero = HooksBuilder::default().prestart(vec![hook("true", Some(0))]).build().unwrap();
        assert!(matches!(validate(Some(&zero)).unwrap_err().source, HookFailure::BadTimeout(0)));
        assert_eq!(total_timeout(HookKind::Prestart, Some(&zero)), Some(Duration::ZERO));
        assert_eq!(total_timeout(HookKind::CreateContainer, Some(&zero)), Some(Duration::ZERO));
    }

    #[test]
    fn a_hook_without_timeout_lifts_the_deadline_of_its_kind() {
        let timed = HooksBuilder::default()
            .create_container(vec![hook("true", Some(2)), hook("true", Some(3))])
            .build()
            .unwrap();
        assert_eq!(total_timeout(HookKind::CreateContainer, Some(&timed)), Some(Duration::from_secs(5)));
        let untimed =
            HooksBuilder::default().create_container(vec![hook("true", Some(2)), hook("true", None)]).build().unwrap();
        assert_eq!(total_timeout(HookKind::CreateContainer, Some(&untimed)), None);
        assert_eq!(total_timeout(HookKind::CreateContainer, None), Some(Duration::ZERO), "no hooks: no extra time");
    }
}
