//! `paddock serve`: the daemon.

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use paddock_cgroup::{Owner, Root};
use paddock_supervisor::{
    Adopted, Config, Event, Hooks, LifecycleId, Persisting, Record, SandboxId, Supervisor,
    parse_cgroup_name,
};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, watch};

use crate::api::{self, AppState};
use crate::metrics::Metrics;
use crate::store::Store;

/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/paddock/paddock.sock";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/paddock";
/// How often the store is reconciled with the cgroup tree while running.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(30);

/// Arguments of `paddock serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
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
    /// Most live (not stopped/failed) sandboxes; more creates get 429.
    #[arg(long, value_name = "N")]
    pub max_sandboxes: Option<usize>,
    /// Most concurrent starts; more creates get 429.
    #[arg(long, value_name = "N")]
    pub max_starting: Option<usize>,
    /// Stop every sandbox on SIGTERM/SIGINT (default: leave them running for the next
    /// daemon to adopt).
    #[arg(long)]
    pub stop_sandboxes_on_exit: bool,
    /// Seconds between reconciliations of the store with the cgroup tree.
    #[arg(long, value_name = "SECS", default_value_t = RECONCILE_INTERVAL.as_secs(), hide = true)]
    pub reconcile_interval: u64,
}

/// The environment variable of the crash test's hook (test-only; see [`PauseAt`]).
pub const TEST_PAUSE_ENV: &str = "PADDOCK_TEST_PAUSE_AT";

/// A point inside a create at which the daemon blocks that create forever, so the crash
/// test can SIGKILL the daemon exactly there. **Test-only**: set through
/// `PADDOCK_TEST_PAUSE_AT`, read once at start-up; never set it in production (every create
/// would hang). When a create reaches the point, the daemon logs
/// `test hook: create paused` (WARN, with `sandbox`, `lifecycle` and `point`) and waits on
/// a future that never completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseAt {
    /// The `creating` record is committed; no cgroup exists yet.
    Recorded,
    /// The record is committed and the sandbox's cgroup made (empty, not yet tagged): the
    /// state a crash between the supervisor's `mkdir` and its owner tag leaves.
    CgroupMade,
    /// The payload is spawned in its tagged cgroup; its `running` record (with the main
    /// PID) is not written.
    Spawned,
}

impl PauseAt {
    /// Reads [`TEST_PAUSE_ENV`]: `None` when unset, an error naming the accepted values when
    /// it holds anything else.
    pub fn from_env() -> Result<Option<PauseAt>> {
        let Some(v) = std::env::var_os(TEST_PAUSE_ENV) else {
            return Ok(None);
        };
        Ok(Some(match v.to_str() {
            Some("after_record") => PauseAt::Recorded,
            Some("after_mkdir") => PauseAt::CgroupMade,
            Some("after_spawn") => PauseAt::Spawned,
            _ => bail!(
                "{TEST_PAUSE_ENV}={v:?}: expected after_record, after_mkdir or after_spawn (a test-only hook; unset it)"
            ),
        }))
    }

    fn as_str(self) -> &'static str {
        match self {
            PauseAt::Recorded => "after_record",
            PauseAt::CgroupMade => "after_mkdir",
            PauseAt::Spawned => "after_spawn",
        }
    }
}

fn paused_forever(rec: &Record, at: PauseAt) -> Persisting {
    tracing::warn!(sandbox = %rec.spec.id, lifecycle = %rec.lifecycle, point = at.as_str(), "test hook: create paused ({TEST_PAUSE_ENV}); it never continues");
    Box::pin(std::future::pending())
}

/// The supervisor hooks of the daemon: the durable store and event-driven metrics. Write
/// failures are logged and counted by the store's writer.
pub struct DaemonHooks {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    /// The crash test's hook ([`PauseAt`]), and the managed root's path (for `after_mkdir`).
    pause_at: Option<(PauseAt, PathBuf)>,
}

