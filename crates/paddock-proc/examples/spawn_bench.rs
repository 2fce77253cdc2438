//! Spawn-into-cgroup + wait of `/bin/true`: paddock-proc versus bare system calls.
//!
//! Run (as root, needs a writable cgroup2 hierarchy):
//! `cargo run --release -p paddock-proc --example spawn_bench [ITERATIONS] [--max-ratio R]`
//!
//! With `--max-ratio R` it is a gate: it exits with status 1 when the median ratio
//! crate/raw is above `R` (the bound is 1.3). The last line of output is always one
//! machine-readable line, `spawn_bench {json}`, for example
//! `spawn_bench {"iterations":2000,"crate_median_ns":...,"raw_median_ns":...,
//! "ratio_median":0.97,"ratio_p90":1.01,"max_ratio":1.3,"pass":true}` (`max_ratio` is
//! `null` and `pass` `true` without a gate). Usage errors exit with status 2.
//!
//! The raw variant does `clone3(CLONE_INTO_CGROUP | CLONE_PIDFD)` + `execve` +
//! `waitid(P_PIDFD)` with no bookkeeping. It runs in a helper process (this binary with
//! `--raw-server`, started through paddock-proc) because the crate's process-global reaper
//! would otherwise reap the raw children; the two variants alternate step by step (ping-pong
//! over pipes), each timed with `Instant` inside the process that does the work.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use paddock_proc::{CLONE_INTO_CGROUP, Command, ExitStatus};

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

fn raw_spawn_wait(
    cg: BorrowedFd<'_>,
    path: &CString,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) {
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: CLONE_INTO_CGROUP | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cg.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: fork-like clone3 (no CLONE_VM, no stack) with a valid clone_args.
    let pid = unsafe { libc::syscall(libc::SYS_clone3, &mut args as *mut CloneArgs, 88usize) };
    assert!(pid >= 0, "clone3: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: in the child, only execve and _exit on prepared, valid pointers.
        unsafe {
            libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
    }
    // SAFETY: waitid on the pidfd we own, with a zeroed siginfo; then close the pidfd.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(libc::P_PIDFD, pidfd as libc::id_t, &mut info, libc::WEXITED);
        assert_eq!(r, 0, "waitid: {}", std::io::Error::last_os_error());
        assert_eq!((info.si_code, info.si_status()), (libc::CLD_EXITED, 0));
        libc::close(pidfd);
    }
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() * 9 / 10])
}

fn raw_server(cg_path: &str) {
    use std::io::{Read, Write};
    let cg = std::fs::File::open(cg_path).unwrap();
    let path = CString::new("/bin/true").unwrap();
    let argv = [path.as_ptr(), std::ptr::null()];
    let envp = environ();
    let envp_p = ptrs(&envp);
    let (mut input, mut output) = (std::io::stdin().lock(), std::io::stdout().lock());
    let mut b = [0u8; 1];
    while input.read_exact(&mut b).is_ok() {
        let t0 = Instant::now();
        raw_spawn_wait(cg.as_fd(), &path, &argv, &envp_p);
        let ns = t0.elapsed().as_nanos() as u64;
        output.write_all(&ns.to_ne_bytes()).unwrap();
        output.flush().unwrap();
    }
}

fn environ() -> Vec<CString> {
    std::env::vars_os()
        .map(|(k, v)| {
            let mut b = k.as_bytes().to_vec();
            b.push(b'=');
            b.extend_from_slice(v.as_bytes());
            CString::new(b).unwrap()
        })
        .collect()
}

