//! The state directory failing under the daemon: a full disk and a read-only mount. The
//! daemon must say so clearly, start no sandbox without its record, and not crash.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// A small tmpfs mounted over a directory of the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .ok()?;
        st.success().then(|| Tmpfs(at.to_owned()))
    }

    fn remount(&self, opt: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opt}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount {opt}");
    }

    /// Fills the filesystem until writes fail with ENOSPC.
    fn fill(&self) -> PathBuf {
        let f = self.0.join("filler");
        let mut file = std::fs::File::create(&f).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            use std::io::Write;
            if let Err(e) = file.write_all(&chunk) {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                break;
            }
        }
        let _ = file.sync_all();
        f
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn create(w: &World, id: &str) -> Resp {
    w.http("POST", "/v1/sandboxes", Some(&spec(id, "exec sleep 300")))
}

#[test]
fn full_state_disk_refuses_creates_cleanly() {
    let Some(w) = world("full_state_disk_refuses_creates_cleanly") else {
        return;
    };
    let Some(fs) = Tmpfs::mount(&w.state, "4m") else {
        paddock_testutil::skip(
            "full_state_disk_refuses_creates_cleanly",
            "cannot mount a tmpfs",
        );
        return;
    };
    let d = w.daemon(&[]);
    let ok = create(&w, "before-full");
    assert_eq!(ok.status, 201, "{}", ok.text());
    let filler = fs.fill();
    // Creates until one is refused: the store may still have free pages inside its file,
    // but it cannot grow it for long on a full disk.
    let mut refused = None;
    for i in 0..200 {
        let r = create(&w, &format!("full-{i}"));
        match r.status {
            201 => continue,
            503 => {
                refused = Some((format!("full-{i}"), r.error()));
                break;
            }
            other => panic!("create on a full disk: {other} {}", r.text()),
        }
    }
    let (id, msg) = refused.expect("the daemon never noticed the full disk");
    assert!(msg.contains("record") || msg.contains("space"), "{msg}");
    // Nothing was started for the refused sandbox, and the daemon is alive.
    assert!(
        !w.cgroups().iter().any(|c| c.starts_with(&format!("{id}@"))),
        "a cgroup exists without its record: {:?}",
        w.cgroups()
    );
    assert_eq!(
        w.http("GET", &format!("/v1/sandboxes/{id}"), None).status,
        404
    );
    assert_eq!(w.http("GET", "/healthz", None).status, 200);
    // Still full: a sandbox created before the disk filled can be killed. The kill either
    // succeeds or is refused with a clear 503; either way the daemon lives on and the
    // sandbox's cgroup and processes are gone (a stop never waits for its record).
    let before = w.http("GET", "/v1/sandboxes/before-full", None).json();
    let before_cg = format!(
        "before-full@{}",
        before["lifecycle"].as_str().expect("lifecycle")
    );
    let before_pid = before["pid"].as_i64().expect("pid") as i32;
    let r = w.http("POST", "/v1/sandboxes/before-full/kill", None);
    match r.status {
        200 => assert_eq!(r.json()["reason"], "killed", "{}", r.text()),
        503 => {
            let msg = r.error();
            assert!(
                msg.contains("record") || msg.contains("space"),
                "kill on a full disk: an unclear 503: {msg}"
            );
        }
        other => panic!("kill on a full disk: {other} {}", r.text()),
    }
    eprintln!("kill on a full disk: {} {}", r.status, r.text());
    assert_eq!(w.http("GET", "/healthz", None).status, 200, "daemon gone");
    assert!(
        !w.cgroups().contains(&before_cg),
        "kill on a full disk left the cgroup {before_cg}: {:?}",
        w.cgroups()
    );
    assert!(
        !paddock_testutil::pid_alive(before_pid),
        "kill on a full disk left the main process {before_pid}"
    );
    // Space comes back: creates work again and everything can be stopped.
    std::fs::remove_file(filler).unwrap();
    let r = create(&w, "after-full");
    assert_eq!(r.status, 201, "{}", r.text());
    for s in w
        .http("GET", "/v1/sandboxes", None)
        .json()
        .as_array()
        .unwrap()
    {
        let id = s["id"].as_str().unwrap();
        let r = w.http("POST", &format!("/v1/sandboxes/{id}/kill"), None);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    drop(d);
    w.assert_no_leaks();
}

#[test]
fn read_only_state_dir_is_a_clear_error_and_starts_nothing() {
    let test = "read_only_state_dir_is_a_clear_error_and_starts_nothing";
    let Some(w) = world(test) else {
        return;
    };
    let Some(fs) = Tmpfs::mount(&w.state, "8m") else {
        paddock_testutil::skip(test, "cannot mount a tmpfs");
        return;
    };
    // A state dir that holds a sandbox's record, then turns read-only (a daemon holds its
    // database open for writing, so the remount happens between two daemons).
    let mut d = w.daemon(&[]);
    // stdio to /dev/null: a log file the payload keeps open for writing would block the
    // remount.
    let body = serde_json::to_vec(&serde_json::json!({
        "id": "rw", "command": "/bin/sh", "args": ["-c", "exec sleep 300"],
        "stdio": { "stdin": "null", "stdout": "null", "stderr": "null" }
    }))
    .unwrap();
    let r = w.http("POST", "/v1/sandboxes", Some(&body));
    assert_eq!(r.status, 201, "{}", r.text());
    d.sigkill();
    fs.remount("ro");
    let out = Command::new(BIN)
        .args(w.serve_args())
        .env("PADDOCK_SOCKET", &w.socket)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a daemon started on a read-only state dir"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Read-only") || err.contains("read-only"),
        "{err}"
    );
    // It started and stopped nothing: the recorded sandbox still runs, untouched.
    assert_eq!(w.cgroups().len(), 1, "{:?}", w.cgroups());
    assert!(!w.procs_in_subtree().is_empty());
    // Writable again: a new daemon adopts the sandbox and can stop it.
    fs.remount("rw");
    let d2 = w.daemon(&[]);
    let r = wait_for(Duration::from_secs(10), "adoption", || {
        let r = w.http("GET", "/v1/sandboxes/rw", None);
        (r.status == 200).then_some(r)
    });
    assert_eq!(r.json()["state"], "running", "{}", r.text());
    assert_eq!(w.http("POST", "/v1/sandboxes/rw/kill", None).status, 200);
    drop(d2);
    w.assert_no_leaks();
}
