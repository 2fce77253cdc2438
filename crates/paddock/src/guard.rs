//! The guardian of a foreground `paddock run`: a sandbox never outlives its run.
//!
//! Before it starts any thread or creates anything, `paddock run` forks a copy of itself
//! ([`paddock_supervisor::fork_helper`]: no `execve`, so none of the binary's start-up is
//! paid twice) as a small helper process, the guardian, outside the sandbox (in paddock's
//! own cgroup) and in a session of its own, so neither Ctrl-C nor a signal to paddock's
//! process group reaches it (it also ignores SIGINT, SIGTERM, SIGHUP and SIGQUIT), with
//! stdin and stdout on `/dev/null` and the run's stderr for its log. Before the sandbox's
//! cgroup is made, the run tells the guardian its name and waits for the acknowledgement.
//! The guardian holds a pidfd of the run and the read end of a pipe only the run writes
//! to; when either says the run is gone (it died for any reason, SIGKILL included, at any
//! moment) before the run said `done`, the guardian kills everything in that cgroup
//! (`cgroup.kill`, waiting for `populated 0` on `cgroup.events`), removes it, logs a WARN
//! and exits. After a normal end the run says `done`, the guardian exits at once, and the
//! run reaps it before exiting itself.
//!
//! The guardian only touches the cgroup it was told about, and only when its owner tag is
//! the run's (an untagged one only when it is empty: the run died between `mkdir` and the
//! tag). If the run and the guardian die together (both SIGKILLed, say), the cgroup is left
//! with the run's owner tag, `pid:<pid>:<start time>:<pid namespace>`; the next
//! `paddock run` on that root, or a daemon's next reconciliation, sees that the owner is
//! gone and removes it (see the cgroup layer's `owner` module).
//!
//! Protocol (one line each, over two pipes): the guardian says `ready` once armed; the run
//! says `watch <cgroup name>` and the guardian answers `ok`; the run says `done` when the
//! sandbox is gone.

use std::cell::RefCell;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use paddock_supervisor::{CgroupName, KillOptions, Process, RemoveOptions, Root};
use paddock_supervisor::{HookError, HookErrorKind, Hooks, Persisting, Record};
use rustix::event::{PollFd, PollFlags};
use rustix::pipe::{PipeFlags, pipe_with};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;

/// How long the run waits for the guardian to arm itself or to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Deadline of the guardian's kill (a process in uninterruptible sleep can hold it up).
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the guardian is given at its start.
struct GuardArgs {
    /// The managed root (the run's handle: its fd is valid in the fork too).
    root: Root,
    /// The run's owner tag.
    owner: String,
    /// The run's PID (the guardian's parent).
    run_pid: i32,
}

/// A guardian forked but not yet known to be armed (see [`Pending::armed`]).
pub struct Pending {
    process: Process,
    tx: OwnedFd,
    rx: OwnedFd,
}

/// The run's handle on its guardian.
pub struct Guardian {
    process: Arc<Process>,
    io: tokio::sync::Mutex<(pipe::Sender, BufReader<pipe::Receiver>)>,
    released: Arc<AtomicBool>,
}

/// Forks the guardian. Must be called while this process has one thread (before the
/// async runtime starts); then [`Pending::armed`] waits, in the runtime, until it is
/// armed.
pub fn fork(root: &Root, owner: &str) -> Result<Pending> {
    let (to_guard_rx, to_guard_tx) =
        pipe_with(PipeFlags::CLOEXEC).context("make the pipe to the guardian")?;
    let (from_guard_rx, from_guard_tx) =
        pipe_with(PipeFlags::CLOEXEC).context("make the pipe from the guardian")?;
    let args = GuardArgs {
        root: root.clone(),
        owner: owner.to_owned(),
        run_pid: std::process::id() as i32,
    };
    // The run's ends: taken (and so closed) in the guardian, which must not hold the write
    // end of its own input (it would never see the run's end of it).
    let ours = RefCell::new(Some((to_guard_tx, from_guard_rx)));
    let process = paddock_supervisor::fork_helper(|| {
        drop(ours.borrow_mut().take());
        main(args, to_guard_rx, from_guard_tx)
    })
    .context("start the guardian (a fork of paddock run)")?;
    let (tx, rx) = ours
        .into_inner()
        .context("the run's ends of the guardian's pipes")?;
    Ok(Pending { process, tx, rx })
}

