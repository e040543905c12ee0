//! `events` through nodelet-runc: one stats object with runc's shape (compared key by key
//! with Debian's runc), a stream of stats every interval, and OOM notifications from the
//! kernel, ending when the container stops.

mod container_support;
mod runc_support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use container_support::*;
use runc_support::*;
use serde_json::Value;

/// A running `events` stream: its lines arrive on a channel; killed (by pid) on drop.
struct Stream {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Stream {
    fn start(cli: &Cli, args: &[&str]) -> Stream {
        let mut child = Command::new(&cli.exe)
            .arg("--root")
            .arg(&cli.root)
            .arg("events")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn events");
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Stream { child, lines }
    }

    fn next(&self, timeout: Duration) -> Value {
        let line = self.lines.recv_timeout(timeout).expect("an event within the timeout");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("event {line:?}: {e}"))
    }

    /// The stream's exit code once it ended on its own.
    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every key path of a JSON document ("data.memory.usage.limit"), maps of values by name
/// (raw memory.stat, hugetlb sizes) left out since they vary with the kernel's mood.
fn key_paths(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let Value::Object(map) = value {
        for (key, child) in map {
            let path = format!("{prefix}.{key}");
            out.insert(path.clone());
            if !matches!(key.as_str(), "raw" | "hugetlb") {
                key_paths(child, &path, out);
            }
        }
    }
}

#[test]
fn stats_once_with_runcs_shape() {
    assert!(Path::new(DEBIAN_RUNC).exists(), "{DEBIAN_RUNC} is missing: apt-get install -y runc");
    let env = TestEnv::new();
    let ours = Cli::new(&env, NODELET_RUNC, "nodelet");
    let theirs = Cli::new(&env, DEBIAN_RUNC, "runc");
    let mut shapes = Vec::new();
    for cli in [&ours, &theirs] {
        let id = unique("stats");
        let (bundle, mut spec) = env.bundle(&id, &["sleep", "1000"]);
        set_limits(&mut spec, 64 << 20, 50);
        write_bundle(&bundle, &spec);
        cli.ok(&["run", "-d", "--bundle", path_str(&bundle), &id]);
        // Debian's runc may still count its own init helper for a moment after `run -d`.
        let mut text = String::new();
        wait_until(Duration::from_secs(5), || {
            text = cli.ok(&["events", "--stats", &id]);
            serde_json::from_str::<Value>(&text).is_ok_and(|e| e["data"]["pids"]["current"] == 1)
        });
        assert_eq!(text.lines().count(), 1, "one compact line: {text}");
        let event: Value = serde_json::from_str(&text).expect("event JSON");
        assert_eq!(event["type"], "stats", "{}", cli.exe.display());
        assert_eq!(event["id"], id.as_str());
        let data = &event["data"];
        assert_eq!(data["pids"]["current"], 1, "{}: {data}", cli.exe.display());
        assert_eq!(data["pids"]["limit"], 50, "{}", cli.exe.display());
        assert_eq!(data["memory"]["usage"]["limit"], 64 << 20, "{}", cli.exe.display());
        assert!(data["memory"]["usage"]["usage"].as_u64().unwrap_or(0) > 0, "{}", cli.exe.display());
        assert!(data["cpu"]["usage"]["total"].as_u64().unwrap_or(0) > 0, "{}", cli.exe.display());
        assert!(data["memory"]["raw"]["rss"].is_u64() || data["memory"]["raw"]["anon"].is_u64());
        let mut keys = BTreeSet::new();
        key_paths(&event, "", &mut keys);
        shapes.push(keys);
        cli.ok(&["delete", "--force", &id]);
    }
    let only_ours: Vec<_> = shapes[0].difference(&shapes[1]).collect();
    let only_theirs: Vec<_> = shapes[1].difference(&shapes[0]).collect();
    assert!(only_ours.is_empty() && only_theirs.is_empty(), "ours only: {only_ours:?}, runc only: {only_theirs:?}");
}

#[test]
fn stream_of_stats_ends_with_the_container() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = unique("stream");
    let bundle = make_bundle(&env, &id, &["sleep", "1000"]);
    cli.ok(&["run", "-d", "--bundle", path_str(&bundle), &id]);
    let mut stream = Stream::start(&cli, &["--interval", "200ms", &id]);
    let started = Instant::now();
    for _ in 0..3 {
        let event = stream.next(Duration::from_secs(10));
        assert_eq!(event["type"], "stats");
        assert_eq!(event["id"], id.as_str());
        assert_eq!(event["data"]["pids"]["current"], 1);
    }
    assert!(started.elapsed() >= Duration::from_millis(500), "three events 200ms apart came too fast");
    cli.ok(&["kill", &id, "KILL"]);
    assert_eq!(stream.wait_exit(Duration::from_secs(10)), Some(0), "the stream ends when the container stops");
    cli.ok(&["delete", &id]);

    let stopped = cli.run(&["events", "--stats", "nope"]);
    assert_eq!(stopped.code, 1);
    assert!(stopped.stderr.contains("container does not exist"), "{}", stopped.stderr);
    let bad = cli.run(&["events", "--interval", "5", &id]);
    assert_eq!(bad.code, 2, "clap refuses a duration without unit: {}", bad.stderr);
}

#[test]
fn oom_kills_are_reported() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = unique("oom");
    // The shell buffers an endless command substitution until the OOM killer ends it.
    let (bundle, mut spec) = env.bundle(&id, &["sh", "-c", "a=$(yes); echo survived"]);
    set_limits(&mut spec, 16 << 20, 100);
    write_bundle(&bundle, &spec);
    cli.ok(&["create", "--bundle", path_str(&bundle), &id]);
    let mut stream = Stream::start(&cli, &["--interval", "1h", &id]);
    // The stream is set up once it answers: give it until its registration is in place by
    // waiting for the process to have opened the eventfd (or memory.events).
    let pid = stream.child.id();
    assert!(wait_until(Duration::from_secs(10), || std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| fds.filter_map(|f| f.ok()).filter_map(|f| std::fs::read_link(f.path()).ok()).any(|l| {
            let l = l.display().to_string();
            l.contains("eventfd") || l.ends_with("memory.events")
        }))
        .unwrap_or(false)));
    cli.ok(&["start", &id]);
    let event = stream.next(Duration::from_secs(30));
    assert_eq!(event["type"], "oom", "{event}");
    assert_eq!(event["id"], id.as_str());
    assert!(event.get("data").is_none(), "runc sends no data with an oom event: {event}");
    cli.wait_status(&id, "stopped");
    cli.ok(&["delete", &id]);
    // The eventfd fires when the cgroup is removed: the stream ends.
    assert_eq!(stream.wait_exit(Duration::from_secs(10)), Some(0));
}
