//! What a jail needs from the node, looked up in the parent before anything is created:
//! user and group names, the rootfs, bind sources and devices, and the seccomp filter
//! compiled to BPF.
//!
//! **Names** are looked up by reading `/etc/passwd` and `/etc/group` — the rootfs's when
//! the jail has one (resolved inside it with `openat2(RESOLVE_IN_ROOT)`, so a symbolic link
//! in the rootfs cannot point the daemon at a host file), as Docker resolves `--user`
//! against the image; the host's otherwise. Not through NSS (`getpwnam_r`, as the `uzers`
//! and `nix` crates do): NSS may load modules into the daemon and ask a directory service
//! over the network with no bound on the wait, and it cannot read a rootfs's files at all.
//! Users known only to a directory service are given by number. The files are opened
//! without blocking (`O_NONBLOCK`), must be regular files, and are read up to
//! [`MAX_DB_SIZE`].
//!
//! Everything here may block (a hung file system): the supervisor runs it on a blocking
//! thread with a deadline.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use paddock_proc::jail::SeccompFilter;
use rustix::fs::{CWD, FileType, Mode, OFlags, ResolveFlags};

use super::{IdOrName, JailSpec, MountSpec, SeccompBuiltin, SeccompSpec, mapped, non_root_caps};

/// Largest `/etc/passwd` or `/etc/group` read: 16 MiB.
pub const MAX_DB_SIZE: u64 = 16 << 20;

/// What was resolved for a jail: the numbers behind its names, and its compiled seccomp
/// filter.
#[derive(Debug, Clone, Default)]
pub(crate) struct Resolved {
    /// The uid the program runs as.
    pub(crate) uid: u32,
    /// The gid it runs as.
    pub(crate) gid: u32,
    /// Its supplementary groups.
    pub(crate) groups: Vec<u32>,
    /// The dynamic uid (and gid) allocated for the sandbox.
    pub(crate) dynamic_uid: Option<u32>,
    /// The compiled filter; `None` for `unconfined`.
    pub(crate) seccomp: Option<SeccompFilter>,
}

/// One entry of `/etc/passwd`: name, uid, primary gid.
pub type PasswdEntry = (String, u32, u32);

/// The entries of an `/etc/passwd` text (`name:x:uid:gid:…`); malformed lines, comments
/// and NIS `+`/`-` lines are skipped.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.starts_with(['#', '+', '-']))
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let _pw = f.next()?;
            let uid = f.next()?.parse().ok()?;
            let gid = f.next()?.parse().ok()?;
            (!name.is_empty()).then(|| (name.to_owned(), uid, gid))
        })
        .collect()
}

/// The entries of an `/etc/group` text (`name:x:gid:members`): name and gid.
pub fn parse_group(text: &str) -> Vec<(String, u32)> {
    text.lines()
        .filter(|l| !l.starts_with(['#', '+', '-']))
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let _pw = f.next()?;
            let gid = f.next()?.parse().ok()?;
            (!name.is_empty()).then(|| (name.to_owned(), gid))
        })
        .collect()
}

/// Where names are looked up: the rootfs (by fd) or the host.
struct Db<'a> {
    rootfs: Option<(&'a Path, OwnedFd)>,
    passwd: Option<String>,
    group: Option<String>,
}

