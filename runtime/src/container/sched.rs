//! `process.ioPriority` and `process.scheduler` (runtime-spec 1.2), set by the init and by
//! exec'd processes before they drop capabilities, as runc 1.2 does.

use oci_spec::runtime::{IOPriorityClass, LinuxSchedulerFlag, LinuxSchedulerPolicy, Process, Scheduler};

use crate::sys::{self, SchedAttr};

#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    #[error("process.ioPriority.priority {0} is out of range (0 to 7)")]
    IoPriorityRange(i64),
    #[error("cannot set process.ioPriority")]
    IoPriority(#[source] nix::Error),
    #[error("process.scheduler.{field} {value} is invalid for policy {policy}: {reason}")]
    Invalid { field: &'static str, value: i64, policy: String, reason: &'static str },
    #[error("cannot set process.scheduler (policy {policy})")]
    Scheduler {
        policy: String,
        #[source]
        source: nix::Error,
    },
}

/// The spec's checks, before anything is made.
pub(crate) fn validate(process: &Process) -> Result<(), SchedError> {
    io_priority_value(process)?;
    if let Some(scheduler) = process.scheduler() {
        sched_attr(scheduler)?;
    }
    Ok(())
}

/// Apply both, when given.
pub(crate) fn apply(process: &Process) -> Result<(), SchedError> {
    if let Some(value) = io_priority_value(process)? {
        sys::set_io_priority(value).map_err(SchedError::IoPriority)?;
    }
    if let Some(scheduler) = process.scheduler() {
        let attr = sched_attr(scheduler)?;
        sys::set_scheduler(&attr)
            .map_err(|source| SchedError::Scheduler { policy: scheduler.policy().to_string(), source })?;
    }
    Ok(())
}

/// `class << 13 | priority`, the kernel's IOPRIO_PRIO_VALUE.
fn io_priority_value(process: &Process) -> Result<Option<i32>, SchedError> {
    let Some(io) = process.io_priority() else {
        return Ok(None);
    };
    let priority = io.priority();
    if !(0..=7).contains(&priority) {
        return Err(SchedError::IoPriorityRange(priority));
    }
    let class = match io.class() {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        IOPriorityClass::IoprioClassIdle => 3,
    };
    Ok(Some((class << 13) | priority as i32))
}

fn sched_attr(scheduler: &Scheduler) -> Result<SchedAttr, SchedError> {
    let policy = *scheduler.policy();
    let invalid = |field, value: i64, reason| SchedError::Invalid { field, value, policy: policy.to_string(), reason };
    let nice = scheduler.nice().unwrap_or(0);
    if !(-20..=19).contains(&nice) {
        return Err(invalid("nice", i64::from(nice), "must be between -20 and 19"));
    }
    let priority = scheduler.priority().unwrap_or(0);
    let realtime = matches!(policy, LinuxSchedulerPolicy::SchedFifo | LinuxSchedulerPolicy::SchedRr);
    if realtime && !(1..=99).contains(&priority) {
        return Err(invalid("priority", i64::from(priority), "must be between 1 and 99"));
    }
    if !realtime && priority != 0 {
        return Err(invalid("priority", i64::from(priority), "must be 0 for a policy that is not realtime"));
    }
    let (runtime, deadline, period) =
        (scheduler.runtime().unwrap_or(0), scheduler.deadline().unwrap_or(0), scheduler.period().unwrap_or(0));
    if policy == LinuxSchedulerPolicy::SchedDeadline {
        if runtime == 0 || runtime > deadline {
            return Err(invalid("runtime", runtime as i64, "must be set and at most the deadline"));
        }
        if period != 0 && deadline > period {
            return Err(invalid("deadline", deadline as i64, "must be at most the period"));
        }
    }
    let flags = scheduler.flags().iter().flatten().fold(0u64, |acc, flag| acc | flag_bit(*flag));
    Ok(SchedAttr {
        size: 0,
        policy: policy_number(policy),
        flags,
        nice,
        priority: priority as u32,
        runtime,
        deadline,
        period,
    })
}

fn policy_number(policy: LinuxSchedulerPolicy) -> u32 {
    match policy {
        LinuxSchedulerPolicy::SchedOther => 0,
        LinuxSchedulerPolicy::SchedFifo => 1,
        LinuxSchedulerPolicy::SchedRr => 2,
        LinuxSchedulerPolicy::SchedBatch => 3,
        LinuxSchedulerPolicy::SchedIso => 4,
        LinuxSchedulerPolicy::SchedIdle => 5,
        LinuxSchedulerPolicy::SchedDeadline => 6,
    }
}

fn flag_bit(flag: LinuxSchedulerFlag) -> u64 {
    match flag {
        LinuxSchedulerFlag::SchedResetOnFork => 0x01,
        LinuxSchedulerFlag::SchedFlagReclaim => 0x02,
        LinuxSchedulerFlag::SchedFlagDLOverrun => 0x04,
        LinuxSchedulerFlag::SchedFlagKeepPolicy => 0x08,
        LinuxSchedulerFlag::SchedFlagKeepParams => 0x10,
        LinuxSchedulerFlag::SchedFlagUtilClampMin => 0x20,
        LinuxSchedulerFlag::SchedFlagUtilClampMax => 0x40,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxIOPriorityBuilder, SchedulerBuilder};

    #[test]
    fn io_priority_is_class_and_level() {
        let mut process = Process::default();
        assert_eq!(io_priority_value(&process).unwrap(), None);
        let io = LinuxIOPriorityBuilder::default().class(IOPriorityClass::IoprioClassBe).priority(6).build().unwrap();
        process.set_io_priority(Some(io));
        assert_eq!(io_priority_value(&process).unwrap(), Some((2 << 13) | 6));
        let bad = LinuxIOPriorityBuilder::default().class(IOPriorityClass::IoprioClassRt).priority(9).build().unwrap();
        process.set_io_priority(Some(bad));
        assert_eq!(
            validate(&process).unwrap_err().to_string(),
            "process.ioPriority.priority 9 is out of range (0 to 7)"
        );
    }

    #[test]
    fn scheduler_fields_are_checked_and_encoded() {
        let batch = SchedulerBuilder::default()
            .policy(LinuxSchedulerPolicy::SchedBatch)
            .nice(5)
            .flags(vec![LinuxSchedulerFlag::SchedResetOnFork])
            .build()
            .unwrap();
        let attr = sched_attr(&batch).unwrap();
        assert_eq!((attr.policy, attr.nice, attr.priority, attr.flags), (3, 5, 0, 1));
        let fifo = SchedulerBuilder::default().policy(LinuxSchedulerPolicy::SchedFifo).build().unwrap();
        assert!(sched_attr(&fifo).unwrap_err().to_string().contains("process.scheduler.priority 0"));
        let nice = SchedulerBuilder::default().policy(LinuxSchedulerPolicy::SchedOther).nice(30).build().unwrap();
        assert!(sched_attr(&nice).unwrap_err().to_string().contains("nice 30"));
        let dl = SchedulerBuilder::default()
            .policy(LinuxSchedulerPolicy::SchedDeadline)
            .runtime(10u64)
            .deadline(5u64)
            .build()
            .unwrap();
        assert!(sched_attr(&dl).unwrap_err().to_string().contains("runtime 10"));
    }
}
