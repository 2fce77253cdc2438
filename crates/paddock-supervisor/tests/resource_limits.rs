//! The limits beyond memory.max/high, cpu and pids (`memory.low`/`min`/`swap.max`,
//! `memory.oom.group`, `io.weight`, `io.max`, `cpuset`, `hugetlb`): each is written where its
//! controller is enabled, and refused naming the controller where it is not (the hybrid
//! host); the `vm_*` tests run payloads that hit the limits in the pure cgroup v2 VM
//! (`vm/run-tests --tests resource_limits`): `dd oflag=direct` on a loop device under
//! `io.max`, the CPUs a payload sees under `cpuset.cpus`, a hog with and without swap, and
//! an OOM in a tree of processes with `memory.oom.group` on and off.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use paddock_supervisor::{Error, EventKind, IoDeviceLimit, Limits, StopReason};

/// Each new limit, the controller it needs, the file it writes and what the file then
/// reads (its first line, trimmed).
fn cases() -> Vec<(
    &'static str,
    Limits,
    &'static str,
    &'static str,
    &'static str,
)> {
    let l = Limits::default;
    vec![
        (
            "low",
            Limits {
                memory_low: Some(1 << 20),
                ..l()
            },
            "memory",
            "memory.low",
            "1048576",
        ),
        (
            "min",
            Limits {
                memory_min: Some(1 << 20),
                ..l()
            },
            "memory",
            "memory.min",
            "1048576",
        ),
        (
            "swap",
            Limits {
                memory_swap_max: Some(0),
                ..l()
            },
            "memory",
            "memory.swap.max",
            "0",
        ),
        (
            "oomg",
            Limits {
                oom_group: Some(true),
                ..l()
            },
            "memory",
            "memory.oom.group",
            "1",
        ),
        (
            "iow",
            Limits {
                io_weight: Some(50),
                ..l()
            },
            "io",
            "io.weight",
            "default 50",
        ),
        (
            "cpus",
            Limits {
                cpuset_cpus: Some("0".into()),
                ..l()
            },
            "cpuset",
            "cpuset.cpus",
            "0",
        ),
        (
            "mems",
            Limits {
                cpuset_mems: Some("0".into()),
                ..l()
            },
            "cpuset",
            "cpuset.mems",
            "0",
        ),
        (
            "huge",
            Limits {
                hugetlb_max: [("2MB".to_string(), 0)].into(),
                ..l()
            },
            "hugetlb",
            "hugetlb.2MB.max",
            "0",
        ),
    ]
}

/// Every new limit is written where its controller is offered, and refused with an error
/// naming the controller where it is not; a refused start leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_limit_is_written_or_refused_naming_its_controller() {
    let test = "each_limit_is_written_or_refused_naming_its_controller";
    let Some(env) = env(test) else { return };
    let offered = env.root.controllers().unwrap();
    let mut written = 0;
    for (name, limits, ctrl, file, want) in cases() {
        let mut spec = sh(&format!("lim-{name}"), "sleep 300");
        spec.limits = limits;
        let has = offered.iter().any(|c| c == ctrl);
        if ctrl == "memory" && file == "memory.swap.max" && has && !swap_accounting() {
            continue;
        }
        match env.sup.start(spec).await {
            Ok(s) => {
                assert!(has, "{name}: started without {ctrl}");
                let got = std::fs::read_to_string(s.info.cgroup_path.join(file)).unwrap();
                assert_eq!(got.lines().next().unwrap().trim(), want, "{name}: {file}");
                env.sup.kill(&s.info.id, None).await.unwrap();
                written += 1;
            }
            Err(e) => {
                assert!(!has, "{name}: {ctrl} is offered, yet: {e}");
                let msg = e.to_string();
                assert!(
                    matches!(&e, Error::Cgroup(paddock_supervisor::CgroupError::ControllerUnavailable { controller, .. }) if controller == ctrl),
                    "{name}: {msg}"
                );
                assert!(msg.contains(&format!("{ctrl:?}")), "{name}: {msg}");
            }
        }
        env.assert_no_leaks();
    }
    if in_vm() {
        assert!(
            written >= 7,
            "the VM offers every controller: {written} written"
        );
    }
    println!("{test}: {written} written, offered: {offered:?}");
}

/// Whether the kernel accounts swap per cgroup (`memory.swap.max` exists at the top).
fn swap_accounting() -> bool {
    Path::new("/sys/fs/cgroup/memory.swap.max").exists()
        || std::fs::read_dir("/sys/fs/cgroup").is_ok_and(|d| {
            d.flatten()
                .any(|e| e.path().join("memory.swap.max").exists())
        })
}