impl Db<'_> {
    fn shown(&self, rel: &str) -> String {
        match &self.rootfs {
            Some((p, _)) => format!("{}/{rel}", p.display()),
            None => format!("/{rel}"),
        }
    }

    /// Reads `etc/passwd` or `etc/group` of the rootfs or the host.
    fn read(&self, rel: &str) -> Result<String, String> {
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let shown = self.shown(rel);
        let fd = match &self.rootfs {
            Some((_, root)) => rustix::fs::openat2(
                root,
                rel,
                flags,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            ),
            None => rustix::fs::openat(CWD, format!("/{rel}"), flags, Mode::empty()),
        }
        .map_err(|e| format!("open {shown}: {}", std::io::Error::from(e)))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| format!("fstat {shown}: {e}"))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(format!("{shown} is not a regular file"));
        }
        let mut text = String::new();
        std::fs::File::from(fd)
            .take(MAX_DB_SIZE + 1)
            .read_to_string(&mut text)
            .map_err(|e| format!("read {shown}: {e}"))?;
        if text.len() as u64 > MAX_DB_SIZE {
            return Err(format!("{shown} is larger than {MAX_DB_SIZE} bytes"));
        }
        Ok(text)
    }

    fn user(&mut self, field: &str, name: &str) -> Result<(u32, u32), String> {
        if self.passwd.is_none() {
            self.passwd = Some(
                self.read("etc/passwd")
                    .map_err(|e| format!("{field}: cannot look up user {name:?}: {e}"))?,
            );
        }
        parse_passwd(self.passwd.as_deref().unwrap_or_default())
            .into_iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, u, g)| (u, g))
            .ok_or_else(|| {
                format!(
                    "{field}: no user {name:?} in {} (give a number instead)",
                    self.shown("etc/passwd")
                )
            })
    }

    fn group(&mut self, field: &str, g: &IdOrName) -> Result<u32, String> {
        if let Some(n) = g.number() {
            return Ok(n);
        }
        let IdOrName::Name(name) = g else {
            unreachable!("a number is handled above")
        };
        if self.group.is_none() {
            self.group = Some(
                self.read("etc/group")
                    .map_err(|e| format!("{field}: cannot look up group {name:?}: {e}"))?,
            );
        }
        parse_group(self.group.as_deref().unwrap_or_default())
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, g)| g)
            .ok_or_else(|| {
                format!(
                    "{field}: no group {name:?} in {} (give a number instead)",
                    self.shown("etc/group")
                )
            })
    }
}

impl Resolved {
    /// The jail of a dynamic user runs as `uid` (and gid `uid`).
    pub(crate) fn set_dynamic(&mut self, uid: u32) {
        self.uid = uid;
        self.gid = uid;
        self.dynamic_uid = Some(uid);
    }
}

/// Resolves what `spec` needs from the node (see the module docs). A failure names the
/// field. A dynamic user's uid and gid are left 0 here, for [`Resolved::set_dynamic`] once
/// one is allocated. Blocking.
pub(crate) fn resolve(spec: &JailSpec) -> Result<Resolved, String> {
    let fs = spec.filesystem.as_ref();
    let rootfs = match fs.and_then(|f| f.rootfs.as_deref()) {
        Some(p) => {
            let fd = rustix::fs::open(
                p,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| match e {
                rustix::io::Errno::NOTDIR => {
                    format!("jail.filesystem.rootfs: {} is not a directory", p.display())
                }
                e => format!(
                    "jail.filesystem.rootfs: {}: {}",
                    p.display(),
                    std::io::Error::from(e)
                ),
            })?;
            Some((p, fd))
        }
        None => None,
    };
    let mut db = Db {
        rootfs,
        passwd: None,
        group: None,
    };
    let user = spec.user.clone().unwrap_or_default();
    let (uid, gid) = if user.dynamic {
        (0, 0)
    } else {
        let (uid, primary) = match &user.uid {
            None => (0, 0),
            Some(u) => match (u.number(), u) {
                (Some(n), _) => (n, n),
                (None, IdOrName::Name(name)) => db.user("jail.user.uid", name)?,
                (None, IdOrName::Id(n)) => (*n, *n),
            },
        };
        let gid = match &user.gid {
            None => primary,
            Some(g) => db.group("jail.user.gid", g)?,
        };
        (uid, gid)
    };
    let mut groups = Vec::with_capacity(user.groups.len());
    for (i, g) in user.groups.iter().enumerate() {
        let n = db.group(&format!("jail.user.groups[{i}]"), g)?;
        if !groups.contains(&n) {
            groups.push(n);
        }
    }
    if !user.dynamic && uid != 0 && !spec.privileges.cap_add.is_empty() {
        return Err(non_root_caps(uid));
    }
    if let Some(m) = &spec.user_ns {
        if !mapped(&m.uid_map, uid) {
            return Err(format!(
                "jail.user.uid: {uid} is not mapped by jail.user_ns.uid_map"
            ));
        }
        if let Some(g) = std::iter::once(&gid)
            .chain(&groups)
            .find(|g| !mapped(&m.gid_map, **g))
        {
            return Err(format!(
                "jail.user: gid {g} is not mapped by jail.user_ns.gid_map"
            ));
        }
    }
    if let Some(fs) = fs {
        for (i, m) in fs.mounts.iter().enumerate() {
            if let MountSpec::Bind { source, .. } = m {
                rustix::fs::stat(source).map_err(|e| {
                    format!(
                        "jail.filesystem.mounts[{i}].source: {}: {}",
                        source.display(),
                        std::io::Error::from(e)
                    )
                })?;
            }
        }
        for (i, d) in fs.devices.iter().enumerate() {
            let st = rustix::fs::stat(d).map_err(|e| {
                format!(
                    "jail.filesystem.devices[{i}]: {}: {}",
                    d.display(),
                    std::io::Error::from(e)
                )
            })?;
            if FileType::from_raw_mode(st.st_mode) != FileType::CharacterDevice {
                return Err(format!(
                    "jail.filesystem.devices[{i}]: {} is not a character device",
                    d.display()
                ));
            }
        }
    }
    let seccomp = compile_seccomp(&spec.seccomp).map_err(|e| format!("jail.seccomp: {e}"))?;
    Ok(Resolved {
        uid,
        gid,
        groups,
        dynamic_uid: None,
        seccomp,
    })
}

