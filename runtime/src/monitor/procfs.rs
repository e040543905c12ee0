//! Reading process facts from /proc.

use nix::unistd::Pid;

/// Start time (clock ticks since boot, field 22 of /proc/<pid>/stat); None when gone.
pub(crate) fn start_time(pid: Pid) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // after_comm starts at field 3 (state): field 22 is its 20th entry.
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is still the process that had `expected` start time (and not a zombie).
pub(crate) fn is_same_live_process(pid: Pid, expected: Option<u64>) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let zombie = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .is_some_and(|state| state == "Z" || state == "X");
    !zombie && (expected.is_none() || start_time(pid) == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_readable_and_stable() {
        let me = nix::unistd::getpid();
        let t = start_time(me).expect("start time");
        assert_eq!(start_time(me), Some(t));
        assert!(is_same_live_process(me, Some(t)));
        assert!(!is_same_live_process(me, Some(t + 1)));
    }
}
