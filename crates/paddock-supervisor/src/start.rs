//! Starting a sandbox: register the lifecycle (`Creating`), record it, create its cgroup,
//! spawn its main process, enter `Running` (or `StartFailed`, leaving nothing behind), and
//! watch the main process for its exit.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use paddock_cgroup::{CgroupName, RemoveOptions};
use paddock_proc::Process;
use tracing::Instrument;

use crate::Error;
use crate::events::{EventKind, StopReason, now_ms};
use crate::hooks::HookError;
use crate::ids::{LifecycleId, cgroup_name};
use crate::lifecycle::{MainProcess, Sandbox};
use crate::registry::{Admission, IdHeld};
use crate::retention::Reservation;
use crate::spawn::{Prepared, open_netns};
use crate::spec::{Network, OnMainExit, SandboxSpec};
use crate::state::{LifecycleState, Transition};
use crate::supervisor::{Started, Supervisor};

impl Supervisor {
    /// Starts a sandbox. Refused with [`Error::AlreadyExists`] (starting nothing) while a
    /// lifecycle of the same ID is creating or running; allowed while an older lifecycle
    /// is still stopping, which then finishes on its own. If the cgroup cannot be created
    /// or the spawn fails, nothing is left behind and the error says why.
    ///
    /// What the spec names outside the supervisor is checked first, before anything is
    /// recorded or created: [`crate::StdioTarget::File`] targets are opened (on a blocking
    /// thread, regular files only; see [`crate::Config::stdio_dir`]), a named network
    /// namespace must exist, and a jail's names, rootfs, bind sources and devices are
    /// looked up and its seccomp profile compiled (on a blocking thread); then a dynamic
    /// user gets its uid ([`crate::Config::dynamic_uids`]; every one held is
    /// [`Error::Unavailable`]). A target or namespace that is not acceptable is
    /// [`Error::InvalidSpec`] naming the field; an open that hangs is
    /// [`Error::Unavailable`] after [`crate::STDIO_OPEN_TIMEOUT`].
    pub async fn start(&self, spec: SandboxSpec) -> Result<Started, Error> {
        self.start_counted(spec, 0, 0, None).await
    }

    /// [`Supervisor::start`] of a lifecycle admitted with `reservation`
    /// ([`Supervisor::reserve`]): the reservation is counted by [`Supervisor::admitted`]
    /// until the lifecycle leaves `Creating` (then [`Supervisor::live`] counts it, or it
    /// failed) or this start returns an error before the lifecycle exists.
    pub async fn start_reserved(
        &self,
        spec: SandboxSpec,
        reservation: Reservation,
    ) -> Result<Started, Error> {
        self.start_counted(spec, 0, 0, Some(reservation)).await
    }

    /// [`Supervisor::start`] of a lifecycle that is restart number `restarts` of its ID
    /// (`since_reset` since the restart backoff was last reset; both 0 for a first start).
    pub(crate) async fn start_counted(
        &self,
        spec: SandboxSpec,
        restarts: u32,
        since_reset: u32,
        reservation: Option<Reservation>,
    ) -> Result<Started, Error> {
        spec.validate()?;
        // Cheap early refusal of a duplicate (checked again atomically below), so a
        // duplicate does not create its stdio files first.
        if self.inner.registry.id_held(&spec.id) {
            self.inner.counters.starts_conflict.fetch_add(1, Relaxed);
            return Err(Error::AlreadyExists(spec.id.clone()));
        }
        let mut prepared = self.prepare(&spec).await?;
        let lifecycle = LifecycleId::fresh();
        let name = CgroupName::new(cgroup_name(spec.id.as_str(), lifecycle))?;
        let cgroup_path = self.inner.cfg.root.child_path(&name);
        // A dynamic user's uid is taken now, the last refusal before anything is recorded:
        // it is in the record written before the cgroup is created, and it is released
        // when this lifecycle's cgroup is gone (or right below, if the ID is held).
        let jail = match (&spec.jail, prepared.jail.as_mut()) {
            (Some(j), Some(r)) => {
                if j.user.as_ref().is_some_and(|u| u.dynamic) {
                    r.set_dynamic(self.allocate_dynamic_uid(&spec.id, lifecycle)?);
                }
                Some(crate::jail::status(j, r))
            }
            _ => None,
        };
        let created_at_ms = now_ms();
        let deadline = spec.deadline_ms.map(|d| created_at_ms.saturating_add(d));
        let sb = Arc::new(
            Sandbox::new(
                spec,
                lifecycle,
                created_at_ms,
                cgroup_path,
                name,
                LifecycleState::Creating,
                jail,
            )
            .with_deadline(deadline)
            .with_restarts(restarts, since_reset)
            .with_reservation(reservation),
        );
        // Hold the op lock from before the sandbox is visible, so a stop that finds it
        // waits for the start to finish.
        let op = sb.op.try_lock().expect("a new lifecycle's op lock is free");
        match self.inner.registry.insert(&sb, Admission::Start) {
            Err(IdHeld) => {
                self.release_dynamic_uid(&sb);
                self.inner.counters.starts_conflict.fetch_add(1, Relaxed);
                return Err(Error::AlreadyExists(sb.id.clone()));
            }
            Ok(Some(replaced)) => self.dropped_from_registry(&sb.id, replaced),
            Ok(None) => {}
        }
        self.start_registered(&sb, op, prepared)
            .instrument(sb.span())
            .await
    }

