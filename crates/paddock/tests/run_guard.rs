//! A foreground `paddock run` and its sandbox die together: SIGKILL the run at random
//! moments of its lifecycle (while it starts, while the sandbox runs, while it stops), and
//! after each kill nothing of the sandbox is left — no process, no cgroup — within the
//! bound (100 ms), measured from the kill. Also a SIGKILL of paddock's whole process group
//! (the guardian runs in a session of its own).
//!
//! This binary has one test: the test process makes itself a child subreaper, so it
//! inherits the killed run's children (the guardian, the sandbox's processes) and can check
//! that they exit and reap them; a second test in the same process could have its
//! children's statuses taken.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The bound the guardian must meet: from the SIGKILL of the run until the sandbox's
/// cgroup is empty and removed.
const BOUND: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Moment {
    /// Somewhere in the first few tens of milliseconds: paddock starting, the guardian
    /// arming, the cgroup being made, the payload being spawned.
    Starting,
    /// The payload runs.
    Running,
    /// A SIGTERM began the graceful stop; the payload ignores it (grace period 5 s).
    Stopping,
    /// The payload runs; the SIGKILL goes to paddock's whole process group.
    ProcessGroup,
}

/// A small xorshift generator, seeded from the clock (printed, for a rerun).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn set_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) has no memory arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "prctl: {}", std::io::Error::last_os_error());
}

