//! Pinned network namespaces, and running code inside one.
//!
//! Namespaces belong to threads: a `setns` changes only the calling thread, and a
//! netlink socket stays bound to the namespace it was created in. So nothing here ever
//! calls `setns` or `unshare` on a caller's thread (a tokio worker would carry the
//! namespace into every task it runs next): [`on_thread`] runs a closure on a new,
//! short-lived std thread that enters the namespace first and ends with it.
//!
//! A namespace is pinned as `ip netns add` does: an empty file `<pin dir>/<name>` with
//! the thread's `/proc/thread-self/ns/net` bind-mounted on it, so it lives on without
//! any process in it, and a restarted supervisor finds it by name. Unlike `ip netns`,
//! the pin directory's mount propagation is left as it is (see the crate docs).

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::mount::UnmountFlags;
use rustix::thread::LinkNameSpaceType;

use crate::error::{Error, Result, libc_errno};
use crate::sys;

/// The default pin directory.
pub const DEFAULT_PIN_DIR: &str = "/run/paddock/netns";

/// `NSFS_MAGIC`: the file system type of namespace files.
const NSFS_MAGIC: u64 = 0x6e73_6673;

/// Runs `f` on a new std thread that is first moved into the network namespace `ns`
/// (`None`: the thread stays in the process's), and returns its result without blocking
/// the async caller. The thread ends when `f` returns, so its namespace never leaks into
/// other work.
pub async fn on_thread<R, F>(what: &str, ns: Option<OwnedFd>, f: F) -> Result<R>
where
    R: Send + 'static,
    F: FnOnce() -> Result<R> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let object = what.to_owned();
    let spawned = std::thread::Builder::new()
        .name("paddock-netns".into())
        .spawn(move || {
            let r = match ns {
                Some(fd) => rustix::thread::move_into_link_name_space(
                    fd.as_fd(),
                    Some(LinkNameSpaceType::Network),
                )
                .map_err(|e| Error::os("enter network namespace", object, e.into()))
                .and_then(|()| f()),
                None => f(),
            };
            let _ = tx.send(r);
        });
    if let Err(e) = spawned {
        return Err(Error::os("start namespace thread for", what, e));
    }
    rx.await.unwrap_or_else(|_| {
        Err(Error::os(
            "namespace thread panicked for",
            what,
            io::Error::other("the thread ended without a result"),
        ))
    })
}

/// A directory of pinned network namespaces.
#[derive(Debug, Clone)]
pub struct NetnsDir {
    path: PathBuf,
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Error::Invalid {
            what: "namespace name",
            value: name.to_owned(),
            reason: "a namespace name is one non-empty path component",
        });
    }
    Ok(())
}

impl NetnsDir {
    /// The pin directory `path` (created, mode 0755, when the first namespace is).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pin file of `name`.
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Creates a new network namespace pinned at `<dir>/<name>` and returns an fd of it.
    /// Fails with `EEXIST` if the name is taken; on failure nothing is left (the pin file
    /// is removed). The namespace has only `lo`, down.
    pub async fn create(&self, name: &str) -> Result<OwnedFd> {
        check_name(name)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&self.path)
            .map_err(|e| Error::os("create pin directory", self.path.display().to_string(), e))?;
        let pin = self.path_of(name);
        let object = pin.display().to_string();
        // The mount point: an empty file, created exclusively (as `ip netns add`).
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(&pin)
            .map_err(|e| Error::os("create namespace pin file", &object, e))?;
        let target = pin.clone();
        let made = on_thread(&object, None, move || {
            sys::unshare_net().map_err(|e| {
                Error::os("create network namespace", target.display().to_string(), e)
            })?;
            rustix::mount::mount_bind("/proc/thread-self/ns/net", &target).map_err(|e| {
                Error::os(
                    "pin network namespace at",
                    target.display().to_string(),
                    e.into(),
                )
            })
        })
        .await;
        if let Err(e) = made {
            let _ = fs::remove_file(&pin);
            return Err(e);
        }
        match self.open(name) {
            Ok(fd) => Ok(fd),
            Err(e) => {
                let _ = self.delete(name);
                Err(e)
            }
        }
    }

    /// Opens the namespace pinned as `name` (`O_RDONLY | O_CLOEXEC`); refuses a pin file
    /// with no namespace mounted on it.
    pub fn open(&self, name: &str) -> Result<OwnedFd> {
        check_name(name)?;
        let pin = self.path_of(name);
        let object = pin.display().to_string();
        let fd = rustix::fs::open(&pin, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| Error::os("open network namespace", &object, e.into()))?;
        let st = rustix::fs::fstatfs(&fd)
            .map_err(|e| Error::os("statfs network namespace", &object, e.into()))?;
        #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
        if st.f_type as u64 != NSFS_MAGIC {
            return Err(Error::os(
                "open network namespace",
                object,
                io::Error::other("the pin file has no namespace mounted on it"),
            ));
        }
        Ok(fd)
    }

    /// Deletes the namespace pinned as `name`: unmounts (lazily: a process that still has
    /// it open keeps it alive, unreachable by name) and unlinks the pin file. Idempotent:
    /// returns whether anything was there.
    pub fn delete(&self, name: &str) -> Result<bool> {
        check_name(name)?;
        let pin = self.path_of(name);
        let object = pin.display().to_string();
        let mut found = false;
        match rustix::mount::unmount(&pin, UnmountFlags::DETACH) {
            Ok(()) => found = true,
            // EINVAL: not a mount point (a pin file left by a crash before the mount).
            Err(e) if e.raw_os_error() == libc_errno::EINVAL => {}
            Err(e) if e.raw_os_error() == libc_errno::ENOENT => return Ok(false),
            Err(e) => return Err(Error::os("unmount network namespace", object, e.into())),
        }
        match fs::remove_file(&pin) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(found),
            Err(e) => Err(Error::os("remove namespace pin file", object, e)),
        }
    }

    /// The names pinned in the directory (empty if it does not exist).
    pub fn list(&self) -> Result<Vec<String>> {
        let rd = match fs::read_dir(&self.path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::os(
                    "list pin directory",
                    self.path.display().to_string(),
                    e,
                ));
            }
        };
        let mut names = Vec::new();
        for entry in rd {
            let entry = entry
                .map_err(|e| Error::os("list pin directory", self.path.display().to_string(), e))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }
}

/// Opens the process's own network namespace (that of its main thread), the "host" side.
pub fn open_host() -> Result<OwnedFd> {
    rustix::fs::open(
        "/proc/self/ns/net",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::os("open host network namespace", "/proc/self/ns/net", e.into()))
}

/// The sysctl file of `net.ipv4.ip_forward`.
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
/// The operation named in the error when it cannot be written.
pub(crate) const WRITE_IP_FORWARD: &str = "write sysctl";

/// Sets `net.ipv4.ip_forward` in the namespace `ns` (a per-namespace sysctl; written from
/// a thread inside it). Egress NAT and published ports need it on in the host namespace;
/// nothing in this crate calls this on its own. A value already in force is not written
/// again.
pub async fn set_ipv4_forwarding(ns: OwnedFd, on: bool) -> Result<()> {
    on_thread("net.ipv4.ip_forward", Some(ns), move || {
        let want = if on { "1" } else { "0" };
        // Already so: no write (which a read-only /proc/sys would refuse).
        if fs::read_to_string(IP_FORWARD).is_ok_and(|v| v.trim() == want) {
            return Ok(());
        }
        fs::write(IP_FORWARD, want).map_err(|e| Error::os(WRITE_IP_FORWARD, IP_FORWARD, e))
    })
    .await
}
