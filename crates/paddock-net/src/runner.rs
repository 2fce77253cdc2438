//! Running a helper program (`nft`) to completion within a deadline, through
//! `paddock-proc`'s spawner and reaper.
//!
//! Why not `std::process::Command`: a supervisor that is a child subreaper sweeps for
//! exited children it did not register and reaps them; a `std` child reaped that way makes
//! `std`'s own `wait` fail with `ECHILD` (its status lost). A child spawned by
//! [`paddock_proc::Command`] is registered with the one reaper, so its status always
//! reaches its [`paddock_proc::Process`].
//!
//! Everything is bounded by one deadline: writing stdin, reading stdout and stderr (one
//! `poll` loop over non-blocking pipes, so a program that neither reads nor exits cannot
//! block the caller) and the wait for its exit. On expiry the program is killed
//! (`SIGKILL` by pidfd) and reaped, and the error names the command and the deadline.
//!
//! The caller runs this on a thread of its own (the child inherits that thread's network
//! namespace): it blocks that thread.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use paddock_proc::{Command, ExitStatus, Process, SpawnError, Stage, Stdio};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;

/// How a bounded run ended, when it ran.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
}

/// Why a bounded run failed.
#[derive(Debug)]
pub(crate) enum RunError {
    /// The program does not exist (`exec`: `ENOENT`).
    NotFound,
    /// It could not be spawned, or its pipes failed (the message says which).
    Failed(String),
    /// It did not finish within the deadline; it was killed (and reaped, unless it did not
    /// die within [`KILL_WAIT`]: then the message says so).
    TimedOut(String),
}

/// How long a killed program is waited for after its deadline.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// Runs `binary args…` with `input` on its stdin (or `/dev/null`), capturing stdout and
/// stderr, and waits for it, all within `deadline`. `what` names the command in errors.
pub(crate) fn run(
    binary: &Path,
    args: &[String],
    input: Option<&[u8]>,
    deadline: Duration,
    what: &str,
) -> Result<Finished, RunError> {
    let start = Instant::now();
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::PipeToChild
        } else {
            Stdio::Null
        })
        .stdout(Stdio::PipeFromChild)
        .stderr(Stdio::PipeFromChild);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(SpawnError::Child {
            stage: Stage::Exec,
            errno,
            ..
        }) if errno == Errno::NOENT.raw_os_error() => return Err(RunError::NotFound),
        Err(e) => return Err(RunError::Failed(format!("cannot run {what}: {e}"))),
    };
    let stdin = if input.is_some() {
        child.take_stdin()
    } else {
        None
    };
    let pipes = (stdin, child.take_stdout(), child.take_stderr());
    let io = exchange(pipes, input.unwrap_or_default(), start + deadline, what);
    let left = (start + deadline).saturating_duration_since(Instant::now());
    let status = match io {
        Ok(_) => child.wait_timeout(left),
        Err(IoFailure::Expired) => None,
        Err(IoFailure::Pipe(msg)) => {
            kill_and_reap(&child);
            return Err(RunError::Failed(msg));
        }
    };
    let Some(status) = status else {
        let reaped = kill_and_reap(&child);
        return Err(RunError::TimedOut(format!(
            "{what} did not finish within its deadline of {} ms; it was killed{}",
            deadline.as_millis(),
            if reaped {
                ""
            } else {
                " but had not exited 2 s later (uninterruptible sleep?)"
            }
        )));
    };
    let (stdout, stderr) = io.unwrap_or_default();
    Ok(Finished {
        status,
        stdout,
        stderr,
    })
}

/// Kills `child` and waits (bounded) for the reaper to reap it; whether it was.
fn kill_and_reap(child: &Process) -> bool {
    let _ = child.kill();
    child.wait_timeout(KILL_WAIT).is_some()
}

enum IoFailure {
    Expired,
    Pipe(String),
}

type Pipes = (Option<OwnedFd>, Option<OwnedFd>, Option<OwnedFd>);

