//! Resources a run creates on the host outside its cgroup root — v1 freezer cgroups (the
//! `unkillable` case) and network namespaces (`wrapper-netns`) — and the tracking that
//! removes them at the end, also after Ctrl-C.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where the v1 freezer hierarchy is expected (the `unkillable` case needs it).
pub const V1_FREEZER: &str = "/sys/fs/cgroup/freezer";

/// Why the `unkillable` case cannot run here, if it cannot.
pub fn unkillable_unavailable() -> Option<String> {
    let f = Path::new(V1_FREEZER);
    if f.join("cgroup.procs").exists() {
        None
    } else {
        Some(format!(
            "no cgroup v1 freezer hierarchy at {V1_FREEZER} to hold a process in state D"
        ))
    }
}

/// The v1 freezer cgroups and network namespaces a run created and has not removed yet.
/// [`HostResources::cleanup`] removes whatever is still tracked.
#[derive(Debug, Default)]
pub struct HostResources {
    freezers: Mutex<Vec<PathBuf>>,
    netns: Mutex<Vec<String>>,
}

impl HostResources {
    /// Thaws and removes every freezer cgroup and deletes every network namespace still
    /// tracked.
    pub fn cleanup(&self) {
        for f in std::mem::take(
            &mut *self
                .freezers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ) {
            V1Freezer(f).release();
        }
        for n in std::mem::take(
            &mut *self
                .netns
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ) {
            netns_delete(&n);
        }
    }

    /// Creates the freezer cgroup of lifecycle `n` of run `run` and tracks it.
    pub(crate) fn create_freezer(&self, run: &str, n: u64) -> std::io::Result<V1Freezer> {
        let p = Path::new(V1_FREEZER).join(format!("paddock-torture-{run}-{n}"));
        std::fs::create_dir(&p)?;
        self.freezers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(p.clone());
        Ok(V1Freezer(p))
    }

    /// Stops tracking `f` and releases it (thaw, survivors moved out, directory removed),
    /// on a blocking thread.
    pub(crate) async fn release_freezer(&self, f: V1Freezer) {
        self.freezers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|p| p != &f.0);
        let _ = tokio::task::spawn_blocking(move || f.release()).await;
    }

    /// Creates the network namespace `name` (`ip netns add`) and tracks it.
    pub(crate) fn add_netns(&self, name: &str) -> Result<(), String> {
        netns_add(name)?;
        self.netns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(name.to_owned());
        Ok(())
    }

    /// Deletes the network namespace `name` and stops tracking it.
    pub(crate) fn delete_netns(&self, name: &str) {
        netns_delete(name);
        self.netns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|x| x != name);
    }
}

/// A v1 freezer cgroup that holds a process in state D.
#[derive(Debug, Clone)]
pub(crate) struct V1Freezer(PathBuf);

impl V1Freezer {
    /// Moves `pid` into the freezer cgroup and freezes it; waits (up to 5 s) for `FROZEN`.
    /// Blocking.
    pub(crate) fn freeze(&self, pid: i32) -> Result<(), String> {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("move {pid} into {}: {e}", self.0.display()))?;
        std::fs::write(self.0.join("freezer.state"), "FROZEN")
            .map_err(|e| format!("freeze {}: {e}", self.0.display()))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let st = std::fs::read_to_string(self.0.join("freezer.state")).unwrap_or_default();
            if st.trim() == "FROZEN" {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} never reached FROZEN ({st:?})",
                    self.0.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn thaw(&self) {
        let _ = std::fs::write(self.0.join("freezer.state"), "THAWED");
    }

    /// Thaws, moves any survivor back to the v1 root, removes the directory. Blocking.
    fn release(self) {
        self.thaw();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(procs) = std::fs::read_to_string(self.0.join("cgroup.procs")) {
                let parent = Path::new(V1_FREEZER).join("cgroup.procs");
                for p in procs.lines() {
                    let _ = std::fs::write(&parent, p);
                }
            }
            if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            if Instant::now() > deadline {
                eprintln!(
                    "paddock-torture: freezer cgroup not removed path={}",
                    self.0.display()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn netns_add(name: &str) -> Result<(), String> {
    let out = paddock_proc::Command::new("ip")
        .args(["netns", "add", name])
        .output()
        .map_err(|e| format!("ip netns add {name}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn netns_delete(name: &str) {
    let _ = paddock_proc::Command::new("ip")
        .args(["netns", "delete", name])
        .output();
}

/// A `perl` helper holding a read lease (`F_SETLEASE`, `F_RDLCK`) on a file: an open of it
/// for writing by another process waits until the lease is given up or `lease-break-time`
/// passes (45 s by default), as an open on a hung file system waits; a non-blocking one is
/// refused with `EWOULDBLOCK`. The helper ignores the lease break's SIGIO and keeps its
/// lease until [`LeaseHolder::release`] (or this process's death: `PR_SET_PDEATHSIG`).
pub(crate) struct LeaseHolder(paddock_proc::Process);

/// F_SETLEASE = 1024, F_RDLCK = 0.
const LEASE_HOLDER: &str = r#"$SIG{IO} = "IGNORE"; open(my $f, "<", $ARGV[0]) or die "open: $!"; fcntl($f, 1024, 0) or die "F_SETLEASE: $!"; $| = 1; print "leased\n"; sleep 60"#;

impl LeaseHolder {
    /// Starts the helper on `path` and waits (up to 10 s) until it holds the lease.
    pub(crate) async fn take(path: &Path) -> Result<LeaseHolder, String> {
        let mut p = paddock_proc::Command::new("perl")
            .args(["-e", LEASE_HOLDER])
            .arg(path)
            .stdout(paddock_proc::Stdio::Pipe)
            .parent_death_signal(libc::SIGKILL)
            .spawn()
            .map_err(|e| format!("spawn the lease holder (perl): {e}"))?;
        let out = p.take_stdout().expect("a stdout pipe was asked for");
        let read = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut line = [0u8; 7];
            std::fs::File::from(out).read_exact(&mut line).map(|_| line)
        });
        let holder = LeaseHolder(p);
        match tokio::time::timeout(Duration::from_secs(10), read).await {
            Ok(Ok(Ok(l))) if &l == b"leased\n" => Ok(holder),
            other => {
                let _ = holder.release().await;
                Err(format!(
                    "the lease holder did not take a lease on {}: {other:?}",
                    path.display()
                ))
            }
        }
    }

    /// Checks that the helper is still alive (nobody broke or took its lease by killing
    /// it), then kills and reaps it.
    pub(crate) async fn release(self) -> Result<(), String> {
        let alive = self.0.try_wait().is_none();
        let _ = self.0.kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.0.wait()).await;
        if alive {
            Ok(())
        } else {
            Err("the lease holder died before it was released".into())
        }
    }
}
