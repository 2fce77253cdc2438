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

mod hooks;
pub mod notify;
mod setup;

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

/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/paddock/paddock.sock";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/paddock";
/// How often the store is reconciled with the cgroup tree while running.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(30);

/// Arguments of `paddock serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The config file: TOML whose keys are these flags' long names (`max-sandboxes = 100`,
    /// `delegated = true`); flags given on the command line or by their environment
    /// variables win over it. Default: /etc/paddock/config.toml if it exists; `none` reads
    /// no file. See docs/deploy.md.
    #[arg(long, value_name = "PATH|none", env = "PADDOCK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Group that may use the socket (chgrp + mode 0660).
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Also serve on TCP at ADDR (e.g. 127.0.0.1:7070); needs --token-file.
    #[arg(long, value_name = "ADDR", requires = "token_file")]
    pub listen: Option<std::net::SocketAddr>,
    /// File holding the bearer token TCP clients must send; must not be group- or
    /// world-readable.
    #[arg(long, value_name = "FILE", requires = "listen")]
    pub token_file: Option<PathBuf>,
    /// State directory: the lock file, the database, the sandboxes' logs.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// The managed cgroup root (default: <cgroup2 mount>/paddock). One daemon per root:
    /// the daemon locks it (flock on its directory), and a second daemon on it refuses to
    /// start. `paddock run` may share it: each instance tags the cgroups it makes with its
    /// own owner (this daemon's identity is kept in the state directory's `owner-id`) and
    /// never touches another's, except those of a `paddock run` that is provably dead.
    #[arg(long, value_name = "PATH", env = "PADDOCK_CGROUP_ROOT")]
    pub cgroup_root: Option<PathBuf>,
    /// Run in a delegated cgroup (a systemd unit with `Delegate=yes`, a container's
    /// cgroup): the daemon moves itself, and anything else in its cgroup, into the leaf
    /// `<its cgroup>/supervisor` and manages `<its cgroup>/sandboxes`, with the pids,
    /// memory, cpu and io controllers its cgroup is offered enabled for them (the
    /// no-internal-process rule allows nothing else).
    #[arg(long, conflicts_with = "cgroup_root")]
    pub delegated: bool,
    /// Also export cpu, memory, pids, io and pressure gauges of each live sandbox,
    /// labelled with its ID, at /metrics (only running sandboxes: series come and go with
    /// them, so their number stays bounded by --max-sandboxes; see docs/api.md).
    #[arg(long)]
    pub metrics_per_sandbox: bool,
    /// Most live (not stopped/failed) sandboxes; more creates get 429.
    #[arg(long, value_name = "N")]
    pub max_sandboxes: Option<usize>,
    /// Most concurrent starts; more creates get 429.
    #[arg(long, value_name = "N")]
    pub max_starting: Option<usize>,
    /// CPUs kept from the sandboxes (may be fractional, e.g. 0.5): GET /v1/node reports
    /// capacity less this as allocatable.
    #[arg(long, value_name = "N", default_value_t = 0.0, value_parser = parse_reserve_cpus)]
    pub reserve_cpus: f64,
    /// Memory kept from the sandboxes (e.g. 512M, 2G): GET /v1/node reports capacity less
    /// this as allocatable, and --overcommit-memory admits against that.
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = parse_size_flag)]
    pub reserve_memory: u64,
    /// Admit a create only while the memory_max of every live and starting sandbox, its
    /// own included, adds up to at most allocatable memory × RATIO (e.g. 1.0: no
    /// overcommit; 1.5: half as much again); more creates get 429. A sandbox without
    /// memory_max commits nothing. Default: off (memory is not admitted).
    #[arg(long, value_name = "RATIO", value_parser = parse_overcommit)]
    pub overcommit_memory: Option<f64>,
    /// Refuse (422) a create without limits.memory_max.
    #[arg(long)]
    pub require_memory_limit: bool,
    /// Stop every sandbox on SIGTERM/SIGINT (default: leave them running for the next
    /// daemon to adopt).
    #[arg(long)]
    pub stop_sandboxes_on_exit: bool,
    /// Only accept stdio file targets beneath DIR (absolute paths under it, or paths
    /// relative to it), resolved with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
    /// RESOLVE_NO_MAGICLINKS). Without it, file targets may be any absolute path: the
    /// daemon opens them as root (regular files only, never through a symbolic link as the
    /// last component).
    #[arg(long, value_name = "DIR")]
    pub stdio_dir: Option<PathBuf>,
    /// Most TCP connections open at once. Further connections wait in the kernel's listen
    /// backlog (not accepted, holding nothing of the daemon) until one closes. Lowered,
    /// with a warning, where RLIMIT_NOFILE (raised to its hard limit at start) could not
    /// otherwise keep room for 64 unix-socket connections.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Most unix-socket connections open at once, counted apart from TCP: a TCP flood
    /// never takes the operator's room on the socket.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_unix_connections: u32,
    /// How long a client may take to send a request's head: from the accept for a new
    /// connection, from its first byte for a next request on a kept-alive one. Past it the
    /// connection is closed.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    pub header_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request, and how long a
    /// request in progress may stall on the client (a body that does not arrive, an
    /// answer it does not read), before the connection is closed. A request the daemon is
    /// still working on (`wait`, `events`) is never idle.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    pub idle_timeout: Duration,
    /// Cap of each file of a sandbox's log (e.g. 10M, at least 64K; 0: no cap). Past it the
    /// log is rotated: older output moves to `<log>.1` … `<log>.<N-1>`, the oldest is
    /// dropped.
    #[arg(long, value_name = "SIZE", default_value = "10M", value_parser = parse_log_size)]
    pub log_max_size: u64,
    /// Files per sandbox log with --log-max-size, the active one included (1 to 100): a log
    /// takes at most N × SIZE.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub log_max_files: u32,
    /// How long a stopped (or failed) sandbox stays listed, with its log and record, before
    /// it is deleted as by `paddock rm` (0: at once).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = paddock_duration)]
    pub retain_stopped_age: Duration,
    /// Most stopped (or failed) sandboxes kept; past it the one that stopped first is
    /// deleted as by `paddock rm`.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub retain_stopped_count: usize,
    /// Host uids (and the gids of the same numbers) for dynamic users (`--dynamic-user`,
    /// `jail.user.dynamic`): FIRST-LAST, or `none` to refuse dynamic users. Each sandbox
    /// gets one to itself while any of its processes may live. No other user, and no other
    /// daemon, may own ids of it; it must not hold 0 or 65534.
    #[arg(long, value_name = "FIRST-LAST|none", default_value = "200000-265535", value_parser = parse_uid_range)]
    pub uid_range: UidRangeArg,
    /// The `veth` networks' address pool.
    #[command(flatten)]
    pub net_pool: crate::cli::net::NetPoolArgs,
    /// Lifecycle events kept in the state database for `GET /v1/events?since=SEQ` (and
    /// `Last-Event-ID`) to resume from, also after a restart of the daemon; the oldest are
    /// dropped as new ones are committed. A cursor older than what is kept gets a 410.
    #[arg(long, value_name = "N", default_value_t = crate::store::DEFAULT_RETENTION, value_parser = clap::value_parser!(u64).range(1..=crate::store::MAX_RETENTION))]
    pub event_retention: u64,
    /// Seconds between reconciliations of the store with the cgroup tree.
    #[arg(long, value_name = "SECS", default_value_t = RECONCILE_INTERVAL.as_secs(), hide = true)]
    pub reconcile_interval: u64,
}

