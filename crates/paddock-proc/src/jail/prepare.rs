//! The parent side of a jail: turning a [`Jail`] into a [`PreparedJail`] that owns
//! everything the child needs (C strings, arrays, the seccomp program, the Landlock ruleset,
//! the user namespace's sync pipe) and the raw [`RawJail`] pointing into it; writing the
//! user namespace's maps after the clone; describing a child's failure.

use std::ffi::{CString, c_char};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use rustix::pipe::PipeFlags;

use super::init_image;
use super::landlock::{self, PreparedLandlock};
use super::mounts::PreparedFs;
use super::{IdMap, Jail, User};
use crate::command::Namespaces;
use crate::sys::{self, RawJail, RawLandlockRule, RawRlimit, RawStage};
use crate::{SpawnError, errno_name};

/// Everything a jailed child needs, owned by the parent until the child has exec'd (or
/// exited); [`PreparedJail::raw`] points into it.
pub(crate) struct PreparedJail {
    raw: Box<RawJail>,
    jail: Jail,
    _hostname: Option<Vec<u8>>,
    _rlimits: Vec<RawRlimit>,
    _groups: Vec<libc::gid_t>,
    landlock: Option<PreparedLandlock>,
    _landlock_rules: Vec<RawLandlockRule>,
    _seccomp: Option<(Vec<libc::sock_filter>, Box<libc::sock_fprog>)>,
    fs: Option<PreparedFs>,
    /// User namespace: (the child's read end, the parent's write end).
    sync: Option<(OwnedFd, OwnedFd)>,
    /// The stack of the init's program child (`RawJail::init_stack`): the init is a
    /// fork-like copy, which has its own copy of this mapping.
    _init_stack: Option<sys::ChildStack>,
    /// Write `deny` to `/proc/PID/setgroups` before the gid map.
    setgroups_deny: bool,
    /// The init image's argv, environment and number buffers (`RawJail::init_argv`), when
    /// the init execs the image (`uses_init_image`).
    _init_strings: Vec<CString>,
    _init_argv: Vec<*const c_char>,
    _init_envp: Vec<*const c_char>,
    _init_numbers: Vec<u8>,
}

impl std::fmt::Debug for PreparedJail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedJail").finish_non_exhaustive()
    }
}

/// The kernel's highest capability number (`/proc/sys/kernel/cap_last_cap`), or the
/// highest this crate knows when it cannot be read.
fn cap_last() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(super::CAP_NAMES.len() as u32 - 1)
}

