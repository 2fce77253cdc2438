//! The child side (between clone and `execve`) never allocates, on the vfork path
//! (`clone3(CLONE_VM | CLONE_VFORK)`, where an allocation would use the parent's allocator
//! state while a parent thread may hold its lock) and on the fork-like path (legacy
//! `clone`, where the allocator's locks may have been copied held).
//!
//! This test binary's global allocator ends the process with status 99 on any allocation
//! made by another process than the test's own: in a child before `execve` (after `execve`
//! the allocator is gone). So a child that allocates exits with 99 instead of reporting its
//! stage or running the program, and the assertions below fail. (Its own test binary: the
//! global allocator is process-wide.)

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicI32, Ordering};

use common::{PATHS, leaf, read_to_string};
use paddock_proc::jail::{
    CapSet, CgroupFs, Filesystem, IdMap, IdMaps, Jail, Landlock, LandlockMode, Mount, Rlimit,
    SeccompFilter, User, landlock,
};
use paddock_proc::{CloseMethod, Command, ExitStatus, Namespaces, SpawnPath, Stage, Stdio};

/// The test process's pid; 0 until the test starts (allocations before are not checked).
static PARENT: AtomicI32 = AtomicI32::new(0);

/// Exit status of a child that allocated.
const ALLOCATED: i32 = 99;

struct ChildMustNotAllocate;

impl ChildMustNotAllocate {
    fn check() {
        let parent = PARENT.load(Ordering::Relaxed);
        if parent == 0 {
            return;
        }
        // SAFETY: the raw getpid system call (glibc's wrapper may not be called in the
        // child any more than anything else); no arguments.
        let me = unsafe { libc::syscall(libc::SYS_getpid) } as i32;
        if me != parent {
            let msg = b"child_no_alloc: the child allocated between clone and execve\n";
            // SAFETY: write(2) of a static buffer, then _exit: both async-signal-safe, and
            // the child is ours to end.
            unsafe {
                libc::write(2, msg.as_ptr().cast(), msg.len());
                libc::_exit(ALLOCATED);
            }
        }
    }
}

