//! The CI torture run: a short mixed run of every case with every fault through the
//! library API of the crate, which must find zero leaks.

use std::time::{Duration, Instant};

use paddock_torture::{Case, Options, StopFlag};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_mixed_run_finds_no_leaks() {
    let test = "short_mixed_run_finds_no_leaks";
    let Some(t) = paddock_testutil::test_root(test) else {
        return;
    };
    let scratch = std::env::temp_dir().join(format!("paddock-torture-test-{}", std::process::id()));
    let opts = Options {
        count: Some(60),
        duration: None,
        concurrency: 4,
        seed: std::env::var("PADDOCK_TORTURE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5EED),
        cases: Case::ALL.to_vec(),
        cgroup_root: Some(t.path().join("torture")),
        scratch: Some(scratch.clone()),
        verbose: false,
        // Short: a hang (see docs/torture.md, known bugs) must not stall CI.
        lifecycle_timeout: Duration::from_secs(15),
    };
    let t0 = Instant::now();
    let summary = paddock_torture::run(opts, StopFlag::default())
        .await
        .expect("torture run");
    eprintln!("{}", summary.render());
    let _ = std::fs::remove_dir_all(&scratch);
    assert_eq!(summary.lifecycles_completed, 60);
    assert_eq!(summary.leaks_found, 0, "{:#?}", summary.leaks);
    // Everything the run made is gone (the test root itself goes when `t` drops).
    assert!(
        paddock_testutil::procs_recursive(t.path()).is_empty(),
        "processes left under {}",
        t.path().display()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(120),
        "took {:?}",
        t0.elapsed()
    );
    if paddock_torture::unkillable_unavailable().is_none() {
        assert_eq!(summary.quarantines, summary.quarantines_drained);
    }
    // Errors other than leaks (hangs, state that disagrees with the cgroup) are failures
    // too: the two bugs this runner found in the supervisor are fixed and have regression
    // tests in paddock-supervisor's sandbox_lifecycle.rs.
    assert!(
        summary.errors.is_empty(),
        "torture errors: {:#?}",
        summary.errors
    );
}
