//! Process hardening at start: no core dumps, not ptrace-attachable by
//! same-uid processes, so secret memory cannot be dumped to disk.

/// Marks the process non-dumpable and sets `RLIMIT_CORE` to 0.
pub fn disable_core_dumps() -> std::io::Result<()> {
    use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};
    // SECURITY: a core file or /proc/PID/mem read by a same-uid process
    // would expose every secret in memory.
    set_dumpable_behavior(DumpableBehavior::NotDumpable)?;
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn core_dumps_are_disabled_in_a_child() {
        // Run in a child so the test process itself stays debuggable.
        if std::env::var_os("SB_HARDEN_CHILD").is_some() {
            super::disable_core_dumps().unwrap();
            let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
            assert!(
                limits
                    .lines()
                    .any(|l| l.starts_with("Max core file size") && l.contains(" 0 "))
            );
            assert_eq!(
                rustix::process::dumpable_behavior().unwrap(),
                rustix::process::DumpableBehavior::NotDumpable
            );
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "hardening::tests::core_dumps_are_disabled_in_a_child",
                "--nocapture",
            ])
            .env("SB_HARDEN_CHILD", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
