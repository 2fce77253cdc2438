//! Opening the files a sandbox's standard streams go to ([`StdioTarget::File`]).
//!
//! Whoever writes a spec chooses these paths, and the supervisor opens them with its own
//! privileges (root, for the daemon), so every open is defensive:
//! - only **regular files** are opened. The path is first opened with `O_PATH |
//!   O_NOFOLLOW`, which opens nothing (a FIFO does not block, a device's driver is not
//!   called, a symbolic link is not followed), and is checked with `fstat`; only then is
//!   that very inode reopened for reading or appending (through `/proc/self/fd`, so it
//!   cannot be swapped in between) with `O_NONBLOCK`, which a lease answers with
//!   `EWOULDBLOCK` instead of a wait. A missing output file is created with `O_CREAT |
//!   O_EXCL | O_NOFOLLOW`, so the name cannot be a symbolic link either.
//! - with a stdio directory ([`crate::Config::stdio_dir`]) every path is resolved beneath
//!   it by `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`: no
//!   `..` out of it, no symbolic link anywhere on the way. Without one, paths must be
//!   absolute; `O_NOFOLLOW` then guards the last component only.
//! - the opens run on a blocking thread with a deadline ([`STDIO_OPEN_TIMEOUT`]), at most
//!   [`MAX_STDIO_OPENS`] at a time, so a hung NFS or FUSE mount costs one parked thread,
//!   never an async worker.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustix::fs::{CWD, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use tokio::sync::Semaphore;

use crate::Error;
use crate::spec::{SandboxSpec, StdioTarget};

/// How long opening a start's stdio files may take; past it the start fails with
/// [`Error::Unavailable`] and nothing is started (the thread doing the open is left to
/// finish on its own, and closes what it opened).
pub const STDIO_OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Most starts whose stdio files may be being opened at once (each on a blocking thread).
/// An open that hangs keeps its slot until it returns; when all are taken, starts with
/// file targets fail at once with [`Error::Unavailable`].
pub const MAX_STDIO_OPENS: usize = 32;

/// The field names of fds 0, 1, 2 in a spec.
const FIELDS: [&str; 3] = ["stdio.stdin", "stdio.stdout", "stdio.stderr"];

/// The directory stdio files must be beneath (an `O_PATH` fd of it and its path).
#[derive(Debug)]
pub(crate) struct StdioDir {
    fd: OwnedFd,
    /// As configured, made absolute.
    path: PathBuf,
    /// Canonical (no symbolic links), if it differs.
    canonical: Option<PathBuf>,
}

impl StdioDir {
    /// Opens `path`, which must be a directory.
    pub(crate) fn open(path: &Path) -> io::Result<StdioDir> {
        let abs = if path.is_absolute() {
            path.to_owned()
        } else {
            std::env::current_dir()?.join(path)
        };
        let fd = rustix::fs::open(
            &abs,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let canonical = std::fs::canonicalize(&abs).ok().filter(|c| *c != abs);
        Ok(StdioDir {
            fd,
            path: abs,
            canonical,
        })
    }

    /// `p` relative to this directory: a relative path as it is, an absolute one with
    /// this directory's path taken off (`None` when it does not start with it).
    fn relative<'a>(&self, p: &'a Path) -> Option<&'a Path> {
        if p.is_relative() {
            return Some(p);
        }
        std::iter::once(&self.path)
            .chain(&self.canonical)
            .find_map(|d| p.strip_prefix(d).ok())
    }
}

/// The files of a start's [`StdioTarget::File`] streams, by fd, opened in advance.
#[derive(Debug, Default)]
pub(crate) struct StdioFiles(pub(crate) [Option<File>; 3]);

