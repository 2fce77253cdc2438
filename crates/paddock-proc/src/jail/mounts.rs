//! The parent side of a jail's filesystem: the flat list of mount operations the child runs
//! (`sys::mount`), planned from a [`Filesystem`] in the order its documentation gives, with
//! every string prepared here and a description of each operation for error messages.

use std::ffi::{CString, c_char, c_ulong};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::{CgroupFs, Filesystem, Mount};
use crate::SpawnError;
use crate::sys::{Create, MountOp, OpKind, RawFs};

/// The host nodes the minimal `/dev` binds.
const DEV_NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// A planned filesystem, owning everything [`RawFs`] points to.
pub(crate) struct PreparedFs {
    raw: Box<RawFs>,
    _ops: Vec<MountOp>,
    _strings: Vec<CString>,
    _arrays: Vec<Vec<*const c_char>>,
    /// What each operation does, for error messages (`bind /srv/data on /data`).
    what: Vec<String>,
}

/// One operation before its strings are pinned.
struct Plan {
    kind: OpKind,
    source: Option<Vec<u8>>,
    target: Vec<u8>,
    fstype: Option<&'static str>,
    flags: c_ulong,
    data: Option<String>,
    create: Create,
    skip_missing: bool,
    /// [`OpKind::NodeIn`]: mode (`S_IFCHR` and permissions), device number, uid, gid.
    node: (u32, u64, u32, u32),
    what: String,
}

impl Plan {
    fn new(kind: OpKind, target: &[u8], what: String) -> Plan {
        Plan {
            kind,
            source: None,
            target: target.to_vec(),
            fstype: None,
            flags: 0,
            data: None,
            create: Create::No,
            skip_missing: false,
            node: (0, 0, 0, 0),
            what,
        }
    }
}

/// The bind of the host's device `host` onto `target` (relative) in the new tree, made as a
/// device node of its own ([`OpKind::NodeIn`], no mount) when `mknod` is allowed and `host`
/// is a character device, else as a bind onto an empty file.
fn device(target: &[u8], host: &Path, what: String, mknod: bool) -> Plan {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut p = Plan::new(OpKind::MountIn, target, what);
    p.source = Some(host.as_os_str().as_bytes().to_vec());
    p.flags = libc::MS_BIND;
    p.create = Create::File;
    match std::fs::metadata(host) {
        Ok(m) if mknod && m.file_type().is_char_device() => {
            p.kind = OpKind::NodeIn;
            p.node = (m.mode(), m.rdev(), m.uid(), m.gid());
        }
        _ => {}
    }
    p
}

/// Without a rootfs the mounts go onto the host's tree, where a missing target would be
/// made in a host directory that the jail does not own (and that outlives it): every target
/// must exist already, unless it is below a tmpfs mounted earlier in `plan` (such as the
/// minimal `/dev`), which belongs to the jail. The error names the mount and what to do.
fn nothing_created_on_the_host(plan: &[Plan]) -> Result<(), SpawnError> {
    let mut tmpfs: Vec<PathBuf> = Vec::new();
    for p in plan
        .iter()
        .filter(|p| matches!(p.kind, OpKind::MountIn | OpKind::NodeIn))
    {
        let target = Path::new("/").join(std::ffi::OsStr::from_bytes(&p.target));
        let in_tmpfs = tmpfs.iter().any(|t| target.starts_with(t) && &target != t);
        if p.create != Create::No && !in_tmpfs && std::fs::symlink_metadata(&target).is_err() {
            return Err(SpawnError::Invalid(format!(
                "{}: the target {} does not exist; without a rootfs the mounts go onto the host's tree, where paddock creates nothing: create it first, or give the jail a rootfs",
                p.what,
                target.display()
            )));
        }
        if p.fstype == Some("tmpfs") {
            tmpfs.push(target);
        }
    }
    Ok(())
}

