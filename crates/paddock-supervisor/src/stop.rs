//! Stopping a sandbox: the phases (the stop signal to every process with the cgroup frozen,
//! the event-driven grace period, `pids.max = 0`, the verified kill, removal with the
//! EBUSY backstop), the stop's report, and quarantine for processes that outlive the kill.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use paddock_cgroup::{
    Cgroup, Error as CgError, EventsWatch, KillMethod, KillOptions, Limit, Max, RemoveOptions,
};
use rustix::process::Signal;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use crate::Error;
use crate::events::{
    EventKind, KilledProcess, MAX_KILLED_LISTED, StopReason, StopReport, StuckProcess, ms,
};
use crate::ids::LifecycleId;
use crate::lifecycle::Sandbox;
use crate::spec::{SandboxId, StopPolicy};
use crate::state::{LifecycleState, Transition};
use crate::supervisor::Supervisor;

/// How long a stop waits for the cgroup to freeze before sending the stop signal (see
/// [`paddock_cgroup::Cgroup::signal_all_frozen`]); past it, the signal is sent unfrozen.
const SIGNAL_FREEZE_TIMEOUT: Duration = Duration::from_millis(250);

/// How long a finished stop waits for its main process's exit status (which the reaper
/// delivers once the cgroup is empty) before it publishes its outcome without it.
const MAIN_EXIT_WAIT: Duration = Duration::from_secs(1);

/// How long a stop that killed processes waits for their orphans (reparented to this
/// process, a subreaper) to finish exiting and be reaped.
const ORPHAN_REAP_TIMEOUT: Duration = Duration::from_secs(5);

impl Supervisor {
    /// Stops the sandbox `id` (its current lifecycle, or exactly `lifecycle` when given) by
    /// its spec's stop policy and returns the stop's report. Concurrent stop and kill calls
    /// all wait for the same outcome; stopping a stopped sandbox returns its report, also
    /// after that lifecycle left the registry (one of the last [`crate::RECENT_REPORTS`]).
    pub async fn stop(
        &self,
        id: &SandboxId,
        lifecycle: Option<LifecycleId>,
    ) -> Result<StopReport, Error> {
        self.stop_by_id(id, lifecycle, None, StopReason::Requested)
            .await
    }

    /// Like [`Supervisor::stop`] with the grace period replaced by `grace`.
    pub async fn stop_with_grace(
        &self,
        id: &SandboxId,
        lifecycle: Option<LifecycleId>,
        grace: Duration,
    ) -> Result<StopReport, Error> {
        self.stop_by_id(id, lifecycle, Some(grace), StopReason::Requested)
            .await
    }

    /// Kills the sandbox: the stop without a grace period. If a graceful stop is already
    /// running, its grace period is cut short and both wait for the same outcome.
    pub async fn kill(
        &self,
        id: &SandboxId,
        lifecycle: Option<LifecycleId>,
    ) -> Result<StopReport, Error> {
        self.stop_by_id(id, lifecycle, Some(Duration::ZERO), StopReason::Killed)
            .await
    }

    /// Stops every running sandbox (used on shutdown with `--stop-sandboxes-on-exit`).
    pub async fn stop_all(&self) -> Vec<(SandboxId, Result<StopReport, Error>)> {
        self.stop_every(None, StopReason::Shutdown).await
    }

    /// Stops every lifecycle that is not yet stopped or failed, all at once, each by its
    /// own stop policy with `grace` replacing its grace period when given, and `reason` in
    /// its report; like [`Supervisor::stop`], each stop first ends its ID's restarts (a
    /// pending one is not made, one being made is stopped again). Returns every stop's
    /// outcome (a lifecycle still being created is refused with [`Error::InvalidState`]).
    pub async fn stop_every(
        &self,
        grace: Option<Duration>,
        reason: StopReason,
    ) -> Vec<(SandboxId, Result<StopReport, Error>)> {
        let ids: Vec<(SandboxId, LifecycleId)> = self
            .list()
            .into_iter()
            .filter(|i| !i.state.is_terminal())
            .map(|i| (i.id, i.lifecycle))
            .collect();
        let mut set = tokio::task::JoinSet::new();
        for (id, lc) in ids {
            let sup = self.clone();
            set.spawn(async move {
                let r = sup.stop_by_id(&id, Some(lc), grace, reason).await;
                (id, r)
            });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Ok(r) = r {
                out.push(r);
            }
        }
        out
    }

