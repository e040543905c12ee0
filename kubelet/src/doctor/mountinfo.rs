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
    Some(Mount {
        mount_point: nodelet_runtime::mountinfo::unescape(mount_point),
        fs_type: fs_type.to_string(),
        super_options,
    })
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
