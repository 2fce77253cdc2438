//! Seccomp profiles compiled by `SeccompFilter`: the compiler's checks (no root needed) and
//! the programs run by the real kernel.
//!
//! Each kernel test forks a child of this test process, which installs the filter
//! (`PR_SET_NO_NEW_PRIVS` + `seccomp(SECCOMP_SET_MODE_FILTER)`) on itself only, makes one
//! system call and reports through its exit code (0: the call succeeded, otherwise its
//! errno). Every denial is checked against a control run without the filter that behaves
//! differently. (Its own test binary: the children are raw `fork`s waited for with
//! `waitpid`, not the crate's `Command` with its process-wide reaper.)

use std::ffi::CStr;
use std::ptr;

use paddock_proc::jail::SeccompFilter;
use paddock_proc::jail::seccomp::{MAX_INSTRUCTIONS, SeccompError};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

// ---- the compiler, without the kernel ----

#[test]
fn default_profile_compiles_under_the_kernel_limit() {
    let f = SeccompFilter::default_profile();
    let n = f.instructions().len();
    println!("default profile: {n} BPF instructions");
    assert!(n > 50 && n < MAX_INSTRUCTIONS, "{n} instructions");
    assert!(f.warnings().is_empty(), "{:?}", f.warnings());
}

#[test]
fn small_oci_fixture_parses_with_warnings() {
    let f = SeccompFilter::from_oci_json(&fixture("seccomp-small.json")).unwrap();
    assert!(f.instructions().len() < 200, "{}", f.instructions().len());
    let w = f.warnings().join("\n");
    assert!(w.contains("SECCOMP_FILTER_FLAG_LOG"), "{w}");
    assert!(w.contains("architectures[1]: SCMP_ARCH_X86"), "{w}");
    assert!(
        w.contains(r#"syscalls[1].names[2]: unknown system call "s390_runtime_instr""#),
        "{w}"
    );
}

#[test]
fn bad_oci_fixture_names_the_field() {
    let e = SeccompFilter::from_oci_json(&fixture("seccomp-bad-action.json")).unwrap_err();
    assert!(matches!(e, SeccompError::Invalid { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(r#"syscalls[3].action: unknown action "SCMP_ACT_FOO""#),
        "{msg}"
    );
}

#[test]
fn oversized_oci_profile_is_refused() {
    // 600 entries (under the 1024 accepted), each with two conditions and an action of its
    // own: more than the kernel's 4096 instructions.
    let entries: Vec<String> = [
        "read", "write", "openat", "close", "mmap", "munmap", "brk", "ioctl", "pread64",
        "pwrite64", "readv", "writev", "pipe2", "dup", "dup3", "nanosleep", "getpid",
        "socket", "connect", "accept4", "sendto", "recvfrom", "sendmsg", "recvmsg",
    ]
    .iter()
    .cycle()
    .take(600)
    .enumerate()
    .map(|(i, n)| {
        let action = ["SCMP_ACT_ALLOW", "SCMP_ACT_LOG"][i % 2];
        format!(
            r#"{{"names":["{n}"],"action":"{action}","args":[{{"index":0,"value":{i},"op":"SCMP_CMP_GE"}},{{"index":1,"value":{i},"op":"SCMP_CMP_NE"}}]}}"#
        )
    })
    .collect();
    let json = format!(
        r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{}]}}"#,
        entries.join(",")
    );
    let e = SeccompFilter::from_oci_json(json.as_bytes()).unwrap_err();
    assert!(matches!(e, SeccompError::TooLarge(_)), "{e}");
    // And a document over the size limit is refused before it is parsed.
    let huge = vec![b' '; paddock_proc::jail::seccomp::MAX_JSON_BYTES + 1];
    let e = SeccompFilter::from_oci_json(&huge).unwrap_err();
    assert!(matches!(e, SeccompError::InputTooLarge(_)), "{e}");
}

// ---- the kernel ----

/// How a forked child ended.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum End {
    /// `_exit(code)`: 0 the call worked, otherwise its errno.
    Exit(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// Exit codes of the harness itself (no errno is this large here).
const SETUP_FAILED: i32 = 250;
const NO_NEW_PRIVS_FAILED: i32 = 251;
const SECCOMP_FAILED: i32 = 252;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The result of a raw system call as an exit code: 0 or its errno.
fn status(r: libc::c_long) -> i32 {
    if r < 0 { errno() } else { 0 }
}

/// Forks; the child runs `setup` (which returns 0 on success), installs `filter` if given,
/// runs `body` and exits with what it returns. Only raw system calls happen in the child:
/// the test process has other threads.
fn run_child(filter: Option<&SeccompFilter>, setup: fn() -> i32, body: fn() -> i32) -> End {
    let prog = filter.map(|f| libc::sock_fprog {
        len: f.instructions().len() as u16,
        filter: f.instructions().as_ptr() as *mut libc::sock_filter,
    });
    // SAFETY: the child only calls async-signal-safe functions and raw system calls (the
    // `fn` pointers given are of that kind), then `_exit`s; the filter's instructions were
    // allocated before the fork and are only read.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        if setup() != 0 {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(SETUP_FAILED) };
        }
        if let Some(prog) = &prog {
            // SAFETY: prctl and seccomp on this process only; `prog` points at the parent's
            // fully initialised instructions, which the kernel copies.
            unsafe {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    libc::_exit(NO_NEW_PRIVS_FAILED);
                }
                let r = libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    prog as *const libc::sock_fprog,
                );
                if r != 0 {
                    libc::_exit(SECCOMP_FAILED);
                }
            }
        }
        let code = body();
        // SAFETY: as above.
        unsafe { libc::_exit(code) };
    }
    wait(pid)
}

