//! Jail filesystems against the real kernel: a busybox rootfs with binds, tmpfs, proc,
//! sysfs, mqueue, the minimal `/dev` and devices; masked paths; the cgroup filesystem hidden
//! or read-only; a read-only root; symlinks in the rootfs that must not redirect a mount to
//! the host; nothing propagating to the host; failures naming the mount. Needs root and
//! `/bin/busybox` (Debian's `busybox-static`); skipped with a reason otherwise.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use paddock_proc::jail::{CgroupFs, Filesystem, Jail, Landlock, LandlockMode, Mount};
use paddock_proc::{Command, ExitStatus, Namespaces, SpawnError, Stage};

fn ready(test: &str, busybox: bool) -> bool {
    if let Some(reason) = paddock_testutil::root_tests_unavailable() {
        paddock_testutil::skip(test, &reason);
        return false;
    }
    if busybox && !Path::new("/bin/busybox").exists() {
        paddock_testutil::skip(test, "no /bin/busybox (apt-get install busybox-static)");
        return false;
    }
    true
}

/// A rootfs with a static busybox as `/bin/sh` and its applets.
fn rootfs() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let bin = d.path().join("bin");
    fs::create_dir(&bin).unwrap();
    fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    for applet in [
        "sh", "cat", "ls", "echo", "touch", "mkdir", "grep", "id", "readlink", "stat", "wc",
    ] {
        symlink("busybox", bin.join(applet)).unwrap();
    }
    d
}

fn bind(source: &Path, target: &str, readonly: bool) -> Mount {
    Mount::Bind {
        source: source.to_owned(),
        target: target.into(),
        readonly,
        nosuid: false,
        nodev: false,
        noexec: false,
    }
}

