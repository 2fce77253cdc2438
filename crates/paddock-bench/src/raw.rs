//! The raw implementations — `floor`, `rmdir-retry-200ms`, `signal-wrapper` — run in a helper
//! subprocess (this binary with the hidden `__raw-helper` argument).
//!
//! They must wait for their own children, and paddock-proc's process-global reaper (started
//! by any paddock use in the benchmark process) reaps *every* child of the process it runs
//! in, so they cannot live in the main process. The helper never touches paddock code; it
//! is single-threaded (but for `floor-parallel`'s threads), does one operation per command line read from its stdin and answers
//! with one line on its stdout, so the main process interleaves it with the other
//! implementations in lock-step.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Signal, WaitId, WaitIdOptions, pidfd_open, pidfd_send_signal, waitid};

use crate::sys::{Prepared, spawn_into};
use crate::{LEAK_SCRIPT, WRAPPER_SCRIPT};

/// How long a payload may take to reach its steady state before the iteration fails.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// `rmdir-retry-200ms`: how often it retries `rmdir`, and for how long.
const RMDIR_RETRY_INTERVAL: Duration = Duration::from_millis(200);
const RMDIR_RETRY_BUDGET: Duration = Duration::from_secs(2);

/// Reads `cgroup.events` and waits on `POLLPRI` for it to change.
struct Events {
    file: File,
}

impl Events {
    fn open(cg: &Path) -> io::Result<Events> {
        Ok(Events {
            file: File::open(cg.join("cgroup.events"))?,
        })
    }

    fn populated(&self) -> io::Result<bool> {
        let mut buf = [0u8; 256];
        let n = rustix::io::pread(&self.file, &mut buf, 0)?;
        let text = std::str::from_utf8(&buf[..n]).unwrap_or("");
        Ok(!text.lines().any(|l| l.trim() == "populated 0"))
    }

