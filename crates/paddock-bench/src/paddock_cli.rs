//! `paddock-cli`: one `paddock run` per sandbox, the whole process timed.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cleanup::BenchRoot;
use crate::implementation::{Fut, Implementation};
use crate::jail::{CHECK_SCRIPT, CpuTally, JailEnv, NOBODY, cpu_usage_us, verify};
use crate::paddock_api::{paddock_binary, tail_of};

/// `paddock-cli`: `paddock run --cgroup-root <bench root>/paddock-cli -- /bin/true` per
/// lifecycle, timed from the spawn to its exit. In `jailed-lifecycle` the same with
/// `--user 65534 --rootfs <rootfs> --unshare pid,mount,ipc,uts` (the default seccomp),
/// and `paddock run` itself spawned into `<bench root>/paddock-cli-run`, whose CPU time
/// and the sandboxes' (under the cgroup root) are its CPU time.
pub struct PaddockCli {
    bin: PathBuf,
    root: PathBuf,
    errfile: PathBuf,
    unavailable: Option<String>,
    jail: Result<Arc<JailEnv>, String>,
    run_cgroup: PathBuf,
    run_cgroup_fd: Option<File>,
    cpu: CpuTally,
}

impl PaddockCli {
    /// Finds the `paddock` binary; without it the implementation is unavailable.
    pub fn new(bench: &BenchRoot) -> PaddockCli {
        let dir = std::env::temp_dir().join(format!("{}.paddock-cli", bench.name()));
        let mut cli = PaddockCli {
            bin: PathBuf::new(),
            root: bench.path.join("paddock-cli"),
            errfile: dir.join("stderr"),
            unavailable: None,
            jail: Err("no rootfs was made".into()),
            run_cgroup: bench.path.join("paddock-cli-run"),
            run_cgroup_fd: None,
            cpu: CpuTally::default(),
        };
        let r = paddock_binary().and_then(|bin| {
            bench
                .temp_dirs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(dir.clone());
            std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
            Ok(bin)
        });
        match r {
            Ok(bin) => cli.bin = bin,
            Err(e) => cli.unavailable = Some(format!("not available: {e}")),
        }
        cli
    }

    /// The rootfs of `jailed-lifecycle` (or why there is none).
    pub fn set_jail(&mut self, env: Result<Arc<JailEnv>, String>) {
        self.jail = env;
    }

    /// `paddock run` jailed around `cmd`, stdout to `stdout`, timed from the spawn to its
    /// exit.
    async fn run_jailed(
        &mut self,
        cmd: &[&str],
        stdout: paddock_proc::Stdio,
    ) -> io::Result<Duration> {
        let env = self.jail.clone().map_err(io::Error::other)?;
        if self.run_cgroup_fd.is_none() {
            std::fs::create_dir_all(&self.run_cgroup)?;
            self.run_cgroup_fd = Some(File::open(&self.run_cgroup)?);
        }
        let err = File::create(&self.errfile)?;
        let mut c = paddock_proc::Command::new(&self.bin);
        c.arg("run")
            .arg("--cgroup-root")
            .arg(&self.root)
            .arg("--user")
            .arg(NOBODY.to_string())
            .arg("--rootfs")
            .arg(&env.rootfs)
            .args(["--unshare", "pid,mount,ipc,uts", "--"])
            .args(cmd)
            .stdin(paddock_proc::Stdio::Null)
            .stdout(stdout)
            .stderr(paddock_proc::Stdio::Fd(err.into()));
        let cpu = |cli: &Self| {
            Some(cpu_usage_us(&cli.run_cgroup)? + cpu_usage_us(&cli.root).unwrap_or(0))
        };
        let cpu0 = cpu(self);
        let t0 = Instant::now();
        let p = c
            .spawn_in(self.run_cgroup_fd.as_ref().expect("opened").as_fd())
            .map_err(|e| io::Error::other(format!("spawn {}: {e}", self.bin.display())))?;
        let st = p.wait().await;
        let dt = t0.elapsed();
        if let (Some(a), Some(b)) = (cpu0, cpu(self)) {
            self.cpu.add(b.saturating_sub(a));
        }
        if !st.success() {
            return Err(io::Error::other(format!(
                "paddock run: {st}: {}",
                tail_of(&self.errfile, 500)
            )));
        }
        Ok(dt)
    }
}

impl Implementation for PaddockCli {
    fn name(&self) -> &'static str {
        "paddock-cli"
    }
    fn unavailable(&self) -> Option<String> {
        self.unavailable.clone()
    }
    fn supports(&self, scenario: &str) -> bool {
        matches!(scenario, "lifecycle" | "jailed-lifecycle")
    }
    fn jail_check(&mut self) -> Fut<'_, String> {
        Box::pin(async move {
            let env = self.jail.clone().map_err(io::Error::other)?;
            let path = env.dir.join("paddock-cli.check");
            let out = File::create(&path)?;
            self.run_jailed(
                &["/bin/sh", "-c", CHECK_SCRIPT],
                paddock_proc::Stdio::Fd(out.into()),
            )
            .await?;
            // The check is not a timed operation: its CPU time is not counted.
            self.cpu = CpuTally::default();
            let text = std::fs::read_to_string(&path)?;
            verify(&text, &env, NOBODY..=NOBODY).map_err(io::Error::other)
        })
    }
    fn jailed_lifecycle(&mut self) -> Fut<'_, Duration> {
        Box::pin(self.run_jailed(&["/bin/true"], paddock_proc::Stdio::Null))
    }
    fn cpu_per_op_us(&self) -> Option<f64> {
        self.cpu.per_op()
    }
    fn leak_dir(&self) -> &'static str {
        "paddock-cli"
    }

    fn lifecycle(&mut self) -> Fut<'_, Duration> {
        let spawned = (|| {
            let err = std::fs::File::create(&self.errfile)?;
            let t0 = Instant::now();
            let p = paddock_proc::Command::new(&self.bin)
                .arg("run")
                .arg("--cgroup-root")
                .arg(&self.root)
                .args(["--", "/bin/true"])
                .stdin(paddock_proc::Stdio::Null)
                .stdout(paddock_proc::Stdio::Null)
                .stderr(paddock_proc::Stdio::Fd(err.into()))
                // No parent-death signal: this is spawned from a runtime thread, which may
                // be retired while the run is in flight (the signal follows the spawning
                // thread); a run lasts milliseconds, and the bench root's cleanup kills
                // its sandbox if the bench dies meanwhile.
                .spawn()
                .map_err(|e| io::Error::other(format!("spawn {}: {e}", self.bin.display())))?;
            Ok::<_, io::Error>((t0, p))
        })();
        let errfile = self.errfile.clone();
        Box::pin(async move {
            let (t0, p) = spawned?;
            // Through paddock-proc's reaper, which reaps every child of this process.
            let st = p.wait().await;
            let dt = t0.elapsed();
            if !st.success() {
                return Err(io::Error::other(format!(
                    "paddock run: {st}: {}",
                    tail_of(&errfile, 500)
                )));
            }
            Ok(dt)
        })
    }
}
