//! Real resource limits against the kernel: memory.max (OOM kill), memory.high (throttling),
//! pids.max (fork storm), cpu.max (quota), and the delegation layout with the
//! no-internal-process rule.
//!
//! These need the memory, pids and cpu controllers in the cgroup v2 hierarchy. On a hybrid
//! host (the development machine) they print `SKIP <test>: <reason>` and pass; inside the
//! pure-v2 VM of `vm/run-tests` (`PADDOCK_VM=1`) a missing controller is a failure. Kernel
//! features newer than the oldest covered kernel (6.1) are probed, never assumed.

mod common;

use std::time::{Duration, Instant};

use common::*;
use paddock_cgroup::{CpuMax, Error, Limit, LimitKind, Max, RemoveOptions};

const MIB: u64 = 1 << 20;

/// Turn swap off for the cgroup where the kernel has swap accounting, so a hog cannot
/// escape its memory limit into swap on a host that has swap.
fn no_swap(cg: &paddock_cgroup::Cgroup) {
    if has_file(cg, "memory.swap.max") {
        std::fs::write(cg.path().join("memory.swap.max"), "0").unwrap();
    }
}

#[tokio::test]
async fn memory_max_oom_kills_the_hog() {
    const T: &str = "memory_max_oom_kills_the_hog";
    let Some((_t, root)) = root_with_controllers(T, &["memory"]) else {
        return;
    };
    let cg = root.create(&name("sbx-oom")).unwrap();
    let max = 32 * MIB;
    cg.set_limit(Limit::MemoryMax(Max::Value(max))).unwrap();
    assert_eq!(
        cg.limit(LimitKind::MemoryMax).unwrap(),
        Some(Limit::MemoryMax(Max::Value(max)))
    );
    no_swap(&cg);
    let before = cg.stats().unwrap().memory_events.expect("memory.events");
    assert_eq!(before.oom_kill, 0);

    // Touch 8x the limit, 1 MiB at a time: the kernel must OOM-kill the child.
    let pid = fork_in(&cg, || touch_memory(8 * max as usize, MIB as usize));
    let ended = wait_pid(pid, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("hog {pid} was not OOM-killed within 60 s at memory.max={max}"));
    assert_eq!(
        ended,
        Ended::Signal(libc::SIGKILL),
        "the hog must die by the OOM killer's SIGKILL"
    );

    let s = cg.stats().unwrap();
    let ev = s.memory_events.expect("memory.events");
    eprintln!("{T}: memory.events {ev:?}, peak {:?}", s.memory_peak);
    assert!(ev.oom_kill >= 1, "oom_kill must count the kill: {ev:?}");
    assert!(ev.max >= 1, "usage must have hit memory.max: {ev:?}");
    assert!(ev.oom >= 1, "{ev:?}");
    // memory.peak exists since 5.19 (so on every covered kernel), but stay honest.
    match s.memory_peak {
        Some(peak) => {
            assert!(peak <= max, "peak {peak} above memory.max {max}");
            assert!(
                peak >= max / 2,
                "peak {peak} should approach memory.max {max}"
            );
        }
        None => eprintln!("{T}: memory.peak not offered by this kernel (added in 5.19)"),
    }
    cg.remove(&RemoveOptions::default()).await.unwrap();
}

