//! Per-container cgroups on cgroup v1, hybrid (v1 controllers + an empty cgroup2 at
//! `<root>/unified`) and pure v2 hosts.
//!
//! v1 hierarchies are found, created and removed through cgroups-rs; limits and stats are
//! read and written directly (`v1_limits`, `stats_v1`), to control the order of writes and
//! to test them against temporary directories. The cgroup2 side (pure v2, and the unified
//! hierarchy of hybrid hosts) is written directly, because cgroups-rs 0.5 hard-codes
//! `/sys/fs/cgroup` as its only cgroup2 mount point: it can neither reach
//! `/sys/fs/cgroup/unified` nor a temporary directory in unit tests.

mod block_io;
mod device_filter;
mod devices;
mod freezer;
mod limits;
mod oom_watch;
pub mod stats;
mod stats_v1;
mod stats_v2;
mod tree;
mod v1;
mod v1_limits;
mod v2;

use std::path::{Component, Path, PathBuf};

use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};
use nix::unistd::Pid;

pub use block_io::{DeviceLimits, Throttle, ThrottleKind, WeightDevice};
pub use device_filter::FilterError;
pub use devices::DeviceRule;
pub use freezer::FreezerState;
pub use limits::CgroupLimits;
pub use oom_watch::{OomNews, OomWatch};
pub use stats::Stats;
pub use tree::{remove_cgroup_tree, remove_cgroup_tree_in};

