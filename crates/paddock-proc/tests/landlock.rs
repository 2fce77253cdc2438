//! Landlock rulesets prepared in the parent (`jail::landlock`) and enforced in a forked
//! child, as the jail's child does: `PR_SET_NO_NEW_PRIVS`, then
//! `landlock_restrict_self(fd, 0)`, then the attempts. Every attempt is also made by a
//! control child that does not restrict itself, and must succeed there.
//!
//! The child of `fork` in this multi-threaded test process runs raw system calls only (no
//! allocation, no lock): every path is a `CString` made before the fork, and the results
//! (one errno per attempt, 0 for success) come back through a pipe.

use std::ffi::{CStr, CString};
use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use paddock_proc::errno_name;
use paddock_proc::jail::landlock::{self, LandlockReport, TestPrepared};
use paddock_proc::jail::{Filesystem, Jail, Landlock, LandlockMode, Mount};
use paddock_testutil::{note_skip, skip};

const EACCES: i32 = libc::EACCES;

/// The kernel's Landlock ABI, or `None` after printing why the test is skipped.
fn landlock_abi(test: &str, min: u32) -> Option<u32> {
    match landlock::kernel_abi() {
        None => {
            note_skip(test, "the kernel has no Landlock");
            None
        }
        Some(abi) if abi < min => {
            note_skip(
                test,
                &format!("needs Landlock ABI {min}, the kernel has {abi}"),
            );
            None
        }
        Some(abi) => Some(abi),
    }
}

fn is_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        skip(test, "not running as root (mount namespaces)");
    }
    root
}

fn c(p: impl AsRef<Path>) -> CString {
    CString::new(p.as_ref().as_os_str().as_bytes()).unwrap()
}

fn names(r: &[i32]) -> Vec<&'static str> {
    r.iter()
        .map(|&e| if e == 0 { "ok" } else { errno_name(e) })
        .collect()
}

/// Runs `f` in a forked child that first restricts itself with `ruleset` (when given),
/// and returns the errno of each of its `N` attempts (0: success). `f` must only make
/// raw system calls.
fn in_child<const N: usize>(ruleset: Option<RawFd>, f: impl FnOnce(&mut [i32; N])) -> [i32; N] {
    let mut p = [0; 2];
    // SAFETY: `p` is a valid array of two ints for pipe2 to fill.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 succeeded, so both are open fds that nothing else owns.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
    // SAFETY: the child runs only `f` (raw system calls on memory prepared before the
    // fork, by the contract of this function), `write` and `_exit`: nothing that could
    // need a lock held by another thread of this process at the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let mut out = [-1i32; N];
        let mut ok = true;
        if let Some(fd) = ruleset {
            // The ruleset fd is inherited through the fork.
            ok = restrict(fd);
        }
        if ok {
            f(&mut out);
        }
        // SAFETY: `out` is a live array of N i32, written as its bytes to our pipe end;
        // `_exit` ends the child without running the parent's atexit handlers.
        unsafe {
            libc::write(wr.as_raw_fd(), out.as_ptr().cast(), size_of_val(&out));
            libc::_exit(if ok { 0 } else { 99 });
        }
    }
    drop(wr);
    let mut buf = Vec::new();
    fs::File::from(rd).read_to_end(&mut buf).unwrap();
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid int to fill.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EINTR)
        );
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed (status {status:#x}; 99: landlock_restrict_self failed)"
    );
    assert_eq!(buf.len(), N * 4, "short report from the child");
    let mut out = [0i32; N];
    for (i, ch) in buf.chunks_exact(4).enumerate() {
        out[i] = i32::from_ne_bytes(ch.try_into().unwrap());
    }
    out
}

fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() }
}

/// `open` (then close): 0 or the errno.
fn open(path: &CStr, flags: i32) -> i32 {
    openat(libc::AT_FDCWD, path, flags)
}