#[tokio::test]
async fn memory_high_throttles_without_killing() {
    const T: &str = "memory_high_throttles_without_killing";
    let Some((_t, root)) = root_with_controllers(T, &["memory"]) else {
        return;
    };
    let cg = root.create(&name("sbx-high")).unwrap();
    let high = 16 * MIB;
    cg.set_limit(Limit::MemoryHigh(Max::Value(high))).unwrap();
    assert_eq!(
        cg.limit(LimitKind::MemoryHigh).unwrap(),
        Some(Limit::MemoryHigh(Max::Value(high)))
    );
    // No swap: anonymous memory over memory.high cannot be reclaimed, so the kernel
    // throttles the allocator (penalty sleeps of up to 2 s per return to user space) instead
    // of letting it run away. memory.max stays `max`: nothing may be killed.
    no_swap(&cg);
    let want = 128 * MIB;
    let pid = fork_in(&cg, || touch_memory(want as usize, 256 << 10));

    let start = Instant::now();
    let mut worst = 0u64;
    let mut high_events = 0u64;
    while start.elapsed() < Duration::from_secs(4) {
        let s = cg.stats().unwrap();
        worst = worst.max(s.memory_current.unwrap());
        high_events = s.memory_events.unwrap().high;
        std::thread::sleep(Duration::from_millis(50));
    }
    let still_running = wait_pid(pid, Duration::ZERO).is_none();
    let s = cg.stats().unwrap();
    let ev = s.memory_events.unwrap();
    eprintln!(
        "{T}: after {:?}: current {} MiB, worst {} MiB, high {} MiB, events {ev:?}, hog running {still_running}",
        start.elapsed(),
        s.memory_current.unwrap() / MIB,
        worst / MIB,
        high / MIB
    );
    assert!(high_events >= 1, "memory.events high must count: {ev:?}");
    assert_eq!(ev.oom_kill, 0, "memory.high must never kill: {ev:?}");
    assert!(
        still_running,
        "a hog wanting {} MiB above memory.high {} MiB must be throttled, not finish in 4 s",
        want / MIB,
        high / MIB
    );
    // "Near" high: the kernel overshoots by the charge batch and the penalty grows with
    // the overage; allow 50% over, far below the 128 MiB the hog wants.
    assert!(
        worst <= high + high / 2,
        "usage {} MiB ran far past memory.high {} MiB",
        worst / MIB,
        high / MIB
    );
    cg.remove(&RemoveOptions::default()).await.unwrap();
    assert!(wait_pid(pid, Duration::from_secs(10)).is_some());
}

#[tokio::test]
async fn pids_max_stops_a_fork_storm() {
    const T: &str = "pids_max_stops_a_fork_storm";
    let Some((_t, root)) = root_with_controllers(T, &["pids"]) else {
        return;
    };
    let cg = root.create(&name("sbx-pids")).unwrap();
    let max = 8u64;
    cg.set_limit(Limit::PidsMax(Max::Value(max))).unwrap();
    assert_eq!(
        cg.limit(LimitKind::PidsMax).unwrap(),
        Some(Limit::PidsMax(Max::Value(max)))
    );

    // The storm forks until fork fails, reports (forks, errno) through a pipe, then waits
    // to be killed with all its children so pids.current can be read at its high mark.
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (rd, wr) = (fds[0], fds[1]);
    let pid = fork_in(&cg, move || {
        let mut forks: u32 = 0;
        let errno;
        loop {
            // SAFETY: fork; the grandchild only pauses until it is killed.
            let r = unsafe { libc::fork() };
            if r == 0 {
                loop {
                    // SAFETY: pause has no preconditions.
                    unsafe { libc::pause() };
                }
            }
            if r < 0 {
                // SAFETY: reading errno of this thread.
                errno = unsafe { *libc::__errno_location() };
                break;
            }
            forks += 1;
            if forks > 10_000 {
                errno = 0;
                break;
            }
        }
        let msg = [forks.to_ne_bytes(), (errno as u32).to_ne_bytes()].concat_array();
        // SAFETY: write of a stack buffer to the pipe's write end.
        unsafe { libc::write(wr, msg.as_ptr().cast(), msg.len()) };
        loop {
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        }
    });
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(wr) };
    let mut buf = [0u8; 8];
    // SAFETY: blocking read into a stack buffer of its length; the child writes 8 bytes.
    let n = unsafe { libc::read(rd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: closing our read end.
    unsafe { libc::close(rd) };
    assert_eq!(n, 8, "the fork storm did not report");
    let forks = u32::from_ne_bytes(buf[..4].try_into().unwrap());
    let errno = u32::from_ne_bytes(buf[4..].try_into().unwrap()) as i32;

    let s = cg.stats().unwrap();
    let current = s.pids_current.expect("pids.current");
    let pids_events_max = flat_key(&cg, "pids.events", "max");
    eprintln!(
        "{T}: forks {forks}, errno {errno}, pids.current {current}, pids.events max {pids_events_max:?}"
    );
    assert_eq!(
        errno,
        libc::EAGAIN,
        "fork must fail with EAGAIN at pids.max"
    );
    assert_eq!(
        forks as u64,
        max - 1,
        "the storm leader plus its children fill pids.max exactly"
    );
    assert!(current <= max, "pids.current {current} > pids.max {max}");
    assert_eq!(current, max);
    if let Some(m) = pids_events_max {
        assert!(m >= 1, "pids.events max must count the refused fork");
    }
    let r = cg.remove(&RemoveOptions::default()).await.unwrap();
    assert!(
        !r.fast_path,
        "the storm was still there; removal had to kill it"
    );
    assert!(matches!(
        wait_pid(pid, Duration::from_secs(10)),
        Some(Ended::Signal(libc::SIGKILL))
    ));
}

/// `[[u8; 4]; 2]` to `[u8; 8]` without allocating (the fork child may not allocate).
trait ConcatArray {
    fn concat_array(self) -> [u8; 8];
}
impl ConcatArray for [[u8; 4]; 2] {
    fn concat_array(self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&self[0]);
        out[4..].copy_from_slice(&self[1]);
        out
    }
}