/// `--uid-range`: a range, or none.
#[derive(Debug, Clone, Copy)]
pub struct UidRangeArg(pub Option<paddock_supervisor::UidRange>);

fn parse_uid_range(s: &str) -> Result<UidRangeArg, String> {
    if s == "none" {
        return Ok(UidRangeArg(None));
    }
    s.parse().map(|r| UidRangeArg(Some(r)))
}

/// Default of `--max-connections` and `--max-unix-connections`.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;

/// Unix-socket connections the TCP cap always leaves descriptors for (see
/// [`connection_caps`]).
pub const UNIX_ROOM: u64 = 64;

/// The message of a parse error of the spec helpers, without their prefix.
fn bare(e: paddock_supervisor::Error) -> String {
    match e {
        paddock_supervisor::Error::InvalidSpec(m) => m,
        e => e.to_string(),
    }
}

/// A duration flag (`10s`, `500ms`, `2m`, `1h`).
fn paddock_duration(s: &str) -> Result<Duration, String> {
    paddock_supervisor::parse_duration(s).map_err(bare)
}

/// `--log-max-size`: `0` (no cap) or a size of at least 64K.
fn parse_log_size(s: &str) -> Result<u64, String> {
    // `parse_size` takes only sizes above 0; 0 is documented here as no cap.
    if s.trim() == "0" {
        return Ok(0);
    }
    let v = paddock_supervisor::parse_size(s).map_err(bare)?;
    if v != 0 && v < paddock_supervisor::logs::MIN_LOG_MAX_SIZE {
        return Err(format!("{s:?}: at least 64K (or 0 for no cap)"));
    }
    Ok(v)
}

/// `--reserve-memory`: `0` or a size (`512M`, `2G`, bytes without a unit).
fn parse_size_flag(s: &str) -> Result<u64, String> {
    if s == "0" {
        return Ok(0);
    }
    paddock_supervisor::parse_size(s).map_err(bare)
}

/// `--reserve-cpus`: a number of CPUs from 0 to 1048576.
fn parse_reserve_cpus(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=1_048_576.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?}: a number of CPUs from 0 to 1048576 (e.g. 1, 0.5)"
        )),
    }
}

/// `--overcommit-memory`: a ratio above 0, at most 1000.
fn parse_overcommit(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1000.0 => Ok(v),
        _ => Err(format!(
            "{s:?}: a ratio above 0 and at most 1000 (e.g. 1.0: no overcommit, 1.5)"
        )),
    }
}

/// A positive duration for a timeout flag.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = paddock_duration(s)?;
    if d.is_zero() {
        return Err(format!(
            "{s:?}: must be more than 0 (examples: 10s, 500ms, 2m)"
        ));
    }
    Ok(d)
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
