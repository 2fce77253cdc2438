//! The CI torture run: a short mixed run of every case with every fault through the
//! library API of the crate, which must find zero leaks; the same run with every lifecycle
//! jailed; and each case alone.

use std::time::{Duration, Instant};

use paddock_torture::{Case, Options, StopFlag, Summary};

/// The runs of this file one at a time (two at once would share the two cores and make
/// the lifecycle deadline meaningless).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Under the test VM's emulation (`PADDOCK_VM=1`, see docs/vm.md) payloads run 5–20 times
/// slower: the runner's waits and the lifecycle deadline scale by 8 there.
fn time_scale() -> u32 {
    if std::env::var_os("PADDOCK_VM").is_some() {
        8
    } else {
        1
    }
}

/// A case the run skipped is a failure under `PADDOCK_TEST_REQUIRE=1` (through
/// `paddock_testutil::skip`), except `unkillable` where no cgroup v1 freezer exists (a pure
/// cgroup v2 host such as the test VM cannot hold a process in state D that way): that one
/// is printed with its reason.
fn judge_skips(test: &str, summary: &Summary) {
    for sk in &summary.skipped {
        let unkillable = sk.starts_with(&format!("{}:", Case::Unkillable.name()));
        let ruled_out_by_the_jail = summary.jailed
            && paddock_torture::unavailable_jailed(Case::WrapperNetns)
                .is_some_and(|why| sk == &format!("{}: {why}", Case::WrapperNetns.name()));
        match paddock_torture::unkillable_unavailable() {
            Some(why) if unkillable => {
                eprintln!("{test}: case unkillable not run: {why}")
            }
            _ if ruled_out_by_the_jail => eprintln!("{test}: case {sk}"),
            _ => paddock_testutil::skip(test, &format!("case {sk}")),
        }
    }
}

/// Every case the run did not skip ran at least once.
fn assert_every_case_ran(summary: &Summary, cases: &[Case]) {
    for c in cases {
        let skipped = summary
            .skipped
            .iter()
            .any(|s| s.starts_with(&format!("{}:", c.name())));
        if !skipped {
            assert!(
                summary.per_case.get(c.name()).is_some_and(|&n| n > 0),
                "case {} never ran: {:?}",
                c.name(),
                summary.per_case
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_mixed_run_finds_no_leaks() {
    mixed_run("short_mixed_run_finds_no_leaks", false, false).await;
}

/// The same run with every lifecycle in a `veth` network of its own (isolated, with a
/// tap): no link, pinned namespace, nftables rule or lease is left either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn net_mixed_run_finds_no_leaks() {
    mixed_run("net_mixed_run_finds_no_leaks", false, true).await;
}

/// The same run with every lifecycle jailed (pid, mount, ipc and uts namespaces with an
/// init, the default seccomp profile): the jail changes nothing of the containment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jailed_mixed_run_finds_no_leaks() {
    mixed_run("jailed_mixed_run_finds_no_leaks", true, false).await;
}

async fn mixed_run(test: &str, jailed: bool, net: bool) {
    let _serial = SERIAL.lock().await;
    let Some(t) = paddock_testutil::test_root(test) else {
        return;
    };
    // Controllers the host offers reach the torture root (the `pids` controller bounds
    // the fork storms where it exists; the nested payload enables one of them).
    let ctrls = t.enable_all_controllers();
    eprintln!("{test}: controllers offered to the torture root: {ctrls:?}");
    let scratch = std::env::temp_dir().join(format!("paddock-{test}-{}", std::process::id()));
    // 60 lifecycles; 36 under the VM's emulation (still every case: the first lifecycles
    // take each case in turn), which keeps the VM suite within its budget.
    let count = if time_scale() > 1 { 36 } else { 60 };
    let opts = Options {
        count: Some(count),
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
        lifecycle_timeout: Duration::from_secs(15) * time_scale(),
        time_scale: time_scale(),
        rival: true,
        jailed,
        net,
    };
    let t0 = Instant::now();
    let summary = paddock_torture::run(opts, StopFlag::default())
        .await
        .expect("torture run");
    eprintln!("{}", summary.render());
    let _ = std::fs::remove_dir_all(&scratch);
    assert_eq!(summary.lifecycles_completed, count);
    assert_eq!(summary.leaks_found, 0, "{:#?}", summary.leaks);
    judge_skips(test, &summary);
    assert_every_case_ran(&summary, &Case::ALL);
    if ctrls.iter().any(|c| c == "pids") {
        assert!(summary.pids_controller, "pids offered but not used");
        assert!(
            summary.fork_storms > 0,
            "no fork storm ran: {:?}",
            summary.per_case
        );
    }
    // Everything the run made is gone (the test root itself goes when `t` drops).
    assert!(
        paddock_testutil::procs_recursive(t.path()).is_empty(),
        "processes left under {}",
        t.path().display()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(120) * time_scale(),
        "took {:?}",
        t0.elapsed()
    );
    if paddock_torture::unkillable_unavailable().is_none() {
        assert_eq!(summary.quarantines, summary.quarantines_drained);
    }
    // Errors other than leaks (hangs, state that disagrees with the cgroup) are failures
    // too.
    assert!(
        summary.errors.is_empty(),
        "torture errors: {:#?}",
        summary.errors
    );
}

/// Each case alone, three lifecycles each (the runner's `--cases <case> --count 3`), so a
/// case that only fails without the others around it cannot hide in the mix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_case_alone() {
    let test = "each_case_alone";
    let _serial = SERIAL.lock().await;
    let Some(t) = paddock_testutil::test_root(test) else {
        return;
    };
    t.enable_all_controllers();
    let t0 = Instant::now();
    for case in Case::ALL {
        let scratch = std::env::temp_dir().join(format!(
            "paddock-torture-alone-{}-{}",
            std::process::id(),
            case.name()
        ));
        let opts = Options {
            count: Some(3),
            duration: None,
            concurrency: 3,
            seed: std::env::var("PADDOCK_TORTURE_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0xA10E),
            cases: vec![case],
            cgroup_root: Some(t.path().join(format!("alone-{}", case.name()))),
            scratch: Some(scratch.clone()),
            verbose: false,
            lifecycle_timeout: Duration::from_secs(15) * time_scale(),
            time_scale: time_scale(),
            rival: true,
            jailed: false,
            net: false,
        };
        let c0 = Instant::now();
        let summary = paddock_torture::run(opts, StopFlag::default())
            .await
            .expect("torture run");
        let _ = std::fs::remove_dir_all(&scratch);
        eprintln!(
            "{} alone ({:?}):\n{}",
            case.name(),
            c0.elapsed(),
            summary.render()
        );
        judge_skips(test, &summary);
        if summary.skipped.is_empty() {
            assert_eq!(summary.lifecycles_completed, 3, "{}", case.name());
            assert_eq!(summary.per_case.get(case.name()), Some(&3));
        }
        assert_eq!(
            summary.leaks_found,
            0,
            "{}: {:#?}",
            case.name(),
            summary.leaks
        );
        assert!(
            summary.errors.is_empty(),
            "{}: torture errors: {:#?}",
            case.name(),
            summary.errors
        );
    }
    assert!(
        paddock_testutil::procs_recursive(t.path()).is_empty(),
        "processes left under {}",
        t.path().display()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(180) * time_scale(),
        "took {:?}",
        t0.elapsed()
    );
}
