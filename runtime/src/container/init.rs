//! The container's init, run in the cloned child: each setup step in order, the report to
//! the monitor, the wait for `start`, and the exec of the user process.

use crate::error_chain;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::caps::{self, CapsError};
use super::console::{self, ConsoleError};
use super::devices::{create_default_devices, create_spec_devices, DeviceError};
use super::hooks::{self, HookError, HookKind, HookState};
use super::lsm::{self, LsmError};
use super::mounts::{mount_all, MountError};
use super::namespaces::{self, NamespaceError};
use super::personality::{self, PersonalityError};
use super::process::{self, Command, ProcessError};
use super::rootfs::{self, RootfsError};
use super::sched::{self, SchedError};
use std::rc::Rc;

use super::seccomp::{self, SeccompError};
use super::sysctl::{self, SysctlError};
use super::timens::{self, TimensError};
use super::userns::{self, UsernsError};
use super::{InitSpec, Prepared, Stdio};
use crate::sys;

/// What the child writes on the sync socket when it is ready; anything else is an error text.
pub(super) const SETUP_OK: &str = "ok";
/// What the child sends, before pivot_root, for the runtime side to run the prestart and
/// createRuntime hooks; the answer is the child's pid on the host.
pub(super) const RUN_HOOKS: &str = "hooks";
/// What the runtime side sends once it wrote a new user namespace's id maps.
pub(super) const IDS_MAPPED: &str = "mapped";

