//! Jails: what a spawned child sets up between the clone and `execve` beyond its fds and
//! namespaces — its own credentials, capabilities, rlimits, hostname, filesystem, Landlock
//! rules and seccomp filter, and optionally a minimal init as pid 1 of a new PID namespace.
//!
//! A [`Jail`] is plain data. [`Command::jail`](crate::Command::jail) attaches it to a
//! command; everything the child needs (C strings, mount lists, id maps, the BPF program,
//! the Landlock ruleset fd) is prepared in the parent before the clone, and the child runs
//! only async-signal-safe system calls. A failure comes back through the spawn's error pipe
//! naming the stage (`pivot_root into /srv/jail/x: EINVAL`).
//!
//! Names (users, groups, capabilities, rlimits) are resolved by the caller: this layer takes
//! numbers only, except where a name is the kernel's own (see [`Rlimit::from_name`] and
//! [`CapSet::from_names`]).
//!
//! * `seccomp` — compiling a profile to BPF in the parent ([`SeccompFilter`]).
//! * `landlock` — preparing a Landlock ruleset in the parent ([`Landlock`]).

pub(crate) mod init_image;
pub mod landlock;
mod mounts;
pub(crate) mod prepare;
pub mod seccomp;

use std::ffi::OsString;
use std::path::PathBuf;

pub use init_image::{init_image_in_use, set_init_image};
pub use landlock::{Landlock, LandlockMode};
pub use seccomp::SeccompFilter;

/// Everything a jailed child sets up before `execve`. `Jail::default()` changes nothing.
///
/// New namespaces are asked for with [`Command::unshare`](crate::Command::unshare) as
/// before; a jail's parts that need one (a `rootfs` needs a mount namespace, `id_maps` a
/// user namespace, `hostname` a UTS namespace, `init` a PID namespace) make the spawn fail
/// with [`SpawnError::Invalid`](crate::SpawnError::Invalid) when it is missing.
#[derive(Debug, Clone, Default)]
pub struct Jail {
    /// The credentials the program runs with; `None` keeps the caller's.
    pub user: Option<User>,
    /// `prctl(PR_SET_NO_NEW_PRIVS)`: execve never grants privileges again (setuid bits,
    /// file capabilities).
    pub no_new_privs: bool,
    /// The capabilities the program keeps: the bounding set is cut down to them, and the
    /// permitted, effective and inheritable sets are exactly them. The ambient set is
    /// cleared; for a non-root uid each kept capability is then raised in it, so they
    /// survive `execve` (uid 0 gets them through the bounding set). `None` leaves them as
    /// the credential change leaves them.
    pub capabilities: Option<CapSet>,
    /// Resource limits set with `prlimit`, in order.
    pub rlimits: Vec<Rlimit>,
    /// uid/gid maps of a new user namespace, written by the parent while the child waits.
    /// Requires [`Namespaces::USER`](crate::Namespaces::USER).
    pub id_maps: Option<IdMaps>,
    /// Hostname of a new UTS namespace.
    pub hostname: Option<OsString>,
    /// The filesystem the program sees. Requires [`Namespaces::MOUNT`](crate::Namespaces::MOUNT).
    pub filesystem: Option<Filesystem>,
    /// Landlock rules, enforced after everything else but seccomp.
    pub landlock: Landlock,
    /// A seccomp filter, installed last before `execve`.
    pub seccomp: Option<SeccompFilter>,
    /// Run a minimal init as pid 1 of the new PID namespace, the program as its child: it
    /// forwards signals to the program, reaps every process, and exits with the program's
    /// status. Requires [`Namespaces::PID`](crate::Namespaces::PID).
    pub init: bool,
    /// No other process runs, or will run while this child lives, with the uid or gid of
    /// [`user`](Self::user) (a dynamic user's, unique to the sandbox). A credential change
    /// then keeps the vfork-like clone, which copies none of the spawner's page tables:
    /// nothing could signal, stop or trace the child while it still shares the spawner's
    /// memory (the kernel makes that memory non-dumpable at the uid change; the spawner's
    /// own setting is restored once no such child shares it any more). Otherwise a change
    /// of uid or gid clones like `fork`.
    pub exclusive_ids: bool,
}