/// `memory.oom.group` is 1 by default wherever the memory controller is available (and a
/// sandbox without it starts all the same), 0 when turned off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_group_is_on_by_default_where_memory_is_available() {
    let test = "oom_group_is_on_by_default_where_memory_is_available";
    let Some(env) = env(test) else { return };
    let memory = env
        .root
        .controllers()
        .unwrap()
        .iter()
        .any(|c| c == "memory");
    let s = env
        .sup
        .start(sh("oomg-default", "sleep 300"))
        .await
        .unwrap();
    let f = s.info.cgroup_path.join("memory.oom.group");
    if memory {
        assert_eq!(std::fs::read_to_string(&f).unwrap().trim(), "1");
    } else {
        assert!(!f.exists(), "no memory controller, no file");
        skip_missing(
            test,
            "no memory controller: only the start without it was checked",
        );
    }
    env.sup.kill(&s.info.id, None).await.unwrap();
    let mut spec = sh("oomg-off", "sleep 300");
    spec.limits.oom_group = Some(false);
    let s = env.sup.start(spec).await.unwrap();
    if memory {
        let f = s.info.cgroup_path.join("memory.oom.group");
        assert_eq!(std::fs::read_to_string(f).unwrap().trim(), "0");
    }
    env.sup.kill(&s.info.id, None).await.unwrap();
    env.assert_no_leaks();
}

/// An `io_max` device that is not a block device (or does not exist) is refused before
/// anything is recorded or created, naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_max_device_must_be_a_block_device() {
    let Some(env) = env("io_max_device_must_be_a_block_device") else {
        return;
    };
    for (path, why) in [
        ("/dev/null", "not a block device"),
        ("/nonexistent-dev", "stat"),
    ] {
        let mut spec = sh("iodev", "sleep 300");
        spec.limits.io_max = vec![IoDeviceLimit {
            device: path.into(),
            read_bps: None,
            write_bps: Some(1 << 20),
            read_iops: None,
            write_iops: None,
        }];
        let e = env.sup.start(spec).await.unwrap_err();
        assert!(matches!(e, Error::InvalidSpec(_)), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("limits.io_max[0].device") && msg.contains(why),
            "{msg}"
        );
        assert!(env.sup.get(&id("iodev")).is_none());
        env.assert_no_leaks();
    }
}

/// A huge page size the kernel does not have is refused, listing those it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hugetlb_size_must_be_offered() {
    let test = "hugetlb_size_must_be_offered";
    let Some(env) = env(test) else { return };
    if !env
        .root
        .controllers()
        .unwrap()
        .iter()
        .any(|c| c == "hugetlb")
    {
        skip_missing(
            test,
            "the cgroup v2 hierarchy here has no hugetlb controller",
        );
        return;
    }
    let mut spec = sh("huge", "sleep 300");
    spec.limits.hugetlb_max = [("64GB".to_string(), 0)].into();
    let msg = env.sup.start(spec).await.unwrap_err().to_string();
    assert!(
        msg.contains("\"64GB\" is not offered") && msg.contains("2MB"),
        "{msg}"
    );
    env.assert_no_leaks();
}

/// Skips (or, in the VM, fails) unless every controller in `need` is offered.
fn needs(env: &Env, test: &str, need: &[&str]) -> bool {
    let offered = env.root.controllers().unwrap();
    for c in need {
        if !offered.iter().any(|o| o == c) {
            skip_missing(
                test,
                &format!("the cgroup v2 hierarchy here has no {c} controller"),
            );
            return false;
        }
    }
    true
}

