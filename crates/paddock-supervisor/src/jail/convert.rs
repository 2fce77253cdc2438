//! A [`JailSpec`] and what was resolved for it become the process layer's
//! [`Jail`](paddock_proc::jail::Jail) and the namespaces to unshare: pure functions, tested
//! without root.

use std::path::PathBuf;

use paddock_proc::Namespaces;
use paddock_proc::jail::{
    CapSet, CgroupFs, DEFAULT_MASKED_PATHS, Filesystem, IdMap, IdMaps, Jail, Landlock,
    LandlockMode, Mount, Rlimit, User,
};

use super::{
    CgroupFsSpec, JailSpec, JailStatus, LandlockModeSpec, MountSpec, NamespaceKind, PrivilegesSpec,
    Resolved,
};

/// The capabilities a program running as uid 0 in a jail keeps unless the spec says
/// otherwise: Docker's default set without `CAP_MKNOD` (the minimal `/dev` and `devices`
/// are made by paddock), `CAP_NET_RAW` (raw sockets: spoofing, and a long CVE history),
/// `CAP_SETFCAP` (file capabilities, a way back to privileges in user namespaces) and
/// `CAP_AUDIT_WRITE`. What is left lets a root payload manage its own files (`CHOWN`,
/// `DAC_OVERRIDE`, `FOWNER`, `FSETID`), drop to another user (`SETUID`, `SETGID`,
/// `SETPCAP`), signal (`KILL`), `chroot` and bind ports below 1024. Nothing in it touches
/// the kernel's global state; `DAC_OVERRIDE` and `KILL` reach whatever the program can
/// see, so uid 0 is a jail only with a rootfs and a pid namespace (or a user namespace).
pub const DEFAULT_ROOT_CAPS: [&str; 10] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
];

/// The capabilities kept by a program running as `uid`: [`DEFAULT_ROOT_CAPS`] for uid 0,
/// none otherwise; minus `cap_drop` (`ALL`: all of them), plus `cap_add`. Names were
/// checked by [`JailSpec::validate`]; an unknown one here counts as none.
pub fn capabilities(uid: u32, p: &PrivilegesSpec) -> CapSet {
    let base = if uid == 0 {
        CapSet::from_names(&DEFAULT_ROOT_CAPS).expect("the default set's names are known")
    } else {
        CapSet::EMPTY
    };
    let drop = CapSet::from_names(&p.cap_drop).unwrap_or_default();
    let add = CapSet::from_names(&p.cap_add).unwrap_or_default();
    CapSet((base.0 & !drop.0) | add.0)
}

/// The namespaces the jail unshares, explicit and implied (see [`JailSpec::has`]).
pub fn namespaces(spec: &JailSpec) -> Namespaces {
    let mut ns = Namespaces::NONE;
    for (kind, bit) in [
        (NamespaceKind::Pid, Namespaces::PID),
        (NamespaceKind::Mount, Namespaces::MOUNT),
        (NamespaceKind::Ipc, Namespaces::IPC),
        (NamespaceKind::Uts, Namespaces::UTS),
        (NamespaceKind::Cgroup, Namespaces::CGROUP),
        (NamespaceKind::User, Namespaces::USER),
    ] {
        if spec.has(kind) {
            ns = ns | bit;
        }
    }
    ns
}