    /// Finds the lifecycle and stops it in its span.
    async fn stop_by_id(
        &self,
        id: &SandboxId,
        lifecycle: Option<LifecycleId>,
        grace: Option<Duration>,
        reason: StopReason,
    ) -> Result<StopReport, Error> {
        // An explicit stop, kill or shutdown ends the ID's restarts (a pending one too).
        self.cancel_restart(id).await;
        let sb = match self.find(id, lifecycle) {
            Ok(sb) => sb,
            Err(e) => return self.recent_report(id, lifecycle).ok_or(e),
        };
        self.stop_lifecycle(&sb, grace, reason)
            .instrument(sb.span())
            .await
    }

    /// Stops `sb` (`grace` replacing its policy's grace period) or joins the stop under
    /// way, and waits for the outcome. Runs in the caller's span.
    pub(crate) async fn stop_lifecycle(
        &self,
        sb: &Arc<Sandbox>,
        grace: Option<Duration>,
        reason: StopReason,
    ) -> Result<StopReport, Error> {
        let rx = {
            let _op = sb.op.lock().await;
            let mut policy = sb.spec.stop;
            if let Some(g) = grace {
                policy.grace_period_ms = g.as_millis() as u64;
            }
            // A graceful stop can take long: its record is written before it is visible or
            // acts, so a supervisor restarted meanwhile finishes it (a kill is over in
            // milliseconds and is not delayed by a write).
            let record_first = policy.grace_period_ms > 0;
            match self.begin_stop(sb, reason, policy, record_first).await {
                Some(rx) => rx,
                None => {
                    return sb.with_state(|s| match s.report() {
                        Some(r) => Ok(r.clone()),
                        None => Err(Error::InvalidState {
                            id: sb.id.clone(),
                            state: s.state(),
                            op: "stop",
                        }),
                    });
                }
            }
        };
        sb.await_outcome(rx).await
    }

    /// Enters `Stopping` if the sandbox is running and starts the stop sequence in a task
    /// of its own; escalates a running graceful stop when `policy` has no grace. Returns the
    /// receiver of the stop's outcome, or `None` when the lifecycle never ran (creating, or
    /// a failed start). With `record_first`, the `stopping` record is written before the
    /// state changes ([`Supervisor::enter_recorded`]).
    pub(crate) async fn begin_stop(
        &self,
        sb: &Arc<Sandbox>,
        reason: StopReason,
        policy: StopPolicy,
        record_first: bool,
    ) -> Option<watch::Receiver<Option<StopReport>>> {
        let t = Transition::StopBegun { reason };
        let entered = if record_first {
            self.enter_recorded(sb, t).await
        } else {
            self.enter(sb, t)
        };
        match entered {
            Ok(entered) => {
                if record_first
                    && let Some(recorded) = entered.recorded
                    && let Err(e) = recorded.await
                {
                    tracing::warn!(error = %e, "stop not recorded; stopping anyway");
                }
                self.spawn_stop(sb, reason, policy, entered.left.paused());
            }
            Err(refused) => match *refused.from {
                LifecycleState::Stopping { .. } | LifecycleState::Quarantined { .. } => {
                    if policy.grace_period_ms == 0 {
                        sb.escalate.notify_one();
                    }
                }
                LifecycleState::Stopped { .. } | LifecycleState::StopFailed { .. } => {}
                // A lifecycle that never ran never runs a stop: there is no outcome to
                // wait for.
                LifecycleState::Recorded { .. }
                | LifecycleState::Creating
                | LifecycleState::StartFailed { .. }
                | LifecycleState::Running { .. } => return None,
            },
        }
        Some(sb.outcome.subscribe())
    }

