//! The probe verdicts of one pod, as kubelet's results managers keep them: by container
//! attempt and probe. Probe tasks write, the pod worker reads a snapshot ([`ProbeView`]) and
//! is woken only when a verdict changes, not at every probe run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;

use super::{ProbeKind, Verdict};

/// The verdicts of one container attempt; None where its probe has not decided yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdicts {
    pub startup: Option<Verdict>,
    pub liveness: Option<Verdict>,
    pub readiness: Option<Verdict>,
}

impl Verdicts {
    pub fn get(&self, kind: ProbeKind) -> Option<Verdict> {
        match kind {
            ProbeKind::Startup => self.startup,
            ProbeKind::Liveness => self.liveness,
            ProbeKind::Readiness => self.readiness,
        }
    }

    fn slot(&mut self, kind: ProbeKind) -> &mut Option<Verdict> {
        match kind {
            ProbeKind::Startup => &mut self.startup,
            ProbeKind::Liveness => &mut self.liveness,
            ProbeKind::Readiness => &mut self.readiness,
        }
    }
}

/// A snapshot of a pod's verdicts: part of what the worker observes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeView {
    attempts: BTreeMap<(String, u32), Verdicts>,
}

impl ProbeView {
    pub fn get(&self, container: &str, attempt: u32) -> Verdicts {
        self.attempts.get(&(container.to_string(), attempt)).copied().unwrap_or_default()
    }

    /// Record a verdict; whether it changed anything.
    pub fn set(&mut self, container: &str, attempt: u32, kind: ProbeKind, verdict: Verdict) -> bool {
        let slot = self.attempts.entry((container.to_string(), attempt)).or_default().slot(kind);
        slot.replace(verdict) != Some(verdict)
    }

    /// The probe whose failure means the attempt must be killed: liveness, else startup (the
    /// order kubelet checks them in).
    pub fn failed(&self, container: &str, attempt: u32) -> Option<ProbeKind> {
        let verdicts = self.get(container, attempt);
        [ProbeKind::Liveness, ProbeKind::Startup].into_iter().find(|&k| verdicts.get(k) == Some(Verdict::Failure))
    }

    fn retain(&mut self, mut keep: impl FnMut(&str, u32) -> bool) {
        self.attempts.retain(|(container, attempt), _| keep(container, *attempt));
    }
}

pub struct ProbeResults {
    view: Mutex<ProbeView>,
    changed: watch::Sender<()>,
    /// (container, message) pairs already logged: one line per container and cause, not one
    /// per probe period.
    logged: Mutex<BTreeSet<(String, String)>>,
}

/// Bounds what `logged` keeps for a pod whose probes fail with ever new messages (an exec
/// probe printing a timestamp): past this, failures are logged at debug only.
const MAX_LOGGED: usize = 64;

impl Default for ProbeResults {
    fn default() -> Self {
        ProbeResults { view: Mutex::default(), changed: watch::channel(()).0, logged: Mutex::default() }
    }
}

/// A panic while holding a lock leaves plain data behind: keep using it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ProbeResults {
    /// Fires whenever a verdict changes.
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }

    pub fn set(&self, container: &str, attempt: u32, kind: ProbeKind, verdict: Verdict) {
        if lock(&self.view).set(container, attempt, kind, verdict) {
            self.changed.send_replace(());
        }
    }

    pub fn view(&self) -> ProbeView {
        lock(&self.view).clone()
    }

    /// Forget the verdicts of attempts `keep` rejects (stopped or replaced containers).
    pub fn retain(&self, keep: impl FnMut(&str, u32) -> bool) {
        lock(&self.view).retain(keep);
    }

    /// True the first time `message` comes for `container` (while fewer than [`MAX_LOGGED`]
    /// have come).
    pub fn first_time(&self, container: &str, message: &str) -> bool {
        let mut logged = lock(&self.logged);
        logged.len() < MAX_LOGGED && logged.insert((container.to_string(), message.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakes_only_when_a_verdict_changes() {
        let results = ProbeResults::default();
        let mut changes = results.subscribe();
        results.set("app", 0, ProbeKind::Readiness, Verdict::Failure);
        assert!(changes.has_changed().expect("open"));
        changes.borrow_and_update();
        results.set("app", 0, ProbeKind::Readiness, Verdict::Failure);
        assert!(!changes.has_changed().expect("open"), "the same verdict again");
        results.set("app", 0, ProbeKind::Readiness, Verdict::Success);
        assert!(changes.has_changed().expect("open"));
        assert_eq!(results.view().get("app", 0).readiness, Some(Verdict::Success));
        assert_eq!(results.view().get("app", 1), Verdicts::default(), "another attempt starts afresh");
    }

    #[test]
    fn liveness_failure_is_named_before_startup_failure() {
        let mut view = ProbeView::default();
        assert_eq!(view.failed("app", 0), None);
        view.set("app", 0, ProbeKind::Startup, Verdict::Failure);
        assert_eq!(view.failed("app", 0), Some(ProbeKind::Startup));
        view.set("app", 0, ProbeKind::Liveness, Verdict::Failure);
        assert_eq!(view.failed("app", 0), Some(ProbeKind::Liveness));
        view.set("app", 0, ProbeKind::Readiness, Verdict::Failure);
        assert_eq!(view.failed("app", 1), None);
    }

    #[test]
    fn retain_forgets_other_attempts_and_messages_log_once() {
        let results = ProbeResults::default();
        results.set("app", 0, ProbeKind::Liveness, Verdict::Failure);
        results.set("app", 1, ProbeKind::Liveness, Verdict::Success);
        results.retain(|_, attempt| attempt == 1);
        assert_eq!(results.view().get("app", 0), Verdicts::default());
        assert_eq!(results.view().get("app", 1).liveness, Some(Verdict::Success));
        assert!(results.first_time("app", "exec is not supported"));
        assert!(!results.first_time("app", "exec is not supported"));
        assert!(results.first_time("sidecar", "exec is not supported"));
    }
}