fn openat(dir: RawFd, path: &CStr, flags: i32) -> i32 {
    // SAFETY: `path` is a NUL-terminated string; the fd returned is closed at once.
    unsafe {
        let fd = libc::openat(dir, path.as_ptr(), flags | libc::O_CLOEXEC, 0o644);
        if fd < 0 {
            return errno();
        }
        libc::close(fd);
    }
    0
}

const RD: i32 = libc::O_RDONLY;
const WR: i32 = libc::O_WRONLY;
const CREATE: i32 = libc::O_WRONLY | libc::O_CREAT;

fn sys(r: i32) -> i32 {
    if r < 0 { errno() } else { 0 }
}

/// A TCP socket on 127.0.0.1 that connects to (or binds) `port`: 0 or the errno.
fn tcp(port: u16, connect: bool) -> i32 {
    // SAFETY: plain socket calls on a zeroed sockaddr_in of the right size; the socket is
    // closed before returning.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return errno();
        }
        let one: libc::c_int = 1;
        libc::setsockopt(
            s,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as u32,
        );
        let mut a: libc::sockaddr_in = std::mem::zeroed();
        a.sin_family = libc::AF_INET as u16;
        a.sin_port = port.to_be();
        a.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
        let ap = (&a as *const libc::sockaddr_in).cast();
        let len = size_of::<libc::sockaddr_in>() as u32;
        let r = if connect {
            libc::connect(s, ap, len)
        } else {
            libc::bind(s, ap, len)
        };
        let e = sys(r);
        libc::close(s);
        e
    }
}

fn opath(p: &Path) -> OwnedFd {
    rustix::fs::open(
        p,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap()
}

fn jail(fs: Option<Filesystem>, mode: LandlockMode) -> Jail {
    Jail {
        filesystem: fs,
        landlock: Landlock {
            mode,
            tcp_bind: None,
            tcp_connect: None,
        },
        ..Default::default()
    }
}

fn rootfs(root: &Path, readonly: bool) -> Filesystem {
    Filesystem {
        rootfs: Some(root.to_path_buf()),
        readonly,
        ..Default::default()
    }
}

fn prepare(j: &Jail) -> (OwnedFd, u32, Vec<String>) {
    let p = prepare_full(j);
    assert!(p.child_rules.is_empty(), "{:?}", p.child_rules);
    (p.fd, p.abi, p.warnings)
}

fn prepare_full(j: &Jail) -> TestPrepared {
    landlock::prepare_capped(j, None)
        .unwrap()
        .expect("a ruleset")
}

/// `struct landlock_path_beneath_attr`.
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// What the jail's child does with the prepared child rules after its mounts: 0 or the
/// errno of the failing step.
fn add_child_rules(ruleset: RawFd, rules: &[(CString, u64)]) -> i32 {
    for (path, access) in rules {
        // SAFETY: `path` is NUL-terminated; `attr` is a live, correctly laid out
        // landlock_path_beneath_attr; the fd is closed at once.
        unsafe {
            let fd = libc::open(
                path.as_ptr(),
                libc::O_PATH | libc::O_CLOEXEC | libc::O_DIRECTORY,
            );
            if fd < 0 {
                return errno();
            }
            let attr = PathBeneathAttr {
                allowed_access: *access,
                parent_fd: fd,
            };
            let r = libc::syscall(
                libc::SYS_landlock_add_rule,
                ruleset,
                1,
                &attr as *const PathBeneathAttr,
                0,
            );
            libc::close(fd);
            if r != 0 {
                return errno();
            }
        }
    }
    0
}

/// `PR_SET_NO_NEW_PRIVS` and `landlock_restrict_self`: whether both worked.
fn restrict(ruleset: RawFd) -> bool {
    // SAFETY: prctl and the Landlock syscall take plain integers.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0) == 0
    }
}

fn bind(source: &Path, target: &str, readonly: bool) -> Mount {
    Mount::Bind {
        source: source.to_path_buf(),
        target: target.into(),
        readonly,
        nosuid: true,
        nodev: true,
        noexec: false,
    }
}

