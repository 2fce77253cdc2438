//! Turning a spec into a cgroup's limits and the main process's command. The decisions are
//! pure functions of the spec ([`limits`], [`command`]), tested without root; what needs
//! the system (log and stdio files, a named network namespace, the spawn) is in [`spawn`].

use std::fs::File;
use std::os::fd::OwnedFd;

use paddock_cgroup::{Cgroup, CpuMax, Limit, Max};
use paddock_proc::{Command, Namespaces, Process, Stdio};

use crate::Error;
use crate::ids::LifecycleId;
use crate::logs::LogDir;
use crate::spec::{Limits, Network, SandboxSpec, StdioTarget};
use crate::stdio::StdioFiles;

/// The cgroup limits a spec's [`Limits`] ask for, in the order they are written. Fails
/// only for a CPU count out of range, which [`SandboxSpec::validate`] refuses first.
pub(crate) fn limits(l: &Limits) -> Result<Vec<Limit>, paddock_cgroup::Error> {
    let mut limits = Vec::new();
    if let Some(v) = l.max_descendants {
        limits.push(Limit::MaxDescendants(Max::Value(v)));
    }
    if let Some(v) = l.max_depth {
        limits.push(Limit::MaxDepth(Max::Value(v)));
    }
    if let Some(v) = l.memory_max {
        limits.push(Limit::MemoryMax(Max::Value(v)));
    }
    if let Some(v) = l.memory_high {
        limits.push(Limit::MemoryHigh(Max::Value(v)));
    }
    if let Some(c) = l.cpus {
        limits.push(Limit::CpuMax(CpuMax::from_cpus(c)?));
    }
    if let Some(w) = l.cpu_weight {
        limits.push(Limit::CpuWeight(w));
    }
    if let Some(p) = l.pids_max {
        limits.push(Limit::PidsMax(Max::Value(p)));
    }
    Ok(limits)
}

