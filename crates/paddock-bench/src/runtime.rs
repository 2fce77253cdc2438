//! `runc` and `crun`: `run -d`, `kill KILL`, `delete -f` of a minimal busybox bundle the
//! benchmark builds itself (config from `<runtime> spec`, a rootfs holding a static
//! busybox and its applet links), with `cgroupsPath` under the bench root.
//!
//! On a hybrid host runc (1.1) uses its cgroup v1 manager: it creates the path in every v1
//! hierarchy *and* in the v2 one, so its v2 cgroup lands under the bench root as wanted
//! (the v1 directories are removed at cleanup). crun (1.8) refuses hybrid hosts whose v2
//! hierarchy has controllers ("cgroups in hybrid mode not supported, drop all controllers
//! from cgroupv2"; here v2 holds `hugetlb`), also with `--cgroup-manager=disabled`; the
//! probe reports that and crun is listed as not available.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paddock_proc::{Command, Stdio};

use crate::cleanup::BenchRoot;
use crate::implementation::{Fut, Implementation};
use crate::{LEAK_SCRIPT, raw};

/// Applets linked in the rootfs.
const APPLETS: &[&str] = &["sh", "sleep", "setsid", "true"];
/// Where a static busybox is found (Debian's busybox-static installs /bin/busybox).
const BUSYBOX: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];

/// Finds `bin` in `PATH`.
pub fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|c| c.is_file())
    })
}

/// `<bin> delete -f <name>`, ignoring the outcome (cleanup).
pub fn force_delete(bin: &str, name: &str) {
    let _ = Command::new(bin)
        .args(["delete", "-f", name])
        .stdin(Stdio::Null)
        .stdout(Stdio::Null)
        .stderr(Stdio::Null)
        .status();
}

/// A container runtime under test.
pub struct Runtime {
    bin: &'static str,
    bench: Arc<BenchRoot>,
    dir: PathBuf,
    template: serde_json::Value,
    errfile: File,
    seq: u64,
    unavailable: Option<String>,
}

impl Runtime {
    /// Builds the bundle template for `bin` and probes one container; a runtime that is
    /// missing or cannot run here is returned marked unavailable, with the reason.
    pub fn new(bin: &'static str, bench: Arc<BenchRoot>) -> Runtime {
        let dir = std::env::temp_dir().join(format!("{}.{bin}", bench.name()));
        let mut rt = Runtime {
            bin,
            bench: bench.clone(),
            dir: dir.clone(),
            template: serde_json::Value::Null,
            errfile: File::open("/dev/null").expect("/dev/null"),
            seq: 0,
            unavailable: None,
        };
        if let Err(e) = rt.setup() {
            rt.unavailable = Some(format!("not available: {e}"));
        }
        rt
    }