    /// Runs the stop sequence of a lifecycle that has entered `Stopping`, in its own task,
    /// so a caller that gives up waiting never leaves a stop half done. `was_paused`: the
    /// cgroup was frozen when the stop began.
    pub(crate) fn spawn_stop(
        &self,
        sb: &Arc<Sandbox>,
        reason: StopReason,
        policy: StopPolicy,
        was_paused: bool,
    ) {
        let sup = self.clone();
        let sb = sb.clone();
        let span = sb.span();
        tokio::spawn(
            async move { sup.run_stop(sb, reason, policy, was_paused).await }.instrument(span),
        );
    }

    /// Reaps the zombies a stop made, before the stop is done: the processes of the
    /// sandbox that left the main's tree (double forks, daemons) were reparented here, as
    /// this process is a subreaper, and are zombies until reaped. After a stop that found
    /// processes, some may still be exiting when the cgroup reads empty (a process leaves
    /// the cgroup's count before it hands its children on and becomes a zombie), so this
    /// waits until none of the sandbox's is left as a child here
    /// ([`paddock_proc::reap_orphans_of`]); after one that found none, a sweep reaps those
    /// that exited by themselves.
    async fn reap_sandbox_orphans(&self, sb: &Sandbox, had_processes: bool) {
        if !had_processes {
            paddock_proc::reap_orphans().await;
            return;
        }
        let cgroup = self.inner.cfg.root.child_hierarchy_path(&sb.cgroup_name);
        let belongs = move |pid: i32| {
            paddock_cgroup::procinfo::cgroup_path(pid)
                .is_some_and(|(p, _)| paddock_cgroup::procinfo::cgroup_within(&p, &cgroup))
        };
        let rep = paddock_proc::reap_orphans_of(belongs, ORPHAN_REAP_TIMEOUT).await;
        tracing::debug!(
            sweeps = rep.sweeps,
            reaped = rep.reaped,
            waited_for = rep.waited_for,
            "reaped the stopped sandbox's orphans"
        );
        if !rep.left.is_empty() {
            tracing::warn!(
                pids = ?rep.left,
                timeout_ms = ORPHAN_REAP_TIMEOUT.as_millis() as u64,
                "orphans still exiting at the deadline; the reaper's periodic sweep reaps them"
            );
        }
    }

    /// Once the sandbox's cgroup is empty, before any stop's outcome is out: the main
    /// process's exit is on the sandbox (the monitor records it too, whichever comes first;
    /// bounded, for a main process that left the cgroup) and the sandbox's zombies are
    /// reaped ([`Self::reap_sandbox_orphans`]).
    async fn settle_after_empty(&self, sb: &Sandbox, had_processes: bool) {
        if let Some(main) = sb.main.get() {
            if sb.main_exit.get().is_none()
                && let Ok(exit) = tokio::time::timeout(MAIN_EXIT_WAIT, main.wait()).await
                && self.announce_main_exit(sb, exit)
            {
                tracing::info!(code = ?exit.code, signal = ?exit.signal, "main process exited");
            }
            // If the monitor recorded the exit first, its `main_exited` is out once its
            // announcement lets go of this lock: before `stopped`, which follows.
            drop(sb.main_announce.lock());
        }
        if self.inner.cfg.subreaper {
            self.reap_sandbox_orphans(sb, had_processes).await;
        }
    }

