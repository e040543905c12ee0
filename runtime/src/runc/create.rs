//! `create`: prepare the container (state dir, exec FIFO, cgroup), clone its init and leave
//! it waiting on the FIFO. This process then exits, so the init is re-parented to the
//! caller's subreaper, as with runc.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::sys::stat::Mode;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use super::container::{self, RuncRecord, EXEC_FIFO, START_FIFO};
use super::{io_err, RuncError};
use crate::cgroups::{CgroupLimits, ContainerCgroup};
use crate::container::hooks::{self, HookKind, HookState};
use crate::container::{InitSpec, Stdio};
use crate::monitor::store::Record;

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Path to the bundle (the directory holding config.json).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Write the init's pid to this file.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Unix socket to send the terminal's master fd to (with process.terminal).
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Use chroot instead of pivot_root (for a rootfs on ramfs).
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Pass on N extra fds (3..3+N) to the container process.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Accepted for runc compatibility; the kernel keyring is not touched.
    #[arg(long = "no-new-keyring", hide = true)]
    pub no_new_keyring: bool,
    pub id: String,
}

/// Create the container; returns its init's pid (we are its parent until we exit).
pub(super) fn create(root: &Path, args: &CreateArgs) -> Result<Pid, RuncError> {
    create_with(root, args, None, load_bundle(args))
}

/// The bundle's absolute path and its spec, read once per command.
pub(super) fn load_bundle(args: &CreateArgs) -> Result<(PathBuf, Spec), RuncError> {
    let bundle = args.bundle.canonicalize().map_err(io_err("cannot open bundle", &args.bundle))?;
    let spec = crate::container::load_bundle(&bundle).map_err(RuncError::Spec)?;
    Ok((bundle, spec))
}

/// Create the container from `loaded` (what [`load_bundle`] made of `args`; an error in it
/// is reported after a bad id, as runc does), its terminal's master sent over `console` (one
/// end of a socket pair whose other end the caller relays) rather than to a --console-socket.
pub(super) fn create_with(
    root: &Path,
    args: &CreateArgs,
    console: Option<OwnedFd>,
    loaded: Result<(PathBuf, Spec), RuncError>,
) -> Result<Pid, RuncError> {
    container::validate_id(&args.id)?;
    let (bundle, spec) = loaded?;
    check_spec(&spec, args.console_socket.is_some() || console.is_some())?;
    let stdio = match console {
        Some(fd) => Stdio::Terminal(fd),
        None => stdio(args)?,
    };
    let rootfs = crate::container::rootfs_path(&bundle, &spec);
    let rootfs = rootfs.canonicalize().map_err(|source| RuncError::Rootfs { path: rootfs.clone(), source })?;

    std::fs::create_dir_all(root).map_err(io_err("cannot create state root", root))?;
    let dir = container::container_dir(root, &args.id);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(RuncError::Exists { id: args.id.clone() })
        }
        Err(e) => return Err(io_err("cannot create state dir", &dir)(e)),
    }
    let mut undo = Undo { dir: dir.clone(), cgroup: None, pid: None, poststop: None };
    let rec = create_in(&mut undo, args, bundle, rootfs, spec, stdio)?;
    if let Some(pid_file) = &args.pid_file {
        write_pid_file(pid_file, rec.record.state.pid.unwrap_or(0))?;
    }
    undo.disarm();
    Ok(Pid::from_raw(rec.record.state.pid.unwrap_or(0)))
}