#[tokio::test]
async fn cpu_max_caps_a_busy_loop() {
    const T: &str = "cpu_max_caps_a_busy_loop";
    let Some((_t, root)) = root_with_controllers(T, &["cpu"]) else {
        return;
    };
    let cg = root.create(&name("sbx-cpu")).unwrap();
    let quota = CpuMax::from_cpus(0.2).unwrap();
    cg.set_limit(Limit::CpuMax(quota)).unwrap();
    assert_eq!(
        cg.limit(LimitKind::CpuMax).unwrap(),
        Some(Limit::CpuMax(quota))
    );
    let pid = fork_in(&cg, || {
        loop {
            std::hint::spin_loop();
        }
    });
    // Let it settle into the quota, then measure usage over wall time.
    std::thread::sleep(Duration::from_millis(300));
    let a = cg.stats().unwrap().cpu.unwrap();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let b = cg.stats().unwrap().cpu.unwrap();
    let wall = t0.elapsed();
    let used = (b.usage_usec - a.usage_usec) as f64 / wall.as_micros() as f64;
    let throttled = b.nr_throttled.unwrap() - a.nr_throttled.unwrap();
    eprintln!(
        "{T}: quota 0.2 CPU, measured {used:.3} CPU over {wall:?}, throttled in {throttled} of {} periods",
        b.nr_periods.unwrap() - a.nr_periods.unwrap()
    );
    // Tolerance: usage is charged per tick and CFS bandwidth refills per 100 ms period, and
    // under TCG the guest clock is coarse; 0.3 is 50% over the quota and still far below the
    // 1.0 an unthrottled loop would use.
    assert!(
        used <= 0.3,
        "busy loop used {used:.3} CPU under a 0.2 quota"
    );
    assert!(used >= 0.05, "busy loop barely ran ({used:.3} CPU)");
    assert!(throttled >= 1, "cpu.stat must show throttling");
    cg.remove(&RemoveOptions::default()).await.unwrap();
    assert!(wait_pid(pid, Duration::from_secs(10)).is_some());
}

