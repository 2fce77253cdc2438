//! What `serve` sets up before it serves, each step checked before anything is changed:
//! the state directory (never chmodded), its lock and the daemon's identity, the token
//! file, the socket path and group, the listeners, and the descriptor limit with the
//! connection caps that fit under it.

use super::*;

/// Raises the `RLIMIT_NOFILE` soft limit to the hard limit (connections, log files and
/// pidfds all take descriptors); returns the soft limit in force.
pub(crate) fn raise_nofile() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    let soft = lim.current.unwrap_or(u64::MAX);
    if lim.current == lim.maximum {
        return soft;
    }
    match setrlimit(
        Resource::Nofile,
        Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        },
    ) {
        Ok(()) => {
            tracing::debug!(from = soft, to = ?lim.maximum, "raised the RLIMIT_NOFILE soft limit to the hard limit");
            lim.maximum.unwrap_or(u64::MAX)
        }
        Err(e) => {
            tracing::warn!(soft, hard = ?lim.maximum, error = %e, "could not raise the RLIMIT_NOFILE soft limit to the hard limit");
            soft
        }
    }
}

/// The connection caps in force under the descriptor limit `nofile`: `(tcp, unix)`.
///
/// The daemon keeps `max(32, nofile / 8)` descriptors for itself (the store, log files
/// being opened, stops in progress, pidfds of adopted sandboxes), and the TCP cap is
/// lowered, with a WARN, so that TCP can never take the descriptors of the first
/// [`UNIX_ROOM`] unix-socket connections: a TCP flood never locks the operator out. A
/// unix cap that does not fit is kept (the socket's users are trusted) with a WARN: at
/// the limit its accepts fail with `EMFILE` and back off until connections close.
pub fn connection_caps(tcp: Option<u64>, unix: u64, nofile: u64) -> (u64, u64) {
    let reserve = (nofile / 8).max(32);
    let tcp = tcp.map(|want| {
        let room = nofile.saturating_sub(reserve + unix.min(UNIX_ROOM)).max(1);
        if want > room {
            tracing::warn!(
                nofile,
                max_connections = want,
                lowered_to = room,
                "--max-connections lowered to fit RLIMIT_NOFILE beside the unix socket's room; raise the hard limit (LimitNOFILE= in the unit, ulimit -Hn) to allow more"
            );
        }
        want.min(room)
    });
    let used = tcp.unwrap_or(0) + unix + reserve;
    if used > nofile {
        tracing::warn!(
            nofile,
            max_unix_connections = unix,
            "the connection caps do not fit under RLIMIT_NOFILE: at the limit unix-socket accepts fail with EMFILE and back off until connections close; raise the hard limit or lower --max-unix-connections"
        );
    }
    (tcp.unwrap_or(0), unix)
}

/// Takes the state directory's lock; the returned fd holds it until dropped.
pub(crate) fn lock_state_dir(dir: &Path) -> Result<OwnedFd> {
    let path = dir.join("paddock.lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open lock file {}", path.display()))?;
    let fd = OwnedFd::from(f);
    match rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another paddock daemon is already using state directory {} (lock file {} is held{}); \
                 stop it first or pass a different --state-dir",
                dir.display(),
                path.display(),
                holder
                    .trim()
                    .parse::<u32>()
                    .map(|p| format!(" by pid {p}"))
                    .unwrap_or_default()
            );
        }
        Err(e) => bail!("lock {}: {e}", path.display()),
    }
    let _ = rustix::fs::ftruncate(&fd, 0);
    let _ = rustix::io::pwrite(&fd, format!("{}\n", std::process::id()).as_bytes(), 0);
    Ok(fd)
}

/// Largest token file read, in bytes.
pub(crate) const MAX_TOKEN_FILE: u64 = 4096;

/// The file in the state directory that holds the daemon's identity.
pub const OWNER_ID_FILE: &str = "owner-id";