/// A uid, a gid and supplementary groups, as numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Real, effective and saved uid.
    pub uid: u32,
    /// Real, effective and saved gid.
    pub gid: u32,
    /// Supplementary groups (`setgroups`); empty clears them.
    pub groups: Vec<u32>,
}

/// A set of Linux capabilities, bit `n` for capability number `n` (`CAP_CHOWN` = 0, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapSet(pub u64);

impl CapSet {
    /// No capability.
    pub const EMPTY: CapSet = CapSet(0);

    /// The set named by `names` (`"CAP_NET_ADMIN"` or `"net_admin"`, any case; `"ALL"` for
    /// every capability the kernel knows). An unknown name is an error naming it.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<CapSet, String> {
        let mut set = 0u64;
        for n in names {
            let n = n.as_ref();
            let up = n.to_ascii_uppercase();
            if up == "ALL" {
                set |= (1u64 << (CAP_NAMES.len())) - 1;
                continue;
            }
            let bare = up.strip_prefix("CAP_").unwrap_or(&up);
            match CAP_NAMES.iter().position(|c| *c == bare) {
                Some(i) => set |= 1 << i,
                None => return Err(format!("unknown capability {n:?}")),
            }
        }
        Ok(CapSet(set))
    }

    /// The names of the capabilities in the set, as `CAP_*`.
    pub fn names(self) -> Vec<String> {
        CAP_NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, n)| format!("CAP_{n}"))
            .collect()
    }
}

/// Capability names by number (`linux/capability.h`, up to `CAP_CHECKPOINT_RESTORE` = 40).
pub const CAP_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// One resource limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// The `RLIMIT_*` number.
    pub resource: u32,
    /// Soft limit; `u64::MAX` is `RLIM_INFINITY`.
    pub soft: u64,
    /// Hard limit; `u64::MAX` is `RLIM_INFINITY`. Must be >= `soft`.
    pub hard: u64,
}

/// `RLIMIT_*` names (without the prefix, lower case) by number.
pub const RLIMIT_NAMES: [&str; 16] = [
    "cpu",
    "fsize",
    "data",
    "stack",
    "core",
    "rss",
    "nproc",
    "nofile",
    "memlock",
    "as",
    "locks",
    "sigpending",
    "msgqueue",
    "nice",
    "rtprio",
    "rttime",
];

impl Rlimit {
    /// The limit named `name` (`"nofile"`, `"NOFILE"` or `"RLIMIT_NOFILE"`). An unknown
    /// name or `soft > hard` is an error naming it.
    pub fn from_name(name: &str, soft: u64, hard: u64) -> Result<Rlimit, String> {
        let low = name.to_ascii_lowercase();
        let bare = low.strip_prefix("rlimit_").unwrap_or(&low);
        let resource = RLIMIT_NAMES
            .iter()
            .position(|n| *n == bare)
            .ok_or_else(|| format!("unknown rlimit {name:?}"))? as u32;
        if soft > hard {
            return Err(format!(
                "rlimit {name}: soft limit {soft} above hard limit {hard}"
            ));
        }
        Ok(Rlimit {
            resource,
            soft,
            hard,
        })
    }

    /// The limit's name, lower case without the prefix.
    pub fn name(&self) -> &'static str {
        RLIMIT_NAMES
            .get(self.resource as usize)
            .copied()
            .unwrap_or("?")
    }
}

/// One line of `/proc/PID/uid_map` or `gid_map`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    /// First id inside the namespace.
    pub inside: u32,
    /// First id outside (in the parent's user namespace).
    pub outside: u32,
    /// How many ids.
    pub count: u32,
}