    /// Waits for `populated 0` until `timeout`; returns whether it came.
    fn wait_unpopulated(&self, timeout: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.populated()? {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let ts = Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: left.subsec_nanos() as i64,
            };
            let mut fds = [PollFd::new(&self.file, PollFlags::PRI)];
            match poll(&mut fds, Some(&ts)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn kill_cgroup(cg: &Path) -> io::Result<()> {
    std::fs::write(cg.join("cgroup.kill"), "1")
}

fn reap(pidfd: &OwnedFd) -> io::Result<()> {
    waitid(WaitId::PidFd(pidfd.as_fd()), WaitIdOptions::EXITED)?;
    Ok(())
}

/// Processes directly in `cg` (the payloads here make no child cgroups).
pub fn procs(cg: &Path) -> Vec<i32> {
    std::fs::read_to_string(cg.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Waits until `cg` holds exactly `count` processes of which `sleeps` run `sleep`.
pub fn wait_ready(cg: &Path, count: usize, sleeps: usize) -> io::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let p = procs(cg);
        if p.len() == count && p.iter().filter(|&&pid| comm(pid) == "sleep").count() == sleeps {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "payload in {} did not get ready: processes {p:?}",
                cg.display()
            )));
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

struct Progs {
    true_prog: Prepared,
    sleep_prog: Prepared,
    leak_prog: Prepared,
    wrapper_prog: Prepared,
}

struct Helper {
    base: PathBuf,
    seq: u64,
    progs: Progs,
}

/// One sandbox of the raw implementations: its cgroup and main process.
struct RawBox {
    path: PathBuf,
    _dir: File,
    pidfd: OwnedFd,
}

fn create(base: &Path, seq: &mut u64, prog: &Prepared) -> io::Result<RawBox> {
    *seq += 1;
    let path = base.join(format!("c{seq}"));
    std::fs::create_dir(&path)?;
    let dir = File::open(&path)?;
    let (_pid, pidfd) = spawn_into(dir.as_fd(), prog)?;
    Ok(RawBox {
        path,
        _dir: dir,
        pidfd,
    })
}

impl Helper {
    fn create(&mut self, imp: &str, which: fn(&Progs) -> &Prepared) -> io::Result<RawBox> {
        create(&self.base.join(imp), &mut self.seq, which(&self.progs))
    }

    fn lifecycle(&mut self) -> io::Result<Duration> {
        let t0 = Instant::now();
        let b = self.create("floor", |p| &p.true_prog)?;
        reap(&b.pidfd)?;
        std::fs::remove_dir(&b.path)?;
        Ok(t0.elapsed())
    }

    fn leaked(&mut self, imp: &str) -> io::Result<Duration> {
        let b = self.create(imp, |p| &p.leak_prog)?;
        wait_ready(&b.path, 2, 2)?;
        std::thread::sleep(crate::SETTLE);
        let ev = Events::open(&b.path)?;
        let t0 = Instant::now();
        match imp {
            "floor" => {
                kill_cgroup(&b.path)?;
                if !ev.wait_unpopulated(Duration::from_secs(10))? {
                    return Err(io::Error::other("floor: cgroup did not empty in 10 s"));
                }
                reap(&b.pidfd)?;
                std::fs::remove_dir(&b.path)?;
            }
            "rmdir-retry-200ms" => {
                remove_retrying_rmdir(&b.path)?;
                reap(&b.pidfd)?;
            }
            other => return Err(io::Error::other(format!("leaked: unknown impl {other}"))),
        }
        Ok(t0.elapsed())
    }

    fn wrapper_stop(&mut self, imp: &str, grace: Duration) -> io::Result<Duration> {
        let b = self.create(imp, |p| &p.wrapper_prog)?;
        wait_ready(&b.path, 2, 1)?;
        std::thread::sleep(crate::SETTLE);
        let ev = Events::open(&b.path)?;
        let t0 = Instant::now();
        match imp {
            "floor" => {
                // Every process gets the signal (by pidfd, so a reused pid is never hit).
                for pid in procs(&b.path) {
                    if let Ok(fd) = pidfd_open(
                        rustix::process::Pid::from_raw(pid).expect("pid > 0"),
                        rustix::process::PidfdFlags::empty(),
                    ) {
                        let _ = pidfd_send_signal(&fd, Signal::TERM);
                    }
                }
            }
            "signal-wrapper" => {
                // Only the main process (the wrapper) is signalled.
                pidfd_send_signal(&b.pidfd, Signal::TERM)?;
            }
            other => {
                return Err(io::Error::other(format!(
                    "wrapper-stop: unknown impl {other}"
                )));
            }
        }
        if !ev.wait_unpopulated(grace)? {
            kill_cgroup(&b.path)?;
            if !ev.wait_unpopulated(Duration::from_secs(10))? {
                return Err(io::Error::other("cgroup did not empty in 10 s after kill"));
            }
        }
        reap(&b.pidfd)?;
        std::fs::remove_dir(&b.path)?;
        Ok(t0.elapsed())
    }

    /// `n` sandboxes started back to back, then a kill issued to all of them before any
    /// is waited for; per-operation start and stop latencies and both totals.
    fn burst(&mut self, n: usize) -> io::Result<String> {
        let mut boxes = Vec::with_capacity(n);
        let mut starts = Vec::with_capacity(n);
        let t_start = Instant::now();
        for _ in 0..n {
            let t0 = Instant::now();
            let b = self.create("floor", |p| &p.sleep_prog)?;
            starts.push(t0.elapsed().as_nanos() as u64);
            boxes.push(b);
        }
        let start_total = t_start.elapsed();
        let t_stop = Instant::now();
        let mut requested = Vec::with_capacity(n);
        for b in &boxes {
            requested.push(Instant::now());
            kill_cgroup(&b.path)?;
        }
        let mut stops = Vec::with_capacity(n);
        for (b, t0) in boxes.iter().zip(&requested) {
            let ev = Events::open(&b.path)?;
            if !ev.wait_unpopulated(Duration::from_secs(10))? {
                return Err(io::Error::other("burst: cgroup did not empty in 10 s"));
            }
            reap(&b.pidfd)?;
            std::fs::remove_dir(&b.path)?;
            stops.push(t0.elapsed().as_nanos() as u64);
        }
        let stop_total = t_stop.elapsed();
        Ok(format!(
            "{} {} {} {}",
            start_total.as_nanos(),
            stop_total.as_nanos(),
            join(&starts),
            join(&stops)
        ))
    }

    /// `floor-parallel`: the floor's burst on `threads` threads, each starting its share
    /// of the `n` sandboxes back to back (from one common start), then, after all have
    /// started, killing its own and waiting for each to be gone. Shows how far the kernel's
    /// own work (cgroup `mkdir`/`rmdir`, clone, exit) scales with threads. The answer has
    /// the floor's fields plus, per start, its completion since the burst's start.
    fn burst_parallel(&mut self, n: usize, threads: usize) -> io::Result<String> {
        let threads = threads.clamp(1, n.max(1));
        let base = self.base.join("floor-parallel");
        self.seq += 1;
        let round = self.seq;
        let start_barrier = std::sync::Barrier::new(threads);
        let stop_barrier = std::sync::Barrier::new(threads + 1);
        let t_start = Instant::now();
        type Out = io::Result<(Vec<u64>, Vec<u64>, Vec<u64>)>;
        let (results, start_total, stop_total) = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (base, start_barrier, stop_barrier) =
                        (&base, &start_barrier, &stop_barrier);
                    let share = n / threads + usize::from(t < n % threads);
                    sc.spawn(move || -> Out {
                        // Each thread its own program: `Prepared` holds raw pointers. Every
                        // thread reaches every barrier, also after an error.
                        let prog = Prepared::new("/bin/sleep", &["1000"]);
                        let mut seq = 0;
                        let base = base.join(format!("r{round}t{t}"));
                        let mut made = std::fs::create_dir(&base);
                        start_barrier.wait();
                        let mut boxes = Vec::with_capacity(share);
                        let (mut starts, mut since) = (vec![], vec![]);
                        for _ in 0..share {
                            if made.is_err() {
                                break;
                            }
                            let t0 = Instant::now();
                            match create(&base, &mut seq, &prog) {
                                Ok(b) => boxes.push(b),
                                Err(e) => made = Err(e),
                            }
                            starts.push(t0.elapsed().as_nanos() as u64);
                            since.push(t_start.elapsed().as_nanos() as u64);
                        }
                        // Every thread's starts are done before any stop begins.
                        stop_barrier.wait();
                        stop_barrier.wait();
                        let mut requested = Vec::with_capacity(boxes.len());
                        for b in &boxes {
                            requested.push(Instant::now());
                            kill_cgroup(&b.path)?;
                        }
                        let mut stops = Vec::with_capacity(boxes.len());
                        for (b, t0) in boxes.iter().zip(&requested) {
                            let ev = Events::open(&b.path)?;
                            if !ev.wait_unpopulated(Duration::from_secs(10))? {
                                return Err(io::Error::other(
                                    "floor-parallel: cgroup did not empty in 10 s",
                                ));
                            }
                            reap(&b.pidfd)?;
                            std::fs::remove_dir(&b.path)?;
                            stops.push(t0.elapsed().as_nanos() as u64);
                        }
                        made?;
                        std::fs::remove_dir(&base)?;
                        Ok((starts, since, stops))
                    })
                })
                .collect();
            stop_barrier.wait();
            let start_total = t_start.elapsed();
            let t_stop = Instant::now();
            stop_barrier.wait();
            let results: Vec<Out> = handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("a thread panicked")))
                })
                .collect();
            (results, start_total, t_stop.elapsed())
        });
        let (mut starts, mut since, mut stops) = (vec![], vec![], vec![]);
        for r in results {
            let (a, b, c) = r?;
            starts.extend(a);
            since.extend(b);
            stops.extend(c);
        }
        Ok(format!(
            "{} {} {} {} {}",
            start_total.as_nanos(),
            stop_total.as_nanos(),
            join(&starts),
            join(&stops),
            join(&since)
        ))
    }
}

