//! Node conditions as kubelet's condition setters compute them: heartbeat time on every update,
//! transition time only when the status flips, conditions owned by others left alone.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::NodeCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub const READY: &str = "Ready";
pub const MEMORY_PRESSURE: &str = "MemoryPressure";
pub const DISK_PRESSURE: &str = "DiskPressure";
pub const PID_PRESSURE: &str = "PIDPressure";

/// Whether the rest of the agent can run pods (runtime up, pod network ready).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeReadiness {
    pub ready: bool,
    /// Short cause when not ready, e.g. "container runtime network not ready".
    pub reason: String,
    /// Details, appended to the reason in the condition message.
    pub message: String,
}

impl NodeReadiness {
    pub fn ready() -> Self {
        NodeReadiness { ready: true, reason: String::new(), message: String::new() }
    }

    pub fn not_ready(reason: impl Into<String>, message: impl Into<String>) -> Self {
        NodeReadiness { ready: false, reason: reason.into(), message: message.into() }
    }

    fn not_ready_message(&self) -> String {
        match (self.reason.is_empty(), self.message.is_empty()) {
            (true, true) => "node is not ready".to_string(),
            (false, true) => self.reason.clone(),
            (true, false) => self.message.clone(),
            (false, false) => format!("{}: {}", self.reason, self.message),
        }
    }
}

/// The (status, reason, message) kubelet reports for each condition it owns, in the order
/// its setters append them.
fn owned_conditions(readiness: &NodeReadiness) -> [(&'static str, &'static str, String, String); 4] {
    let ready = if readiness.ready {
        ("True", "KubeletReady".to_string(), "kubelet is posting ready status".to_string())
    } else {
        ("False", "KubeletNotReady".to_string(), readiness.not_ready_message())
    };
    [
        (
            MEMORY_PRESSURE,
            "False",
            "KubeletHasSufficientMemory".to_string(),
            "kubelet has sufficient memory available".to_string(),
        ),
        (DISK_PRESSURE, "False", "KubeletHasNoDiskPressure".to_string(), "kubelet has no disk pressure".to_string()),
        (
            PID_PRESSURE,
            "False",
            "KubeletHasSufficientPID".to_string(),
            "kubelet has sufficient PID available".to_string(),
        ),
        (READY, ready.0, ready.1, ready.2),
    ]
}

/// The conditions to report now, given what the Node currently has.
pub fn update_conditions(
    current: &[NodeCondition],
    readiness: &NodeReadiness,
    now: DateTime<Utc>,
) -> Vec<NodeCondition> {
    let mut conditions = current.to_vec();
    for (type_, status, reason, message) in owned_conditions(readiness) {
        let previous = conditions.iter().position(|c| c.type_ == type_);
        let transition = previous
            .map(|i| &conditions[i])
            .filter(|c| c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        let condition = NodeCondition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: Some(reason),
            message: Some(message),
            last_heartbeat_time: Some(Time(now)),
            last_transition_time: Some(transition),
        };
        match previous {
            Some(i) => conditions[i] = condition,
            None => conditions.push(condition),
        }
    }
    conditions
}

/// Whether two condition lists differ in anything but heartbeat times (kubelet's
/// `nodeConditionsHaveChanged`: a heartbeat alone is not a change).
pub fn conditions_changed(old: &[NodeCondition], new: &[NodeCondition]) -> bool {
    let without_heartbeat = |c: &NodeCondition| NodeCondition { last_heartbeat_time: None, ..c.clone() };
    old.len() != new.len() || old.iter().zip(new).any(|(a, b)| without_heartbeat(a) != without_heartbeat(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + seconds, 0).single().expect("valid time")
    }

    fn find<'a>(conditions: &'a [NodeCondition], type_: &str) -> &'a NodeCondition {
        conditions.iter().find(|c| c.type_ == type_).expect("condition present")
    }

    #[test]
    fn first_report_sets_all_four_in_kubelet_order() {
        let conditions = update_conditions(&[], &NodeReadiness::ready(), at(0));
        let types: Vec<_> = conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [MEMORY_PRESSURE, DISK_PRESSURE, PID_PRESSURE, READY]);
        let ready = find(&conditions, READY);
        assert_eq!(ready.status, "True");
        assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
        assert_eq!(ready.message.as_deref(), Some("kubelet is posting ready status"));
        assert_eq!(ready.last_transition_time, Some(Time(at(0))));
        let memory = find(&conditions, MEMORY_PRESSURE);
        assert_eq!(memory.status, "False");
        assert_eq!(memory.reason.as_deref(), Some("KubeletHasSufficientMemory"));
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let first = update_conditions(&[], &NodeReadiness::ready(), at(0));
        let second = update_conditions(&first, &NodeReadiness::ready(), at(10));
        let ready = find(&second, READY);
        assert_eq!(ready.last_heartbeat_time, Some(Time(at(10))));
        assert_eq!(ready.last_transition_time, Some(Time(at(0))));
        assert!(!conditions_changed(&first, &second));

        let not_ready = NodeReadiness::not_ready("container runtime network not ready", "");
        let third = update_conditions(&second, &not_ready, at(20));
        let ready = find(&third, READY);
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("KubeletNotReady"));
        assert_eq!(ready.message.as_deref(), Some("container runtime network not ready"));
        assert_eq!(ready.last_transition_time, Some(Time(at(20))));
        assert_eq!(find(&third, DISK_PRESSURE).last_transition_time, Some(Time(at(0))));
        assert!(conditions_changed(&second, &third));
    }

    #[test]
    fn keeps_conditions_owned_by_others_and_flips_unknown() {
        let foreign =
            NodeCondition { type_: "NetworkUnavailable".into(), status: "False".into(), ..NodeCondition::default() };
        let unknown_ready = NodeCondition {
            type_: READY.into(),
            status: "Unknown".into(),
            reason: Some("NodeStatusUnknown".into()),
            last_transition_time: Some(Time(at(0))),
            ..NodeCondition::default()
        };
        let conditions = update_conditions(&[foreign.clone(), unknown_ready], &NodeReadiness::ready(), at(30));
        assert_eq!(conditions[0], foreign);
        assert_eq!(conditions[1].type_, READY);
        assert_eq!(conditions[1].last_transition_time, Some(Time(at(30))));
        assert_eq!(conditions.len(), 5);
    }

    #[test]
    fn not_ready_message_joins_reason_and_details() {
        let readiness = NodeReadiness::not_ready("container runtime not ready", "monitor down");
        let conditions = update_conditions(&[], &readiness, at(0));
        assert_eq!(find(&conditions, READY).message.as_deref(), Some("container runtime not ready: monitor down"));
    }
}
