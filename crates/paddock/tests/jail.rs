//! Jails through the daemon: a bad jail is a 400 naming the field that creates nothing; a
//! jail the node cannot carry out is a 422 that creates nothing; dynamic uids survive a
//! crash as their records say (adopted sandboxes keep theirs, a start cut off by the crash
//! gives its back), and a uid is handed out again only once its holder is gone.
//! A dynamic start runs its payload as the dynamic uid, under an init in its own PID
//! namespace.

mod common;

use std::ffi::CString;
use std::time::Duration;

use common::*;
use paddock_supervisor::{
    JailStatus, LifecycleId, Record, SandboxId, SandboxSpec, State, cgroup_name,
};
use serde_json::{Value, json};

const RANGE: &str = "300200-300200";
const UID: u32 = 300_200;

fn dynamic_spec(id: &str) -> Value {
    json!({
        "id": id, "command": "/bin/sh", "args": ["-c", "exec sleep 300"],
        "stop": { "grace_period_ms": 1000, "kill_timeout_ms": 5000 },
        "jail": { "user": {"dynamic": true}, "namespaces": ["pid"], "seccomp": "unconfined",
                  "landlock": {"mode": "off"} }
    })
}

fn post(w: &World, v: &Value) -> Resp {
    w.http(
        "POST",
        "/v1/sandboxes",
        Some(&serde_json::to_vec(v).unwrap()),
    )
}

/// A dynamic start that got its uid: a 201 whose payload runs as the dynamic uid under an
/// init (pid 1 of its own PID namespace, the payload pid 2); then it is killed and removed.
fn assert_uid_allocated(w: &World, r: &Resp, id: &str) {
    assert_eq!(r.status, 201, "{id}: {}", r.text());
    assert_eq!(r.json()["jail"]["dynamic_uid"], json!(UID), "{}", r.text());
    let init = w.http("GET", &format!("/v1/sandboxes/{id}"), None).json()["pid"]
        .as_i64()
        .unwrap();
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert_ne!(
        ns(&init.to_string()),
        ns("self"),
        "{id}: no PID namespace of its own"
    );
    let status = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |s: &str, k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert!(field(&status(&init.to_string()), "NSpid:").ends_with(" 1"));
    // The payload (exec'd before the 201: the spawn waits for its exec) is the init's child.
    let children = std::fs::read_to_string(format!("/proc/{init}/task/{init}/children")).unwrap();
    let payload = children
        .split_whitespace()
        .next()
        .expect("the init's child");
    let st = status(payload);
    assert_eq!(
        field(&st, "Uid:"),
        format!("{UID} {UID} {UID} {UID}"),
        "{st}"
    );
    assert_eq!(
        field(&st, "Gid:"),
        format!("{UID} {UID} {UID} {UID}"),
        "{st}"
    );
    assert!(field(&st, "NSpid:").ends_with(" 2"), "{st}");
    assert_eq!(field(&st, "NoNewPrivs:"), "1", "{st}");
    assert_eq!(
        w.http("POST", &format!("/v1/sandboxes/{id}/kill"), None)
            .status,
        200
    );
    assert_eq!(
        w.http("DELETE", &format!("/v1/sandboxes/{id}"), None)
            .status,
        204
    );
}

