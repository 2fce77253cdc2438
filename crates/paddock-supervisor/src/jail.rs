//! The jail of a sandbox ([`JailSpec`], `SandboxSpec::jail`): its own user, privileges,
//! resource limits, namespaces, filesystem, seccomp filter and Landlock rules, set up by the
//! process layer in the child between `clone3` and `execve` (see `paddock_proc::jail`).
//!
//! Three steps, each of its own kind:
//! 1. [`JailSpec::validate`] — pure: every value that is wrong whatever the node is refused
//!    with a message naming the field (`jail.filesystem.mounts[2].target: must be an
//!    absolute path`), before anything is opened, recorded or created. A field whose own
//!    value is wrong ([`JailSpec::validate_fields`]) breaks a rule its JSON schema states
//!    (submodule `schema`, feature `openapi`): the API's 400. Fields that are each valid but
//!    do not fit together ([`JailSpec::check_consistency`]) are the API's 422
//!    ([`crate::Error::Inconsistent`]).
//! 2. `resolve` (submodule `resolve`) — what needs the node, still before anything is
//!    created: user and group names, the rootfs, bind sources and devices, the seccomp
//!    profile compiled to BPF. A failure is [`crate::Error::InvalidSpec`] naming the field
//!    (the API's 422).
//! 3. `proc_jail` (submodule `convert`) — pure: the spec and what was resolved become the
//!    process layer's [`paddock_proc::jail::Jail`] and the namespaces to unshare.
//!
//! Every field is optional; `"jail": {}` is already a jail: the program runs as uid 0 with
//! the minimal capability set [`DEFAULT_ROOT_CAPS`], `no_new_privs`, the default seccomp
//! profile, and no new namespace. See `docs/jail.md` for every default and what each part
//! protects against.

mod convert;
mod resolve;
#[cfg(feature = "openapi")]
pub mod schema;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use convert::namespaces;
pub use convert::{DEFAULT_ROOT_CAPS, capabilities};
pub(crate) use convert::{proc_jail, status};
pub(crate) use resolve::{DYNAMIC_OFF, Resolved, check_dynamic_range, resolve};
pub use resolve::{compile_seccomp, default_profile, parse_group, parse_passwd};
pub use validate::valid_hostname;
pub(crate) use validate::{mapped, non_root_caps};

/// Most entries of `jail.filesystem.mounts`.
pub const MAX_MOUNTS: usize = 64;
/// Most supplementary groups (`jail.user.groups`).
pub const MAX_GROUPS: usize = 64;
/// Most entries of `jail.filesystem.devices`.
pub const MAX_DEVICES: usize = 32;
/// Most entries of `jail.filesystem.masked_paths`.
pub const MAX_MASKED_PATHS: usize = 64;
/// Most lines of each id map of `jail.user_ns` (the kernel takes 340).
pub const MAX_ID_MAP_LINES: usize = 64;
/// Most ports in each of `jail.landlock.tcp_bind` and `tcp_connect`.
pub const MAX_PORTS: usize = 64;
/// Most rules (`syscalls` entries) of an OCI seccomp profile.
pub const MAX_SECCOMP_RULES: usize = 512;
/// Most system call names over all rules of an OCI seccomp profile.
pub const MAX_SECCOMP_NAMES: usize = 4096;
/// Longest path anywhere in a jail, in bytes (`PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest user or group name, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Longest hostname, in bytes (`HOST_NAME_MAX`).
pub const MAX_HOSTNAME_LEN: usize = 64;
/// Largest tmpfs `size`: 1 TiB (a tmpfs is charged to the sandbox's memory as it fills).
pub const MAX_TMPFS_SIZE: u64 = 1 << 40;
/// Largest tmpfs `mode`: `0o7777`.
pub const MAX_TMPFS_MODE: u32 = 0o7777;
/// Largest uid or gid (4294967295, `(uid_t) -1`, means "no id" to the kernel).
pub const MAX_ID: u32 = u32::MAX - 1;