/// Opens the file targets of `spec` on a blocking thread (see the module docs). A target
/// that is not a regular file, is a symbolic link, escapes the stdio directory or cannot be
/// opened for a reason the caller can fix is [`Error::InvalidSpec`] naming the field; a
/// hang is [`Error::Unavailable`]. Specs without file targets return at once.
pub(crate) async fn open_files(
    spec: &SandboxSpec,
    dir: Option<Arc<StdioDir>>,
    slots: &Arc<Semaphore>,
) -> Result<StdioFiles, Error> {
    let targets: Vec<(usize, PathBuf)> =
        [&spec.stdio.stdin, &spec.stdio.stdout, &spec.stdio.stderr]
            .into_iter()
            .enumerate()
            .filter_map(|(fd, t)| match t {
                StdioTarget::File(p) => Some((fd, p.clone())),
                _ => None,
            })
            .collect();
    if targets.is_empty() {
        return Ok(StdioFiles::default());
    }
    let what = targets
        .iter()
        .map(|(fd, p)| format!("{} {}", FIELDS[*fd], p.display()))
        .collect::<Vec<_>>()
        .join(", ");
    run_blocking(slots, STDIO_OPEN_TIMEOUT, &what, move || {
        let mut files = StdioFiles::default();
        for (fd, path) in targets {
            files.0[fd] = Some(open_target(dir.as_deref(), FIELDS[fd], &path, fd != 0)?);
        }
        Ok(files)
    })
    .await?
}

/// Runs `f` on a blocking thread holding one of `slots`, waiting at most `deadline` for it.
/// No free slot, or the deadline passing, is [`Error::Unavailable`] naming `what`; the slot
/// is given back only when `f` returns, however long that takes.
pub(crate) async fn run_blocking<T: Send + 'static>(
    slots: &Arc<Semaphore>,
    deadline: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    let permit = slots.clone().try_acquire_owned().map_err(|_| {
        Error::Unavailable(format!(
            "opening {what}: too many earlier opens of stdio files have not returned (a hung NFS or FUSE mount?); nothing was started, retry later"
        ))
    })?;
    let task = tokio::task::spawn_blocking(move || {
        let r = f();
        drop(permit);
        r
    });
    match tokio::time::timeout(deadline, task).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::Io {
            op: format!("open {what}"),
            cause: io::Error::other(e.to_string()),
        }),
        Err(_) => Err(Error::Unavailable(format!(
            "opening {what} did not finish within {} ms (a hung NFS or FUSE mount?); nothing was started",
            deadline.as_millis()
        ))),
    }
}

fn kind(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "of an unknown file type",
    }
}

/// Opens one target: `write` appends (creating the file if missing), else reads.
pub(crate) fn open_target(
    dir: Option<&StdioDir>,
    field: &str,
    path: &Path,
    write: bool,
) -> Result<File, Error> {
    let bad = |why: String| Error::InvalidSpec(format!("{field}: {}: {why}", path.display()));
    let (base, rel) = match dir {
        Some(d) => match d.relative(path) {
            Some(rel) if !rel.as_os_str().is_empty() => (d.fd.as_fd(), rel),
            _ => {
                return Err(bad(format!(
                    "not beneath the stdio directory {} (the daemon's --stdio-dir); give a path inside it, or one relative to it",
                    d.path.display()
                )));
            }
        },
        None if path.is_relative() => {
            return Err(bad(
                "a relative path; give an absolute one (relative paths are only taken beneath a --stdio-dir)".into(),
            ));
        }
        None => (CWD, path),
    };
    let open = |flags: OFlags, mode: Mode| -> Result<OwnedFd, Errno> {
        match dir {
            Some(_) => rustix::fs::openat2(
                base,
                rel,
                flags,
                mode,
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            ),
            None => rustix::fs::openat(base, rel, flags, mode),
        }
    };
    let failed = |op: &str, e: Errno| -> Error {
        let why = match e {
            Errno::XDEV => format!(
                "escapes the stdio directory {}",
                dir.map_or_else(String::new, |d| d.path.display().to_string())
            ),
            Errno::LOOP => format!(
                "{op}: a symbolic link on the way ({}); stdio paths may not go through symbolic links beneath --stdio-dir",
                io::Error::from(e)
            ),
            Errno::AGAIN => format!(
                "{op}: another process holds a lease on it ({}); retry later",
                io::Error::from(e)
            ),
            _ => format!("{op}: {}", io::Error::from(e)),
        };
        match e {
            // The daemon's own trouble, not the caller's input.
            Errno::MFILE | Errno::NFILE | Errno::NOMEM | Errno::IO => Error::Io {
                op: format!("{field}: {op} {}", path.display()),
                cause: e.into(),
            },
            _ => bad(why),
        }
    };
    let rw = if write {
        OFlags::WRONLY | OFlags::APPEND
    } else {
        OFlags::RDONLY
    };
    // A missing output file is created; if another one appears under the name meanwhile,
    // it is looked at again (a few times: a name that keeps changing is refused).
    for _ in 0..4 {
        let p = match open(
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(p) => p,
            Err(Errno::NOENT) if write => {
                match open(
                    rw | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::NONBLOCK
                        | OFlags::NOCTTY
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o666),
                ) {
                    Ok(f) => return finish(f, field, path),
                    Err(Errno::EXIST) => continue,
                    Err(e) => return Err(failed("create", e)),
                }
            }
            Err(e) => return Err(failed("open", e)),
        };
        let st = rustix::fs::fstat(&p).map_err(|e| failed("fstat", e))?;
        let t = FileType::from_raw_mode(st.st_mode);
        if t != FileType::RegularFile {
            return Err(bad(format!(
                "is {}; a stdio file must be a regular file (FIFOs, devices, sockets, directories and symbolic links are refused; use \"null\" or \"log\" instead)",
                kind(t)
            )));
        }
        // The inode just checked, not whatever the name points to now.
        let f = rustix::fs::open(
            format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&p)),
            rw | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| failed("reopen (through /proc/self/fd)", e))?;
        return finish(f, field, path);
    }
    Err(bad(
        "the name kept being replaced while it was opened; refused".into(),
    ))
}

