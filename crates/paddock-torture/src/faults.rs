//! The library-level faults a lifecycle's start and stop are run with: racing stops, stop
//! against main exit and pause, kill during a graceful stop, futures dropped at await
//! points. Each checks what must hold while it runs and records what did not.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use paddock_supervisor::{
    Error as SupError, LifecycleId, LimitsUpdate, SandboxId, SandboxInfo, SandboxSpec, State,
    StopReport,
};
use serde::Serialize;

use crate::case::Case;
use crate::report::Outcome;
use crate::runner::{Ctx, Rng, ms};

/// A library-level fault injected into one lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// One graceful stop.
    Plain,
    /// Several stops (and sometimes a kill) at once; all must see one outcome.
    RacingStops,
    /// A stop issued right after start, racing the main process's exit and its own stop.
    StopVsMainExit,
    /// A pause and a stop at once.
    StopVsPause,
    /// A kill while a graceful stop with a long grace period runs.
    KillDuringStop,
    /// `start` dropped after a short timeout.
    CancelStart,
    /// `stop` dropped after a short timeout, then waited for or re-issued.
    CancelStop,
    /// `pause` dropped after a short timeout, then the sandbox stopped.
    CancelPause,
    /// A deadline of 1–5 ms, racing a stop issued 0–5 ms after the start and an
    /// `extend_deadline`: one outcome (reason `deadline`, `requested` or `main_exited`);
    /// the extension succeeds or is refused as not running.
    DeadlineVsStop,
    /// Restart `always` with a 1–4 ms backoff and 0–5 (or unlimited) restarts: the
    /// payload runs as a loop of lifecycles; a stop of the ID 0–30 ms in ends it, also
    /// during a backoff or a restart's start; nothing of any lifecycle is left.
    RestartLoop,
    /// Limits updates (`cgroup.max.descendants`, which needs no controller) racing a stop:
    /// each update applies or is refused as not running, never anything else.
    UpdateVsStop,
}

impl Fault {
    /// Every fault.
    pub const ALL: [Fault; 11] = [
        Fault::Plain,
        Fault::RacingStops,
        Fault::StopVsMainExit,
        Fault::StopVsPause,
        Fault::KillDuringStop,
        Fault::CancelStart,
        Fault::CancelStop,
        Fault::CancelPause,
        Fault::DeadlineVsStop,
        Fault::RestartLoop,
        Fault::UpdateVsStop,
    ];

    /// Draws the fault of a lifecycle of `case`: any, except that `unkillable` only gets
    /// `Plain` or `RacingStops` (its stop must end in quarantine, which the others do not
    /// check), and a case whose start must be refused ([`Case::start_refused`]) only
    /// `Plain` (there is nothing to stop).
    pub(crate) fn draw(case: Case, rng: &mut Rng) -> Fault {
        let fault = Fault::ALL[rng.range(0, Fault::ALL.len() as u64) as usize];
        let unkillable_other =
            case == Case::Unkillable && !matches!(fault, Fault::Plain | Fault::RacingStops);
        if case.start_refused() || unkillable_other {
            Fault::Plain
        } else {
            fault
        }
    }
}

/// Starts `spec` the way `fault` says: with `CancelStart` the start future is dropped after
/// 0–3 ms (30% of the time with a bad `cwd`, so a start that got that far fails after its
/// cgroup exists), and whatever the registry shows then must not be `creating`. Returns
/// the sandbox if one exists afterwards.
pub(crate) async fn start_with_fault(
    ctx: &Ctx,
    id: &SandboxId,
    spec: SandboxSpec,
    fault: Fault,
    rng: &mut Rng,
    out: &mut Outcome,
) -> Option<SandboxInfo> {
    let sup = &ctx.sup;
    let mut spec = spec;
    if fault == Fault::DeadlineVsStop {
        spec.deadline_ms = Some(rng.range(1, 6));
    }
    let restartable = spec.on_main_exit == paddock_supervisor::OnMainExit::Stop
        && ![&spec.stdio.stdin, &spec.stdio.stdout, &spec.stdio.stderr]
            .iter()
            .any(|t| matches!(t, paddock_supervisor::StdioTarget::Pipe));
    if fault == Fault::RestartLoop && restartable {
        spec.restart = paddock_supervisor::RestartPolicy {
            mode: paddock_supervisor::RestartMode::Always,
            max_restarts: rng.chance(50).then(|| rng.range(0, 6) as u32),
            initial_backoff_ms: 1,
            max_backoff_ms: 4,
        };
    }
    if fault != Fault::CancelStart {
        return match sup.start(spec).await {
            Ok(s) => Some(s.info),
            Err(e) => {
                out.errors.push(format!("{id}: start failed: {e}"));
                None
            }
        };
    }
    if rng.chance(30) {
        // A start that fails after the cgroup exists (its clean-up has await points).
        spec.cwd = Some("/nonexistent-paddock-torture".into());
    }
    match tokio::time::timeout(Duration::from_micros(rng.range(0, 3000)), sup.start(spec)).await {
        Ok(Ok(s)) => Some(s.info),
        Ok(Err(_)) => None,
        Err(_) => {
            ctx.cancelled_start.fetch_add(1, Relaxed);
            // The dropped start must not leave a half-made sandbox: whatever the
            // registry shows must be a state that ends on its own or can be stopped.
            tokio::time::sleep(ms(50)).await;
            match sup.get(id) {
                Some(i) if i.state == State::Creating => {
                    out.errors.push(format!(
                        "{id}: start dropped at an await point left the sandbox in `creating`"
                    ));
                    Some(i)
                }
                other => other,
            }
        }
    }
}

