//! Driving a runc-compatible binary (nodelet-runc, or Debian's runc for comparison) as
//! runc's callers do: a state root per binary, output in files, and every container it
//! created force-deleted on drop.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::container_support::*;

pub const NODELET_RUNC: &str = env!("CARGO_BIN_EXE_nodelet-runc");
pub const DEBIAN_RUNC: &str = "/usr/sbin/runc";

/// One runtime binary with its own --root; force-deletes every container it created on drop
/// (before TestEnv's drop kills what is left in the cgroups and removes them).
pub struct Cli {
    pub exe: PathBuf,
    pub root: PathBuf,
    out_dir: PathBuf,
    created: std::cell::RefCell<Vec<String>>,
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Cli {
    pub fn new(env: &TestEnv, exe: &str, name: &str) -> Cli {
        let out_dir = env.dir.path().join(format!("{name}-out"));
        std::fs::create_dir_all(&out_dir).expect("out dir");
        Cli {
            exe: PathBuf::from(exe),
            root: env.dir.path().join(format!("{name}-root")),
            out_dir,
            created: Default::default(),
        }
    }

    /// Run a command. stdout and stderr go to files, not pipes: a container created by
    /// `create` inherits them and would keep a pipe open after the command exits.
    pub fn run(&self, args: &[&str]) -> Output {
        let n = rand::random::<u32>();
        let out_path = self.out_dir.join(format!("{n}.out"));
        let err_path = self.out_dir.join(format!("{n}.err"));
        let status = Command::new(&self.exe)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).expect("stdout file"))
            .stderr(std::fs::File::create(&err_path).expect("stderr file"))
            .status()
            .expect("run runtime binary");
        if matches!(args.first(), Some(&"create") | Some(&"run")) {
            if let Some(id) = args.last() {
                self.created.borrow_mut().push(id.to_string());
            }
        }
        Output {
            code: status.code().unwrap_or(-1),
            stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        }
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.code, 0, "{} {args:?} failed: {}", self.exe.display(), out.stderr);
        out.stdout
    }

    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).expect("state is JSON")
    }

    pub fn wait_status(&self, id: &str, status: &str) -> Value {
        let mut last = Value::Null;
        wait_until(Duration::from_secs(10), || {
            last = self.state(id);
            last["status"] == status
        });
        last
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        for id in self.created.borrow().iter() {
            let _ = self.run(&["delete", "--force", id]);
        }
    }
}

/// A bundle running `args` under this test's cgroup parent.
pub fn make_bundle(env: &TestEnv, id: &str, args: &[&str]) -> PathBuf {
    let (bundle, mut spec) = env.bundle(id, args);
    spec.set_annotations(Some([("org.example.test".to_string(), id.to_string())].into_iter().collect()));
    write_bundle(&bundle, &spec);
    bundle
}

pub fn unique(name: &str) -> String {
    format!("{name}-{}", random_suffix())
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
