//! Recovery after a restart or a crash: adopting the lifecycles a previous supervisor
//! process recorded ([`Supervisor::adopt`], the `Adopted` arrow of the state machine), and
//! reclaiming owned cgroups that no lifecycle accounts for ([`Supervisor::reclaim`]).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use paddock_cgroup::{CgroupName, Liveness, Owner, RemoveOptions};
use paddock_proc::ForeignProcess;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::Error;
use crate::events::StopReason;
use crate::hooks::Record;
use crate::ids::{LifecycleId, cgroup_name, parse_cgroup_name};
use crate::lifecycle::{MainProcess, Sandbox, sandbox_span};
use crate::spec::{OnMainExit, SandboxId};
use crate::state::{LifecycleState, State, Transition};
use crate::supervisor::{SandboxInfo, Supervisor};

/// Outcome of [`Supervisor::adopt`].
#[derive(Debug, Clone, PartialEq)]
pub enum Adopted {
    /// The sandbox runs on and is controllable again.
    Running(SandboxInfo),
    /// A stop that had not finished (or a main process that had exited) is being finished.
    Stopping(SandboxInfo),
    /// Its processes could not be killed; it is quarantined and watched.
    Quarantined(SandboxInfo),
    /// Its cgroup no longer exists (or held nothing worth keeping and was removed): there
    /// is nothing to adopt, and the record can be dropped.
    Gone {
        /// The sandbox.
        id: SandboxId,
        /// The lifecycle.
        lifecycle: LifecycleId,
    },
}

/// What [`Supervisor::reclaim`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReclaimReport {
    /// Cgroups carrying this supervisor's owner tag but no lifecycle, killed and removed.
    pub reclaimed: Vec<String>,
    /// Cgroups whose owner is provably dead (a `pid:` owner whose process is gone), killed
    /// and removed: `(cgroup, owner tag)`.
    pub reclaimed_dead_owner: Vec<(String, String)>,
    /// Processes killed in the reclaimed cgroups (both kinds).
    pub processes_killed: usize,
    /// Cgroups under the root without an owner tag, or with one paddock never writes:
    /// reported, left alone.
    pub untagged: Vec<String>,
    /// Cgroups of other daemons (`daemon:` tags other than this supervisor's): `(cgroup,
    /// owner tag)`, left alone. A daemon's sandboxes wait for its restart.
    pub other_daemons: Vec<(String, String)>,
    /// Cgroups with the legacy tag `paddock` and no lifecycle here: their owner (a paddock
    /// from before per-instance owners) cannot be told, so they are left alone.
    pub legacy: Vec<String>,
    /// How many cgroups belong to other live owners (another `paddock run`, say): left
    /// alone, as they should be.
    pub live_owners: usize,
    /// Cgroups (and network objects) that could not be reclaimed, with the error.
    pub failed: Vec<(String, String)>,
    /// Sandbox host links removed (their owner's lifecycle is not live, or their
    /// `paddock run` is dead).
    #[serde(default)]
    pub net_links: Vec<String>,
    /// Pinned sandbox network namespaces removed.
    #[serde(default)]
    pub net_namespaces: Vec<String>,
    /// Owners whose nftables rules were removed.
    #[serde(default)]
    pub net_rules: Vec<String>,
    /// Address leases released (`<holder>+<key>`).
    #[serde(default)]
    pub net_leases: Vec<String>,
}

impl Supervisor {
    /// Re-attaches a lifecycle recorded by a previous supervisor process (after a crash or
    /// a restart). The cgroup must exist and carry this supervisor's owner tag. The main
    /// process is re-opened by pidfd only if its PID still belongs to the recorded process
    /// (same start time), so a reused PID is never adopted. A stop that was in progress, or
    /// a main process that exited meanwhile (with the default [`OnMainExit::Stop`]), is
    /// finished; a record of a start that never completed, or of a finished lifecycle whose
    /// cgroup is somehow still there, has its cgroup killed and removed and comes back as
    /// [`Adopted::Gone`].
    pub async fn adopt(&self, rec: Record) -> Result<Adopted, Error> {
        let span = sandbox_span(rec.spec.id.as_str(), rec.lifecycle);
        self.adopt_in_span(rec).instrument(span).await
    }