/// Stops lifecycle `lc` of `id` the way `fault` says and returns the final report.
pub(crate) async fn stop_with_fault(
    ctx: &Ctx,
    id: &SandboxId,
    lc: LifecycleId,
    fault: Fault,
    rng: &mut Rng,
    out: &mut Outcome,
) -> Option<StopReport> {
    let sup = &ctx.sup;
    match fault {
        Fault::Plain | Fault::CancelStart | Fault::StopVsMainExit => {
            match sup.stop(id, Some(lc)).await {
                Ok(r) => Some(r),
                Err(e) => {
                    out.errors.push(format!("{id}: stop: {e}"));
                    None
                }
            }
        }
        Fault::RacingStops => {
            let k = rng.range(2, 6);
            let with_kill = rng.chance(50);
            let mut set = tokio::task::JoinSet::new();
            for i in 0..k {
                let sup = sup.clone();
                let id = id.clone();
                let kill = with_kill && i == k - 1;
                set.spawn(async move {
                    if kill {
                        sup.kill(&id, Some(lc)).await
                    } else {
                        sup.stop(&id, Some(lc)).await
                    }
                });
            }
            let mut reports = Vec::new();
            while let Some(r) = set.join_next().await {
                match r {
                    Ok(Ok(r)) => reports.push(r),
                    Ok(Err(e)) => out.errors.push(format!("{id}: racing stop: {e}")),
                    Err(e) => out.errors.push(format!("{id}: stop task: {e}")),
                }
            }
            if reports.windows(2).any(|w| w[0] != w[1]) {
                out.errors.push(format!(
                    "{id}: racing stops saw different outcomes: {reports:?}"
                ));
            }
            reports.pop()
        }
        Fault::StopVsPause => {
            let (p, s) = tokio::join!(sup.pause(id, Some(lc)), sup.stop(id, Some(lc)));
            if let Err(e) = p
                && !matches!(e, SupError::InvalidState { .. })
            {
                out.errors.push(format!("{id}: pause racing stop: {e}"));
            }
            match s {
                Ok(r) => Some(r),
                Err(e) => {
                    out.errors.push(format!("{id}: stop racing pause: {e}"));
                    None
                }
            }
        }
        Fault::KillDuringStop => {
            let sup2 = sup.clone();
            let id2 = id.clone();
            let t0 = Instant::now();
            let graceful = tokio::spawn(async move {
                sup2.stop_with_grace(&id2, Some(lc), Duration::from_secs(30))
                    .await
            });
            tokio::time::sleep(ms(rng.range(0, 100))).await;
            let k = sup.kill(id, Some(lc)).await;
            let g = graceful.await;
            if t0.elapsed() > Duration::from_secs(15) {
                out.errors.push(format!(
                    "{id}: kill did not cut the 30 s grace period short ({:?})",
                    t0.elapsed()
                ));
            }
            match (k, g) {
                (Ok(k), Ok(Ok(g))) => {
                    if k != g {
                        out.errors.push(format!(
                            "{id}: kill and graceful stop saw different outcomes: {k:?} / {g:?}"
                        ));
                    }
                    Some(k)
                }
                (k, g) => {
                    out.errors
                        .push(format!("{id}: kill during stop: {k:?} / {g:?}"));
                    None
                }
            }
        }
        Fault::CancelStop => {
            let d = Duration::from_micros(rng.range(0, 30_000));
            if tokio::time::timeout(d, sup.stop(id, Some(lc)))
                .await
                .is_err()
            {
                ctx.cancelled_stop.fetch_add(1, Relaxed);
            }
            // The stop either began (and finishes in its own task) or never did.
            let st = sup.get_lifecycle(id, lc).map(|i| i.state);
            let r = if st == Some(State::Running) {
                sup.stop(id, Some(lc)).await
            } else {
                sup.wait_stopped(id, Some(lc)).await
            };
            match r {
                Ok(r) => Some(r),
                Err(e) => {
                    out.errors
                        .push(format!("{id}: stop after a cancelled stop: {e}"));
                    None
                }
            }
        }
        Fault::DeadlineVsStop => {
            tokio::time::sleep(Duration::from_micros(rng.range(0, 5_000))).await;
            let (x, r) = tokio::join!(
                sup.extend_deadline(id, ms(rng.range(1, 5))),
                sup.stop(id, Some(lc))
            );
            if let Err(e) = x
                && !matches!(e, SupError::InvalidState { .. } | SupError::NotFound { .. })
            {
                out.errors
                    .push(format!("{id}: extend_deadline racing a stop: {e}"));
            }
            match r {
                Ok(r) => {
                    use paddock_supervisor::StopReason as R;
                    if !matches!(r.reason, R::Deadline | R::Requested | R::MainExited) {
                        out.errors.push(format!(
                            "{id}: a stop racing a deadline ended with reason {:?}",
                            r.reason
                        ));
                    }
                    Some(r)
                }
                Err(e) => {
                    out.errors
                        .push(format!("{id}: stop racing a deadline: {e}"));
                    None
                }
            }
        }
        Fault::RestartLoop => {
            tokio::time::sleep(ms(rng.range(0, 30))).await;
            // The ID, not `lc`: the current lifecycle may be a restart of it.
            match sup.stop(id, None).await {
                Ok(r) => {
                    // No lifecycle of the ID may come after the stop.
                    tokio::task::yield_now().await;
                    if let Some(i) = sup.get(id)
                        && !i.state.is_terminal()
                    {
                        out.errors.push(format!(
                            "{id}: a lifecycle ({}, {}) is {} after the stop of the ID",
                            i.lifecycle, i.restart_count, i.state
                        ));
                    }
                    Some(r)
                }
                Err(e) => {
                    out.errors
                        .push(format!("{id}: stop of a restart loop: {e}"));
                    None
                }
            }
        }
        Fault::UpdateVsStop => {
            let sup2 = sup.clone();
            let id2 = id.clone();
            let n = rng.range(5, 40);
            let updates = tokio::spawn(async move {
                let mut errors = Vec::new();
                for i in 0..n {
                    let u = LimitsUpdate {
                        max_descendants: Some(Some(1_000 + i)),
                        ..LimitsUpdate::default()
                    };
                    match sup2.update_limits(&id2, &u).await {
                        Ok(_) | Err(SupError::InvalidState { .. } | SupError::NotFound { .. }) => {}
                        Err(e) => errors.push(format!("{id2}: update racing a stop: {e}")),
                    }
                    tokio::task::yield_now().await;
                }
                errors
            });
            tokio::time::sleep(Duration::from_micros(rng.range(0, 2_000))).await;
            let r = sup.stop(id, Some(lc)).await;
            match updates.await {
                Ok(errors) => out.errors.extend(errors),
                Err(e) => out.errors.push(format!("{id}: update task: {e}")),
            }
            match r {
                Ok(r) => Some(r),
                Err(e) => {
                    out.errors.push(format!("{id}: stop racing updates: {e}"));
                    None
                }
            }
        }
        Fault::CancelPause => {
            let d = Duration::from_micros(rng.range(0, 5_000));
            if tokio::time::timeout(d, sup.pause(id, Some(lc)))
                .await
                .is_err()
            {
                ctx.cancelled_pause.fetch_add(1, Relaxed);
                // Independent check: once the abandoned pause has settled (the supervisor
                // finishes it on its own; its freezer wait is bounded by 10 s), the cgroup's
                // freeze state and the reported one agree.
                let deadline =
                    tokio::time::Instant::now() + Duration::from_secs(12) * ctx.time_scale;
                while let Some(i) = sup.get_lifecycle(id, lc) {
                    let frozen = std::fs::read_to_string(i.cgroup_path.join("cgroup.freeze"))
                        .is_ok_and(|s| s.trim() == "1");
                    if frozen == i.paused || i.state != State::Running {
                        break;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        out.errors.push(format!(
                            "{id}: a pause dropped at an await point left the cgroup frozen={frozen} \
                             while the sandbox reports paused={}",
                            i.paused
                        ));
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            match sup.stop(id, Some(lc)).await {
                Ok(r) => Some(r),
                Err(e) => {
                    out.errors
                        .push(format!("{id}: stop after a cancelled pause: {e}"));
                    None
                }
            }
        }
    }
}