/// Variables of the service manager's protocol with the daemon (sd_notify(3),
/// sd_watchdog_enabled(3), sd_listen_fds(3)) that a sandbox does not inherit.
pub(crate) const SERVICE_MANAGER_ENV: [&str; 6] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// The main process's command as far as the spec alone decides it: program, arguments,
/// environment (the spec's, then `PADDOCK_SANDBOX_ID` and `PADDOCK_LIFECYCLE_ID`), working
/// directory, and a new network namespace for [`Network::Isolated`]. Its standard streams
/// and a named network namespace are attached by [`spawn`].
///
/// With a jail, `jail` is what was resolved for it (names, the seccomp filter, the dynamic
/// uid): the process layer's jail and its namespaces are attached ([`crate::jail::proc_jail`]).
pub(crate) fn command(
    spec: &SandboxSpec,
    lifecycle: LifecycleId,
    jail: Option<&crate::jail::Resolved>,
) -> Command {
    let mut cmd = Command::new(&spec.command);
    cmd.args(&spec.args);
    if spec.clear_env {
        cmd.env_clear();
    } else {
        // What a service manager hands the daemon is the daemon's, not its payloads':
        // a payload must not notify systemd for the daemon's unit, feed its watchdog, or
        // take its socket-activation descriptors. A spec may still set them itself.
        for k in SERVICE_MANAGER_ENV {
            cmd.env_remove(k);
        }
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    if let Some(cwd) = &spec.cwd {
        cmd.cwd(cwd);
    }
    cmd.env("PADDOCK_SANDBOX_ID", spec.id.as_str());
    cmd.env("PADDOCK_LIFECYCLE_ID", lifecycle.to_string());
    if spec.network == Network::Isolated {
        cmd.unshare(Namespaces::NET);
    }
    if let (Some(j), Some(r)) = (&spec.jail, jail) {
        let (jail, ns) = crate::jail::proc_jail(j, r);
        cmd.unshare(ns);
        cmd.jail(jail);
    }
    cmd
}

/// What a start opens before it records or creates anything: the spec's
/// [`StdioTarget::File`] streams and its named network namespace. A target or namespace
/// that is not acceptable is refused then, when nothing has changed yet.
pub(crate) struct Prepared {
    /// The [`StdioTarget::File`] streams, by fd.
    pub(crate) files: StdioFiles,
    /// The named network namespace.
    pub(crate) netns: Option<OwnedFd>,
    /// What the jail's names and seccomp profile resolved to.
    pub(crate) jail: Option<crate::jail::Resolved>,
    /// The `io_max` devices, resolved to their numbers.
    pub(crate) io: Vec<paddock_cgroup::IoMax>,
}

/// `nsfs`'s `f_type`.
const NSFS_MAGIC: u64 = 0x6e73_6673;

/// Opens the named network namespace `/run/netns/<name>`: a missing one, or a file there
/// that is no namespace, is [`Error::InvalidSpec`] naming the field. (`/run/netns` is a
/// tmpfs of bind-mounted nsfs files: the open does not block.)
pub(crate) fn open_netns(name: &str) -> Result<OwnedFd, Error> {
    let path = format!("/run/netns/{name}");
    let fd = paddock_proc::netns_fd(name).map_err(|cause| {
        if cause.kind() == std::io::ErrorKind::NotFound {
            Error::InvalidSpec(format!(
                "network: no network namespace named {name:?} ({path} does not exist; create it with `ip netns add {name}`)"
            ))
        } else {
            Error::Io {
                op: format!("open network namespace {path}"),
                cause,
            }
        }
    })?;
    let fs = rustix::fs::fstatfs(&fd).map_err(|e| Error::Io {
        op: format!("fstatfs {path}"),
        cause: e.into(),
    })?;
    if fs.f_type as u64 != NSFS_MAGIC {
        return Err(Error::InvalidSpec(format!(
            "network: {path} is not a namespace (expected a file bind-mounted by `ip netns add {name}`)"
        )));
    }
    Ok(fd)
}

/// Sets the limits on `cg` and spawns the main process into it, with its standard streams
/// (log files from `logs`, files from `prepared`) and network namespace attached.
pub(crate) fn spawn(
    spec: &SandboxSpec,
    lifecycle: LifecycleId,
    cg: &Cgroup,
    logs: Option<&LogDir>,
    mut prepared: Prepared,
    new_session: bool,
) -> Result<Process, Error> {
    for lim in limits(&spec.limits)? {
        cg.set_limit(lim)?;
    }
    crate::resources::apply(cg, &spec.limits, &prepared.io)?;
    let mut cmd = command(spec, lifecycle, prepared.jail.as_ref());
    cmd.setsid(new_session);
    attach_stdio(&mut cmd, spec, lifecycle, logs, &mut prepared.files)?;
    match &spec.network {
        Network::Named(n) => {
            let fd = match prepared.netns.take() {
                Some(fd) => fd,
                None => open_netns(n)?,
            };
            cmd.join_namespace(fd);
        }
        Network::Veth(_) => {
            // Made by `net_create`, which always hands its namespace on.
            let fd = prepared.netns.take().ok_or_else(|| {
                Error::InvalidSpec("network: the sandbox's veth network was not made".into())
            })?;
            cmd.join_namespace(fd);
        }
        Network::Host | Network::Isolated => {}
    }
    cmd.spawn_in(cg.dir_fd()).map_err(|cause| Error::Spawn {
        command: spec.command.clone(),
        cause,
    })
}

/// Opens what the spec's standard streams name and puts them on fds 0-2. stdout and stderr
/// to the log share one open file (the first user keeps a duplicate for the next).
fn attach_stdio(
    cmd: &mut Command,
    spec: &SandboxSpec,
    lifecycle: LifecycleId,
    logs: Option<&LogDir>,
    files: &mut StdioFiles,
) -> Result<(), Error> {
    let id = spec.id.as_str();
    let open_log = || -> Result<File, Error> {
        let Some(logs) = logs else {
            return Err(Error::InvalidSpec(
                "log: stdio `log` needs a log directory".into(),
            ));
        };
        logs.create(id, lifecycle).map_err(|cause| Error::Io {
            op: format!("open log file {}", logs.path(id, lifecycle).display()),
            cause,
        })
    };
    let dup = |f: &File| {
        f.try_clone().map_err(|cause| Error::Io {
            op: "duplicate the log file descriptor".into(),
            cause,
        })
    };
    let mut log_file: Option<File> = None;
    for (fd, target) in [
        (0, &spec.stdio.stdin),
        (1, &spec.stdio.stdout),
        (2, &spec.stdio.stderr),
    ] {
        let s = match target {
            StdioTarget::Inherit => Stdio::Inherit,
            StdioTarget::Null => Stdio::Null,
            StdioTarget::Pipe => Stdio::Pipe,
            StdioTarget::Log => {
                let f = match log_file.take() {
                    Some(f) => f,
                    None => {
                        let f = open_log()?;
                        log_file = Some(dup(&f)?);
                        f
                    }
                };
                Stdio::from(f)
            }
            StdioTarget::File(p) => {
                // Opened before anything was created (`crate::stdio::open_files`).
                let f = files.0[fd as usize].take().ok_or_else(|| Error::Io {
                    op: format!("open {}", p.display()),
                    cause: std::io::Error::other("the file was not opened in advance"),
                })?;
                Stdio::from(f)
            }
        };
        cmd.fd(fd, s);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SandboxId;
    use std::ffi::OsStr;
    use std::path::Path;

    #[test]
    fn limits_are_the_specs_in_write_order() {
        assert!(limits(&Limits::default()).unwrap().is_empty());
        let all = Limits {
            memory_max: Some(512 << 20),
            memory_high: Some(256 << 20),
            cpus: Some(1.5),
            cpu_weight: Some(200),
            pids_max: Some(64),
            max_descendants: Some(3),
            max_depth: Some(2),
            ..Limits::default()
        };
        assert_eq!(
            limits(&all).unwrap(),
            vec![
                Limit::MaxDescendants(Max::Value(3)),
                Limit::MaxDepth(Max::Value(2)),
                Limit::MemoryMax(Max::Value(512 << 20)),
                Limit::MemoryHigh(Max::Value(256 << 20)),
                Limit::CpuMax(CpuMax::from_cpus(1.5).unwrap()),
                Limit::CpuWeight(200),
                Limit::PidsMax(Max::Value(64)),
            ]
        );
        let only_pids = Limits {
            pids_max: Some(0),
            ..Default::default()
        };
        assert_eq!(
            limits(&only_pids).unwrap(),
            vec![Limit::PidsMax(Max::Value(0))]
        );
        let bad = Limits {
            cpus: Some(-1.0),
            ..Default::default()
        };
        assert!(limits(&bad).is_err());
    }

    fn spec() -> SandboxSpec {
        let mut s = SandboxSpec::new(SandboxId::new("job-1").unwrap(), "/bin/sh", ["-c", "x"]);
        s.env.insert("A".into(), "1".into());
        // A spec cannot set the sandbox's own variables: paddock's win.
        s.env.insert("PADDOCK_SANDBOX_ID".into(), "forged".into());
        s
    }

    fn env_of(cmd: &Command) -> Vec<(String, Option<String>)> {
        cmd.get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect()
    }

    #[test]
    fn command_is_the_specs_command_line_and_environment() {
        let lc = LifecycleId::parse("00000000000000ff").unwrap();
        let cmd = command(&spec(), lc, None);
        assert_eq!(cmd.get_program(), OsStr::new("/bin/sh"));
        assert_eq!(
            cmd.get_args().collect::<Vec<_>>(),
            [OsStr::new("-c"), OsStr::new("x")]
        );
        assert!(!cmd.get_env_clear());
        assert_eq!(cmd.get_cwd(), None);
        let some = |k: &str, v: &str| (k.to_owned(), Some(v.to_owned()));
        let removed = SERVICE_MANAGER_ENV.map(|k| (k.to_owned(), None));
        assert_eq!(
            env_of(&cmd)[..removed.len()],
            removed,
            "the service manager's variables are not inherited"
        );
        assert_eq!(
            env_of(&cmd)[removed.len()..],
            [
                some("A", "1"),
                some("PADDOCK_SANDBOX_ID", "forged"),
                some("PADDOCK_SANDBOX_ID", "job-1"),
                some("PADDOCK_LIFECYCLE_ID", "00000000000000ff"),
            ],
            "the spec's variables first, paddock's last (the last setting wins)"
        );
        assert_eq!(cmd.get_unshare(), Namespaces::NONE, "host network");

        let mut s = spec();
        s.clear_env = true;
        s.cwd = Some("/tmp".into());
        s.network = Network::Isolated;
        let cmd = command(&s, lc, None);
        assert!(cmd.get_env_clear());
        assert_eq!(cmd.get_cwd(), Some(Path::new("/tmp")));
        assert_eq!(cmd.get_unshare(), Namespaces::NET);

        // A named namespace is joined, not made (the join needs its fd: `spawn`).
        s.network = Network::Named("blue".into());
        assert_eq!(command(&s, lc, None).get_unshare(), Namespaces::NONE);
    }

    /// A jail is attached with its namespaces, on top of the network's; without one,
    /// nothing is.
    #[test]
    fn command_carries_the_jail_and_its_namespaces() {
        let lc = LifecycleId::parse("0000000000000001").unwrap();
        let mut s = spec();
        assert!(command(&s, lc, None).get_jail().is_none());
        s.network = Network::Isolated;
        s.jail = Some(
            serde_json::from_value(serde_json::json!({
                "user": {"dynamic": true}, "namespaces": ["pid", "user"], "hostname": "h"
            }))
            .unwrap(),
        );
        s.validate().unwrap();
        let mut r = crate::jail::Resolved::default();
        r.set_dynamic(200_001);
        let cmd = command(&s, lc, Some(&r));
        assert_eq!(
            cmd.get_unshare(),
            Namespaces::NET
                | Namespaces::PID
                | Namespaces::MOUNT
                | Namespaces::UTS
                | Namespaces::USER
        );
        let j = cmd.get_jail().expect("the jail is attached");
        assert_eq!(
            j.user.as_ref().map(|u| (u.uid, u.gid)),
            Some((200_001, 200_001))
        );
        assert!(j.init && j.no_new_privs);
        // A spec with a jail but nothing resolved (cannot happen in a start) gets none.
        assert!(command(&s, lc, None).get_jail().is_none());
    }
}