impl Pending {
    /// Waits until the guardian is armed (it says `ready`); on any other outcome kills and
    /// reaps it and fails: no sandbox is started without a guardian.
    pub async fn armed(self) -> Result<Arc<Guardian>> {
        let tx = pipe::Sender::from_owned_fd(self.tx).context("the guardian's input pipe")?;
        let rx = pipe::Receiver::from_owned_fd(self.rx).context("the guardian's output pipe")?;
        let g = Guardian {
            process: Arc::new(self.process),
            io: tokio::sync::Mutex::new((tx, BufReader::new(rx))),
            released: Arc::new(AtomicBool::new(false)),
        };
        {
            let mut io = g.io.lock().await;
            let line = read_answer(&mut io.1).await;
            if line.as_deref() != Ok("ready") {
                drop(io);
                // Gone already, or hung: it must not outlive this failure.
                let _ = g.process.kill();
                let status = g.process.wait().await;
                bail!(
                    "the guardian (pid {}) did not arm itself ({}; {status}); paddock run does not \
                     start a sandbox it cannot guarantee to remove",
                    g.process.pid(),
                    line.err().unwrap_or_else(|| "unexpected answer".into())
                );
            }
        }
        let g = Arc::new(g);
        // A guardian that dies early is not fatal (the sandbox runs on), but it must not
        // go unnoticed: without it a killed paddock leaves the sandbox to the next reclaim.
        let (p, released) = (g.process.clone(), g.released.clone());
        tokio::spawn(async move {
            let st = p.wait().await;
            if !released.load(SeqCst) {
                tracing::warn!(pid = p.pid(), status = %st, "the guardian of this paddock run exited early: if paddock is killed now, its sandbox stays until a later paddock run or the daemon on this root reclaims it");
            }
        });
        Ok(g)
    }
}

impl Guardian {
    /// The guardian's PID.
    pub fn pid(&self) -> i32 {
        self.process.pid()
    }

    /// Tells the guardian the name of the sandbox's cgroup (before it is made) and waits
    /// for the acknowledgement.
    pub async fn watch(&self, cgroup: &str) -> Result<(), String> {
        let mut io = self.io.lock().await;
        let (tx, rx) = &mut *io;
        tx.write_all(format!("watch {cgroup}\n").as_bytes())
            .await
            .map_err(|e| format!("tell the guardian (pid {}): {e}", self.pid()))?;
        match read_answer(rx).await {
            Ok(l) if l == "ok" => Ok(()),
            Ok(l) => Err(format!("the guardian (pid {}) answered {l:?}", self.pid())),
            Err(e) => Err(format!("the guardian (pid {}): {e}", self.pid())),
        }
    }

    /// The sandbox is gone: tells the guardian so and waits for it to exit (it is reaped
    /// here, so paddock leaves no child behind).
    pub async fn release(&self) {
        self.released.store(true, SeqCst);
        {
            let mut io = self.io.lock().await;
            // A guardian that is gone already cannot read it; its exit is awaited below.
            let _ = io.0.write_all(b"done\n").await;
        }
        if tokio::time::timeout(ANSWER_TIMEOUT, self.process.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                pid = self.pid(),
                "the guardian did not exit after `done`; killing it"
            );
            let _ = self.process.kill();
            self.process.wait().await;
        }
    }
}

async fn read_answer(rx: &mut BufReader<pipe::Receiver>) -> Result<String, String> {
    let mut line = String::new();
    match tokio::time::timeout(ANSWER_TIMEOUT, rx.read_line(&mut line)).await {
        Err(_) => Err(format!("no answer within {ANSWER_TIMEOUT:?}")),
        Ok(Err(e)) => Err(format!("read its answer: {e}")),
        Ok(Ok(0)) => Err("it exited".into()),
        Ok(Ok(_)) => Ok(line.trim_end().to_owned()),
    }
}

/// The run's supervisor hooks: the guardian learns each cgroup's name before it is made.
pub struct GuardHooks(pub Arc<Guardian>);

impl Hooks for GuardHooks {
    fn before_create(&self, rec: &Record) -> Persisting {
        let (g, name) = (self.0.clone(), rec.cgroup.clone());
        Box::pin(async move {
            g.watch(&name)
                .await
                .map_err(|e| HookError::new(HookErrorKind::Other, e))
        })
    }
}

/// The guardian's main, in the forked copy: returns the process's exit code.
fn main(a: GuardArgs, input: OwnedFd, output: OwnedFd) -> i32 {
    let _ = rustix::thread::set_name(c"paddock-guard");
    match guard(a, input, output) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "paddock run's guardian failed");
            1
        }
    }
}

