//! The spawner's public face: [`Command`] (a builder of everything a spawn needs), what the
//! child's fds connect to ([`Stdio`]), namespaces, the spawn paths, the child-side stages.
//!
//! * `prepare` — turning a `Command` into the raw [`ChildPlan`](crate::sys::ChildPlan) the
//!   child runs (allocations, fds, the gaps to close), all in the parent before the clone.
//! * `spawn` — the clone itself, under the reaper's table lock, with the fallbacks.
//! * `policy` — which clone to try and what to do when the kernel refuses one: pure
//!   functions of the cached detection results and the errno, tested without root.

mod dumpable;
mod policy;
mod prepare;
mod spawn;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

pub(crate) use policy::choose_close_mode;
#[doc(hidden)]
pub use policy::{SpawnCapabilities, spawn_capabilities};
pub(crate) use prepare::os as os_error;

use crate::sys::RawStage;
use crate::{ExitStatus, SpawnError};

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
    /// A new pipe; the parent keeps the other end ([`Process::take_pipe`](crate::Process::take_pipe)). The child reads
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
    /// A new cgroup namespace (`CLONE_NEWCGROUP`): the child's cgroup becomes the root of
    /// its view of the hierarchy.
    pub const CGROUP: Namespaces = Namespaces(libc::CLONE_NEWCGROUP as u64);
    /// A new user namespace (`CLONE_NEWUSER`), with the maps of
    /// [`Jail::id_maps`](crate::jail::Jail::id_maps) written by the parent.
    pub const USER: Namespaces = Namespaces(libc::CLONE_NEWUSER as u64);

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
    /// Waiting for the parent to write the new user namespace's uid and gid maps (`ECHILD`:
    /// the parent gave up).
    UserNsSync,
    /// `sethostname` in the new UTS namespace.
    Hostname,
    /// One of the jail's filesystem steps (the context names the mount or step).
    Filesystem,
    /// Forking the jail's init (pid 1 of the new PID namespace) from the program.
    Init,
    /// `prlimit` of one of the jail's rlimits.
    Rlimit,
    /// The capability sets: bounding set, `PR_SET_KEEPCAPS`, `capset`, the ambient set.
    Capabilities,
    /// `setgroups`, `setresgid` or `setresuid`.
    Credentials,
    /// `prctl(PR_SET_NO_NEW_PRIVS)`.
    NoNewPrivs,
    /// Adding a Landlock rule for a mount the jail made, or `landlock_restrict_self`.
    Landlock,
    /// Installing the seccomp filter.
    Seccomp,
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
            Stage::UserNsSync => "wait for the user namespace maps",
            Stage::Hostname => "sethostname",
            Stage::Filesystem => "filesystem",
            Stage::Init => "start init",
            Stage::Rlimit => "set rlimit",
            Stage::Capabilities => "set capabilities",
            Stage::Credentials => "change credentials",
            Stage::NoNewPrivs => "set no_new_privs",
            Stage::Landlock => "landlock",
            Stage::Seccomp => "install seccomp filter",
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
            RawStage::UserNsSync => Stage::UserNsSync,
            RawStage::Hostname => Stage::Hostname,
            RawStage::Filesystem => Stage::Filesystem,
            RawStage::Init => Stage::Init,
            RawStage::Rlimit => Stage::Rlimit,
            RawStage::Capabilities => Stage::Capabilities,
            RawStage::Credentials => Stage::Credentials,
            RawStage::NoNewPrivs => Stage::NoNewPrivs,
            RawStage::Landlock => Stage::Landlock,
            RawStage::Seccomp => Stage::Seccomp,
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
    jail: Option<crate::jail::Jail>,
    force_fork_like: bool,
}

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
            jail: None,
            force_fork_like: false,
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

    /// Set up `jail` in the child before `execve` (see [`crate::jail`]); replaces an
    /// earlier jail.
    pub fn jail(&mut self, jail: crate::jail::Jail) -> &mut Self {
        self.jail = Some(jail);
        self
    }

    /// The jail, if one was set.
    pub fn get_jail(&self) -> Option<&crate::jail::Jail> {
        self.jail.as_ref()
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

    /// Keep the child's pidfd in the returned [`Process`](crate::Process) ([`Process::pidfd`](crate::Process::pidfd)) when `on`;
    /// default `false`. [`Process::signal`](crate::Process::signal) uses `pidfd_send_signal` either way; a held
    /// pidfd spares it the table lock and a `pidfd_open` per signal, at the cost of one fd
    /// per live child in the process's fd table, which every later spawn copies (see
    /// [`Process`](crate::Process) for the trade-off).
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

    /// Clone like `fork` (never `CLONE_VM | CLONE_VFORK`) when `on`, as jails that change
    /// credentials, make a user namespace or run an init always do; for tests and
    /// measurements.
    #[doc(hidden)]
    pub fn force_fork_like(&mut self, on: bool) -> &mut Self {
        self.force_fork_like = on;
        self
    }

    /// Choose the clone mechanism explicitly (see [`SpawnPath`]).
    pub fn spawn_path(&mut self, path: SpawnPath) -> &mut Self {
        self.path = path;
        self
    }
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