/// The process layer's jail for `spec` with what [`super::resolve`] found, and the
/// namespaces to unshare (to add to the command's others, such as the network's).
///
/// Defaults applied here: `no_new_privs` on; the capabilities of [`capabilities`] (the
/// ambient set is cleared); with a mount namespace a filesystem (a minimal `/dev` when there
/// is a rootfs, runc's masked paths, the cgroup file system hidden, and a fresh `/proc` at
/// `/proc` with a pid namespace when no proc mount is given); Landlock on (best effort)
/// where there is a rootfs in `auto` mode; init with a pid namespace. A dynamic user in a
/// user namespace is mapped onto itself.
pub(crate) fn proc_jail(spec: &JailSpec, r: &Resolved) -> (Jail, Namespaces) {
    let ns = namespaces(spec);
    let id_maps = match (&spec.user_ns, r.dynamic_uid) {
        (Some(m), _) => Some(IdMaps {
            uid: m.uid_map.iter().map(map_line).collect(),
            gid: m.gid_map.iter().map(map_line).collect(),
        }),
        (None, Some(d)) if ns.contains(Namespaces::USER) => {
            let line = IdMap {
                inside: d,
                outside: d,
                count: 1,
            };
            Some(IdMaps {
                uid: vec![line],
                gid: vec![line],
            })
        }
        _ => None,
    };
    let filesystem = ns.contains(Namespaces::MOUNT).then(|| filesystem(spec, ns));
    let rootfs = spec.filesystem.as_ref().and_then(|f| f.rootfs.as_ref());
    let landlock = Landlock {
        mode: match spec.landlock.mode {
            LandlockModeSpec::Auto if rootfs.is_some() => LandlockMode::BestEffort,
            LandlockModeSpec::Auto | LandlockModeSpec::Off => LandlockMode::Off,
            LandlockModeSpec::Required => LandlockMode::Required,
        },
        tcp_bind: spec.landlock.tcp_bind.clone(),
        tcp_connect: spec.landlock.tcp_connect.clone(),
    };
    let jail = Jail {
        user: Some(User {
            uid: r.uid,
            gid: r.gid,
            groups: r.groups.clone(),
        }),
        no_new_privs: spec.privileges.no_new_privs.unwrap_or(true),
        capabilities: Some(capabilities(r.uid, &spec.privileges)),
        rlimits: spec
            .rlimits
            .entries()
            .into_iter()
            .filter_map(|(name, range)| {
                let (soft, hard) = range.raw();
                Rlimit::from_name(name, soft, hard).ok()
            })
            .collect(),
        id_maps,
        hostname: spec.hostname.as_ref().map(Into::into),
        filesystem,
        landlock,
        seccomp: r.seccomp.clone(),
        init: spec.init.unwrap_or(ns.contains(Namespaces::PID)),
        // A dynamic uid (and its gid) is this sandbox's alone while any of its processes
        // lives (`crate::uids`): the spawn may keep the vfork-like clone.
        exclusive_ids: r.dynamic_uid.is_some(),
    };
    (jail, ns)
}

fn map_line(l: &super::IdMapSpec) -> IdMap {
    IdMap {
        inside: l.inside,
        outside: l.outside,
        count: l.count,
    }
}

/// The filesystem of a jail with a mount namespace.
fn filesystem(spec: &JailSpec, ns: Namespaces) -> Filesystem {
    let fs = spec.filesystem.clone().unwrap_or_default();
    let mut mounts: Vec<Mount> = fs.mounts.iter().map(mount).collect();
    if ns.contains(Namespaces::PID) && !mounts.iter().any(|m| matches!(m, Mount::Proc { .. })) {
        // The host's /proc would show the host's processes (and their roots): a new pid
        // namespace gets its own.
        mounts.push(Mount::Proc {
            target: "/proc".into(),
        });
    }
    Filesystem {
        minimal_dev: fs.minimal_dev.unwrap_or(fs.rootfs.is_some()),
        rootfs: fs.rootfs,
        readonly: fs.readonly,
        mounts,
        devices: fs.devices,
        masked_paths: fs.masked_paths.unwrap_or_else(|| {
            DEFAULT_MASKED_PATHS
                .iter()
                .map(PathBuf::from)
                .collect::<Vec<_>>()
        }),
        cgroupfs: match fs.cgroupfs.unwrap_or(CgroupFsSpec::Hidden) {
            CgroupFsSpec::Unchanged => CgroupFs::Unchanged,
            CgroupFsSpec::Readonly => CgroupFs::ReadOnly,
            CgroupFsSpec::Hidden => CgroupFs::Hidden,
        },
    }
}

fn mount(m: &MountSpec) -> Mount {
    match m.clone() {
        MountSpec::Bind {
            source,
            target,
            readonly,
            nosuid,
            nodev,
            noexec,
        } => Mount::Bind {
            source,
            target,
            readonly,
            nosuid,
            nodev,
            noexec,
        },
        MountSpec::Tmpfs { target, size, mode } => Mount::Tmpfs { target, size, mode },
        MountSpec::Proc { target } => Mount::Proc { target },
        MountSpec::Sysfs { target } => Mount::Sysfs { target },
        MountSpec::Mqueue { target } => Mount::Mqueue { target },
    }
}

/// What `paddock inspect` shows of a started jail, with the Landlock ABI the process
/// layer enforces for it on this kernel (`None`: off or unsupported).
pub(crate) fn status(spec: &JailSpec, r: &Resolved) -> JailStatus {
    let (jail, _) = proc_jail(spec, r);
    let landlock_abi = paddock_proc::jail::landlock::plan(&jail).abi;
    JailStatus {
        uid: r.uid,
        gid: r.gid,
        groups: r.groups.clone(),
        dynamic_uid: r.dynamic_uid,
        capabilities: capabilities(r.uid, &spec.privileges).names(),
        landlock_mode: spec.landlock.mode,
        landlock_abi,
    }
}
