//! Process hardening at start: no core dumps, not ptrace-attachable by
//! same-uid processes, so secret memory cannot be dumped to disk; the file
//! descriptor limit raised to its ceiling; optional memory locking; and,
//! once serving, the release of start-up code pages.

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

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (the soft default,
/// often 1024, is below what `[limits] max_connections` and the store's
/// connections may need) and returns the soft limit now in force, `None`
/// for unlimited.
pub fn raise_fd_limit() -> std::io::Result<Option<u64>> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return Ok(limit.current);
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    )?;
    Ok(limit.maximum)
}

/// The smallest `RLIMIT_MEMLOCK` `[memory] lock` accepts for an unprivileged
/// broker: its heap, cache and thread stacks must fit when locked.
pub const MIN_MEMLOCK_BYTES: u64 = 64 * 1024 * 1024;

/// Why memory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The limit is below what the broker needs.
    #[error(
        "memory.lock needs RLIMIT_MEMLOCK of at least {} MiB but it is {have} KiB; raise it (`ulimit -l unlimited`, systemd `LimitMEMLOCK=infinity`, or the container's memlock ulimit) or set memory.lock = false",
        MIN_MEMLOCK_BYTES / (1024 * 1024)
    )]
    LimitTooSmall {
        /// The current soft limit, in KiB.
        have: u64,
    },
    /// `mlockall` failed.
    #[error("cannot lock memory ({0}); raise RLIMIT_MEMLOCK or set memory.lock = false")]
    Lock(std::io::Error),
}

/// Locks every page of the process, now and later, into RAM as it is
/// touched (`mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`), so no
/// secret is ever written to swap.
pub fn lock_memory() -> Result<(), LockError> {
    use rustix::mm::{MlockAllFlags, mlockall};
    use rustix::process::{Resource, geteuid, getrlimit};
    // SECURITY: fail clearly up front rather than half-locked later; root
    // (CAP_IPC_LOCK) is not bound by the limit.
    if let Some(limit) = getrlimit(Resource::Memlock).current {
        if limit < MIN_MEMLOCK_BYTES && !geteuid().is_root() {
            return Err(LockError::LimitTooSmall { have: limit / 1024 });
        }
    }
    mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT)
        .map_err(|e| LockError::Lock(e.into()))
}

/// Once start-up is done, lets go of the code pages it touched (config and
/// policy parsing, schema validation, store open) and of the binary's
/// read-only data before the code (the relocation tables the loader read,
/// constants): over half the resident set of an idle broker, see
/// docs/performance.md. Serving maps back in what it uses. Not with `[memory] lock` (locked pages stay, by design).
/// Failure costs only memory, so it is logged and ignored.
pub fn trim_code_residency() {
    if let Err(e) = crate::alloc::release_startup_code() {
        tracing::debug!(error = %e, "cannot advise the kernel on code paging");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn trimming_our_own_code_is_harmless() {
        super::trim_code_residency();
    }

    #[test]
    fn the_fd_limit_is_raised_to_its_ceiling() {
        use rustix::process::{Resource, getrlimit};
        let soft = super::raise_fd_limit().unwrap();
        let now = getrlimit(Resource::Nofile);
        assert_eq!((soft, now.current), (now.maximum, now.maximum));
    }

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