/// A user or group by number, or by name (resolved in the parent: in the rootfs's
/// `/etc/passwd` and `/etc/group` when the jail has a rootfs, as Docker does, else in the
/// host's). A name made only of digits is that number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, expecting = "a uid/gid number or a user/group name")]
pub enum IdOrName {
    /// A number.
    Id(u32),
    /// A name.
    Name(String),
}

impl IdOrName {
    /// The number, when it is one (a name of digits only counts as its number).
    pub fn number(&self) -> Option<u32> {
        match self {
            IdOrName::Id(n) => Some(*n),
            IdOrName::Name(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().ok()
            }
            IdOrName::Name(_) => None,
        }
    }
}

impl std::fmt::Display for IdOrName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdOrName::Id(n) => write!(f, "{n}"),
            IdOrName::Name(s) => write!(f, "{s:?}"),
        }
    }
}

/// The credentials of the jailed program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserSpec {
    /// The uid (default 0). Not with `dynamic`.
    pub uid: Option<IdOrName>,
    /// The gid (default: the user's primary group for a name, the uid's number for a
    /// number, the dynamic uid with `dynamic`).
    pub gid: Option<IdOrName>,
    /// Supplementary groups; none by default (also none from `/etc/group`).
    #[cfg_attr(feature = "openapi", schema(max_items = 64))]
    pub groups: Vec<IdOrName>,
    /// A uid and gid of the daemon's dynamic range (`paddock serve --uid-range`), unique to
    /// this sandbox while any of its processes lives, as systemd's `DynamicUser=`.
    pub dynamic: bool,
}

/// Privileges: `no_new_privs` and the capabilities kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PrivilegesSpec {
    /// `PR_SET_NO_NEW_PRIVS`: setuid bits and file capabilities grant nothing (default
    /// true).
    pub no_new_privs: Option<bool>,
    /// Capabilities kept in addition to the default set (`CAP_NET_ADMIN` or `net_admin`).
    /// Only for uid 0: the ambient set is cleared, so a non-root program keeps none across
    /// `execve`.
    #[cfg_attr(feature = "openapi", schema(schema_with = schema::cap_add))]
    pub cap_add: Vec<String>,
    /// Capabilities dropped from the default set; `ALL` drops every one (then `cap_add`
    /// is the whole set).
    #[cfg_attr(feature = "openapi", schema(schema_with = schema::cap_drop))]
    pub cap_drop: Vec<String>,
}

/// An rlimit value: a number, or `"unlimited"` (`RLIM_INFINITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, expecting = "a number or \"unlimited\"")]
pub enum LimitValue {
    /// A number.
    Value(u64),
    /// `"unlimited"` or `"infinity"`.
    Word(UnlimitedWord),
}

/// The word for `RLIM_INFINITY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum UnlimitedWord {
    /// `RLIM_INFINITY`.
    Unlimited,
    /// `RLIM_INFINITY`.
    Infinity,
}

impl LimitValue {
    /// The raw value (`u64::MAX` is `RLIM_INFINITY`).
    pub fn raw(self) -> u64 {
        match self {
            LimitValue::Value(v) => v,
            LimitValue::Word(_) => u64::MAX,
        }
    }
}

/// A soft and a hard limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RlimitRange {
    /// The soft limit.
    pub soft: LimitValue,
    /// The hard limit (default: the soft one). Must be at least the soft one.
    #[serde(default)]
    pub hard: Option<LimitValue>,
}

impl RlimitRange {
    /// `(soft, hard)` as raw values.
    pub fn raw(&self) -> (u64, u64) {
        let soft = self.soft.raw();
        (soft, self.hard.map_or(soft, LimitValue::raw))
    }
}

/// One entry of the list form of `jail.rlimits`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NamedRlimit {
    /// `nofile`, `NOFILE` or `RLIMIT_NOFILE`.
    #[cfg_attr(feature = "openapi", schema(schema_with = schema::rlimit_name))]
    pub name: String,
    /// The soft limit.
    pub soft: LimitValue,
    /// The hard limit (default: the soft one).
    #[serde(default)]
    pub hard: Option<LimitValue>,
}

