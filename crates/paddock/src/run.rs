//! `paddock run`: one command in a fresh sandbox, in the foreground.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use paddock_supervisor::{
    Config, Network, Owner, Root, SandboxId, SandboxSpec, StdioSpec, StopPolicy, Supervisor,
    parse_duration, parse_size,
};
use tokio::signal::unix::{SignalKind, signal};

use crate::guard;

/// Arguments of `paddock run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Sandbox ID (default: run-<paddock's pid>).
    #[arg(long)]
    pub name: Option<String>,
    /// Hard memory limit (memory.max), e.g. 512M, 2G.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Memory throttling limit (memory.high).
    #[arg(long, value_name = "SIZE")]
    pub memory_high: Option<String>,
    /// CPU quota in CPUs (cpu.max), e.g. 1.5.
    #[arg(long, value_name = "CPUS")]
    pub cpus: Option<f64>,
    /// Maximum number of processes and threads (pids.max).
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,
    /// Network: `host` (default), `isolated` (a new namespace with only loopback), or the
    /// name of a namespace made with `ip netns add`.
    #[arg(long, value_name = "host|isolated|NAME", default_value = "host")]
    pub netns: String,
    /// Grace period between the stop signal and the kill, e.g. 10s, 500ms.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub stop_timeout: String,
    /// A time to live, e.g. 30s, 2h: the sandbox is stopped gracefully (by --stop-timeout,
    /// reason `deadline`) this long after it started. With -d it holds across a daemon
    /// restart and `paddock deadline ID --extend D` moves it.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Restart policy, Docker's syntax (with -d): never (default), on-failure[:N] (when the
    /// main process fails; at most N restarts), always. Each restart is a new lifecycle of
    /// the same ID, after a backoff doubling from 100 ms to 30 s; a stop ends them.
    #[arg(long, value_name = "never|on-failure[:N]|always")]
    pub restart: Option<String>,
    /// Environment variable for the command (repeatable).
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory of the command.
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// Print a one-line summary to stderr at the end (duration, CPU, peak memory,
    /// processes killed). With the global --json the summary is instead one JSON object
    /// on the last line of stdout (printed with or without --summary): {"id",
    /// "lifecycle", "exit_code", "main_exit", "duration_ms", "cpu_usage_usec",
    /// "memory_peak", "killed_after_grace", "quarantined", "stop_report"}.
    #[arg(long)]
    pub summary: bool,
    /// The managed cgroup root (default: <cgroup2 mount>/paddock). Implies
    /// --cgroup-manager cgroupfs unless that flag says otherwise.
    #[arg(long, value_name = "PATH", env = "PADDOCK_CGROUP_ROOT")]
    pub cgroup_root: Option<PathBuf>,
    /// Who makes the sandbox's cgroup: `systemd` asks systemd (over D-Bus) for a transient
    /// scope `paddock-run-<ID>.scope` with Delegate=yes in --slice, holding paddock, and
    /// runs the sandbox in it (as root the system manager's scope; as any other user, one
    /// of that user's own systemd instance, user@UID.service, on the user bus);
    /// `cgroupfs` makes it under --cgroup-root. `auto`: systemd when systemd is PID 1
    /// (/run/systemd/system exists), no --cgroup-root is given and (as root) paddock is
    /// not already inside a delegated unit (there: that unit's cgroup, paddock in a
    /// supervisor leaf, the sandbox beside it); cgroupfs otherwise. With -d the daemon's
    /// cgroup root decides and this is not used. See docs/systemd.md.
    #[arg(
        long,
        value_enum,
        value_name = "auto|systemd|cgroupfs",
        env = "PADDOCK_CGROUP_MANAGER",
        default_value = "auto"
    )]
    pub cgroup_manager: crate::systemd::CgroupManager,
    /// The slice of the scope of --cgroup-manager systemd (not with -d, where the daemon's
    /// cgroup root decides).
    #[arg(long, value_name = "SLICE", default_value = crate::systemd::DEFAULT_SLICE, conflicts_with = "detach")]
    pub slice: String,
    /// Create the sandbox through the daemon (`--socket`) and return at once; its output
    /// goes to `paddock logs ID`.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// The resource flags beyond --memory, --cpus and --pids (see docs/limits.md).
    #[command(flatten)]
    pub limits: crate::cli::limits::LimitArgs,
    /// The jail (any of these flags makes one; see docs/jail.md).
    #[command(flatten)]
    pub jail: crate::cli::jail::JailArgs,
    /// A network of the sandbox's own (see docs/network.md).
    #[command(flatten)]
    pub veth: crate::cli::net::NetArgs,
    /// The address pool (in the foreground; with -d the daemon's is used).
    #[command(flatten)]
    pub net_pool: crate::cli::net::NetPoolArgs,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Builds the spec `paddock run` starts (shared with `paddock run -d`).
