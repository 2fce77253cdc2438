//! `paddock`: the supervisor library in this process, called from a task of the
//! benchmark's runtime.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use std::sync::Arc;

use paddock_supervisor::jail::{FilesystemSpec, JailSpec, NamespaceKind, UserSpec};
use paddock_supervisor::{
    Config, SandboxId, SandboxSpec, StdioSpec, StdioTarget, StopReport, Supervisor, UidRange,
};

use crate::implementation::{BurstResult, Fut, Implementation, self_rss_kib, wait_ready_blocking};
use crate::jail::{CHECK_SCRIPT, JailEnv, verify};
use crate::{LEAK_SCRIPT, WRAPPER_SCRIPT};

fn sup_err(e: paddock_supervisor::Error) -> io::Error {
    io::Error::other(e.to_string())
}

fn check_report(r: &StopReport) -> io::Result<()> {
    if let Some(e) = &r.error {
        return Err(io::Error::other(format!("stop failed: {e}")));
    }
    if !r.stuck.is_empty() {
        return Err(io::Error::other(format!("quarantined: {:?}", r.stuck)));
    }
    Ok(())
}

/// `paddock`: the supervisor library in this process.
pub struct Paddock {
    sup: Supervisor,
    seq: u64,
    background: Vec<SandboxId>,
    jail: Result<Arc<JailEnv>, String>,
}

/// The dynamic uids of the library's jailed sandboxes: a range of its own, apart from the
/// daemon's default (`UidRange::DEFAULT`, 200000-265535, which `paddock-api` uses).
pub const BENCH_UIDS: UidRange = UidRange {
    first: 270_000,
    last: 270_999,
};

impl Paddock {
    /// Starts `spec`, waits until its payload is in place (`ready_sleeps` as for
    /// `wait_ready_blocking`) and past the notification rate limit, then times the stop
    /// request to the cgroup being gone: `kill` when `grace` is zero, else `stop` with the
    /// spec's grace.
    fn timed_stop(
        &self,
        spec: SandboxSpec,
        ready_sleeps: usize,
        grace: Duration,
    ) -> Fut<'_, Duration> {
        let sup = self.sup.clone();
        Box::pin(async move {
            let id = spec.id.clone();
            let st = sup.start(spec).await.map_err(sup_err)?;
            wait_ready_blocking(&st.info.cgroup_path, 2, ready_sleeps)?;
            tokio::time::sleep(crate::SETTLE).await;
            let lc = Some(st.info.lifecycle);
            let t0 = Instant::now();
            let r = if grace.is_zero() {
                sup.kill(&id, lc).await
            } else {
                sup.stop(&id, lc).await
            }
            .map_err(sup_err)?;
            let dt = t0.elapsed();
            sup.forget(&id).map_err(sup_err)?;
            check_report(&r)?;
            Ok(dt)
        })
    }

    /// A supervisor over `<bench root>/paddock`, its `veth` networks pinned in `net_dir`
    /// (with their lease file) and leased from [`crate::net::PADDOCK_POOL`].
    pub fn new(root: &Path, net_dir: &Path) -> io::Result<Paddock> {
        let root = paddock_cgroup::Root::open_or_create(root)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let mut cfg = Config::new(root);
        cfg.dynamic_uids = Some(BENCH_UIDS);
        cfg.net.pool = crate::net::PADDOCK_POOL.parse().expect("a CIDR");
        cfg.net.pin_dir = net_dir.to_owned();
        cfg.net.lease_file = net_dir.join("leases.json");
        // `/bin/true` sends nothing: the host's forwarding setting is left alone.
        cfg.net.ipv4_forwarding = false;
        let sup = Supervisor::new(cfg).map_err(sup_err)?;
        Ok(Paddock {
            sup,
            seq: 0,
            background: Vec::new(),
            jail: Err("no rootfs was made".into()),
        })
    }

    /// The rootfs of `jailed-lifecycle` (or why there is none).
    pub fn set_jail(&mut self, env: Result<Arc<JailEnv>, String>) {
        self.jail = env;
    }

    /// `cmd` as a dynamic user, in new pid, mount, ipc and uts namespaces, with the rootfs
    /// as `/` and the default seccomp filter (the rest of the jail as paddock's defaults
    /// have it: init as pid 1, minimal /dev, masked paths, cgroupfs hidden, Landlock auto).
    fn jailed_spec(&self, id: SandboxId, cmd: &str, args: &[&str]) -> io::Result<SandboxSpec> {
        let env = self
            .jail
            .as_ref()
            .map_err(|e| io::Error::other(e.clone()))?;
        let mut spec = SandboxSpec::new(id, cmd, args.iter().copied());
        spec.jail = Some(JailSpec {
            user: Some(UserSpec {
                dynamic: true,
                ..Default::default()
            }),
            namespaces: vec![
                NamespaceKind::Pid,
                NamespaceKind::Mount,
                NamespaceKind::Ipc,
                NamespaceKind::Uts,
            ],
            filesystem: Some(FilesystemSpec {
                rootfs: Some(env.rootfs.clone()),
                ..Default::default()
            }),
            ..Default::default()
        });
        Ok(spec)
    }

    /// One lifecycle of `spec`: start, the stop the main process's exit triggers, forget;
    /// timed whole.
    fn run_to_end(&self, spec: SandboxSpec) -> Fut<'static, Duration> {
        let sup = self.sup.clone();
        Box::pin(async move {
            let id = spec.id.clone();
            let t0 = Instant::now();
            let st = sup.start(spec).await.map_err(sup_err)?;
            // The stop that the main process's exit triggers; its outcome is kept, so this
            // sees it also when it finished before the call.
            let report = sup
                .wait_stopped(&id, Some(st.info.lifecycle))
                .await
                .map_err(sup_err)?;
            check_report(&report)?;
            sup.forget(&id).map_err(sup_err)?;
            Ok(t0.elapsed())
        })
    }

    fn next_id(&mut self, prefix: &str) -> SandboxId {
        self.seq += 1;
        SandboxId::new(format!("{prefix}{}", self.seq)).expect("valid id")
    }

    fn shell(id: SandboxId, shell: &str, script: &str) -> SandboxSpec {
        SandboxSpec::new(id, shell, ["-c", script])
    }
}

