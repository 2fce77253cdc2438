//! Everything a spawn prepares in the parent before the clone: the C strings, the fd map
//! and the ranges of fds to close, the error pipe, and the raw [`ChildPlan`] pointing into
//! them.

use std::ffi::{CString, OsStr, OsString, c_char};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use rustix::io::Errno;
use rustix::pipe::PipeFlags;

use super::{Command, Namespaces, Stdio};
use crate::SpawnError;
use crate::jail::prepare::PreparedJail;
use crate::sys::{self, ChildPlan, CloseMode, RawStage};

impl Command {
    /// Builds everything the child needs (see [`Prepared`]); consumes the fd map.
    pub(super) fn prepare(&mut self) -> Result<Prepared, SpawnError> {
        let mut jail = match &self.jail {
            Some(j) => Some(PreparedJail::new(j, self.ns_new)?),
            None => None,
        };
        let cstr = |s: &OsStr, what: &str| {
            CString::new(s.as_bytes())
                .map_err(|_| SpawnError::Invalid(format!("{what} contains a NUL byte")))
        };

        // Environment.
        let mut env: Vec<(OsString, OsString)> = if self.env_clear {
            Vec::new()
        } else {
            std::env::vars_os().collect()
        };
        for (k, v) in &self.env {
            env.retain(|(ek, _)| ek != k);
            if let Some(v) = v {
                env.push((k.clone(), v.clone()));
            }
        }
        let mut env_c = Vec::with_capacity(env.len());
        for (k, v) in &env {
            let mut kv = k.clone().into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            env_c.push(
                CString::new(kv)
                    .map_err(|_| SpawnError::Invalid("environment contains a NUL byte".into()))?,
            );
        }

        // Program path and argv.
        let program_path = resolve(&self.program, &env);
        let path_c = cstr(program_path.as_os_str(), "program path")?;
        let mut argv_c = vec![cstr(&self.program, "program")?];
        for a in &self.args {
            argv_c.push(cstr(a, "argument")?);
        }
        let cwd_c = match &self.cwd {
            Some(d) => Some(cstr(d.as_os_str(), "cwd")?),
            None => None,
        };

        // fd plan.
        let mut keep = Vec::new();
        let mut map = Vec::new();
        let mut pipes = Vec::new();
        let mut targets = Vec::new();
        for (target, what) in self.fds.drain(..) {
            if target < 0 {
                return Err(SpawnError::Invalid(format!("negative target fd {target}")));
            }
            targets.push(target);
            let src: OwnedFd = match what {
                Stdio::Inherit if target <= 2 => continue,
                Stdio::Inherit => {
                    map.push((target, target));
                    continue;
                }
                Stdio::Null => std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
                    .map_err(|e| SpawnError::Os {
                        op: "open /dev/null",
                        source: e,
                    })?
                    .into(),
                Stdio::Fd(fd) => fd,
                Stdio::Pipe | Stdio::PipeToChild | Stdio::PipeFromChild => {
                    let (r, w) =
                        rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| os("pipe", e))?;
                    let child_reads = match what {
                        Stdio::PipeToChild => true,
                        Stdio::PipeFromChild => false,
                        _ => target == 0,
                    };
                    let (child, parent) = if child_reads { (r, w) } else { (w, r) };
                    pipes.push((target, parent));
                    child
                }
            };
            map.push((src.as_raw_fd(), target));
            keep.push(src);
        }
        targets.sort_unstable();
        let max_target = targets.last().copied().unwrap_or(2).max(2);
        let above = max_target + 1;
        // Error pipe, write end numbered above every target so the fd map cannot clobber it.
        let (err_read, mut err_write) =
            rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| os("pipe", e))?;
        if err_write.as_raw_fd() < above {
            err_write = rustix::io::fcntl_dupfd_cloexec(&err_write, above)
                .map_err(|e| os("fcntl(F_DUPFD_CLOEXEC)", e))?;
        }

        // The ranges of fds >= 3 the child must not pass on: everything but the targets,
        // the error pipe and the jail's fds the child still uses after the fd map (all of
        // which the child needs until `execve`, and which close themselves then).
        let mut kept_high = vec![err_write.as_raw_fd() as u32];
        if let Some(j) = &mut jail {
            kept_high.extend(j.relocate_fds(above)?.into_iter().map(|fd| fd as u32));
        }
        kept_high.sort_unstable();
        kept_high.dedup();
        let mut gaps = Vec::new();
        let mut start: u32 = 3;
        for &t in targets.iter().filter(|&&t| t >= 3) {
            let t = t as u32;
            if t > start {
                gaps.push((start, t - 1));
            }
            start = start.max(t + 1);
        }
        // Each kept fd >= above > every target, so each is >= start.
        for &k in &kept_high {
            if k > start {
                gaps.push((start, k - 1));
            }
            start = k + 1;
        }
        gaps.push((start, u32::MAX));

        let argv_p = ptr_array(&argv_c);
        let envp_p = ptr_array(&env_c);
        let scratch = vec![-1; map.len()];
        Ok(Prepared {
            program_path,
            path_c,
            _argv_c: argv_c,
            _env_c: env_c,
            argv_p,
            envp_p,
            cwd_c,
            map,
            scratch,
            gaps,
            above,
            _keep: keep,
            pipes,
            err_read,
            err_write,
            procs: None,
            jail,
        })
    }
}

