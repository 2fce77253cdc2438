//! A jailed sandbox under memory and pids limits (the VM suite runs this: the hybrid host
//! has neither controller, and says so). The jail — uid 65534, pid, mount, ipc and uts
//! namespaces with an init, the default seccomp profile, the cgroup file system hidden —
//! changes nothing of the limits: a fork storm stays under `pids.max`, a memory hog is
//! OOM-killed at `memory.max`, the payload cannot see its limits to lift them, and the stop
//! leaves nothing.

mod common;

use std::time::Duration;

use common::{env, sh, skip_missing, wait_file};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_jail_under_memory_and_pids_limits() {
    let test = "vm_jail_under_memory_and_pids_limits";
    let Some(env) = env(test) else { return };
    let ctrls = env.root.controllers().unwrap();
    for c in ["memory", "pids"] {
        if !ctrls.iter().any(|x| x == c) {
            skip_missing(
                test,
                &format!("the cgroup v2 hierarchy here has no {c} controller"),
            );
            return;
        }
    }
    let ready = env.scratch.path("ready");
    let hog = env.scratch.path("hog");
    // The scratch directory is the test's; the payload (uid 65534) writes its files there.
    std::fs::set_permissions(
        &env.scratch.0,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let script = format!(
        "ls /sys/fs/cgroup/ > {s}/seen 2>&1; \
         ( head -c 200000000 /dev/zero | tail > /dev/null ); echo $? > {hog}; \
         ( while :; do ( sleep 30 & ) 2>/dev/null; done ) & \
         sleep 0.5; echo storm > {ready}; \
         wait",
        s = env.scratch.0.display(),
        ready = ready.display(),
        hog = hog.display(),
    );
    let mut spec = sh("jailed-limits", &script);
    spec.limits.pids_max = Some(32);
    spec.limits.memory_max = Some(48 << 20);
    // The OOM kill of the hog alone (with memory.oom.group, the default, it would end the
    // whole sandbox before the fork storm).
    spec.limits.oom_group = Some(false);
    spec.stop.grace_period_ms = 100;
    spec.jail = Some(
        serde_json::from_value(json!({
            "user": {"uid": 65534, "gid": 65534},
            "namespaces": ["pid", "mount", "ipc", "uts"],
            "seccomp": "default"
        }))
        .unwrap(),
    );
    let s = env.sup.start(spec).await.unwrap().info;
    // The hog runs first (a fork storm at pids.max would leave it no process to run in):
    // past memory.max the kernel's OOM killer ends it, counted in memory.events.
    let code = wait_file(&hog, Duration::from_secs(120)).await;
    let st = env.sup.stats(&s.id, None).unwrap();
    assert!(
        st.memory_oom_kill.unwrap_or(0) > 0,
        "no OOM kill at memory.max (hog exited {code:?}): {st:?}"
    );
    assert!(st.memory_peak.unwrap_or(0) <= 48 << 20, "{st:?}");
    wait_file(&ready, Duration::from_secs(60)).await;
    let st = env.sup.stats(&s.id, None).unwrap();
    assert!(st.pids_current.unwrap() <= 32, "{st:?}");
    // The cgroup file system is hidden from the jail: an empty directory at most.
    let seen = std::fs::read_to_string(env.scratch.path("seen")).unwrap_or_default();
    assert!(
        !seen.contains("memory.max") && !seen.contains("pids.max"),
        "the jail sees the cgroup files: {seen}"
    );
    let r = env.sup.stop(&s.id, None).await.unwrap();
    assert!(r.stuck.is_empty(), "{r:?}");
    // Whatever outlived the grace period was killed under `pids.max = 0`.
    assert!(
        r.killed_after_grace == 0 || r.pids_frozen,
        "pids.max = 0 was not set before the kill: {r:?}"
    );
    env.assert_no_leaks();
}
