/// A short random hex suffix for host objects (interfaces, cgroups, nodes), so tests can run
/// side by side and a leftover names its test run.
pub fn unique_suffix() -> String {
    format!("{:06x}", rand::random::<u32>() & 0xff_ffff)
}
