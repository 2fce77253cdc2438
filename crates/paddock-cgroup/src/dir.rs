//! A cgroup directory held open, and the file operations paddock does on it.
//!
//! Every operation is relative to the directory's fd (`openat`-style), so a name can only
//! ever address a file of this one cgroup; nothing is resolved through a string path.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::{Error, Result};

/// An open cgroup directory: its fd, its absolute path (for messages) and its path inside
/// the hierarchy (as `/proc/<pid>/cgroup` shows it).
#[derive(Debug)]
pub(crate) struct Dir {
    pub fd: OwnedFd,
    pub path: PathBuf,
    pub hier: String,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW);

impl Dir {
    /// Opens the directory at an absolute path (only used for the mount and the root).
    pub fn open_abs(path: &Path, hier: String) -> Result<Dir> {
        let fd = rustix::fs::open(path, DIR_FLAGS, Mode::empty())
            .map_err(|e| Error::io("open", path, e))?;
        Ok(Dir {
            fd,
            path: path.to_owned(),
            hier,
        })
    }

    /// Opens the child directory `name` (one validated component).
    pub fn open_child(&self, name: &str) -> Result<Dir> {
        let path = self.path.join(name);
        let fd = rustix::fs::openat(&self.fd, name, DIR_FLAGS, Mode::empty())
            .map_err(|e| Error::io("open", &path, e))?;
        Ok(Dir {
            fd,
            path,
            hier: join_hier(&self.hier, name),
        })
    }