    /// The stop sequence, ending in `Stopped`, `Quarantined` or `StopFailed`.
    async fn run_stop(
        &self,
        sb: Arc<Sandbox>,
        reason: StopReason,
        policy: StopPolicy,
        was_paused: bool,
    ) {
        let t0 = Instant::now();
        let mut report = StopReport {
            reason,
            signalled: 0,
            signal_ms: 0.0,
            grace_ms: 0.0,
            killed_after_grace: 0,
            kill_ms: 0.0,
            remove_ms: 0.0,
            rmdir_fallback: false,
            pids_frozen: false,
            total_ms: 0.0,
            cpu_usage_usec: None,
            memory_peak: None,
            oom_kills: None,
            oom_group_kills: None,
            killed: Vec::new(),
            stuck: Vec::new(),
            error: None,
        };
        let cg = match self.open_cgroup(&sb) {
            Ok(cg) => Arc::new(cg),
            Err(e) if e.errno() == Some(rustix::io::Errno::NOENT) => {
                tracing::warn!("cgroup already gone when the stop began");
                report.total_ms = ms(t0.elapsed());
                // The cgroup is gone: then the network, then the lease.
                self.net_release(&sb).await;
                self.finish(&sb, Transition::Removed { report });
                return;
            }
            Err(e) => {
                report.error = Some(e.to_string());
                report.total_ms = ms(t0.elapsed());
                let error = e.to_string();
                self.finish(&sb, Transition::StopFailed { error, report });
                return;
            }
        };
        // The stop's `cgroup.events` watch, kept until the outcome is out and its waiters
        // have run (closing it is not worth a wait; see the end of this function).
        let mut watch = None;
        match self
            .stop_phases(&sb, &cg, policy, &mut report, &mut watch)
            .await
        {
            Ok(had_processes) => {
                self.settle_after_empty(&sb, had_processes).await;
                report.total_ms = ms(t0.elapsed());
                // The cgroup is gone: then the network, then the lease.
                self.net_release(&sb).await;
                self.finish(&sb, Transition::Removed { report });
            }
            Err(CgError::KillTimeout { remaining, .. }) => {
                report.stuck = remaining.iter().map(StuckProcess::from).collect();
                report.total_ms = ms(t0.elapsed());
                self.quarantine(sb, cg, report, was_paused).await;
            }
            Err(e) if !cg.path().exists() => {
                // The cgroup vanished under the stop (removed by someone else): it is gone,
                // which is what the stop was for.
                tracing::warn!(error = %e, "cgroup vanished during the stop");
                report.total_ms = ms(t0.elapsed());
                // The cgroup is gone: then the network, then the lease.
                self.net_release(&sb).await;
                self.finish(&sb, Transition::Removed { report });
            }
            Err(e) => {
                report.error = Some(e.to_string());
                report.total_ms = ms(t0.elapsed());
                let error = e.to_string();
                self.finish(&sb, Transition::StopFailed { error, report });
            }
        }
        // The outcome is out. A waiter it woke on this worker (the usual case: the worker's
        // LIFO slot, which no other worker steals) runs only when this task yields or
        // ends, so yield before closing the watch and the cgroup's directory fd: their
        // `close`s (~7 µs together, measured in leaked-teardown) are not on its path.
        tokio::task::yield_now().await;
        drop(watch);
    }

    /// Enters a state that ends a stop; only the stop's own task moves a lifecycle out of
    /// `Stopping` or `Quarantined`, so the transition always applies.
    fn finish(&self, sb: &Arc<Sandbox>, t: Transition) {
        if let Transition::Removed { report } = &t {
            // Before the `stopped` record is written: it carries the decision.
            self.decide_restart(sb, report.reason);
        }
        if let Err(e) = self.enter(sb, t) {
            tracing::error!(error = %e, "stop: the lifecycle left its state under the stop");
        }
    }