impl Hooks for DaemonHooks {
    fn before_create(&self, rec: &Record) -> Persisting {
        let put = self.store.put(rec);
        match &self.pause_at {
            Some((at @ (PauseAt::Recorded | PauseAt::CgroupMade), root)) => {
                let (at, rec) = (*at, rec.clone());
                let cg = root.join(&rec.cgroup);
                Box::pin(async move {
                    put.await?;
                    if at == PauseAt::CgroupMade {
                        fs::create_dir(&cg).map_err(|e| format!("mkdir {}: {e}", cg.display()))?;
                    }
                    paused_forever(&rec, at).await
                })
            }
            _ => put,
        }
    }
    fn on_change(&self, rec: &Record) -> Persisting {
        if let Some((PauseAt::Spawned, _)) = &self.pause_at
            && rec.state == paddock_supervisor::State::Running
            && rec.main_pid.is_some()
        {
            return paused_forever(rec, PauseAt::Spawned);
        }
        self.store.put(rec)
    }
    fn on_event(&self, ev: &Event) {
        self.metrics.on_event(ev);
    }
    fn on_forget(&self, id: &SandboxId, lc: LifecycleId) {
        drop(self.store.delete(id, lc));
    }
}

/// Takes the state directory's lock; the returned fd holds it until dropped.
fn lock_state_dir(dir: &Path) -> Result<OwnedFd> {
    let path = dir.join("paddock.lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open lock file {}", path.display()))?;
    let fd = OwnedFd::from(f);
    match rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another paddock daemon is already using state directory {} (lock file {} is held{}); \
                 stop it first or pass a different --state-dir",
                dir.display(),
                path.display(),
                holder
                    .trim()
                    .parse::<u32>()
                    .map(|p| format!(" by pid {p}"))
                    .unwrap_or_default()
            );
        }
        Err(e) => bail!("lock {}: {e}", path.display()),
    }
    let _ = rustix::fs::ftruncate(&fd, 0);
    let _ = rustix::io::pwrite(&fd, format!("{}\n", std::process::id()).as_bytes(), 0);
    Ok(fd)
}

/// The file in the state directory that holds the daemon's identity.
pub const OWNER_ID_FILE: &str = "owner-id";