fn create_in(
    undo: &mut Undo,
    args: &CreateArgs,
    bundle: PathBuf,
    rootfs: PathBuf,
    spec: Spec,
    stdio: Stdio,
) -> Result<RuncRecord, RuncError> {
    let exec_fifo = undo.dir.join(EXEC_FIFO);
    nix::unistd::mkfifo(&exec_fifo, Mode::S_IRUSR | Mode::S_IWUSR)
        .map_err(|source| RuncError::Sys { what: "cannot create exec fifo", source })?;
    // Only hooks need `start` to wait for the exec: to report a failed startContainer hook,
    // and to run the poststart hooks after the user process started. Without them, `start`
    // returns once the init is released, as runc's does, with no round trip.
    let waits_for_exec =
        [HookKind::StartContainer, HookKind::Poststart].iter().any(|kind| !kind.list(spec.hooks().as_ref()).is_empty());
    let start_fifo = undo.dir.join(START_FIFO);
    if waits_for_exec {
        nix::unistd::mkfifo(&start_fifo, Mode::S_IRUSR | Mode::S_IWUSR)
            .map_err(|source| RuncError::Sys { what: "cannot create start fifo", source })?;
    }
    let linux = spec.linux().as_ref();
    // runc's cgroupfs default: a cgroup named after the container at the hierarchy's root.
    let cgroups_path = linux
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("/{}", args.id));
    let cgroup = container::on_host(&cgroups_path)?;
    let limits = CgroupLimits::from_linux(linux);
    undo.cgroup = Some(cgroup.clone());
    cgroup.create(&limits).map_err(|e| RuncError::Cgroup { path: cgroups_path.clone(), source: Box::new(e) })?;

    let annotations: BTreeMap<String, String> = spec.annotations().clone().unwrap_or_default().into_iter().collect();
    let oci_version = spec.version().clone();
    let spec_hooks = spec.hooks().clone();
    // From here on a failure is the spec's "stop the container, go on at delete": the
    // poststop hooks run once everything is undone.
    undo.poststop = Some((spec_hooks.clone(), HookState::of_spec(&spec, &args.id, &bundle).with("stopped", None)));
    let init = InitSpec {
        id: args.id.clone(),
        spec,
        bundle: bundle.clone(),
        rootfs: rootfs.clone(),
        cgroup_join: cgroup.init_join(),
        cgroup_views: cgroup.hierarchy_dirs(),
        stdio,
        exec_fifo,
        start_fifo: waits_for_exec.then_some(start_fifo),
        preserve_fds: args.preserve_fds,
        no_pivot: args.no_pivot,
    };
    let pid = crate::container::spawn(init).map_err(|e| RuncError::Spawn(Box::new(e)))?;
    undo.pid = Some(pid);
    let rec = RuncRecord {
        record: Record::created(&args.id, pid, bundle, annotations, Some(cgroups_path)),
        oci_version,
        rootfs,
        hooks: spec_hooks,
    };
    container::save(&undo.dir, &rec)?;
    tracing::debug!(id = %args.id, %pid, "created container");
    Ok(rec)
}

/// What the container code cannot do yet, refused before anything is made.
fn check_spec(spec: &Spec, console: bool) -> Result<(), RuncError> {
    match (wants_terminal(spec), console) {
        (true, false) => return Err(RuncError::Terminal),
        (false, true) => return Err(RuncError::ConsoleWithoutTerminal),
        _ => {}
    }
    hooks::validate(spec.hooks().as_ref()).map_err(|e| RuncError::Hook(Box::new(e)))
}

pub(super) fn wants_terminal(spec: &Spec) -> bool {
    spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false)
}

/// The caller's stdio, or with a terminal the console socket, connected now (the init can
/// no longer reach the path once inside its root).
fn stdio(args: &CreateArgs) -> Result<Stdio, RuncError> {
    let Some(path) = &args.console_socket else {
        return Ok(Stdio::Inherit);
    };
    let socket =
        std::os::unix::net::UnixStream::connect(path).map_err(io_err("cannot connect to console socket", path))?;
    Ok(Stdio::Terminal(socket.into()))
}

/// runc writes the pid without a newline, through a temp file and a rename, so a reader
/// never sees a partial file.
pub(super) fn write_pid_file(path: &Path, pid: i32) -> Result<(), RuncError> {
    let tmp_name = format!(".{}.tmp", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, pid.to_string()).map_err(io_err("cannot write pid file", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("cannot write pid file", path))
}

/// Removes what a failed create made: the init, the cgroup, the state directory; then runs
/// the poststop hooks.
struct Undo {
    dir: PathBuf,
    cgroup: Option<ContainerCgroup>,
    pid: Option<Pid>,
    poststop: Option<(Option<oci_spec::runtime::Hooks>, HookState)>,
}

impl Undo {
    fn disarm(&mut self) {
        self.cgroup = None;
        self.pid = None;
        self.dir = PathBuf::new();
        self.poststop = None;
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None); // our child: reap it
        }
        if let Some(cgroup) = &self.cgroup {
            let _ = cgroup.remove();
        }
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        if let Some((spec_hooks, state)) = &self.poststop {
            hooks::run_logged(HookKind::Poststop, spec_hooks.as_ref(), state, Some(&state.bundle));
        }
    }
}
