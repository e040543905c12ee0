//! Kernel version: 5.10 for the BPF and namespace features nodelet needs; 5.18 for
//! bpf_set_retval, which the service hook uses to refuse connections to Services without
//! endpoints.

use std::path::Path;

use super::read_host_file;
use super::report::Check;

pub const NAME: &str = "kernel";
const REQUIRED: (u32, u32) = (5, 10);
const FOR_SERVICE_REJECT: (u32, u32) = (5, 18);

/// (major, minor) of a release string like "6.18.44-fc-v669".
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

pub fn check_kernel(host_root: &Path) -> Check {
    let release = match read_host_file(host_root, "proc/sys/kernel/osrelease") {
        Ok(text) => text.trim().to_string(),
        Err(detail) => return Check::fail(NAME, detail),
    };
    match parse_release(&release) {
        None => Check::fail(NAME, format!("cannot parse kernel release {release:?}")),
        Some(version) if version < REQUIRED => {
            Check::fail(NAME, format!("{release} is older than {}.{}", REQUIRED.0, REQUIRED.1))
        }
        Some(version) if version < FOR_SERVICE_REJECT => Check::warn(
            NAME,
            format!(
                "{release}: Services without endpoints need {}.{} to refuse connections",
                FOR_SERVICE_REJECT.0, FOR_SERVICE_REJECT.1
            ),
        ),
        Some(_) => Check::ok(NAME, release),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_releases() {
        assert_eq!(parse_release("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_release("5.10.0-28-amd64\n"), Some((5, 10)));
        assert_eq!(parse_release("6.1+"), Some((6, 1)));
        assert_eq!(parse_release("garbage"), None);
    }
}