#[test]
fn a_bad_jail_is_refused_naming_the_field_and_creates_nothing() {
    let Some(w) = world("jail_bad_jail_is_refused") else {
        return;
    };
    let _d = w.daemon(&[]);
    let mut bad = dynamic_spec("bad");
    bad["jail"] = json!({"filesystem": {"mounts": [
        {"type": "proc", "target": "/proc"},
        {"type": "tmpfs", "target": "/tmp"},
        {"type": "tmpfs", "target": "relative"}
    ]}});
    let r = post(&w, &bad);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.error()
            .contains("jail.filesystem.mounts[2].target: relative must be an absolute path"),
        "{}",
        r.text()
    );
    bad["jail"] = json!({"filesystem": {"rootfs": "/srv"}, "privileges": {"cap_add": ["CAP_FLY"]}});
    let r = post(&w, &bad);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.error().contains("jail.privileges.cap_add[0]"),
        "{}",
        r.text()
    );
    bad["jail"] = json!({"filesystem": {"rootfz": "/srv"}});
    let r = post(&w, &bad);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("rootfz"), "{}", r.text());
    // Valid, but not on this node: a 422 naming the field, before anything is created.
    let missing = w.tmp.path().join("no-such-rootfs");
    bad["jail"] = json!({"filesystem": {"rootfs": missing}, "seccomp": "unconfined"});
    let r = post(&w, &bad);
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.error().starts_with("jail.filesystem.rootfs: "),
        "{}",
        r.text()
    );
    bad["jail"] = json!({"user": {"uid": "no-such-user-here"}, "seccomp": "unconfined"});
    let r = post(&w, &bad);
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.error()
            .starts_with("jail.user.uid: no user \"no-such-user-here\" in /etc/passwd"),
        "{}",
        r.text()
    );
    assert_eq!(w.http("GET", "/v1/sandboxes", None).json(), json!([]));
    assert!(w.cgroups().is_empty(), "{:?}", w.cgroups());
    let logs: Vec<_> = std::fs::read_dir(w.state.join("logs"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name())
                .filter(|n| n.to_string_lossy().ends_with(".log"))
                .collect()
        })
        .unwrap_or_default();
    assert!(logs.is_empty(), "no log file made: {logs:?}");
    w.assert_no_leaks();
}

/// `--uid-range none` refuses dynamic users with a clear error.
#[test]
fn without_a_range_dynamic_users_are_refused() {
    let Some(w) = world("jail_without_a_range") else {
        return;
    };
    let _d = w.daemon(&["--uid-range", "none"]);
    let r = post(&w, &dynamic_spec("d"));
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.error().contains("dynamic users are off here"),
        "{}",
        r.text()
    );
    assert!(w.cgroups().is_empty());
}