/// A temp dir with a file `f` in it.
fn dir_with_file() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("f");
    fs::write(&f, "x").unwrap();
    (d, f)
}

#[test]
fn rootfs_is_allowed_host_files_and_inherited_fds_outside_are_not() {
    let test = "rootfs_is_allowed_host_files_and_inherited_fds_outside_are_not";
    let Some(_) = landlock_abi(test, 1) else {
        return;
    };
    let (root, inside) = dir_with_file();
    let (other, secret) = dir_with_file();
    let (fd, _, warnings) = prepare(&jail(
        Some(rootfs(root.path(), false)),
        LandlockMode::BestEffort,
    ));
    assert!(warnings.is_empty(), "{warnings:?}");
    // Opened before the restriction and inherited: the "fd opened by path" route.
    let other_fd = opath(other.path());
    let (inside, secret) = (c(&inside), c(&secret));
    let run = |ruleset: Option<RawFd>, n: &str| {
        let (new_in, new_out) = (c(root.path().join(n)), c(other.path().join(n)));
        let f = c("f");
        in_child(ruleset, |r: &mut [i32; 5]| {
            r[0] = open(&inside, RD);
            r[1] = open(&new_in, CREATE);
            r[2] = open(&secret, RD);
            r[3] = open(&new_out, CREATE);
            r[4] = openat(other_fd.as_raw_fd(), &f, RD);
        })
    };
    assert_eq!(names(&run(None, "control")), ["ok"; 5]);
    let r = run(Some(fd.as_raw_fd()), "restricted");
    assert_eq!(names(&r), names(&[0, 0, EACCES, EACCES, EACCES]));
    assert!(!other.path().join("restricted").exists());
}

#[test]
fn bind_sources_get_their_rights_and_a_read_only_rootfs_is_read_only() {
    let test = "bind_sources_get_their_rights_and_a_read_only_rootfs_is_read_only";
    let Some(_) = landlock_abi(test, 1) else {
        return;
    };
    let (root, inside) = dir_with_file();
    let (ro, ro_file) = dir_with_file();
    let (rw, rw_file) = dir_with_file();
    let mut fs = rootfs(root.path(), true);
    fs.mounts = vec![bind(ro.path(), "/ro", true), bind(rw.path(), "/rw", false)];
    let (fd, _, _) = prepare(&jail(Some(fs), LandlockMode::Required));
    let paths = [&inside, &ro_file, &rw_file].map(c);
    let run = |ruleset: Option<RawFd>, n: &str| {
        let news = [root.path(), ro.path(), rw.path()].map(|d| c(d.join(n)));
        in_child(ruleset, |r: &mut [i32; 9]| {
            for i in 0..3 {
                r[3 * i] = open(&paths[i], RD);
                r[3 * i + 1] = open(&paths[i], WR);
                r[3 * i + 2] = open(&news[i], CREATE);
            }
        })
    };
    let r = run(Some(fd.as_raw_fd()), "restricted");
    #[rustfmt::skip]
    let want = [
        0, EACCES, EACCES, // read-only rootfs
        0, EACCES, EACCES, // read-only bind source
        0, 0, 0,           // writable bind source
    ];
    assert_eq!(names(&r), names(&want));
    assert_eq!(names(&run(None, "control")), ["ok"; 9]);
}

/// Runs in the child: a private mount namespace, `mounts` made below `root`, then
/// `pivot_root` into it with the old root detached. 0 or the errno of the failing step.
struct PivotPlan {
    root: CString,
    tmp: CString,
    proc_: CString,
    dev: CString,
    dev_null: CString,
    host_null: CString,
    old: CString,
}