/// Resource limits (`setrlimit`), by name: `{"nofile": {"soft": 1024, "hard": 4096}}`, or
/// a list `[{"name": "nofile", "soft": 1024, "hard": 4096}]` (applied in order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "an object {name: {soft, hard}} or a list [{name, soft, hard}] of rlimits"
)]
pub enum RlimitsSpec {
    /// By name.
    Map(BTreeMap<String, RlimitRange>),
    /// A list.
    List(Vec<NamedRlimit>),
}

impl Default for RlimitsSpec {
    fn default() -> Self {
        RlimitsSpec::Map(BTreeMap::new())
    }
}

impl RlimitsSpec {
    /// `(name, range)` in the order they are applied.
    pub fn entries(&self) -> Vec<(&str, RlimitRange)> {
        match self {
            RlimitsSpec::Map(m) => m.iter().map(|(k, v)| (k.as_str(), *v)).collect(),
            RlimitsSpec::List(l) => l
                .iter()
                .map(|r| {
                    (
                        r.name.as_str(),
                        RlimitRange {
                            soft: r.soft,
                            hard: r.hard,
                        },
                    )
                })
                .collect(),
        }
    }

    fn len(&self) -> usize {
        match self {
            RlimitsSpec::Map(m) => m.len(),
            RlimitsSpec::List(l) => l.len(),
        }
    }
}

/// A namespace a jail can unshare (the network is the spec's `network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum NamespaceKind {
    /// `CLONE_NEWPID`: the program sees only its own processes (implies `mount`, for a
    /// fresh `/proc`).
    Pid,
    /// `CLONE_NEWNS`: its own mount table (implied by `filesystem`).
    Mount,
    /// `CLONE_NEWIPC`: its own System V IPC and POSIX message queues.
    Ipc,
    /// `CLONE_NEWUTS`: its own hostname (implied by `hostname`).
    Uts,
    /// `CLONE_NEWCGROUP`: its cgroup is the root of its view.
    Cgroup,
    /// `CLONE_NEWUSER`: its own uids and gids, mapped by `user_ns` (or `user.dynamic`).
    User,
}

/// One line of a uid or gid map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IdMapSpec {
    /// First id inside the namespace.
    #[cfg_attr(feature = "openapi", schema(schema_with = schema::id_map_inside))]
    pub inside: u32,
    /// First id outside (on the host); never 0, never in the dynamic uid range.
    #[cfg_attr(feature = "openapi", schema(schema_with = schema::id_map_outside))]
    pub outside: u32,
    /// How many (at least 1).
    #[cfg_attr(feature = "openapi", schema(schema_with = schema::id_map_count))]
    pub count: u32,
}

/// The id maps of a new user namespace, onto an unprivileged host range. Both maps are
/// required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserNsSpec {
    /// `uid_map` lines (1 to 64; non-overlapping, inside and outside).
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 64))]
    pub uid_map: Vec<IdMapSpec>,
    /// `gid_map` lines (1 to 64; non-overlapping, inside and outside).
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 64))]
    pub gid_map: Vec<IdMapSpec>,
}