impl Implementation for Paddock {
    fn name(&self) -> &'static str {
        "paddock"
    }
    fn supports(&self, _scenario: &str) -> bool {
        true
    }
    fn leak_dir(&self) -> &'static str {
        "paddock"
    }

    fn lifecycle(&mut self) -> Fut<'_, Duration> {
        let id = self.next_id("l");
        self.run_to_end(SandboxSpec::new(id, "/bin/true", Vec::<String>::new()))
    }

    fn net_lifecycle(&mut self) -> Fut<'_, Duration> {
        let id = self.next_id("n");
        let mut spec = SandboxSpec::new(id, "/bin/true", Vec::<String>::new());
        spec.network = paddock_supervisor::Network::Veth(paddock_supervisor::VethSpec {
            nat: true,
            ..Default::default()
        });
        self.run_to_end(spec)
    }

    fn net_owner(&self) -> Option<String> {
        Some(self.sup.owner().to_owned())
    }

    fn jail_check(&mut self) -> Fut<'_, String> {
        let id = self.next_id("c");
        let spec = self.jailed_spec(id, "/bin/sh", &["-c", CHECK_SCRIPT]);
        let env = self.jail.clone();
        let sup = self.sup.clone();
        Box::pin(async move {
            let env = env.map_err(io::Error::other)?;
            let mut spec = spec?;
            let out = env.dir.join("paddock.check");
            spec.stdio = StdioSpec {
                stdout: StdioTarget::File(out.clone()),
                ..Default::default()
            };
            let id = spec.id.clone();
            let st = sup.start(spec).await.map_err(sup_err)?;
            let dynamic = st.info.jail.as_ref().and_then(|j| j.dynamic_uid);
            let report = sup
                .wait_stopped(&id, Some(st.info.lifecycle))
                .await
                .map_err(sup_err)?;
            check_report(&report)?;
            sup.forget(&id).map_err(sup_err)?;
            let uid = dynamic.ok_or_else(|| io::Error::other("no dynamic uid was reported"))?;
            let text = std::fs::read_to_string(&out)?;
            verify(&text, &env, uid..=uid)
                .map(|s| format!("{s} (dynamic)"))
                .map_err(io::Error::other)
        })
    }

    fn jailed_lifecycle(&mut self) -> Fut<'_, Duration> {
        let id = self.next_id("j");
        match self.jailed_spec(id, "/bin/true", &[]) {
            Ok(spec) => self.run_to_end(spec),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn leaked_teardown(&mut self) -> Fut<'_, Duration> {
        let spec = Paddock::shell(self.next_id("k"), "/bin/sh", LEAK_SCRIPT);
        self.timed_stop(spec, 2, Duration::ZERO)
    }

    fn wrapper_stop(&mut self, grace: Duration) -> Fut<'_, Duration> {
        let mut spec = Paddock::shell(self.next_id("i"), "/bin/bash", WRAPPER_SCRIPT);
        spec.stop.grace_period_ms = grace.as_millis() as u64;
        self.timed_stop(spec, 1, grace)
    }

    fn burst(&mut self, n: usize) -> Fut<'_, BurstResult> {
        let ids: Vec<SandboxId> = (0..n).map(|_| self.next_id("b")).collect();
        let sup = self.sup.clone();
        Box::pin(async move {
            let mut res = BurstResult::default();
            let burst0 = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for id in ids {
                let sup = sup.clone();
                set.spawn(async move {
                    let spec = SandboxSpec::new(id.clone(), "/bin/sleep", ["1000"]);
                    let t0 = Instant::now();
                    let (r, busy) = polls_timed(sup.start(spec)).await;
                    (
                        id,
                        r.map(|s| s.info.lifecycle),
                        t0.elapsed(),
                        burst0.elapsed(),
                        busy,
                    )
                });
            }
            let mut started = Vec::with_capacity(n);
            let mut first_err = None;
            while let Some(j) = set.join_next().await {
                let (id, r, dt, since, busy) = j.map_err(io::Error::other)?;
                match r {
                    Ok(lc) => {
                        res.starts.push(dt);
                        res.starts_from_burst.push(since);
                        res.working.push(busy);
                        started.push((id, lc));
                    }
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            res.start_total = burst0.elapsed();
            let stop0 = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for (id, lc) in started {
                let sup = sup.clone();
                set.spawn(async move {
                    let t0 = Instant::now();
                    let r = sup.kill(&id, Some(lc)).await;
                    let dt = t0.elapsed();
                    let f = sup.forget(&id);
                    (r, f, dt)
                });
            }
            while let Some(j) = set.join_next().await {
                let (r, f, dt) = j.map_err(io::Error::other)?;
                match r.map_err(sup_err).and_then(|r| check_report(&r)) {
                    Ok(()) => res.stops.push(dt),
                    Err(e) => {
                        first_err.get_or_insert(paddock_supervisor::Error::Io {
                            op: "stop".into(),
                            cause: e,
                        });
                    }
                }
                if let Err(e) = f {
                    first_err.get_or_insert(e);
                }
            }
            res.stop_total = stop0.elapsed();
            match first_err {
                Some(e) => Err(io::Error::other(format!(
                    "burst: {e} ({} started, {} stopped)",
                    res.starts.len(),
                    res.stops.len()
                ))),
                None => Ok(res),
            }
        })
    }

    fn populate(&mut self, n: usize) -> Fut<'_, ()> {
        let ids: Vec<SandboxId> = (0..n).map(|_| self.next_id("s")).collect();
        self.background.extend(ids.iter().cloned());
        let sup = self.sup.clone();
        Box::pin(async move {
            // Bounded concurrency: the point is the population, not the start rate.
            for chunk in ids.chunks(64) {
                let mut set = tokio::task::JoinSet::new();
                for id in chunk.iter().cloned() {
                    let sup = sup.clone();
                    set.spawn(async move {
                        sup.start(SandboxSpec::new(id, "/bin/sleep", ["infinity"]))
                            .await
                            .map(|_| ())
                    });
                }
                while let Some(j) = set.join_next().await {
                    j.map_err(io::Error::other)?.map_err(sup_err)?;
                }
            }
            Ok(())
        })
    }

    fn depopulate(&mut self) -> Fut<'_, ()> {
        let ids = std::mem::take(&mut self.background);
        let sup = self.sup.clone();
        Box::pin(async move {
            let mut first_err = None;
            for chunk in ids.chunks(64) {
                let mut set = tokio::task::JoinSet::new();
                for id in chunk {
                    let (sup, id) = (sup.clone(), id.clone());
                    set.spawn(async move {
                        sup.kill(&id, None).await?;
                        sup.forget(&id)
                    });
                }
                while let Some(j) = set.join_next().await {
                    if let Err(e) = j.map_err(io::Error::other)? {
                        first_err.get_or_insert(e);
                    }
                }
            }
            first_err.map_or(Ok(()), |e| Err(sup_err(e)))
        })
    }

    fn resident_kib(&self) -> Option<u64> {
        self_rss_kib()
    }
}

/// Runs `f` and returns its output and the time spent inside its polls: the time its own
/// code ran on this thread (the supervisor's start runs inline, without blocking-pool hops,
/// for the burst's specs), as opposed to the time it waited to be polled again.
async fn polls_timed<F: std::future::Future>(f: F) -> (F::Output, Duration) {
    let mut f = std::pin::pin!(f);
    let mut busy = Duration::ZERO;
    let out = std::future::poll_fn(|cx| {
        let t = Instant::now();
        let r = f.as_mut().poll(cx);
        busy += t.elapsed();
        r
    })
    .await;
    (out, busy)
}