fn setup_and_pivot(p: &PivotPlan) -> i32 {
    let none: *const libc::c_char = std::ptr::null();
    let tmpfs = c"tmpfs";
    // SAFETY: every pointer is a NUL-terminated string built before the fork, or null
    // where mount(2) allows it.
    unsafe {
        let steps = [
            libc::unshare(libc::CLONE_NEWNS),
            libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ),
            libc::mount(
                p.root.as_ptr(),
                p.root.as_ptr(),
                none,
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ),
            libc::mount(
                tmpfs.as_ptr(),
                p.tmp.as_ptr(),
                tmpfs.as_ptr(),
                0,
                std::ptr::null(),
            ),
            libc::mount(
                c"proc".as_ptr(),
                p.proc_.as_ptr(),
                c"proc".as_ptr(),
                0,
                std::ptr::null(),
            ),
            libc::mount(
                tmpfs.as_ptr(),
                p.dev.as_ptr(),
                tmpfs.as_ptr(),
                0,
                std::ptr::null(),
            ),
        ];
        for s in steps {
            if s != 0 {
                return errno();
            }
        }
        let f = libc::open(
            p.dev_null.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
            0o666,
        );
        if f < 0 {
            return errno();
        }
        libc::close(f);
        let steps = [
            libc::mount(
                p.host_null.as_ptr(),
                p.dev_null.as_ptr(),
                none,
                libc::MS_BIND,
                std::ptr::null(),
            ),
            libc::chdir(p.root.as_ptr()),
            libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), p.old.as_ptr()) as i32,
            libc::umount2(c"/old".as_ptr(), libc::MNT_DETACH),
            libc::chdir(c"/".as_ptr()),
        ];
        for s in steps {
            if s != 0 {
                return errno();
            }
        }
    }
    0
}

#[test]
fn after_pivot_root_mounts_below_the_rootfs_are_allowed_and_escapes_are_not() {
    let test = "after_pivot_root_mounts_below_the_rootfs_are_allowed_and_escapes_are_not";
    let Some(_) = landlock_abi(test, 1) else {
        return;
    };
    if !is_root(test) {
        return;
    }
    let (root, _) = dir_with_file();
    for d in ["tmp", "proc", "dev", "old", "mnt"] {
        fs::create_dir(root.path().join(d)).unwrap();
    }
    let (other, _) = dir_with_file();
    // A rootfs without /dev rules: /dev/null below it is reached through the rootfs rule.
    let (fd, _, _) = prepare(&jail(
        Some(rootfs(root.path(), false)),
        LandlockMode::Required,
    ));
    let plan = PivotPlan {
        root: c(root.path()),
        tmp: c(root.path().join("tmp")),
        proc_: c(root.path().join("proc")),
        dev: c(root.path().join("dev")),
        dev_null: c(root.path().join("dev/null")),
        host_null: c("/dev/null"),
        old: c("old"),
    };
    // The escape routes: an fd of the host's `/` and of a host directory, opened before
    // the pivot_root and inherited.
    let host_root = opath(Path::new("/"));
    let other_fd = opath(other.path());
    let secret_from_root = c(other.path().join("f").strip_prefix("/").unwrap());
    let run = |ruleset: Option<RawFd>| {
        in_child(None, |r: &mut [i32; 10]| {
            r[0] = setup_and_pivot(&plan);
            if let Some(fd) = ruleset
                && !restrict(fd)
            {
                r[0] = 999;
                return;
            }
            r[1] = open(c"/f", RD);
            r[2] = open(c"/tmp/new", CREATE); // tmpfs below the rootfs
            r[3] = open(c"/proc/self/status", RD); // proc below the rootfs
            r[4] = open(c"/dev/null", libc::O_RDWR); // a bind below the rootfs
            r[5] = openat(host_root.as_raw_fd(), &secret_from_root, RD);
            r[6] = openat(other_fd.as_raw_fd(), c"f", RD);
            // A bind made after the rules (of the tmpfs /tmp, below the rootfs, onto /mnt).
            // SAFETY: NUL-terminated strings and null pointers mount(2) allows.
            r[7] = sys(unsafe {
                libc::mount(
                    c"/tmp".as_ptr(),
                    c"/mnt".as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                )
            });
            r[8] = open(c"/mnt/new", RD);
            // SAFETY: fchdir takes an fd (an O_PATH directory fd is accepted).
            r[9] = sys(unsafe { libc::fchdir(host_root.as_raw_fd()) });
        })
    };
    assert_eq!(names(&run(None)), ["ok"; 10]);
    let r = run(Some(fd.as_raw_fd()));
    // Mounts below the rootfs (tmpfs, proc, a /dev bind) are reached through the rootfs
    // rule; the inherited fds cannot open anything outside it; no new mount can be made.
    // (fchdir to an inherited directory is not an open: Landlock allows it, but nothing
    // below it can be opened, as r[5] shows.)
    let want = [0, 0, 0, 0, 0, EACCES, EACCES, libc::EPERM, libc::ENOENT, 0];
    assert_eq!(names(&r), names(&want));
}

