//! Shared fixture of the pod network tests: a private bridge, CIDR and directories per test,
//! and a guard that removes every host object the test made, even when it fails.

#![allow(dead_code)] // each test file uses a different part of it

use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use ipnet::Ipv4Net;
use nix::mount::MntFlags;
use nix::sched::CloneFlags;
use nodelet_runtime::network::{host_veth_name, NetworkConfig, PodNetwork};

pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the pod network tests create bridges, veths and network namespaces: run them as root"
    );
}

fn random_hex(len: usize) -> String {
    let bytes: [u8; 8] = rand::random();
    hex::encode(bytes)[..len].to_string()
}

/// Everything one test owns. `subnet` must be unique per test across all test files: it
/// selects 10.244.<subnet>.0/<prefix_len>.
pub struct Fixture {
    pub config: NetworkConfig,
    tag: String,
    links: Mutex<Vec<String>>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new(subnet: u8, prefix_len: u8) -> Fixture {
        require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let tag = random_hex(8);
        let config = NetworkConfig {
            bridge: format!("nlb{tag}"),
            pod_cidr: Ipv4Net::new(Ipv4Addr::new(10, 244, subnet, 0), prefix_len).expect("cidr"),
            netns_dir: dir.path().join("netns"),
            state_dir: dir.path().join("state"),
            mtu: 1400,
            // Never the host's firewall or forwarding (network_egress.rs tests them in a netns).
            masquerade: false,
            cluster_cidr: None,
        };
        Fixture { config, tag, links: Mutex::new(Vec::new()), _dir: dir }
    }

    pub async fn network(&self) -> PodNetwork {
        PodNetwork::new(self.config.clone()).await.expect("PodNetwork::new")
    }

    /// A sandbox id unique to this test; its host veth is removed by the guard.
    pub fn id(&self, name: &str) -> String {
        let id = format!("t{}-{name}", self.tag);
        self.links.lock().unwrap().push(host_veth_name(&id));
        id
    }

    /// Register an extra host link the test makes, for the guard to remove.
    pub fn own_link(&self, name: &str) {
        self.links.lock().unwrap().push(name.to_string());
    }

    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.config.netns_dir.join(id)
    }

    pub fn ip_file(&self, ip: Ipv4Addr) -> PathBuf {
        self.config.state_dir.join(ip.to_string())
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for link in self.links.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if link_exists(link, None) {
                let _ = Command::new("ip").args(["link", "del", link]).status();
            }
        }
        if let Ok(entries) = fs::read_dir(&self.config.netns_dir) {
            for entry in entries.flatten() {
                while nix::mount::umount2(&entry.path(), MntFlags::MNT_DETACH).is_ok() {}
                let _ = fs::remove_file(entry.path());
            }
        }
        if link_exists(&self.config.bridge, None) {
            let _ = Command::new("ip").args(["link", "del", &self.config.bridge]).status();
        }
        // PodNetwork::new made the netns directory a bind mount of itself.
        while nix::mount::umount2(&self.config.netns_dir, MntFlags::MNT_DETACH).is_ok() {}
    }
}

/// Run `ip <args>` in the host or, with `netns`, inside that namespace file; stdout on success.
pub fn ip(netns: Option<&Path>, args: &[&str]) -> Result<String, String> {
    let mut cmd = match netns {
        Some(path) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", path.display())).arg("ip");
            c
        }
        None => Command::new("ip"),
    };
    let out = cmd.args(args).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

pub fn link_exists(name: &str, netns: Option<&Path>) -> bool {
    ip(netns, &["link", "show", "dev", name]).is_ok()
}

/// Whether `path` appears as a mount point in this process's mount table.
pub fn is_mount_point(path: &Path) -> bool {
    let table = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let wanted = path.to_string_lossy();
    table.lines().any(|line| line.split(' ').nth(4) == Some(wanted.as_ref()))
}

/// Run `work` on a fresh thread inside the namespace bound at `netns` (the thread ends
/// after, so no other code runs in that namespace).
pub fn in_netns<T: Send + 'static>(netns: &Path, work: impl FnOnce() -> T + Send + 'static) -> T {
    let file = fs::File::open(netns).expect("open netns");
    std::thread::spawn(move || {
        nix::sched::setns(file.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
        work()
    })
    .join()
    .expect("thread in netns panicked")
}
