//! The spawner: [`Command`] prepares everything in the parent, then clones.

use std::ffi::{CString, OsStr, OsString, c_char};
use std::fmt;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::pipe::PipeFlags;

use crate::sys::{self, ChildPlan, CloneKind, CloseMode, RawStage};
use crate::{ExitStatus, Process, SpawnError, reaper};

/// What a child fd is connected to.
#[derive(Debug)]
pub enum Stdio {
    /// The parent's fd with the same number. For 0, 1, 2 this is the default (the fd is
    /// left as is); for a higher number the parent's fd of that number must be open and is
    /// kept open across `execve` in the child.
    Inherit,
    /// `/dev/null`, opened read-write.
    Null,
    /// This fd (a file, a socket, one end of your own pipe, ...). Consumed by the spawn.
    Fd(OwnedFd),
    /// A new pipe; the parent keeps the other end ([`Process::take_pipe`]). The child reads
    /// from it when the target is fd 0 and writes to it otherwise.
    Pipe,
    /// A new pipe the child reads from (the parent gets the write end).
    PipeToChild,
    /// A new pipe the child writes to (the parent gets the read end).
    PipeFromChild,
}

impl Stdio {
    /// Map a duplicate of `fd` (the caller keeps `fd`).
    pub fn dup(fd: BorrowedFd<'_>) -> io::Result<Stdio> {
        Ok(Stdio::Fd(fd.try_clone_to_owned()?))
    }
}

impl From<OwnedFd> for Stdio {
    fn from(fd: OwnedFd) -> Self {
        Stdio::Fd(fd)
    }
}

impl From<std::fs::File> for Stdio {
    fn from(f: std::fs::File) -> Self {
        Stdio::Fd(f.into())
    }
}

/// A set of namespaces to create for the child (`CLONE_NEW*` in the same clone call).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Namespaces(u64);

impl Namespaces {
    /// No new namespaces.
    pub const NONE: Namespaces = Namespaces(0);
    /// A new mount namespace (`CLONE_NEWNS`).
    pub const MOUNT: Namespaces = Namespaces(libc::CLONE_NEWNS as u64);
    /// A new network namespace (`CLONE_NEWNET`): only a loopback device, which the child
    /// brings up before anything else runs in the namespace (so `127.0.0.1` works, as with
    /// systemd's `PrivateNetwork=yes`); a failure to do so is the spawn's error
    /// ([`Stage::Loopback`]).
    pub const NET: Namespaces = Namespaces(libc::CLONE_NEWNET as u64);
    /// A new PID namespace (`CLONE_NEWPID`): the payload is its init (pid 1); when it exits,
    /// the kernel kills everything else in the namespace.
    pub const PID: Namespaces = Namespaces(libc::CLONE_NEWPID as u64);
    /// A new UTS namespace (`CLONE_NEWUTS`).
    pub const UTS: Namespaces = Namespaces(libc::CLONE_NEWUTS as u64);
    /// A new IPC namespace (`CLONE_NEWIPC`).
    pub const IPC: Namespaces = Namespaces(libc::CLONE_NEWIPC as u64);

    /// The raw `CLONE_NEW*` bits.
    pub fn bits(self) -> u64 {
        self.0
    }

    /// Whether every namespace in `other` is in `self`.
    pub fn contains(self, other: Namespaces) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Namespaces {
    type Output = Namespaces;
    fn bitor(self, rhs: Self) -> Self {
        Namespaces(self.0 | rhs.0)
    }
}

/// Which clone mechanism to use. Everything but `Auto` exists to test the fallbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpawnPath {
    /// `clone3(CLONE_INTO_CGROUP | CLONE_PIDFD)`, falling back automatically (and caching
    /// what the kernel refused) as described in the crate docs.
    #[default]
    Auto,
    /// `clone3(CLONE_PIDFD)` without `CLONE_INTO_CGROUP`; the child writes `cgroup.procs`
    /// (the `E2BIG` fallback).
    Clone3WithoutIntoCgroup,
    /// Legacy `clone` (fork-like), the child writes `cgroup.procs`, the parent takes a
    /// pidfd with `pidfd_open` (the seccomp `ENOSYS`/`EPERM` fallback).
    LegacyClone,
}

/// How the child keeps unmapped fds from the program. Exists to test the fallbacks for old
/// kernels; `Auto` (the default) probes once per process and caches the result.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CloseMethod {
    /// The best the kernel has, in the order of the other variants.
    #[default]
    Auto,
    /// `close_range(CLOSE_RANGE_CLOEXEC)` (Linux 5.11).
    CloseRangeCloexec,
    /// `close_range(lo, hi, 0)`, closing them in the child (Linux 5.9).
    CloseRange,
    /// `fcntl(F_SETFD, FD_CLOEXEC)` on every number up to the highest open fd, read in
    /// the parent from `/proc/self/fd` (any kernel).
    Fcntl,
}