#[test]
fn a_read_only_rootfs_keeps_its_tmpfs_and_dev_writable_through_the_child_rules() {
    let test = "a_read_only_rootfs_keeps_its_tmpfs_and_dev_writable_through_the_child_rules";
    let Some(_) = landlock_abi(test, 1) else {
        return;
    };
    if !is_root(test) {
        return;
    }
    let (root, _) = dir_with_file();
    for d in ["tmp", "proc", "dev", "old"] {
        fs::create_dir(root.path().join(d)).unwrap();
    }
    let mut fsys = rootfs(root.path(), true);
    fsys.minimal_dev = true;
    fsys.mounts = vec![Mount::Tmpfs {
        target: "/tmp".into(),
        size: None,
        mode: 0o1777,
    }];
    let p = prepare_full(&jail(Some(fsys), LandlockMode::Required));
    let paths: Vec<_> = p
        .child_rules
        .iter()
        .map(|(c, _)| c.to_str().unwrap())
        .collect();
    assert_eq!(paths, ["/tmp", "/dev"]);
    let plan = PivotPlan {
        root: c(root.path()),
        tmp: c(root.path().join("tmp")),
        proc_: c(root.path().join("proc")),
        dev: c(root.path().join("dev")),
        dev_null: c(root.path().join("dev/null")),
        host_null: c("/dev/null"),
        old: c("old"),
    };
    // `rules`: the ruleset, and whether the child adds its rules.
    let run = |rules: Option<(RawFd, bool)>| {
        in_child(None, |r: &mut [i32; 7]| {
            r[0] = setup_and_pivot(&plan);
            if let Some((fd, add)) = rules {
                if add {
                    r[0] = add_child_rules(fd, &p.child_rules);
                }
                if r[0] != 0 || !restrict(fd) {
                    r[0] = 999;
                    return;
                }
            }
            r[1] = open(c"/f", RD);
            r[2] = open(c"/f", WR);
            r[3] = open(c"/tmp/new", CREATE);
            r[4] = open(c"/dev/shm-like", CREATE);
            r[5] = open(c"/dev/null", libc::O_RDWR);
            r[6] = open(c"/proc/self/status", RD);
        })
    };
    let fd = p.fd.as_raw_fd();
    let d = EACCES;
    assert_eq!(names(&run(None)), ["ok"; 7]);
    assert_eq!(names(&run(Some((fd, true)))), names(&[0, 0, d, 0, 0, 0, 0]));
    // Without the child's rules the read-only rootfs rule covers its tmpfs mounts too; the
    // /dev/null bind keeps its own rule on the host node. (A fresh ruleset: the rules
    // added above went into the kernel object behind `fd`.)
    let p2 = prepare_full(&jail(
        Some(Filesystem {
            minimal_dev: true,
            ..rootfs(root.path(), true)
        }),
        LandlockMode::Required,
    ));
    let bare = p2.fd.as_raw_fd();
    assert_eq!(
        names(&run(Some((bare, false)))),
        names(&[0, 0, d, d, d, 0, 0])
    );
}