/// Reaps every child left to this process (the run's orphans); panics if one is still
/// running after `timeout`. Returns how many were reaped.
fn reap_inherited(timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    let mut n = 0;
    loop {
        let mut st = 0;
        // SAFETY: waitpid with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if pid > 0 {
            n += 1;
            continue;
        }
        if pid < 0 {
            // ECHILD: no child left at all.
            return n;
        }
        if Instant::now() > deadline {
            let kids =
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", std::process::id()))
                    .unwrap_or_default();
            panic!("children of the killed run still running after {timeout:?}: {kids}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The sandbox cgroups of `id` under the managed root.
fn sandbox_cgroups(root: &Path, id: &str) -> Vec<String> {
    let prefix = format!("{id}@");
    std::fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

fn guardian_of(run: i32) -> Option<i32> {
    let tasks = std::fs::read_dir(format!("/proc/{run}/task")).ok()?;
    for t in tasks.flatten() {
        let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        for k in kids
            .split_whitespace()
            .filter_map(|k| k.parse::<i32>().ok())
        {
            if std::fs::read_to_string(format!("/proc/{k}/comm"))
                .is_ok_and(|c| c.trim() == "paddock-guard")
            {
                return Some(k);
            }
        }
    }
    None
}

fn wait_file(p: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !p.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", p.display());
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn spawn_run(w: &World, id: &str, ready: &Path) -> Child {
    // Ignores SIGTERM, forks a background process that double-forks and calls setsid (so it
    // is neither in paddock's process group nor a child of the main process).
    let script = format!(
        "trap '' TERM; setsid sh -c 'trap \"\" TERM; sleep 300' & (sleep 300 &); echo > {}; while :; do sleep 1; done",
        ready.display()
    );
    Command::new(BIN)
        .args(["run", "--cgroup-root"])
        .arg(&w.cgroot)
        .args([
            "--name",
            id,
            "--stop-timeout",
            "5s",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .env_remove("PADDOCK_CGROUP_ROOT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap()
}

#[test]
fn sigkill_of_the_run_at_any_moment_kills_the_sandbox() {
    let Some(w) = world("run_guard_sigkill_at_any_moment") else {
        return;
    };
    set_subreaper();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("run_guard: seed {seed}");
    let mut rng = Rng(seed);
    let moments = [
        Moment::Starting,
        Moment::Running,
        Moment::Stopping,
        Moment::ProcessGroup,
    ];
    let mut figures: Vec<(Moment, bool, Duration)> = Vec::new();
    // How long a run takes until its payload runs (the longest seen so far): kills
    // `Starting` land anywhere in it.
    let mut startup = Duration::from_millis(40);
    for i in 0..32 {
        let moment = moments[i % moments.len()];
        let id = format!("g{i}");
        let ready = w.tmp.path().join(format!("ready-{i}"));
        let spawned = Instant::now();
        let mut run = spawn_run(&w, &id, &ready);
        let pid = run.id() as i32;
        match moment {
            Moment::Starting => {
                let us = rng.below(startup.as_micros() as u64);
                std::thread::sleep(Duration::from_micros(us));
            }
            Moment::Running | Moment::ProcessGroup => {
                wait_file(&ready, Duration::from_secs(20));
                startup = startup.max(spawned.elapsed());
                std::thread::sleep(Duration::from_micros(rng.below(20_000)));
            }
            Moment::Stopping => {
                wait_file(&ready, Duration::from_secs(20));
                // SAFETY: kill(2) on our own child.
                assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
                std::thread::sleep(Duration::from_micros(rng.below(30_000)));
            }
        }
        let had_sandbox = !sandbox_cgroups(&w.cgroot, &id).is_empty();
        let guardian = guardian_of(pid);
        let target = if moment == Moment::ProcessGroup {
            -pid
        } else {
            pid
        };
        // SAFETY: kill(2) on our own child (or its process group).
        assert_eq!(unsafe { libc::kill(target, libc::SIGKILL) }, 0);
        let t0 = Instant::now();
        // Measured: until no process is in the managed root and no cgroup of the sandbox
        // is left (polled tightly; the figure is what is asserted).
        let took = loop {
            if !paddock_testutil::populated(&w.cgroot) && sandbox_cgroups(&w.cgroot, &id).is_empty()
            {
                break t0.elapsed();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "iteration {i} ({moment:?}): sandbox still there 10 s after the SIGKILL: cgroups {:?}",
                sandbox_cgroups(&w.cgroot, &id)
            );
            std::thread::sleep(Duration::from_micros(200));
        };
        let st = run.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&st),
            Some(libc::SIGKILL),
            "iteration {i}: {st:?}"
        );
        // The guardian exits once it is done (and the sandbox's processes are gone): every
        // orphan of the run is reaped here.
        reap_inherited(Duration::from_secs(10));
        if let Some(g) = guardian {
            assert!(
                !paddock_testutil::pid_alive(g),
                "iteration {i}: the guardian {g} lives on"
            );
        }
        assert_eq!(
            w.procs_in_subtree(),
            Vec::<i32>::new(),
            "iteration {i} ({moment:?}): processes left in the test's cgroup subtree"
        );
        figures.push((moment, had_sandbox, took));
    }
    let mut with: Vec<Duration> = figures
        .iter()
        .filter(|(_, had, _)| *had)
        .map(|(_, _, t)| *t)
        .collect();
    with.sort();
    eprintln!(
        "run_guard: {} kills, {} with a sandbox cgroup present at the kill; time to nothing left: \
         median {:?}, p90 {:?}, max {:?}; per kill: {:?}",
        figures.len(),
        with.len(),
        with.get(with.len() / 2),
        with.get(with.len() * 9 / 10),
        with.last(),
        figures
            .iter()
            .map(|(m, had, t)| format!(
                "{m:?}{}:{:.1}ms",
                if *had { "" } else { "(none)" },
                t.as_secs_f64() * 1e3
            ))
            .collect::<Vec<_>>()
    );
    assert!(
        with.len() >= figures.len() / 2,
        "most kills hit a live sandbox: {} of {}",
        with.len(),
        figures.len()
    );
    for (i, (m, _, t)) in figures.iter().enumerate() {
        assert!(
            *t <= BOUND,
            "iteration {i} ({m:?}): the sandbox outlived its run by {t:?} (bound {BOUND:?}); all: {figures:?}"
        );
    }
    w.assert_no_leaks();
}