    async fn stop_phases(
        &self,
        sb: &Sandbox,
        cg: &Cgroup,
        policy: StopPolicy,
        report: &mut StopReport,
        watch: &mut Option<EventsWatch>,
    ) -> Result<bool, CgError> {
        // Usually (the main process exited and took its tree with it) the cgroup is empty
        // already: then there is nothing to signal, wait for or kill.
        let watch: &EventsWatch = watch.insert(cg.watch()?);
        let grace = policy.grace();
        // A kill finds out from the process list it reads anyway, which spares it a read.
        let populated = grace.is_zero() || watch.read()?.populated;
        let mut had_processes = false;
        if populated {
            // 1. The stop signal and SIGCONT to every process in the cgroup, by pidfd, with
            //    the cgroup frozen meanwhile so a process forking at that instant cannot
            //    add a child that misses the signal. A paused sandbox is thawed by it.
            if !grace.is_zero() {
                let sig = Signal::from_named_raw(policy.signal).unwrap_or(Signal::TERM);
                let s0 = Instant::now();
                let mut sent = cg.signal_all_frozen(sig, SIGNAL_FREEZE_TIMEOUT).await?;
                let sr = sent.report();
                if !sr.exact {
                    tracing::warn!(
                        timeout_ms = SIGNAL_FREEZE_TIMEOUT.as_millis() as u64,
                        cause = "a process in uninterruptible sleep?",
                        consequence =
                            "a child forked meanwhile may only get the kill after the grace period",
                        "stop signal sent without the freeze"
                    );
                }
                report.signalled = sr.delivered;
                had_processes = true;
                report.signal_ms = ms(s0.elapsed());
                // 2. The grace period, event-driven; a kill arriving now cuts it short.
                let g0 = Instant::now();
                //    Children forked after the thaw by a process that had the signal
                //    blocked get it too (`wait_signalled` follows it up).
                tokio::select! {
                    r = cg.wait_signalled(watch, &mut sent, grace) => { r?; }
                    _ = sb.escalate.notified() => {}
                }
                report.signalled = sent.report().delivered;
                report.grace_ms = ms(g0.elapsed());
            }
            // 3. pids.max = 0 where the controller exists, then the verified kill (after a
            //    grace period, only if something is left).
            if grace.is_zero() || watch.read()?.populated {
                let k0 = Instant::now();
                report.pids_frozen = self.freeze_pids(cg);
                #[cfg(feature = "test-hooks")]
                self.inner.cfg.hooks.before_kill(&sb.id, sb.lifecycle);
                // The kill names who it found (from the process list it reads anyway,
                // while `/proc` still has them; pids.max = 0 keeps the list from growing).
                let opts = KillOptions {
                    timeout: policy.kill_timeout(),
                    force_fallback: self.inner.cfg.force_kill_fallback,
                    name_first: MAX_KILLED_LISTED,
                };
                let kr = cg.kill_watched(watch, &opts).await?;
                had_processes |= kr.method != KillMethod::NothingToKill;
                report.killed_after_grace = kr.found;
                report.killed = kr
                    .named
                    .into_iter()
                    .map(|k| KilledProcess {
                        pid: k.pid,
                        comm: k.comm,
                    })
                    .collect();
                report.kill_ms = ms(k0.elapsed());
                if kr.found > 0 {
                    let names: Vec<String> = report
                        .killed
                        .iter()
                        .map(|k| format!("{} ({})", k.pid, k.comm.as_deref().unwrap_or("?")))
                        .collect();
                    if grace.is_zero() {
                        // A kill (or a grace period of 0) was asked for: what it ends is
                        // not a leak, and is counted apart so that the "killed after grace"
                        // alert keeps meaning payloads that ignore their stop.
                        self.inner
                            .counters
                            .killed_without_grace
                            .fetch_add(kr.found as u64, Relaxed);
                        tracing::info!(
                            count = kr.found,
                            killed = %names.join(", "),
                            "killed processes (no grace period)"
                        );
                    } else {
                        self.inner
                            .counters
                            .killed_after_grace
                            .fetch_add(kr.found as u64, Relaxed);
                        tracing::warn!(
                            count = kr.found,
                            killed = %names.join(", "),
                            "killed processes that outlived the grace period"
                        );
                    }
                    self.emit(sb, EventKind::LeakedProcessesKilled { count: kr.found });
                }
            }
        }
        // Final accounting, while the cgroup still exists.
        let memory = self.inner.memory_enabled.load(Relaxed);
        if let Ok((cpu, peak)) = cg.usage_summary(memory) {
            report.cpu_usage_usec = cpu;
            report.memory_peak = peak;
        }
        if memory && let Some(ev) = memory_events(cg) {
            report.oom_kills = Some(ev.oom_kill);
            report.oom_group_kills = Some(ev.oom_group_kill);
        }
        // 4. Removal, with the EBUSY backstop of the cgroup layer.
        let r0 = Instant::now();
        let opts = RemoveOptions {
            timeout: self.inner.cfg.remove_timeout.max(policy.kill_timeout()),
            force_kill_fallback: self.inner.cfg.force_kill_fallback,
            sandbox: Some(sb.id.to_string()),
        };
        let rr = cg.remove(&opts).await?;
        report.remove_ms = ms(r0.elapsed());
        report.rmdir_fallback = !rr.fast_path && !rr.already_gone;
        if let Some(k) = &rr.kill
            && k.found > 0
        {
            report.killed_after_grace += k.found;
            self.inner
                .counters
                .killed_after_grace
                .fetch_add(k.found as u64, Relaxed);
            self.emit(sb, EventKind::LeakedProcessesKilled { count: k.found });
        }
        Ok(had_processes || rr.kill.is_some_and(|k| k.found > 0))
    }