/// What the spawner has found out about the kernel so far (each `None` until the first
/// spawn that needed to know). Process-global and cached: each fallback is detected once.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpawnCapabilities {
    /// `clone3` usable (false after `ENOSYS`, or `EPERM` where legacy `clone` worked).
    pub clone3: Option<bool>,
    /// `CLONE_INTO_CGROUP` accepted (false after `E2BIG`).
    pub into_cgroup: Option<bool>,
    /// `CLONE_CLEAR_SIGHAND` accepted (false after `EINVAL`).
    pub clear_sighand: Option<bool>,
    /// The `close_range` variant in use (`None` before the first spawn).
    pub close_method: Option<CloseMethod>,
}

/// The cached results of the spawner's kernel feature detection, for tests and diagnostics.
#[doc(hidden)]
pub fn spawn_capabilities() -> SpawnCapabilities {
    let tri = |a: &AtomicU8| match a.load(Ordering::Relaxed) {
        YES => Some(true),
        NO => Some(false),
        _ => None,
    };
    SpawnCapabilities {
        clone3: tri(&HAVE_CLONE3),
        into_cgroup: tri(&HAVE_INTO_CGROUP),
        clear_sighand: tri(&HAVE_CLEAR_SIGHAND),
        close_method: CLOSE_MODE.get().map(|m| match m {
            CloseMode::CloseRangeCloexec => CloseMethod::CloseRangeCloexec,
            CloseMode::CloseRange => CloseMethod::CloseRange,
            CloseMode::Fcntl => CloseMethod::Fcntl,
        }),
    }
}

/// The kernel's best `close_range` variant, probed once (the reason for a fallback logged).
fn detected_close_mode() -> CloseMode {
    *CLOSE_MODE.get_or_init(|| {
        let (mode, refused) = sys::probe_close_mode();
        if let Some(e) = refused {
            match mode {
                CloseMode::CloseRange => tracing::warn!(
                    error = %e,
                    "close_range rejects CLOSE_RANGE_CLOEXEC (kernel < 5.11?); children \
                     close unmapped fds with close_range(lo, hi, 0) instead"
                ),
                _ => tracing::warn!(
                    error = %e,
                    "close_range is unavailable (kernel < 5.9?); children mark unmapped fds \
                     close-on-exec one by one with fcntl, up to the highest open fd"
                ),
            }
        }
        mode
    })
}

/// One above the highest fd open in this process (from `/proc/self/fd`), or the
/// `RLIMIT_NOFILE` soft limit if that cannot be read: the end of the fcntl loop.
///
/// An fd opened by another thread between this read and the clone, at a higher number and
/// without `O_CLOEXEC`, would escape the loop; Rust's standard library and this crate open
/// everything with `O_CLOEXEC`, and this is only the path for kernels before 5.9.
fn fd_scan_limit() -> u32 {
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let highest = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .max();
        if let Some(h) = highest {
            return h.saturating_add(1);
        }
    }
    let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    lim.current
        .map_or(1 << 20, |c| c.min(u32::MAX as u64) as u32)
}

/// The child-side setup step that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Resetting signal dispositions or the signal mask.
    Signals,
    /// Joining the target cgroup by writing `cgroup.procs` (fallback paths only).
    Cgroup,
    /// `setsid()`.
    Setsid,
    /// `prctl(PR_SET_PDEATHSIG)`.
    ParentDeathSignal,
    /// `setns()` into a namespace fd.
    Setns,
    /// Applying the fd map (`fcntl(F_DUPFD_CLOEXEC)` / `dup2`).
    FdMap,
    /// Keeping unmapped fds from the program: `close_range(CLOSE_RANGE_CLOEXEC)`, or on
    /// older kernels `close_range(lo, hi, 0)` or an `fcntl(F_SETFD, FD_CLOEXEC)` loop.
    CloseFds,
    /// `chdir()`.
    Chdir,
    /// `execve()`.
    Exec,
    /// Bringing up the loopback device of a new network namespace.
    Loopback,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Signals => "reset signals",
            Stage::Cgroup => "join cgroup",
            Stage::Setsid => "setsid",
            Stage::ParentDeathSignal => "set parent-death signal",
            Stage::Setns => "setns",
            Stage::FdMap => "map fd",
            Stage::CloseFds => "close fds",
            Stage::Chdir => "chdir",
            Stage::Exec => "exec",
            Stage::Loopback => "bring up loopback",
        })
    }
}