    /// Opens what the spec names outside the supervisor (see [`Supervisor::start`]).
    async fn prepare(&self, spec: &SandboxSpec) -> Result<Prepared, Error> {
        let files =
            crate::stdio::open_files(spec, self.inner.stdio_dir.clone(), &self.inner.stdio_slots)
                .await?;
        let netns = match &spec.network {
            Network::Named(n) => Some(open_netns(n)?),
            Network::Host | Network::Isolated | Network::Veth(_) => None,
        };
        let jail = match &spec.jail {
            Some(j) => {
                // Refused before the slower look-ups: nothing else can make it work.
                if j.user.as_ref().is_some_and(|u| u.dynamic)
                    && self.inner.cfg.dynamic_uids.is_none()
                {
                    return Err(Error::InvalidSpec(crate::jail::DYNAMIC_OFF.into()));
                }
                let owned = j.clone();
                let r = crate::stdio::run_blocking(
                    &self.inner.stdio_slots,
                    crate::STDIO_OPEN_TIMEOUT,
                    "the jail's rootfs, users, groups and devices",
                    move || crate::jail::resolve(&owned),
                )
                .await?
                .map_err(Error::InvalidSpec)?;
                crate::jail::check_dynamic_range(j, &r, self.inner.cfg.dynamic_uids)
                    .map_err(Error::InvalidSpec)?;
                Some(r)
            }
            None => None,
        };
        let io = crate::resources::resolve_io(&spec.limits)?;
        Ok(Prepared {
            files,
            netns,
            jail,
            io,
        })
    }

    /// The rest of a start, once its lifecycle is registered (in its span).
    async fn start_registered(
        &self,
        sb: &Arc<Sandbox>,
        op: tokio::sync::MutexGuard<'_, ()>,
        prepared: Prepared,
    ) -> Result<Started, Error> {
        // Until the spawn's outcome is known, a caller that drops this future must not leave
        // the lifecycle in `creating` (holding the ID) or its cgroup behind: the guard
        // finishes the start as failed if it is dropped armed.
        let mut guard = StartGuard {
            sup: Some(self.clone()),
            sb: sb.clone(),
        };
        let spawned = self.create_and_spawn(sb, prepared).await;
        guard.disarm();
        let mut process = match spawned {
            Ok(p) => p,
            Err(e) => {
                let _ = self.enter(
                    sb,
                    Transition::StartFailed {
                        error: e.to_string(),
                    },
                );
                drop(op);
                return Err(e);
            }
        };
        let (stdin, stdout, stderr) = (
            process.take_stdin(),
            process.take_stdout(),
            process.take_stderr(),
        );
        let start_time = paddock_cgroup::procinfo::start_time(process.pid());
        let main = MainProcess::child(Arc::new(process), start_time);
        let _ = sb.main.set(main.clone());
        let recorded = match self.enter(sb, Transition::Started) {
            Ok(entered) => entered.recorded,
            // Creating → Running always applies: nothing else moves a creating lifecycle.
            Err(e) => {
                tracing::error!(error = %e, "start: lifecycle left `creating` under the start");
                None
            }
        };
        drop(op);
        self.spawn_monitor(sb.clone(), main);
        self.arm_deadline(sb);
        if let Some(recorded) = recorded
            && let Err(reason) = recorded.await
        {
            return Err(self.unrecorded_start(sb, reason).await);
        }
        Ok(Started {
            info: self.info(sb),
            stdin,
            stdout,
            stderr,
        })
    }

