//! A hostile payload against the jail: uid 65534, a rootfs made from busybox-static, pid,
//! mount, ipc and uts namespaces and the default seccomp profile. Each attempt to get out is
//! made twice: once in a control run that lacks the one part of the jail that stops it
//! (and must succeed, so the test can fail), once jailed (and must fail). Runs as root on
//! real cgroups and namespaces; needs `/bin/busybox` (Debian's busybox-static) and a C
//! compiler for the probe (`cc`), else it skips with the reason.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Env, env, sh};
use paddock_supervisor::{SandboxSpec, StdioTarget};
use serde_json::{Value, json};

/// A static probe for what busybox cannot do: read its effective uid after a setuid exec and
/// try `setuid(0)`, create a user namespace, create a BPF map.
const PROBE_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <linux/bpf.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (!strcmp(argv[1], "setuid")) {
        printf("euid=%d\n", (int)geteuid());
        printf("setuid0=%s\n", setuid(0) == 0 ? "ok" : strerror(errno));
    } else if (!strcmp(argv[1], "userns")) {
        printf("userns=%s\n", unshare(CLONE_NEWUSER) == 0 ? "ok" : strerror(errno));
    } else if (!strcmp(argv[1], "bpf")) {
        union bpf_attr a;
        memset(&a, 0, sizeof a);
        a.map_type = BPF_MAP_TYPE_ARRAY;
        a.key_size = 4;
        a.value_size = 4;
        a.max_entries = 1;
        long fd = syscall(SYS_bpf, BPF_MAP_CREATE, &a, sizeof a);
        printf("bpf=%s\n", fd >= 0 ? "ok" : strerror(errno));
    } else {
        return 2;
    }
    return 0;
}
"#;

/// The test's world: a supervisor, a busybox rootfs with the setuid probe, a host secret
/// outside the rootfs, a directory for read-only binds.
struct World {
    env: Env,
    rootfs: PathBuf,
    secret: PathBuf,
    data: PathBuf,
}

fn world(test: &str) -> Option<World> {
    if !Path::new("/bin/busybox").exists() {
        paddock_testutil::note_skip(test, "no /bin/busybox (install busybox-static)");
        return None;
    }
    let env = env(test)?;
    let rootfs = env.scratch.path("rootfs");
    for d in ["bin", "proc", "dev", "tmp", "sys", "data"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    // Every applet as a relative link to busybox (`--install -s` would link to the host
    // path of the copy, which does not exist inside the rootfs).
    let out = paddock_proc::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    assert!(out.status.success(), "busybox --list: {out:?}");
    for applet in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
    }
    let src = env.scratch.path("probe.c");
    std::fs::write(&src, PROBE_C).unwrap();
    let probe = rootfs.join("bin/probe");
    match paddock_proc::Command::new("cc")
        .args(["-static", "-O", "-o"])
        .arg(&probe)
        .arg(&src)
        .output()
    {
        Ok(o) if o.status.success() => {}
        other => {
            paddock_testutil::note_skip(
                test,
                &format!("cannot build the static probe with cc: {other:?}"),
            );
            return None;
        }
    }
    // Owned by root (the test runs as root) and setuid.
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let secret = env.scratch.path("secret");
    std::fs::write(&secret, "host-secret\n").unwrap();
    let data = env.scratch.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    Some(World {
        env,
        rootfs,
        secret,
        data,
    })
}

impl World {
    /// The issue's jail: uid 65534, the rootfs, pid, mount, ipc and uts namespaces, the
    /// default seccomp; `data` bound read-only at `/data`. `patch` edits it (for controls).
    fn jail(&self, patch: impl FnOnce(&mut Value)) -> Value {
        let mut j = json!({
            "user": {"uid": 65534, "gid": 65534},
            "namespaces": ["pid", "mount", "ipc", "uts"],
            "filesystem": {
                "rootfs": self.rootfs,
                "mounts": [{"type": "bind", "source": self.data, "target": "/data", "readonly": true}]
            },
            "seccomp": "default"
        });
        patch(&mut j);
        j
    }

