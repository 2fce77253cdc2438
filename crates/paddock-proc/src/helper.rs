//! [`fork_helper`]: a helper process that is a copy of this one, without an `execve`.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::{Process, SpawnError, reaper, sys};

/// Starts `child` in a copy of this process (a `fork` with a pidfd) and returns the copy as
/// a [`Process`], registered with the reaper like any spawned child: its exit is awaited
/// with [`Process::wait`], it can be signalled race-free, and it never becomes a zombie.
///
/// The copy runs `child` and exits with the code it returns (101 if it panics), with
/// `_exit`: no exit handlers run and no buffer copied from this process is flushed. It
/// starts in this process's cgroup, session and signal dispositions; it shares nothing
/// with this process afterwards but the open file descriptors it inherited (close the ones
/// it must not hold, such as the other ends of pipes, inside `child`).
///
/// This is for small helpers that would otherwise be a second `execve` of the program:
/// the copy skips the program's whole start-up (the dynamic loader's relocations, page
/// faults of a fresh image), which costs milliseconds for a large binary.
///
/// # Errors
/// [`SpawnError::Invalid`] when this process has more than one thread: the copy would
/// hold locks that threads which do not exist in it took (an allocator's, a logger's) and
/// could only run async-signal-safe code. Call it early, before any runtime or thread is
/// started (the reaper's thread starts with the first spawn). [`SpawnError::Os`] when the
/// clone fails (`EAGAIN`/`ENOMEM`: out of processes or memory).
pub fn fork_helper<F: FnOnce() -> i32>(child: F) -> Result<Process, SpawnError> {
    let threads = std::fs::read_dir("/proc/thread-self/..")
        .map(|d| d.count())
        .map_err(|source| SpawnError::Os {
            op: "list /proc/self/task (count this process's threads)",
            source,
        })?;
    if threads != 1 {
        return Err(SpawnError::Invalid(format!(
            "fork_helper: this process has {threads} threads; a forked copy of a \
             multi-threaded process may only run async-signal-safe code (call it before \
             starting any thread or runtime)"
        )));
    }
    // SAFETY: the process has exactly one thread (checked just above, and no thread can
    // have been started since: this one is the only one there is).
    match unsafe { sys::fork_with_pidfd() } {
        Err(source) => Err(SpawnError::Os {
            op: "clone3 (fork a helper)",
            source,
        }),
        Ok(sys::Forked::Child) => {
            let code = catch_unwind(AssertUnwindSafe(child)).unwrap_or(101);
            sys::exit_now(code)
        }
        Ok(sys::Forked::Parent { pid, pidfd }) => {
            // No reaper thread can exist yet (the process had one thread), so nothing can
            // have reaped the child before it is registered.
            if let Err(e) = reaper::ensure_started() {
                // Not registered, so ours to end and reap here.
                let _ = sys::pidfd_send_signal(std::os::fd::AsFd::as_fd(&pidfd), libc::SIGKILL);
                let _ = sys::reap(pid);
                return Err(e);
            }
            let slot = reaper::lock_table().insert(pid);
            reaper::wake();
            Ok(Process {
                pid,
                slot,
                pipes: Vec::new(),
                pidfd: Some(pidfd),
            })
        }
    }
}
