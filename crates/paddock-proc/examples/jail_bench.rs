//! The cost of the fork-like clone that jails changing credentials, making a user namespace
//! or running an init use, against the vfork-like default: spawn + wait of `/bin/true` N
//! times each way (alternating), with an optional ballast of touched heap in the parent to
//! show what copying its page tables costs a fork-like clone.
//!
//! Run (as root or not): `cargo run --release -p paddock-proc --example jail_bench
//! [ITERATIONS] [--ballast MiB]`. Prints the median and p90 per way, and their ratio.

use std::time::Instant;

use paddock_proc::{Command, ExitStatus};

fn median_p90(mut v: Vec<u128>) -> (u128, u128) {
    v.sort_unstable();
    (v[v.len() / 2], v[v.len() * 9 / 10])
}

fn main() {
    let mut iterations = 2000usize;
    let mut ballast_mib = 0usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--ballast" => {
                ballast_mib = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            n => iterations = n.parse().unwrap_or_else(|_| usage()),
        }
    }
    // Touched heap: every page is mapped, so a fork-like clone copies its page tables.
    let mut ballast = vec![0u8; ballast_mib << 20];
    for i in (0..ballast.len()).step_by(4096) {
        ballast[i] = 1;
    }
    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..iterations {
        for (way, fork_like) in [false, true].into_iter().enumerate() {
            let t = Instant::now();
            let st = Command::new("/bin/true")
                .force_fork_like(fork_like)
                .status()
                .expect("spawn /bin/true");
            times[way].push(t.elapsed().as_nanos());
            assert_eq!(st, ExitStatus::Exited(0));
        }
    }
    std::hint::black_box(&ballast);
    let [vfork, fork] = times;
    let (vm, vp) = median_p90(vfork);
    let (fm, fp) = median_p90(fork);
    println!("iterations {iterations}, ballast {ballast_mib} MiB of touched heap");
    println!(
        "vfork-like: median {:.1} us, p90 {:.1} us",
        vm as f64 / 1e3,
        vp as f64 / 1e3
    );
    println!(
        "fork-like:  median {:.1} us, p90 {:.1} us",
        fm as f64 / 1e3,
        fp as f64 / 1e3
    );
    println!(
        "fork-like / vfork-like (median): {:.2}",
        fm as f64 / vm as f64
    );
}

fn usage() -> ! {
    eprintln!("usage: jail_bench [ITERATIONS] [--ballast MiB]");
    std::process::exit(2)
}