/// `target` (absolute, in the program's view) relative to the new root, normalised; `.`
/// for the root itself. `..` is refused.
fn relative(target: &Path) -> Result<Vec<u8>, SpawnError> {
    if !target.is_absolute() {
        return Err(SpawnError::Invalid(format!(
            "mount target {} is not absolute",
            target.display()
        )));
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in target.components() {
        match c {
            Component::Normal(p) => parts.push(p.as_bytes()),
            Component::ParentDir => {
                return Err(SpawnError::Invalid(format!(
                    "mount target {} contains ..",
                    target.display()
                )));
            }
            _ => {}
        }
    }
    Ok(if parts.is_empty() {
        b".".to_vec()
    } else {
        parts.join(&b'/')
    })
}

/// `MS_*` flags of the mount holding `path` that a bind remount must keep (a user namespace
/// locks them), from `statvfs`.
fn locked_flags(path: &Path) -> c_ulong {
    let Ok(st) = rustix::fs::statvfs(path) else {
        return 0;
    };
    let f = st.f_flag;
    let mut flags = 0;
    for (st_flag, ms) in [
        (rustix::fs::StatVfsMountFlags::NOSUID, libc::MS_NOSUID),
        (rustix::fs::StatVfsMountFlags::NODEV, libc::MS_NODEV),
        (rustix::fs::StatVfsMountFlags::NOEXEC, libc::MS_NOEXEC),
        (rustix::fs::StatVfsMountFlags::RDONLY, libc::MS_RDONLY),
    ] {
        if f.contains(st_flag) {
            flags |= ms;
        }
    }
    flags
}

/// The host's cgroup2 mount points (from `/proc/self/mountinfo`), read again only when the
/// mount table has changed since the last read.
///
/// The kernel generates mountinfo for every read (tens of microseconds per jailed start
/// with a filesystem, most of what planning it costs); an open mountinfo file reports any
/// change of its mount namespace's table as `POLLPRI` (proc(5)), so the list is cached
/// with such an fd, opened before the read it validates, and polled without waiting at
/// each call. Without the fd (`/proc` not mounted), every call reads again.
fn cgroup2_mounts() -> Vec<PathBuf> {
    use rustix::event::{PollFd, PollFlags, poll};
    use std::sync::Mutex;
    static CACHE: Mutex<Option<(std::os::fd::OwnedFd, Vec<PathBuf>)>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((fd, mounts)) = cache.as_ref() {
        let mut fds = [PollFd::new(fd, PollFlags::PRI)];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        if matches!(poll(&mut fds, Some(&zero)), Ok(0)) {
            return mounts.clone();
        }
    }
    // Opened before the read, so a change after the read (or during it) is seen next time.
    let watch = rustix::fs::open(
        "/proc/self/mountinfo",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    );
    #[cfg(test)]
    MOUNTINFO_READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        *cache = None;
        return Vec::new();
    };
    let mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next()? == "cgroup2")
                .then(|| pre.split_whitespace().nth(4).map(unescape))?
        })
        .collect();
    *cache = watch.ok().map(|fd| (fd, mounts.clone()));
    mounts
}

/// How often [`cgroup2_mounts`] read mountinfo (for its test).
#[cfg(test)]
static MOUNTINFO_READS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Undo mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&out))
}