/// The daemon's identity, the owner tag of its sandboxes' cgroups (`daemon:<id>`): kept in
/// [`OWNER_ID_FILE`] in the state directory (made on first start from 128 random bits), so
/// a restarted daemon adopts its sandboxes and no other instance on the root takes them.
/// Called with the state directory locked.
pub(crate) fn daemon_owner(dir: &Path) -> Result<Owner> {
    let path = dir.join(OWNER_ID_FILE);
    match fs::read_to_string(&path) {
        Ok(s) => {
            return Owner::daemon(s.trim()).with_context(|| {
                format!(
                    "{} holds {:?}, not a daemon identity (32 lowercase hex digits); it names the \
                     owner of this daemon's sandboxes, so it is not replaced: restore it, or \
                     remove it only if no sandbox of this state directory runs",
                    path.display(),
                    s.trim()
                )
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    }
    let mut bytes = [0u8; 16];
    let mut got = 0;
    while got < bytes.len() {
        got += rustix::rand::getrandom(&mut bytes[got..], rustix::rand::GetRandomFlags::empty())
            .context("getrandom for the daemon's identity")?;
    }
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // Written whole under another name and renamed, so a crash leaves no half identity.
    let tmp = dir.join(format!("{OWNER_ID_FILE}.tmp"));
    {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("create {}", tmp.display()))?;
        std::io::Write::write_all(&mut f, format!("{id}\n").as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("write {}", tmp.display()))?;
    }
    fs::rename(&tmp, &path)
        .with_context(|| format!("rename {} to {}", tmp.display(), path.display()))?;
    tracing::info!(owner = %format!("daemon:{id}"), file = %path.display(), "made this daemon's identity");
    Ok(Owner::daemon(&id).expect("32 hex digits"))
}

pub(crate) fn read_token(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    // Opened without blocking (a FIFO planted there answers at once) and checked on the
    // open file, so what is checked is what is read.
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32)
        .open(path)
        .with_context(|| format!("open token file {}", path.display()))?;
    let meta = f
        .metadata()
        .with_context(|| format!("stat token file {}", path.display()))?;
    if !meta.is_file() {
        bail!("token file {} is not a regular file", path.display());
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        bail!(
            "token file {} is owned by uid {}, not by the user the daemon runs as (uid {me}): whoever owns it can change the token (chown it to uid {me}, or use another file)",
            path.display(),
            meta.uid()
        );
    }
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "token file {} has mode {:o}: it must not be readable or writable by group or others (chmod 600 it)",
            path.display(),
            mode & 0o7777
        );
    }
    let mut tok = String::new();
    (&mut f)
        .take(MAX_TOKEN_FILE + 1)
        .read_to_string(&mut tok)
        .with_context(|| format!("read token file {}", path.display()))?;
    if tok.len() as u64 > MAX_TOKEN_FILE {
        bail!(
            "token file {} is longer than {MAX_TOKEN_FILE} bytes",
            path.display()
        );
    }
    let tok = tok.trim();
    if tok.len() < 16 {
        bail!(
            "token file {}: the token must be at least 16 characters",
            path.display()
        );
    }
    Ok(tok.as_bytes().to_vec())
}

/// Resolves `--socket-group` (a name from /etc/group, or a number).
pub fn group_id(name: &str) -> Result<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    let groups = fs::read_to_string("/etc/group").context("read /etc/group")?;
    for line in groups.lines() {
        let mut f = line.split(':');
        if f.next() == Some(name) {
            let gid = f.nth(1).and_then(|g| g.parse().ok());
            if let Some(g) = gid {
                return Ok(g);
            }
        }
    }
    bail!("--socket-group {name}: no such group")
}

