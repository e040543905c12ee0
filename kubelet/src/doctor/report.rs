//! The doctor's report: one line per check, and whether pods can run.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CheckStatus {
    Ok,
    /// Pods run, but something is degraded (named in the detail).
    Warn,
    /// Pods cannot run.
    Fail,
}

impl fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = match self {
            CheckStatus::Ok => "ok",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "FAIL",
        };
        // Padding flags apply to the word, so tables can align it.
        f.pad(word)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub status: CheckStatus,
    pub detail: String,
}

impl Check {
    pub fn new(name: impl Into<String>, status: CheckStatus, detail: impl Into<String>) -> Self {
        Check { name: name.into(), status, detail: detail.into() }
    }

    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Check::new(name, CheckStatus::Ok, detail)
    }

    pub fn warn(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Check::new(name, CheckStatus::Warn, detail)
    }

    pub fn fail(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Check::new(name, CheckStatus::Fail, detail)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DoctorReport {
    pub checks: Vec<Check>,
}

impl DoctorReport {
    /// True when no check failed (warnings allowed).
    pub fn can_run_pods(&self) -> bool {
        self.checks.iter().all(|c| c.status != CheckStatus::Fail)
    }

    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    fn with_status(&self, status: CheckStatus) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(move |c| c.status == status)
    }
}

impl fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name_width =
            self.checks.iter().map(|c| c.name.len()).chain(std::iter::once("CHECK".len())).max().unwrap_or_default();
        writeln!(f, "{:<name_width$}  {:<6}  DETAIL", "CHECK", "STATUS")?;
        for check in &self.checks {
            writeln!(f, "{:<name_width$}  {:<6}  {}", check.name, check.status, check.detail)?;
        }
        writeln!(f)?;
        let warnings: Vec<&Check> = self.with_status(CheckStatus::Warn).collect();
        if self.can_run_pods() {
            writeln!(f, "nodelet can run pods on this host.")?;
        } else {
            writeln!(f, "nodelet cannot run pods on this host:")?;
            for check in self.with_status(CheckStatus::Fail) {
                writeln!(f, "  - {}: {}", check.name, check.detail)?;
            }
        }
        if !warnings.is_empty() {
            writeln!(f, "warnings:")?;
            for check in warnings {
                writeln!(f, "  - {}: {}", check.name, check.detail)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_an_aligned_table_and_the_reasons() {
        let report = DoctorReport {
            checks: vec![
                Check::ok("kernel", "6.18"),
                Check::fail("overlayfs", "not supported by the kernel"),
                Check::warn("btf", "missing"),
            ],
        };
        assert!(!report.can_run_pods());
        let text = report.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "CHECK      STATUS  DETAIL");
        assert_eq!(lines[1], "kernel     ok      6.18");
        assert_eq!(lines[2], "overlayfs  FAIL    not supported by the kernel");
        assert!(text.contains("cannot run pods on this host:\n  - overlayfs: not supported"));
        assert!(text.contains("warnings:\n  - btf: missing"));
    }
}
