//! `paddock-cli`: one `paddock run` per sandbox, the whole process timed.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::cleanup::BenchRoot;
use crate::implementation::{Fut, Implementation};
use crate::paddock_api::{paddock_binary, tail_of};

/// `paddock-cli`: `paddock run --cgroup-root <bench root>/paddock-cli -- /bin/true` per
/// lifecycle, timed from the spawn to its exit.
pub struct PaddockCli {
    bin: PathBuf,
    root: PathBuf,
    errfile: PathBuf,
    unavailable: Option<String>,
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
}

impl Implementation for PaddockCli {
    fn name(&self) -> &'static str {
        "paddock-cli"
    }
    fn unavailable(&self) -> Option<String> {
        self.unavailable.clone()
    }
    fn supports(&self, scenario: &str) -> bool {
        scenario == "lifecycle"
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