fn guard(a: GuardArgs, input: OwnedFd, output: OwnedFd) -> Result<()> {
    // Out of the run's session and process group (Ctrl-C, job control), and off the run's
    // stdin and stdout (a pipe into or out of the run must close when the run ends).
    rustix::process::setsid().context("setsid")?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("open /dev/null")?;
    rustix::stdio::dup2_stdin(&null).context("dup2 /dev/null onto stdin")?;
    rustix::stdio::dup2_stdout(&null).context("dup2 /dev/null onto stdout")?;
    drop(null);
    let run_pid = rustix::process::Pid::from_raw(a.run_pid).context("the run's pid")?;
    // The run waits for `ready` before it creates anything: if it is gone already (we were
    // handed to another parent), there is nothing to guard.
    if rustix::process::getppid() != Some(run_pid) {
        return Ok(());
    }
    let pidfd = rustix::process::pidfd_open(run_pid, rustix::process::PidfdFlags::empty())
        .context("pidfd_open the run")?;
    // The pidfd is the run's only if the run was still our parent after it was opened.
    if rustix::process::getppid() != Some(run_pid) {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the guardian's runtime")?;
    // Signals meant for the run, or stray ones, must not disarm the guardian: they are
    // caught (by tokio's handler) and never acted on. Only SIGKILL ends it.
    let _ignored = rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        [
            SignalKind::interrupt(),
            SignalKind::terminate(),
            SignalKind::hangup(),
            SignalKind::quit(),
        ]
        .into_iter()
        .map(signal)
        .collect::<std::io::Result<Vec<_>>>()
    })?;
    let mut output = std::fs::File::from(output);
    say(&mut output, "ready")?;
    let mut watched: Option<CgroupName> = None;
    let mut buf = Vec::new();
    loop {
        let (readable, run_gone) = wait_readable(&input, &pidfd)?;
        if run_gone {
            break;
        }
        if !readable {
            continue;
        }
        let mut chunk = [0u8; 512];
        let n = match rustix::io::read(&input, &mut chunk) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
            Err(e) => return Err(e).context("read from the run"),
        };
        if n == 0 {
            // The run's end of the pipe closed without `done`: it died.
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let line = String::from_utf8_lossy(&line[..i]).into_owned();
            if line == "done" {
                return Ok(());
            } else if let Some(name) = line.strip_prefix("watch ") {
                watched = Some(CgroupName::new(name.to_owned())?);
                say(&mut output, "ok")?;
            } else {
                bail!("unexpected request from the run: {line:?}");
            }
        }
    }
    let Some(name) = watched else {
        return Ok(());
    };
    rt.block_on(clean_up(&a.root, &name, &a.owner, a.run_pid));
    Ok(())
}

fn say(out: &mut std::fs::File, line: &str) -> Result<()> {
    out.write_all(format!("{line}\n").as_bytes())
        .context("answer the run")
}

/// Blocks until the run's pipe or its pidfd is readable: `(pipe readable, run gone)`.
fn wait_readable(stdin: &OwnedFd, pidfd: &OwnedFd) -> Result<(bool, bool)> {
    let mut fds = [
        PollFd::new(stdin, PollFlags::IN),
        PollFd::new(pidfd, PollFlags::IN),
    ];
    match rustix::event::poll(&mut fds, None) {
        Ok(_) => {}
        Err(rustix::io::Errno::INTR) => return Ok((false, false)),
        Err(e) => return Err(e).context("poll the run's pipe and pidfd"),
    }
    let input = !fds[0].revents().is_empty();
    let gone = !fds[1].revents().is_empty();
    Ok((input, gone))
}

/// The run died: kill and remove its sandbox's cgroup, if it is the run's.
async fn clean_up(root: &Root, name: &CgroupName, owner: &str, run_pid: i32) {
    let t0 = Instant::now();
    let path = root.child_path(name);
    let cg = match root.open(name) {
        Ok(cg) => cg,
        Err(e) if e.errno() == Some(rustix::io::Errno::NOENT) => return,
        Err(e) => {
            tracing::error!(cgroup = %path.display(), error = %e, "paddock run (pid {run_pid}) died; its guardian cannot open the sandbox's cgroup");
            return;
        }
    };
    let opts = RemoveOptions {
        timeout: KILL_TIMEOUT,
        sandbox: Some(name.to_string()),
        ..Default::default()
    };
    match cg.owner() {
        Ok(Some(t)) if t == owner => {}
        Ok(None) => {
            // The run died between `mkdir` and the tag: nothing ran in it. A populated
            // untagged cgroup is not the run's.
            if cg.events().is_ok_and(|e| !e.populated) {
                let _ = cg.remove(&opts).await;
            }
            return;
        }
        Ok(Some(t)) => {
            tracing::warn!(cgroup = %path.display(), owner = %t, "paddock run (pid {run_pid}) died; the cgroup its guardian watched has another owner; left alone");
            return;
        }
        Err(e) => {
            tracing::error!(cgroup = %path.display(), error = %e, "paddock run (pid {run_pid}) died; its guardian cannot read the sandbox cgroup's owner");
            return;
        }
    }
    let killed = match cg
        .kill(&KillOptions {
            timeout: KILL_TIMEOUT,
            ..Default::default()
        })
        .await
    {
        Ok(k) => k.found,
        Err(e) => {
            tracing::error!(cgroup = %path.display(), error = %e, "paddock run (pid {run_pid}) died; its guardian could not kill the sandbox");
            return;
        }
    };
    match cg.remove(&opts).await {
        Ok(_) => tracing::warn!(
            cgroup = %path.display(),
            killed,
            ms = t0.elapsed().as_secs_f64() * 1e3,
            "paddock run (pid {run_pid}) died before its sandbox ended; its guardian killed the sandbox and removed its cgroup"
        ),
        Err(e) => {
            tracing::error!(cgroup = %path.display(), error = %e, "paddock run (pid {run_pid}) died; its guardian killed the sandbox but could not remove its cgroup")
        }
    }
}
