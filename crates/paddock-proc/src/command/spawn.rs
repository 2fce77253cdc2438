//! The spawn: prepare, clone under the reaper's table lock (falling back as the
//! [`policy`](super::policy) decides), register the child, and wait for its exec report.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use super::policy::{self, Next};
use super::prepare::{Prepared, os, read_all, read_child_error};
use super::{Command, Output, Stage, Stdio};
use crate::jail::prepare::PreparedJail;
use crate::sys::{self, RawStage};
use crate::{ExitStatus, Process, SpawnError, reaper};

impl Command {
    /// Spawn into the cgroup whose directory `cgroup` refers to (opened with
    /// `O_DIRECTORY`, or `O_PATH`). The child is a member from its first instruction on the
    /// clone3 path and before `execve` on the fallback paths.
    pub fn spawn_in(&mut self, cgroup: BorrowedFd<'_>) -> Result<Process, SpawnError> {
        self.spawn_at(Some(cgroup))
    }

    /// Spawn into the caller's current cgroup. Meant for helper programs; a supervisor
    /// always uses [`Command::spawn_in`].
    pub fn spawn(&mut self) -> Result<Process, SpawnError> {
        self.spawn_at(None)
    }

    /// Low-level spawn: into `cgroup`, or into the caller's current cgroup when `None`.
    ///
    /// Starts the reaper first if it is not running ([`crate::start_reaper`]); its
    /// start-up failure, or its death, is this spawn's error, and nothing is cloned then.
    pub fn spawn_at(&mut self, cgroup: Option<BorrowedFd<'_>>) -> Result<Process, SpawnError> {
        reaper::ensure_started()?;
        let mut prep = self.prepare()?;
        let (close_mode, fd_limit) = policy::close_mode(self.close_method);
        let has_cgroup = cgroup.is_some();
        let mut kind = policy::first_attempt(self.path, policy::detected());
        let caller = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        let fork_like = policy::needs_fork_like(
            self.jail.as_ref(),
            self.ns_new,
            self.force_fork_like,
            caller,
            prep.jail
                .as_ref()
                .is_some_and(PreparedJail::uses_init_image),
        );
        let mut probing_eperm = false;
        // A vfork-like child that changes credentials makes the kernel clear the spawner's
        // `dumpable` flag (see `dumpable`): restored once no such child shares the memory.
        let _dumpable = (!fork_like
            && self
                .jail
                .as_ref()
                .is_some_and(|j| policy::changes_ids(j, caller)))
        .then(super::dumpable::Guard::enter);

        let (pid, pidfd, slot) = loop {
            let needs_procs = policy::needs_procs_write(kind, has_cgroup);
            if let (true, None, Some(cg)) = (needs_procs, &prep.procs, cgroup) {
                let fd = rustix::fs::openat(
                    cg,
                    "cgroup.procs",
                    OFlags::WRONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| os("open cgroup.procs of the target cgroup", e))?;
                prep.procs = Some(fd);
            }
            let procs_fd = if needs_procs {
                prep.procs.as_ref().map(|f| f.as_raw_fd())
            } else {
                None
            };
            let reset_all = policy::resets_all_handlers(kind);
            let plan = prep.plan(procs_fd, reset_all, close_mode, fd_limit, self);

            let mut table = reaper::lock_table();
            let mask = sys::block_all_signals();
            // SAFETY: `plan` points into `prep` and `plan`'s own namespace array, both of
            // which live, unchanged, until after this call; every signal is blocked in this
            // thread until `restore_signals`.
            let r = unsafe { sys::clone_child(kind, fork_like, self.ns_new.bits(), cgroup, &plan) };
            sys::restore_signals(mask);
            match r {
                Ok(c) => {
                    let pidfd = match c.pidfd {
                        Some(fd) => Ok(Some(fd)),
                        // Race-free: the child cannot be reaped by the reaper while we hold
                        // the table lock, so `pid` still names it (at worst as a zombie).
                        None if self.keep_pidfd => sys::pidfd_open(c.pid).map(Some),
                        // Not kept: the reaper opens its own.
                        None => Ok(None),
                    };
                    match &pidfd {
                        // ESRCH: the kernel already reaped it (SIGCHLD ignored); the pid
                        // may be reused, so send nothing.
                        Err(e) if e.raw_os_error() != Some(libc::ESRCH) => {
                            // Still under the table lock, so the pid is still our child.
                            sys::kill_unreaped_child(c.pid);
                        }
                        _ => {}
                    }
                    let slot = table.insert(c.pid);
                    drop(table);
                    reaper::wake();
                    let pidfd = match pidfd {
                        Ok(fd) => fd,
                        Err(e) => {
                            drop(prep);
                            slot.wait_blocking(None);
                            return Err(SpawnError::Os {
                                op: "pidfd_open",
                                source: e,
                            });
                        }
                    };
                    if let Some(finding) = policy::after_success(kind, probing_eperm) {
                        policy::record(finding);
                    }
                    break (c.pid, pidfd, slot);
                }
                Err(e) => {
                    drop(table);
                    match policy::after_error(kind, e, has_cgroup, policy::detected()) {
                        Next::Retry {
                            kind: next,
                            finding,
                            probing_eperm: probing,
                        } => {
                            if let Some(finding) = finding {
                                policy::record(finding);
                            }
                            kind = next;
                            probing_eperm = probing;
                        }
                        Next::NotLeaf => return Err(SpawnError::CgroupNotLeaf),
                        Next::Fail { op, errno } => return Err(os(op, errno)),
                    }
                }
            }
        };

        // Close the parent's copies of everything that was meant for the child.
        let Prepared {
            err_read,
            err_write,
            pipes,
            program_path,
            _keep,
            procs,
            mut jail,
            ..
        } = prep;
        drop((err_write, _keep, procs));
        // Kept only on request (see `Process`); the clone3 paths always get one.
        let pidfd = if self.keep_pidfd { pidfd } else { None };
        let process = Process {
            pid,
            slot,
            pipes,
            pidfd,
        };

        // A user namespace's maps, written while the child waits for them.
        if let Some(Err(e)) = jail.as_mut().map(|j| j.after_clone(pid)) {
            let _ = process.kill();
            process.wait_blocking();
            // A child that failed before waiting reported its own stage: that is the error.
            return match read_child_error(err_read) {
                Ok(Some((stage, errno, idx))) if stage != RawStage::UserNsSync => {
                    Err(self.child_error(stage, errno, idx, &program_path, pid, jail.as_ref()))
                }
                _ => Err(e),
            };
        }

        match read_child_error(err_read) {
            Ok(None) => Ok(process),
            Ok(Some((stage, errno, idx))) => {
                process.wait_blocking();
                Err(self.child_error(stage, errno, idx, &program_path, pid, jail.as_ref()))
            }
            Err(e) => {
                // Cannot tell whether exec happened; make sure nothing is left.
                let _ = process.kill();
                process.wait_blocking();
                Err(SpawnError::Os {
                    op: "read the spawn error pipe",
                    source: e,
                })
            }
        }
    }