/// One mount of a jail (targets are paths in the program's view: under the rootfs when
/// there is one). Missing targets are created under a rootfs; without one (the host's
/// tree) they must exist — paddock creates nothing on the host — else the start is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MountSpec {
    /// A bind mount of a host path.
    Bind {
        /// Host path (absolute).
        #[cfg_attr(feature = "openapi", schema(schema_with = schema::source_path))]
        source: PathBuf,
        /// Path in the jail (absolute, not `/`).
        #[cfg_attr(feature = "openapi", schema(schema_with = schema::target_path))]
        target: PathBuf,
        /// Read-only (default false).
        #[serde(default)]
        readonly: bool,
        /// `nosuid` (default true).
        #[serde(default = "yes")]
        nosuid: bool,
        /// `nodev` (default true).
        #[serde(default = "yes")]
        nodev: bool,
        /// `noexec` (default false).
        #[serde(default)]
        noexec: bool,
    },
    /// A new tmpfs.
    Tmpfs {
        /// Path in the jail.
        #[cfg_attr(feature = "openapi", schema(schema_with = schema::target_path))]
        target: PathBuf,
        /// Size in bytes, at most 1 TiB (default: the kernel's, half of RAM; what it
        /// holds is charged to the sandbox's memory).
        #[serde(default)]
        #[cfg_attr(feature = "openapi", schema(schema_with = schema::tmpfs_size))]
        size: Option<u64>,
        /// Mode of its root (default 0755; at most 07777).
        #[serde(default = "tmpfs_mode")]
        #[cfg_attr(feature = "openapi", schema(schema_with = schema::tmpfs_mode))]
        mode: u32,
    },
    /// A new proc (the jail's processes with a pid namespace).
    Proc {
        /// Path in the jail, usually `/proc`.
        #[cfg_attr(feature = "openapi", schema(schema_with = schema::target_path))]
        target: PathBuf,
    },
    /// A read-only sysfs.
    Sysfs {
        /// Path in the jail, usually `/sys`.
        #[cfg_attr(feature = "openapi", schema(schema_with = schema::target_path))]
        target: PathBuf,
    },
    /// A new mqueue (with an ipc namespace).
    Mqueue {
        /// Path in the jail, usually `/dev/mqueue`.
        #[cfg_attr(feature = "openapi", schema(schema_with = schema::target_path))]
        target: PathBuf,
    },
}

fn yes() -> bool {
    true
}

fn tmpfs_mode() -> u32 {
    0o755
}

impl MountSpec {
    /// The target.
    pub fn target(&self) -> &Path {
        match self {
            MountSpec::Bind { target, .. }
            | MountSpec::Tmpfs { target, .. }
            | MountSpec::Proc { target }
            | MountSpec::Sysfs { target }
            | MountSpec::Mqueue { target } => target,
        }
    }
}

/// What the program sees of the cgroup file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum CgroupFsSpec {
    /// Whatever the mounts give.
    Unchanged,
    /// Every cgroup2 mount in its view read-only.
    Readonly,
    /// Every cgroup2 mount in its view covered by an empty read-only tmpfs (the default
    /// with a mount namespace).
    Hidden,
}

/// The filesystem of the jail (implies a mount namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FilesystemSpec {
    /// A directory that becomes `/` (`pivot_root`); it must exist when the sandbox starts.
    /// Without one: the host's tree, with the mounts on top (as bubblewrap does).
    #[cfg_attr(feature = "openapi", schema(schema_with = schema::rootfs))]
    pub rootfs: Option<PathBuf>,
    /// Remount the root read-only once the mounts are made.
    pub readonly: bool,
    /// Mounts, made in order (at most 64).
    #[cfg_attr(feature = "openapi", schema(max_items = 64))]
    pub mounts: Vec<MountSpec>,
    /// A minimal `/dev` (null, zero, full, random, urandom, tty, ptmx with devpts, shm);
    /// default true with a rootfs.
    pub minimal_dev: Option<bool>,
    /// Host character devices exposed at the same path (`/dev/kvm`, `/dev/net/tun`).
    #[cfg_attr(feature = "openapi", schema(schema_with = schema::devices))]
    pub devices: Vec<PathBuf>,
    /// Paths hidden from the program; default runc's list (`/proc/kcore`, `/proc/keys`,
    /// `/proc/sysrq-trigger`, …), `[]` masks nothing.
    #[cfg_attr(feature = "openapi", schema(schema_with = schema::masked_paths))]
    pub masked_paths: Option<Vec<PathBuf>>,
    /// The cgroup file system: `hidden` (default), `readonly` or `unchanged`.
    pub cgroupfs: Option<CgroupFsSpec>,
}

