//! A wrapper chain (the shape behind docs/background.md's incident):
//! `unshare -m -- bash -c '<setup> && ip netns exec <ns> <child> ; true'` whose shell does
//! not forward signals. Stopping the sandbox must reach the child, leave nothing, be fast
//! when the child cooperates, and report the kill when it does not.

mod common;

use std::time::{Duration, Instant};

use common::*;
use paddock_supervisor::{EventKind, State, StopPolicy};

fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}

fn tools_or_skip(test: &str) -> bool {
    for t in ["unshare", "bash", "ip"] {
        if !which(t) {
            paddock_testutil::skip(test, &format!("`{t}` is not installed"));
            return false;
        }
    }
    true
}

/// The child: records its pid, then records SIGTERM (when `obey`) and exits, or ignores it.
fn child_script(marker: &std::path::Path, obey: bool) -> String {
    let m = marker.display();
    if obey {
        format!(
            "trap 'echo got-sigterm >> {m}; exit 0' TERM; echo $$ > {m}.pid.tmp; mv {m}.pid.tmp {m}.pid; \
             while :; do sleep 1 & wait $!; done"
        )
    } else {
        format!(
            "trap '' TERM; echo $$ > {m}.pid.tmp; mv {m}.pid.tmp {m}.pid; while :; do sleep 1; done"
        )
    }
}

async fn wrapper_chain(test: &str, obey: bool) {
    if !tools_or_skip(test) {
        return;
    }
    let Some(env) = env(test) else { return };
    let ns = Netns::new(if obey { "obey" } else { "ignore" });
    let marker = env.scratch.path("child");
    let child = env.scratch.path("child.sh");
    std::fs::write(&child, child_script(&marker, obey)).unwrap();
    // The orchestrator's chain: unshare → bash (setup; the child; `; true` so bash must
    // stay around and never exec the child) → ip netns exec → the child.
    let wrapper = format!(
        "mount --make-rprivate / && ln -sf /dev/null /tmp/paddock-wrapper-$$ && rm -f /tmp/paddock-wrapper-$$ && \
         ip netns exec {ns} bash {child} ; true",
        ns = ns.0,
        child = child.display()
    );
    let mut spec = sh(
        &format!("wrapper-{}", if obey { "obey" } else { "ignore" }),
        "",
    );
    spec.command = "unshare".into();
    spec.args = vec![
        "-m".into(),
        "--".into(),
        "bash".into(),
        "-c".into(),
        wrapper,
    ];
    spec.stop = StopPolicy {
        grace_period_ms: if obey { 10_000 } else { 300 },
        ..StopPolicy::default()
    };
    let mut events = env.sup.events();
    let started = env.sup.start(spec).await.unwrap();
    let child_pid: i32 = wait_file(&marker.with_extension("pid"), Duration::from_secs(10))
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(alive(child_pid));
    // The child is several wrappers below the main process, in the sandbox's cgroup.
    assert_ne!(started.info.pid, Some(child_pid));
    let t0 = Instant::now();
    let report = env
        .sup
        .stop(&started.info.id, Some(started.info.lifecycle))
        .await
        .unwrap();
    let took = t0.elapsed();
    assert!(!alive(child_pid), "the child survived the stop");
    assert!(
        !started.info.cgroup_path.exists(),
        "the cgroup survived the stop"
    );
    env.assert_no_leaks();
    // At least the wrapper shell and the child (its `sleep` may be between iterations).
    assert!(
        report.signalled >= 2,
        "every process must get the signal: {report:?}"
    );
    let info = env.sup.get(&started.info.id).unwrap();
    assert_eq!(info.state, State::Stopped);
    if obey {
        let got = std::fs::read_to_string(&marker).unwrap_or_default();
        assert!(got.contains("got-sigterm"), "the child never saw SIGTERM");
        assert_eq!(report.killed_after_grace, 0, "{report:?}");
        assert!(report.killed.is_empty(), "{report:?}");
        assert!(
            took < Duration::from_millis(500),
            "stop took {took:?}: {report:?}"
        );
    } else {
        assert!(report.killed_after_grace >= 1, "{report:?}");
        // Named, not only counted: the child that ignored SIGTERM, by PID.
        assert!(
            report.killed.iter().any(|k| k.pid == child_pid),
            "the report must name the child {child_pid} among the killed: {report:?}"
        );
        let mut saw_kill_event = false;
        while let Ok(ev) = events.try_recv() {
            if let EventKind::LeakedProcessesKilled { count } = ev.kind {
                saw_kill_event = count >= 1;
            }
        }
        assert!(saw_kill_event, "no leaked-processes-killed event");
    }
    eprintln!("{test}: stop took {took:?}: {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrapper_chain_child_gets_sigterm() {
    wrapper_chain("wrapper_chain_child_gets_sigterm", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrapper_chain_child_ignoring_sigterm_is_killed() {
    wrapper_chain("wrapper_chain_child_ignoring_sigterm_is_killed", false).await;
}
