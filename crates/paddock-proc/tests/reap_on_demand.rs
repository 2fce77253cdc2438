//! `reap_orphans` sweeps on the caller's thread when it can (its fast path): it must never
//! take the exit status of a child spawned through the crate, whose `Process` reports it,
//! however the calls interleave with those children's exits. (Its own test binary: the
//! reaper is process-global.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use paddock_proc::{Command, ExitStatus};

#[test]
fn on_demand_sweeps_never_take_a_spawned_childs_status() {
    let stop = Arc::new(AtomicBool::new(false));
    let sweeper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let mut sweeps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                rt.block_on(paddock_proc::reap_orphans());
                sweeps += 1;
            }
            sweeps
        })
    };
    let before = paddock_proc::orphans_reaped();
    for i in 0..300 {
        let code = i % 200;
        let st = Command::new("/bin/sh")
            .args(["-c", &format!("exit {code}")])
            .status()
            .unwrap();
        assert_eq!(st, ExitStatus::Exited(code), "child {i}");
    }
    stop.store(true, Ordering::Relaxed);
    let sweeps = sweeper.join().unwrap();
    assert!(sweeps > 0, "the sweeper never ran");
    // Nothing here made an orphan: a spawned child taken by a sweep would count as one.
    assert_eq!(paddock_proc::orphans_reaped(), before);
}