    /// Runs `script` under `/bin/sh` with `jail` (none: the host, as root), to completion;
    /// returns its exit code and what it wrote (stdout and stderr).
    async fn run(&self, name: &str, jail: Option<Value>, script: &str) -> (Option<i32>, String) {
        let out = self.env.scratch.path(&format!("{name}.out"));
        let mut spec: SandboxSpec = sh(name, script);
        spec.stdio.stdout = StdioTarget::File(out.clone());
        spec.stdio.stderr = StdioTarget::File(out.clone());
        spec.jail = jail.map(|j| serde_json::from_value(j).expect("a valid jail"));
        let s = self
            .env
            .sup
            .start(spec)
            .await
            .unwrap_or_else(|e| panic!("{name}: start: {e}"));
        let report = self
            .env
            .sup
            .wait_stopped(&s.info.id, Some(s.info.lifecycle))
            .await
            .unwrap();
        assert!(report.stuck.is_empty(), "{name}: {report:?}");
        let info = self
            .env
            .sup
            .get_lifecycle(&s.info.id, s.info.lifecycle)
            .expect("still registered");
        let code = info.main_exit.and_then(|m| m.code);
        (code, std::fs::read_to_string(&out).unwrap_or_default())
    }

    /// The control must print `want`; the jailed run must not.
    async fn attempt(
        &self,
        what: &str,
        control: Option<Value>,
        jailed: Value,
        script: &str,
        want: &str,
    ) {
        let (_, c) = self.run(&format!("{what}-control"), control, script).await;
        assert!(
            c.contains(want),
            "{what}: the control run did not get {want:?}, so this attempt tests nothing:\n{c}"
        );
        let (_, j) = self
            .run(&format!("{what}-jailed"), Some(jailed), script)
            .await;
        assert!(
            !j.contains(want),
            "{what}: the jailed payload got {want:?}:\n{j}"
        );
    }
}