/// Where the host mounts its cgroup hierarchies.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot inspect cgroup filesystem at {path}")]
    Statfs {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("invalid cgroups path {path:?}: must be non-empty and free of '..'")]
    InvalidPath { path: String },
    #[error("cannot create cgroup {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {value:?} to {path}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove cgroup {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup {path} did not become {wanted:?} in time: still {state:?}")]
    FreezerTimeout { path: PathBuf, wanted: FreezerState, state: FreezerState },
    #[error("cgroup {path} has no freezer")]
    NoFreezer { path: String },
    #[error("invalid device rules for cgroup {path}")]
    DeviceRules {
        path: PathBuf,
        #[source]
        source: FilterError,
    },
    #[error("cannot {what} the device filter of cgroup {path}{log}")]
    DeviceFilter {
        what: &'static str,
        path: PathBuf,
        /// The verifier's last line, when it refused the program.
        log: String,
        #[source]
        source: nix::Error,
    },
    #[error("no {controller} controller for cgroup {path}")]
    NoController { controller: &'static str, path: PathBuf },
    #[error("invalid memory limits: {0}")]
    BadMemorySwap(String),
    #[error("{what} is not supported on cgroup {version}")]
    Unsupported { what: &'static str, version: &'static str },
    #[error("invalid unified key {key:?}: must name a file of the container's cgroup")]
    BadUnifiedKey { key: String },
    #[error("cgroup v1 {operation} failed for {path}")]
    V1 {
        operation: &'static str,
        path: String,
        #[source]
        source: cgroups_rs::fs::error::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CgroupMode {
    /// Only v1 controller hierarchies.
    V1,
    /// v1 controllers plus a controller-less cgroup2 at `<root>/unified`.
    Hybrid,
    /// One cgroup2 hierarchy at the root.
    V2,
}

/// Tell which cgroup layout the host uses under `cgroup_root` (normally `/sys/fs/cgroup`).
pub fn detect_mode(cgroup_root: &Path) -> Result<CgroupMode, CgroupError> {
    if is_cgroup2(cgroup_root)? {
        return Ok(CgroupMode::V2);
    }
    let unified = cgroup_root.join("unified");
    if unified.is_dir() && is_cgroup2(&unified)? {
        return Ok(CgroupMode::Hybrid);
    }
    Ok(CgroupMode::V1)
}

fn is_cgroup2(path: &Path) -> Result<bool, CgroupError> {
    let stat = statfs(path).map_err(|source| CgroupError::Statfs { path: path.to_path_buf(), source })?;
    Ok(stat.filesystem_type() == CGROUP2_SUPER_MAGIC)
}

/// How a container's init joins its cgroup (see [`ContainerCgroup::init_join`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitJoin {
    /// Files the single-threaded init writes "0" to (v1 `tasks`; a cgroup.procs file when
    /// the clone into the cgroup2 directory was refused).
    pub task_files: Vec<PathBuf>,
    /// The cgroup2 directory to clone the init into.
    pub clone_into: Option<PathBuf>,
}

/// The cgroup(s) of one container: the same relative path in every hierarchy it uses.
#[derive(Debug, Clone)]
pub struct ContainerCgroup {
    cgroup_root: PathBuf,
    mode: CgroupMode,
    /// Relative to each hierarchy's root, no leading slash.
    path: String,
}

impl ContainerCgroup {
    /// Describe (without creating) the cgroup `cgroups_path` ("/a/b/c" or "a/b/c").
    pub fn new(cgroup_root: &Path, mode: CgroupMode, cgroups_path: &str) -> Result<Self, CgroupError> {
        Ok(ContainerCgroup { cgroup_root: cgroup_root.to_path_buf(), mode, path: relative_cgroup_path(cgroups_path)? })
    }

    /// The host's cgroup root with the detected layout.
    pub fn on_host(cgroups_path: &str) -> Result<Self, CgroupError> {
        let root = Path::new(DEFAULT_CGROUP_ROOT);
        Self::new(root, detect_mode(root)?, cgroups_path)
    }

    pub fn mode(&self) -> CgroupMode {
        self.mode
    }

    /// Create the directories and apply `limits`.
    pub fn create(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        match self.mode {
            CgroupMode::V1 => v1::create(&self.path, limits),
            CgroupMode::Hybrid => {
                v1::create(&self.path, limits)?;
                // Membership only: the unified hierarchy of a hybrid host has no controllers,
                // but device programs attach there all the same.
                v2::create(&self.unified_root(), &self.path, &CgroupLimits::default())?;
                devices::apply_v2(&self.unified_root().join(&self.path), &limits.devices)
            }
            CgroupMode::V2 => {
                v2::create(&self.cgroup_root, &self.path, limits)?;
                devices::apply_v2(&self.cgroup_root.join(&self.path), &limits.devices)
            }
        }
    }

    /// Every `cgroup.procs` file a container process must join (writing "0" moves the writer),
    /// once the cgroup exists. A hierarchy without the container's directory is left out: a
    /// container created before nodelet managed v1 cpuset has none there.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.hierarchy_dirs()
            .into_iter()
            .filter(|(_, dir)| dir.is_dir())
            .map(|(_, dir)| dir.join("cgroup.procs"))
            .collect()
    }

    /// How a container's new init joins this cgroup, once it exists: the v1 `tasks` files it
    /// writes "0" to, and the cgroup2 directory it is cloned into (CLONE_INTO_CGROUP). Moving
    /// a process through cgroup.procs write-locks the kernel's global threadgroup rwsem, whose
    /// write side waits for an RCU grace period (~7 ms on this machine, most of a container's
    /// start); a single-threaded process moving itself through `tasks`, or a clone into its
    /// cgroup, takes no such lock. runc pays the grace period. Hierarchies without the
    /// container's directory are left out, as in [`Self::procs_files`].
    pub fn init_join(&self) -> InitJoin {
        let task_files = match self.mode {
            CgroupMode::V1 | CgroupMode::Hybrid => {
                v1::dirs(&self.path).into_iter().filter(|dir| dir.is_dir()).map(|dir| dir.join("tasks")).collect()
            }
            CgroupMode::V2 => Vec::new(),
        };
        InitJoin { task_files, clone_into: self.v2_dir().filter(|dir| dir.is_dir()) }
    }

    /// The container's directory in each hierarchy, named by the hierarchy's mount directory
    /// ("memory", "cpu", "unified"); the name is empty for a pure v2 host.
    pub fn hierarchy_dirs(&self) -> Vec<(String, PathBuf)> {
        let mut dirs: Vec<(String, PathBuf)> = match self.mode {
            CgroupMode::V1 | CgroupMode::Hybrid => {
                v1::dirs(&self.path).into_iter().map(|dir| (self.hierarchy_name(&dir), dir)).collect()
            }
            CgroupMode::V2 => Vec::new(),
        };
        match self.mode {
            CgroupMode::V1 => {}
            CgroupMode::Hybrid => dirs.push(("unified".to_string(), self.unified_root().join(&self.path))),
            CgroupMode::V2 => dirs.push((String::new(), self.cgroup_root.join(&self.path))),
        }
        dirs
    }

    fn hierarchy_name(&self, dir: &Path) -> String {
        let relative = dir.strip_prefix(&self.cgroup_root).unwrap_or(dir);
        relative
            .components()
            .find_map(|c| match c {
                Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// The cgroup2 directory of this container (pure v2, or the unified hierarchy of a hybrid
    /// host); None on v1-only hosts.
    pub fn v2_dir(&self) -> Option<PathBuf> {
        match self.mode {
            CgroupMode::V1 => None,
            CgroupMode::Hybrid => Some(self.unified_root().join(&self.path)),
            CgroupMode::V2 => Some(self.cgroup_root.join(&self.path)),
        }
    }

    /// Processes currently in the container's cgroups.
    pub fn pids(&self) -> Vec<Pid> {
        let mut pids: Vec<Pid> = self
            .procs_files()
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .flat_map(|s| s.lines().filter_map(|l| l.trim().parse::<i32>().ok()).collect::<Vec<_>>())
            .map(Pid::from_raw)
            .collect();
        pids.sort_unstable_by_key(|p| p.as_raw());
        pids.dedup();
        pids
    }

    /// How many times the kernel OOM killer killed a process of this cgroup.
    pub fn oom_kill_count(&self) -> u64 {
        match self.mode {
            CgroupMode::V1 | CgroupMode::Hybrid => v1::oom_kill_count(&self.path),
            CgroupMode::V2 => v2::oom_kill_count(&self.cgroup_root.join(&self.path)),
        }
    }

    /// Write `limits` (only the fields set) into the live cgroup (`runc update`).
    pub fn update(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        match self.mode {
            CgroupMode::V1 | CgroupMode::Hybrid => v1::update(&self.path, limits),
            CgroupMode::V2 => v2::update(&self.cgroup_root, &self.path, limits),
        }
    }

    /// The container's resource usage, as runc's stats.
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        match self.mode {
            CgroupMode::V1 | CgroupMode::Hybrid => stats_v1::stats(&v1::controller_dirs(&self.path)),
            CgroupMode::V2 => stats_v2::stats(&self.cgroup_root.join(&self.path)),
        }
    }

    /// OOM notifications for the container's memory cgroup.
    pub fn watch_oom(&self) -> Result<OomWatch, CgroupError> {
        match self.mode {
            CgroupMode::V1 | CgroupMode::Hybrid => {
                let dir = v1::controller_dir(&self.path, "memory").ok_or_else(|| CgroupError::NoController {
                    controller: "memory",
                    path: PathBuf::from(&self.path),
                })?;
                OomWatch::v1(&dir)
            }
            CgroupMode::V2 => OomWatch::v2(&self.cgroup_root.join(&self.path)),
        }
    }

    /// Freeze every process of the container (`runc pause`), once all are frozen.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        let (freezer, dir) = self.freezer()?;
        freezer.freeze(&dir)
    }

    /// Thaw a frozen container (`runc resume`).
    pub fn thaw(&self) -> Result<(), CgroupError> {
        let (freezer, dir) = self.freezer()?;
        freezer.thaw(&dir)
    }

    pub fn freezer_state(&self) -> Result<FreezerState, CgroupError> {
        let (freezer, dir) = self.freezer()?;
        freezer.state(&dir)
    }

    /// The v1 freezer hierarchy where there is one (v1 and hybrid hosts), else cgroup2's core
    /// freezer.
    fn freezer(&self) -> Result<(freezer::Freezer, PathBuf), CgroupError> {
        match self.mode {
            CgroupMode::V1 | CgroupMode::Hybrid => v1::controller_dir(&self.path, "freezer")
                .map(|dir| (freezer::Freezer::V1, dir))
                .ok_or_else(|| CgroupError::NoFreezer { path: self.path.clone() }),
            CgroupMode::V2 => Ok((freezer::Freezer::V2, self.cgroup_root.join(&self.path))),
        }
    }

    /// Remove the container's leaf directory from every hierarchy (idempotent).
    pub fn remove(&self) -> Result<(), CgroupError> {
        if matches!(self.mode, CgroupMode::V1 | CgroupMode::Hybrid) {
            v1::remove(&self.path)?;
        }
        if let Some(dir) = self.v2_dir() {
            devices::detach_v2(&dir)?;
            v2::remove(&dir)?;
        }
        Ok(())
    }

    fn unified_root(&self) -> PathBuf {
        self.cgroup_root.join("unified")
    }
}

/// "/a/b" -> "a/b"; rejects "..", "." and empty paths so a spec cannot escape the hierarchy.
fn relative_cgroup_path(cgroups_path: &str) -> Result<String, CgroupError> {
    let invalid = || CgroupError::InvalidPath { path: cgroups_path.to_string() };
    let mut parts = Vec::new();
    for component in Path::new(cgroups_path).components() {
        match component {
            Component::RootDir => {}
            Component::Normal(part) => parts.push(part.to_str().ok_or_else(invalid)?),
            _ => return Err(invalid()),
        }
    }
    if parts.is_empty() {
        return Err(invalid());
    }
    Ok(parts.join("/"))
}

/// Write `value` to a cgroup interface file.
fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

/// The "oom_kill N" line of memory.events (v2) or memory.oom_control (v1).
fn parse_oom_kill(content: &str) -> u64 {
    content.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_are_made_relative_and_checked() {
        assert_eq!(relative_cgroup_path("/a/b/c").unwrap(), "a/b/c");
        assert_eq!(relative_cgroup_path("a/b").unwrap(), "a/b");
        assert!(relative_cgroup_path("/a/../b").is_err());
        assert!(relative_cgroup_path("/").is_err());
        assert!(relative_cgroup_path("").is_err());
    }

    #[test]
    fn oom_kill_counter_is_parsed() {
        assert_eq!(parse_oom_kill("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"), 2);
        assert_eq!(parse_oom_kill("low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n"), 1);
        assert_eq!(parse_oom_kill("nothing\n"), 0);
    }

    #[test]
    fn v2_layout_in_a_temp_dir() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        let cg = ContainerCgroup::new(root.path(), CgroupMode::V2, "/t/pod1/c1").unwrap();
        let limits = CgroupLimits {
            cpu_shares: Some(1024),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            memory_limit: Some(64 << 20),
            pids_limit: Some(32),
            ..Default::default()
        };
        // A temp dir does not create interface files on mkdir: give the leaf the ones the
        // kernel would list.
        std::fs::create_dir_all(root.path().join("t/pod1/c1")).unwrap();
        std::fs::write(root.path().join("t/cgroup.controllers"), "cpu memory pids\n").unwrap();
        std::fs::write(root.path().join("t/pod1/cgroup.controllers"), "cpu memory pids\n").unwrap();
        cg.create(&limits).unwrap();
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(read("t/pod1/c1/memory.max"), "67108864");
        assert_eq!(read("t/pod1/c1/pids.max"), "32");
        assert_eq!(read("t/pod1/c1/cpu.max"), "50000 100000");
        assert_eq!(read("t/pod1/c1/cpu.weight"), "39");
        assert_eq!(read("cgroup.subtree_control"), "+cpu +memory +pids");
        assert_eq!(read("t/pod1/cgroup.subtree_control"), "+cpu +memory +pids");
        assert_eq!(cg.procs_files(), vec![root.path().join("t/pod1/c1/cgroup.procs")]);
        std::fs::write(root.path().join("t/pod1/c1/memory.events"), "oom 1\noom_kill 1\n").unwrap();
        assert_eq!(cg.oom_kill_count(), 1);
    }

    #[test]
    fn v2_unlimited_values() {
        let root = tempfile::tempdir().unwrap();
        let cg = ContainerCgroup::new(root.path(), CgroupMode::V2, "/u/c").unwrap();
        std::fs::create_dir_all(root.path().join("u/c")).unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        std::fs::write(root.path().join("u/cgroup.controllers"), "cpu memory pids\n").unwrap();
        let limits =
            CgroupLimits { cpu_quota: Some(-1), memory_limit: Some(-1), pids_limit: Some(0), ..Default::default() };
        cg.create(&limits).unwrap();
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(read("u/c/memory.max"), "max");
        assert_eq!(read("u/c/pids.max"), "max");
        assert_eq!(read("u/c/cpu.max"), "max 100000");
    }
}