#[tokio::test]
async fn delegation_layout_and_no_internal_processes() {
    const T: &str = "delegation_layout_and_no_internal_processes";
    let ctl = ["memory", "pids", "cpu"];
    let Some((t, root)) = root_with_controllers(T, &ctl) else {
        return;
    };
    // The managed root delegates the controllers to its sandboxes.
    let sc = std::fs::read_to_string(root.path().join("cgroup.subtree_control")).unwrap();
    for c in ctl {
        assert!(sc.split_whitespace().any(|s| s == c), "{c} not in {sc:?}");
    }
    let a = root.create(&name("sbx-a")).unwrap();
    let b = root.create(&name("sbx-b")).unwrap();
    for cg in [&a, &b] {
        for c in ctl {
            assert!(cg.has_controller(c).unwrap(), "{c} not delegated to {cg:?}");
        }
        assert!(has_file(cg, "memory.max") && has_file(cg, "pids.max") && has_file(cg, "cpu.max"));
    }
    let (names, other) = root.list().unwrap();
    assert_eq!(names, vec![name("sbx-a"), name("sbx-b")]);
    assert!(other.is_empty());

    // The no-internal-process rule: a cgroup with processes of its own cannot hand domain
    // controllers to children. Put a process into a second root, then try.
    let inner = paddock_cgroup::Root::open_or_create(&t.path().join("busy")).unwrap();
    let child = {
        let cg = inner.create(&name("leaf")).unwrap();
        let c = spawn_in(&cg, "exec sleep 300");
        wait_procs(&cg, 1, Duration::from_secs(5));
        // Move it up into `busy` itself.
        std::fs::write(inner.path().join("cgroup.procs"), c.id().to_string()).unwrap();
        assert_eq!(cg.procs().unwrap(), Vec::<i32>::new());
        c
    };
    let e = inner.enable_controllers(&["memory"]).unwrap_err();
    let msg = e.to_string();
    eprintln!("{T}: enabling memory on a cgroup with a process: {msg}");
    assert!(
        matches!(&e, Error::Io { errno, .. } if *errno == rustix::io::Errno::BUSY),
        "{e:?}"
    );
    assert!(msg.contains("no-internal-process"), "{msg}");
    assert!(msg.contains("cgroup.subtree_control"), "{msg}");
    // The remedy the message names works: move the process into a leaf, then enable.
    let leaf = inner.open(&name("leaf")).unwrap();
    std::fs::write(leaf.path().join("cgroup.procs"), child.id().to_string()).unwrap();
    inner.enable_controllers(&["memory"]).unwrap();
    assert!(leaf.has_controller("memory").unwrap());

    leaf.remove(&RemoveOptions::default()).await.unwrap();
    let _ = reap(child, Duration::from_secs(10));
    a.remove(&RemoveOptions::default()).await.unwrap();
    b.remove(&RemoveOptions::default()).await.unwrap();
    assert_eq!(root.stat().unwrap().nr_descendants, 0);
}

/// Inside the VM, the hierarchy must offer every controller the harness promises, so that
/// no test above can pass by skipping.
#[test]
fn vm_offers_all_controllers() {
    if !in_vm() {
        paddock_testutil::note_skip(
            "vm_offers_all_controllers",
            "not inside the vm/run-tests VM (PADDOCK_VM!=1)",
        );
        return;
    }
    let mount = paddock_testutil::cgroup2_mount().expect("cgroup2 mounted");
    assert_eq!(
        mount,
        std::path::Path::new("/sys/fs/cgroup"),
        "pure v2 layout"
    );
    let offered = std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap();
    for c in ["cpu", "memory", "pids", "io", "cpuset"] {
        assert!(
            offered.split_whitespace().any(|o| o == c),
            "{c} missing: {offered}"
        );
    }
}