/// Checks that `--socket` names nothing, or a socket: any other file there is refused
/// (never deleted). Returns whether a socket is there.
pub fn check_socket_path(path: &Path) -> Result<bool> {
    use std::os::unix::fs::FileTypeExt;
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => Ok(true),
        Ok(m) => bail!(
            "--socket {}: there is a {} at that path, not a socket; paddock does not delete it (remove it yourself, or choose another --socket)",
            path.display(),
            if m.is_dir() {
                "directory"
            } else if m.file_type().is_symlink() {
                "symbolic link"
            } else if m.is_file() {
                "regular file"
            } else {
                "special file"
            }
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("stat --socket {}", path.display())),
    }
}

/// Binds the API socket at `path`: mode 0600, or 0660 with group `gid` (`--socket-group`,
/// resolved before). A stale socket there is replaced; anything else there is refused. If
/// setting the owner or mode fails, the socket file is removed again.
pub(crate) fn bind_socket(
    path: &Path,
    gid: Option<(&str, u32)>,
) -> Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    // We hold the state lock, but the socket path could be shared with another daemon's
    // state dir: refuse if something answers on it.
    if check_socket_path(path)? {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("socket {} is in use by a running daemon", path.display());
        }
        fs::remove_file(path).with_context(|| format!("remove stale socket {}", path.display()))?;
    }
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let l = tokio::net::UnixListener::bind(path);
    rustix::process::umask(old);
    let l = l.with_context(|| format!("bind {}", path.display()))?;
    let access = || -> Result<()> {
        match gid {
            Some((g, gid)) => {
                rustix::fs::chown(path, None, Some(rustix::fs::Gid::from_raw(gid)))
                    .with_context(|| format!("chgrp {g} {}", path.display()))?;
                fs::set_permissions(path, fs::Permissions::from_mode(0o660))
                    .with_context(|| format!("chmod 660 {}", path.display()))
            }
            None => fs::set_permissions(path, fs::Permissions::from_mode(0o600))
                .with_context(|| format!("chmod 600 {}", path.display())),
        }
    };
    if let Err(e) = access() {
        drop(l);
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(l)
}

/// Prepares the state directory: creates it (mode 0700) if missing; an existing one is
/// used as it is — its mode is never changed — and must be owned by the user the daemon
/// runs as (root) and not be writable by group or others.
pub fn prepare_state_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match fs::metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent)
                    .with_context(|| format!("create {}", parent.display()))?;
            }
            match fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => return Ok(()),
                // Made meanwhile by someone else: checked below like any existing one.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("create state directory {}", dir.display()));
                }
            }
        }
        Err(e) => return Err(e).with_context(|| format!("stat state directory {}", dir.display())),
    }
    let m = fs::metadata(dir).with_context(|| format!("stat state directory {}", dir.display()))?;
    if !m.is_dir() {
        bail!("--state-dir {}: not a directory", dir.display());
    }
    let me = rustix::process::geteuid().as_raw();
    let mode = m.mode() & 0o7777;
    if m.uid() != me {
        bail!(
            "--state-dir {}: owned by uid {}, not by the user the daemon runs as (uid {me}); its owner could tamper with the daemon's database and logs. Use a directory of the daemon's own (e.g. a new path, which paddock creates with mode 0700), or chown it to uid {me}",
            dir.display(),
            m.uid()
        );
    }
    if mode & 0o022 != 0 {
        bail!(
            "--state-dir {}: mode {mode:o} lets group or others write to it, so they could tamper with the daemon's database and logs; paddock does not change the mode of a directory it did not create. Use a directory of the daemon's own (e.g. a new path, which paddock creates with mode 0700), or chmod go-w it",
            dir.display()
        );
    }
    Ok(())
}

/// The listen backlog of the TCP listener: connections beyond `--max-connections` wait
/// here (the kernel caps it at `net.core.somaxconn`).
pub const TCP_BACKLOG: u32 = 1024;

/// Binds the TCP listener (`SO_REUSEADDR`, like the standard library's) with a backlog of
/// [`TCP_BACKLOG`].
pub(crate) fn bind_tcp(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let s = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(TCP_BACKLOG)
}
