//! cgroup v2 for paddock.
//!
//! This crate is the lowest layer of paddock and the one its promise rests on: a sandbox
//! is one cgroup, and when a sandbox ends its cgroup is empty and gone.
//!
//! * **Discovery** — [`mount::discover`] finds the cgroup2 mount in `/proc/self/mountinfo`
//!   (pure v2 at `/sys/fs/cgroup`, hybrid at `/sys/fs/cgroup/unified`, or anywhere else).
//! * **The managed root** — [`Root`] is the one subtree paddock owns (default
//!   `<mount>/paddock`). It enables controllers with a clear error for ones the hierarchy
//!   does not offer, and creates and opens sandbox cgroups by validated [`CgroupName`].
//!   Every access below it goes through directory fds, never through a string path that a
//!   name could redirect.
//! * **A sandbox cgroup** — [`Cgroup`]: an `O_DIRECTORY` fd for
//!   `clone3(CLONE_INTO_CGROUP)`, `cgroup.procs` read recursively, `cgroup.events` read and
//!   awaited ([`EventsWatch`], `POLLPRI`, no sleeps), freeze/thaw, limits, stats with typed
//!   parsers, an ownership tag in a `user.` xattr, and member pidfds.
//! * **Kill** — [`Cgroup::kill`] empties the whole subtree and verifies it: `cgroup.kill`,
//!   repeated whenever the wait for `populated 0` stalls, or freeze-and-signal where
//!   `cgroup.kill` is missing or refused.
//! * **Remove** — [`Cgroup::remove`]: silent `rmdir`; on `EBUSY` a warning, the kill, and a
//!   bottom-up removal retried until a deadline. See [`remove`].
//!
//! The async functions need a tokio runtime with I/O and time drivers.

mod cgroup;
mod counters;
mod dir;
mod error;
mod events;
pub mod kill;
mod limit;
pub mod mount;
mod name;
pub mod owner;
pub mod procinfo;
pub mod remove;
pub mod resources;
mod root;
mod signal;
pub mod stats;

pub use cgroup::{Cgroup, Member, OWNER_XATTR, Stats};
pub use counters::{CounterSnapshot, Counters};
pub use error::{Error, Result};
pub use events::{BACKSTOP, EventsWatch, ExitWatch, MAX_TRACKED_EXITS};
pub use kill::{KillMethod, KillOptions, KillReport, Killed};
pub use limit::{Limit, LimitKind};
pub use name::{CgroupName, INTERFACE_PREFIXES, MAX_NAME_LEN};
pub use owner::{Liveness, Owner};
pub use procinfo::ProcInfo;
pub use remove::{RMDIR_FALLBACK_MESSAGE, RemoveOptions, RemoveReport};
pub use resources::{DeviceNumber, IoMax, Pressure, PressureLine, PsiResource};
pub use root::{DEFAULT_ROOT, Root, RootLock, SANDBOXES, SUPERVISOR_LEAF};
pub use signal::{MAX_FOLLOW_UPS, SignalReport, StopSignal};
pub use stats::{CgroupStat, CpuMax, CpuStat, Events, IoStat, Max, MemoryEvents};
