//! `paddock serve`: the daemon.

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use paddock_supervisor::{Adopted, Config, Owner, Root, SandboxId, Supervisor, parse_cgroup_name};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, watch};

use crate::api::{self, AppState};
use crate::listen;
use crate::metrics::Metrics;
use crate::store::Store;

mod args;
mod hooks;
pub mod notify;
mod setup;

pub use args::*;
use hooks::DaemonHooks;
#[cfg(feature = "test-hooks")]
pub use hooks::{PauseAt, TEST_PAUSE_ENV};
pub use setup::*;

/// On a host whose PID 1 is systemd, the default root `<cgroup2 mount>/paddock` would be
/// made in the part of the tree systemd owns: the daemon then refuses to start unless a
/// root is given (`--cgroup-root`, or `--delegated` in a unit with `Delegate=yes`). It never
/// makes a scope of its own: a daemon belongs in a unit (deploy/systemd/, docs/systemd.md).
fn refuse_systemd_top_level() -> Result<()> {
    if !crate::systemd::booted() {
        return Ok(());
    }
    let hint = if crate::systemd::own_cgroup_delegated() {
        "this daemon runs in a delegated cgroup: add --delegated (or `delegated = true` in the \
         config file) to run its sandboxes there"
    } else {
        "run it as the unit deploy/systemd/paddock.service (docs/systemd.md), or start it in \
         a unit with Delegate=yes and --delegated (`systemd-run -p Delegate=yes paddock serve \
         --delegated`)"
    };
    bail!(
        "systemd is PID 1 here ({}), and without --cgroup-root the daemon would make \
         <cgroup2 mount>/{} in the top level of the cgroup tree, which systemd owns: {hint}; \
         `--cgroup-root {}` makes it there anyway",
        crate::systemd::BOOTED_MARKER,
        "paddock",
        "paddock",
    )
}