/// Where the host's cgroup2 mount points appear in the new tree (absolute, in the
/// program's view).
fn visible_cgroup_mounts(fs: &Filesystem) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for m in cgroup2_mounts() {
        match &fs.rootfs {
            None => out.push(m.clone()),
            Some(r) => {
                if let Ok(rest) = m.strip_prefix(r) {
                    out.push(Path::new("/").join(rest));
                }
            }
        }
        for mount in &fs.mounts {
            if let Mount::Bind { source, target, .. } = mount {
                if let Ok(rest) = m.strip_prefix(source) {
                    out.push(target.join(rest));
                } else if source.starts_with(&m) {
                    out.push(target.clone());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

impl PreparedFs {
    /// Plan `fs`.
    /// Plan `fs`; with `mknod` (no user namespace), the minimal `/dev`'s nodes and the
    /// character devices put in it are made with `mknod` rather than bind-mounted.
    pub(crate) fn new(fs: &Filesystem, mknod: bool) -> Result<PreparedFs, SpawnError> {
        let mut plan: Vec<Plan> = Vec::new();
        let mut p = Plan::new(OpKind::Host, b"/", "make the mount tree private".into());
        p.flags = libc::MS_REC | libc::MS_PRIVATE;
        plan.push(p);

        let root_host: PathBuf = match &fs.rootfs {
            Some(r) => {
                if !r.is_absolute() {
                    return Err(SpawnError::Invalid(format!(
                        "rootfs {} is not absolute",
                        r.display()
                    )));
                }
                let rb = r.as_os_str().as_bytes();
                let mut p = Plan::new(
                    OpKind::Host,
                    rb,
                    format!("bind the rootfs {} onto itself", r.display()),
                );
                p.source = Some(rb.to_vec());
                p.flags = libc::MS_BIND | libc::MS_REC;
                plan.push(p);
                r.clone()
            }
            None => PathBuf::from("/"),
        };
        plan.push(Plan::new(
            OpKind::OpenRoot,
            root_host.as_os_str().as_bytes(),
            format!("open the new root {}", root_host.display()),
        ));

        for m in &fs.mounts {
            match m {
                Mount::Bind {
                    source,
                    target,
                    readonly,
                    nosuid,
                    nodev,
                    noexec,
                } => {
                    let meta = std::fs::metadata(source).map_err(|e| {
                        SpawnError::Invalid(format!("bind source {}: {e}", source.display()))
                    })?;
                    let rel = relative(target)?;
                    let what = format!("bind {} on {}", source.display(), target.display());
                    let mut p = Plan::new(OpKind::MountIn, &rel, what.clone());
                    p.source = Some(source.as_os_str().as_bytes().to_vec());
                    p.flags = libc::MS_BIND | libc::MS_REC;
                    p.create = if meta.is_dir() {
                        Create::Dir
                    } else {
                        Create::File
                    };
                    plan.push(p);
                    let mut extra = 0;
                    if *readonly {
                        extra |= libc::MS_RDONLY;
                    }
                    if *nosuid {
                        extra |= libc::MS_NOSUID;
                    }
                    if *nodev {
                        extra |= libc::MS_NODEV;
                    }
                    if *noexec {
                        extra |= libc::MS_NOEXEC;
                    }
                    if extra != 0 {
                        let mut p = Plan::new(
                            OpKind::RemountIn,
                            &rel,
                            format!("remount the {what} with its flags"),
                        );
                        p.flags = libc::MS_REMOUNT | libc::MS_BIND | extra | locked_flags(source);
                        plan.push(p);
                    }
                }
                Mount::Tmpfs { target, size, mode } => {
                    let mut p = Plan::new(
                        OpKind::MountIn,
                        &relative(target)?,
                        format!("tmpfs on {}", target.display()),
                    );
                    p.source = Some(b"tmpfs".to_vec());
                    p.fstype = Some("tmpfs");
                    p.flags = libc::MS_NOSUID | libc::MS_NODEV;
                    p.data = Some(match size {
                        Some(s) => format!("mode={mode:o},size={s}"),
                        None => format!("mode={mode:o}"),
                    });
                    p.create = Create::Dir;
                    plan.push(p);
                }
                Mount::Proc { target } => {
                    let mut p = Plan::new(
                        OpKind::MountIn,
                        &relative(target)?,
                        format!("proc on {}", target.display()),
                    );
                    p.source = Some(b"proc".to_vec());
                    p.fstype = Some("proc");
                    p.flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                    p.create = Create::Dir;
                    plan.push(p);
                }
                Mount::Sysfs { target } => {
                    let mut p = Plan::new(
                        OpKind::MountIn,
                        &relative(target)?,
                        format!("sysfs on {}", target.display()),
                    );
                    p.source = Some(b"sysfs".to_vec());
                    p.fstype = Some("sysfs");
                    p.flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                    p.create = Create::Dir;
                    plan.push(p);
                }
                Mount::Mqueue { target } => {
                    let mut p = Plan::new(
                        OpKind::MountIn,
                        &relative(target)?,
                        format!("mqueue on {}", target.display()),
                    );
                    p.source = Some(b"mqueue".to_vec());
                    p.fstype = Some("mqueue");
                    p.flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                    p.create = Create::Dir;
                    plan.push(p);
                }
            }
        }

        if fs.minimal_dev {
            let mut p = Plan::new(
                OpKind::MountIn,
                b"dev",
                "tmpfs on /dev (minimal /dev)".into(),
            );
            p.source = Some(b"tmpfs".to_vec());
            p.fstype = Some("tmpfs");
            p.flags = libc::MS_NOSUID | libc::MS_NOEXEC;
            p.data = Some("mode=755,size=65536".into());
            p.create = Create::Dir;
            plan.push(p);
            for n in DEV_NODES {
                plan.push(device(
                    format!("dev/{n}").as_bytes(),
                    &Path::new("/dev").join(n),
                    format!("the device /dev/{n} (minimal /dev)"),
                    mknod,
                ));
            }
            let mut p = Plan::new(
                OpKind::MountIn,
                b"dev/pts",
                "devpts on /dev/pts (minimal /dev)".into(),
            );
            p.source = Some(b"devpts".to_vec());
            p.fstype = Some("devpts");
            p.flags = libc::MS_NOSUID | libc::MS_NOEXEC;
            p.data = Some("newinstance,ptmxmode=0666,mode=0620".into());
            p.create = Create::Dir;
            plan.push(p);
            let mut p = Plan::new(
                OpKind::MountIn,
                b"dev/shm",
                "tmpfs on /dev/shm (minimal /dev)".into(),
            );
            p.source = Some(b"tmpfs".to_vec());
            p.fstype = Some("tmpfs");
            p.flags = libc::MS_NOSUID | libc::MS_NODEV;
            p.data = Some("mode=1777".into());
            p.create = Create::Dir;
            plan.push(p);
            for (name, to) in [
                ("ptmx", "pts/ptmx"),
                ("fd", "/proc/self/fd"),
                ("stdin", "/proc/self/fd/0"),
                ("stdout", "/proc/self/fd/1"),
                ("stderr", "/proc/self/fd/2"),
            ] {
                let mut p = Plan::new(
                    OpKind::SymlinkIn,
                    format!("dev/{name}").as_bytes(),
                    format!("symlink /dev/{name} -> {to} (minimal /dev)"),
                );
                p.source = Some(to.as_bytes().to_vec());
                plan.push(p);
            }
        }

        for d in &fs.devices {
            let meta = std::fs::metadata(d)
                .map_err(|e| SpawnError::Invalid(format!("device {}: {e}", d.display())))?;
            let target = relative(d)?;
            // A node of its own only inside the minimal /dev's tmpfs (never in a directory
            // of the rootfs, where it would outlive the jail).
            let in_tmpfs = fs.minimal_dev && target.starts_with(b"dev/");
            let mut p = device(
                &target,
                d,
                format!("the device {}", d.display()),
                mknod && in_tmpfs,
            );
            if meta.is_dir() {
                p.create = Create::Dir;
            }
            plan.push(p);
        }

        for m in &fs.masked_paths {
            plan.push(Plan::new(
                OpKind::MaskIn,
                &relative(m)?,
                format!("mask {}", m.display()),
            ));
        }

        match fs.cgroupfs {
            CgroupFs::Unchanged => {}
            CgroupFs::ReadOnly => {
                for m in visible_cgroup_mounts(fs) {
                    let mut p = Plan::new(
                        OpKind::RemountIn,
                        &relative(&m)?,
                        format!("remount the cgroup filesystem at {} read-only", m.display()),
                    );
                    p.flags = libc::MS_REMOUNT
                        | libc::MS_BIND
                        | libc::MS_RDONLY
                        | libc::MS_NOSUID
                        | libc::MS_NODEV
                        | libc::MS_NOEXEC;
                    p.skip_missing = true;
                    plan.push(p);
                }
            }
            CgroupFs::Hidden => {
                for m in visible_cgroup_mounts(fs) {
                    let mut p = Plan::new(
                        OpKind::MountIn,
                        &relative(&m)?,
                        format!("hide the cgroup filesystem at {}", m.display()),
                    );
                    p.source = Some(b"tmpfs".to_vec());
                    p.fstype = Some("tmpfs");
                    p.flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                    p.data = Some("size=0,mode=555".into());
                    p.skip_missing = true;
                    plan.push(p);
                }
            }
        }

        if fs.rootfs.is_none() {
            nothing_created_on_the_host(&plan)?;
        }
        if let Some(r) = &fs.rootfs {
            plan.push(Plan::new(
                OpKind::Pivot,
                b".",
                format!("pivot_root into {}", r.display()),
            ));
        }
        if fs.readonly {
            let mut p = Plan::new(OpKind::Host, b"/", "remount / read-only".into());
            p.flags = libc::MS_REMOUNT
                | libc::MS_BIND
                | libc::MS_RDONLY
                | (locked_flags(&root_host) & !libc::MS_RDONLY);
            plan.push(p);
        }

        Self::pin(plan)
    }

    /// Turn the plan into C strings and raw operations.
    fn pin(plan: Vec<Plan>) -> Result<PreparedFs, SpawnError> {
        let mut strings: Vec<CString> = Vec::new();
        let mut arrays: Vec<Vec<*const c_char>> = Vec::new();
        let mut ops = Vec::with_capacity(plan.len());
        let mut what = Vec::with_capacity(plan.len());
        let cs = |b: &[u8], strings: &mut Vec<CString>| -> Result<*const c_char, SpawnError> {
            let c = CString::new(b).map_err(|_| {
                SpawnError::Invalid(format!(
                    "{:?} contains a NUL byte",
                    String::from_utf8_lossy(b)
                ))
            })?;
            let p = c.as_ptr();
            strings.push(c);
            Ok(p)
        };
        for p in plan {
            let source = match &p.source {
                Some(s) => cs(s, &mut strings)?,
                None => std::ptr::null(),
            };
            let target = cs(&p.target, &mut strings)?;
            let fstype = match p.fstype {
                Some(s) => cs(s.as_bytes(), &mut strings)?,
                None => std::ptr::null(),
            };
            let data = match &p.data {
                Some(s) => cs(s.as_bytes(), &mut strings)?,
                None => std::ptr::null(),
            };
            let (mut prefixes, mut names) = (Vec::new(), Vec::new());
            if matches!(
                p.kind,
                OpKind::MountIn
                    | OpKind::SymlinkIn
                    | OpKind::RemountIn
                    | OpKind::MaskIn
                    | OpKind::NodeIn
            ) && p.target != b"."
            {
                let mut acc: Vec<u8> = Vec::new();
                for part in p.target.split(|&b| b == b'/') {
                    if !acc.is_empty() {
                        acc.push(b'/');
                    }
                    acc.extend_from_slice(part);
                    prefixes.push(cs(&acc, &mut strings)?);
                    names.push(cs(part, &mut strings)?);
                }
            }
            let n = prefixes.len();
            ops.push(MountOp {
                kind: p.kind,
                source,
                target,
                fstype,
                flags: p.flags,
                data,
                create: p.create,
                skip_missing: p.skip_missing,
                prefixes: prefixes.as_ptr(),
                names: names.as_ptr(),
                n,
                node_mode: p.node.0,
                node_rdev: p.node.1,
                node_uid: p.node.2,
                node_gid: p.node.3,
            });
            arrays.push(prefixes);
            arrays.push(names);
            what.push(p.what);
        }
        let fixed = [&b"/dev/null"[..], b"tmpfs", b"size=0,mode=555"];
        let dev_null = cs(fixed[0], &mut strings)?;
        let tmpfs = cs(fixed[1], &mut strings)?;
        let mask_data = cs(fixed[2], &mut strings)?;
        let raw = Box::new(RawFs {
            ops: ops.as_ptr(),
            ops_len: ops.len(),
            dev_null,
            tmpfs,
            mask_data,
        });
        Ok(PreparedFs {
            raw,
            _ops: ops,
            _strings: strings,
            _arrays: arrays,
            what,
        })
    }

    /// The raw view for the child.
    pub(crate) fn raw(&self) -> *const RawFs {
        &*self.raw
    }

    /// The operation with index `idx`, for an error message.
    pub(crate) fn describe(&self, idx: u32) -> String {
        self.what.get(idx as usize).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    /// The minimal `/dev`'s nodes are nodes of their own (`mknod`, no mount) unless a user
    /// namespace forbids `mknod`; then they are binds of the host's.
    #[test]
    fn minimal_dev_nodes_are_made_with_mknod_outside_a_user_namespace() {
        let fs = Filesystem {
            rootfs: Some("/".into()),
            minimal_dev: true,
            ..Filesystem::default()
        };
        let kinds = |mknod: bool| -> Vec<(String, OpKind)> {
            let p = PreparedFs::new(&fs, mknod).unwrap();
            p.what
                .iter()
                .zip(&p._ops)
                .filter(|(w, _)| w.starts_with("the device /dev/"))
                .map(|(w, op)| (w.clone(), op.kind))
                .collect()
        };
        let nodes = kinds(true);
        assert_eq!(nodes.len(), DEV_NODES.len(), "{nodes:?}");
        for (what, kind) in &nodes {
            let host = what.split_whitespace().nth(2).unwrap();
            let char_dev = std::os::unix::fs::FileTypeExt::is_char_device(
                &std::fs::metadata(host).unwrap().file_type(),
            );
            let want = if char_dev {
                OpKind::NodeIn
            } else {
                OpKind::MountIn
            };
            assert_eq!(*kind, want, "{what}");
        }
        assert!(kinds(false).iter().all(|(_, k)| *k == OpKind::MountIn));
    }

    /// The cached cgroup2 mount list is read again after the mount table changed, and only
    /// then (root: mounts a tmpfs on a temporary directory, removed at the end).
    #[test]
    fn cgroup2_mounts_are_read_again_only_after_a_mount_change() {
        if !rustix::process::geteuid().is_root() {
            eprintln!(
                "skipped cgroup2_mounts_are_read_again_only_after_a_mount_change: needs root (mounts a tmpfs)"
            );
            return;
        }
        let first = cgroup2_mounts();
        let reads = MOUNTINFO_READS.load(Relaxed);
        assert_eq!(cgroup2_mounts(), first);
        assert_eq!(
            MOUNTINFO_READS.load(Relaxed),
            reads,
            "no change, no second read"
        );
        let dir = tempfile::tempdir().unwrap();
        rustix::mount::mount(
            "tmpfs",
            dir.path(),
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .unwrap();
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = rustix::mount::unmount(self.0, rustix::mount::UnmountFlags::DETACH);
            }
        }
        let _unmount = Unmount(dir.path());
        assert_eq!(cgroup2_mounts(), first);
        assert!(
            MOUNTINFO_READS.load(Relaxed) > reads,
            "the mount table changed: read again"
        );
    }
}
