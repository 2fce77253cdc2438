//! Landlock through a whole jailed spawn (a busybox rootfs, the rules enforced by the child
//! last before seccomp and `execve`), each attempt with a control run without Landlock that
//! succeeds, so the test can fail: an fd of a host directory the program is handed (opened
//! by path in the parent, outside the rootfs) opens nothing in it. (The TCP rules are
//! tested in `tests/landlock.rs`.) Needs root, `/bin/busybox` and a kernel with Landlock,
//! else skipped with the reason.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use paddock_proc::jail::{Filesystem, Jail, Landlock, LandlockMode, Mount};
use paddock_proc::{Command, ExitStatus, Namespaces, Stdio};

fn ready(test: &str, abi: u32) -> bool {
    if let Some(reason) = paddock_testutil::root_tests_unavailable() {
        paddock_testutil::skip(test, &reason);
        return false;
    }
    if !Path::new("/bin/busybox").exists() {
        paddock_testutil::skip(test, "no /bin/busybox (apt-get install busybox-static)");
        return false;
    }
    match paddock_proc::jail::landlock::kernel_abi() {
        Some(a) if a >= abi => true,
        other => {
            paddock_testutil::skip(
                test,
                &format!("the kernel's Landlock ABI is {other:?}; this test needs {abi}"),
            );
            false
        }
    }
}

fn rootfs() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let bin = d.path().join("bin");
    fs::create_dir(&bin).unwrap();
    fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    for applet in ["sh", "cat", "echo", "nc", "ls"] {
        symlink("busybox", bin.join(applet)).unwrap();
    }
    d
}

fn run(
    root: &Path,
    landlock: Landlock,
    script: &str,
    extra_fd: Option<fs::File>,
) -> (ExitStatus, String) {
    let jail = Jail {
        no_new_privs: true,
        landlock,
        filesystem: Some(Filesystem {
            rootfs: Some(root.to_owned()),
            mounts: vec![Mount::Proc {
                target: "/proc".into(),
            }],
            minimal_dev: true,
            ..Filesystem::default()
        }),
        ..Jail::default()
    };
    let mut c = Command::new("/bin/sh");
    c.args(["-c", script])
        .env_clear()
        .env("PATH", "/bin")
        .unshare(Namespaces::MOUNT)
        .jail(jail);
    if let Some(f) = extra_fd {
        c.fd(5, Stdio::from(f));
    }
    let out = c.output().unwrap();
    (
        out.status,
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn required() -> Landlock {
    Landlock {
        mode: LandlockMode::Required,
        ..Landlock::default()
    }
}

#[test]
fn an_fd_of_a_host_directory_opens_nothing_under_landlock() {
    let test = "an_fd_of_a_host_directory_opens_nothing_under_landlock";
    if !ready(test, 1) {
        return;
    }
    let root = rootfs();
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("secret"), "host-secret\n").unwrap();
    let script = "cat /proc/self/fd/5/secret";
    let dir = || fs::File::open(host.path()).unwrap();
    let (st, out) = run(root.path(), Landlock::default(), script, Some(dir()));
    assert_eq!(
        (st, out.as_str()),
        (ExitStatus::Exited(0), "host-secret\n"),
        "control: without Landlock the handed fd reaches the host file"
    );
    let (st, out) = run(root.path(), required(), script, Some(dir()));
    assert_ne!(st, ExitStatus::Exited(0), "{out}");
    assert!(!out.contains("host-secret"), "{out}");
    assert!(out.contains("Permission denied"), "{out}");
    // The rootfs itself stays readable.
    let (st, out) = run(root.path(), required(), "ls /bin/busybox", None);
    assert_eq!(st, ExitStatus::Exited(0), "{out}");
}
