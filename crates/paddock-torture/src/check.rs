//! Leak checks that do not trust paddock: they read `/proc` and walk the cgroup tree
//! directly, and share no code with `paddock-cgroup`. [`after_stop`] is the check after
//! each stop, [`leftovers_under`] the final walk of a run, and [`check_id_containment`]
//! the check the property tests make for one sandbox ID.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use paddock_supervisor::{Network, SandboxId, SandboxSpec, Supervisor, cgroup_name};

/// A live process as `/proc` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProcSeen {
    /// PID.
    pub pid: i32,
    /// `comm`.
    pub comm: String,
    /// State letter from `/proc/<pid>/stat`.
    pub state: String,
    /// The cgroup v2 path from `/proc/<pid>/cgroup`.
    pub cgroup: String,
}

/// The state letter of a process, or `None` if it does not exist.
pub fn proc_state(pid: i32) -> Option<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = s.rsplit_once(')')?;
    rest.split_whitespace().next().map(str::to_owned)
}

/// Whether a process exists and is neither a zombie nor dead.
pub fn alive(pid: i32) -> bool {
    proc_state(pid).is_some_and(|s| s != "Z" && s != "X")
}

/// The cgroup v2 path (`0::` line) of a process.
pub fn proc_cgroup(pid: i32) -> Option<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// Whether the environment of `pid` holds exactly `key=value`.
pub fn environ_has(pid: i32, key: &str, value: &str) -> bool {
    let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let want = format!("{key}={value}");
    env.split(|b| *b == 0).any(|kv| kv == want.as_bytes())
}

fn describe(pid: i32) -> ProcSeen {
    ProcSeen {
        pid,
        comm: fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        state: proc_state(pid).unwrap_or_default(),
        cgroup: proc_cgroup(pid).unwrap_or_default(),
    }
}