#[test]
fn devices_and_the_minimal_dev_nodes_are_allowed_other_host_devices_are_not() {
    let test = "devices_and_the_minimal_dev_nodes_are_allowed_other_host_devices_are_not";
    let Some(_) = landlock_abi(test, 1) else {
        return;
    };
    if !is_root(test) {
        return;
    }
    let Some(other) = ["/dev/kmsg", "/dev/mem", "/dev/ptmx"]
        .into_iter()
        .find(|d| fs::OpenOptions::new().read(true).open(d).is_ok())
    else {
        skip(
            test,
            "no host device to refuse (/dev/kmsg, /dev/mem, /dev/ptmx)",
        );
        return;
    };
    let (root, _) = dir_with_file();
    let mut only_zero = rootfs(root.path(), true);
    only_zero.devices = vec!["/dev/zero".into()];
    let mut minimal = rootfs(root.path(), true);
    minimal.minimal_dev = true;
    let (zero_fd, _, _) = prepare(&jail(Some(only_zero), LandlockMode::Required));
    // (The child rule on the new /dev, for a read-only rootfs, is not needed here: the
    // attempts are on the host nodes.)
    let min = prepare_full(&jail(Some(minimal), LandlockMode::Required));
    assert!(min.warnings.is_empty(), "{:?}", min.warnings);
    let min_fd = min.fd;
    let nodes = [
        "/dev/zero",
        "/dev/null",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
    ]
    .map(c);
    let other = c(other);
    let run = |ruleset: Option<RawFd>| {
        in_child(ruleset, |r: &mut [i32; 6]| {
            for (i, n) in nodes.iter().enumerate() {
                r[i] = open(n, libc::O_RDWR);
            }
            r[5] = open(&other, RD);
        })
    };
    assert_eq!(names(&run(None)), ["ok"; 6]);
    let d = EACCES;
    assert_eq!(
        names(&run(Some(zero_fd.as_raw_fd()))),
        names(&[0, d, d, d, d, d])
    );
    assert_eq!(
        names(&run(Some(min_fd.as_raw_fd()))),
        names(&[0, 0, 0, 0, 0, d])
    );
}