/// Durations in ns, comma-separated (the helper's answer format).
fn join(v: &[u64]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// `rmdir-retry-200ms`'s removal: `rmdir`; on `EBUSY` write `cgroup.kill` once, then
/// retry `rmdir` every 200 ms for up to 2 s.
pub fn remove_retrying_rmdir(cg: &Path) -> io::Result<()> {
    match std::fs::remove_dir(cg) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
        Err(e) => return Err(e),
    }
    let _ = kill_cgroup(cg);
    let deadline = Instant::now() + RMDIR_RETRY_BUDGET;
    loop {
        std::thread::sleep(RMDIR_RETRY_INTERVAL);
        match std::fs::remove_dir(cg) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reaps every exited child (between operations, only orphans remain to be reaped).
fn reap_orphans() {
    while let Ok(Some(_)) = waitid(WaitId::All, WaitIdOptions::EXITED | WaitIdOptions::NOHANG) {}
}

/// The helper's main loop. `base` is the cgroup directory its sandboxes are created under.
pub fn helper_main(base: &Path) -> io::Result<()> {
    // Keep the pipes to the benchmark on close-on-exec descriptors and put /dev/null on
    // 0, 1 and 2, so no payload (an escapee in particular) holds the pipes open.
    let input = rustix::io::fcntl_dupfd_cloexec(std::io::stdin(), 3)?;
    let output = rustix::io::fcntl_dupfd_cloexec(std::io::stdout(), 3)?;
    let null = File::options().read(true).write(true).open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    rustix::stdio::dup2_stdout(&null)?;
    rustix::stdio::dup2_stderr(&null)?;
    drop(null);
    let input = BufReader::new(File::from(input));
    let mut output = File::from(output);
    // Escapees of the floor's sandboxes are reparented here rather than to the benchmark
    // (a subreaper, for paddock), and reaped after each operation, untimed.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
    let mut h = Helper {
        base: base.to_path_buf(),
        seq: 0,
        progs: Progs {
            true_prog: Prepared::new("/bin/true", &[]),
            sleep_prog: Prepared::new("/bin/sleep", &["1000"]),
            leak_prog: Prepared::new("/bin/sh", &["-c", LEAK_SCRIPT]),
            wrapper_prog: Prepared::new("/bin/bash", &["-c", WRAPPER_SCRIPT]),
        },
    };
    for line in input.lines() {
        let line = line?;
        let w: Vec<&str> = line.split_whitespace().collect();
        let ns = |r: io::Result<Duration>| r.map(|d| d.as_nanos().to_string());
        let res = match w.as_slice() {
            ["lifecycle", "floor"] => ns(h.lifecycle()),
            ["leaked", imp] => ns(h.leaked(imp)),
            ["wrapper-stop", imp, grace_ms] => {
                let g = Duration::from_millis(grace_ms.parse().unwrap_or(10_000));
                ns(h.wrapper_stop(imp, g))
            }
            ["burst", n] => h.burst(n.parse().unwrap_or(1)),
            ["burst-parallel", n, threads] => {
                h.burst_parallel(n.parse().unwrap_or(1), threads.parse().unwrap_or(1))
            }
            ["quit"] => break,
            _ => Err(io::Error::other(format!("unknown command {line:?}"))),
        };
        reap_orphans();
        let reply = match res {
            Ok(s) => format!("ok {s}\n"),
            Err(e) => format!("err {}\n", e.to_string().replace('\n', " ")),
        };
        output.write_all(reply.as_bytes())?;
    }
    Ok(())
}