/// A host process killed and reaped on drop, also when the test fails.
struct Victim(paddock_proc::Process);

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait_timeout(Duration::from_secs(5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jailed_payload_cannot_get_out() {
    let Some(w) = world("jail_escape") else {
        return;
    };
    let jail = w.jail(|_| {});

    // A host file outside the rootfs.
    let script = format!("cat {} && echo READ-OK", w.secret.display());
    w.attempt("host-file", None, jail.clone(), &script, "host-secret")
        .await;

    // A read-only bind: the control binds it read-write.
    let rw = w.jail(|j| j["filesystem"]["mounts"][0]["readonly"] = json!(false));
    w.attempt(
        "ro-bind",
        Some(rw),
        jail.clone(),
        "echo x > /data/f && echo WRITE-OK",
        "WRITE-OK",
    )
    .await;
    assert!(!w.data.join("f").exists() || std::fs::remove_file(w.data.join("f")).is_ok());

    // Host pids: a process of the same uid outside, which only the pid namespace hides.
    let victim = Victim(
        paddock_proc::Command::new("setpriv")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "sleep",
                "300",
            ])
            .spawn()
            .expect("spawn the victim"),
    );
    let vpid = victim.0.pid();
    // The victim is a host process of uid 65534 only once setpriv has changed its ids and
    // exec'd sleep: until then it is root's, which the control could not signal either.
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(format!("/proc/{vpid}/comm"))
        .map_or(true, |c| c.trim() != "sleep")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the victim did not become `sleep` as uid 65534"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let no_pidns = w.jail(|j| j["namespaces"] = json!(["mount", "ipc", "uts"]));
    let script = format!("kill -0 {vpid} && echo SEE-OK");
    w.attempt(
        "see-pid",
        Some(no_pidns.clone()),
        jail.clone(),
        &script,
        "SEE-OK",
    )
    .await;
    let (_, j) = w
        .run(
            "signal-jailed",
            Some(jail.clone()),
            &format!("kill -TERM {vpid}; echo sent"),
        )
        .await;
    assert!(j.contains("sent"), "{j}");
    assert!(
        common::alive(vpid),
        "the jailed payload signalled a host process"
    );
    let (_, c) = w
        .run(
            "signal-control",
            Some(no_pidns),
            &format!("kill -TERM {vpid} && echo KILL-OK"),
        )
        .await;
    assert!(c.contains("KILL-OK"), "control: {c}");
    let st = victim.0.wait_timeout(Duration::from_secs(10));
    assert!(st.is_some(), "the control's signal ended the victim");
    let (_, j) = w
        .run("pids", Some(jail.clone()), "ls /proc | grep -c '^[0-9]'")
        .await;
    let n: u32 = j.trim().parse().unwrap_or(99);
    assert!(n <= 4, "the jail sees {n} pids:\n{j}");

    // setuid(0), and privileges back through a setuid binary: the control lacks
    // no_new_privs (the rootfs is not mounted nosuid).
    let nnp_off = w.jail(|j| j["privileges"] = json!({"no_new_privs": false}));
    w.attempt(
        "setuid-binary",
        Some(nnp_off),
        jail.clone(),
        "/bin/probe setuid",
        "euid=0",
    )
    .await;
    let (_, j) = w
        .run("setuid0", Some(jail.clone()), "/bin/probe setuid")
        .await;
    assert!(j.contains("euid=65534") && !j.contains("setuid0=ok"), "{j}");

    // mount, BPF, user namespaces. The controls: root on the host (BPF, user namespaces);
    // root in the rootfs with CAP_SYS_ADMIN, unconfined, without Landlock (mount).
    let probe = w.rootfs.join("bin/probe");
    w.attempt(
        "bpf",
        None,
        jail.clone(),
        &format!("{} bpf", probe.display()),
        "bpf=ok",
    )
    .await;
    w.attempt(
        "userns",
        None,
        jail.clone(),
        &format!("{} userns", probe.display()),
        "userns=ok",
    )
    .await;
    let (_, j) = w
        .run("userns-jailed", Some(jail.clone()), "/bin/probe userns")
        .await;
    assert!(j.contains("userns=") && !j.contains("userns=ok"), "{j}");
    let admin = w.jail(|j| {
        j["user"] = json!({"uid": 0, "gid": 0});
        j["privileges"] = json!({"cap_add": ["SYS_ADMIN"]});
        j["seccomp"] = json!("unconfined");
        j["landlock"] = json!({"mode": "off"});
    });
    w.attempt(
        "mount",
        Some(admin),
        jail.clone(),
        "mount -t tmpfs none /tmp && echo MOUNT-OK",
        "MOUNT-OK",
    )
    .await;

    // Its own cgroup's files, through the host's cgroup2 bound into the jail: a root
    // control with the cgroup file system unchanged writes cgroup.procs; the jailed
    // payload (hidden by default) cannot, nor can a root jail with it read-only.
    let cg2 = paddock_testutil::cgroup2_mount().expect("cgroup2");
    let with_cg = |j: &mut Value, mode: &str| {
        j["filesystem"]["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "bind", "source": cg2, "target": "/sys/fs/cgroup"}));
        j["filesystem"]["cgroupfs"] = json!(mode);
    };
    let root_unchanged = w.jail(|j| {
        j["user"] = json!({"uid": 0, "gid": 0});
        with_cg(j, "unchanged");
    });
    let root_readonly = w.jail(|j| {
        j["user"] = json!({"uid": 0, "gid": 0});
        with_cg(j, "readonly");
    });
    let jailed_cg = w.jail(|j| with_cg(j, "hidden"));
    let script = "own=$(sed -n 's/^0:://p' /proc/self/cgroup); \
                  for f in cgroup.procs pids.max memory.max; do \
                    [ -e /sys/fs/cgroup$own/$f ] || continue; \
                    v=$(cat /sys/fs/cgroup$own/$f | head -n 1); \
                    [ $f = cgroup.procs ] && v=$$; \
                    echo $v > /sys/fs/cgroup$own/$f && echo WROTE-$f; \
                  done; true";
    w.attempt(
        "cgroup-files",
        Some(root_unchanged),
        jailed_cg,
        script,
        "WROTE-cgroup.procs",
    )
    .await;
    let (_, j) = w.run("cgroup-readonly", Some(root_readonly), script).await;
    assert!(!j.contains("WROTE-"), "{j}");

    // /proc/<pid>/root of a process outside: the host's root for a payload on the host (the
    // test's own process stands in for the host's pid 1, which a container may not let
    // even root read); in the jail, /proc/1 is the jail's init, with the jail's root, and
    // no pid outside is visible.
    let script = format!(
        "cat /proc/1/root{s} || cat /proc/{me}/root{s}",
        s = w.secret.display(),
        me = std::process::id()
    );
    w.attempt("proc-1-root", None, jail.clone(), &script, "host-secret")
        .await;

    // An fd of the supervisor's process that is not close-on-exec: it gives the host
    // directory to whoever inherits it (checked here), but no payload inherits it.
    let dir = std::ffi::CString::new(w.env.scratch.0.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: open(2) with a NUL-terminated path; the fd is owned by `leak` from here on.
    let raw = unsafe { libc::open(dir.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    assert!(raw >= 0);
    // SAFETY: `raw` is a new fd that nothing else owns.
    let leak = unsafe { OwnedFd::from_raw_fd(raw) };
    let via_fd = format!("/proc/self/fd/{}/secret", leak.as_raw_fd());
    assert_eq!(std::fs::read_to_string(&via_fd).unwrap(), "host-secret\n");
    let (_, j) = w
        .run(
            "inherited-fd",
            Some(jail.clone()),
            &format!("cat {via_fd} && echo FD-OK; ls /proc/self/fd"),
        )
        .await;
    assert!(!j.contains("host-secret") && !j.contains("FD-OK"), "{j}");
    drop(leak);

    w.env.assert_no_leaks();
}