    /// Creates the child directory `name`; `Ok(false)` if it already existed.
    pub fn mkdir_child(&self, name: &str) -> Result<bool> {
        match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o755)) {
            Ok(()) => Ok(true),
            Err(Errno::EXIST) => Ok(false),
            Err(e) => Err(Error::io("mkdir", self.path.join(name), e)),
        }
    }

    /// Removes the (empty) child cgroup `name`.
    pub fn rmdir_child(&self, name: &str) -> std::result::Result<(), Errno> {
        rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR)
    }

    /// Reads the interface file `file` whole.
    pub fn read(&self, file: &str) -> Result<String> {
        read_at(self.fd.as_fd(), file).map_err(|e| Error::io("read", self.path.join(file), e))
    }

    /// Reads `file`, or `None` if this cgroup has no such file (controller not enabled).
    pub fn read_opt(&self, file: &str) -> Result<Option<String>> {
        match read_at(self.fd.as_fd(), file) {
            Ok(s) => Ok(Some(s)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::io("read", self.path.join(file), e)),
        }
    }

    /// Writes `data` to the interface file `file` in one `write`.
    pub fn write(&self, file: &str, data: &str) -> Result<()> {
        write_at(self.fd.as_fd(), file, data)
            .map_err(|e| Error::io("write", self.path.join(file), e))
    }

    /// Opens the interface file `file` for writing, to write it more than once.
    pub fn open_file(&self, file: &str) -> Result<OwnedFd> {
        rustix::fs::openat(
            &self.fd,
            file,
            OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open", self.path.join(file), e))
    }

    /// Writes `data` in one `write` to `fd`, an interface file `file` opened with
    /// [`Dir::open_file`].
    pub fn write_open(&self, fd: &OwnedFd, file: &str, data: &str) -> Result<()> {
        loop {
            match rustix::io::write(fd, data.as_bytes()) {
                Ok(_) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(Error::io("write", self.path.join(file), e)),
            }
        }
    }

    /// Names of the child directories (child cgroups).
    pub fn children(&self) -> Result<Vec<String>> {
        let mut dir = rustix::fs::Dir::read_from(&self.fd)
            .map_err(|e| Error::io("readdir", &self.path, e))?;
        let mut out = Vec::new();
        while let Some(ent) = dir.read() {
            let ent = ent.map_err(|e| Error::io("readdir", &self.path, e))?;
            if ent.file_type() != rustix::fs::FileType::Directory {
                continue;
            }
            let name = ent.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            out.push(String::from_utf8_lossy(name).into_owned());
        }
        Ok(out)
    }

    /// The PIDs listed in this directory's `cgroup.procs`; `Ok(None)` when the cgroup has
    /// vanished. A line that is not a PID is an error naming the file.
    ///
    /// A threaded cgroup refuses to list processes (`EOPNOTSUPP`: a process's threads may
    /// be spread over several cgroups of a threaded subtree). For it, the processes that
    /// have at least one thread here are returned: the thread IDs of `cgroup.threads`,
    /// each mapped to its process by the `Tgid` of `/proc/<tid>/status`.
    pub fn procs(&self) -> Result<Option<Vec<i32>>> {
        match read_at(self.fd.as_fd(), "cgroup.procs") {
            Ok(s) => parse_pids(&s, "cgroup.procs", &self.path).map(Some),
            Err(Errno::OPNOTSUPP) => self.thread_owners(),
            Err(Errno::NOENT) | Err(Errno::NODEV) => Ok(None),
            Err(e) => Err(Error::io("read", self.path.join("cgroup.procs"), e)),
        }
    }

    /// The processes owning the threads of a threaded cgroup (see [`Dir::procs`]), each
    /// once; `Ok(None)` when the cgroup has vanished. A thread that exits while it is being
    /// looked up is passed over.
    fn thread_owners(&self) -> Result<Option<Vec<i32>>> {
        let text = match read_at(self.fd.as_fd(), "cgroup.threads") {
            Ok(s) => s,
            Err(Errno::NOENT) | Err(Errno::NODEV) => return Ok(None),
            Err(e) => return Err(Error::io("read", self.path.join("cgroup.threads"), e)),
        };
        let mut out: Vec<i32> = Vec::new();
        for tid in parse_pids(&text, "cgroup.threads", &self.path)? {
            let status = format!("/proc/{tid}/status");
            let tgid = match std::fs::read_to_string(&status) {
                Ok(s) => parse_status_tgid(&s).ok_or_else(|| {
                    Error::parse(
                        "/proc/<tid>/status",
                        &s,
                        format!("no Tgid line in {status}"),
                    )
                })?,
                // The thread exited after cgroup.threads was read.
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(Errno::SRCH.raw_os_error()) =>
                {
                    continue;
                }
                Err(e) => {
                    return Err(Error::io(
                        "read",
                        status,
                        Errno::from_io_error(&e).unwrap_or(Errno::IO),
                    ));
                }
            };
            if !out.contains(&tgid) {
                out.push(tgid);
            }
        }
        Ok(Some(out))
    }

    /// PIDs of this cgroup and every descendant (for threaded ones, the processes owning
    /// their threads; a process can appear more than once). Errors are returned; only a
    /// descendant that vanished while being walked is passed over.
    pub fn procs_recursive(&self, out: &mut Vec<i32>) -> Result<()> {
        if let Some(p) = self.procs()? {
            out.extend(p);
        }
        if !self.may_have_children() {
            return Ok(());
        }
        for child in self.children()? {
            match self.open_child(&child) {
                Ok(d) => d.procs_recursive(out)?,
                Err(e) if matches!(e.errno(), Some(Errno::NOENT) | Some(Errno::NODEV)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// False only when the directory certainly has no child cgroups: a cgroupfs directory's
    /// link count is 2 plus its number of subdirectories, and one `fstat` is much cheaper
    /// than reading the directory.
    pub fn may_have_children(&self) -> bool {
        rustix::fs::fstat(&self.fd).map_or(true, |st| st.st_nlink > 2)
    }

    pub fn borrowed(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Parses the text of `file` (`cgroup.procs` or `cgroup.threads`) of the cgroup at `dir`:
/// one positive ID per line.
pub(crate) fn parse_pids(text: &str, file: &'static str, dir: &Path) -> Result<Vec<i32>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| match l.trim().parse::<i32>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(Error::parse(
                file,
                l,
                format!(
                    "line {} of {} is not a PID",
                    i + 1,
                    dir.join(file).display()
                ),
            )),
        })
        .collect()
}

/// The `Tgid` (the process a thread belongs to) from the text of `/proc/<tid>/status`.
pub(crate) fn parse_status_tgid(status: &str) -> Option<i32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
        .filter(|&p: &i32| p > 0)
}

/// Joins a hierarchy path and a child name.
pub(crate) fn join_hier(parent: &str, name: &str) -> String {
    if parent.ends_with('/') {
        format!("{parent}{name}")
    } else {
        format!("{parent}/{name}")
    }
}

fn read_at(dir: BorrowedFd<'_>, file: &str) -> std::result::Result<String, Errno> {
    let fd = rustix::fs::openat(dir, file, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    read_fd(fd.as_fd())
}

/// Reads an open interface file from offset 0 to its end.
///
/// cgroup interface files are seq files, which fill the caller's buffer until it is full
/// or the file ends; a read that leaves room in the buffer has reached the end, which
/// saves the extra `read` that would return 0.
pub(crate) fn read_fd(fd: BorrowedFd<'_>) -> std::result::Result<String, Errno> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let room = buf.len() - len;
        match rustix::io::pread(fd, &mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if n < room {
                    break;
                }
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|_| Errno::ILSEQ)
}

fn write_at(dir: BorrowedFd<'_>, file: &str, data: &str) -> std::result::Result<(), Errno> {
    let fd = rustix::fs::openat(dir, file, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())?;
    loop {
        match rustix::io::write(&fd, data.as_bytes()) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_parse_and_malformed_lines_name_the_file() {
        let p = Path::new("/sys/fs/cgroup/x");
        assert_eq!(
            parse_pids("12\n345\n", "cgroup.procs", p).unwrap(),
            vec![12, 345]
        );
        assert_eq!(
            parse_pids("", "cgroup.procs", p).unwrap(),
            Vec::<i32>::new()
        );
        for bad in ["12\nabc\n", "-1\n", "0\n", "99999999999\n"] {
            let e = parse_pids(bad, "cgroup.procs", p).unwrap_err().to_string();
            assert!(e.contains("/sys/fs/cgroup/x/cgroup.procs"), "{e}");
            assert!(e.contains("is not a PID"), "{e}");
        }
        let e = parse_pids("12\nabc\n", "cgroup.procs", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2 of"), "{e}");
    }

    #[test]
    fn tgid_from_status() {
        let real = "Name:\tpython3\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t27389\n\
                    Ngid:\t0\nPid:\t27432\nPPid:\t1\n";
        assert_eq!(parse_status_tgid(real), Some(27389));
        assert_eq!(parse_status_tgid("Name:\tx\nPid:\t3\n"), None);
        assert_eq!(parse_status_tgid("Tgid:\tabc\n"), None);
        assert_eq!(parse_status_tgid("Tgid:\t0\n"), None);
        let own = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        assert_eq!(parse_status_tgid(&own), Some(std::process::id() as i32));
    }
}