#[test]
fn without_a_rootfs_the_host_tree_is_read_only_but_for_writable_binds() {
    let test = "without_a_rootfs_the_host_tree_is_read_only_but_for_writable_binds";
    let Some(_) = landlock_abi(test, 1) else {
        return;
    };
    let (other, other_f) = dir_with_file();
    let (rw, _) = dir_with_file();
    let fsys = Filesystem {
        mounts: vec![bind(rw.path(), "/srv/data", false)],
        ..Default::default()
    };
    let (fd, _, _) = prepare(&jail(Some(fsys), LandlockMode::Required));
    let (of, on, rn) = (
        c(&other_f),
        c(other.path().join("new")),
        c(rw.path().join("new")),
    );
    let run = |ruleset: Option<RawFd>| {
        in_child(ruleset, |r: &mut [i32; 4]| {
            r[0] = open(c"/etc/passwd", RD);
            r[1] = open(&of, WR);
            r[2] = open(&on, CREATE);
            r[3] = open(&rn, CREATE);
        })
    };
    assert_eq!(
        names(&run(Some(fd.as_raw_fd()))),
        names(&[0, EACCES, EACCES, 0])
    );
    assert_eq!(names(&run(None)), ["ok"; 4]);
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn tcp_connect_and_bind_rules_allow_only_their_ports() {
    let test = "tcp_connect_and_bind_rules_allow_only_their_ports";
    let Some(_) = landlock_abi(test, 4) else {
        return;
    };
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    let (pa, pb) = (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    );
    let (bind_ok, bind_no) = (free_port(), free_port());
    let mut j = jail(None, LandlockMode::Required);
    j.landlock.tcp_connect = Some(vec![pa]);
    j.landlock.tcp_bind = Some(vec![bind_ok]);
    let (fd, abi, w) = prepare(&j);
    assert!(abi >= 4 && w.is_empty(), "{abi} {w:?}");
    let run = |ruleset: Option<RawFd>| {
        in_child(ruleset, |r: &mut [i32; 4]| {
            r[0] = tcp(pa, true);
            r[1] = tcp(pb, true);
            r[2] = tcp(bind_ok, false);
            r[3] = tcp(bind_no, false);
        })
    };
    assert_eq!(names(&run(None)), ["ok"; 4]);
    assert_eq!(
        names(&run(Some(fd.as_raw_fd()))),
        names(&[0, EACCES, 0, EACCES])
    );
}

#[test]
fn a_lower_abi_degrades_in_best_effort_and_fails_when_required() {
    let test = "a_lower_abi_degrades_in_best_effort_and_fails_when_required";
    let Some(_) = landlock_abi(test, 4) else {
        return;
    };
    let (root, _) = dir_with_file();
    let (_other, secret) = dir_with_file();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut j = jail(Some(rootfs(root.path(), false)), LandlockMode::BestEffort);
    j.landlock.tcp_connect = Some(vec![port.wrapping_add(1)]);

    // ABI 3: the filesystem rules hold, the TCP rule is dropped with a warning.
    let p = landlock::prepare_capped(&j, Some(3)).unwrap().unwrap();
    let (fd, abi, w) = (p.fd, p.abi, p.warnings);
    assert_eq!(abi, 3);
    assert!(
        w.len() == 1 && w[0].contains("TCP") && w[0].contains("ABI 4"),
        "{w:?}"
    );
    assert_eq!(landlock::plan_capped(&j, Some(3)).warnings, w);
    let s = c(&secret);
    let run = |ruleset: Option<RawFd>| {
        in_child(ruleset, |r: &mut [i32; 2]| {
            r[0] = tcp(port, true);
            r[1] = open(&s, RD);
        })
    };
    assert_eq!(names(&run(Some(fd.as_raw_fd()))), names(&[0, EACCES]));
    // The same jail at the kernel's ABI refuses the connect.
    let (full, _, _) = prepare(&j);
    assert_eq!(
        names(&run(Some(full.as_raw_fd()))),
        names(&[EACCES, EACCES])
    );

    // No Landlock at all: best effort runs without it, with a warning.
    assert!(landlock::prepare_capped(&j, Some(0)).unwrap().is_none());
    let r = landlock::plan_capped(&j, Some(0));
    assert_eq!(
        (r.abi, r.error.is_none(), r.warnings.len()),
        (None, true, 1)
    );

    j.landlock.mode = LandlockMode::Required;
    let e = landlock::prepare_capped(&j, Some(3))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("required") && e.contains("TCP") && e.contains("ABI 3"),
        "{e}"
    );
    let e = landlock::prepare_capped(&j, Some(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no Landlock"), "{e}");
    let r = landlock::plan_capped(&j, Some(3));
    assert_eq!(r.abi, None);
    assert!(r.error.unwrap().contains("TCP"));
}

#[test]
fn kernel_abi_and_plan_report_what_is_enforced() {
    let test = "kernel_abi_and_plan_report_what_is_enforced";
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) only
    // returns the ABI version (or -1); no memory is read and no fd is made.
    let raw = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    let expect = (raw > 0).then_some(raw as u32);
    assert_eq!(landlock::kernel_abi(), expect);
    let Some(abi) = landlock_abi(test, 1) else {
        return;
    };
    let (root, _) = dir_with_file();
    let off = jail(Some(rootfs(root.path(), false)), LandlockMode::Off);
    assert_eq!(landlock::plan(&off), LandlockReport::default());
    assert!(landlock::prepare_capped(&off, None).unwrap().is_none());
    let on = jail(Some(rootfs(root.path(), false)), LandlockMode::Required);
    let r = landlock::plan(&on);
    assert_eq!(r.error, None);
    // The crate knows ABIs up to 10; this kernel's is below that.
    assert_eq!(r.abi, Some(abi.min(10)));
    let (_, prepared_abi, _) = prepare(&on);
    assert_eq!(Some(prepared_abi), r.abi);
}