/// Writes `input` to the child's stdin and reads its stdout and stderr until both end, or
/// until `deadline`.
fn exchange(
    (mut stdin, mut out, mut err): Pipes,
    input: &[u8],
    deadline: Instant,
    what: &str,
) -> Result<(Vec<u8>, Vec<u8>), IoFailure> {
    let pipe_err = |op: &str, e: Errno| IoFailure::Pipe(format!("{op} {what}: {e}"));
    for fd in [&stdin, &out, &err].into_iter().flatten() {
        rustix::io::ioctl_fionbio(fd, true)
            .map_err(|e| pipe_err("set O_NONBLOCK on a pipe of", e))?;
    }
    let mut written = 0;
    if input.is_empty() {
        stdin = None;
    }
    let (mut obuf, mut ebuf) = (Vec::new(), Vec::new());
    let mut chunk = [0u8; 8192];
    while stdin.is_some() || out.is_some() || err.is_some() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(IoFailure::Expired);
        }
        let timeout = Timespec {
            tv_sec: left.as_secs() as _,
            tv_nsec: left.subsec_nanos() as _,
        };
        // Which slot each poll entry is: 0 stdin, 1 stdout, 2 stderr.
        let mut which = Vec::with_capacity(3);
        let mut fds = Vec::with_capacity(3);
        if let Some(fd) = &stdin {
            which.push(0);
            fds.push(PollFd::new(fd, PollFlags::OUT));
        }
        if let Some(fd) = &out {
            which.push(1);
            fds.push(PollFd::new(fd, PollFlags::IN));
        }
        if let Some(fd) = &err {
            which.push(2);
            fds.push(PollFd::new(fd, PollFlags::IN));
        }
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(_) => {}
            Err(Errno::INTR) => continue,
            Err(e) => return Err(pipe_err("poll the pipes of", e)),
        }
        let ready: Vec<(usize, PollFlags)> = which
            .iter()
            .zip(fds.iter())
            .map(|(w, f)| (*w, f.revents()))
            .filter(|(_, r)| !r.is_empty())
            .collect();
        drop(fds);
        for (slot, revents) in ready {
            match slot {
                0 => {
                    if revents.intersects(PollFlags::ERR | PollFlags::HUP) {
                        // The program closed its stdin (or exited): its status and stderr
                        // say why.
                        stdin = None;
                        continue;
                    }
                    let Some(fd) = stdin.as_ref() else { continue };
                    match rustix::io::write(fd.as_fd(), &input[written..]) {
                        Ok(n) => written += n,
                        Err(Errno::AGAIN) | Err(Errno::INTR) => {}
                        Err(Errno::PIPE) => stdin = None,
                        Err(e) => return Err(pipe_err("write to the stdin of", e)),
                    }
                    if written == input.len() {
                        stdin = None;
                    }
                }
                _ => {
                    let (pipe, buf) = if slot == 1 {
                        (&mut out, &mut obuf)
                    } else {
                        (&mut err, &mut ebuf)
                    };
                    let Some(fd) = pipe.as_ref() else { continue };
                    match rustix::io::read(fd.as_fd(), &mut chunk) {
                        Ok(0) => *pipe = None,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        Err(Errno::AGAIN) | Err(Errno::INTR) => {}
                        Err(e) => return Err(pipe_err("read the output of", e)),
                    }
                }
            }
        }
    }
    Ok((obuf, ebuf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, input: Option<&[u8]>, deadline: Duration) -> Result<Finished, RunError> {
        run(
            Path::new("/bin/sh"),
            &["-c".into(), script.into()],
            input,
            deadline,
            "sh test",
        )
    }

    #[test]
    fn captures_output_and_status_and_feeds_stdin() {
        let big = vec![b'x'; 300_000]; // more than a pipe holds
        let f = sh(
            "wc -c; echo oops >&2; exit 3",
            Some(&big),
            Duration::from_secs(20),
        )
        .unwrap();
        assert_eq!(f.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&f.stdout).trim(), "300000");
        assert_eq!(String::from_utf8_lossy(&f.stderr).trim(), "oops");
    }

    #[test]
    fn a_missing_program_is_not_found() {
        let r = run(
            Path::new("/nonexistent/nft"),
            &[],
            None,
            Duration::from_secs(5),
            "nft",
        );
        assert!(matches!(r, Err(RunError::NotFound)), "{r:?}");
    }

    #[test]
    fn a_program_past_its_deadline_is_killed_and_reaped() {
        let t = Instant::now();
        // Neither reads its stdin nor exits.
        let r = sh(
            "exec sleep 30",
            Some(&[b'y'; 200_000]),
            Duration::from_millis(300),
        );
        let elapsed = t.elapsed();
        match r {
            Err(RunError::TimedOut(m)) => {
                assert!(
                    m.contains("sh test") && m.contains("300 ms") && m.contains("killed"),
                    "{m}"
                );
                assert!(!m.contains("had not exited"), "{m}");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
        // Also when the output phase is done and only the wait is left.
        let r = sh("exec >&- 2>&-; sleep 30", None, Duration::from_millis(300));
        assert!(matches!(r, Err(RunError::TimedOut(_))), "{r:?}");
    }
}
