//! The lifecycle of a jailed sandbox with an init (pid, mount, ipc and uts namespaces, the
//! default seccomp profile): the graceful stop's signal reaches the payload through the
//! init, the payload's exit code is the sandbox's, the `killed` report counts exactly the
//! processes that outlived the grace period, and nothing is left — no process, no zombie,
//! no cgroup. Runs as root on real cgroups.

mod common;

use std::time::Duration;

use common::{env, sh, wait_file};
use paddock_supervisor::{EventKind, SandboxSpec, State};
use serde_json::json;

fn jailed(mut spec: SandboxSpec) -> SandboxSpec {
    spec.jail = Some(
        serde_json::from_value(json!({
            "namespaces": ["pid", "mount", "ipc", "uts"],
            "seccomp": "default"
        }))
        .unwrap(),
    );
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stop_signal_reaches_the_payload_and_its_exit_code_is_kept() {
    let Some(env) = env("jail_stop_signal_and_exit_code") else {
        return;
    };
    let ready = env.scratch.path("ready");
    let got = env.scratch.path("got");
    // pid 2 in its namespace (the init is 1); a child of its own that obeys TERM.
    let spec = jailed(sh(
        "obeys",
        &format!(
            "trap 'echo TERM > {got}; kill $c; wait $c; exit 7' TERM; \
             sleep 300 & c=$!; echo $$ > {ready}; wait",
            got = got.display(),
            ready = ready.display()
        ),
    ));
    let mut ev = env.sup.events();
    let s = env.sup.start(spec).await.unwrap().info;
    assert_eq!(wait_file(&ready, Duration::from_secs(10)).await, "2\n");
    let r = env.sup.stop(&s.id, None).await.unwrap();
    assert_eq!(std::fs::read_to_string(&got).unwrap(), "TERM\n");
    assert_eq!(r.killed_after_grace, 0, "{r:?}");
    assert!(r.killed.is_empty() && r.stuck.is_empty(), "{r:?}");
    let info = env.sup.get(&s.id).unwrap();
    assert_eq!(info.state, State::Stopped);
    let exit = info.main_exit.unwrap();
    assert_eq!((exit.code, exit.signal), (Some(7), None), "{exit:?}");
    // The started event names the jail.
    let mut started_jail = None;
    while let Ok(e) = ev.try_recv() {
        if let EventKind::Started { jail, .. } = e.kind {
            started_jail = Some(jail);
        }
    }
    let jail = started_jail
        .expect("a started event")
        .expect("with the jail");
    assert_eq!(jail.uid, 0);
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_that_ignore_the_stop_are_counted_and_killed() {
    let Some(env) = env("jail_killed_report") else {
        return;
    };
    let ready = env.scratch.path("ready");
    // The payload and two children ignore TERM; the init forwards it and waits.
    let mut spec = jailed(sh(
        "stubborn",
        &format!(
            "trap '' TERM; sleep 300 & sleep 300 & echo r > {}; wait",
            ready.display()
        ),
    ));
    spec.stop.grace_period_ms = 200;
    let s = env.sup.start(spec).await.unwrap().info;
    wait_file(&ready, Duration::from_secs(10)).await;
    let r = env.sup.stop(&s.id, None).await.unwrap();
    // The init (it exits once its child is killed, or is killed with the rest), the shell
    // and its two sleeps: every one the report names was in the cgroup at the kill.
    assert!(
        (3..=4).contains(&r.killed_after_grace),
        "killed after grace: {r:?}"
    );
    assert_eq!(r.killed.len(), r.killed_after_grace, "{r:?}");
    assert!(r.stuck.is_empty(), "{r:?}");
    let exit = env.sup.get(&s.id).unwrap().main_exit.unwrap();
    assert!(
        exit.signal == Some(9) || exit.code == Some(128 + 9),
        "the main process was killed: {exit:?}"
    );
    env.assert_no_leaks();
}