    /// A started sandbox whose `running` record failed: a sandbox that is not on record
    /// would be unknown to a restarted supervisor, so it is killed (and forgotten, unless
    /// it is quarantined or failed: then it stays listed, and visible).
    async fn unrecorded_start(&self, sb: &Arc<Sandbox>, reason: HookError) -> Error {
        tracing::error!(error = %reason, "start not recorded; killing the sandbox");
        match self
            .stop_lifecycle(sb, Some(std::time::Duration::ZERO), StopReason::Killed)
            .await
        {
            Ok(r) if r.stuck.is_empty() && r.error.is_none() => self.unregister(sb),
            _ => {}
        }
        Error::Journal {
            id: sb.id.clone(),
            reason,
        }
    }

    /// A start whose future was dropped before its spawn's outcome was known: fail it now,
    /// and remove its cgroup if it got one (in a task of the current runtime; the cgroup
    /// holds no process — the spawn had not returned one — but is removed through the full
    /// path, which kills whatever might be there).
    fn abandon_start(&self, sb: &Arc<Sandbox>) {
        let _ = self.enter(
            sb,
            Transition::StartFailed {
                error: "start cancelled: the caller stopped waiting for it".into(),
            },
        );
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                cause = "no tokio runtime",
                "cancelled start: its cgroup, if any, is left to reclaim"
            );
            return;
        };
        let sup = self.clone();
        let sb = sb.clone();
        let span = sb.span();
        rt.spawn(
            async move {
                let cg = match sup.open_cgroup(&sb) {
                    Ok(cg) => cg,
                    Err(e) if e.errno() == Some(rustix::io::Errno::NOENT) => {
                        sup.net_release(&sb).await;
                        return;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "could not open the cgroup of a cancelled start");
                        return;
                    }
                };
                let opts = RemoveOptions {
                    timeout: sup.inner.cfg.remove_timeout,
                    sandbox: Some(sb.id.to_string()),
                    ..Default::default()
                };
                if let Err(e) = cg.remove(&opts).await {
                    tracing::error!(error = %e, "could not remove the cgroup of a cancelled start");
                    return;
                }
                sup.net_release(&sb).await;
            }
            .instrument(span),
        );
    }

    /// Takes a `veth` network's lease, records the lifecycle (`before_create`), makes its
    /// network, creates its cgroup and spawns the main process into it; on any failure,
    /// removes what was made (the cgroup, then the network and the lease).
    async fn create_and_spawn(
        &self,
        sb: &Arc<Sandbox>,
        prepared: Prepared,
    ) -> Result<Process, Error> {
        let res = self.create_and_spawn_inner(sb, prepared).await;
        if res.is_err() {
            self.net_release(sb).await;
        }
        res
    }

    async fn create_and_spawn_inner(
        &self,
        sb: &Arc<Sandbox>,
        mut prepared: Prepared,
    ) -> Result<Process, Error> {
        let cfg = &self.inner.cfg;
        // Taken after the lifecycle is registered, so a concurrent reclaim sees it live.
        self.net_lease(sb).await?;
        if cfg.hooks.wants_records() {
            cfg.hooks
                .before_create(&sb.record())
                .await
                .map_err(|reason| Error::Journal {
                    id: sb.id.clone(),
                    reason,
                })?;
        }
        if let Some(fd) = self.net_create(sb).await? {
            prepared.netns = Some(fd);
        }
        let mut needed = sb.spec.limits.controllers();
        // `memory.oom.group` is on by default wherever the memory controller is available.
        if sb.spec.limits.oom_group.is_none()
            && !needed.contains(&"memory")
            && !self.inner.memory_enabled.load(Relaxed)
            && cfg
                .root
                .controllers()
                .is_ok_and(|c| c.iter().any(|c| c == "memory"))
        {
            needed.push("memory");
        }
        if !needed.is_empty() {
            // Idempotent; fails with a clear error naming a controller the hierarchy lacks.
            cfg.root.enable_controllers(&needed)?;
            if needed.contains(&"pids") {
                self.inner.pids_enabled.store(true, Relaxed);
            }
            if needed.contains(&"memory") {
                self.inner.memory_enabled.store(true, Relaxed);
            }
        }
        let cg = cfg.root.create(&sb.cgroup_name)?;
        let res = cg
            .set_owner(&cfg.owner)
            .map_err(Error::from)
            .and_then(|()| {
                crate::spawn::spawn(
                    &sb.spec,
                    sb.lifecycle,
                    &cg,
                    self.inner.logs.as_ref(),
                    prepared,
                    cfg.new_session,
                )
            });
        if res.is_err() {
            // Nothing may be left behind: the spawn failed, so the cgroup is empty, but
            // remove through the full path anyway (it kills whatever might be there).
            let opts = RemoveOptions {
                timeout: cfg.remove_timeout,
                sandbox: Some(sb.id.to_string()),
                ..Default::default()
            };
            if let Err(e) = cg.remove(&opts).await {
                tracing::error!(error = %e, "could not remove the cgroup of a failed start");
            }
        }
        res
    }

    /// Watches the main process: records its exit, and with [`OnMainExit::Stop`] begins
    /// the stop of the rest of the tree, with reason [`StopReason::Oom`] when the OOM
    /// killer ended the sandbox (see `oom_after_main_exit`).
    pub(crate) fn spawn_monitor(&self, sb: Arc<Sandbox>, main: MainProcess) {
        let sup = self.clone();
        let span = sb.span();
        tokio::spawn(
            async move {
                let exit = main.wait().await;
                if sup.announce_main_exit(&sb, exit) {
                    tracing::info!(code = ?exit.code, signal = ?exit.signal, "main process exited");
                }
                // Read (and announced) whatever the policy: with `keep_running` the
                // sandbox stays, emptied by a group OOM kill, until it is stopped.
                let oom = sup.oom_after_main_exit(&sb, exit);
                if sb.spec.on_main_exit == OnMainExit::Stop {
                    let reason = if oom {
                        StopReason::Oom
                    } else {
                        StopReason::MainExited
                    };
                    let _ = sup.begin_stop(&sb, reason, sb.spec.stop, false).await;
                }
            }
            .instrument(span),
        );
    }
}