fn wait(pid: libc::pid_t) -> End {
    let mut st = 0;
    loop {
        // SAFETY: waitpid on our own child with a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut st, 0) };
        if r == pid {
            break;
        }
        assert_eq!(errno(), libc::EINTR, "waitpid {pid}");
    }
    if libc::WIFEXITED(st) {
        End::Exit(libc::WEXITSTATUS(st))
    } else {
        End::Signal(libc::WTERMSIG(st))
    }
}

fn no_setup() -> i32 {
    0
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `body` without and with the default profile: with it, the call must fail with
/// `want`; without it, it must succeed (`control_must_succeed`) or at least end otherwise.
fn check_denied(
    test: &str,
    want: i32,
    control_must_succeed: bool,
    setup: fn() -> i32,
    body: fn() -> i32,
) {
    let control = run_child(None, setup, body);
    println!("{test}: without the filter: {control:?}");
    if control_must_succeed {
        assert_eq!(control, End::Exit(0), "{test}: the control run failed");
    } else if control == End::Exit(want) {
        paddock_testutil::note_skip(
            test,
            &format!("the call fails with errno {want} even without a filter here"),
        );
        return;
    }
    let filtered = run_child(Some(&SeccompFilter::default_profile()), setup, body);
    assert_eq!(
        filtered,
        End::Exit(want),
        "{test}: with the default profile"
    );
}

fn require_root(test: &str) -> bool {
    if !is_root() {
        paddock_testutil::skip(test, "not running as root");
        return false;
    }
    true
}

/// A private mount namespace, made before the filter (which denies `unshare(CLONE_NEWNS)`).
fn private_mount_ns() -> i32 {
    // SAFETY: raw system calls on this (forked, single-threaded) process only.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return 1;
        }
        let r = libc::mount(
            ptr::null(),
            c"/".as_ptr(),
            ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            ptr::null(),
        );
        if r != 0 { 1 } else { 0 }
    }
}

fn mount_tmpfs() -> i32 {
    // SAFETY: a tmpfs over /tmp in the child's own private mount namespace, which dies
    // with it.
    let r = unsafe {
        libc::mount(
            c"paddock-seccomp-test".as_ptr(),
            c"/tmp".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            ptr::null(),
        )
    };
    status(r.into())
}

#[test]
fn default_profile_denies_mount() {
    if require_root("default_profile_denies_mount") {
        check_denied(
            "default_profile_denies_mount",
            libc::EPERM,
            true,
            private_mount_ns,
            mount_tmpfs,
        );
    }
}

