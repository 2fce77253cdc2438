//! The rules of a jail's ruleset: which inodes get which rights (decided from the jail
//! alone), opening them in the parent, and building the ruleset fd with the `landlock`
//! crate.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath,
    Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetError,
};
use rustix::fs::{FileType, Mode, OFlags};

use super::super::{Filesystem, Jail, Mount};
use super::ChildRule;
use crate::{SpawnError, errno_name};

/// The host nodes the minimal `/dev` binds.
pub(super) const MINIMAL_DEV_NODES: [&str; 6] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

/// The rights of a rule, resolved against an ABI when the ruleset is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rights {
    /// Every handled right.
    All,
    /// Execute, read files, list directories (and connect to unix sockets, ABI 9).
    Read,
    /// Read and write a device, and its ioctls (ABI 5).
    Device,
}

/// One rule on an inode opened in the parent, on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Spec {
    pub path: PathBuf,
    pub rights: Rights,
    /// What the rule is for, in messages (`"rootfs /srv/r"`, `"device /dev/kvm"`).
    pub what: String,
}

fn host(path: &Path, rights: Rights, what: String) -> Spec {
    Spec {
        path: path.to_path_buf(),
        rights,
        what,
    }
}

/// The rules on host inodes for a jail's filesystem.
pub(super) fn specs(fs: Option<&Filesystem>) -> Vec<Spec> {
    let tree = || host(Path::new("/"), Rights::Read, "the host tree /".into());
    let Some(fs) = fs else {
        return vec![tree()];
    };
    let mut out = Vec::new();
    match &fs.rootfs {
        Some(root) => {
            let rights = if fs.readonly {
                Rights::Read
            } else {
                Rights::All
            };
            out.push(host(root, rights, format!("rootfs {}", root.display())));
        }
        None => out.push(tree()),
    }
    for m in &fs.mounts {
        if let Mount::Bind {
            source, readonly, ..
        } = m
        {
            let rights = if *readonly { Rights::Read } else { Rights::All };
            out.push(host(
                source,
                rights,
                format!("bind source {}", source.display()),
            ));
        }
    }
    if fs.minimal_dev {
        for node in MINIMAL_DEV_NODES {
            out.push(host(
                Path::new(node),
                Rights::Device,
                format!("/dev node {node}"),
            ));
        }
    }
    for dev in &fs.devices {
        out.push(host(
            dev,
            Rights::Device,
            format!("device {}", dev.display()),
        ));
    }
    out
}

/// The paths (in the program's view) of the writable mounts the jail makes below a
/// read-only enclosing rule: the child adds a rule on each after making its mounts.
pub(super) fn child_rule_paths(fs: Option<&Filesystem>) -> Vec<PathBuf> {
    let Some(fs) = fs else {
        return Vec::new();
    };
    if fs.rootfs.is_some() && !fs.readonly {
        return Vec::new();
    }
    let mut out: Vec<PathBuf> = fs
        .mounts
        .iter()
        .filter_map(|m| match m {
            Mount::Tmpfs { target, .. } | Mount::Mqueue { target } => Some(target.clone()),
            _ => None,
        })
        .collect();
    if fs.minimal_dev {
        out.push(PathBuf::from("/dev"));
    }
    out
}

/// The access rights of `rights` at `abi`, for a directory or (`dir == false`) a file.
pub(super) fn resolve(rights: Rights, abi: u32, dir: bool) -> BitFlags<AccessFs> {
    let abi = ABI::from(abi as i32);
    let all = AccessFs::from_all(abi);
    let r = match rights {
        Rights::All => all,
        Rights::Read => (AccessFs::from_read(abi) | AccessFs::ResolveUnix) & all,
        Rights::Device => (AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev) & all,
    };
    if dir { r } else { r & AccessFs::from_file(abi) }
}

/// Open the inode a rule names (`O_PATH`).
fn open(spec: &Spec) -> Result<OwnedFd, SpawnError> {
    rustix::fs::open(&spec.path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
        let io = io::Error::from(e);
        SpawnError::Invalid(format!(
            "Landlock rule for {}: open {}: {} ({io}); check that the path exists and is \
             reachable by the supervisor",
            spec.what,
            spec.path.display(),
            errno_name(e.raw_os_error()),
        ))
    })
}

fn is_dir(fd: impl AsFd) -> Result<bool, SpawnError> {
    let st = rustix::fs::fstat(fd).map_err(|e| SpawnError::Os {
        op: "fstat a Landlock rule's path",
        source: e.into(),
    })?;
    Ok(FileType::from_raw_mode(st.st_mode) == FileType::Directory)
}

/// A `landlock` crate error as the spawn's error, with the system call's errno when there
/// is one.
fn crate_error(op: &'static str, e: RulesetError) -> SpawnError {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            let source = match io.raw_os_error() {
                Some(n) => io::Error::from_raw_os_error(n),
                None => io::Error::other(e.to_string()),
            };
            return SpawnError::Os { op, source };
        }
        src = s.source();
    }
    SpawnError::Invalid(format!("{op}: {e}"))
}