/// Exit code of a container whose exec failed after `start` (as shells report it).
const EXEC_FAILED: i32 = 127;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot reset signal handling")]
    Signals(#[source] nix::Error),
    #[error("cannot make the init non-dumpable")]
    Dumpable(#[source] nix::Error),
    #[error("cannot close inherited file descriptors")]
    CloseFds(#[source] nix::Error),
    #[error("cannot join cgroup {path}")]
    JoinCgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot enter namespaces")]
    Namespaces(#[source] NamespaceError),
    #[error("cannot wait for the user namespace's id maps")]
    IdMaps(#[source] std::io::Error),
    #[error("unexpected message {0:?} instead of the id maps")]
    IdMapsMessage(String),
    #[error("cannot set up the user namespace")]
    Userns(#[source] UsernsError),
    #[error("cannot set up the time namespace")]
    Timens(#[source] TimensError),
    #[error("cannot set the scheduling of the user process")]
    Sched(#[source] SchedError),
    #[error("cannot set the security labels of the user process")]
    Lsm(#[source] LsmError),
    #[error("cannot start a new session")]
    Setsid(#[source] nix::Error),
    #[error("cannot open exec fifo {path}")]
    ExecFifo {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot set up rootfs {path}")]
    Rootfs {
        path: PathBuf,
        #[source]
        source: Box<RootfsError>,
    },
    #[error("cannot make the spec's mounts")]
    Mounts(#[source] Box<MountError>),
    #[error("cannot create default devices")]
    Devices(#[source] Box<DeviceError>),
    #[error("cannot set hostname {hostname}")]
    Hostname {
        hostname: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot set up the user process")]
    Process(#[source] ProcessError),
    #[error("invalid linux.sysctl")]
    InvalidSysctl(#[source] SysctlError),
    #[error("cannot apply linux.sysctl")]
    Sysctl(#[source] SysctlError),
    #[error("cannot set up the seccomp filter")]
    Seccomp(#[source] Box<SeccompError>),
    #[error("cannot set linux.personality")]
    Personality(#[source] PersonalityError),
    #[error("cannot set capabilities")]
    Caps(#[source] CapsError),
    #[error("cannot set up the terminal")]
    Console(#[source] ConsoleError),
    #[error("cannot sync with the runtime for the hooks")]
    HookSync(#[source] std::io::Error),
    #[error("invalid pid {0:?} from the runtime")]
    HookSyncPid(String),
    #[error("cannot run the hooks")]
    Hook(#[source] Box<HookError>),
    #[error("cannot open start fifo {path}")]
    StartFifo {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot wait for start on exec fifo {path}")]
    WaitForStart {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The child's whole life: never returns. Runs in a copy of the single-threaded monitor, so
/// allocation is fine; a panic must not unwind back into the monitor's code.
pub(super) fn run_child(init: InitSpec, sync: OwnedFd, prepared: Prepared) -> ! {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| child_main(init, sync, prepared)));
    match outcome {
        Ok(code) => sys::exit_immediately(code),
        Err(_) => sys::exit_immediately(EXEC_FAILED),
    }
}

fn child_main(init: InitSpec, sync: OwnedFd, prepared: Prepared) -> i32 {
    let mut sync = std::fs::File::from(sync);
    let ready = match set_up(&init, &sync, &prepared) {
        Ok(ready) => ready,
        Err(e) => {
            let _ = sync.write_all(error_chain(&e).as_bytes());
            return 1;
        }
    };
    if sync.write_all(SETUP_OK.as_bytes()).is_err() {
        return 1; // the monitor is gone; nobody could ever start us
    }
    drop(sync);
    if let Err(e) = wait_for_start(ready.fifo, &init.exec_fifo) {
        eprintln!("nodelet: {}", error_chain(&e));
        return EXEC_FAILED;
    }
    if let Err(e) = run_start_container_hooks(&init, ready.host_pid) {
        let message = error_chain(&e);
        if let Some(mut report) = ready.start_report.as_ref() {
            let _ = report.write_all(message.as_bytes());
        }
        eprintln!("nodelet: {message}");
        return EXEC_FAILED;
    }
    // Nothing of the host may reach the user process (CVE-2024-21626), except the fds the
    // caller asked to preserve, and the start FIFO, closed by the exec itself.
    let report_fd: Vec<RawFd> = ready.start_report.iter().map(|f| f.as_raw_fd()).collect();
    if let Err(e) = sys::close_fds_except(&kept_fds(&init, &report_fd)) {
        eprintln!("nodelet: {}", error_chain(&InitError::CloseFds(e)));
        return EXEC_FAILED;
    }
    // The filter goes on last, so that it sees no syscall of ours but the execve.
    if let Some(filter) = &ready.seccomp {
        if let Err(e) = filter.load() {
            eprintln!("nodelet: {}", error_chain(&InitError::Seccomp(Box::new(e))));
            return EXEC_FAILED;
        }
    }
    let e = process::exec(&ready.command);
    eprintln!("nodelet: {}", error_chain(&InitError::Process(e)));
    EXEC_FAILED
}

/// What the setup hands over to the wait for `start` and the exec.
struct Ready {
    command: Command,
    fifo: std::fs::File,
    /// The start FIFO's write end, when `start` waits for the exec.
    start_report: Option<std::fs::File>,
    /// The filter to load right before exec (None: no profile, or already loaded).
    seccomp: Option<Rc<seccomp::Filter>>,
    /// Our pid on the host, learnt from the runtime side when there are hooks.
    host_pid: Option<i32>,
}

/// Every step before the pause, in order.
fn set_up(init: &InitSpec, sync: &std::fs::File, prepared: &Prepared) -> Result<Ready, InitError> {
    let process =
        init.spec.process().as_ref().ok_or(InitError::Process(ProcessError::NotFound { program: String::new() }))?;
    sys::reset_signals().map_err(InitError::Signals)?;
    // Until execve (which makes the user program dumpable again) no process of the container
    // may open our /proc files: /proc/<pid>/exe is the runtime's binary (CVE-2019-5736), as
    // runc's nsexec does.
    nix::sys::prctl::set_dumpable(false).map_err(InitError::Dumpable)?;
    // Keep 0-2 open (they are replaced by set_stdio) so that no fd opened during setup
    // lands on a stdio number and is then silently closed by the dup2.
    let mut own = vec![sync.as_raw_fd()];
    match &init.stdio {
        Stdio::Log(fd) | Stdio::Terminal(fd) => own.push(fd.as_raw_fd()),
        Stdio::Inherit => {}
    }
    own.extend(prepared.idmapped.iter().map(|m| m.raw_fd()));
    sys::close_fds_except(&kept_fds(init, &own)).map_err(InitError::CloseFds)?;
    // Checks first, so that a bad spec fails before anything has changed.
    sysctl::validate(&init.spec, sysctl::is_host_netns).map_err(InitError::InvalidSysctl)?;
    let filter = match prepared.seccomp.clone() {
        Some(compiled) => Some(compiled),
        None => seccomp::compile(&init.spec).map_err(|e| InitError::Seccomp(Box::new(e)))?.map(Rc::new),
    };
    if namespaces::creates(&init.spec, LinuxNamespaceType::User) {
        wait_for_id_maps(sync)?;
    }
    // Until become_root below, our credentials are still the host's root, which owns the
    // cgroup files, the FIFOs and the state directory.
    join_cgroups(&init.cgroup_join.task_files)?;
    process::set_oom_score_adj(process).map_err(InitError::Process)?;
    if !prepared.joined {
        namespaces::join_by_path(&init.spec).map_err(InitError::Namespaces)?;
    }
    namespaces::unshare_cgroup(&init.spec).map_err(InitError::Namespaces)?;
    nix::unistd::setsid().map_err(InitError::Setsid)?;
    let fifo = open_exec_fifo(init)?;
    let start_report = open_start_fifo(init)?;
    if userns::has_user_namespace(&init.spec) {
        userns::become_root().map_err(InitError::Userns)?;
    }
    timens::enter_new(&init.spec).map_err(InitError::Timens)?;
    let host_pid = build_root(init, sync, prepared)?;
    if let Stdio::Terminal(socket) = &init.stdio {
        console::set_up(socket, process, true).map_err(InitError::Console)?;
    }
    set_hostname(&init.spec)?;
    // Before /proc/sys becomes read-only with the spec's read-only paths.
    sysctl::apply(&init.spec, "/proc".as_ref()).map_err(InitError::Sysctl)?;
    finish_root(init)?;
    personality::set(init.spec.linux().as_ref().and_then(|l| l.personality().as_ref()))
        .map_err(InitError::Personality)?;
    if let Stdio::Log(log) = &init.stdio {
        process::set_stdio(log).map_err(InitError::Process)?;
    }
    process::set_rlimits(process).map_err(InitError::Process)?;
    sched::apply(process).map_err(InitError::Sched)?;
    lsm::apply_on_exec(process).map_err(InitError::Lsm)?;
    let seccomp = load_seccomp_if_privileged(filter, process)?;
    let spec_caps = process.capabilities().as_ref();
    caps::limit_bounding_set(spec_caps).map_err(InitError::Caps)?;
    process::set_user(process).map_err(InitError::Process)?;
    process::set_umask(process);
    caps::apply_process_sets(spec_caps).map_err(InitError::Caps)?;
    process::change_cwd(process).map_err(InitError::Process)?;
    let command = process::resolve_command(process).map_err(InitError::Process)?;
    process::set_no_new_privileges(process).map_err(InitError::Process)?;
    Ok(Ready { command, fifo, start_report, seccomp, host_pid })
}

/// Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it now, before the
/// capabilities are dropped, as runc does (the rest of the setup then runs under it).
/// Otherwise keep it for the last moment before exec.
fn load_seccomp_if_privileged(
    filter: Option<Rc<seccomp::Filter>>,
    process: &oci_spec::runtime::Process,
) -> Result<Option<Rc<seccomp::Filter>>, InitError> {
    match filter {
        Some(filter) if !process.no_new_privileges().unwrap_or(false) => {
            filter.load().map_err(|e| InitError::Seccomp(Box::new(e)))?;
            Ok(None)
        }
        filter => Ok(filter),
    }
}

/// 0-2, the preserved fds 3..3+N, and `own` (fds the init itself still needs).
fn kept_fds(init: &InitSpec, own: &[RawFd]) -> Vec<RawFd> {
    let preserved = (3..3i64.saturating_add(i64::from(init.preserve_fds))).filter_map(|fd| RawFd::try_from(fd).ok());
    (0..3).chain(preserved).chain(own.iter().copied()).collect()
}

/// Writing "0" to `tasks` (or cgroup.procs) moves the writer itself: no pid translation
/// needed from inside the new pid namespace. We are single-threaded, so moving this thread
/// moves the process.
fn join_cgroups(files: &[PathBuf]) -> Result<(), InitError> {
    for path in files {
        std::fs::write(path, "0").map_err(|source| InitError::JoinCgroup { path: path.clone(), source })?;
    }
    Ok(())
}

/// The runtime side's go-ahead once it wrote our id maps: until then we are nobody.
fn wait_for_id_maps(sync: &std::fs::File) -> Result<(), InitError> {
    let mut buf = [0u8; 16];
    let n = (&*sync).read(&mut buf).map_err(InitError::IdMaps)?;
    let message = String::from_utf8_lossy(&buf[..n]);
    if message != IDS_MAPPED {
        return Err(InitError::IdMapsMessage(message.into_owned()));
    }
    Ok(())
}

/// Opened read-write so the open never blocks; the later read blocks until `start` writes.
fn open_exec_fifo(init: &InitSpec) -> Result<std::fs::File, InitError> {
    open(&init.exec_fifo, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .map(std::fs::File::from)
        .map_err(|source| InitError::ExecFifo { path: init.exec_fifo.clone(), source })
}

/// Opened read-write so the open never blocks; close-on-exec, so `start` reading the other
/// end sees EOF once the user process runs.
fn open_start_fifo(init: &InitSpec) -> Result<Option<std::fs::File>, InitError> {
    let Some(path) = &init.start_fifo else {
        return Ok(None);
    };
    open(path, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .map(|fd| Some(std::fs::File::from(fd)))
        .map_err(|source| InitError::StartFifo { path: path.clone(), source })
}

/// The new root: mounts, devices, the create-time hooks, pivot_root (or chroot). Returns our
/// host pid when hooks needed the runtime side.
fn build_root(init: &InitSpec, sync: &std::fs::File, prepared: &Prepared) -> Result<Option<i32>, InitError> {
    let rootfs_err = |source| InitError::Rootfs { path: init.rootfs.clone(), source: Box::new(source) };
    let spec = &init.spec;
    let linux = spec.linux().as_ref();
    rootfs::prepare(&init.rootfs).map_err(rootfs_err)?;
    mount_all(&init.rootfs, spec.mounts().as_deref().unwrap_or(&[]), &init.cgroup_views, &prepared.idmapped)
        .map_err(|e| InitError::Mounts(Box::new(e)))?;
    create_default_devices(&init.rootfs).map_err(|e| InitError::Devices(Box::new(e)))?;
    let spec_devices = linux.and_then(|l| l.devices().as_deref()).unwrap_or(&[]);
    create_spec_devices(&init.rootfs, spec_devices, userns::has_user_namespace(spec))
        .map_err(|e| InitError::Devices(Box::new(e)))?;
    // As runc: after the mounts, before pivot_root, so hooks still see the host's paths.
    let host_pid = run_create_hooks(init, sync)?;
    if init.no_pivot {
        rootfs::move_root(&init.rootfs).map_err(rootfs_err)?;
    } else {
        rootfs::pivot(&init.rootfs).map_err(rootfs_err)?;
    }
    rootfs::set_root_propagation(linux.and_then(|l| l.rootfs_propagation().as_deref())).map_err(rootfs_err)?;
    Ok(host_pid)
}

/// Have the runtime side run the prestart and createRuntime hooks (in its namespaces) while
/// we wait, then run the createContainer hooks here, in the container's namespaces.
fn run_create_hooks(init: &InitSpec, sync: &std::fs::File) -> Result<Option<i32>, InitError> {
    let spec_hooks = init.spec.hooks().as_ref();
    let needed = [HookKind::Prestart, HookKind::CreateRuntime, HookKind::CreateContainer, HookKind::StartContainer];
    if needed.iter().all(|kind| kind.list(spec_hooks).is_empty()) {
        return Ok(None);
    }
    let mut sync = sync;
    sync.write_all(RUN_HOOKS.as_bytes()).map_err(InitError::HookSync)?;
    let mut buf = [0u8; 32];
    let n = sync.read(&mut buf).map_err(InitError::HookSync)?;
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    let pid: i32 = answer.parse().map_err(|_| InitError::HookSyncPid(answer))?;
    let state = HookState::of_spec(&init.spec, &init.id, &init.bundle).with("creating", Some(pid));
    hooks::run_all(HookKind::CreateContainer, spec_hooks, &state, Some(&init.rootfs))
        .map_err(|e| InitError::Hook(Box::new(e)))?;
    Ok(Some(pid))
}

/// After `start`, in the container: its root, its user, its working directory.
fn run_start_container_hooks(init: &InitSpec, host_pid: Option<i32>) -> Result<(), InitError> {
    let state = HookState::of_spec(&init.spec, &init.id, &init.bundle).with("created", host_pid);
    hooks::run_all(HookKind::StartContainer, init.spec.hooks().as_ref(), &state, None)
        .map_err(|e| InitError::Hook(Box::new(e)))
}

/// Masked and read-only paths, and a read-only root, once nothing more is written there.
fn finish_root(init: &InitSpec) -> Result<(), InitError> {
    let rootfs_err = |source| InitError::Rootfs { path: init.rootfs.clone(), source: Box::new(source) };
    let spec = &init.spec;
    let linux = spec.linux().as_ref();
    rootfs::mask_paths(linux.and_then(|l| l.masked_paths().as_deref()).unwrap_or(&[])).map_err(rootfs_err)?;
    rootfs::readonly_paths(linux.and_then(|l| l.readonly_paths().as_deref()).unwrap_or(&[])).map_err(rootfs_err)?;
    if spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false) {
        rootfs::make_readonly("/".as_ref()).map_err(rootfs_err)?;
    }
    Ok(())
}

fn set_hostname(spec: &Spec) -> Result<(), InitError> {
    let Some(hostname) = spec.hostname().as_deref() else {
        return Ok(());
    };
    if !namespaces::creates(spec, LinuxNamespaceType::Uts) {
        return Ok(()); // never rename the host or a shared namespace
    }
    nix::unistd::sethostname(hostname).map_err(|source| InitError::Hostname { hostname: hostname.to_string(), source })
}

fn wait_for_start(mut fifo: std::fs::File, path: &std::path::Path) -> Result<(), InitError> {
    let mut byte = [0u8; 1];
    loop {
        match fifo.read(&mut byte) {
            Ok(1) => return Ok(()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(InitError::WaitForStart { path: path.to_path_buf(), source }),
        }
    }
}
