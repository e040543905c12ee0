//! /proc/self/mountinfo lines, the fields the checks need.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: String,
    pub fs_type: String,
    pub super_options: Vec<String>,
}

/// Parse mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mount> {
    let (before, after) = line.split_once(" - ")?;
    let mount_point = before.split_whitespace().nth(4)?;
    let mut after = after.split_whitespace();
    let fs_type = after.next()?;
    let _source = after.next()?;
    let super_options =
        after.next().unwrap_or_default().split(',').filter(|o| !o.is_empty()).map(str::to_string).collect();
    Some(Mount { mount_point: unescape(mount_point), fs_type: fs_type.to_string(), super_options })
}

/// The kernel escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|digits| std::str::from_utf8(digits).ok().and_then(|d| u8::from_str_radix(d, 8).ok()));
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_and_unescapes() {
        let text = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime shared:5 - cgroup cgroup rw,cpu,cpuacct\n\
                    41 31 0:38 / /mnt/with\\040space rw - tmpfs tmpfs rw\n\
                    garbage\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].mount_point, "/sys/fs/cgroup/cpu");
        assert_eq!(mounts[0].fs_type, "cgroup");
        assert_eq!(mounts[0].super_options, ["rw", "cpu", "cpuacct"]);
        assert_eq!(mounts[1].mount_point, "/mnt/with space");
    }
}