impl From<RawStage> for Stage {
    fn from(s: RawStage) -> Self {
        match s {
            RawStage::Signals => Stage::Signals,
            RawStage::Cgroup => Stage::Cgroup,
            RawStage::Setsid => Stage::Setsid,
            RawStage::ParentDeath => Stage::ParentDeathSignal,
            RawStage::Setns => Stage::Setns,
            RawStage::FdMap => Stage::FdMap,
            RawStage::CloseFds => Stage::CloseFds,
            RawStage::Chdir => Stage::Chdir,
            RawStage::Exec => Stage::Exec,
            RawStage::Loopback => Stage::Loopback,
        }
    }
}

/// Output of [`Command::output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// How it ended.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
}

/// A program to spawn, with its arguments, environment, working directory, fd map,
/// namespaces and session settings.
///
/// Arguments, environment and settings stay after a spawn; the fd map ([`Command::fd`],
/// [`Command::stdin`], ...) is consumed by each spawn (the fds are moved into the child and
/// closed in the parent).
#[derive(Debug)]
pub struct Command {
    program: OsString,
    args: Vec<OsString>,
    env_clear: bool,
    env: Vec<(OsString, Option<OsString>)>,
    cwd: Option<PathBuf>,
    fds: Vec<(RawFd, Stdio)>,
    ns_new: Namespaces,
    ns_join: Vec<OwnedFd>,
    setsid: bool,
    pdeathsig: i32,
    path: SpawnPath,
    keep_pidfd: bool,
    close_method: CloseMethod,
}

const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;
static HAVE_CLEAR_SIGHAND: AtomicU8 = AtomicU8::new(UNKNOWN);
static HAVE_INTO_CGROUP: AtomicU8 = AtomicU8::new(UNKNOWN);
static HAVE_CLONE3: AtomicU8 = AtomicU8::new(UNKNOWN);
static CLOSE_MODE: OnceLock<CloseMode> = OnceLock::new();

impl Command {
    /// A command running `program` (looked up in `PATH` if it contains no `/`) with
    /// `argv[0] = program`, the parent's environment, fds 0-2 inherited and nothing else.
    pub fn new(program: impl AsRef<OsStr>) -> Command {
        Command {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env_clear: false,
            env: Vec::new(),
            cwd: None,
            fds: Vec::new(),
            ns_new: Namespaces::NONE,
            ns_join: Vec::new(),
            setsid: false,
            pdeathsig: 0,
            path: SpawnPath::Auto,
            keep_pidfd: false,
            close_method: CloseMethod::Auto,
        }
    }