impl PreparedJail {
    /// Validate `jail` against the command's new namespaces and prepare it.
    pub(crate) fn new(jail: &Jail, ns_new: Namespaces) -> Result<PreparedJail, SpawnError> {
        let need = |cond: bool, ns: Namespaces, what: &str, ns_name: &str| {
            if cond && !ns_new.contains(ns) {
                Err(SpawnError::Invalid(format!(
                    "the jail's {what} needs a new {ns_name} namespace (Namespaces::{})",
                    ns_name.to_ascii_uppercase()
                )))
            } else {
                Ok(())
            }
        };
        need(
            jail.filesystem.is_some(),
            Namespaces::MOUNT,
            "filesystem",
            "mount",
        )?;
        need(jail.id_maps.is_some(), Namespaces::USER, "id_maps", "user")?;
        need(jail.hostname.is_some(), Namespaces::UTS, "hostname", "uts")?;
        need(jail.init, Namespaces::PID, "init", "pid")?;

        let hostname = jail.hostname.as_ref().map(|h| h.as_bytes().to_vec());
        if let Some(h) = &hostname {
            if h.len() > 64 {
                return Err(SpawnError::Invalid(format!(
                    "hostname {:?} is longer than 64 bytes",
                    String::from_utf8_lossy(h)
                )));
            }
        }
        let rlimits: Vec<RawRlimit> = jail
            .rlimits
            .iter()
            .map(|r| RawRlimit {
                resource: r.resource,
                limits: [r.soft, r.hard],
            })
            .collect();
        let groups: Vec<libc::gid_t> = jail
            .user
            .as_ref()
            .map(|u| u.groups.clone())
            .unwrap_or_default();

        // Landlock: the ruleset and the rules the child adds after its mounts.
        let landlock = landlock::prepare(jail)?;
        let landlock_rules: Vec<RawLandlockRule> = landlock
            .as_ref()
            .map(|l| {
                l.child_rules
                    .iter()
                    .map(|r| RawLandlockRule {
                        path: r.path.as_ptr(),
                        access: r.access,
                    })
                    .collect()
            })
            .unwrap_or_default();

        let seccomp = jail.seccomp.as_ref().map(|f| {
            let insns = f.instructions().to_vec();
            let prog = Box::new(libc::sock_fprog {
                len: insns.len() as u16,
                filter: insns.as_ptr() as *mut libc::sock_filter,
            });
            (insns, prog)
        });
        if let Some((insns, _)) = &seccomp {
            if insns.is_empty() || insns.len() > u16::MAX as usize {
                return Err(SpawnError::Invalid(format!(
                    "the seccomp filter has {} instructions",
                    insns.len()
                )));
            }
        }

        let fs = match &jail.filesystem {
            Some(f) => Some(PreparedFs::new(f, !ns_new.contains(Namespaces::USER))?),
            None => None,
        };

        // Maps to write (they need the user namespace, checked above): the child waits.
        let sync = if jail.id_maps.is_some() {
            Some(
                rustix::pipe::pipe_with(PipeFlags::CLOEXEC)
                    .map_err(|e| crate::command::os_error("pipe", e))?,
            )
        } else {
            None
        };
        // Privileged over the mapped gids (root in the parent's namespace): setgroups stays
        // allowed, so the child can set (or clear) its supplementary groups.
        let setgroups_deny = !rustix::process::geteuid().is_root();

        let (set_ids, uid, gid) = match &jail.user {
            Some(User { uid, gid, .. }) => (true, *uid, *gid),
            None => (false, 0, 0),
        };
        // Without privilege over the gids a user namespace denies setgroups: the groups can
        // only be left as they are then.
        let set_groups =
            set_ids && !(ns_new.contains(Namespaces::USER) && setgroups_deny && groups.is_empty());
        let caps = jail.capabilities;
        // Without a stack the init forks the program (a copy of the whole address space).
        let init_stack = jail.init.then(sys::ChildStack::map).and_then(Result::ok);
        let (init_stack_lowest, init_stack_size) =
            init_stack.as_ref().map_or((0, 0), sys::ChildStack::usable);
        // The init execs the image (see `init_image`) when there is one.
        let init_image = if jail.init { init_image::fd() } else { None };
        let init_flags = u32::from(set_ids) | if set_groups { 2 } else { 0 };
        let init_strings: Vec<CString> = if init_image.is_some() {
            [
                "paddock-init".to_string(),
                init_flags.to_string(),
                uid.to_string(),
                gid.to_string(),
            ]
            .into_iter()
            .map(|s| CString::new(s).expect("no NUL in a number"))
            .collect()
        } else {
            Vec::new()
        };
        let mut init_numbers = vec![0u8; 2 * sys::INIT_NUMBER_LEN];
        let numbers = init_numbers.as_mut_ptr();
        let init_argv: Vec<*const c_char> = if init_image.is_some() {
            vec![
                init_strings[0].as_ptr(),
                numbers.cast_const().cast(),
                numbers
                    .wrapping_add(sys::INIT_NUMBER_LEN)
                    .cast_const()
                    .cast(),
                init_strings[1].as_ptr(),
                init_strings[2].as_ptr(),
                init_strings[3].as_ptr(),
                std::ptr::null(),
            ]
        } else {
            Vec::new()
        };
        let init_envp: Vec<*const c_char> = vec![std::ptr::null()];
        let raw = Box::new(RawJail {
            sync_read: sync.as_ref().map_or(-1, |(r, _)| r.as_raw_fd()),
            sync_write: sync.as_ref().map_or(-1, |(_, w)| w.as_raw_fd()),
            hostname: hostname.as_ref().map_or(std::ptr::null(), |h| h.as_ptr()),
            hostname_len: hostname.as_ref().map_or(0, |h| h.len()),
            fs: fs.as_ref().map_or(std::ptr::null(), |f| f.raw()),
            rlimits: rlimits.as_ptr(),
            rlimits_len: rlimits.len(),
            set_ids,
            set_groups,
            uid,
            gid,
            groups: groups.as_ptr(),
            groups_len: groups.len(),
            set_caps: caps.is_some(),
            cap_set: caps.map_or(0, |c| c.0),
            cap_last: cap_last(),
            keep_caps: caps.is_some_and(|c| c.0 != 0) && set_ids,
            // uid 0 (the caller's, or the one set) gets its capabilities through the
            // bounding set; anyone else only through the ambient set.
            ambient: caps.is_some_and(|c| c.0 != 0)
                && if set_ids {
                    uid != 0
                } else {
                    !rustix::process::getuid().is_root()
                },
            no_new_privs: jail.no_new_privs,
            landlock_fd: landlock.as_ref().map_or(-1, |l| l.fd.as_raw_fd()),
            landlock_rules: landlock_rules.as_ptr(),
            landlock_rules_len: landlock_rules.len(),
            seccomp: seccomp
                .as_ref()
                .map_or(std::ptr::null(), |(_, p)| &**p as *const libc::sock_fprog),
            init: jail.init,
            init_stack: init_stack_lowest,
            init_stack_size,
            init_image: init_image.unwrap_or(-1),
            init_argv: init_argv.as_ptr(),
            init_envp: init_envp.as_ptr(),
            init_numbers: numbers,
        });
        Ok(PreparedJail {
            raw,
            jail: jail.clone(),
            _hostname: hostname,
            _rlimits: rlimits,
            _groups: groups,
            landlock,
            _landlock_rules: landlock_rules,
            _seccomp: seccomp,
            fs,
            sync,
            setgroups_deny,
            _init_stack: init_stack,
            _init_strings: init_strings,
            _init_argv: init_argv,
            _init_envp: init_envp,
            _init_numbers: init_numbers,
        })
    }