/// The seccomp filter: `"default"` (a deny-list comparable to Docker's), `"unconfined"`,
/// or a profile in the OCI runtime-spec `linux.seccomp` format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "\"default\", \"unconfined\" or an OCI linux.seccomp object"
)]
pub enum SeccompSpec {
    /// `"default"` or `"unconfined"`.
    Builtin(SeccompBuiltin),
    /// An OCI `linux.seccomp` object (`defaultAction`, `architectures`, `syscalls`).
    Oci(serde_json::Map<String, serde_json::Value>),
}

impl Default for SeccompSpec {
    fn default() -> Self {
        SeccompSpec::Builtin(SeccompBuiltin::Default)
    }
}

/// The built-in seccomp choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SeccompBuiltin {
    /// paddock's default deny-list.
    Default,
    /// No filter.
    Unconfined,
}

/// Whether the jail uses Landlock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum LandlockModeSpec {
    /// On where a rootfs is given and the kernel supports it (a warning otherwise).
    #[default]
    Auto,
    /// Off.
    Off,
    /// On; the start fails where the kernel cannot enforce every rule.
    Required,
}

/// Landlock rules: the rootfs, binds and devices (read-only binds read-only), nothing else;
/// optionally TCP ports (Landlock ABI 4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LandlockSpec {
    /// `auto` (default), `off`, `required`.
    pub mode: LandlockModeSpec,
    /// TCP ports the program may bind; absent: not restricted.
    #[cfg_attr(feature = "openapi", schema(schema_with = schema::tcp_bind))]
    pub tcp_bind: Option<Vec<u16>>,
    /// TCP ports the program may connect to; absent: not restricted.
    #[cfg_attr(feature = "openapi", schema(schema_with = schema::tcp_connect))]
    pub tcp_connect: Option<Vec<u16>>,
}

/// A sandbox's jail. Every field is optional; see the module docs and `docs/jail.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JailSpec {
    /// The credentials (default uid 0, gid 0, no supplementary groups).
    pub user: Option<UserSpec>,
    /// `no_new_privs` and capabilities.
    pub privileges: PrivilegesSpec,
    /// Resource limits by name (at most 16).
    pub rlimits: RlimitsSpec,
    /// Namespaces to unshare beyond the network's; `filesystem` implies `mount`,
    /// `hostname` implies `uts`, `user_ns` implies `user`, `pid` implies `mount`.
    #[cfg_attr(feature = "openapi", schema(schema_with = schema::namespaces))]
    pub namespaces: Vec<NamespaceKind>,
    /// The maps of the user namespace.
    pub user_ns: Option<UserNsSpec>,
    /// The hostname (implies `uts`).
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 64,
            pattern = r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
        )
    )]
    pub hostname: Option<String>,
    /// The filesystem (implies `mount`).
    pub filesystem: Option<FilesystemSpec>,
    /// The seccomp filter (default `"default"`).
    pub seccomp: SeccompSpec,
    /// Landlock.
    pub landlock: LandlockSpec,
    /// A minimal init as pid 1 (default true with a pid namespace; needs one).
    pub init: Option<bool>,
}

/// What a started jail is, as `paddock inspect` and the API show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JailStatus {
    /// The uid the program runs as (in its user namespace, if it has one).
    pub uid: u32,
    /// The gid it runs as.
    pub gid: u32,
    /// Its supplementary groups.
    pub groups: Vec<u32>,
    /// The host uid (and gid) taken from the dynamic range for this sandbox, if any; held
    /// until no process of the sandbox lives.
    pub dynamic_uid: Option<u32>,
    /// The capabilities it keeps (`CAP_*`).
    pub capabilities: Vec<String>,
    /// The Landlock mode asked for.
    pub landlock_mode: LandlockModeSpec,
    /// The Landlock ABI version enforced; `None`: none (off, unsupported, or not known).
    pub landlock_abi: Option<u32>,
}

#[cfg(test)]
mod tests;
