//! Process attributes of runtime-spec 1.2 through nodelet-runc: `ioPriority` and `scheduler`
//! as the kernel then reports them, their bad values refused naming the field, and AppArmor
//! or SELinux asked for on a host without them refused rather than ignored.

mod container_support;
mod runc_support;

use container_support::*;
use oci_spec::runtime::{
    IOPriorityClass, LinuxIOPriorityBuilder, LinuxSchedulerPolicy, Process, SchedulerBuilder, Spec,
};
use runc_support::*;

fn edit_process(spec: &mut Spec, edit: impl FnOnce(&mut Process)) {
    let mut process = spec.process().clone().expect("process");
    edit(&mut process);
    spec.set_process(Some(process));
}

/// Fields 19 (nice) and 41 (policy) of /proc/<pid>/stat.
fn nice_and_policy(pid: i64) -> (i64, i64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name in parentheses, fields start at 3.
    let rest: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    (rest[19 - 3].parse().unwrap(), rest[41 - 3].parse().unwrap())
}

#[test]
fn io_priority_and_scheduler_reach_the_process() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = unique("sched");
    let (bundle, mut spec) = env.bundle(&id, &["sh", "-c", "busybox ionice -p $$ > /tmp/io; exec sleep 1000"]);
    edit_process(&mut spec, |p| {
        let io = LinuxIOPriorityBuilder::default().class(IOPriorityClass::IoprioClassBe).priority(6).build().unwrap();
        p.set_io_priority(Some(io));
        let batch = SchedulerBuilder::default().policy(LinuxSchedulerPolicy::SchedBatch).nice(5).build().unwrap();
        p.set_scheduler(Some(batch));
    });
    write_bundle(&bundle, &spec);
    cli.ok(&["run", "-d", "--bundle", path_str(&bundle), &id]);
    let pid = cli.state(&id)["pid"].as_i64().expect("pid");
    let io = bundle.join("rootfs/tmp/io");
    assert!(wait_until(std::time::Duration::from_secs(5), || io.exists()));
    wait_until(std::time::Duration::from_secs(5), || std::fs::read_to_string(&io).is_ok_and(|t| !t.is_empty()));
    assert_eq!(std::fs::read_to_string(&io).unwrap().trim(), "best-effort: prio 6");
    assert_eq!(nice_and_policy(pid), (5, 3), "nice 5, SCHED_BATCH");
    // An exec'd process gets the container's unless it names its own.
    let exec_io = cli.ok(&["exec", &id, "sh", "-c", "busybox ionice -p $$"]);
    assert_eq!(exec_io.trim(), "best-effort: prio 6");
    cli.ok(&["delete", "--force", &id]);
}

/// A change to the process of a spec.
type ProcessEdit = Box<dyn Fn(&mut Process)>;

#[test]
fn bad_values_and_absent_security_modules_are_refused() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let cases: Vec<(&str, ProcessEdit, &str)> = vec![
        (
            "ioprio",
            Box::new(|p: &mut Process| {
                let io = LinuxIOPriorityBuilder::default().priority(8).build().unwrap();
                p.set_io_priority(Some(io));
            }),
            "process.ioPriority.priority 8 is out of range (0 to 7)",
        ),
        (
            "fifo",
            Box::new(|p: &mut Process| {
                let fifo = SchedulerBuilder::default().policy(LinuxSchedulerPolicy::SchedFifo).build().unwrap();
                p.set_scheduler(Some(fifo));
            }),
            "process.scheduler.priority 0 is invalid for policy SCHED_FIFO",
        ),
        (
            "apparmor",
            Box::new(|p: &mut Process| {
                p.set_apparmor_profile(Some("docker-default".to_string()));
            }),
            "docker-default\\\" is set but AppArmor is not enabled on this host",
        ),
        (
            "selinux",
            Box::new(|p: &mut Process| {
                p.set_selinux_label(Some("system_u:system_r:container_t:s0".to_string()));
            }),
            "SELinux is not enabled on this host",
        ),
    ];
    let apparmor_on = std::path::Path::new("/sys/kernel/security/apparmor").is_dir();
    let selinux_on = std::path::Path::new("/sys/fs/selinux/enforce").exists();
    for (name, edit, message) in cases {
        if (name == "apparmor" && apparmor_on) || (name == "selinux" && selinux_on) {
            continue; // the host has it: nothing to refuse
        }
        let id = unique(name);
        let (bundle, mut spec) = env.bundle(&id, &["true"]);
        edit_process(&mut spec, |p| edit(p));
        write_bundle(&bundle, &spec);
        let out = cli.run(&["create", "--bundle", path_str(&bundle), &id]);
        assert_eq!(out.code, 1, "{name}");
        assert!(out.stderr.contains(message), "{name}: {}", out.stderr);
        assert!(!cli.root.join(&id).exists(), "{name}: state left behind");
    }
    if !apparmor_on {
        let id = unique("exec-aa");
        let bundle = make_bundle(&env, &id, &["sleep", "1000"]);
        cli.ok(&["run", "-d", "--bundle", path_str(&bundle), &id]);
        let out = cli.run(&["exec", "--apparmor", "unconfined", &id, "true"]);
        assert_eq!(out.code, 255);
        assert!(out.stderr.contains("AppArmor is not enabled on this host"), "{}", out.stderr);
        cli.ok(&["delete", "--force", &id]);
    }
}