/// Everything allocated in the parent for one spawn. The child-side fds (`_keep`,
/// `err_write`, `procs`) are closed in the parent when this is dropped.
pub(super) struct Prepared {
    pub(super) program_path: PathBuf,
    path_c: CString,
    _argv_c: Vec<CString>,
    _env_c: Vec<CString>,
    argv_p: Vec<*const c_char>,
    envp_p: Vec<*const c_char>,
    cwd_c: Option<CString>,
    map: Vec<(RawFd, RawFd)>,
    scratch: Vec<RawFd>,
    gaps: Vec<(u32, u32)>,
    above: RawFd,
    pub(super) _keep: Vec<OwnedFd>,
    pub(super) pipes: Vec<(RawFd, OwnedFd)>,
    pub(super) err_read: OwnedFd,
    pub(super) err_write: OwnedFd,
    pub(super) procs: Option<OwnedFd>,
    pub(super) jail: Option<PreparedJail>,
}

impl Prepared {
    pub(super) fn plan(
        &mut self,
        procs_fd: Option<RawFd>,
        reset_all: bool,
        close_mode: CloseMode,
        fd_limit: u32,
        cmd: &Command,
    ) -> PlanGuard {
        let ns: Vec<RawFd> = cmd.ns_join.iter().map(|f| f.as_raw_fd()).collect();
        PlanGuard {
            plan: ChildPlan {
                path: self.path_c.as_ptr(),
                argv: self.argv_p.as_ptr(),
                envp: self.envp_p.as_ptr(),
                cwd: self.cwd_c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
                fd_map: self.map.as_ptr(),
                fd_map_len: self.map.len(),
                scratch: self.scratch.as_mut_ptr(),
                gaps: self.gaps.as_ptr(),
                gaps_len: self.gaps.len(),
                above_targets: self.above,
                ns_fds: ns.as_ptr(),
                ns_fds_len: ns.len(),
                procs_fd: procs_fd.unwrap_or(-1),
                err_fd: self.err_write.as_raw_fd(),
                setsid: cmd.setsid,
                pdeathsig: cmd.pdeathsig,
                parent_pid: rustix::process::getpid().as_raw_nonzero().get(),
                new_pid_ns: cmd.ns_new.contains(Namespaces::PID),
                loopback_up: cmd.ns_new.contains(Namespaces::NET),
                reset_all_handlers: reset_all,
                close_mode,
                fd_limit,
                jail: self.jail.as_ref().map_or(std::ptr::null(), |j| j.raw()),
            },
            _ns: ns,
        }
    }
}

/// A [`ChildPlan`] together with the namespace-fd array it points into.
pub(super) struct PlanGuard {
    plan: ChildPlan,
    _ns: Vec<RawFd>,
}

impl std::ops::Deref for PlanGuard {
    type Target = ChildPlan;
    fn deref(&self) -> &ChildPlan {
        &self.plan
    }
}

fn ptr_array(v: &[CString]) -> Vec<*const c_char> {
    v.iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

pub(crate) fn os(op: &'static str, e: Errno) -> SpawnError {
    SpawnError::Os {
        op,
        source: io::Error::from_raw_os_error(e.raw_os_error()),
    }
}

/// Look `program` up in `PATH` (the child's, else the parent's) unless it contains a `/`.
/// Returns it unchanged when nothing matches, so `execve` reports `ENOENT`.
fn resolve(program: &OsStr, env: &[(OsString, OsString)]) -> PathBuf {
    if program.as_bytes().contains(&b'/') || program.is_empty() {
        return PathBuf::from(program);
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let cand = dir.join(program);
        if let Ok(c) = CString::new(cand.as_os_str().as_bytes()) {
            if cand.is_file() && sys::executable(&c) {
                return cand;
            }
        }
    }
    PathBuf::from(program)
}

/// Read the child's `(stage, errno, index)` report, or `None` on EOF (exec succeeded).
pub(super) fn read_child_error(fd: OwnedFd) -> io::Result<Option<(RawStage, i32, u32)>> {
    let mut f = std::fs::File::from(fd);
    let mut buf = [0u8; 12];
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if n == 0 {
        return Ok(None);
    }
    if n != buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "short spawn error report",
        ));
    }
    let word = |i: usize| u32::from_ne_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
    let stage = RawStage::from_u32(word(0))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad spawn error stage"))?;
    Ok(Some((stage, word(4) as i32, word(8))))
}

pub(super) fn read_all(fd: OwnedFd) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = std::fs::File::from(fd).read_to_end(&mut v);
    v
}
