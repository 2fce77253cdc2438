//! `paddock serve`'s flags ([`ServeArgs`]) and their parsers: every check of a flag's
//! value, so the config file (src/config.rs) and the command line are checked by the same
//! code.

use std::path::PathBuf;
use std::time::Duration;

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
    /// Who makes the daemon's cgroups, as `paddock run` spells it. The daemon never asks
    /// systemd for a scope of its own (its sandboxes must outlive it and be adopted by the
    /// next daemon, which a scope holding the daemon does not allow): `systemd` means its
    /// cgroup root is inside a unit with Delegate=yes: --delegated, or a --cgroup-root
    /// there (as deploy/systemd/paddock.service has it); otherwise it refuses to start,
    /// pointing to the units. `auto` and `cgroupfs`: --delegated, --cgroup-root, or the
    /// default root, refused on a host whose PID 1 is systemd (docs/systemd.md).
    #[arg(
        long,
        value_enum,
        value_name = "auto|systemd|cgroupfs",
        env = "PADDOCK_CGROUP_MANAGER",
        default_value = "auto"
    )]
    pub cgroup_manager: crate::systemd::CgroupManager,
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