pub fn spec_from_args(a: &RunArgs) -> Result<SandboxSpec> {
    let id = a
        .name
        .clone()
        .unwrap_or_else(|| format!("run-{}", std::process::id()));
    let id = SandboxId::new(id)?;
    let (cmd, rest) = a.command.split_first().context("no command given")?;
    let mut spec = SandboxSpec::new(id, cmd.clone(), rest.iter().cloned());
    spec.stdio = StdioSpec::inherit();
    spec.cwd = a.cwd.clone();
    for kv in &a.env {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--env {kv:?}: expected K=V");
        };
        spec.env.insert(k.to_owned(), v.to_owned());
    }
    spec.limits.memory_max = a.memory.as_deref().map(parse_size).transpose()?;
    spec.limits.memory_high = a.memory_high.as_deref().map(parse_size).transpose()?;
    spec.limits.cpus = a.cpus;
    spec.limits.pids_max = a.pids;
    a.limits.apply(&mut spec.limits)?;
    spec.network = match a.netns.as_str() {
        "host" => Network::Host,
        "isolated" => Network::Isolated,
        name => Network::Named(name.to_owned()),
    };
    if let Some(n) = a.veth.network()? {
        if a.netns != "host" {
            bail!("--net veth and --netns {} cannot be combined", a.netns);
        }
        spec.network = n;
    }
    let grace = parse_duration(&a.stop_timeout)?;
    spec.stop = StopPolicy {
        grace_period_ms: grace.as_millis() as u64,
        ..StopPolicy::default()
    };
    spec.deadline_ms = a
        .timeout
        .as_deref()
        .map(|t| parse_duration(t).map(|d| (d.as_millis() as u64).max(1)))
        .transpose()
        .context("--timeout")?;
    if let Some(r) = &a.restart {
        spec.restart = parse_restart(r)?;
        if !spec.restart.is_never() && !a.detach {
            bail!("--restart {r}: needs -d (a foreground run ends when its main process does)");
        }
    }
    spec.jail = a.jail.to_spec()?;
    spec.validate()?;
    Ok(spec)
}

/// `--restart`: `never`, `always`, `on-failure` or `on-failure:N`.
fn parse_restart(s: &str) -> Result<paddock_supervisor::RestartPolicy> {
    use paddock_supervisor::{RestartMode, RestartPolicy};
    let (mode, max) = match s.split_once(':') {
        Some(("on-failure", n)) => (
            RestartMode::OnFailure,
            Some(n.parse::<u32>().map_err(|_| {
                anyhow::anyhow!("--restart {s:?}: the count after on-failure: must be a number")
            })?),
        ),
        None if s == "on-failure" => (RestartMode::OnFailure, None),
        None if s == "always" => (RestartMode::Always, None),
        None if s == "never" || s == "no" => (RestartMode::Never, None),
        _ => bail!("--restart {s:?}: expected never, on-failure[:N] or always"),
    };
    Ok(RestartPolicy {
        mode,
        max_restarts: max,
        ..RestartPolicy::default()
    })
}

/// What `paddock run` sets up before it starts any thread: the spec, the managed root, the
/// owner tag and the guardian (forked, so this must run while the process has one
/// thread: before the async runtime).
pub struct Prepared {
    args: RunArgs,
    spec: SandboxSpec,
    root: Root,
    owner: String,
    guardian: guard::Pending,
}

