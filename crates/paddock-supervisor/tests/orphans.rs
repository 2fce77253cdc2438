//! A stop is not finished until the zombies it made are reaped. The supervisor is a child
//! subreaper: the processes of a sandbox that left the main process's tree (daemons, double
//! forks) are reparented to it, and those the stop kills are its zombies until reaped. At
//! the moment the stop's outcome is out (the `stopped` event, which hooks see
//! synchronously) none of them may be left.
//!
//! This binary has one test: the supervisor makes the test process a subreaper, and the
//! test counts that process's children.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use paddock_supervisor::{Event, EventKind, Hooks};

/// Children of this process (any thread's), and how many of them are zombies.
fn own_children() -> (usize, usize) {
    let (mut all, mut zombies) = (0, 0);
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let s = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        for pid in s.split_whitespace() {
            all += 1;
            if std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
                st.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            }) {
                zombies += 1;
            }
        }
    }
    (all, zombies)
}

/// Records this process's children (all, zombies) at every `stopped` event.
#[derive(Default)]
struct AtStopped(Mutex<Vec<(usize, usize)>>);

impl Hooks for AtStopped {
    fn wants_records(&self) -> bool {
        false
    }
    fn on_event(&self, ev: &Event) {
        if matches!(ev.kind, EventKind::Stopped { .. }) {
            self.0.lock().unwrap().push(own_children());
        }
    }
}

/// Four daemon chains (each daemon forks the next and exits, like `stress-ng --daemon`),
/// still forking when the main process exits after 0.3 s and the stop kills them.
const CHAINS: &str = r#"exec perl -e '
    for (1..4) {
        my $p = fork();
        if (defined $p && $p == 0) {
            while (1) { my $c = fork(); exit 0 if $c; }
        }
    }
    select(undef, undef, undef, 0.3);
    exit 0'"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_is_done_only_when_its_zombies_are_reaped() {
    let seen = Arc::new(AtStopped::default());
    let hooks = seen.clone();
    let Some(env) = env_with("orphans_stop_reaps_its_zombies", |cfg| {
        cfg.subreaper = true;
        cfg.hooks = hooks;
    }) else {
        return;
    };
    for round in 0..3 {
        let s = env
            .sup
            .start(sh(&format!("chains-{round}"), CHAINS))
            .await
            .unwrap()
            .info;
        let r = tokio::time::timeout(
            Duration::from_secs(30),
            env.sup.wait_stopped(&s.id, Some(s.lifecycle)),
        )
        .await
        .expect("the sandbox stops once its main process exits")
        .unwrap();
        assert!(r.signalled > 0, "the stop found the chains running: {r:?}");
        let at = seen.0.lock().unwrap().last().copied().unwrap();
        eprintln!(
            "orphans: round {round}: stop {:.1} ms, {} signalled; children of this process at the `stopped` event: {} ({} zombies)",
            r.total_ms, r.signalled, at.0, at.1
        );
        assert_eq!(
            at,
            (0, 0),
            "round {round}: children (all, zombies) of the supervisor when the stop was done"
        );
    }
    env.assert_no_leaks();
}