/// Writes records into the store of a stopped daemon, as a crash would have left them.
fn put_records(w: &World, recs: &[&Record]) {
    let db = redb::Database::create(w.state.join("paddock.redb")).unwrap();
    let tx = db.begin_write().unwrap();
    {
        let mut t = tx
            .open_table(redb::TableDefinition::<&str, &[u8]>::new("sandboxes"))
            .unwrap();
        for r in recs {
            t.insert(r.cgroup.as_str(), serde_json::to_vec(r).unwrap().as_slice())
                .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// The records in the store of a stopped daemon.
fn records(w: &World) -> Vec<Record> {
    use redb::ReadableTable;
    let db = redb::Database::create(w.state.join("paddock.redb")).unwrap();
    let tx = db.begin_read().unwrap();
    let t = tx
        .open_table(redb::TableDefinition::<&str, &[u8]>::new("sandboxes"))
        .unwrap();
    t.iter()
        .unwrap()
        .map(|e| serde_json::from_slice(e.unwrap().1.value()).unwrap())
        .collect()
}

/// Tags a cgroup as the world's daemon's.
fn tag(w: &World, cg: &std::path::Path) {
    let id = std::fs::read_to_string(w.state.join("owner-id")).unwrap();
    let v = format!("daemon:{}", id.trim());
    let path = CString::new(cg.to_str().unwrap()).unwrap();
    let k = CString::new("user.paddock.owner").unwrap();
    // SAFETY: valid C strings and buffer for the duration of the call.
    let rc = unsafe { libc::setxattr(path.as_ptr(), k.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    assert_eq!(rc, 0, "setxattr: {}", std::io::Error::last_os_error());
}

/// `sleep 300` inside the cgroup at `cg`; returns its pid (reaped by a thread).
fn spawn_into(cg: &std::path::Path) -> i32 {
    let script = format!("echo $$ > {}/cgroup.procs && exec sleep 300", cg.display());
    let child = std::process::Command::new("/bin/sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    wait_for(
        Duration::from_secs(5),
        "the process to join its cgroup",
        || {
            paddock_testutil::procs_recursive(cg)
                .contains(&pid)
                .then_some(())
        },
    );
    std::thread::spawn(move || {
        let mut c = child;
        let _ = c.wait();
    });
    pid
}

/// `/proc/<pid>/stat` field 22.
fn start_time(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(19).unwrap().parse().unwrap()
}

/// After a crash, an adopted dynamic-user sandbox keeps its uid (the only one of the
/// range: a new dynamic start is refused, and nothing is created) until it is killed; then
/// the uid is handed out again.
#[test]
fn adopted_sandboxes_keep_their_dynamic_uid_until_they_are_gone() {
    let Some(w) = world("jail_adopted_keep_their_uid") else {
        return;
    };
    drop(w.daemon(&["--uid-range", RANGE])); // makes the state dir and the daemon's identity
    let mut spec: SandboxSpec = serde_json::from_value(dynamic_spec("held")).unwrap();
    spec.id = SandboxId::new("held").unwrap();
    let lifecycle = LifecycleId::fresh();
    let cgroup = cgroup_name("held", lifecycle);
    let cg = w.cgroot.join(&cgroup);
    std::fs::create_dir_all(&cg).unwrap();
    tag(&w, &cg);
    let pid = spawn_into(&cg);
    let rec = Record {
        spec,
        lifecycle,
        state: State::Running,
        paused: false,
        cgroup,
        main_pid: Some(pid),
        main_start_time: Some(start_time(pid)),
        stop_reason: None,
        created_at_ms: 0,
        jail: Some(JailStatus {
            uid: UID,
            gid: UID,
            dynamic_uid: Some(UID),
            ..Default::default()
        }),
        deadline_at_ms: None,
        restart_count: 0,
        restart_since_reset: 0,
        restart_pending: None,
        network: None,
    };
    put_records(&w, &[&rec]);

    let d = w.daemon(&["--uid-range", RANGE]);
    let info = w.http("GET", "/v1/sandboxes/held", None).json();
    assert_eq!(info["state"], "running", "{info}");
    assert_eq!(info["jail"]["dynamic_uid"], json!(UID), "{info}");
    let r = post(&w, &dynamic_spec("next"));
    assert_eq!(
        r.status,
        503,
        "the adopted sandbox holds the uid: {}",
        r.text()
    );
    assert!(
        r.error()
            .contains("every uid of the dynamic range 300200-300200 (1 ids) is held"),
        "{}",
        r.text()
    );
    assert_eq!(w.cgroups().len(), 1, "nothing created: {:?}", w.cgroups());

    assert_eq!(w.http("POST", "/v1/sandboxes/held/kill", None).status, 200);
    assert!(!paddock_testutil::pid_alive(pid));
    let r = post(&w, &dynamic_spec("next"));
    assert_uid_allocated(&w, &r, "next");
    // A failed (or finished) start gave it back too.
    let r = post(&w, &dynamic_spec("again"));
    assert_uid_allocated(&w, &r, "again");
    drop(d);
    w.assert_no_leaks();
}

/// A start cut off by a crash after its record (with the uid) and its cgroup: the restarted
/// daemon removes what it left and the uid is free again.
#[test]
fn a_crash_during_a_start_releases_its_dynamic_uid() {
    let Some(w) = world("jail_crash_during_start") else {
        return;
    };
    let mut d = w.spawn_daemon_env(
        &["--uid-range", RANGE],
        &[("PADDOCK_TEST_PAUSE_AT", "after_mkdir")],
    );
    d.wait_ready();
    let sock = w.socket.clone();
    let body = serde_json::to_vec(&dynamic_spec("cut")).unwrap();
    let creator = std::thread::spawn(move || {
        try_http_unix(&sock, "POST", "/v1/sandboxes", Some(&body), &[]).map(|r| r.status)
    });
    d.wait_log("test hook: create paused", Duration::from_secs(10));
    assert_eq!(w.cgroups().len(), 1, "{:?}", w.cgroups());
    d.sigkill();
    let _ = creator.join().unwrap();
    // The uid was recorded before the cgroup was made.
    let recs = records(&w);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0].state, State::Creating);
    assert_eq!(
        recs[0].jail.as_ref().and_then(|j| j.dynamic_uid),
        Some(UID),
        "{recs:?}"
    );

    let d = w.daemon(&["--uid-range", RANGE]);
    assert_eq!(w.http("GET", "/v1/sandboxes/cut", None).status, 404);
    assert!(w.cgroups().is_empty(), "{:?}", w.cgroups());
    let r = post(&w, &dynamic_spec("after"));
    assert_uid_allocated(&w, &r, "after");
    drop(d);
    w.assert_no_leaks();
}