/// Validates the arguments, opens the managed root (enabling the controllers the limits
/// need) — with the systemd driver first asking systemd for the run's scope and laying out
/// its delegated cgroup ([`crate::systemd::scope_root`]) —, and forks the guardian ([`crate::guard`]). Call it before the async runtime
/// starts.
pub fn prepare(a: RunArgs) -> Result<Prepared> {
    let spec = spec_from_args(&a)?;
    crate::systemd::check_slice(&a.slice).map_err(anyhow::Error::msg)?;
    let instance = crate::systemd::Instance::current();
    if instance != crate::systemd::Instance::System {
        let need = root_only_features(&spec);
        if !need.is_empty() {
            bail!(
                "{} {} root: a paddock run as a non-root user gets only a cgroup (a \
                 scope of your systemd user instance, or one under a --cgroup-root delegated \
                 to you) and runs the command as you, in the host's namespaces; run it as root (docs/systemd.md, \"Rootless\")",
                need.join("; "),
                if need.len() == 1 { "needs" } else { "need" }
            );
        }
    }
    let driver = crate::systemd::select(
        a.cgroup_manager,
        a.cgroup_root.is_some(),
        crate::systemd::booted(),
        instance,
        crate::systemd::own_cgroup_delegated,
    )
    .map_err(anyhow::Error::msg)?;
    let root = match driver {
        // The scope's delegated cgroup: controllers enabled and checked there.
        crate::systemd::Driver::Systemd => crate::systemd::scope_root(&spec, &a.slice)?,
        // The enclosing unit's delegated cgroup, laid out as a scope's: nothing outside it.
        crate::systemd::Driver::Delegated => {
            let own = Root::own_cgroup().context("find this process's own cgroup")?;
            let want = spec.limits.controllers();
            let root = Root::open_delegated(&own, &want).with_context(|| {
                format!(
                    "lay out the delegated cgroup {} of the unit paddock runs in (a                      supervisor leaf and the sandboxes beside it); or pass --cgroup-root",
                    own.display()
                )
            })?;
            if !want.is_empty() {
                root.enable_controllers(&want)
                    .context("enable the controllers the limits need")?;
            }
            root
        }
        crate::systemd::Driver::Cgroupfs => {
            let root = match &a.cgroup_root {
                Some(p) => Root::open_or_create(p),
                None => Root::open_default(),
            }
            .with_context(|| match (instance, &a.cgroup_root) {
                (crate::systemd::Instance::User { .. }, None) => {
                    "open the managed cgroup root <cgroup2 mount>/paddock, which only root may \
                     make: as a non-root user, run on a host whose PID 1 is systemd (paddock \
                     asks your systemd user instance for a scope), or pass a --cgroup-root \
                     delegated to you"
                }
                _ => "open the managed cgroup root",
            })?;
            let want = spec.limits.controllers();
            if !want.is_empty() {
                root.enable_controllers(&want)
                    .context("enable the controllers the limits need")?;
            }
            root
        }
    };
    let owner = Owner::this_process()
        .context("read this process's start time and PID namespace from /proc/self")?
        .to_string();
    // Forked before anything is created, so no moment of the sandbox's life is unguarded.
    let guardian = guard::fork(&root, &owner)?;
    Ok(Prepared {
        args: a,
        spec,
        root,
        owner,
        guardian,
    })
}

/// The features of `spec` that need root (each named as the flags spell it), which a
/// non-root `paddock run` refuses before anything is made: a jail sets the payload's uid,
/// gid and capabilities and makes namespaces and mounts; a network other than the host's
/// makes or joins a network namespace (and a veth network makes links and addresses).
/// What a non-root run may do: a command as the user, in the host's namespaces, with the
/// limits of the controllers its scope is delegated.
pub fn root_only_features(spec: &SandboxSpec) -> Vec<&'static str> {
    let mut need = Vec::new();
    match spec.network {
        Network::Host => {}
        Network::Isolated => need.push("--netns isolated (a new network namespace)"),
        Network::Named(_) => need.push("--netns NAME (joining a network namespace)"),
        Network::Veth(_) => need.push("--net (a veth network: links, addresses, nftables)"),
    }
    if spec.jail.is_some() {
        need.push(
            "a jail (--user, --dynamic-user, --rootfs, --bind, --device, --unshare, \
             --hostname, --cap-*, --seccomp, --landlock, --rlimit, ...: it sets the payload's \
             uid, gid and capabilities and makes namespaces, mounts and device nodes)",
        );
    }
    need
}