/// An OOM in a tree of three processes: with `memory.oom.group` (the default) it takes
/// the whole tree down (every process OOM-killed, a group kill counted), the stop's
/// reason is `oom` and the `oom` event carries the counts; turned off, only the hog dies
/// and the stop kills the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_oom_in_a_tree_takes_the_whole_tree() {
    let test = "vm_oom_in_a_tree_takes_the_whole_tree";
    let Some(env) = env(test) else { return };
    if !needs(&env, test, &["memory"]) {
        return;
    }
    for group in [None, Some(false)] {
        let mut spec = sh(
            "oom-tree",
            "sleep 1000 & sleep 1000 & exec perl -e '$x = q(x) x (512 << 20); print qq(survived\\n)'",
        );
        spec.limits.memory_max = Some(32 << 20);
        spec.limits.memory_swap_max = swap_accounting().then_some(0);
        spec.limits.oom_group = group;
        spec.stop.grace_period_ms = 200;
        let mut events = env.sup.events();
        let s = env.sup.start(spec).await.unwrap().info;
        let r = tokio::time::timeout(
            Duration::from_secs(120),
            env.sup.wait_stopped(&s.id, Some(s.lifecycle)),
        )
        .await
        .expect("no OOM within 120 s")
        .unwrap();
        assert_eq!(r.reason, StopReason::Oom, "{group:?}: {r:?}");
        let mut oom_event = None;
        while let Ok(ev) = events.try_recv() {
            if let EventKind::Oom {
                oom_kills,
                oom_group_kills,
            } = ev.kind
            {
                oom_event = Some((oom_kills, oom_group_kills));
            }
        }
        let (kills, group_kills) = oom_event.expect("an oom event");
        println!(
            "{test}: oom_group {group:?}: oom_kills {kills}, oom_group_kills {group_kills}, report {:?}/{:?}, killed after grace {}",
            r.oom_kills, r.oom_group_kills, r.killed_after_grace
        );
        if group.is_none() {
            assert!(group_kills >= 1, "a group kill: {r:?}");
            assert!(
                kills >= 3,
                "the hog and both sleeps were OOM-killed: {kills}"
            );
            assert_eq!(
                r.killed_after_grace, 0,
                "nothing left for the stop to kill: {r:?}"
            );
        } else {
            assert_eq!(group_kills, 0, "{r:?}");
            assert_eq!(kills, 1, "only the hog");
            assert_eq!(
                r.killed_after_grace + r.signalled,
                2,
                "the stop ended the sleeps: {r:?}"
            );
        }
        assert!(r.oom_kills.is_some_and(|n| n == kills), "{r:?}");
        env.assert_no_leaks();
    }
}

/// `cpuset.cpus`: the payload sees exactly the CPUs it was given (`Cpus_allowed_list`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_cpuset_is_what_the_payload_sees() {
    let test = "vm_cpuset_is_what_the_payload_sees";
    let Some(env) = env(test) else { return };
    if !needs(&env, test, &["cpuset"]) {
        return;
    }
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let last = online.trim().rsplit(['-', ',']).next().unwrap().to_owned();
    let out = env.scratch.path("cpus");
    let mut spec = sh(
        "cpuset",
        &format!(
            "grep Cpus_allowed_list /proc/self/status > {}",
            out.display()
        ),
    );
    spec.limits.cpuset_cpus = Some(last.clone());
    spec.limits.cpuset_mems = Some("0".into());
    let s = env.sup.start(spec).await.unwrap().info;
    env.sup.wait_stopped(&s.id, None).await.unwrap();
    let seen = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        seen.split_whitespace().nth(1),
        Some(last.as_str()),
        "{seen}"
    );
    println!(
        "{test}: online {}, given {last}, seen {}",
        online.trim(),
        seen.trim()
    );
    env.assert_no_leaks();
}

/// A loop device over a file in /tmp, detached (and the file removed) on drop.
struct LoopDev {
    dev: PathBuf,
    file: PathBuf,
}

impl LoopDev {
    fn new(test: &str, mib: u64) -> Option<LoopDev> {
        if !Path::new("/dev/loop-control").exists() {
            skip_missing(test, "no loop devices (/dev/loop-control)");
            return None;
        }
        let file = std::env::temp_dir().join(format!("paddock-{test}-{}.img", std::process::id()));
        let f = std::fs::File::create(&file).unwrap();
        f.set_len(mib << 20).unwrap();
        let out = std::process::Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&file)
            .output()
            .expect("losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dev = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        Some(LoopDev { dev, file })
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .arg("-d")
            .arg(&self.dev)
            .status();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// `dd`'s own figure: (bytes, seconds) from its last line on stderr.
fn dd_figures(text: &str) -> (u64, f64) {
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("bytes"))
        .unwrap_or_else(|| panic!("dd said: {text}"));
    let bytes = line.split_whitespace().next().unwrap().parse().unwrap();
    let secs = line
        .split(", ")
        .find_map(|p| p.strip_suffix(" s"))
        .unwrap_or_else(|| panic!("no seconds in {line:?}"))
        .parse()
        .unwrap();
    (bytes, secs)
}

/// `io.max` on a loop device: `dd oflag=direct` writes at no more than the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_io_max_bounds_direct_writes() {
    let test = "vm_io_max_bounds_direct_writes";
    let Some(env) = env(test) else { return };
    if !needs(&env, test, &["io"]) {
        return;
    }
    let Some(lo) = LoopDev::new(test, 16) else {
        return;
    };
    const CAP: u64 = 1 << 20;
    let mut rates = Vec::new();
    for capped in [false, true] {
        let out = env.scratch.path(&format!("dd-{capped}"));
        let mut spec = sh(
            "io",
            &format!(
                "dd if=/dev/zero of={} bs=64k count=48 oflag=direct 2> {}",
                lo.dev.display(),
                out.display()
            ),
        );
        if capped {
            spec.limits.io_max = vec![IoDeviceLimit {
                device: lo.dev.clone(),
                read_bps: None,
                write_bps: Some(CAP),
                read_iops: None,
                write_iops: None,
            }];
        }
        let t0 = Instant::now();
        let s = env.sup.start(spec).await.unwrap().info;
        let r = env.sup.wait_stopped(&s.id, None).await.unwrap();
        assert_eq!(
            env.sup.get(&s.id).unwrap().main_exit.unwrap().code,
            Some(0),
            "{r:?}"
        );
        let (bytes, secs) = dd_figures(&std::fs::read_to_string(&out).unwrap());
        let rate = bytes as f64 / secs;
        println!(
            "{test}: capped {capped}: {bytes} bytes in {secs:.3} s = {:.0} KiB/s (sandbox {:.2} s)",
            rate / 1024.0,
            t0.elapsed().as_secs_f64()
        );
        rates.push(rate);
        env.sup.forget(&s.id).unwrap();
    }
    let cap = CAP as f64;
    assert!(
        rates[1] <= cap * 1.25,
        "capped at {cap} B/s, wrote at {} B/s",
        rates[1]
    );
    assert!(rates[1] >= cap * 0.4, "far below the cap: {} B/s", rates[1]);
    assert!(
        rates[0] > rates[1] * 2.0,
        "uncapped {} vs capped {}",
        rates[0],
        rates[1]
    );
    env.assert_no_leaks();
}