    /// Spawn in the current cgroup with stdin from `/dev/null` (unless mapped) and
    /// stdout/stderr captured, wait for it through the reaper, and return its output. Use
    /// this instead of `std::process::Command::output` in processes using this crate.
    pub fn output(&mut self) -> Result<Output, SpawnError> {
        if !self.fds.iter().any(|(t, _)| *t == 0) {
            self.stdin(Stdio::Null);
        }
        self.stdout(Stdio::PipeFromChild)
            .stderr(Stdio::PipeFromChild);
        let mut p = self.spawn()?;
        let out = p.take_stdout().expect("stdout is piped");
        let err = p.take_stderr().expect("stderr is piped");
        let t = std::thread::spawn(move || read_all(err));
        let stdout = read_all(out);
        let stderr = t.join().unwrap_or_default();
        let status = p.wait_blocking();
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    /// Spawn in the current cgroup, wait for it through the reaper and return its status.
    pub fn status(&mut self) -> Result<ExitStatus, SpawnError> {
        Ok(self.spawn()?.wait_blocking())
    }

    fn child_error(
        &self,
        stage: RawStage,
        errno: i32,
        idx: u32,
        program: &Path,
        pid: i32,
        jail: Option<&PreparedJail>,
    ) -> SpawnError {
        let raw = stage;
        if raw == RawStage::Init && idx == 9 {
            // The init could not exec the image: later inits fork instead.
            crate::jail::init_image::refused(errno);
        }
        let stage = Stage::from(stage);
        if stage == Stage::Cgroup && errno == libc::EBUSY {
            return SpawnError::CgroupNotLeaf;
        }
        let context = match stage {
            Stage::Exec => program.display().to_string(),
            Stage::Chdir => self
                .cwd
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            Stage::Setns => format!("namespace #{idx}"),
            Stage::FdMap => format!("map entry #{idx}"),
            Stage::Cgroup => "(write cgroup.procs)".into(),
            _ => jail.map(|j| j.describe(raw, idx)).unwrap_or_default(),
        };
        SpawnError::Child {
            stage,
            errno,
            context,
            pid,
        }
    }
}