/// The refusal of a dynamic user by a supervisor without a uid range.
pub(crate) const DYNAMIC_OFF: &str = "jail.user.dynamic: dynamic users are off here: the supervisor has no uid range (start the daemon with `paddock serve --uid-range FIRST-LAST`; a foreground `paddock run` has none: use `paddock run -d` with a daemon)";

/// Checks a resolved jail against the supervisor's dynamic uid range: a dynamic user needs
/// one, and no other jail may run as (or map onto) an id of it, which would let it signal
/// or ptrace a dynamic-user sandbox.
pub(crate) fn check_dynamic_range(
    spec: &JailSpec,
    r: &Resolved,
    range: Option<crate::uids::UidRange>,
) -> Result<(), String> {
    let dynamic = spec.user.as_ref().is_some_and(|u| u.dynamic);
    let Some(range) = range else {
        return if dynamic {
            Err(DYNAMIC_OFF.into())
        } else {
            Ok(())
        };
    };
    if !dynamic {
        let mapped_out = |map: &[super::IdMapSpec], id: u32| -> Option<u32> {
            map.iter()
                .find(|l| {
                    id >= l.inside && u64::from(id) < u64::from(l.inside) + u64::from(l.count)
                })
                .map(|l| l.outside + (id - l.inside))
        };
        let host = |id: u32, gid: bool| match &spec.user_ns {
            Some(m) => mapped_out(if gid { &m.gid_map } else { &m.uid_map }, id),
            None => Some(id),
        };
        for (what, id, gid) in std::iter::once(("uid", r.uid, false))
            .chain(std::iter::once(("gid", r.gid, true)))
            .chain(r.groups.iter().map(|g| ("group", *g, true)))
        {
            if let Some(h) = host(id, gid)
                && range.contains(h)
            {
                return Err(format!(
                    "jail.user: {what} {h} is in the dynamic uid range {range}, which is kept for dynamic users (use user.dynamic, or an id outside it)"
                ));
            }
        }
        if let Some(m) = &spec.user_ns {
            for (f, map) in [("uid_map", &m.uid_map), ("gid_map", &m.gid_map)] {
                if let Some(i) = map.iter().position(|l| range.overlaps(l.outside, l.count)) {
                    return Err(format!(
                        "jail.user_ns.{f}[{i}]: maps onto the dynamic uid range {range}, which is kept for dynamic users"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The seccomp filter of `s`, compiled to BPF in the parent: `None` for `unconfined`.
/// The error says what is wrong with the profile (the caller adds the field name).
pub fn compile_seccomp(s: &SeccompSpec) -> Result<Option<SeccompFilter>, String> {
    match s {
        SeccompSpec::Builtin(SeccompBuiltin::Unconfined) => Ok(None),
        SeccompSpec::Builtin(SeccompBuiltin::Default) => default_profile().map(Some),
        SeccompSpec::Oci(profile) => {
            let json = serde_json::to_vec(profile).map_err(|e| e.to_string())?;
            from_oci_json(&json).map(Some)
        }
    }
}

/// paddock's default profile (a deny-list comparable to Docker's), compiled.
pub fn default_profile() -> Result<SeccompFilter, String> {
    Ok(SeccompFilter::default_profile())
}

/// An OCI `linux.seccomp` profile (JSON), compiled; what it names that this node does not
/// know (system calls of other architectures) is logged, one warning each.
fn from_oci_json(json: &[u8]) -> Result<SeccompFilter, String> {
    let f = SeccompFilter::from_oci_json(json).map_err(|e| e.to_string())?;
    for w in f.warnings() {
        tracing::warn!(warning = %w, "seccomp profile");
    }
    Ok(f)
}