/// `memory.swap.max`: with swap (a swap area on a loop device) a hog of twice `memory.max`
/// runs to its end and its cgroup swaps; with `memory.swap.max` 0 it is OOM-killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_swap_max_decides_whether_a_hog_swaps() {
    let test = "vm_swap_max_decides_whether_a_hog_swaps";
    // Only the memory controller for the sandboxes: the swap area is a loop device over a
    // file in the VM's tmpfs, and the loop driver charges its writes to the memory cgroup
    // of the io cgroup of the request; with io enabled for the sandbox that is the sandbox
    // itself, at its limit, and every swap-out fails (a real disk has no such recursion).
    let Some(env) = env_with(test, |c| c.controllers = vec!["memory".into()]) else {
        return;
    };
    if !needs(&env, test, &["memory"]) {
        return;
    }
    if !swap_accounting() {
        skip_missing(test, "no memory.swap.max (no swap accounting)");
        return;
    }
    let Some(lo) = LoopDev::new(test, 128) else {
        return;
    };
    let run = |cmd: &str, args: &[&std::ffi::OsStr]| {
        let st = std::process::Command::new(cmd).args(args).output().unwrap();
        assert!(
            st.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    };
    run("mkswap", &[lo.dev.as_os_str()]);
    run("swapon", &[lo.dev.as_os_str()]);
    struct SwapOff(PathBuf);
    impl Drop for SwapOff {
        fn drop(&mut self) {
            let _ = std::process::Command::new("swapoff").arg(&self.0).status();
        }
    }
    let _off = SwapOff(lo.dev.clone());
    for (swap, survives) in [(64u64 << 20, true), (0, false)] {
        let out = env.scratch.path(&format!("swap-{swap}"));
        let mut spec = sh(
            "swap",
            &format!(
                "exec perl -e '$x = q(x) x (32 << 20); open C, q(/proc/self/cgroup); while (<C>) {{ chomp; $l = $_ if s/^0:://; }} open S, qq(/sys/fs/cgroup$l/memory.swap.current) or die qq(open /sys/fs/cgroup$l/memory.swap.current: $!); print <S>' > {} 2>&1",
                out.display()
            ),
        );
        spec.limits.memory_max = Some(16 << 20);
        spec.limits.memory_swap_max = Some(swap);
        let s = env.sup.start(spec).await.unwrap().info;
        let r = tokio::time::timeout(Duration::from_secs(180), env.sup.wait_stopped(&s.id, None))
            .await
            .expect("the hog neither ended nor was killed within 180 s")
            .unwrap();
        let exit = env.sup.get(&s.id).unwrap().main_exit.unwrap();
        let swapped = std::fs::read_to_string(&out).unwrap_or_default();
        println!(
            "{test}: swap.max {swap}: exit {exit:?}, reason {:?}, swap.current at the end {:?}",
            r.reason,
            swapped.trim()
        );
        if survives {
            assert_eq!(exit.code, Some(0), "{r:?}");
            let used: u64 = swapped.trim().parse().expect("memory.swap.current");
            assert!(used >= 8 << 20, "swapped only {used} bytes");
        } else {
            assert_eq!(exit.signal, Some(9), "{r:?}");
            assert_eq!(r.reason, StopReason::Oom, "{r:?}");
        }
        env.sup.forget(&s.id).unwrap();
    }
    env.assert_no_leaks();
}