    fn setup(&mut self) -> io::Result<()> {
        if which(self.bin).is_none() {
            return Err(io::Error::other(format!(
                "{} is not installed (apt-get install -y {} busybox-static)",
                self.bin, self.bin
            )));
        }
        let busybox = BUSYBOX
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                io::Error::other("no static busybox (apt-get install -y busybox-static)")
            })?;
        self.bench
            .temp_dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(self.dir.clone());
        let _ = std::fs::remove_dir_all(&self.dir);
        let bin_dir = self.dir.join("rootfs/bin");
        std::fs::create_dir_all(&bin_dir)?;
        std::fs::copy(busybox, bin_dir.join("busybox"))?;
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", bin_dir.join(a))?;
        }
        let out = Command::new(self.bin)
            .arg("spec")
            .cwd(&self.dir)
            .output()
            .map_err(|e| io::Error::other(format!("{} spec: {e}", self.bin)))?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "{} spec: {}",
                self.bin,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let text = std::fs::read_to_string(self.dir.join("config.json"))?;
        self.template = serde_json::from_str(&text).map_err(io::Error::other)?;
        self.errfile = File::options()
            .create(true)
            .append(true)
            .read(true)
            .open(self.dir.join("stderr"))?;
        std::fs::create_dir_all(self.bench.path.join(self.bin))?;
        // Probe: one container, start to delete.
        let probe = self.prepare(&["/bin/true"])?;
        self.exec(&[
            "run",
            "-d",
            "--bundle",
            &probe.1.to_string_lossy(),
            &probe.0,
        ])?;
        self.exec(&["delete", "-f", &probe.0])?;
        self.finish(&probe);
        Ok(())
    }

    /// Writes a bundle (config only; the rootfs is shared) for a new container.
    fn prepare(&mut self, args: &[&str]) -> io::Result<(String, PathBuf)> {
        self.seq += 1;
        let name = format!("pb{}-{}-{}", std::process::id(), self.bin, self.seq);
        let bundle = self.dir.join(&name);
        std::fs::create_dir_all(&bundle)?;
        let mut c = self.template.clone();
        c["process"]["terminal"] = false.into();
        c["process"]["args"] = args.iter().map(|a| serde_json::Value::from(*a)).collect();
        c["root"]["path"] = self
            .dir
            .join("rootfs")
            .to_string_lossy()
            .into_owned()
            .into();
        c["root"]["readonly"] = true.into();
        c["linux"]["cgroupsPath"] = format!("{}/{}/{name}", self.bench.hier, self.bin).into();
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec(&c).map_err(io::Error::other)?,
        )?;
        self.bench
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((self.bin.to_string(), name.clone()));
        Ok((name, bundle))
    }

    fn finish(&self, c: &(String, PathBuf)) {
        let _ = std::fs::remove_dir_all(&c.1);
        self.bench
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(b, n)| !(b == self.bin && *n == c.0));
    }

    fn exec(&self, args: &[&str]) -> io::Result<()> {
        self.errfile.set_len(0)?;
        let st = Command::new(self.bin)
            .args(args)
            .stdin(Stdio::Null)
            .stdout(Stdio::Null)
            .stderr(Stdio::dup(self.errfile.as_fd())?)
            .status()
            .map_err(|e| io::Error::other(format!("{}: {e}", self.bin)))?;
        if st.success() {
            return Ok(());
        }
        let err = std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default();
        Err(io::Error::other(format!(
            "{} {}: {st}: {}",
            self.bin,
            args.first().copied().unwrap_or(""),
            err.trim()
        )))
    }

    fn cgroup_of(&self, name: &str) -> PathBuf {
        self.bench.path.join(self.bin).join(name)
    }

    fn lifecycle_blocking(&mut self) -> io::Result<Duration> {
        let c = self.prepare(&["/bin/sleep", "1000"])?;
        let t0 = Instant::now();
        self.exec(&["run", "-d", "--bundle", &c.1.to_string_lossy(), &c.0])?;
        self.exec(&["kill", &c.0, "KILL"])?;
        self.exec(&["delete", "-f", &c.0])?;
        let dt = t0.elapsed();
        self.finish(&c);
        Ok(dt)
    }

    fn leaked_blocking(&mut self) -> io::Result<Duration> {
        let c = self.prepare(&["/bin/sh", "-c", LEAK_SCRIPT])?;
        self.exec(&["run", "-d", "--bundle", &c.1.to_string_lossy(), &c.0])?;
        raw::wait_ready(&self.cgroup_of(&c.0), 2, 2)?;
        std::thread::sleep(crate::SETTLE);
        let t0 = Instant::now();
        self.exec(&["kill", &c.0, "KILL"])?;
        self.exec(&["delete", "-f", &c.0])?;
        let dt = t0.elapsed();
        if self.cgroup_of(&c.0).exists() {
            return Err(io::Error::other(format!(
                "{} delete -f returned but {} still exists",
                self.bin,
                self.cgroup_of(&c.0).display()
            )));
        }
        self.finish(&c);
        Ok(dt)
    }

    /// Containers of this run that `<bin> list` still shows.
    fn listed(&self) -> usize {
        let prefix = format!("pb{}-{}-", std::process::id(), self.bin);
        Command::new(self.bin)
            .args(["list", "-q"])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| l.starts_with(&prefix))
                    .count()
            })
            .unwrap_or(0)
    }
}

impl Implementation for Runtime {
    fn name(&self) -> &'static str {
        self.bin
    }
    fn unavailable(&self) -> Option<String> {
        self.unavailable.clone()
    }
    fn supports(&self, scenario: &str) -> bool {
        matches!(scenario, "lifecycle" | "leaked-teardown")
    }
    fn leak_dir(&self) -> &'static str {
        self.bin
    }
    fn extra_leaks(&self) -> usize {
        self.listed()
    }
    fn lifecycle(&mut self) -> Fut<'_, Duration> {
        let r = tokio::task::block_in_place(|| self.lifecycle_blocking());
        Box::pin(async move { r })
    }
    fn leaked_teardown(&mut self) -> Fut<'_, Duration> {
        let r = tokio::task::block_in_place(|| self.leaked_blocking());
        Box::pin(async move { r })
    }
}
