//! `run --watch D`: COMMAND as a child in its own process group; `run`
//! forwards signals to the group, reaps every child (orphans too when it is
//! PID 1), re-reads the secrets every D past the broker's cache, and on a
//! changed version rewrites the files first, then restarts, signals or does
//! nothing. Exits with COMMAND's code (128+N when killed by signal N).
//! On a terminal where `run` is the foreground job, COMMAND's group gets
//! the foreground, and `Ctrl-Z` stops `run` with it (job control).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::time::Duration;

use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};
use tokio::signal::unix::{SignalKind, signal};

use super::spec::OnChange;
use super::{Gathered, Plan, Source, gather, write_files};
use crate::secret::SecretBytes;

/// The signals `run` passes on to COMMAND's process group.
const FORWARDED: [Signal; 6] = [
    Signal::TERM,
    Signal::INT,
    Signal::HUP,
    Signal::QUIT,
    Signal::USR1,
    Signal::USR2,
];

/// How `--watch` behaves.
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    /// Re-read period.
    pub every: Duration,
    /// What a changed version does.
    pub on_change: OnChange,
    /// Time between the stop signal and `KILL` on a restart.
    pub stop_timeout: Duration,
}

/// Why supervision ended before COMMAND did.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// COMMAND could not be started.
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// A signal handler could not be installed.
    #[error("cannot watch signals: {0}")]
    Signals(std::io::Error),
}

/// Runs COMMAND with `first` (files already written) and supervises it
/// until it exits; returns the exit code `run` should exit with.
pub async fn supervise<S: Source>(
    plan: &Plan,
    src: &S,
    command: &[OsString],
    watch: Watch,
    first: Gathered,
) -> Result<i32, SuperviseError> {
    // INVARIANT: handlers are installed before COMMAND starts, so a signal
    // or an exit is never missed.
    let mut child_exit = signal(SignalKind::child()).map_err(SuperviseError::Signals)?;
    let (tx, mut signals) = tokio::sync::mpsc::unbounded_channel();
    for sig in FORWARDED {
        let mut stream =
            signal(SignalKind::from_raw(sig.as_raw())).map_err(SuperviseError::Signals)?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(sig).is_err() {
                    break;
                }
            }
        });
    }
    let mut current = first;
    let foreground = in_foreground();
    let mut child = spawn(command, &current.env, foreground)?;
    let mut tick = tokio::time::interval(watch.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is now: the values were just read
    loop {
        let event = tokio::select! {
            _ = child_exit.recv() => Event::Child,
            Some(sig) = signals.recv() => Event::Signal(sig),
            _ = tick.tick() => Event::Tick,
        };
        match reap(child) {
            Reaped::Exited(code) => return Ok(code),
            Reaped::Stopped if foreground => suspend_with(child),
            Reaped::Stopped | Reaped::Running => {}
        }
        match event {
            Event::Child => {}
            Event::Signal(sig) => {
                let _ = rustix::process::kill_process_group(child, sig);
            }
            Event::Tick => {
                let next = match gather(plan, src, true).await {
                    Ok(g) => g,
                    Err(e) => {
                        eprintln!(
                            "warning: {e}; COMMAND keeps running as it is, and the read is retried"
                        );
                        continue;
                    }
                };
                if next.versions == current.versions {
                    continue;
                }
                // Files first, so that whatever COMMAND does next sees them.
                if let Err(e) = write_files(&next) {
                    eprintln!(
                        "warning: {e}; COMMAND keeps running as it is, and the read is retried"
                    );
                    continue;
                }
                match watch.on_change {
                    OnChange::None => {}
                    OnChange::Signal(sig) => {
                        let _ = rustix::process::kill_process_group(child, sig);
                    }
                    OnChange::Restart => {
                        // Its exit status now is the restart's doing, not
                        // an end of the run.
                        stop(child, watch.stop_timeout, &mut child_exit).await;
                        child = spawn(command, &next.env, foreground)?;
                    }
                }
                current = next;
            }
        }
    }
}

/// What woke the supervisor.
enum Event {
    /// `SIGCHLD`: some child exited.
    Child,
    /// A signal to forward.
    Signal(Signal),
    /// Time to re-read.
    Tick,
}

/// Whether `run` is the foreground job of the terminal on its stdin: then
/// COMMAND, in a group of its own, must be handed the foreground, or its
/// first read of the terminal stops it (`SIGTTIN`), as `tini` does.
fn in_foreground() -> bool {
    let stdin = std::io::stdin();
    rustix::termios::isatty(&stdin)
        && rustix::termios::tcgetpgrp(&stdin).ok() == Some(rustix::process::getpgrp())
}