/// Every PID in `/proc`.
pub fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// PIDs read from a payload's PID file.
pub fn reported_pids(file: &Path) -> Vec<i32> {
    fs::read_to_string(file)
        .map(|s| {
            s.lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Live processes of the sandbox tagged `tag`: those of `reported` (the payload's own PID
/// list) and any other process in `/proc` whose environment carries `TORTURE_TAG=<tag>`.
/// A process is only counted when it is still there after `confirm` (a task that is past
/// its cgroup exit but not yet a zombie is not a leak; one that is still alive later is).
pub fn tagged_survivors(tag: &str, reported: &[i32], confirm: Duration) -> Vec<ProcSeen> {
    let scan = || -> Vec<i32> {
        let mut v: Vec<i32> = reported
            .iter()
            .copied()
            .chain(all_pids())
            .filter(|&p| alive(p) && environ_has(p, "TORTURE_TAG", tag))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let first = scan();
    if first.is_empty() {
        return first.into_iter().map(describe).collect();
    }
    std::thread::sleep(confirm);
    first
        .into_iter()
        .filter(|&p| alive(p) && environ_has(p, "TORTURE_TAG", tag))
        .map(describe)
        .collect()
}

/// Live processes whose cgroup v2 path is `hier` or below it.
pub fn procs_under_hierarchy(hier: &str) -> Vec<ProcSeen> {
    let prefix = format!("{}/", hier.trim_end_matches('/'));
    all_pids()
        .into_iter()
        .filter(|&p| {
            proc_cgroup(p).is_some_and(|c| c == hier || c.starts_with(&prefix)) && alive(p)
        })
        .map(describe)
        .collect()
}

/// Every directory below `path` (not `path` itself), deepest last.
pub fn subdirs(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(d) = fs::read_dir(path) {
        for e in d.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(e.path());
                out.extend(subdirs(&e.path()));
            }
        }
    }
    out
}

/// Kills every process under the cgroup at `path` (thawing first) and removes the subtree
/// bottom-up, retrying until `budget` passes. Independent of `paddock-cgroup`; used to
/// clean up after a leak and at the end of a run.
pub fn destroy_tree(path: &Path, budget: Duration) -> io::Result<()> {
    let deadline = Instant::now() + budget;
    loop {
        if !path.exists() {
            return Ok(());
        }
        let mut dirs = vec![path.to_path_buf()];
        dirs.extend(subdirs(path));
        for d in &dirs {
            let _ = fs::write(d.join("cgroup.freeze"), "0");
        }
        for d in &dirs {
            if fs::write(d.join("cgroup.kill"), "1").is_err()
                && let Ok(procs) = fs::read_to_string(d.join("cgroup.procs"))
            {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // SAFETY: kill(2) with a PID read from cgroup.procs; at worst ESRCH.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        let mut err = None;
        for d in dirs.iter().rev() {
            if let Err(e) = fs::remove_dir(d)
                && e.kind() != io::ErrorKind::NotFound
            {
                err = Some(e);
            }
        }
        match err {
            None => return Ok(()),
            Some(e) if Instant::now() >= deadline => return Err(e),
            Some(_) => {}
        }
    }
}

/// SIGKILLs a process by pidfd if it still carries `TORTURE_TAG=<tag>` (cleanup after a
/// leak was found).
pub fn kill_tagged(pid: i32, tag: &str) {
    if !environ_has(pid, "TORTURE_TAG", tag) {
        return;
    }
    // SAFETY: pidfd_open with a plain PID and no flags; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        return;
    }
    if environ_has(pid, "TORTURE_TAG", tag) {
        // SAFETY: fd is a pidfd we own; a null siginfo is allowed.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
    // SAFETY: fd is ours and closed once.
    unsafe { libc::close(fd) };
}

/// The cgroup directories of sandbox `id` directly under `root`: those named
/// `<id>@<lifecycle>`, of any lifecycle.
pub fn sandbox_cgroups(root: &Path, id: &str) -> Vec<PathBuf> {
    let prefix = format!("{id}{}", paddock_supervisor::CGROUP_SEPARATOR);
    let mut found: Vec<PathBuf> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    found.sort();
    found
}

/// The checks after a stop of sandbox `id`, tagged `tag` (see [`crate::payloads`]), whose
/// cgroups are directly under `root` and whose payload recorded its PIDs in `pidfile`: no
/// cgroup directory of the sandbox under the root ([`sandbox_cgroups`]), no live process
/// tagged with the sandbox. Returns what was found, as (`cgroup` or `process`,
/// description); anything found is cleaned up so the run goes on. Blocking.
pub fn after_stop(root: &Path, id: &str, tag: &str, pidfile: &Path) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    for dir in sandbox_cgroups(root, id) {
        let sub = subdirs(&dir).len();
        found.push((
            "cgroup",
            format!(
                "{} exists after the stop ({sub} descendants)",
                dir.display()
            ),
        ));
        let _ = destroy_tree(&dir, Duration::from_secs(10));
    }
    let reported = reported_pids(pidfile);
    for p in tagged_survivors(tag, &reported, Duration::from_millis(100)) {
        found.push((
            "process",
            format!(
                "pid {} ({}, state {}, cgroup {}) alive after the stop{}",
                p.pid,
                p.comm,
                p.state,
                p.cgroup,
                if reported.contains(&p.pid) {
                    " (reported by the payload)"
                } else {
                    " (found by /proc environ scan)"
                }
            ),
        ));
        kill_tagged(p.pid, tag);
    }
    found
}

/// The children of this process (`/proc/self/task/*/children`: an orphan is handed to one
/// of the subreaper's threads) whose cgroup v2 path is a cgroup of sandbox `id` — `<hier>/<id>@…`
/// or below it, `hier` being the root's hierarchy path — zombie or not. After a stop
/// none may be left: a stop is not finished until the zombies it made are reaped.
pub fn own_children_of_sandbox(hier: &str, id: &str) -> Vec<ProcSeen> {
    let prefix = format!(
        "{}/{id}{}",
        hier.trim_end_matches('/'),
        paddock_supervisor::CGROUP_SEPARATOR
    );
    let mut pids = Vec::new();
    for t in fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(s) = fs::read_to_string(t.path().join("children")) {
            pids.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids.into_iter()
        .filter(|&p| proc_cgroup(p).is_some_and(|c| c.starts_with(&prefix)))
        .map(describe)
        .collect()
}

/// The descriptors of this process that refer to `path` (`/proc/self/fd/*` links).
pub fn own_fds_on(path: &Path) -> Vec<i32> {
    fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| fs::read_link(e.path()).is_ok_and(|l| l == path))
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The final walk of a run: every directory below `root` and every live process whose
/// cgroup is the root's hierarchy path `hier` or below it. A process still exiting gets
/// 200 ms; one still there afterwards is returned. Blocking.
pub fn leftovers_under(root: &Path, hier: &str) -> (Vec<PathBuf>, Vec<ProcSeen>) {
    let mut procs = procs_under_hierarchy(hier);
    if !procs.is_empty() {
        std::thread::sleep(Duration::from_millis(200));
        procs = procs_under_hierarchy(hier);
    }
    (subdirs(root), procs)
}

/// The checks the property tests make for one candidate ID: either [`SandboxId::new`]
/// rejects it, or starting a sandbox with it creates its cgroup directly under `root`
/// (the created directory's parent is the root) and stopping it removes it. Returns a
/// description of the violation, if any.
pub async fn check_id_containment(sup: &Supervisor, candidate: &str) -> Result<bool, String> {
    let Ok(id) = SandboxId::new(candidate) else {
        return Ok(false);
    };
    let root = sup.root().path().to_path_buf();
    let before = subdirs(&root);
    let mut spec = SandboxSpec::new(id.clone(), "/bin/sleep", ["30"]);
    spec.network = Network::Host;
    let started = sup
        .start(spec)
        .await
        .map_err(|e| format!("start {candidate:?}: {e}"))?;
    let path = started.info.cgroup_path.clone();
    let made: Vec<PathBuf> = subdirs(&root)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    let mut problem = None;
    if path.parent() != Some(root.as_path()) {
        problem = Some(format!(
            "{candidate:?}: cgroup path {} is not directly under the root {}",
            path.display(),
            root.display()
        ));
    } else if made != vec![path.clone()] {
        problem = Some(format!(
            "{candidate:?}: start created {made:?}, expected exactly {}",
            path.display()
        ));
    } else if !path.is_dir() {
        problem = Some(format!("{candidate:?}: {} does not exist", path.display()));
    } else if proc_cgroup(started.info.pid.unwrap_or(0)).is_none_or(|c| {
        !c.ends_with(&format!(
            "/{}",
            cgroup_name(id.as_str(), started.info.lifecycle)
        ))
    }) {
        problem = Some(format!(
            "{candidate:?}: the main process is not in its own cgroup"
        ));
    }
    let stop = sup.kill(&id, Some(started.info.lifecycle)).await;
    let _ = sup.forget(&id);
    if let Some(p) = problem {
        return Err(p);
    }
    stop.map_err(|e| format!("kill {candidate:?}: {e}"))?;
    if path.exists() {
        return Err(format!(
            "{candidate:?}: {} left after the stop",
            path.display()
        ));
    }
    Ok(true)
}
