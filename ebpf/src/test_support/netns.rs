//! A network namespace of the test's own, for addresses that must never be dialled in the
//! host's: the host has one IPv6 loopback address (::1), so IPv6 Services and backends
//! live in a namespace with nothing but its loopback, where a connection the programs
//! failed to translate finds no route instead of the host's default one.

use std::fs::File;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::thread;

/// `ip netns add nodelet-test-<random>` with its loopback up; deleted on drop.
pub struct TestNetns {
    pub name: String,
    /// The namespace's bind mount, `/run/netns/<name>`.
    pub path: PathBuf,
}

impl TestNetns {
    pub fn create() -> TestNetns {
        let name = format!("nodelet-test-{:08x}", rand::random::<u32>());
        ip(&["netns", "add", &name]);
        let netns = TestNetns { path: PathBuf::from("/run/netns").join(&name), name };
        ip(&["-n", &netns.name, "link", "set", "lo", "up"]);
        netns
    }

    /// Add `address` to the namespace's loopback, as a host address (/32 or /128), usable
    /// at once (no duplicate address detection).
    pub fn add_address(&self, address: IpAddr) {
        let prefix = if address.is_ipv4() { 32 } else { 128 };
        let cidr = format!("{address}/{prefix}");
        let mut args = vec!["-n", self.name.as_str(), "addr", "add", cidr.as_str(), "dev", "lo"];
        if address.is_ipv6() {
            args.push("nodad");
        }
        ip(&args);
    }

    /// Run `f` on a thread that entered the namespace: the sockets it opens live there,
    /// whichever thread uses them afterwards.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let netns = File::open(&self.path).unwrap_or_else(|e| panic!("open {}: {e}", self.path.display()));
        thread::scope(|scope| {
            scope
                .spawn(move || {
                    nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                        .unwrap_or_else(|e| panic!("enter the test network namespace: {e}"));
                    f()
                })
                .join()
                .expect("the thread in the test network namespace panicked")
        })
    }

    /// `program` run inside the namespace. `nsenter --net` changes nothing else (unlike
    /// `ip netns exec`, which remounts /sys): the cgroup files stay where they are.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command.arg(format!("--net={}", self.path.display())).arg(program);
        command
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let status = Command::new("ip").args(["netns", "del", &self.name]).status();
        if !status.as_ref().is_ok_and(|s| s.success()) {
            eprintln!("could not delete test network namespace {}: {status:?}", self.name);
        }
    }
}

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(output.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
}