/// Build the ruleset fd of `jail` for `abi` (which the kernel supports), and the rules the
/// child adds after its mounts.
pub(super) fn build(
    jail: &Jail,
    abi: u32,
    tcp_bind: bool,
    tcp_connect: bool,
) -> Result<(OwnedFd, Vec<ChildRule>), SpawnError> {
    let fs = jail.filesystem.as_ref();
    let mut child_rules = Vec::new();
    for path in child_rule_paths(fs) {
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
            SpawnError::Invalid(format!("mount target {path:?} contains a NUL byte"))
        })?;
        child_rules.push(ChildRule {
            path: c,
            access: resolve(Rights::All, abi, true).bits(),
        });
    }
    // Open every path first: nothing is created if one is missing.
    let mut opened = Vec::new();
    for spec in specs(fs) {
        let fd = open(&spec)?;
        let rights = resolve(spec.rights, abi, is_dir(&fd)?);
        if !rights.is_empty() {
            opened.push((fd, rights));
        }
    }

    let create = "landlock_create_ruleset";
    let abi_v = ABI::from(abi as i32);
    // Hard requirement: `abi` is at most the kernel's, so everything asked is supported, and
    // the crate must not silently drop a right.
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi_v))
        .map_err(|e| crate_error(create, e))?;
    if tcp_bind {
        ruleset = ruleset
            .handle_access(AccessNet::BindTcp)
            .map_err(|e| crate_error(create, e))?;
    }
    if tcp_connect {
        ruleset = ruleset
            .handle_access(AccessNet::ConnectTcp)
            .map_err(|e| crate_error(create, e))?;
    }
    let mut created = ruleset.create().map_err(|e| crate_error(create, e))?;
    let add = "landlock_add_rule";
    for (fd, rights) in opened {
        created = created
            .add_rule(PathBeneath::new(fd, rights))
            .map_err(|e| crate_error(add, e))?;
    }
    let ll = &jail.landlock;
    let ports = [
        (tcp_bind, &ll.tcp_bind, AccessNet::BindTcp),
        (tcp_connect, &ll.tcp_connect, AccessNet::ConnectTcp),
    ];
    for (on, list, access) in ports {
        for &port in list.as_deref().filter(|_| on).unwrap_or_default() {
            created = created
                .add_rule(NetPort::new(port, access))
                .map_err(|e| crate_error(add, e))?;
        }
    }
    let fd = Option::<OwnedFd>::from(created).ok_or_else(|| {
        SpawnError::Invalid(format!(
            "{create}: the landlock crate made no ruleset for ABI {abi} (the kernel's Landlock \
             is not usable)"
        ))
    })?;
    Ok((fd, child_rules))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(source: &str, target: &str, readonly: bool) -> Mount {
        Mount::Bind {
            source: source.into(),
            target: target.into(),
            readonly,
            nosuid: true,
            nodev: true,
            noexec: false,
        }
    }

    fn tmpfs(target: &str) -> Mount {
        Mount::Tmpfs {
            target: target.into(),
            size: None,
            mode: 0o1777,
        }
    }

    #[test]
    fn no_filesystem_is_the_host_tree_read_only() {
        assert_eq!(
            specs(None),
            vec![host(Path::new("/"), Rights::Read, "the host tree /".into())]
        );
        assert!(child_rule_paths(None).is_empty());
    }

    #[test]
    fn writable_rootfs_covers_its_mounts() {
        let fs = Filesystem {
            rootfs: Some("/srv/r".into()),
            mounts: vec![bind("/data", "/data", true), tmpfs("/tmp")],
            minimal_dev: true,
            devices: vec!["/dev/kvm".into()],
            ..Default::default()
        };
        let got: Vec<_> = specs(Some(&fs))
            .into_iter()
            .map(|s| (s.path, s.rights))
            .collect();
        let mut want = vec![
            ("/srv/r".into(), Rights::All),
            ("/data".into(), Rights::Read),
        ];
        want.extend(MINIMAL_DEV_NODES.iter().map(|n| (n.into(), Rights::Device)));
        want.push(("/dev/kvm".into(), Rights::Device));
        assert_eq!(got, want);
        assert!(child_rule_paths(Some(&fs)).is_empty());
    }

    #[test]
    fn read_only_enclosing_rules_need_child_rules_for_writable_mounts() {
        let mut fs = Filesystem {
            rootfs: Some("/srv/r".into()),
            readonly: true,
            mounts: vec![
                tmpfs("/tmp"),
                bind("/host/state", "/var/state", false),
                Mount::Mqueue {
                    target: "/dev/mqueue".into(),
                },
                Mount::Proc {
                    target: "/proc".into(),
                },
            ],
            minimal_dev: true,
            ..Default::default()
        };
        assert_eq!(specs(Some(&fs))[0].rights, Rights::Read);
        let want: Vec<PathBuf> = ["/tmp", "/dev/mqueue", "/dev"].map(PathBuf::from).into();
        assert_eq!(child_rule_paths(Some(&fs)), want);
        // Without a rootfs the host tree is read-only: the same child rules.
        fs.rootfs = None;
        fs.readonly = false;
        assert_eq!(
            specs(Some(&fs))[0],
            host(Path::new("/"), Rights::Read, "the host tree /".into())
        );
        assert_eq!(child_rule_paths(Some(&fs)), want);
    }

    #[test]
    fn rights_follow_the_abi_and_the_file_type() {
        assert_eq!(resolve(Rights::All, 1, true), AccessFs::from_all(ABI::V1));
        assert!(!resolve(Rights::All, 2, true).contains(AccessFs::Truncate));
        assert!(resolve(Rights::All, 3, true).contains(AccessFs::Truncate));
        let ro = resolve(Rights::Read, 7, true);
        assert_eq!(
            ro,
            AccessFs::Execute | AccessFs::ReadFile | AccessFs::ReadDir
        );
        assert!(resolve(Rights::Read, 9, true).contains(AccessFs::ResolveUnix));
        assert_eq!(
            resolve(Rights::Device, 4, false),
            AccessFs::ReadFile | AccessFs::WriteFile
        );
        assert_eq!(
            resolve(Rights::Device, 5, false),
            AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev
        );
        // A file rule never carries directory rights.
        assert!(!resolve(Rights::All, 7, false).contains(AccessFs::MakeReg));
        assert!(!resolve(Rights::Read, 7, false).contains(AccessFs::ReadDir));
    }
}
