//! Seccomp filters, compiled to BPF in the parent and installed by the child last before
//! `execve` (`seccomp(SECCOMP_SET_MODE_FILTER)`).
//!
//! Everything is done here, in the parent: names are resolved, the profile checked and the
//! classic-BPF program built and allocated. The child only hands
//! [`SeccompFilter::instructions`] to the kernel.
//!
//! # The program
//!
//! Every filter built here starts by checking `seccomp_data.arch`: a system call made
//! through another ABI than the native one (i386 `int 0x80` or x32 on x86_64, arm32 on
//! aarch64) would be matched against the wrong numbers, so it kills the process
//! (`SECCOMP_RET_KILL_PROCESS`). On x86_64, x32 calls carry the native arch with bit 30 set
//! in the number; every number `>= 0x40000000` fails with `ENOSYS`, as on a kernel without
//! x32. Then the rules are tried in order, the first that matches decides; a call no rule
//! matches gets the default action.
//!
//! # The default profile ([`SeccompFilter::default_profile`])
//!
//! A deny-list: the calls below fail with `EPERM` (Docker's error), everything else is
//! allowed. Docker's and runc's default profiles are allow-lists (`moby/profiles`,
//! `seccomp/default.json`: ~360 names allowed, `defaultErrnoRet` 1) plus calls allowed only
//! with a capability; what they leave out for a container without `CAP_SYS_ADMIN` and
//! friends is what is denied here.
//!
//! | denied | why |
//! |---|---|
//! | `mount`, `umount2`, `pivot_root`, `fsopen`, `fsconfig`, `fsmount`, `fspick`, `move_mount`, `open_tree`, `mount_setattr` | the file system view is paddock's; mounts reach host files and propagate |
//! | `unshare`, `clone` with a namespace flag (`CLONE_NEWUSER`, `NEWNS`, `NEWPID`, `NEWNET`, `NEWUTS`, `NEWIPC`, `NEWCGROUP`; `unshare` also `CLONE_NEWTIME`), `setns` | a user namespace gives a full capability set over new namespaces, the usual first step of kernel exploits; checked on the flags argument, as Docker does for `clone` |
//! | `clone3`: `ENOSYS` | its flags are in memory, out of seccomp's sight; `ENOSYS` makes glibc and musl fall back to `clone` (Docker's choice) |
//! | `kexec_load`, `kexec_file_load`, `init_module`, `finit_module`, `delete_module`, `reboot` | replacing or extending the kernel, rebooting the node |
//! | `keyctl`, `add_key`, `request_key` | the keyring is not namespaced |
//! | `bpf`, `perf_event_open`, `userfaultfd`, `io_uring_setup`/`enter`/`register` | large attack surfaces; `io_uring`'s operations bypass seccomp (Docker denies it too since 2023) |
//! | `ptrace`, `process_vm_readv`, `process_vm_writev`, `process_madvise`, `pidfd_getfd`, `kcmp`, `migrate_pages`, `move_pages` | acting on other processes. Docker allows `ptrace` and `process_vm_*` on kernels ≥ 4.8; paddock does not: a payload has no business tracing |
//! | `open_by_handle_at`, `fanotify_init`, `lookup_dcookie`, `quotactl`, `quotactl_fd`, `nfsservctl`, `uselib` | file handles escape path confinement (the "shocker" escape); the rest acts on whole file systems or is obsolete |
//! | `swapon`, `swapoff`, `acct`, `settimeofday`, `clock_settime`, `clock_adjtime`, `adjtimex`, `syslog`, `iopl`, `ioperm`, `vhangup`, `sethostname`, `setdomainname` | node-wide state. `adjtimex`/`clock_adjtime` are denied whole, although only their writes matter, because the mode is behind a pointer: this also refuses `ntp_gettime`-style reads, which Docker allows |
//! | `personality` other than `0`, `8` (`PER_LINUX32`), `0x20000` (`UNAME26`), `0x20008`, `0xffffffff` (query) | Docker's list; other personalities change the ABI (`READ_IMPLIES_EXEC`, `ADDR_NO_RANDOMIZE`) |
//! | `socket(AF_ALG)`, `socket(AF_VSOCK)` | the kernel crypto API and host-guest sockets, as in Docker's current profile |
//!
//! Deliberately allowed: `chroot` (Docker's default capabilities include `CAP_SYS_CHROOT`),
//! `unshare` without namespace flags (`CLONE_FILES`, `CLONE_FS`, `CLONE_SYSVSEM`; Docker
//! denies `unshare` whole), `seccomp` (a process can only add filters), `prctl`,
//! `name_to_handle_at`, Landlock, `memfd_secret`, pidfds, `mbind`/`set_mempolicy`/
//! `get_mempolicy` (the caller's own memory; QEMU's NUMA memory backends use them; Docker
//! ties them to `CAP_SYS_NICE`), and any system call newer than this list. Capabilities
//! remain the kernel's own check on everything allowed here.
//!
//! # OCI profiles ([`SeccompFilter::from_oci_json`])
//!
//! The runtime-spec `linux.seccomp` object, as `runc` reads it: `defaultAction`,
//! `defaultErrnoRet`, `architectures`, and `syscalls` entries with `names`, `action`,
//! `errnoRet` and `args` (`index`, `value`, `valueTwo`, `op`). Conditions on distinct
//! arguments are ANDed; when one argument has several, each is a rule of its own (ORed), as
//! runc does. Entries are tried in order, the first match wins. `SCMP_CMP_MASKED_EQ` is
//! `(arg & value) == valueTwo`, on all 64 bits as libseccomp compares on 64-bit ABIs.
//! Supported actions: `SCMP_ACT_ALLOW`, `ERRNO` (`EPERM` without `errnoRet`), `KILL` and
//! `KILL_THREAD`, `KILL_PROCESS`, `TRAP`, `LOG`; `TRACE` and `NOTIFY` are errors (no tracer,
//! no agent). `flags` and the listener fields are ignored with a warning. An `architectures`
//! entry other than the native one is accepted with a warning: that ABI is refused whole
//! (see above) instead of filtered by its own numbers. Unknown system call names (Docker's
//! profiles name calls of every architecture) are skipped, each with a warning in
//! [`SeccompFilter::warnings`]. Docker's own extensions (`includes`/`excludes`) are errors:
//! ignoring them would widen the profile. Input is bounded (1 MiB, 1024 entries, 4096 names,
//! 16 conditions an entry, and the kernel's 4096 instructions).
//!
//! # Why seccompiler
//!
//! The BPF is generated by rust-vmm's `seccompiler` (Firecracker's compiler): pure Rust,
//! no C library to install or link, so paddock still builds with `cargo` alone and links
//! statically (musl included); it is small, audited for Firecracker's jailer, and its
//! 64-bit argument comparisons are tested there. libseccomp (`libseccomp` crate) would
//! bring every architecture's name table, multi-ABI filters and a binary-tree optimiser,
//! but needs `libseccomp-dev` on every build host and CI (this host has only the runtime
//! library) and a C library in the binary; paddock supports x86_64 and aarch64 only, where
//! the native ABI is all a jail needs. What seccompiler lacks is provided here: a name table
//! from `libc`'s `SYS_*` constants ([`syscalls`]), several actions in one program
//! ([`compile`]: a filter per run of same-action rules, stitched by rewriting its
//! mismatch returns into jumps), and the x32 check.