/// The uid and gid maps of a new user namespace. `setgroups` is denied in the namespace
/// (written before the gid map) unless the parent is privileged over the mapped gids.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdMaps {
    /// `uid_map` lines.
    pub uid: Vec<IdMap>,
    /// `gid_map` lines.
    pub gid: Vec<IdMap>,
}

/// The filesystem of a jailed program, set up in its new mount namespace.
///
/// Order: the whole tree is made recursively private (so nothing propagates back to the
/// host); with a `rootfs` it is bind-mounted onto itself; `mounts` are made in order
/// (targets relative to the new root); the minimal `/dev` and `devices`; `masked_paths`;
/// the cgroup filesystem read-only or hidden; `pivot_root` into the rootfs and the old root
/// detached; the root remounted read-only when `readonly`.
#[derive(Debug, Clone, Default)]
pub struct Filesystem {
    /// The directory that becomes `/` (`pivot_root`). `None`: the host tree with `mounts`
    /// on top, as bubblewrap does.
    pub rootfs: Option<PathBuf>,
    /// Remount the new root read-only (after the mounts are made).
    pub readonly: bool,
    /// Mounts, made in order.
    pub mounts: Vec<Mount>,
    /// A minimal `/dev` on a tmpfs: null, zero, full, random, urandom, tty (bind-mounted
    /// from the host), ptmx with a new devpts instance, and a tmpfs `shm`.
    pub minimal_dev: bool,
    /// Host devices to expose at the same path (`/dev/kvm`, `/dev/net/tun`), bind-mounted.
    pub devices: Vec<PathBuf>,
    /// Paths hidden from the program (`/dev/null` bound over files, an empty read-only
    /// tmpfs over directories), as runc masks `/proc/kcore` and the like.
    pub masked_paths: Vec<PathBuf>,
    /// What the program sees of the cgroup filesystem.
    pub cgroupfs: CgroupFs,
}

/// The paths runc masks by default.
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/sysrq-trigger",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// What a jailed program sees of the cgroup filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CgroupFs {
    /// Whatever the mounts give (nothing is done).
    #[default]
    Unchanged,
    /// Every cgroup2 mount visible in the new tree remounted read-only.
    ReadOnly,
    /// Every cgroup2 mount visible in the new tree covered by an empty read-only tmpfs.
    Hidden,
}

/// One mount of a jail. Targets are absolute paths in the program's view (under the
/// rootfs when there is one); missing targets are created (a directory, or an empty file
/// for a bind of a file) under a rootfs or below a tmpfs of the jail. Without a rootfs the
/// mounts go onto the host's tree, where nothing is created: a missing target there is
/// [`SpawnError::Invalid`](crate::SpawnError::Invalid) before the clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// A bind mount of a host path.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Path in the program's view.
        target: PathBuf,
        /// Read-only (remounted with `MS_RDONLY`).
        readonly: bool,
        /// `MS_NOSUID`.
        nosuid: bool,
        /// `MS_NODEV`.
        nodev: bool,
        /// `MS_NOEXEC`.
        noexec: bool,
    },
    /// A new tmpfs.
    Tmpfs {
        /// Path in the program's view.
        target: PathBuf,
        /// Size in bytes; `None` is the kernel's default (half of RAM).
        size: Option<u64>,
        /// Mode of its root directory.
        mode: u32,
    },
    /// A new proc instance (needs a new PID namespace to show only the jail's processes).
    Proc {
        /// Path in the program's view, usually `/proc`.
        target: PathBuf,
    },
    /// A read-only sysfs.
    Sysfs {
        /// Path in the program's view, usually `/sys`.
        target: PathBuf,
    },
    /// A new mqueue instance (needs a new IPC namespace).
    Mqueue {
        /// Path in the program's view, usually `/dev/mqueue`.
        target: PathBuf,
    },
}
