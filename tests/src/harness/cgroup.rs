use std::path::{Path, PathBuf};

/// A cgroup of the test's own: `/nodelet-e2e-<suffix>` in the cgroup2 hierarchy (where the
/// Service hook attaches) and, on cgroup v1 or hybrid hosts, in every v1 controller (where
/// the pods' cgroups go). Removed on drop, deepest directories first.
pub struct TestCgroup {
    pub name: String,
    /// The cgroup2 directory: `/sys/fs/cgroup/unified/<name>` on hybrid hosts.
    pub cgroup2_dir: PathBuf,
}

impl TestCgroup {
    pub fn create(name: &str) -> TestCgroup {
        let cgroup2_root = if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
            PathBuf::from("/sys/fs/cgroup/unified")
        } else {
            PathBuf::from("/sys/fs/cgroup")
        };
        let cgroup2_dir = cgroup2_root.join(name);
        std::fs::create_dir_all(&cgroup2_dir).unwrap_or_else(|e| panic!("creating {}: {e}", cgroup2_dir.display()));
        TestCgroup { name: name.to_string(), cgroup2_dir }
    }

    /// The cgroup path as nodelet's --cgroup-root takes it.
    pub fn path(&self) -> String {
        format!("/{}", self.name)
    }

    /// Every directory of this cgroup, in every hierarchy mounted under /sys/fs/cgroup.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else { return Vec::new() };
        let mut dirs: Vec<PathBuf> =
            entries.flatten().map(|e| e.path().join(&self.name)).filter(|p| p.is_dir()).collect();
        if self.cgroup2_dir.is_dir() && !dirs.contains(&self.cgroup2_dir) {
            dirs.push(self.cgroup2_dir.clone());
        }
        dirs
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Whatever still runs in the test's cgroup was started by the test (its pods'
        // containers): end it, so the directories can go.
        for dir in self.dirs() {
            kill_tree(&dir);
        }
        for dir in self.dirs() {
            remove_tree(&dir);
        }
    }
}

fn kill_tree(dir: &Path) {
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                kill_tree(&entry.path());
            }
        }
    }
}

/// rmdir children before parents; cgroup directories cannot be removed recursively.
fn remove_tree(dir: &Path) {
    // A killed process leaves its cgroup a moment after SIGKILL; retry briefly.
    for _ in 0..50 {
        if try_remove_tree(dir) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        eprintln!("cleanup: cannot remove cgroup {}: {e}", dir.display());
    }
}

fn try_remove_tree(dir: &Path) -> bool {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                try_remove_tree(&entry.path());
            }
        }
    }
    std::fs::remove_dir(dir).is_ok() || !dir.exists()
}