fn unshare_user() -> i32 {
    // SAFETY: unshare on this single-threaded child only.
    status(unsafe { libc::unshare(libc::CLONE_NEWUSER) }.into())
}

#[test]
fn default_profile_denies_unshare_user() {
    let root = is_root();
    check_denied(
        "default_profile_denies_unshare_user",
        libc::EPERM,
        root,
        no_setup,
        unshare_user,
    );
}

/// A raw `clone` (no new stack: fork-like) with `flags`; the new process exits at once and
/// is waited for. 0 when it was created.
fn raw_clone(flags: libc::c_long) -> i32 {
    // SAFETY: a fork-like clone (stack 0: the child runs on a copy of this stack); the new
    // process only calls _exit.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) };
    if pid < 0 {
        return errno();
    }
    if pid == 0 {
        // SAFETY: _exit in the new process.
        unsafe { libc::_exit(0) };
    }
    match wait(pid as libc::pid_t) {
        End::Exit(0) => 0,
        _ => 99,
    }
}

fn clone_newuser() -> i32 {
    raw_clone((libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_long)
}

#[test]
fn default_profile_denies_clone_newuser() {
    let root = is_root();
    check_denied(
        "default_profile_denies_clone_newuser",
        libc::EPERM,
        root,
        no_setup,
        clone_newuser,
    );
}

fn clone3_plain() -> i32 {
    // struct clone_args, version 0 (64 bytes): flags, pidfd, child_tid, parent_tid,
    // exit_signal, stack, stack_size, tls.
    let mut args = [0u64; 8];
    args[4] = libc::SIGCHLD as u64;
    // SAFETY: a fork-like clone3 (no stack given) with a valid, initialised clone_args;
    // the new process only calls _exit.
    let pid = unsafe { libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), 64usize) };
    if pid < 0 {
        return errno();
    }
    if pid == 0 {
        // SAFETY: _exit in the new process.
        unsafe { libc::_exit(0) };
    }
    match wait(pid as libc::pid_t) {
        End::Exit(0) => 0,
        _ => 99,
    }
}

#[test]
fn default_profile_makes_clone3_enosys() {
    check_denied(
        "default_profile_makes_clone3_enosys",
        libc::ENOSYS,
        true,
        no_setup,
        clone3_plain,
    );
}

fn bpf_map_create() -> i32 {
    // union bpf_attr for BPF_MAP_CREATE: map_type ARRAY (2), key_size 4, value_size 4,
    // max_entries 1, the rest zero.
    let mut attr = [0u32; 32];
    attr[..4].copy_from_slice(&[2, 4, 4, 1]);
    // SAFETY: bpf(BPF_MAP_CREATE) with a valid, zero-padded attribute of the given size.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_mut_ptr(), 128usize) };
    if fd < 0 {
        return errno();
    }
    // SAFETY: closing the fd just returned.
    unsafe { libc::close(fd as i32) };
    0
}

#[test]
fn default_profile_denies_bpf() {
    if require_root("default_profile_denies_bpf") {
        check_denied(
            "default_profile_denies_bpf",
            libc::EPERM,
            true,
            no_setup,
            bpf_map_create,
        );
    }
}

fn ptrace_traceme() -> i32 {
    // SAFETY: PTRACE_TRACEME makes this child traced by the test process; it exits at once
    // after, and no signal is sent to it.
    status(unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) })
}

#[test]
fn default_profile_denies_ptrace() {
    check_denied(
        "default_profile_denies_ptrace",
        libc::EPERM,
        false,
        no_setup,
        ptrace_traceme,
    );
}

fn keyctl_process_keyring() -> i32 {
    const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
    const KEY_SPEC_PROCESS_KEYRING: libc::c_long = -2;
    // SAFETY: asks for (and creates) this child's own process keyring, which dies with it.
    status(unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_GET_KEYRING_ID,
            KEY_SPEC_PROCESS_KEYRING,
            1,
        )
    })
}

#[test]
fn default_profile_denies_keyctl() {
    check_denied(
        "default_profile_denies_keyctl",
        libc::EPERM,
        false,
        no_setup,
        keyctl_process_keyring,
    );
}