/// The delegated layout (a supervisor started in its own delegated cgroup, as systemd's
/// `Delegate=yes` does): `Root::open_delegated` moves the supervisor into a leaf, makes the
/// sandboxes' root a sibling of it, and hands the controllers down to the sandboxes, which
/// then get real limits. Runs everywhere; the controllers are required in the VM.
#[tokio::test]
async fn delegated_layout_supervisor_in_a_leaf_sandboxes_beside_it() {
    const T: &str = "delegated_layout_supervisor_in_a_leaf_sandboxes_beside_it";
    let Some((t, outer)) = root(T) else { return };
    // The test root and `outer` hand down whatever they are offered, so `svc` (the
    // delegated cgroup) is offered it in turn.
    t.enable_all_controllers();
    let outer_offered = outer.controllers().unwrap();
    outer
        .enable_controllers(&outer_offered.iter().map(String::as_str).collect::<Vec<_>>())
        .unwrap();
    let svc = outer.create(&name("svc")).unwrap();
    let offered: Vec<String> = std::fs::read_to_string(svc.path().join("cgroup.controllers"))
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let want = ["memory", "pids", "cpu", "io"];
    if in_vm() {
        for c in ["memory", "pids", "cpu"] {
            assert!(
                offered.iter().any(|o| o == c),
                "{c} not offered: {offered:?}"
            );
        }
    } else if offered.is_empty() {
        eprintln!("{T}: no controller offered here (hybrid host): the layout only");
    }
    // "The supervisor", started in the delegated cgroup itself (an internal process).
    let sup = spawn_in(&svc, "exec sleep 300");
    let sup_pid = wait_procs(&svc, 1, Duration::from_secs(5))[0];

    let sandboxes = paddock_cgroup::Root::open_delegated(svc.path(), &want).unwrap();
    assert_eq!(sandboxes.path(), svc.path().join(paddock_cgroup::SANDBOXES));
    let leaf = svc.path().join(paddock_cgroup::SUPERVISOR_LEAF);
    let read = |p: &std::path::Path, f: &str| std::fs::read_to_string(p.join(f)).unwrap();
    assert_eq!(
        read(svc.path(), "cgroup.procs").trim(),
        "",
        "base still holds processes"
    );
    assert_eq!(read(&leaf, "cgroup.procs").trim(), sup_pid.to_string());
    let enabled: Vec<&str> = want
        .iter()
        .copied()
        .filter(|c| offered.iter().any(|o| o == c))
        .collect();
    for c in &enabled {
        for p in [svc.path(), sandboxes.path()] {
            assert!(
                read(p, "cgroup.subtree_control")
                    .split_whitespace()
                    .any(|s| s == *c),
                "{c} not enabled in {}",
                p.display()
            );
        }
    }
    // Idempotent (a restarted supervisor): the same layout, nothing refused.
    let again = paddock_cgroup::Root::open_delegated(svc.path(), &want).unwrap();
    assert_eq!(again.path(), sandboxes.path());

    // A sandbox under it gets its limit and its process; no EBUSY anywhere.
    let sbx = sandboxes.create(&name("sbx")).unwrap();
    if enabled.contains(&"memory") {
        sbx.set_limit(Limit::MemoryMax(Max::Value(64 * MIB)))
            .unwrap();
        assert_eq!(
            read(sbx.path(), "memory.max").trim(),
            (64 * MIB).to_string()
        );
    }
    let child = spawn_in(&sbx, "exec sleep 300");
    wait_procs(&sbx, 1, Duration::from_secs(5));
    sbx.remove(&RemoveOptions::default()).await.unwrap();
    let _ = reap(child, Duration::from_secs(5));
    assert!(!sbx.path().exists());
    let mut sup = sup;
    sup.kill().unwrap();
    let _ = reap(sup, Duration::from_secs(5));
}

/// `Root::open_delegated_with_leaf` (the leaf of `paddock hold-cgroup`) refuses a leaf
/// named like the managed root or not a cgroup name, before it opens or changes anything
/// (the base named here does not exist and is not created).
#[test]
fn delegated_leaf_names_are_checked_first() {
    let base = std::path::Path::new("paddock-test.no-such-base/svc");
    for bad in [paddock_cgroup::SANDBOXES, "..", "a/b", ""] {
        let e = paddock_cgroup::Root::open_delegated_with_leaf(base, bad, &["pids"])
            .err()
            .unwrap_or_else(|| panic!("leaf {bad:?} accepted"));
        let msg = e.to_string();
        assert!(!msg.is_empty(), "{bad:?}");
        if bad == paddock_cgroup::SANDBOXES {
            assert!(msg.contains("sandboxes"), "{msg}");
        }
    }
    let mount = paddock_cgroup::mount::discover().map(|m| m.mount_point);
    if let Ok(m) = mount {
        assert!(!m.join("paddock-test.no-such-base").exists());
    }
}
