//! `nodelet doctor`: can this host run pods? A report, and exit status 1 when it cannot.

use std::process::ExitCode;

use nodelet_kubelet::doctor::{diagnose, DoctorOptions};

#[derive(clap::Args, Debug)]
pub struct DoctorArgs {}

pub fn run(_args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let report = diagnose(&DoctorOptions::host());
    print!("{report}");
    Ok(if report.can_run_pods() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