mod compile;
mod default;
mod oci;
mod syscalls;

pub use compile::MAX_INSTRUCTIONS;
pub use oci::{MAX_ARGS, MAX_JSON_BYTES, MAX_NAMES, MAX_RULES};

/// Why a profile could not be turned into a filter. Every message names the JSON path or
/// the limit, and what to change.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile is not what the OCI format allows.
    #[error("seccomp profile: {path}: {message}")]
    Invalid {
        /// Where in the JSON (`syscalls[3].action`; `.` for the whole document).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The JSON document is larger than [`MAX_JSON_BYTES`].
    #[error(
        "seccomp profile: {0} bytes; at most {max} are accepted",
        max = MAX_JSON_BYTES
    )]
    InputTooLarge(usize),
    /// The compiled program would exceed the kernel's limit.
    #[error(
        "seccomp profile: it compiles to {0} or more BPF instructions, more than the kernel's \
         limit of {max}; name fewer system calls (an allow-list is larger than a deny-list)",
        max = MAX_INSTRUCTIONS
    )]
    TooLarge(usize),
    /// Seccomp profiles are compiled for x86_64 and aarch64 only.
    #[error("seccomp: filters are compiled for x86_64 and aarch64, not for {0}")]
    UnsupportedArch(&'static str),
    /// seccompiler refused a rule (a bug here, or a limit of the crate).
    #[error("seccomp compiler: {0}")]
    Compile(String),
}

/// A compiled seccomp BPF program (classic BPF, `struct sock_filter` instructions), and the
/// warnings its compilation left (names it ignored).
#[derive(Clone)]
pub struct SeccompFilter {
    insns: Vec<libc::sock_filter>,
    warnings: Vec<String>,
}

impl std::fmt::Debug for SeccompFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeccompFilter")
            .field("instructions", &self.insns.len())
            .field("warnings", &self.warnings.len())
            .finish()
    }
}

impl SeccompFilter {
    /// A filter of these raw instructions (not validated here; the kernel checks it when the
    /// child installs it).
    pub fn from_instructions(insns: Vec<libc::sock_filter>) -> SeccompFilter {
        SeccompFilter {
            insns,
            warnings: Vec::new(),
        }
    }

    /// paddock's default profile: the deny-list of the module documentation, `EPERM` for
    /// the denied calls (`ENOSYS` for `clone3`), everything else allowed, foreign ABIs
    /// killed. 525 instructions on x86_64 (a call it does not name runs through 14 of them); no
    /// warnings. Compiled once per process (it
    /// took about 0.4 ms, at every jailed start); later calls copy the program.
    ///
    /// # Panics
    ///
    /// On an architecture other than x86_64 and aarch64 (paddock supports only those).
    pub fn default_profile() -> SeccompFilter {
        static COMPILED: std::sync::OnceLock<Vec<libc::sock_filter>> = std::sync::OnceLock::new();
        let insns = COMPILED.get_or_init(|| {
            compile::compile(&default::profile())
                .unwrap_or_else(|e| panic!("paddock's default seccomp profile: {e}"))
        });
        SeccompFilter {
            insns: insns.clone(),
            warnings: Vec::new(),
        }
    }

    /// Compiles an OCI runtime-spec `linux.seccomp` object (see the module documentation
    /// for what is supported). Bad input is an error naming the JSON path
    /// (`syscalls[3].action: unknown action "SCMP_ACT_FOO" …`); names unknown on this
    /// architecture are skipped and listed in [`warnings`](Self::warnings).
    pub fn from_oci_json(json: &[u8]) -> Result<SeccompFilter, SeccompError> {
        let (profile, warnings) = oci::parse(json)?;
        let insns = compile::compile(&profile)?;
        Ok(SeccompFilter { insns, warnings })
    }

    /// The instructions.
    pub fn instructions(&self) -> &[libc::sock_filter] {
        &self.insns
    }

    /// What the compilation ignored, one line each, for the caller to log (unknown system
    /// call names, ignored `flags`, foreign `architectures`).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

#[cfg(test)]
mod tests;
