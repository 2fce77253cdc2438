//! Dynamic users through the supervisor: each start takes a uid of the range that no other
//! live lifecycle holds, the uid is in the record written before the cgroup is created,
//! and it comes back only when its holder is gone. Runs as root on real cgroups.
//!
//! Until the process layer's jail is merged, a jailed spawn fails ("jails are not supported
//! yet"): the starts here are then held in `creating` by the hooks (a lifecycle whose uid is
//! held), and their failure releases the uid. Once jails spawn, the same test also checks
//! the running payload's uid in `/proc`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{env_with, sh};
use paddock_supervisor::{
    Error, Hooks, Persisting, Record, SandboxSpec, Started, Supervisor, UidRange,
};
use tokio::sync::{Notify, Semaphore};

/// Records every `before_create` record, then holds the start until a permit is given.
struct Gate {
    recorded: Mutex<Vec<Record>>,
    seen: Notify,
    permits: Arc<Semaphore>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            recorded: Mutex::default(),
            seen: Notify::new(),
            permits: Arc::new(Semaphore::new(0)),
        }
    }
}

impl Hooks for Gate {
    fn before_create(&self, rec: &Record) -> Persisting {
        self.recorded.lock().unwrap().push(rec.clone());
        self.seen.notify_waiters();
        let permits = self.permits.clone();
        Box::pin(async move {
            permits.acquire().await.expect("open").forget();
            Ok(())
        })
    }
}

impl Gate {
    async fn wait_recorded(&self, n: usize) -> Vec<Record> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let seen = self.seen.notified();
                tokio::pin!(seen);
                seen.as_mut().enable();
                if self.recorded.lock().unwrap().len() >= n {
                    return self.recorded.lock().unwrap().clone();
                }
                seen.await;
            }
        })
        .await
        .expect("the starts reached before_create")
    }
}

const RANGE: UidRange = UidRange {
    first: 310_000,
    last: 310_001,
};

fn dynamic(id: &str) -> SandboxSpec {
    let mut s = sh(id, "exec sleep 300");
    s.jail = Some(
        serde_json::from_value(serde_json::json!({
            "user": {"dynamic": true},
            "seccomp": "unconfined",
            "landlock": {"mode": "off"}
        }))
        .unwrap(),
    );
    s
}

fn uid_of(rec: &Record) -> u32 {
    rec.jail
        .as_ref()
        .and_then(|j| j.dynamic_uid)
        .expect("the record before the cgroup names the dynamic uid")
}

/// A start's outcome: a running payload (its uid is checked, then it is stopped), or the
/// process layer's refusal of jails (before it is merged).
async fn finish(sup: &Supervisor, started: Result<Started, Error>, uid: u32) {
    match started {
        Ok(s) => {
            let pid = s.info.pid.unwrap();
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
            assert!(
                line.split_whitespace()
                    .skip(1)
                    .all(|u| u == uid.to_string()),
                "{line}"
            );
            assert_eq!(s.info.jail.unwrap().dynamic_uid, Some(uid));
            let r = sup.kill(&s.info.id, Some(s.info.lifecycle)).await.unwrap();
            assert!(r.stuck.is_empty());
        }
        Err(Error::Spawn { .. }) => {}
        Err(e) => panic!("unexpected start error: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_uids_are_unique_recorded_first_and_reused_after_their_holder() {
    let gate = Arc::new(Gate::default());
    let hooks = gate.clone();
    let Some(env) = env_with("dynamic_uids_unique", |c| {
        c.hooks = hooks;
        c.dynamic_uids = Some(RANGE);
    }) else {
        return;
    };
    let sup = env.sup.clone();
    let a = tokio::spawn({
        let sup = sup.clone();
        async move { sup.start(dynamic("dyn-a")).await }
    });
    let b = tokio::spawn({
        let sup = sup.clone();
        async move { sup.start(dynamic("dyn-b")).await }
    });
    let recs = gate.wait_recorded(2).await;
    let (ua, ub) = (uid_of(&recs[0]), uid_of(&recs[1]));
    assert_ne!(ua, ub, "two live dynamic sandboxes never share a uid");
    assert!(RANGE.contains(ua) && RANGE.contains(ub));
    assert_eq!(sup.dynamic_uids(), Some((2, RANGE)));
    // Every uid is held by a lifecycle that may still get processes: the next start is
    // refused at once, before anything is recorded or created.
    let e = sup.start(dynamic("dyn-c")).await.unwrap_err();
    assert!(
        matches!(&e, Error::Unavailable(m) if m.contains("every uid of the dynamic range 310000-310001")),
        "{e}"
    );
    assert_eq!(gate.recorded.lock().unwrap().len(), 2, "nothing recorded");
    assert!(sup.get(&common::id("dyn-c")).is_none());

    gate.permits.add_permits(2);
    let uid_by_id = |id: &str| {
        uid_of(
            recs.iter()
                .find(|r| r.spec.id.as_str() == id)
                .expect("recorded"),
        )
    };
    finish(&sup, a.await.unwrap(), uid_by_id("dyn-a")).await;
    finish(&sup, b.await.unwrap(), uid_by_id("dyn-b")).await;
    assert_eq!(
        sup.dynamic_uids(),
        Some((0, RANGE)),
        "both holders are gone: their uids are free"
    );

    gate.permits.add_permits(1);
    let c = sup.start(dynamic("dyn-c")).await;
    let rec_c = gate.wait_recorded(3).await[2].clone();
    assert!(
        RANGE.contains(uid_of(&rec_c)),
        "a freed uid is handed out again"
    );
    finish(&sup, c, uid_of(&rec_c)).await;
    assert_eq!(sup.dynamic_uids(), Some((0, RANGE)));
    env.assert_no_leaks();
}

/// Without a range, a dynamic user is a clear refusal; with one, no other jail may run as
/// an id of it. Nothing is recorded or created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_range_is_required_and_kept_for_dynamic_users() {
    let gate = Arc::new(Gate::default());
    let hooks = gate.clone();
    let Some(env) = env_with("dynamic_uids_range", |c| c.hooks = hooks) else {
        return;
    };
    let mut plain_seccomp = dynamic("no-range");
    plain_seccomp.jail.as_mut().unwrap().seccomp = Default::default();
    for spec in [dynamic("no-range"), plain_seccomp] {
        let e = env.sup.start(spec).await.unwrap_err();
        assert!(
            matches!(&e, Error::InvalidSpec(m) if m.starts_with("jail.user.dynamic: dynamic users are off here")),
            "{e}"
        );
    }
    drop(env);

    let gate = Arc::new(Gate::default());
    let hooks = gate.clone();
    let Some(env) = env_with("dynamic_uids_range2", |c| {
        c.hooks = hooks;
        c.dynamic_uids = Some(RANGE);
    }) else {
        return;
    };
    let mut s = sh("squatter", "exec sleep 300");
    s.jail = Some(
        serde_json::from_value(
            serde_json::json!({"user": {"uid": 310_001}, "seccomp": "unconfined"}),
        )
        .unwrap(),
    );
    let e = env.sup.start(s).await.unwrap_err();
    assert!(
        matches!(&e, Error::InvalidSpec(m) if m.contains("uid 310001 is in the dynamic uid range")),
        "{e}"
    );
    assert!(gate.recorded.lock().unwrap().is_empty());
    env.assert_no_leaks();
}