// SAFETY: every method checks, then forwards to the system allocator with the caller's
// arguments, so the allocator contract is the system allocator's.
unsafe impl GlobalAlloc for ChildMustNotAllocate {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::check();
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::check();
        // SAFETY: forwarded as received.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        Self::check();
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::check();
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: ChildMustNotAllocate = ChildMustNotAllocate;

const CLOSE_METHODS: [CloseMethod; 3] = [
    CloseMethod::CloseRangeCloexec,
    CloseMethod::CloseRange,
    CloseMethod::Fcntl,
];

/// A command that runs most of the child side: an fd map with a pipe, `/dev/null` and a
/// high target, an environment, a working directory, a new session, a parent-death signal,
/// new network (loopback brought up), UTS, IPC, mount and PID namespaces, a namespace
/// joined by fd, and the given close method.
fn busy(path: SpawnPath, method: CloseMethod, program: &str, cwd: &str) -> Command {
    let mut c = Command::new(program);
    c.args([
        "-c",
        "echo \"$GREETING\"; pwd; echo $$; echo high >/proc/self/fd/7; exit 7",
    ])
    .spawn_path(path)
    .close_method(method)
    .env_clear()
    .env("GREETING", "hello")
    .env("PATH", "/usr/bin:/bin")
    .cwd(cwd)
    .setsid(true)
    .parent_death_signal(libc::SIGKILL)
    .unshare(
        Namespaces::NET | Namespaces::UTS | Namespaces::IPC | Namespaces::MOUNT | Namespaces::PID,
    )
    // Join our own UTS namespace again: runs setns without changing what the test sees.
    .join_namespace(fs::File::open("/proc/self/ns/uts").unwrap().into())
    .stdin(Stdio::Null)
    .stdout(Stdio::Pipe)
    .stderr(Stdio::Inherit)
    .fd(7, Stdio::PipeFromChild);
    c
}

/// A jail with most parts (no filesystem); `user`: a credential change (fork-like).
fn jail(user: bool) -> Jail {
    Jail {
        user: user.then(|| User {
            uid: 300_600,
            gid: 300_600,
            groups: vec![300_601],
        }),
        no_new_privs: true,
        capabilities: Some(CapSet::from_names(&["CAP_KILL"]).unwrap()),
        rlimits: vec![Rlimit::from_name("nofile", 64, 128).unwrap()],
        hostname: Some("jailed".into()),
        landlock: Landlock {
            mode: if landlock::kernel_abi().is_some() {
                LandlockMode::Required
            } else {
                LandlockMode::Off
            },
            ..Landlock::default()
        },
        seccomp: Some(SeccompFilter::default_profile()),
        ..Jail::default()
    }
}

#[test]
fn child_side_does_not_allocate() {
    let Some(root) = paddock_testutil::test_root("child_side_does_not_allocate") else {
        return;
    };
    let (_, cg) = leaf(root.path(), "leaf");
    // Start the reaper first: its threads are of this process, but make the set-up
    // allocations before the check is armed anyway.
    paddock_proc::start_reaper().unwrap();
    PARENT.store(std::process::id() as i32, Ordering::Relaxed);

    for path in PATHS {
        for method in CLOSE_METHODS {
            let what = format!("{path:?} {method:?}");
            let mut p = busy(path, method, "/bin/sh", "/tmp")
                .spawn_in(cg.as_fd())
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let out = read_to_string(p.take_stdout().unwrap());
            let high = read_to_string(p.take_pipe(7).unwrap());
            let status = p.wait_blocking();
            assert_ne!(
                status,
                ExitStatus::Exited(ALLOCATED),
                "{what}: the child allocated"
            );
            assert_eq!(status, ExitStatus::Exited(7), "{what}: {out}");
            assert_eq!(out, "hello\n/tmp\n1\n", "{what}");
            assert_eq!(high, "high\n", "{what}");

            // The failure reports: `fail` runs in the child too.
            for (program, cwd, stage, errno) in [
                ("/bin/nosuch", "/tmp", Stage::Exec, libc::ENOENT),
                ("/bin/sh", "/nonexistent", Stage::Chdir, libc::ENOENT),
            ] {
                let e = busy(path, method, program, cwd)
                    .spawn_in(cg.as_fd())
                    .map(|p| p.wait_blocking())
                    .expect_err(&what);
                assert_eq!(
                    (e.stage(), e.errno()),
                    (Some(stage), Some(errno)),
                    "{what}: {e}"
                );
            }
        }
    }
    // Jailed: credentials, capabilities, rlimits, hostname, no_new_privs, Landlock (when
    // the kernel has it), seccomp, on every path; vfork-like (no credential change) and
    // fork-like; then a user namespace with its maps, and a failing jail stage.
    for path in PATHS {
        for user in [false, true] {
            let what = format!("jailed {path:?} user {user}");
            let mut p = Command::new("/bin/sh")
                .args(["-c", "hostname; ulimit -n"])
                .spawn_path(path)
                .unshare(Namespaces::UTS)
                .jail(jail(user))
                .stdout(Stdio::Pipe)
                .spawn_in(cg.as_fd())
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let out = read_to_string(p.take_stdout().unwrap());
            let status = p.wait_blocking();
            assert_eq!(status, ExitStatus::Exited(0), "{what}: {out}");
            assert_eq!(out, "jailed\n64\n", "{what}");
        }
    }
    let mut userns = jail(false);
    userns.user = Some(User {
        uid: 0,
        gid: 0,
        groups: vec![],
    });
    userns.id_maps = Some(IdMaps {
        uid: vec![IdMap {
            inside: 0,
            outside: 300_700,
            count: 1,
        }],
        gid: vec![IdMap {
            inside: 0,
            outside: 300_700,
            count: 1,
        }],
    });
    let out = Command::new("/bin/cat")
        .arg("/proc/self/uid_map")
        .unshare(Namespaces::USER | Namespaces::UTS)
        .jail(userns)
        .stdout(Stdio::Pipe)
        .spawn_in(cg.as_fd())
        .map(|mut p| {
            let out = read_to_string(p.take_stdout().unwrap());
            (p.wait_blocking(), out)
        })
        .unwrap();
    assert_eq!(out.0, ExitStatus::Exited(0), "{}", out.1);
    assert_eq!(
        out.1.split_whitespace().collect::<Vec<_>>(),
        ["0", "300700", "1"]
    );
    // A filesystem on the host tree (nothing created on the host: every target exists).
    let mut with_fs = jail(true);
    with_fs.filesystem = Some(Filesystem {
        readonly: true,
        mounts: vec![
            Mount::Tmpfs {
                target: "/tmp".into(),
                size: Some(1 << 20),
                mode: 0o1777,
            },
            Mount::Proc {
                target: "/proc".into(),
            },
        ],
        minimal_dev: true,
        masked_paths: vec!["/proc/timer_list".into(), "/sys/firmware".into()],
        cgroupfs: CgroupFs::Hidden,
        ..Filesystem::default()
    });
    let mut p = Command::new("/bin/sh")
        .args(["-c", "echo $$; ls /dev/shm && echo x >/tmp/x && cat /tmp/x"])
        .unshare(Namespaces::UTS | Namespaces::MOUNT | Namespaces::PID)
        .jail(with_fs)
        .stdout(Stdio::Pipe)
        .spawn_in(cg.as_fd())
        .unwrap();
    let out = read_to_string(p.take_stdout().unwrap());
    assert_eq!(p.wait_blocking(), ExitStatus::Exited(0), "{out}");
    assert_eq!(out, "1\nx\n");

    // An init: the child forks the program and stays as pid 1 (neither allocates).
    let mut with_init = jail(true);
    with_init.init = true;
    with_init.filesystem = Some(Filesystem {
        mounts: vec![Mount::Proc {
            target: "/proc".into(),
        }],
        ..Filesystem::default()
    });
    let mut p = Command::new("/bin/sh")
        .args(["-c", "echo $$; exit 4"])
        .unshare(Namespaces::UTS | Namespaces::MOUNT | Namespaces::PID)
        .jail(with_init)
        .stdout(Stdio::Pipe)
        .spawn_in(cg.as_fd())
        .unwrap();
    let out = read_to_string(p.take_stdout().unwrap());
    assert_eq!(p.wait_blocking(), ExitStatus::Exited(4), "{out}");
    assert_eq!(out, "2\n");

    let mut bad = jail(true);
    bad.rlimits.push(Rlimit {
        resource: libc::RLIMIT_NOFILE,
        soft: 2,
        hard: 1,
    });
    let e = Command::new("/bin/true")
        .unshare(Namespaces::UTS)
        .jail(bad)
        .spawn_in(cg.as_fd())
        .map(|p| p.wait_blocking())
        .unwrap_err();
    assert_eq!(
        (e.stage(), e.errno()),
        (Some(Stage::Rlimit), Some(libc::EINVAL)),
        "{e}"
    );

    // And the plainest spawn, into the caller's cgroup, on the default path.
    let status = Command::new("/bin/true").status().unwrap();
    assert_eq!(status, ExitStatus::Exited(0));
    PARENT.store(0, Ordering::Relaxed);
}