fn run(
    fs: Filesystem,
    ns: Namespaces,
    script: &str,
) -> Result<(ExitStatus, String, String), SpawnError> {
    let jail = Jail {
        filesystem: Some(fs),
        ..Jail::default()
    };
    let out = Command::new("/bin/sh")
        .args(["-c", script])
        .env_clear()
        .env("PATH", "/bin:/usr/bin")
        .unshare(Namespaces::MOUNT | ns)
        .jail(jail)
        .output()?;
    Ok((
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Nothing of `paths` is mounted in the test's own mount namespace.
fn assert_no_host_mounts(paths: &[&Path]) {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    for p in paths {
        let p = p.to_str().unwrap();
        assert!(
            !info.lines().any(|l| l.contains(p)),
            "{p} leaked into the host's mounts:\n{info}"
        );
    }
}

#[test]
fn a_busybox_rootfs_gets_its_mounts_and_a_minimal_dev() {
    let test = "a_busybox_rootfs_gets_its_mounts_and_a_minimal_dev";
    if !ready(test, true) {
        return;
    }
    let root = rootfs();
    let ro = tempfile::tempdir().unwrap();
    fs::write(ro.path().join("file"), "read-only data\n").unwrap();
    let rw = tempfile::tempdir().unwrap();
    let tun = PathBuf::from("/dev/net/tun");
    let fsys = Filesystem {
        rootfs: Some(root.path().to_owned()),
        mounts: vec![
            bind(ro.path(), "/data/ro", true),
            bind(rw.path(), "/data/rw", false),
            Mount::Tmpfs {
                target: "/tmp".into(),
                size: Some(1 << 20),
                mode: 0o1777,
            },
            Mount::Proc {
                target: "/proc".into(),
            },
            Mount::Sysfs {
                target: "/sys".into(),
            },
            Mount::Mqueue {
                target: "/mq".into(),
            },
        ],
        minimal_dev: true,
        devices: if tun.exists() {
            vec![tun.clone()]
        } else {
            vec![]
        },
        ..Filesystem::default()
    };
    let script = "\
        cat /data/ro/file; \
        echo x >/data/ro/new 2>/dev/null || echo ro-denied; \
        echo y >/data/rw/new && echo rw-ok; \
        echo z >/tmp/t && cat /tmp/t; \
        echo pid $$; for d in /proc/[0-9]*; do echo $d; done; \
        touch /sys/x 2>/dev/null || echo sys-ro; \
        grep -c ' /mq .* - mqueue ' /proc/self/mountinfo; \
        ls /dev; \
        echo hi >/dev/null && echo null-ok; \
        stat -c '%a %t,%T' /dev/null; \
        grep -c ' /dev/null ' /proc/self/mountinfo; \
        readlink /dev/ptmx; \
        ls /dev/sda 2>/dev/null || echo no-sda";
    let (st, out, err) = run(fsys, Namespaces::PID | Namespaces::IPC, script).unwrap();
    assert_eq!(st, ExitStatus::Exited(0), "{out}\n{err}");
    let mut dev = vec![
        "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty",
        "urandom", "zero",
    ];
    if tun.exists() {
        dev.push("net");
        dev.sort();
    }
    let expected = format!(
        "read-only data\nro-denied\nrw-ok\nz\npid 1\n/proc/1\nsys-ro\n1\n{}\nnull-ok\n666 1,3\n0\npts/ptmx\nno-sda\n",
        dev.join("\n")
    );
    assert_eq!(out, expected, "{err}");
    assert_eq!(fs::read_to_string(rw.path().join("new")).unwrap(), "y\n");
    assert!(!ro.path().join("new").exists());
    assert_no_host_mounts(&[root.path(), ro.path(), rw.path()]);
}

#[test]
fn masked_paths_and_the_cgroup_filesystem_on_the_host_tree() {
    let test = "masked_paths_and_the_cgroup_filesystem_on_the_host_tree";
    if !ready(test, false) {
        return;
    }
    let Some(cg) = paddock_testutil::cgroup2_mount() else {
        paddock_testutil::skip(test, "no cgroup2 mount");
        return;
    };
    let proc_ = Mount::Proc {
        target: "/proc".into(),
    };
    let fsys = |cgroupfs| Filesystem {
        mounts: vec![proc_.clone()],
        masked_paths: vec![
            "/proc/timer_list".into(),
            "/sys/firmware".into(),
            "/nonexistent/x".into(),
        ],
        cgroupfs,
        ..Filesystem::default()
    };
    let script = format!(
        "wc -c </proc/timer_list; ls -A /sys/firmware | wc -l; touch /sys/firmware/x 2>/dev/null || echo fw-ro; \
         ls -A {cg} | wc -l; mkdir {cg}/paddock-jail-test 2>&1 | grep -o 'Read-only file system'",
        cg = cg.display()
    );
    let (st, out, err) = run(fsys(CgroupFs::Hidden), Namespaces::PID, &script).unwrap();
    assert_eq!(
        out, "0\n0\nfw-ro\n0\nRead-only file system\n",
        "{st:?} {err}"
    );
    let (_, out, err) = run(fsys(CgroupFs::ReadOnly), Namespaces::PID, &script).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["0", "0", "fw-ro"], "{err}");
    assert_ne!(lines[3], "0", "the read-only cgroupfs is not empty: {out}");
    assert_eq!(lines[4], "Read-only file system", "{err}");
    assert!(!cg.join("paddock-jail-test").exists());
    // The host's /proc and cgroupfs are untouched.
    assert!(!fs::read_to_string("/proc/timer_list").unwrap().is_empty());
}

#[test]
fn a_read_only_root_refuses_writes_but_its_tmpfs_does_not() {
    let test = "a_read_only_root_refuses_writes_but_its_tmpfs_does_not";
    if !ready(test, true) {
        return;
    }
    let root = rootfs();
    let fsys = Filesystem {
        rootfs: Some(root.path().to_owned()),
        readonly: true,
        mounts: vec![Mount::Tmpfs {
            target: "/tmp".into(),
            size: None,
            mode: 0o1777,
        }],
        ..Filesystem::default()
    };
    let (st, out, err) = run(
        fsys,
        Namespaces::NONE,
        "touch /x 2>&1 | grep -o 'Read-only file system'; touch /tmp/x && echo tmp-ok",
    )
    .unwrap();
    assert_eq!(out, "Read-only file system\ntmp-ok\n", "{st:?} {err}");
    assert!(!root.path().join("x").exists());
    // The rootfs itself (on the host) is still writable.
    fs::write(root.path().join("y"), "").unwrap();
    assert_no_host_mounts(&[root.path()]);
}

/// A target is created where its path leads at the time of its own mount: the first file
/// bind creates `/a` and `/a/f1` in the rootfs; the tmpfs then mounted on `/a` covers them,
/// so the second bind's `/a/f2` must be created in that tmpfs (not in the rootfs's `a`
/// that the first bind's directory pointed to).
#[test]
fn a_mount_over_a_parent_sends_later_targets_into_it() {
    let test = "a_mount_over_a_parent_sends_later_targets_into_it";
    if !ready(test, true) {
        return;
    }
    let root = rootfs();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("file");
    fs::write(&file, "bound\n").unwrap();
    let fsys = Filesystem {
        rootfs: Some(root.path().to_owned()),
        mounts: vec![
            bind(&file, "/a/f1", true),
            Mount::Tmpfs {
                target: "/a".into(),
                size: None,
                mode: 0o755,
            },
            bind(&file, "/a/f2", true),
        ],
        ..Filesystem::default()
    };
    let (st, out, err) = run(fsys, Namespaces::NONE, "ls /a; cat /a/f2").unwrap();
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    assert_eq!(out, "f2\nbound\n", "{err}");
    assert!(root.path().join("a/f1").is_file());
    assert!(!root.path().join("a/f2").exists());
    assert_no_host_mounts(&[root.path(), src.path()]);
}

#[test]
fn a_symlink_in_the_rootfs_cannot_send_a_mount_to_the_host() {
    let test = "a_symlink_in_the_rootfs_cannot_send_a_mount_to_the_host";
    if !ready(test, true) {
        return;
    }
    let root = rootfs();
    fs::create_dir(root.path().join("etc")).unwrap();
    symlink("/etc", root.path().join("etc-link")).unwrap();
    symlink("../../../../../etc", root.path().join("dotdot")).unwrap();
    let src = tempfile::tempdir().unwrap();
    let name = format!("paddock-jail-test-{}", std::process::id());
    let fsys = Filesystem {
        rootfs: Some(root.path().to_owned()),
        mounts: vec![
            Mount::Tmpfs {
                target: format!("/etc-link/{name}").into(),
                size: None,
                mode: 0o755,
            },
            bind(src.path(), &format!("/dotdot/{name}-bind"), false),
        ],
        ..Filesystem::default()
    };
    let script = format!("grep -c '/etc/{name}' /proc/self/mountinfo || true");
    let (st, _out, err) = run(fsys, Namespaces::NONE, &script).unwrap();
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    // Created (and mounted on) inside the rootfs, not on the host.
    assert!(root.path().join("etc").join(&name).is_dir());
    assert!(
        root.path()
            .join("etc")
            .join(format!("{name}-bind"))
            .is_dir()
    );
    assert!(!Path::new("/etc").join(&name).exists());
    assert!(!Path::new("/etc").join(format!("{name}-bind")).exists());
    assert_no_host_mounts(&[root.path(), src.path()]);
}

#[test]
fn a_failing_mount_is_named() {
    let test = "a_failing_mount_is_named";
    if !ready(test, true) {
        return;
    }
    let root = rootfs();
    let fsys = Filesystem {
        rootfs: Some(root.path().to_owned()),
        mounts: vec![Mount::Tmpfs {
            target: "/bin/busybox/sub".into(),
            size: None,
            mode: 0o755,
        }],
        ..Filesystem::default()
    };
    let e = run(fsys, Namespaces::NONE, "true").unwrap_err();
    assert_eq!(
        (e.stage(), e.errno()),
        (Some(Stage::Filesystem), Some(libc::ENOTDIR)),
        "{e}"
    );
    assert!(e.to_string().contains("tmpfs on /bin/busybox/sub"), "{e}");
    assert_no_host_mounts(&[root.path()]);
}

#[test]
fn landlock_with_a_read_only_rootfs_allows_its_tmpfs_through_the_child_rules() {
    let test = "landlock_with_a_read_only_rootfs_allows_its_tmpfs_through_the_child_rules";
    if !ready(test, true) {
        return;
    }
    if paddock_proc::jail::landlock::kernel_abi().is_none() {
        paddock_testutil::skip(test, "the kernel has no Landlock");
        return;
    }
    let root = rootfs();
    let jail = Jail {
        no_new_privs: true,
        landlock: Landlock {
            mode: LandlockMode::Required,
            ..Landlock::default()
        },
        filesystem: Some(Filesystem {
            rootfs: Some(root.path().to_owned()),
            readonly: true,
            mounts: vec![Mount::Tmpfs {
                target: "/tmp".into(),
                size: None,
                mode: 0o1777,
            }],
            minimal_dev: true,
            ..Filesystem::default()
        }),
        ..Jail::default()
    };
    let out = Command::new("/bin/sh")
        .args([
            "-c",
            "echo a >/tmp/a && cat /tmp/a; echo b >/dev/shm/b && echo shm-ok; \
             echo c >/dev/null && echo null-ok; \
             mkdir /tmp/d 2>&1 && echo mkdir-ok",
        ])
        .unshare(Namespaces::MOUNT)
        .jail(jail)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        "a\nshm-ok\nnull-ok\nmkdir-ok\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_host_mounts(&[root.path()]);
}

/// Without a rootfs the mounts go onto the host's tree: a missing target is refused before
/// the clone (nothing is made in a host directory), while one below a tmpfs of the jail's
/// own is made there; an existing target works.
#[test]
fn without_a_rootfs_nothing_is_created_on_the_host() {
    let test = "without_a_rootfs_nothing_is_created_on_the_host";
    if !ready(test, false) {
        return;
    }
    let host = tempfile::tempdir().unwrap();
    let missing = host.path().join("missing");
    let tmpfs = |t: &Path| Mount::Tmpfs {
        target: t.to_owned(),
        size: None,
        mode: 0o755,
    };
    let fsys = Filesystem {
        mounts: vec![tmpfs(&missing)],
        ..Filesystem::default()
    };
    let e = run(fsys, Namespaces::NONE, "true").unwrap_err();
    assert!(matches!(e, SpawnError::Invalid(_)), "{e}");
    assert!(
        e.to_string().contains("does not exist") && e.to_string().contains("rootfs"),
        "{e}"
    );
    assert!(!missing.exists(), "a host directory was made");

    // A tmpfs on an existing host directory, and a target inside it made in the tmpfs.
    let fsys = Filesystem {
        mounts: vec![tmpfs(host.path()), tmpfs(&missing)],
        ..Filesystem::default()
    };
    let script = format!("grep -c ' {} ' /proc/self/mountinfo", missing.display());
    let (st, out, err) = run(fsys, Namespaces::NONE, &script).unwrap();
    assert_eq!(st, ExitStatus::Exited(0), "{out}{err}");
    assert_eq!(out.trim(), "1");
    assert!(
        !missing.exists(),
        "the target was made in the jail's tmpfs only"
    );
    assert_no_host_mounts(&[host.path()]);
}