/// Checks that `f` is a regular file and makes its I/O blocking again (the payload
/// inherits the open file description).
fn finish(f: OwnedFd, field: &str, path: &Path) -> Result<File, Error> {
    let io_err = |op: &str, e: Errno| Error::Io {
        op: format!("{field}: {op} {}", path.display()),
        cause: e.into(),
    };
    let st = rustix::fs::fstat(&f).map_err(|e| io_err("fstat", e))?;
    let t = FileType::from_raw_mode(st.st_mode);
    if t != FileType::RegularFile {
        return Err(Error::InvalidSpec(format!(
            "{field}: {}: is {}; a stdio file must be a regular file",
            path.display(),
            kind(t)
        )));
    }
    let fl = rustix::fs::fcntl_getfl(&f).map_err(|e| io_err("fcntl(F_GETFL)", e))?;
    rustix::fs::fcntl_setfl(&f, fl - OFlags::NONBLOCK).map_err(|e| io_err("fcntl(F_SETFL)", e))?;
    Ok(File::from(f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::{FileTypeExt, symlink};

    fn msg(r: Result<File, Error>) -> String {
        match r {
            Ok(_) => panic!("opened"),
            Err(e) => {
                assert!(matches!(e, Error::InvalidSpec(_)), "{e:?}");
                e.to_string()
            }
        }
    }

    #[test]
    fn only_regular_files_are_opened() {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("fifo");
        rustix::fs::mknodat(CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
        for write in [true, false] {
            // A FIFO without a peer would block either open: it is refused without one.
            let e = msg(open_target(None, "stdio.stdout", &fifo, write));
            assert!(e.contains("stdio.stdout") && e.contains("a FIFO"), "{e}");
            let e = msg(open_target(None, "stdio.stdin", t.path(), write));
            assert!(e.contains("a directory"), "{e}");
            let e = msg(open_target(
                None,
                "stdio.stdin",
                Path::new("/dev/null"),
                write,
            ));
            assert!(e.contains("a character device"), "{e}");
        }
        // A symbolic link is refused, existing target or not, and nothing is written through it.
        let target = t.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = t.path().join("link");
        symlink(&target, &link).unwrap();
        let e = msg(open_target(None, "stdio.stderr", &link, true));
        assert!(
            e.contains("stdio.stderr") && e.contains("symbolic link"),
            "{e}"
        );
        let dangling = t.path().join("dangling");
        symlink(t.path().join("nowhere"), &dangling).unwrap();
        let e = msg(open_target(None, "stdio.stderr", &dangling, true));
        assert!(e.contains("symbolic link"), "{e}");
        assert!(!t.path().join("nowhere").exists());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        // Relative paths need a stdio directory.
        let e = msg(open_target(
            None,
            "stdio.stdout",
            Path::new("out.log"),
            true,
        ));
        assert!(e.contains("relative"), "{e}");
        // A regular file: created, appended to, blocking I/O; stdin reads it.
        let out = t.path().join("out.log");
        let mut f = open_target(None, "stdio.stdout", &out, true).unwrap();
        f.write_all(b"one\n").unwrap();
        let mut f2 = open_target(None, "stdio.stdout", &out, true).unwrap();
        let fl = rustix::fs::fcntl_getfl(&f2).unwrap();
        assert!(
            !fl.contains(OFlags::NONBLOCK) && fl.contains(OFlags::APPEND),
            "{fl:?}"
        );
        f2.write_all(b"two\n").unwrap();
        let mut s = String::new();
        open_target(None, "stdio.stdin", &out, false)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "one\ntwo\n");
        let e = msg(open_target(
            None,
            "stdio.stdin",
            &t.path().join("none"),
            false,
        ));
        assert!(e.contains("No such file"), "{e}");
    }

    #[test]
    fn beneath_the_stdio_dir() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("out");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        let outside = t.path().join("secret");
        std::fs::write(&outside, "keep").unwrap();
        symlink(&outside, root.join("link")).unwrap();
        symlink(t.path(), root.join("up")).unwrap();
        let d = StdioDir::open(&root).unwrap();
        // Inside: relative, absolute, and `..` that stays inside.
        for p in [
            PathBuf::from("a.log"),
            root.join("b.log"),
            PathBuf::from("sub/../sub/c.log"),
        ] {
            open_target(Some(&d), "stdio.stdout", &p, true)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        assert!(root.join("a.log").is_file() && root.join("b.log").is_file());
        assert!(root.join("sub/c.log").is_file());
        for (p, want) in [
            (outside.clone(), "not beneath"),
            (PathBuf::from("../secret"), "escapes"),
            (root.join("../secret"), "escapes"),
            (PathBuf::from("link"), "symbolic link"),
            (PathBuf::from("up/secret"), "symbolic link"),
            (PathBuf::from("up/new.log"), "symbolic link"),
            (root.clone(), "not beneath"),
            (PathBuf::from("/proc/self/fd/0"), "not beneath"),
        ] {
            let e = msg(open_target(Some(&d), "stdio.stdout", &p, true));
            assert!(e.contains(want), "{}: want {want:?} in {e}", p.display());
        }
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");
        assert!(!t.path().join("new.log").exists());
    }

    /// A hung open costs a blocking thread and a slot, never the caller: the deadline
    /// answers, the slot comes back only when the open returns, and with no slot left the
    /// refusal is immediate.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hung_opens_are_bounded() {
        let slots = Arc::new(Semaphore::new(1));
        let (release, hung) = std::sync::mpsc::channel::<()>();
        let t0 = std::time::Instant::now();
        let r = run_blocking(&slots, Duration::from_millis(50), "x", move || {
            hung.recv().ok()
        })
        .await;
        assert!(
            matches!(r, Err(Error::Unavailable(ref m)) if m.contains("did not finish")),
            "{r:?}"
        );
        assert!(t0.elapsed() < Duration::from_secs(2));
        let r = run_blocking(&slots, Duration::from_secs(5), "y", || ()).await;
        assert!(
            matches!(r, Err(Error::Unavailable(ref m)) if m.contains("have not returned")),
            "{r:?}"
        );
        release.send(()).unwrap();
        let back = tokio::time::timeout(Duration::from_secs(10), slots.acquire()).await;
        assert!(back.is_ok(), "the slot never came back");
        drop(back);
        assert_eq!(
            run_blocking(&slots, Duration::from_secs(5), "z", || 7)
                .await
                .unwrap(),
            7
        );
    }
}