impl Supervisor {
    /// Whether the OOM killer ended the sandbox whose main process just exited: a group
    /// OOM kill happened (`memory.events` `oom_group_kill`), or an OOM kill did and the
    /// main process died of SIGKILL. Emits the `oom` event then. Reads nothing where the
    /// memory controller is not enabled.
    fn oom_after_main_exit(&self, sb: &Sandbox, exit: crate::events::MainExit) -> bool {
        if !self.inner.memory_enabled.load(Relaxed) {
            return false;
        }
        let Ok(cg) = self.open_cgroup(sb) else {
            return false;
        };
        let Some(ev) = crate::stop::memory_events(&cg) else {
            return false;
        };
        let oom = ev.oom_group_kill > 0 || (ev.oom_kill > 0 && exit.signal == Some(libc::SIGKILL));
        if oom {
            tracing::warn!(
                oom_kills = ev.oom_kill,
                oom_group_kills = ev.oom_group_kill,
                "the OOM killer ended the sandbox"
            );
            self.emit(
                sb,
                EventKind::Oom {
                    oom_kills: ev.oom_kill,
                    oom_group_kills: ev.oom_group_kill,
                },
            );
        }
        oom
    }
}

/// Fails a start whose future is dropped while armed (see [`Supervisor::start`]).
struct StartGuard {
    sup: Option<Supervisor>,
    sb: Arc<Sandbox>,
}

impl StartGuard {
    fn disarm(&mut self) {
        self.sup = None;
    }
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        if let Some(sup) = self.sup.take() {
            sup.abandon_start(&self.sb);
        }
    }
}