    /// Append an argument.
    pub fn arg(&mut self, a: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    /// Append arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(&mut self, args: I) -> &mut Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Set an environment variable.
    pub fn env(&mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> &mut Self {
        self.env
            .push((k.as_ref().to_owned(), Some(v.as_ref().to_owned())));
        self
    }

    /// Remove an environment variable.
    pub fn env_remove(&mut self, k: impl AsRef<OsStr>) -> &mut Self {
        self.env.push((k.as_ref().to_owned(), None));
        self
    }

    /// Start from an empty environment instead of the parent's.
    pub fn env_clear(&mut self) -> &mut Self {
        self.env_clear = true;
        self.env.clear();
        self
    }

    /// Working directory of the child (resolved after `setns`, so inside a joined mount
    /// namespace).
    pub fn cwd(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    /// Connect the child's fd `target` (any number >= 0) to `what`. Maps may overlap and
    /// swap (`3 ← parent's 4`, `4 ← parent's 3`): sources are duplicated above the highest
    /// target before any target is assigned. A later call for the same target replaces the
    /// earlier one.
    pub fn fd(&mut self, target: RawFd, what: Stdio) -> &mut Self {
        self.fds.retain(|(t, _)| *t != target);
        self.fds.push((target, what));
        self
    }

    /// Child's stdin (fd 0).
    pub fn stdin(&mut self, what: Stdio) -> &mut Self {
        self.fd(0, what)
    }

    /// Child's stdout (fd 1).
    pub fn stdout(&mut self, what: Stdio) -> &mut Self {
        self.fd(1, what)
    }

    /// Child's stderr (fd 2).
    pub fn stderr(&mut self, what: Stdio) -> &mut Self {
        self.fd(2, what)
    }

    /// Create these new namespaces for the child in the same clone call. With
    /// [`Namespaces::PID`] the payload is the namespace's init.
    pub fn unshare(&mut self, ns: Namespaces) -> &mut Self {
        self.ns_new = self.ns_new | ns;
        self
    }

    /// Join the namespace `fd` refers to (`setns(fd, 0)`) before `chdir`/`execve`, in the
    /// order added; for example a named network namespace from [`netns_fd`]. The fd is kept
    /// by the command for later spawns and never inherited by the child.
    pub fn join_namespace(&mut self, fd: OwnedFd) -> &mut Self {
        self.ns_join.push(fd);
        self
    }

    /// Run the child in a new session (`setsid`): it becomes session and process-group
    /// leader, without a controlling terminal.
    pub fn setsid(&mut self, on: bool) -> &mut Self {
        self.setsid = on;
        self
    }

    /// Send `sig` to the child when its parent dies (`PR_SET_PDEATHSIG`); 0 disables.
    ///
    /// **Caveat:** the kernel ties this to the *thread* that spawned the child, not the
    /// process: if the spawning thread exits (for example a `spawn_blocking` or thread-pool
    /// worker that is retired), the child receives `sig` although the process lives on.
    /// Spawn from a long-lived thread when you use this.
    pub fn parent_death_signal(&mut self, sig: i32) -> &mut Self {
        self.pdeathsig = sig;
        self
    }

    /// Force the fallback path (legacy `clone` + `cgroup.procs` write + `pidfd_open`) when
    /// `on`, for tests; `false` restores [`SpawnPath::Auto`].
    pub fn force_fallback(&mut self, on: bool) -> &mut Self {
        self.path = if on {
            SpawnPath::LegacyClone
        } else {
            SpawnPath::Auto
        };
        self
    }

    /// Keep the child's pidfd in the returned [`Process`] ([`Process::pidfd`]) when `on`;
    /// default `false`. [`Process::signal`] uses `pidfd_send_signal` either way; a held
    /// pidfd spares it the table lock and a `pidfd_open` per signal, at the cost of one fd
    /// per live child in the process's fd table, which every later spawn copies (see
    /// [`Process`] for the trade-off).
    pub fn keep_pidfd(&mut self, on: bool) -> &mut Self {
        self.keep_pidfd = on;
        self
    }

    /// Force how the child keeps unmapped fds from the program (tests of the old-kernel
    /// fallbacks).
    #[doc(hidden)]
    pub fn close_method(&mut self, m: CloseMethod) -> &mut Self {
        self.close_method = m;
        self
    }

    /// Choose the clone mechanism explicitly (see [`SpawnPath`]).
    pub fn spawn_path(&mut self, path: SpawnPath) -> &mut Self {
        self.path = path;
        self
    }

    /// The program, as given to [`Command::new`].
    pub fn get_program(&self) -> &OsStr {
        &self.program
    }

    /// The arguments after `argv[0]`, in order.
    pub fn get_args(&self) -> impl ExactSizeIterator<Item = &OsStr> {
        self.args.iter().map(OsString::as_os_str)
    }

    /// The environment changes, in the order made: `(name, Some(value))` sets a variable,
    /// `(name, None)` removes it; for a name set more than once the last one counts.
    pub fn get_envs(&self) -> impl ExactSizeIterator<Item = (&OsStr, Option<&OsStr>)> {
        self.env.iter().map(|(k, v)| (k.as_os_str(), v.as_deref()))
    }

    /// Whether the child starts from an empty environment ([`Command::env_clear`]).
    pub fn get_env_clear(&self) -> bool {
        self.env_clear
    }

    /// The working directory, if one was set.
    pub fn get_cwd(&self) -> Option<&Path> {
        self.cwd.as_deref()
    }

    /// The namespaces the child gets new ([`Command::unshare`]).
    pub fn get_unshare(&self) -> Namespaces {
        self.ns_new
    }

    /// Spawn into the cgroup whose directory `cgroup` refers to (opened with
    /// `O_DIRECTORY`, or `O_PATH`). The child is a member from its first instruction on the
    /// clone3 path and before `execve` on the fallback paths.
    pub fn spawn_in(&mut self, cgroup: BorrowedFd<'_>) -> Result<Process, SpawnError> {
        self.spawn_at(Some(cgroup))
    }

    /// Spawn into the caller's current cgroup. Meant for helper programs; a supervisor
    /// always uses [`Command::spawn_in`].
    pub fn spawn(&mut self) -> Result<Process, SpawnError> {
        self.spawn_at(None)
    }

    /// Low-level spawn: into `cgroup`, or into the caller's current cgroup when `None`.
    pub fn spawn_at(&mut self, cgroup: Option<BorrowedFd<'_>>) -> Result<Process, SpawnError> {
        let mut prep = self.prepare()?;
        reaper::ensure_started();
        let close_mode = match self.close_method {
            CloseMethod::Auto => detected_close_mode(),
            CloseMethod::CloseRangeCloexec => CloseMode::CloseRangeCloexec,
            CloseMethod::CloseRange => CloseMode::CloseRange,
            CloseMethod::Fcntl => CloseMode::Fcntl,
        };
        let fd_limit = if close_mode == CloseMode::Fcntl {
            fd_scan_limit()
        } else {
            0
        };

        let mut kind = match self.path {
            SpawnPath::Auto if HAVE_CLONE3.load(Ordering::Relaxed) == NO => CloneKind::Legacy,
            SpawnPath::Auto => CloneKind::Clone3 {
                into_cgroup: HAVE_INTO_CGROUP.load(Ordering::Relaxed) != NO,
                clear_sighand: HAVE_CLEAR_SIGHAND.load(Ordering::Relaxed) != NO,
            },
            SpawnPath::Clone3WithoutIntoCgroup => CloneKind::Clone3 {
                into_cgroup: false,
                clear_sighand: HAVE_CLEAR_SIGHAND.load(Ordering::Relaxed) != NO,
            },
            SpawnPath::LegacyClone => CloneKind::Legacy,
        };
        let mut probing_eperm = false;

        let (pid, pidfd, slot) = loop {
            let needs_procs = cgroup.is_some()
                && !matches!(
                    kind,
                    CloneKind::Clone3 {
                        into_cgroup: true,
                        ..
                    }
                );
            if needs_procs && prep.procs.is_none() {
                let cg = cgroup.expect("needs_procs implies a cgroup");
                let fd = rustix::fs::openat(
                    cg,
                    "cgroup.procs",
                    OFlags::WRONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| os("open cgroup.procs of the target cgroup", e))?;
                prep.procs = Some(fd);
            }
            let reset_all = !matches!(
                kind,
                CloneKind::Clone3 {
                    clear_sighand: true,
                    ..
                }
            );
            let procs_fd = if needs_procs {
                prep.procs.as_ref().map(|f| f.as_raw_fd())
            } else {
                None
            };
            let plan = prep.plan(procs_fd, reset_all, close_mode, fd_limit, self);

            let mut table = reaper::lock_table();
            let mask = sys::block_all_signals();
            let r = sys::clone_child(kind, self.ns_new.bits(), cgroup, &plan);
            sys::restore_signals(mask);
            match r {
                Ok(c) => {
                    let pidfd = match c.pidfd {
                        Some(fd) => Ok(Some(fd)),
                        // Race-free: the child cannot be reaped by the reaper while we hold
                        // the table lock, so `pid` still names it (at worst as a zombie).
                        None if self.keep_pidfd => sys::pidfd_open(c.pid).map(Some),
                        // Not kept: the reaper opens its own.
                        None => Ok(None),
                    };
                    match &pidfd {
                        // ESRCH: the kernel already reaped it (SIGCHLD ignored); the pid
                        // may be reused, so send nothing.
                        Err(e) if e.raw_os_error() != Some(libc::ESRCH) => {
                            // Still under the table lock, so the pid is still our child.
                            sys::kill_unreaped_child(c.pid);
                        }
                        _ => {}
                    }
                    let slot = table.insert(c.pid);
                    drop(table);
                    reaper::wake();
                    let pidfd = match pidfd {
                        Ok(fd) => fd,
                        Err(e) => {
                            drop(prep);
                            slot.wait_blocking(None);
                            return Err(SpawnError::Os {
                                op: "pidfd_open",
                                source: e,
                            });
                        }
                    };
                    if probing_eperm {
                        HAVE_CLONE3.store(NO, Ordering::Relaxed);
                        tracing::warn!(
                            "clone3 fails with EPERM but legacy clone works (seccomp filter?); \
                             using clone + cgroup.procs + pidfd_open from now on"
                        );
                    } else if matches!(kind, CloneKind::Clone3 { .. }) {
                        HAVE_CLONE3.store(YES, Ordering::Relaxed);
                    }
                    break (c.pid, pidfd, slot);
                }
                Err(e) => {
                    drop(table);
                    kind = match (kind, e) {
                        (
                            CloneKind::Clone3 {
                                into_cgroup,
                                clear_sighand: true,
                            },
                            Errno::INVAL,
                        ) if HAVE_CLEAR_SIGHAND.load(Ordering::Relaxed) != YES => {
                            HAVE_CLEAR_SIGHAND.store(NO, Ordering::Relaxed);
                            tracing::warn!(
                                "clone3 rejects CLONE_CLEAR_SIGHAND (EINVAL, kernel < 5.5?); \
                                 resetting signal handlers in the child instead"
                            );
                            CloneKind::Clone3 {
                                into_cgroup,
                                clear_sighand: false,
                            }
                        }
                        (
                            CloneKind::Clone3 {
                                into_cgroup: true,
                                clear_sighand,
                            },
                            Errno::TOOBIG,
                        ) if cgroup.is_some() => {
                            HAVE_INTO_CGROUP.store(NO, Ordering::Relaxed);
                            tracing::warn!(
                                "clone3 rejects CLONE_INTO_CGROUP (E2BIG, kernel < 5.7); \
                                 children join their cgroup via cgroup.procs before exec"
                            );
                            CloneKind::Clone3 {
                                into_cgroup: false,
                                clear_sighand,
                            }
                        }
                        (
                            CloneKind::Clone3 {
                                into_cgroup: true,
                                clear_sighand,
                            },
                            Errno::OPNOTSUPP,
                        ) if cgroup.is_some() => {
                            tracing::warn!(
                                "clone3 into the target cgroup fails with EOPNOTSUPP (threaded \
                                 cgroup?); retrying with a cgroup.procs write in the child"
                            );
                            CloneKind::Clone3 {
                                into_cgroup: false,
                                clear_sighand,
                            }
                        }
                        (
                            CloneKind::Clone3 {
                                into_cgroup: true, ..
                            },
                            Errno::BUSY,
                        ) if cgroup.is_some() => {
                            return Err(SpawnError::CgroupNotLeaf);
                        }
                        (CloneKind::Clone3 { .. }, Errno::NOSYS) => {
                            HAVE_CLONE3.store(NO, Ordering::Relaxed);
                            tracing::warn!(
                                "clone3 is unavailable (ENOSYS: old kernel or seccomp); using \
                                 clone + cgroup.procs + pidfd_open"
                            );
                            CloneKind::Legacy
                        }
                        (CloneKind::Clone3 { .. }, Errno::PERM)
                            if HAVE_CLONE3.load(Ordering::Relaxed) != YES =>
                        {
                            // Could be seccomp or a real permission problem: try clone.
                            probing_eperm = true;
                            CloneKind::Legacy
                        }
                        (CloneKind::Clone3 { .. }, e) => return Err(os("clone3", e)),
                        (CloneKind::Legacy, e) => return Err(os("clone", e)),
                    };
                }
            }
        };

        // Close the parent's copies of everything that was meant for the child.
        let Prepared {
            err_read,
            err_write,
            pipes,
            program_path,
            _keep,
            procs,
            ..
        } = prep;
        drop((err_write, _keep, procs));
        // Kept only on request (see `Process`); the clone3 paths always get one.
        let pidfd = if self.keep_pidfd { pidfd } else { None };
        let process = Process {
            pid,
            slot,
            pipes,
            pidfd,
        };

        match read_child_error(err_read) {
            Ok(None) => Ok(process),
            Ok(Some((stage, errno, idx))) => {
                process.wait_blocking();
                Err(self.child_error(stage, errno, idx, &program_path, pid))
            }
            Err(e) => {
                // Cannot tell whether exec happened; make sure nothing is left.
                let _ = process.kill();
                process.wait_blocking();
                Err(SpawnError::Os {
                    op: "read the spawn error pipe",
                    source: e,
                })
            }
        }
    }

    /// Spawn in the current cgroup with stdin from `/dev/null` (unless mapped) and
    /// stdout/stderr captured, wait for it through the reaper, and return its output. Use
    /// this instead of `std::process::Command::output` in processes using this crate.
    pub fn output(&mut self) -> Result<Output, SpawnError> {
        if !self.fds.iter().any(|(t, _)| *t == 0) {
            self.stdin(Stdio::Null);
        }
        self.stdout(Stdio::PipeFromChild)
            .stderr(Stdio::PipeFromChild);
        let mut p = self.spawn()?;
        let out = p.take_stdout().expect("stdout is piped");
        let err = p.take_stderr().expect("stderr is piped");
        let t = std::thread::spawn(move || read_all(err));
        let stdout = read_all(out);
        let stderr = t.join().unwrap_or_default();
        let status = p.wait_blocking();
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    /// Spawn in the current cgroup, wait for it through the reaper and return its status.
    pub fn status(&mut self) -> Result<ExitStatus, SpawnError> {
        Ok(self.spawn()?.wait_blocking())
    }

    fn child_error(
        &self,
        stage: RawStage,
        errno: i32,
        idx: u32,
        program: &Path,
        pid: i32,
    ) -> SpawnError {
        let stage = Stage::from(stage);
        if stage == Stage::Cgroup && errno == libc::EBUSY {
            return SpawnError::CgroupNotLeaf;
        }
        let context = match stage {
            Stage::Exec => program.display().to_string(),
            Stage::Chdir => self
                .cwd
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            Stage::Setns => format!("namespace #{idx}"),
            Stage::FdMap => format!("map entry #{idx}"),
            Stage::Cgroup => "(write cgroup.procs)".into(),
            _ => String::new(),
        };
        SpawnError::Child {
            stage,
            errno,
            context,
            pid,
        }
    }

    fn prepare(&mut self) -> Result<Prepared, SpawnError> {
        let cstr = |s: &OsStr, what: &str| {
            CString::new(s.as_bytes())
                .map_err(|_| SpawnError::Invalid(format!("{what} contains a NUL byte")))
        };

        // Environment.
        let mut env: Vec<(OsString, OsString)> = if self.env_clear {
            Vec::new()
        } else {
            std::env::vars_os().collect()
        };
        for (k, v) in &self.env {
            env.retain(|(ek, _)| ek != k);
            if let Some(v) = v {
                env.push((k.clone(), v.clone()));
            }
        }
        let mut env_c = Vec::with_capacity(env.len());
        for (k, v) in &env {
            let mut kv = k.clone().into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            env_c.push(
                CString::new(kv)
                    .map_err(|_| SpawnError::Invalid("environment contains a NUL byte".into()))?,
            );
        }

        // Program path and argv.
        let program_path = resolve(&self.program, &env);
        let path_c = cstr(program_path.as_os_str(), "program path")?;
        let mut argv_c = vec![cstr(&self.program, "program")?];
        for a in &self.args {
            argv_c.push(cstr(a, "argument")?);
        }
        let cwd_c = match &self.cwd {
            Some(d) => Some(cstr(d.as_os_str(), "cwd")?),
            None => None,
        };

        // fd plan.
        let mut keep = Vec::new();
        let mut map = Vec::new();
        let mut pipes = Vec::new();
        let mut targets = Vec::new();
        for (target, what) in self.fds.drain(..) {
            if target < 0 {
                return Err(SpawnError::Invalid(format!("negative target fd {target}")));
            }
            targets.push(target);
            let src: OwnedFd = match what {
                Stdio::Inherit if target <= 2 => continue,
                Stdio::Inherit => {
                    map.push((target, target));
                    continue;
                }
                Stdio::Null => std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
                    .map_err(|e| SpawnError::Os {
                        op: "open /dev/null",
                        source: e,
                    })?
                    .into(),
                Stdio::Fd(fd) => fd,
                Stdio::Pipe | Stdio::PipeToChild | Stdio::PipeFromChild => {
                    let (r, w) =
                        rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| os("pipe", e))?;
                    let child_reads = match what {
                        Stdio::PipeToChild => true,
                        Stdio::PipeFromChild => false,
                        _ => target == 0,
                    };
                    let (child, parent) = if child_reads { (r, w) } else { (w, r) };
                    pipes.push((target, parent));
                    child
                }
            };
            map.push((src.as_raw_fd(), target));
            keep.push(src);
        }
        targets.sort_unstable();
        let max_target = targets.last().copied().unwrap_or(2).max(2);
        let above = max_target + 1;
        // Error pipe, write end numbered above every target so the fd map cannot clobber it.
        let (err_read, mut err_write) =
            rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| os("pipe", e))?;
        if err_write.as_raw_fd() < above {
            err_write = rustix::io::fcntl_dupfd_cloexec(&err_write, above)
                .map_err(|e| os("fcntl(F_DUPFD_CLOEXEC)", e))?;
        }

        // The ranges of fds >= 3 the child must not pass on: everything but the targets
        // and the error pipe (which the child needs until `execve`, and which closes
        // itself then).
        let err_fd = err_write.as_raw_fd() as u32;
        let mut gaps = Vec::new();
        let mut start: u32 = 3;
        for &t in targets.iter().filter(|&&t| t >= 3) {
            let t = t as u32;
            if t > start {
                gaps.push((start, t - 1));
            }
            start = start.max(t + 1);
        }
        // err_fd >= above > every target, so err_fd >= start.
        if err_fd > start {
            gaps.push((start, err_fd - 1));
        }
        gaps.push((err_fd + 1, u32::MAX));

        let argv_p = ptr_array(&argv_c);
        let envp_p = ptr_array(&env_c);
        let scratch = vec![-1; map.len()];
        Ok(Prepared {
            program_path,
            path_c,
            _argv_c: argv_c,
            _env_c: env_c,
            argv_p,
            envp_p,
            cwd_c,
            map,
            scratch,
            gaps,
            above,
            _keep: keep,
            pipes,
            err_read,
            err_write,
            procs: None,
        })
    }
}

/// Everything allocated in the parent for one spawn. The child-side fds (`_keep`,
/// `err_write`, `procs`) are closed in the parent when this is dropped.
struct Prepared {
    program_path: PathBuf,
    path_c: CString,
    _argv_c: Vec<CString>,
    _env_c: Vec<CString>,
    argv_p: Vec<*const c_char>,
    envp_p: Vec<*const c_char>,
    cwd_c: Option<CString>,
    map: Vec<(RawFd, RawFd)>,
    scratch: Vec<RawFd>,
    gaps: Vec<(u32, u32)>,
    above: RawFd,
    _keep: Vec<OwnedFd>,
    pipes: Vec<(RawFd, OwnedFd)>,
    err_read: OwnedFd,
    err_write: OwnedFd,
    procs: Option<OwnedFd>,
}

impl Prepared {
    fn plan(
        &mut self,
        procs_fd: Option<RawFd>,
        reset_all: bool,
        close_mode: CloseMode,
        fd_limit: u32,
        cmd: &Command,
    ) -> PlanGuard {
        let ns: Vec<RawFd> = cmd.ns_join.iter().map(|f| f.as_raw_fd()).collect();
        PlanGuard {
            plan: ChildPlan {
                path: self.path_c.as_ptr(),
                argv: self.argv_p.as_ptr(),
                envp: self.envp_p.as_ptr(),
                cwd: self.cwd_c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
                fd_map: self.map.as_ptr(),
                fd_map_len: self.map.len(),
                scratch: self.scratch.as_mut_ptr(),
                gaps: self.gaps.as_ptr(),
                gaps_len: self.gaps.len(),
                above_targets: self.above,
                ns_fds: ns.as_ptr(),
                ns_fds_len: ns.len(),
                procs_fd: procs_fd.unwrap_or(-1),
                err_fd: self.err_write.as_raw_fd(),
                setsid: cmd.setsid,
                pdeathsig: cmd.pdeathsig,
                parent_pid: sys::getpid(),
                new_pid_ns: cmd.ns_new.contains(Namespaces::PID),
                loopback_up: cmd.ns_new.contains(Namespaces::NET),
                reset_all_handlers: reset_all,
                close_mode,
                fd_limit,
            },
            _ns: ns,
        }
    }
}

/// A [`ChildPlan`] together with the namespace-fd array it points into.
struct PlanGuard {
    plan: ChildPlan,
    _ns: Vec<RawFd>,
}

impl std::ops::Deref for PlanGuard {
    type Target = ChildPlan;
    fn deref(&self) -> &ChildPlan {
        &self.plan
    }
}

fn ptr_array(v: &[CString]) -> Vec<*const c_char> {
    v.iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

fn os(op: &'static str, e: Errno) -> SpawnError {
    SpawnError::Os {
        op,
        source: io::Error::from_raw_os_error(e.raw_os_error()),
    }
}

/// Look `program` up in `PATH` (the child's, else the parent's) unless it contains a `/`.
/// Returns it unchanged when nothing matches, so `execve` reports `ENOENT`.
fn resolve(program: &OsStr, env: &[(OsString, OsString)]) -> PathBuf {
    if program.as_bytes().contains(&b'/') || program.is_empty() {
        return PathBuf::from(program);
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let cand = dir.join(program);
        if let Ok(c) = CString::new(cand.as_os_str().as_bytes()) {
            if cand.is_file() && sys::executable(&c) {
                return cand;
            }
        }
    }
    PathBuf::from(program)
}

/// Read the child's `(stage, errno, index)` report, or `None` on EOF (exec succeeded).
fn read_child_error(fd: OwnedFd) -> io::Result<Option<(RawStage, i32, u32)>> {
    let mut f = std::fs::File::from(fd);
    let mut buf = [0u8; 12];
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if n == 0 {
        return Ok(None);
    }
    if n != buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "short spawn error report",
        ));
    }
    let word = |i: usize| u32::from_ne_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
    let stage = RawStage::from_u32(word(0))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad spawn error stage"))?;
    Ok(Some((stage, word(4) as i32, word(8))))
}

fn read_all(fd: OwnedFd) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = std::fs::File::from(fd).read_to_end(&mut v);
    v
}

/// Open the named network namespace `/run/netns/NAME` (as made by `ip netns add NAME`) for
/// [`Command::join_namespace`].
pub fn netns_fd(name: &str) -> io::Result<OwnedFd> {
    if name.contains('/') || name.is_empty() || name == "." || name == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad netns name",
        ));
    }
    Ok(std::fs::File::open(Path::new("/run/netns").join(name))?.into())
}

/// Run `cmd` to completion in the caller's current cgroup and capture its output — the
/// reaper-safe replacement for `std::process::Command::output` (see the crate docs).
pub fn run_to_completion(cmd: &mut Command) -> Result<Output, SpawnError> {
    cmd.output()
}