/// Runs `f` with `SIGTTOU` blocked in the calling thread: a process in a
/// background group may then set the terminal's foreground (the kernel
/// sends it nothing), and the mask is restored after.
#[allow(unsafe_code)]
fn with_sigttou_blocked(f: impl FnOnce()) {
    // SAFETY: async-signal-safe calls only (sigemptyset, sigaddset,
    // pthread_sigmask) on stack-local sets; fit for the forked child too.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTTOU);
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
}

/// Makes `group` the foreground job of the terminal on stdin. A terminal
/// gone meanwhile (ENOTTY, ENXIO) is not an error: there is no foreground
/// to give.
fn give_foreground(group: Pid) {
    with_sigttou_blocked(|| {
        let _ = rustix::termios::tcsetpgrp(std::io::stdin(), group);
    });
}

/// In the forked child, before `exec`: its own group (set just before by
/// `process_group(0)`) takes the terminal's foreground. Raw syscalls only.
fn take_foreground() -> std::io::Result<()> {
    give_foreground(rustix::process::getpgrp());
    Ok(())
}

/// COMMAND was stopped from the terminal (`Ctrl-Z`): take the terminal
/// back, stop `run` too so that the shell sees its job stopped, and once
/// the shell continues `run` (`fg`, `bg`), continue COMMAND, in the
/// foreground again only if `run` was given it.
fn suspend_with(child: Pid) {
    give_foreground(rustix::process::getpgrp());
    // A self-sent SIGSTOP stops this process before the call returns.
    let _ = rustix::process::kill_process(rustix::process::getpid(), Signal::STOP);
    if in_foreground() {
        give_foreground(child);
    }
    let _ = rustix::process::kill_process_group(child, Signal::CONT);
}

/// Starts COMMAND in a process group of its own, stdin, stdout and stderr
/// inherited; with `foreground`, its group becomes the terminal's
/// foreground job.
fn spawn(
    command: &[OsString],
    env: &[(String, SecretBytes)],
    foreground: bool,
) -> Result<Pid, SuperviseError> {
    let Some((program, rest)) = command.split_first() else {
        return Err(SuperviseError::Spawn {
            program: String::new(),
            source: std::io::ErrorKind::InvalidInput.into(),
        });
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest).process_group(0);
    if foreground {
        // SAFETY: `take_foreground` makes only async-signal-safe calls.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(take_foreground)
        };
    }
    for (name, value) in env {
        // INVARIANT: `env::build` let through only UTF-8 without NUL.
        cmd.env(name, OsStr::from_bytes(value.expose_secret()));
    }
    let child = cmd.spawn().map_err(|source| SuperviseError::Spawn {
        program: program.to_string_lossy().into_owned(),
        source,
    })?;
    // The `Child` handle is dropped without waiting: `reap` collects it.
    Ok(Pid::from_child(&child))
}

/// What became of COMMAND in one `reap`.
enum Reaped {
    /// It exited, with this code for `run` to exit with.
    Exited(i32),
    /// It was stopped (`SIGTSTP`, `SIGSTOP`, `SIGTTIN`, `SIGTTOU`).
    Stopped,
    /// Still running.
    Running,
}

/// Reaps every exited child (COMMAND, and orphans re-parented to `run`
/// when it is PID 1) and sees whether COMMAND exited or was stopped.
fn reap(child: Pid) -> Reaped {
    let mut seen = Reaped::Running;
    while let Ok(Some((pid, status))) =
        rustix::process::wait(WaitOptions::NOHANG | WaitOptions::UNTRACED)
    {
        if pid != child {
            continue;
        }
        if !status.stopped() {
            seen = Reaped::Exited(exit_code(status));
        } else if !matches!(seen, Reaped::Exited(_)) {
            seen = Reaped::Stopped;
        }
    }
    seen
}

/// COMMAND's exit code, 128+N when killed by signal N (as shells report it).
fn exit_code(status: WaitStatus) -> i32 {
    match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    }
}

/// Stops COMMAND for a restart: `TERM` to its group, then `KILL` after
/// `timeout`; returns once it is reaped.
async fn stop(
    child: Pid,
    timeout: Duration,
    child_exit: &mut tokio::signal::unix::Signal,
) -> Option<i32> {
    let _ = rustix::process::kill_process_group(child, Signal::TERM);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Reaped::Exited(code) = reap(child) {
            return Some(code);
        }
        tokio::select! {
            _ = child_exit.recv() => {}
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    let _ = rustix::process::kill_process_group(child, Signal::KILL);
    loop {
        if let Reaped::Exited(code) = reap(child) {
            return Some(code);
        }
        // Bounded by the kernel: a KILLed process exits.
        child_exit.recv().await?;
    }
}