fn kexec_invalid_flags() -> i32 {
    // SAFETY: invalid flags: without the filter this fails with EINVAL (or ENOSYS without
    // CONFIG_KEXEC) and loads or unloads nothing.
    status(unsafe {
        libc::syscall(
            libc::SYS_kexec_load,
            0,
            0,
            ptr::null::<u8>(),
            0x5a5a_0000 as libc::c_long,
        )
    })
}

#[test]
fn default_profile_denies_kexec_load() {
    check_denied(
        "default_profile_denies_kexec_load",
        libc::EPERM,
        false,
        no_setup,
        kexec_invalid_flags,
    );
}

const TRUE_PATH: &CStr = c"/bin/true";

/// getpid, open/write/read/close, a plain clone (fork), then execve of /bin/true: exits 0
/// only if everything worked and true ran; 10+ names the step that failed.
fn ordinary_program() -> i32 {
    // SAFETY: raw system calls on this child's own fds and memory; the argv/envp arrays
    // are built on this stack from static C strings.
    unsafe {
        if libc::getpid() <= 0 {
            return 10;
        }
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 || libc::write(fd, b"x".as_ptr().cast(), 1) != 1 || libc::close(fd) != 0 {
            return 11;
        }
        let fd = libc::open(
            c"/proc/self/stat".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        let mut buf = [0u8; 64];
        if fd < 0 || libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) <= 0 {
            return 12;
        }
        libc::close(fd);
        if raw_clone(libc::SIGCHLD as libc::c_long) != 0 {
            return 13;
        }
        let argv = [TRUE_PATH.as_ptr(), ptr::null()];
        let envp = [ptr::null()];
        libc::execve(TRUE_PATH.as_ptr(), argv.as_ptr(), envp.as_ptr());
        14
    }
}

#[test]
fn default_profile_allows_an_ordinary_program() {
    assert_eq!(run_child(None, no_setup, ordinary_program), End::Exit(0));
    let f = SeccompFilter::default_profile();
    assert_eq!(
        run_child(Some(&f), no_setup, ordinary_program),
        End::Exit(0)
    );
    // And the harness can tell: a profile denying getpid fails the first step.
    let deny_getpid = SeccompFilter::from_oci_json(
        br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    assert_eq!(
        run_child(Some(&deny_getpid), no_setup, ordinary_program),
        End::Exit(10)
    );
}

#[cfg(target_arch = "x86_64")]
fn i386_getpid() -> i32 {
    let ret: i64;
    // SAFETY: `int 0x80` is the i386 system call entry; eax 20 is i386's getpid, which
    // takes no argument and touches no memory.
    unsafe {
        std::arch::asm!("int 0x80", inlateout("rax") 20i64 => ret, options(nostack));
    }
    if ret > 0 { 0 } else { (-ret) as i32 }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn default_profile_kills_foreign_abi_calls() {
    let test = "default_profile_kills_foreign_abi_calls";
    let control = run_child(None, no_setup, i386_getpid);
    if control != End::Exit(0) {
        paddock_testutil::note_skip(
            test,
            &format!("i386 system calls do not work here ({control:?}): no IA32 emulation"),
        );
        return;
    }
    let f = SeccompFilter::default_profile();
    assert_eq!(
        run_child(Some(&f), no_setup, i386_getpid),
        End::Signal(libc::SIGSYS)
    );
}

fn getcwd() -> i32 {
    let mut buf = [0u8; 4096];
    // SAFETY: getcwd into a buffer of the given size.
    status(unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) })
}

#[test]
fn oci_profile_errno_reaches_the_caller() {
    assert_eq!(run_child(None, no_setup, getcwd), End::Exit(0));
    let f = SeccompFilter::from_oci_json(&fixture("seccomp-small.json")).unwrap();
    assert_eq!(
        run_child(Some(&f), no_setup, getcwd),
        End::Exit(libc::EACCES)
    );
    // The rest of that profile's default action: allowed.
    assert_eq!(
        run_child(Some(&f), no_setup, ordinary_program),
        End::Exit(0)
    );
}