fn ptrs(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

fn usage(msg: &str) -> ! {
    eprintln!("spawn_bench: {msg}\nusage: spawn_bench [ITERATIONS] [--max-ratio R]");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--raw-server") {
        return raw_server(&args[2]);
    }
    let mut n: usize = 2000;
    let mut max_ratio: Option<f64> = None;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--max-ratio" {
            let v = it
                .next()
                .unwrap_or_else(|| usage("--max-ratio needs a value"));
            match v.parse::<f64>() {
                Ok(r) if r > 0.0 => max_ratio = Some(r),
                _ => usage(&format!("bad --max-ratio {v:?}")),
            }
        } else {
            n = a
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .unwrap_or_else(|| usage(&format!("bad iteration count {a:?}")));
        }
    }
    // Everything (the test cgroups included) is cleaned up inside `run`, before the exit.
    let Some(r) = run(n) else {
        return;
    };
    let pass = max_ratio.is_none_or(|m| r.ratio_median <= m);
    if let Some(m) = max_ratio {
        println!(
            "gate: median ratio {:.3}x {} max {m:.3}x: {}",
            r.ratio_median,
            if pass { "<=" } else { ">" },
            if pass { "PASS" } else { "FAIL" }
        );
    }
    println!(
        "spawn_bench {{\"iterations\":{n},\"crate_median_ns\":{},\"crate_p90_ns\":{},\
         \"raw_median_ns\":{},\"raw_p90_ns\":{},\"ratio_median\":{:.4},\"ratio_p90\":{:.4},\
         \"max_ratio\":{},\"pass\":{pass}}}",
        r.crate_median.as_nanos(),
        r.crate_p90.as_nanos(),
        r.raw_median.as_nanos(),
        r.raw_p90.as_nanos(),
        r.ratio_median,
        r.ratio_p90,
        max_ratio.map_or("null".to_string(), |m| format!("{m}")),
    );
    if !pass {
        std::process::exit(1);
    }
}

struct Results {
    crate_median: Duration,
    crate_p90: Duration,
    raw_median: Duration,
    raw_p90: Duration,
    ratio_median: f64,
    ratio_p90: f64,
}

/// Runs the interleaved measurement; `None` when it cannot run here (reason printed).
fn run(n: usize) -> Option<Results> {
    use std::io::{Read, Write};
    let root = paddock_testutil::test_root("spawn_bench")?;
    let leaf = root.path().join("leaf");
    std::fs::create_dir(&leaf).unwrap();
    let leaf_raw = root.path().join("leaf-raw");
    std::fs::create_dir(&leaf_raw).unwrap();
    let cg = std::fs::File::open(&leaf).unwrap();

    let mut server = Command::new(std::env::current_exe().unwrap())
        .arg("--raw-server")
        .arg(&leaf_raw)
        .stdin(paddock_proc::Stdio::Pipe)
        .stdout(paddock_proc::Stdio::Pipe)
        .spawn()
        .unwrap();
    let mut to_raw = std::fs::File::from(server.take_stdin().unwrap());
    let mut from_raw = std::fs::File::from(server.take_stdout().unwrap());
    let mut raw_once = || {
        to_raw.write_all(b"x").unwrap();
        let mut b = [0u8; 8];
        from_raw.read_exact(&mut b).unwrap();
        Duration::from_nanos(u64::from_ne_bytes(b))
    };
    let crate_once = || {
        let t0 = Instant::now();
        let p = Command::new("/bin/true").spawn_in(cg.as_fd()).unwrap();
        assert_eq!(p.wait_blocking(), ExitStatus::Exited(0));
        t0.elapsed()
    };
    for _ in 0..100 {
        crate_once();
        raw_once();
    }
    let (mut t_crate, mut t_raw) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        // Alternate the order so neither variant always runs first.
        if i % 2 == 0 {
            t_crate.push(crate_once());
            t_raw.push(raw_once());
        } else {
            t_raw.push(raw_once());
            t_crate.push(crate_once());
        }
    }
    drop(to_raw);
    assert!(server.wait_blocking().success());
    let (cm, c90) = stats(t_crate);
    let (rm, r90) = stats(t_raw);
    println!("iterations per variant: {n} (interleaved)");
    println!("paddock-proc spawn_in+wait: median {cm:?}  p90 {c90:?}");
    println!("raw clone3+execve+waitid:   median {rm:?}  p90 {r90:?}");
    let ratio_median = cm.as_secs_f64() / rm.as_secs_f64();
    let ratio_p90 = c90.as_secs_f64() / r90.as_secs_f64();
    println!("ratio crate/raw: median {ratio_median:.3}x  p90 {ratio_p90:.3}x");
    drop(root);
    Some(Results {
        crate_median: cm,
        crate_p90: c90,
        raw_median: rm,
        raw_p90: r90,
        ratio_median,
        ratio_p90,
    })
}