    /// Sets `pids.max = 0` if the pids controller is enabled; returns whether it did.
    fn freeze_pids(&self, cg: &Cgroup) -> bool {
        if !self.inner.pids_enabled.load(Relaxed) {
            return false;
        }
        match cg.set_limit(Limit::PidsMax(Max::Value(0))) {
            Ok(()) => true,
            Err(CgError::ControllerUnavailable { .. }) => false,
            Err(e) => {
                tracing::warn!(cgroup = %cg.path().display(), error = %e, "could not set pids.max = 0 before the kill");
                false
            }
        }
    }

    /// Enters `Quarantined` and watches the cgroup until its processes are gone, then
    /// removes it (`Drained`, or `StopFailed` if the removal fails).
    async fn quarantine(
        &self,
        sb: Arc<Sandbox>,
        cg: Arc<Cgroup>,
        mut report: StopReport,
        was_paused: bool,
    ) {
        report.pids_frozen = self.freeze_pids(&cg) || report.pids_frozen;
        // A sandbox paused before a kill is still frozen (a kill does not thaw; the kernel
        // kills frozen processes all the same): thaw it, so a quarantined sandbox is never
        // frozen. A stuck process stays stuck either way.
        if was_paused && let Err(e) = cg.thaw() {
            tracing::warn!(error = %e, "could not thaw a quarantined sandbox that was paused");
        }
        self.finish(
            &sb,
            Transition::KillStuck {
                report: report.clone(),
            },
        );
        // Keep watching: event-driven on populated 0, repeating the kill now and then.
        let recheck = self.inner.cfg.quarantine_recheck;
        loop {
            let gone = match cg.watch() {
                Ok(w) => w.wait_unpopulated(recheck).await.unwrap_or(false),
                Err(_) => true,
            };
            if gone {
                break;
            }
            let _ = cg
                .kill(&KillOptions {
                    timeout: recheck,
                    ..Default::default()
                })
                .await;
        }
        // Drained: settled as after any stop (the stuck processes exited only now: the main
        // one, held in state D, among them).
        self.settle_after_empty(&sb, true).await;
        let opts = RemoveOptions {
            timeout: self.inner.cfg.remove_timeout,
            sandbox: Some(sb.id.to_string()),
            ..Default::default()
        };
        match cg.remove(&opts).await {
            Ok(_) => {
                self.net_release(&sb).await;
                self.finish(&sb, Transition::Drained)
            }
            Err(e) => {
                let error = e.to_string();
                self.finish(&sb, Transition::StopFailed { error, report });
            }
        }
    }
}

/// A cgroup's `memory.events` (its whole subtree); `None` when the file is absent (no
/// memory controller) or unreadable. One open and one read.
pub(crate) fn memory_events(cg: &Cgroup) -> Option<paddock_cgroup::MemoryEvents> {
    use rustix::fs::{Mode, OFlags, openat};
    let fd = openat(
        cg.dir_fd(),
        "memory.events",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut buf = [0u8; 512];
    let n = rustix::io::read(&fd, &mut buf).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    paddock_cgroup::MemoryEvents::parse(text).ok()
}
