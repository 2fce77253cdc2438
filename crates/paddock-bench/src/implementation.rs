//! The implementations under test, behind one trait.
//!
//! Adding an implementation means one more type with this trait: the scenarios only call
//! the trait. The implementations: `paddock` in [`crate::paddock_library`], `floor`,
//! `rmdir-retry-200ms` and `signal-wrapper` in [`crate::raw_client`] (run by the helper in
//! [`crate::raw`]), `paddock-api` in [`crate::paddock_api`], `paddock-cli` in
//! [`crate::paddock_cli`], `runc` and `crun` in [`crate::runtime`], `bwrap` and `hakoniwa`
//! in [`crate::jail`], `ip-script` in [`crate::net`].

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future of an I/O result, for the trait's async methods.
pub type Fut<'a, T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send + 'a>>;

/// What one burst round measured.
#[derive(Debug, Default, Clone)]
pub struct BurstResult {
    /// Per-sandbox start latency (the start call alone).
    pub starts: Vec<Duration>,
    /// Per-sandbox start completion measured from the beginning of the burst.
    pub starts_from_burst: Vec<Duration>,
    /// Per-sandbox time the start's own code ran (aligned with `starts_from_burst`; empty
    /// where it is not measured): the rest of its time since the burst's beginning it was
    /// queued (waiting for a thread, a lock, or the starts before it).
    pub working: Vec<Duration>,
    /// Per-sandbox stop latency, from its stop request to its cgroup being gone.
    pub stops: Vec<Duration>,
    /// Time to start all.
    pub start_total: Duration,
    /// Time to stop all.
    pub stop_total: Duration,
}

fn unsupported<'a, T: Send + 'a>(imp: &str, what: &str) -> Fut<'a, T> {
    let msg = format!("{imp} does not implement {what}");
    Box::pin(async move { Err(io::Error::new(io::ErrorKind::Unsupported, msg)) })
}

/// One implementation of the benchmarked operations. Every method does the whole
/// operation and returns the time of its measured part.
pub trait Implementation: Send {
    /// Its name in the results.
    fn name(&self) -> &'static str;
    /// Why it cannot run here at all, if it cannot.
    fn unavailable(&self) -> Option<String> {
        None
    }
    /// Whether it takes part in `scenario`.
    fn supports(&self, scenario: &str) -> bool;
    /// The bench-root subdirectory holding its cgroups (checked for leaks).
    fn leak_dir(&self) -> &'static str;
    /// Leaks only it can see (runtime state such as `runc list`).
    fn extra_leaks(&self) -> usize {
        0
    }
    /// Create, spawn `/bin/true`, wait for its exit, remove.
    fn lifecycle(&mut self) -> Fut<'_, Duration> {
        unsupported(self.name(), "lifecycle")
    }
    /// `jailed-lifecycle`: once per run, untimed, run [`crate::jail::CHECK_SCRIPT`] in the
    /// same jail as [`Implementation::jailed_lifecycle`] and check with
    /// [`crate::jail::verify`] that it really ran jailed; a one-line summary of what was
    /// seen. An error drops the implementation from the scenario, with the reason.
    fn jail_check(&mut self) -> Fut<'_, String> {
        unsupported(self.name(), "jailed-lifecycle")
    }
    /// `jailed-lifecycle`: create, spawn `/bin/true` as a non-root user in new pid, mount,
    /// ipc and uts namespaces with the bench's rootfs as `/` (and the implementation's
    /// default seccomp), wait for its exit, remove. (`floor` does its plain lifecycle: the
    /// reference of the target.)
    fn jailed_lifecycle(&mut self) -> Fut<'_, Duration> {
        unsupported(self.name(), "jailed-lifecycle")
    }
    /// Mean CPU time (user + system) of every process an operation involved, µs, where
    /// the implementation measures it (the process implementations, from their cgroups'
    /// `cpu.stat`).
    fn cpu_per_op_us(&self) -> Option<f64> {
        None
    }
    /// Untimed: start the leak payload and wait until the escapee runs. Timed: from the
    /// stop request (no grace) to the cgroup being gone.
    fn leaked_teardown(&mut self) -> Fut<'_, Duration> {
        unsupported(self.name(), "leaked-teardown")
    }
    /// Untimed: start the wrapper chain ([`crate::WRAPPER_SCRIPT`]). Timed: from the stop
    /// request (grace `grace`) to the cgroup being gone.
    fn wrapper_stop(&mut self, _grace: Duration) -> Fut<'_, Duration> {
        unsupported(self.name(), "wrapper-stop")
    }
    /// `net-lifecycle`: create a sandbox with its own network and egress NAT, run
    /// `/bin/true` in it, remove everything; timed whole (see [`crate::net`]).
    fn net_lifecycle(&mut self) -> Fut<'_, Duration> {
        unsupported(self.name(), "net-lifecycle")
    }
    /// The owner tag of the network objects it made (their nftables table is deleted at
    /// the end of `net-lifecycle`).
    fn net_owner(&self) -> Option<String> {
        None
    }
    /// `n` sandboxes started concurrently, then all stopped concurrently.
    fn burst(&mut self, _n: usize) -> Fut<'_, BurstResult> {
        unsupported(self.name(), "burst")
    }
    /// Starts `n` long-running background sandboxes (for `scale`).
    fn populate(&mut self, _n: usize) -> Fut<'_, ()> {
        unsupported(self.name(), "populate")
    }
    /// Stops and forgets the background sandboxes.
    fn depopulate(&mut self) -> Fut<'_, ()> {
        unsupported(self.name(), "depopulate")
    }
    /// Resident memory of the process that holds the sandboxes' state, KiB.
    fn resident_kib(&self) -> Option<u64> {
        None
    }
}

/// Resident memory of this process, KiB (`VmRSS` of `/proc/self/status`).
pub fn self_rss_kib() -> Option<u64> {
    rss_kib_of("self")
}

/// `VmRSS` of `/proc/<pid>/status`, KiB.
pub fn rss_kib_of(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// [`crate::raw::wait_ready`] from async code (in `block_in_place`).
pub fn wait_ready_blocking(path: &Path, count: usize, sleeps: usize) -> io::Result<()> {
    tokio::task::block_in_place(|| crate::raw::wait_ready(path, count, sleeps))
}
