use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's docker-registry on 127.0.0.1 with the test images pushed (through
/// tests/scripts/registry.sh and build-test-images.sh). Stopped on drop.
pub struct TestRegistry {
    dir: PathBuf,
    pub host: String,
}

impl TestRegistry {
    pub fn start(dir: &Path) -> TestRegistry {
        let port = free_port();
        let registry = TestRegistry { dir: dir.to_path_buf(), host: format!("127.0.0.1:{port}") };
        run_script("registry.sh", &[&"start".into(), &dir.display().to_string(), &port.to_string()]);
        run_script("build-test-images.sh", &[&registry.host]);
        registry
    }

    pub fn image(&self, name: &str) -> String {
        format!("{}/nodelet/{name}", self.host)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = Command::new(scripts_dir().join("registry.sh")).arg("stop").arg(&self.dir).status();
    }
}

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts")
}

fn run_script(name: &str, args: &[&String]) {
    let status = Command::new(scripts_dir().join(name))
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("running tests/scripts/{name}: {e}"));
    assert!(status.success(), "tests/scripts/{name} {args:?} failed: {status}");
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port on 127.0.0.1");
    listener.local_addr().expect("local address").port()
}