/// Runs the sandbox to completion; returns the exit code for paddock (the main process's
/// exit code, 128+N when signal N killed it, 125 when its status is unknown). With `json`,
/// prints the summary as one JSON object on stdout. The guardian kills and removes the
/// sandbox if this process dies before it has. When this returns, every process of the
/// sandbox is gone and reaped, and this process has no child left.
pub async fn run(p: Prepared, json: bool) -> Result<u8> {
    let Prepared {
        args: a,
        spec,
        root,
        owner,
        guardian,
    } = p;
    let guardian = guardian.armed().await?;
    let res = run_guarded(a, spec, root, owner, guardian.clone(), json).await;
    guardian.release().await;
    // The sandbox's stop reaped its own orphans; reap anything else handed to this
    // subreaper (processes that left the sandbox's cgroup), so none is handed on to init.
    let rep = paddock_supervisor::reap_orphans_of(|_| true, FINAL_REAP_TIMEOUT).await;
    tracing::debug!(
        sweeps = rep.sweeps,
        reaped = rep.reaped,
        waited_for = rep.waited_for,
        "reaped the last orphans"
    );
    if !rep.left.is_empty() {
        tracing::warn!(pids = ?rep.left, "processes that left the sandbox's cgroup still run as children of paddock; they are handed to init");
    }
    res
}

/// How long `paddock run` waits, at its end, for the last orphans handed to it to exit.
const FINAL_REAP_TIMEOUT: Duration = Duration::from_secs(2);