    /// Adopts `rec`, holding its dynamic uid (if any) for it first: an adopted lifecycle
    /// keeps it until its cgroup is gone, one found gone frees it, and one that could not
    /// be adopted (its cgroup may still hold processes running as it) keeps it held until
    /// a later adoption succeeds or the supervisor restarts.
    async fn adopt_in_span(&self, rec: Record) -> Result<Adopted, Error> {
        let dynamic = rec.jail.as_ref().and_then(|j| j.dynamic_uid);
        let (id, lc) = (rec.spec.id.clone(), rec.lifecycle);
        if let Some(uid) = dynamic {
            self.reserve_dynamic_uid(uid, &id, lc);
        }
        let res = self.adopt_recorded(rec).await;
        if let Some(uid) = dynamic {
            match &res {
                Ok(Adopted::Gone { .. }) => self.release_dynamic_uid_of(uid, &id, lc),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(uid, error = %e, "the dynamic uid of a sandbox that could not be adopted stays held")
                }
            }
        }
        res
    }

    async fn adopt_recorded(&self, rec: Record) -> Result<Adopted, Error> {
        let id = rec.spec.id.clone();
        let lc = rec.lifecycle;
        if let Ok(sb) = self.find(&id, Some(lc)) {
            let info = self.info(&sb);
            return Ok(match info.state {
                State::Quarantined => Adopted::Quarantined(info),
                State::Stopping => Adopted::Stopping(info),
                _ => Adopted::Running(info),
            });
        }
        let expected = cgroup_name(id.as_str(), lc);
        if rec.cgroup != expected {
            return Err(Error::InvalidSpec(format!(
                "record of {id} names cgroup {:?}, expected {expected:?}",
                rec.cgroup
            )));
        }
        let name = CgroupName::new(expected)?;
        let cg = match self.inner.cfg.root.open(&name) {
            Ok(c) => c,
            Err(e) if e.errno() == Some(rustix::io::Errno::NOENT) => {
                self.resume_pending_restart(&rec);
                return Ok(Adopted::Gone { id, lifecycle: lc });
            }
            Err(e) => return Err(e.into()),
        };
        let owner = cg.owner()?;
        // The tag is written right after `mkdir`, before anything runs in the cgroup: an
        // untagged cgroup of a record still `creating` is ours, cut off by a crash in
        // between (the record, written before `mkdir`, is the proof); it is removed below.
        let crashed_before_tag = owner.is_none() && rec.state == State::Creating;
        // A paddock from before per-instance owners tagged everything `paddock`: our own
        // record of it is the proof that it is ours. It is re-tagged with our owner, so the
        // tag says so from now on.
        let legacy = owner.as_deref().map(Owner::parse) == Some(Owner::Legacy);
        if owner.as_deref() != Some(self.inner.cfg.owner.as_str()) && !crashed_before_tag && !legacy
        {
            return Err(Error::InvalidSpec(format!(
                "cgroup {} is not tagged as this supervisor's (owner tag {owner:?}); not adopting it",
                cg.path().display()
            )));
        }
        if legacy && let Err(e) = cg.set_owner(&self.inner.cfg.owner) {
            tracing::warn!(error = %e, "could not re-tag a recorded cgroup that has the legacy owner tag `paddock`");
        }
        let main = match (rec.state, rec.main_pid) {
            (State::Stopped | State::Failed, _) | (State::Creating, None) => {
                let opts = RemoveOptions {
                    timeout: self.inner.cfg.remove_timeout,
                    sandbox: Some(id.to_string()),
                    ..Default::default()
                };
                cg.remove(&opts).await?;
                self.resume_pending_restart(&rec);
                return Ok(Adopted::Gone { id, lifecycle: lc });
            }
            (_, Some(pid)) => {
                ForeignProcess::open(pid, rec.main_start_time).map_err(|cause| Error::Io {
                    op: format!("re-open main process {pid} of {id}"),
                    cause,
                })?
            }
            (_, None) => None,
        };
        let paused = cg.events()?.frozen;
        let sb = Arc::new(
            Sandbox::new(
                rec.spec.clone(),
                lc,
                rec.created_at_ms,
                cg.path().to_owned(),
                name,
                LifecycleState::Recorded { state: rec.state },
                rec.jail.clone(),
            )
            // A record from before deadlines were recorded: from the spec.
            .with_deadline(rec.deadline_at_ms.or_else(|| {
                rec.spec
                    .deadline_ms
                    .map(|d| rec.created_at_ms.saturating_add(d))
            }))
            .with_restarts(rec.restart_count, rec.restart_since_reset),
        );
        drop(cg);
        let main = main.map(|m| MainProcess::adopted(m, rec.main_start_time));
        if let Some(m) = &main {
            let _ = sb.main.set(m.clone());
        }
        // Its network stays as it is: its key is live again and its lease held.
        if let Some(n) = &rec.network {
            let _ = sb.net.set(n.clone());
            self.net_adopted(&sb).await;
        }
        let finish_stop = matches!(rec.state, State::Stopping | State::Quarantined)
            || (main.is_none() && rec.spec.on_main_exit == OnMainExit::Stop);
        // Registers the lifecycle (see `Admission::Adopt`).
        self.enter(
            &sb,
            Transition::Adopted {
                paused,
                finish_stop,
            },
        )
        .map_err(|e| Error::InvalidState {
            id: id.clone(),
            state: e.from.state(),
            op: "adopt",
        })?;
        if finish_stop {
            self.spawn_stop(&sb, StopReason::Recovered, rec.spec.stop, paused);
            let info = self.info(&sb);
            return Ok(if rec.state == State::Quarantined {
                Adopted::Quarantined(info)
            } else {
                Adopted::Stopping(info)
            });
        }
        if let Some(m) = main {
            self.spawn_monitor(sb.clone(), m);
        }
        self.arm_deadline(&sb);
        Ok(Adopted::Running(self.info(&sb)))
    }

    /// Kills and removes every cgroup under the root that is not a lifecycle in the
    /// registry and either carries this supervisor's owner tag (left by a crash, or by a
    /// record that was lost) or belongs to a provably dead owner (a `paddock run` or other
    /// `pid:` owner whose process is gone: see [`paddock_cgroup::owner`]); each is logged
    /// with a WARN naming it and counted. Everything else is left alone and only reported:
    /// cgroups of live owners, of other daemons, with the legacy tag `paddock`, or without
    /// a tag. Nothing outside the root is ever looked at.
    ///
    /// Then the networks (see `docs/network.md`): every namespace pinned, host link,
    /// nftables rule and address lease with this supervisor's tag whose lifecycle is not
    /// live, and the leases and objects of provably dead `paddock run`s, are removed
    /// (`net_*` in the report, counted in [`SupervisorCounters`](crate::SupervisorCounters)).
    pub async fn reclaim(&self) -> Result<ReclaimReport, Error> {
        let root = &self.inner.cfg.root;
        let (names, other) = root.list()?;
        // Snapshot the registry after listing: a lifecycle is registered before its cgroup
        // is created, so every cgroup of a live lifecycle that was listed is in it.
        let known = self.inner.registry.cgroup_names();
        let mut report = ReclaimReport {
            untagged: other,
            ..Default::default()
        };
        let own = self.inner.cfg.owner.as_str();
        for name in names {
            if known.contains(name.as_str()) {
                continue;
            }
            let tag = match root.owner_of(&name) {
                Ok(o) => o,
                Err(e) if e.errno() == Some(rustix::io::Errno::NOENT) => continue,
                Err(e) => {
                    report.failed.push((name.to_string(), e.to_string()));
                    continue;
                }
            };
            let dead_owner = match tag.as_deref() {
                None => {
                    report.untagged.push(name.to_string());
                    continue;
                }
                Some(t) if t == own => None,
                Some(t) => match Owner::parse(t) {
                    o @ Owner::Process { .. } => match o.liveness() {
                        Liveness::Dead => Some(t.to_owned()),
                        Liveness::Alive => {
                            report.live_owners += 1;
                            continue;
                        }
                    },
                    Owner::Daemon(_) => {
                        report.other_daemons.push((name.to_string(), t.to_owned()));
                        continue;
                    }
                    Owner::Legacy => {
                        report.legacy.push(name.to_string());
                        continue;
                    }
                    Owner::Unknown(_) => {
                        report.untagged.push(name.to_string());
                        continue;
                    }
                },
            };
            // The cgroup's name says whose it was: its lines carry that ID and lifecycle.
            let (span, sandbox) = match parse_cgroup_name(name.as_str()) {
                Some((id, lc)) => (sandbox_span(id, lc), id.to_owned()),
                None => (tracing::Span::none(), name.to_string()),
            };
            let opts = RemoveOptions {
                timeout: self.inner.cfg.remove_timeout,
                sandbox: Some(sandbox),
                ..Default::default()
            };
            match root.open(&name) {
                Ok(cg) => match cg.remove(&opts).instrument(span.clone()).await {
                    Ok(r) if r.already_gone => {}
                    Ok(r) => {
                        let killed = r.kill.map(|k| k.found).unwrap_or(0);
                        report.processes_killed += killed;
                        self.inner.counters.reclaimed.fetch_add(1, Relaxed);
                        match dead_owner {
                            None => {
                                span.in_scope(|| tracing::warn!(cgroup = %cg.path().display(), killed, "reclaimed an owned cgroup that had no sandbox record"));
                                report.reclaimed.push(name.to_string());
                            }
                            Some(owner) => {
                                self.inner
                                    .counters
                                    .reclaimed_dead_owner
                                    .fetch_add(1, Relaxed);
                                span.in_scope(|| tracing::warn!(cgroup = %cg.path().display(), owner = %owner, killed, "reclaimed a cgroup whose owner is dead (its paddock process is gone)"));
                                report.reclaimed_dead_owner.push((name.to_string(), owner));
                            }
                        }
                    }
                    Err(e) => report.failed.push((name.to_string(), e.to_string())),
                },
                Err(e) if e.errno() == Some(rustix::io::Errno::NOENT) => {}
                Err(e) => report.failed.push((name.to_string(), e.to_string())),
            }
        }
        self.net_reclaim(&mut report).await;
        Ok(report)
    }
}