/// Reconciles the store with the supervisor and the cgroup tree once.
pub async fn reconcile(sup: &Supervisor, store: &Arc<Store>, metrics: &Metrics) {
    let t0 = std::time::Instant::now();
    metrics.daemon.reconcile_runs.fetch_add(1, Relaxed);
    // Only the records of lifecycles the supervisor does not hold are decoded, on a
    // blocking thread: with 10,000 live sandboxes, decoding every record on an async
    // worker stalled the API for ~0.3 s every reconcile interval.
    let rows = {
        let (sup, store) = (sup.clone(), store.clone());
        tokio::task::spawn_blocking(move || {
            store.records_where(|key| match parse_cgroup_name(key) {
                Some((id, lc)) => SandboxId::new(id).map_or(true, |id| !sup.holds(&id, lc)),
                None => true,
            })
        })
        .await
        .unwrap_or_else(|e| Err(anyhow::anyhow!("the reconciliation's reader failed: {e}")))
    };
    let rows = match rows {
        Ok(r) => r,
        Err(e) => {
            metrics.daemon.reconcile_errors.fetch_add(1, Relaxed);
            tracing::error!(error = %e, "reconcile: cannot read the state database");
            return;
        }
    };
    for row in rows {
        let rec = match row {
            Ok(r) => r,
            Err((key, e)) => {
                metrics.daemon.reconcile_errors.fetch_add(1, Relaxed);
                tracing::error!(record = %key, error = %e, "reconcile: undecodable record left in place");
                continue;
            }
        };
        let (id, lc) = (rec.spec.id.clone(), rec.lifecycle);
        if sup.get_lifecycle(&id, lc).is_some() {
            continue;
        }
        let recorded = rec.state;
        let mut rec = rec;
        // Only a lifecycle recorded live has a main process to re-open. A finished one's PID
        // is history: a payload that exited before its start time could be read (a
        // `/bin/true`) has none, and once a restart of its ID replaced it in the registry
        // its record comes here (with a WARN for nothing, before this check).
        if let (false, Some(pid), None) =
            (recorded.is_terminal(), rec.main_pid, rec.main_start_time)
        {
            // Without the start time a reused PID cannot be told apart: never adopt it.
            tracing::warn!(sandbox = %id, lifecycle = %lc, pid, "reconcile: the record has a main PID but no start time, so the PID cannot be verified; not adopting that process (the main process is treated as gone)");
            rec.main_pid = None;
        }
        match sup.adopt(rec).await {
            Ok(Adopted::Gone { id, lifecycle }) => {
                metrics.daemon.records_gone.fetch_add(1, Relaxed);
                tracing::info!(sandbox = %id, lifecycle = %lifecycle, recorded_state = %recorded, "reconcile: sandbox is gone; record and log dropped");
                // A failure is logged and counted by the store.
                let _ = store.delete(&id, lifecycle).await;
                // No API call can reach its log any more (it is not in the registry).
                sup.delete_log(&id, lifecycle);
            }
            Ok(Adopted::Running(i)) => {
                tracing::info!(sandbox = %i.id, lifecycle = %i.lifecycle, pid = ?i.pid, "reconcile: adopted a running sandbox")
            }
            Ok(Adopted::Stopping(i)) => {
                tracing::info!(sandbox = %i.id, lifecycle = %i.lifecycle, "reconcile: adopted a sandbox and is finishing its stop")
            }
            Ok(Adopted::Quarantined(i)) => {
                tracing::warn!(sandbox = %i.id, lifecycle = %i.lifecycle, "reconcile: adopted a quarantined sandbox")
            }
            Err(e) => {
                metrics.daemon.reconcile_errors.fetch_add(1, Relaxed);
                tracing::error!(sandbox = %id, lifecycle = %lc, error = %e, "reconcile: could not adopt the recorded sandbox");
            }
        }
    }
    match sup.reclaim().await {
        Ok(r) => {
            if !r.untagged.is_empty() {
                tracing::warn!(cgroups = ?r.untagged, "reconcile: cgroups under the root without paddock's owner tag; left alone");
            }
            if !r.other_daemons.is_empty() {
                tracing::warn!(cgroups = ?r.other_daemons, "reconcile: cgroups of another paddock daemon (another --state-dir) under this daemon's root; left alone: they wait for that daemon to adopt them (or stop and remove them with it)");
            }
            if !r.legacy.is_empty() {
                tracing::warn!(cgroups = ?r.legacy, "reconcile: cgroups with the legacy owner tag `paddock` and no record here; left alone, as their owner (an older paddock) cannot be told: once no older paddock runs, remove them with `echo 1 > cgroup.kill` and rmdir");
            }
            for (cg, e) in &r.failed {
                tracing::error!(cgroup = %cg, error = %e, "reconcile: could not reclaim an owned cgroup");
            }
            if !r.reclaimed.is_empty() {
                tracing::warn!(cgroups = ?r.reclaimed, processes_killed = r.processes_killed, "reconcile: reclaimed owned cgroups that had no record");
            }
            if !(r.net_links.is_empty()
                && r.net_namespaces.is_empty()
                && r.net_rules.is_empty()
                && r.net_leases.is_empty())
            {
                tracing::warn!(links = ?r.net_links, namespaces = ?r.net_namespaces, rules = ?r.net_rules, leases = ?r.net_leases, "reconcile: reclaimed sandbox network objects without a live sandbox");
            }
        }
        Err(e) => tracing::error!(error = %e, "reconcile: reclaim failed"),
    }
    tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "reconcile done");
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn serve(a: ServeArgs, socket: PathBuf) -> Result<u8> {
    // Operator input is checked before anything is changed.
    check_socket_path(&socket)?;
    let gid = match a.socket_group.as_deref() {
        Some(g) => Some((g, group_id(g)?)),
        None => None,
    };
    prepare_state_dir(&a.state_dir)?;
    let nofile = raise_nofile();
    let (tcp_cap, unix_cap) = connection_caps(
        a.listen.map(|_| u64::from(a.max_connections)),
        u64::from(a.max_unix_connections),
        nofile,
    );
    let _lock = lock_state_dir(&a.state_dir)?;
    let token = a.token_file.as_deref().map(read_token).transpose()?;
    #[cfg(feature = "test-hooks")]
    let pause_at = PauseAt::from_env()?;
    crate::systemd::serve_check(
        a.cgroup_manager,
        a.delegated,
        a.cgroup_root
            .as_deref()
            .map(|p| move || crate::systemd::root_delegated(p)),
        crate::systemd::booted(),
        crate::systemd::own_cgroup_delegated,
    )
    .map_err(anyhow::Error::msg)?;
    let root = if a.delegated {
        let own = Root::own_cgroup().context("find the daemon's own cgroup (--delegated)")?;
        let root = Root::open_delegated(&own, &paddock_supervisor::DEFAULT_CONTROLLERS)
            .with_context(|| {
                format!(
                    "lay out the delegated cgroup {} (--delegated): it must be writable by \
                     the daemon, as systemd's Delegate=yes makes it",
                    own.display()
                )
            })?;
        tracing::info!(cgroup = %own.display(), sandboxes = %root.path().display(), "delegated cgroup: the daemon runs in its supervisor/ leaf");
        Ok(root)
    } else {
        match &a.cgroup_root {
            Some(p) => Root::open_or_create(p),
            None => {
                refuse_systemd_top_level()?;
                Root::open_default()
            }
        }
    }
    .context("open the managed cgroup root")?;
    // One daemon per root: a second one must touch nothing (this lock and the socket are
    // taken before any reconciliation).
    let _root_lock = root.lock_exclusive()?;
    let owner = daemon_owner(&a.state_dir)?;
    let drained = api::host::read_drain_file(&a.state_dir).with_context(|| {
        format!(
            "read the drain flag {}",
            a.state_dir.join(api::host::DRAIN_FILE).display()
        )
    })?;
    if let Some(since) = drained {
        tracing::warn!(since_ms = ?since, file = %a.state_dir.join(api::host::DRAIN_FILE).display(), "the node is draining (drained before this daemon started): creates are refused until undrain");
    }
    let metrics = Arc::new(Metrics::new());
    metrics.export_per_sandbox(a.metrics_per_sandbox);
    metrics.set_max_sandboxes(a.max_sandboxes);
    let store = Arc::new(Store::open(
        &a.state_dir.join("paddock.redb"),
        metrics.daemon.store.clone(),
        a.event_retention,
    )?);
    let log_dir = a.state_dir.join("logs");
    #[cfg(feature = "test-hooks")]
    let root_path = root.path().to_owned();
    let mut cfg = Config::new(root);
    cfg.owner = owner.to_string();
    cfg.log_dir = Some(log_dir.clone());
    cfg.stdio_dir = a.stdio_dir.clone();
    cfg.log_limits = paddock_supervisor::LogLimits {
        max_size: (a.log_max_size != 0).then_some(a.log_max_size),
        max_files: a.log_max_files,
    };
    cfg.dynamic_uids = a.uid_range.0;
    a.net_pool.apply(&mut cfg.net);
    cfg.retain_stopped = paddock_supervisor::Retention {
        max_age: Some(a.retain_stopped_age),
        max_count: Some(a.retain_stopped_count),
    };
    cfg.hooks = Arc::new(DaemonHooks {
        store: store.clone(),
        metrics: metrics.clone(),
        #[cfg(feature = "test-hooks")]
        pause_at: pause_at.map(|at| {
            tracing::warn!(
                point = at.as_str(),
                "{TEST_PAUSE_ENV} is set: every create will pause there (test-only)"
            );
            (at, root_path)
        }),
    });
    let sup = Supervisor::new(cfg)?;
    metrics.attach(sup.clone());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = Arc::new(AppState {
        sup: sup.clone(),
        metrics: metrics.clone(),
        max_sandboxes: a.max_sandboxes,
        max_starting: a.max_starting,
        starting: Semaphore::new(a.max_starting.unwrap_or(Semaphore::MAX_PERMITS)),
        admission: Mutex::new(api::Admission {
            draining: drained.is_some(),
            draining_since_ms: drained.flatten(),
            ..Default::default()
        }),
        admitted_done: tokio::sync::Notify::new(),
        node: api::NodeConfig {
            reserve_cpus: a.reserve_cpus,
            reserve_memory: a.reserve_memory,
            overcommit_memory: a.overcommit_memory,
            require_memory_limit: a.require_memory_limit,
            state_dir: a.state_dir.clone(),
        },
        node_op: tokio::sync::Mutex::new(()),
        ready: AtomicBool::new(false),
        log_dir,
        store: store.clone(),
        shutdown: shutdown_rx.clone(),
    });
    // TCP first (a TCP bind that fails leaves no socket file behind). Both are claimed
    // before the reconciliation (a daemon already answering on the socket means this one
    // must touch nothing), but served only after it, so no create can race the adoption
    // of its ID.
    let tcp = match (a.listen, token) {
        (Some(addr), Some(token)) => Some((
            bind_tcp(addr).with_context(|| format!("listen on {addr}"))?,
            addr,
            token,
        )),
        _ => None,
    };
    let unix = bind_socket(&socket, gid)?;
    notify::status("recovering: reconciling the state with the cgroup tree");
    // Before the socket answers (and /readyz says ready): a SIGTERM from then on is a
    // graceful shutdown, never the default action's death.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    reconcile(&sup, &store, &metrics).await;
    state.ready.store(true, Relaxed);
    let app = api::router(state.clone());
    let mut servers = tokio::task::JoinSet::new();
    let limits = |max: u64| listen::Limits {
        max_connections: max as usize,
        header_timeout: a.header_timeout,
        idle_timeout: a.idle_timeout,
    };
    servers.spawn(listen::serve(
        unix,
        "unix",
        app.clone(),
        limits(unix_cap),
        metrics.daemon.unix.clone(),
        shutdown_rx.clone(),
    ));
    if let Some((tcp, addr, token)) = tcp {
        let bound = tcp.local_addr().unwrap_or(addr);
        let tapp = app.layer(axum::middleware::from_fn_with_state(
            Arc::new(token),
            api::require_token,
        ));
        servers.spawn(listen::serve(
            tcp,
            "tcp",
            tapp,
            limits(tcp_cap),
            metrics.daemon.tcp.clone(),
            shutdown_rx.clone(),
        ));
        tracing::info!(addr = %bound, max_connections = tcp_cap, "listening on TCP (bearer token required)");
    }
    tracing::info!(socket = %socket.display(), state_dir = %a.state_dir.display(), root = %sup.root().path().display(), version = crate::VERSION, "paddock daemon ready");
    // The listeners are served (connections made since the binds are accepted now) and
    // `ready` is set: /readyz answers 200 from here on.
    let live = sup.list().iter().filter(|i| !i.state.is_terminal()).count();
    notify::ready(&format!(
        "ready: {live} live sandboxes; socket {}",
        socket.display()
    ));
    notify::spawn_watchdog();
    {
        let sup = sup.clone();
        let store = store.clone();
        let metrics = metrics.clone();
        let every = Duration::from_secs(a.reconcile_interval.max(1));
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            t.tick().await;
            loop {
                t.tick().await;
                reconcile(&sup, &store, &metrics).await;
            }
        });
    }
    let sig = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
        r = servers.join_next() => {
            bail!("the API server ended unexpectedly: {r:?}");
        }
    };
    tracing::info!(
        signal = sig,
        "shutting down: no new connections; finishing requests in flight"
    );
    notify::stopping(&format!("stopping ({sig}): finishing requests in flight"));
    let _ = shutdown_tx.send(true);
    while let Some(r) = servers.join_next().await {
        if let Err(e) = r {
            tracing::warn!(error = %e, "API server ended with an error");
        }
    }
    let _ = fs::remove_file(&socket);
    if a.stop_sandboxes_on_exit {
        tracing::info!("stopping every sandbox (--stop-sandboxes-on-exit)");
        notify::status("stopping every sandbox (--stop-sandboxes-on-exit)");
        for (id, r) in sup.stop_all().await {
            if let Err(e) = r {
                let lifecycle = sup.get(&id).map(|i| i.lifecycle.to_string());
                tracing::error!(sandbox = %id, lifecycle = lifecycle.unwrap_or_default(), error = %e, "stop on exit failed");
            }
        }
    } else {
        let live = sup.list().iter().filter(|i| !i.state.is_terminal()).count();
        tracing::info!(
            live,
            "leaving sandboxes running for the next daemon to adopt"
        );
        notify::status(&format!(
            "stopping: leaving {live} sandboxes running for the next daemon to adopt"
        ));
    }
    if let Err(e) = store.flush().await {
        tracing::error!(error = %e, "could not commit the last state changes");
    }
    tracing::info!("paddock daemon stopped");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TCP always leaves the unix socket its room under the descriptor limit; caps that
    /// fit are kept.
    #[test]
    fn tcp_leaves_room_for_the_unix_socket() {
        // Fits: kept.
        assert_eq!(connection_caps(Some(1024), 1024, 524_288), (1024, 1024));
        assert_eq!(connection_caps(None, 1024, 524_288), (0, 1024));
        // 1024 descriptors: 128 kept for the daemon, 64 for the unix socket.
        assert_eq!(connection_caps(Some(1024), 1024, 1024), (832, 1024));
        assert_eq!(connection_caps(Some(100), 1024, 1024), (100, 1024));
        // A unix cap below the room needs less.
        assert_eq!(connection_caps(Some(1024), 10, 256), (214, 10));
        // Tiny limits: TCP still gets one slot.
        assert_eq!(connection_caps(Some(1024), 1024, 64), (1, 1024));
    }
}