/// The daemon's identity, the owner tag of its sandboxes' cgroups (`daemon:<id>`): kept in
/// [`OWNER_ID_FILE`] in the state directory (made on first start from 128 random bits), so
/// a restarted daemon adopts its sandboxes and no other instance on the root takes them.
/// Called with the state directory locked.
fn daemon_owner(dir: &Path) -> Result<Owner> {
    let path = dir.join(OWNER_ID_FILE);
    match fs::read_to_string(&path) {
        Ok(s) => {
            return Owner::daemon(s.trim()).with_context(|| {
                format!(
                    "{} holds {:?}, not a daemon identity (32 lowercase hex digits); it names the \
                     owner of this daemon's sandboxes, so it is not replaced: restore it, or \
                     remove it only if no sandbox of this state directory runs",
                    path.display(),
                    s.trim()
                )
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    }
    let mut bytes = [0u8; 16];
    let mut got = 0;
    while got < bytes.len() {
        got += rustix::rand::getrandom(&mut bytes[got..], rustix::rand::GetRandomFlags::empty())
            .context("getrandom for the daemon's identity")?;
    }
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // Written whole under another name and renamed, so a crash leaves no half identity.
    let tmp = dir.join(format!("{OWNER_ID_FILE}.tmp"));
    {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("create {}", tmp.display()))?;
        std::io::Write::write_all(&mut f, format!("{id}\n").as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("write {}", tmp.display()))?;
    }
    fs::rename(&tmp, &path)
        .with_context(|| format!("rename {} to {}", tmp.display(), path.display()))?;
    tracing::info!(owner = %format!("daemon:{id}"), file = %path.display(), "made this daemon's identity");
    Ok(Owner::daemon(&id).expect("32 hex digits"))
}

fn read_token(path: &Path) -> Result<Vec<u8>> {
    let meta = fs::metadata(path).with_context(|| format!("token file {}", path.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "token file {} has mode {:o}: it must not be readable or writable by group or others (chmod 600 it)",
            path.display(),
            mode & 0o7777
        );
    }
    let tok =
        fs::read_to_string(path).with_context(|| format!("read token file {}", path.display()))?;
    let tok = tok.trim();
    if tok.len() < 16 {
        bail!(
            "token file {}: the token must be at least 16 characters",
            path.display()
        );
    }
    Ok(tok.as_bytes().to_vec())
}

fn group_id(name: &str) -> Result<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    let groups = fs::read_to_string("/etc/group").context("read /etc/group")?;
    for line in groups.lines() {
        let mut f = line.split(':');
        if f.next() == Some(name) {
            let gid = f.nth(1).and_then(|g| g.parse().ok());
            if let Some(g) = gid {
                return Ok(g);
            }
        }
    }
    bail!("--socket-group {name}: no such group")
}

fn bind_socket(path: &Path, group: Option<&str>) -> Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    // We hold the state lock, but the socket path could be shared with another daemon's
    // state dir: refuse if something answers on it.
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("socket {} is in use by a running daemon", path.display());
        }
        fs::remove_file(path).with_context(|| format!("remove stale socket {}", path.display()))?;
    }
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let l = tokio::net::UnixListener::bind(path);
    rustix::process::umask(old);
    let l = l.with_context(|| format!("bind {}", path.display()))?;
    match group {
        Some(g) => {
            let gid = group_id(g)?;
            rustix::fs::chown(path, None, Some(rustix::fs::Gid::from_raw(gid)))
                .with_context(|| format!("chgrp {} {}", g, path.display()))?;
            fs::set_permissions(path, fs::Permissions::from_mode(0o660))?;
        }
        None => fs::set_permissions(path, fs::Permissions::from_mode(0o600))?,
    }
    Ok(l)
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
        if let (Some(pid), None) = (rec.main_pid, rec.main_start_time) {
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
        }
        Err(e) => tracing::error!(error = %e, "reconcile: reclaim failed"),
    }
    tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "reconcile done");
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn serve(a: ServeArgs, socket: PathBuf) -> Result<u8> {
    fs::create_dir_all(&a.state_dir)
        .with_context(|| format!("create state directory {}", a.state_dir.display()))?;
    fs::set_permissions(&a.state_dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 700 {}", a.state_dir.display()))?;
    let _lock = lock_state_dir(&a.state_dir)?;
    let token = a.token_file.as_deref().map(read_token).transpose()?;
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
            None => Root::open_default(),
        }
    }
    .context("open the managed cgroup root")?;
    // One daemon per root: a second one must touch nothing (this lock and the socket are
    // taken before any reconciliation).
    let _root_lock = root.lock_exclusive()?;
    let owner = daemon_owner(&a.state_dir)?;
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(Store::open(
        &a.state_dir.join("paddock.redb"),
        metrics.daemon.store.clone(),
    )?);
    let log_dir = a.state_dir.join("logs");
    let root_path = root.path().to_owned();
    let mut cfg = Config::new(root);
    cfg.owner = owner.to_string();
    cfg.log_dir = Some(log_dir.clone());
    cfg.hooks = Arc::new(DaemonHooks {
        store: store.clone(),
        metrics: metrics.clone(),
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
        inflight: Mutex::new(0),
        ready: AtomicBool::new(false),
        log_dir,
        shutdown: shutdown_rx.clone(),
    });
    // The socket is claimed before the reconciliation (a daemon already answering on it
    // means this one must touch nothing), but served only after it, so no create can race
    // the adoption of its ID.
    let unix = bind_socket(&socket, a.socket_group.as_deref())?;
    reconcile(&sup, &store, &metrics).await;
    state.ready.store(true, Relaxed);
    let app = api::router(state.clone());
    let mut servers = tokio::task::JoinSet::new();
    {
        let mut rx = shutdown_rx.clone();
        let app = app.clone();
        servers.spawn(async move {
            axum::serve(unix, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|v| *v).await;
                })
                .await
        });
    }
    if let (Some(addr), Some(token)) = (a.listen, token) {
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen on {addr}"))?;
        let tapp = app.layer(axum::middleware::from_fn_with_state(
            Arc::new(token),
            api::require_token,
        ));
        let mut rx = shutdown_rx.clone();
        servers.spawn(async move {
            axum::serve(tcp, tapp)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|v| *v).await;
                })
                .await
        });
        tracing::info!(%addr, "listening on TCP (bearer token required)");
    }
    tracing::info!(socket = %socket.display(), state_dir = %a.state_dir.display(), root = %sup.root().path().display(), "paddock daemon ready");
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
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
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
    let _ = shutdown_tx.send(true);
    while let Some(r) = servers.join_next().await {
        if let Ok(Err(e)) = r {
            tracing::warn!(error = %e, "API server ended with an error");
        }
    }
    let _ = fs::remove_file(&socket);
    if a.stop_sandboxes_on_exit {
        tracing::info!("stopping every sandbox (--stop-sandboxes-on-exit)");
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
    }
    if let Err(e) = store.flush().await {
        tracing::error!(error = %e, "could not commit the last state changes");
    }
    tracing::info!("paddock daemon stopped");
    Ok(0)
}
