//! The guardian of a foreground `paddock run`: a sandbox never outlives its run.
//!
//! Before it creates anything, `paddock run` re-executes its own binary
//! (`/proc/self/exe __guard`) as a small helper process, the guardian, outside the sandbox
//! (in paddock's own cgroup) and in a session of its own, so neither Ctrl-C nor a signal to
//! paddock's process group reaches it (it also ignores SIGINT, SIGTERM, SIGHUP and
//! SIGQUIT). Before the sandbox's cgroup is made, the run tells the guardian its name and
//! waits for the acknowledgement. The guardian holds a pidfd of the run and the read end
//! of a pipe only the run writes to; when either says the run is gone (it died for any
//! reason, SIGKILL included, at any moment) before the run said `done`, the guardian
//! kills everything in that cgroup (`cgroup.kill`, waiting for `populated 0` on
//! `cgroup.events`), removes it, logs a WARN and exits. After a normal end the run says
//! `done`, the guardian exits at once, and the run reaps it before exiting itself.
//!
//! The guardian only touches the cgroup it was told about, and only when its owner tag is
//! the run's (an untagged one only when it is empty: the run died between `mkdir` and the
//! tag). If the run and the guardian die together (both SIGKILLed, say), the cgroup is left
//! with the run's owner tag, `pid:<pid>:<start time>:<pid namespace>`; the next
//! `paddock run` on that root, or a daemon's next reconciliation, sees that the owner is
//! gone and removes it (see the cgroup layer's `owner` module).
//!
//! Protocol (one line each, over the guardian's stdin and stdout): the guardian says
//! `ready` once armed; the run says `watch <cgroup name>` and the guardian answers `ok`;
//! the run says `done` when the sandbox is gone.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use paddock_supervisor::{CgroupName, Command, KillOptions, Process, RemoveOptions, Root, Stdio};
use paddock_supervisor::{HookError, HookErrorKind, Hooks, Persisting, Record};
use rustix::event::{PollFd, PollFlags};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;

/// The hidden subcommand that runs the guardian.
pub const SUBCOMMAND: &str = "__guard";

/// How long the run waits for the guardian to arm itself or to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Deadline of the guardian's kill (a process in uninterruptible sleep can hold it up).
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of the hidden `paddock __guard` (started by `paddock run` only).
#[derive(Debug, clap::Args)]
pub struct GuardArgs {
    /// The managed root (absolute path).
    #[arg(long)]
    pub root: PathBuf,
    /// The run's owner tag.
    #[arg(long)]
    pub owner: String,
    /// The run's PID (the guardian's parent).
    #[arg(long)]
    pub run_pid: i32,
}

/// The run's handle on its guardian.
pub struct Guardian {
    process: Arc<Process>,
    io: tokio::sync::Mutex<(pipe::Sender, BufReader<pipe::Receiver>)>,
    released: Arc<AtomicBool>,
}

impl Guardian {
    /// Starts the guardian and waits until it is armed. `log_format` is passed on.
    pub async fn spawn(root: &Path, owner: &str, log_format: &str) -> Result<Arc<Guardian>> {
        let mut cmd = Command::new("/proc/self/exe");
        cmd.args(["--log-format", log_format, SUBCOMMAND, "--root"])
            .arg(root)
            .args(["--owner", owner, "--run-pid"])
            .arg(std::process::id().to_string())
            .stdin(Stdio::PipeToChild)
            .stdout(Stdio::PipeFromChild)
            .setsid(true);
        let mut process = cmd
            .spawn()
            .context("start the guardian (/proc/self/exe __guard)")?;
        let tx = process.take_stdin().context("the guardian's stdin pipe")?;
        let rx = process
            .take_stdout()
            .context("the guardian's stdout pipe")?;
        let tx = pipe::Sender::from_owned_fd(tx).context("the guardian's stdin pipe")?;
        let rx = pipe::Receiver::from_owned_fd(rx).context("the guardian's stdout pipe")?;
        let g = Guardian {
            process: Arc::new(process),
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

/// `paddock __guard`: the guardian's main. Returns the process's exit code.
pub fn main(a: GuardArgs) -> u8 {
    let _ = rustix::thread::set_name(c"paddock-guard");
    match guard(a) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "paddock run's guardian failed");
            1
        }
    }
}

fn guard(a: GuardArgs) -> Result<()> {
    let run_pid = rustix::process::Pid::from_raw(a.run_pid).context("--run-pid")?;
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
    let root = Root::open_or_create(&a.root)
        .with_context(|| format!("open the managed root {}", a.root.display()))?;
    let stdin = std::io::stdin().as_fd().try_clone_to_owned()?;
    say("ready")?;
    let mut watched: Option<CgroupName> = None;
    let mut buf = Vec::new();
    loop {
        let (input, run_gone) = wait_readable(&stdin, &pidfd)?;
        if run_gone {
            break;
        }
        if !input {
            continue;
        }
        let mut chunk = [0u8; 512];
        let n = match rustix::io::read(&stdin, &mut chunk) {
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
                say("ok")?;
            } else {
                bail!("unexpected request from the run: {line:?}");
            }
        }
    }
    let Some(name) = watched else {
        return Ok(());
    };
    rt.block_on(clean_up(&root, &name, &a.owner, a.run_pid));
    Ok(())
}

fn say(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
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