async fn run_guarded(
    a: RunArgs,
    spec: SandboxSpec,
    root: Root,
    owner: String,
    guardian: Arc<guard::Guardian>,
    json: bool,
) -> Result<u8> {
    let mut cfg = Config::new(root);
    cfg.owner = owner;
    a.net_pool.apply(&mut cfg.net);
    cfg.hooks = Arc::new(guard::GuardHooks(guardian));
    // One sandbox, and nothing subscribes to the events: a few slots, not 4,096 touched
    // at start.
    cfg.event_capacity = 16;
    // In the foreground, the terminal's signals (Ctrl-C) reach the payload as they reach
    // any command; the run's own handler stops the sandbox as well.
    cfg.new_session = false;
    let sup = Supervisor::new(cfg)?;
    // Sandboxes of paddock runs that were killed together with their guardians: gone
    // owners' cgroups are removed (each with a WARN naming it), concurrently with the start.
    let reclaim = {
        let sup = sup.clone();
        tokio::spawn(async move {
            match sup.reclaim().await {
                Ok(r) => {
                    for (cg, e) in r.failed {
                        tracing::warn!(cgroup = %cg, error = %e, "could not reclaim a cgroup of a dead owner");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not look for cgroups of dead owners"),
            }
        })
    };
    // Installed before the start: a SIGTERM or Ctrl-C that arrives while the sandbox is
    // being created must stop it once started, not kill paddock and leave it running.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let t0 = Instant::now();
    let started = sup.start(spec).await;
    let _ = reclaim.await;
    let started = started?;
    let (id, lc) = (started.info.id.clone(), started.info.lifecycle);
    let mut asked = 0;
    let report = loop {
        tokio::select! {
            r = sup.wait_stopped(&id, Some(lc)) => break r?,
            _ = sigint.recv() => asked += 1,
            _ = sigterm.recv() => asked += 1,
        }
        // First signal: graceful stop; second: kill at once.
        let sup2 = sup.clone();
        let id2 = id.clone();
        if asked == 1 {
            tokio::spawn(async move { sup2.stop(&id2, Some(lc)).await });
        } else {
            tokio::spawn(async move { sup2.kill(&id2, Some(lc)).await });
        }
    };
    let info = sup
        .get_lifecycle(&id, lc)
        .context("sandbox record vanished")?;
    // The main process's status arrives from the reaper; the stop can finish first.
    let exit = match info.main_exit {
        Some(e) => Some(e),
        None => sup.wait_main_exit(&id, lc).await,
    };
    let code = exit.map(|e| e.shell_code()).unwrap_or(125);
    if !report.stuck.is_empty() {
        eprintln!(
            "paddock: sandbox {id} is quarantined: {} process(es) survived the kill: {:?}",
            report.stuck.len(),
            report.stuck
        );
    }
    let elapsed = t0.elapsed();
    if json {
        let v = serde_json::json!({
            "id": id,
            "lifecycle": lc,
            "exit_code": code,
            "main_exit": exit,
            "duration_ms": elapsed.as_secs_f64() * 1e3,
            "cpu_usage_usec": report.cpu_usage_usec,
            "memory_peak": report.memory_peak,
            "killed_after_grace": report.killed_after_grace,
            "quarantined": !report.stuck.is_empty(),
            "stop_report": report,
        });
        println!("{v}");
    } else if a.summary {
        let mem = report
            .memory_peak
            .map(human_bytes)
            .unwrap_or_else(|| "n/a".into());
        let cpu = report
            .cpu_usage_usec
            .map(|u| format!("{:.3}s", u as f64 / 1e6))
            .unwrap_or_else(|| "n/a".into());
        eprintln!(
            "paddock: {id}: {}, {:.3}s, cpu {cpu}, peak memory {mem}, {} process(es) killed at the end",
            exit.map(|e| match (e.code, e.signal) {
                (Some(c), _) => format!("exit {c}"),
                (None, Some(s)) => format!("killed by signal {s}"),
                _ => "exit unknown".into(),
            })
            .unwrap_or_else(|| "exit unknown".into()),
            elapsed.as_secs_f64(),
            report.killed_after_grace,
        );
    }
    Ok(u8::try_from(code).unwrap_or(255))
}

/// The exit code of a `paddock run` that failed before its command ran, as shells, Docker,
/// Podman and `systemd-run` have it: 127 when the command was not found (`execve` said
/// `ENOENT`: no such file, or its `#!` interpreter is missing), 126 when it was found but
/// cannot be executed (any other `execve` error: `EACCES`, `ENOEXEC`, `EISDIR`, ...), 125
/// for every failure of paddock's own (the cgroup, a limit, the working directory, the
/// network namespace, the guardian, bad options).
pub fn failure_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(paddock_supervisor::Error::Spawn { cause, .. }) =
            cause.downcast_ref::<paddock_supervisor::Error>()
            && cause.stage() == Some(paddock_supervisor::Stage::Exec)
        {
            return if cause.errno() == Some(rustix::io::Errno::NOENT.raw_os_error()) {
                127
            } else {
                126
            };
        }
    }
    125
}

fn human_bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1}{}", U[i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn spec(args: &[&str]) -> SandboxSpec {
        let cli = crate::Cli::try_parse_from(
            ["paddock", "run", "--name", "r1"]
                .iter()
                .chain(args)
                .chain(["--", "true"].iter()),
        )
        .unwrap();
        let crate::Cmd::Run(a) = cli.command else {
            panic!("not a run")
        };
        spec_from_args(&a).unwrap()
    }

    #[test]
    fn root_only_features_are_named() {
        // A plain run with limits needs no root.
        assert!(root_only_features(&spec(&["--memory", "64M", "--pids", "8"])).is_empty());
        for (args, word) in [
            (&["--netns", "isolated"][..], "--netns isolated"),
            (&["--netns", "blue"][..], "--netns NAME"),
            (&["--user", "1000"][..], "a jail"),
            (&["--no-new-privs"][..], "a jail"),
        ] {
            let need = root_only_features(&spec(args));
            assert_eq!(need.len(), 1, "{args:?}: {need:?}");
            assert!(need[0].starts_with(word), "{args:?}: {need:?}");
        }
    }
}