    /// Whether the init execs the init image (so it need not be a fork-like copy).
    pub(crate) fn uses_init_image(&self) -> bool {
        self.raw.init_image >= 0
    }

    /// The raw view for the child.
    pub(crate) fn raw(&self) -> *const RawJail {
        &*self.raw
    }

    /// Move the fds the child uses after its fd map (the Landlock ruleset) to numbers at
    /// or above `above` (so no `dup2` onto a target clobbers them); returns their numbers,
    /// which the child must not close before `execve`.
    pub(crate) fn relocate_fds(&mut self, above: RawFd) -> Result<Vec<RawFd>, SpawnError> {
        let mut kept = Vec::new();
        if let Some(l) = &mut self.landlock {
            if l.fd.as_raw_fd() < above {
                l.fd = rustix::io::fcntl_dupfd_cloexec(&l.fd, above)
                    .map_err(|e| crate::command::os_error("fcntl(F_DUPFD_CLOEXEC)", e))?;
            }
            self.raw.landlock_fd = l.fd.as_raw_fd();
            kept.push(l.fd.as_raw_fd());
        }
        Ok(kept)
    }

    /// After the clone, in the parent: write the user namespace's maps for child `pid`, then
    /// release the child (one byte on the sync pipe). Without a user namespace, nothing.
    /// On failure the sync pipe is closed, so the child fails at [`RawStage::UserNsSync`];
    /// the error names the file and the errno.
    pub(crate) fn after_clone(&mut self, pid: i32) -> Result<(), SpawnError> {
        let Some((read, write)) = self.sync.take() else {
            return Ok(());
        };
        drop(read);
        let maps = self.jail.id_maps.clone().unwrap_or_default();
        let write_file = |name: &str, content: &[u8]| -> Result<(), SpawnError> {
            let path = format!("/proc/{pid}/{name}");
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|mut f| f.write(content).map(|_| ()))
                .map_err(|e| {
                    let errno = e.raw_os_error().unwrap_or(0);
                    SpawnError::Os {
                        op: "write the new user namespace's id maps",
                        source: io::Error::new(
                            e.kind(),
                            format!(
                                "{path} ({:?}): {} (os error {errno}); the outside ids must \
                                 exist in paddock's own namespace and not overlap",
                                String::from_utf8_lossy(content).trim_end(),
                                errno_name(errno)
                            ),
                        ),
                    }
                })
        };
        let lines = |m: &[IdMap]| -> Vec<u8> {
            m.iter()
                .map(|l| format!("{} {} {}\n", l.inside, l.outside, l.count))
                .collect::<String>()
                .into_bytes()
        };
        write_file(
            "setgroups",
            if self.setgroups_deny {
                b"deny"
            } else {
                b"allow"
            },
        )?;
        write_file("uid_map", &lines(&maps.uid))?;
        write_file("gid_map", &lines(&maps.gid))?;
        rustix::io::write(&write, &[1]).map_err(|e| crate::command::os_error("write", e))?;
        Ok(())
    }

    /// What the child was working on when it failed at `stage` with index `idx`.
    pub(crate) fn describe(&self, stage: RawStage, idx: u32) -> String {
        let j = &self.jail;
        match stage {
            RawStage::Hostname => format!("{:?}", j.hostname.clone().unwrap_or_default()),
            RawStage::Rlimit => j
                .rlimits
                .get(idx as usize)
                .map(|r| {
                    let v = |x: u64| {
                        if x == u64::MAX {
                            "unlimited".to_string()
                        } else {
                            x.to_string()
                        }
                    };
                    format!("{} soft {} hard {}", r.name(), v(r.soft), v(r.hard))
                })
                .unwrap_or_default(),
            RawStage::Credentials => {
                let u = j.user.clone().unwrap_or(User {
                    uid: 0,
                    gid: 0,
                    groups: Vec::new(),
                });
                match idx {
                    0 => format!("setgroups({:?})", u.groups),
                    1 => format!("setresgid({})", u.gid),
                    _ => format!("setresuid({})", u.uid),
                }
            }
            RawStage::Capabilities => {
                let name = |n: u32| {
                    super::CAP_NAMES
                        .get(n as usize)
                        .map_or(format!("capability {n}"), |c| format!("CAP_{c}"))
                };
                match idx {
                    sys::CAP_IDX_KEEPCAPS => "prctl(PR_SET_KEEPCAPS)".into(),
                    sys::CAP_IDX_CAPSET => format!(
                        "capset({})",
                        j.capabilities.unwrap_or_default().names().join(",")
                    ),
                    sys::CAP_IDX_AMBIENT_CLEAR => "clear the ambient set".into(),
                    i if i >= sys::CAP_IDX_AMBIENT => {
                        format!(
                            "raise {} in the ambient set",
                            name(i - sys::CAP_IDX_AMBIENT)
                        )
                    }
                    i => format!(
                        "drop {} from the bounding set",
                        name(i - sys::CAP_IDX_BOUNDING)
                    ),
                }
            }
            RawStage::Landlock => match self.landlock.as_ref() {
                _ if idx == sys::LANDLOCK_IDX_RESTRICT => "landlock_restrict_self".into(),
                Some(l) => l
                    .child_rules
                    .get(idx as usize)
                    .map(|r| format!("rule for {}", r.path.to_string_lossy()))
                    .unwrap_or_default(),
                None => String::new(),
            },
            RawStage::Seccomp => format!(
                "({} instructions)",
                j.seccomp.as_ref().map_or(0, |s| s.instructions().len())
            ),
            RawStage::Filesystem => self
                .fs
                .as_ref()
                .map(|f| f.describe(idx))
                .unwrap_or_default(),
            RawStage::UserNsSync => "(the parent did not write the id maps)".into(),
            RawStage::Init => match idx {
                0 => "block signals".into(),
                1 => "start the program".into(),
                2 => "unblock the program's signals".into(),
                3 => "make the init non-dumpable".into(),
                4 => "clear the init's groups".into(),
                5 | 6 => {
                    let u = j.user.as_ref().map_or((0, 0), |u| (u.uid, u.gid));
                    if idx == 5 {
                        format!("the init's setresgid({})", u.1)
                    } else {
                        format!("the init's setresuid({})", u.0)
                    }
                }
                7 => "drop the init's capabilities".into(),
                8 => "the init's no_new_privs".into(),
                9 => "execveat of the paddock-init image (a memfd)".into(),
                _ => "keep the error pipe open across the init's exec".into(),
            },
            _ => String::new(),
        }
    }
}
