//! Limits, stats, controllers and ownership tags against the real kernel. Limits whose
//! controller the v2 hierarchy does not offer here (a hybrid host) are checked to fail with
//! a clear error, and the real limit tests run inside the pure-v2 VM (see `vm/`).

mod common;

use std::time::Duration;

use common::*;
use paddock_cgroup::{CpuMax, Error, Limit, LimitKind, Max, RemoveOptions};

#[tokio::test]
async fn core_limits_cap_nested_cgroups() {
    let Some((_t, root)) = root("core_limits_cap_nested_cgroups") else {
        return;
    };
    let cg = root.create(&name("sbx-limits")).unwrap();
    cg.set_limit(Limit::MaxDescendants(Max::Value(2))).unwrap();
    cg.set_limit(Limit::MaxDepth(Max::Value(1))).unwrap();
    assert_eq!(
        cg.limit(LimitKind::MaxDescendants).unwrap(),
        Some(Limit::MaxDescendants(Max::Value(2)))
    );
    assert_eq!(
        cg.limit(LimitKind::MaxDepth).unwrap(),
        Some(Limit::MaxDepth(Max::Value(1)))
    );
    // The payload (root, so it can mkdir) is capped by the kernel.
    let p = cg.path().to_owned();
    std::fs::create_dir(p.join("a")).unwrap();
    std::fs::create_dir(p.join("b")).unwrap();
    let third = std::fs::create_dir(p.join("c")).unwrap_err();
    assert_eq!(third.raw_os_error(), Some(libc::EAGAIN), "{third}");
    let deep = std::fs::create_dir(p.join("a/deeper")).unwrap_err();
    assert_eq!(deep.raw_os_error(), Some(libc::EAGAIN), "{deep}");
    let r = cg.remove(&RemoveOptions::default()).await.unwrap();
    assert_eq!(r.cgroups_removed, 3);
}

#[tokio::test]
async fn controller_limits_where_available_else_clear_error() {
    let Some((_t, root)) = root("controller_limits_where_available_else_clear_error") else {
        return;
    };
    let available = root.controllers().unwrap();
    let want: Vec<&str> = ["memory", "pids", "cpu"]
        .into_iter()
        .filter(|c| available.iter().any(|a| a == c))
        .collect();
    root.enable_controllers(&want).unwrap();
    let cg = root.create(&name("sbx-ctl")).unwrap();
    let cases = [
        ("memory", Limit::MemoryMax(Max::Value(64 << 20))),
        ("memory", Limit::MemoryHigh(Max::Value(48 << 20))),
        ("pids", Limit::PidsMax(Max::Value(16))),
        ("cpu", Limit::CpuMax(CpuMax::from_cpus(0.5).unwrap())),
        ("cpu", Limit::CpuWeight(50)),
    ];
    for (ctrl, limit) in cases {
        if want.contains(&ctrl) {
            cg.set_limit(limit).unwrap();
            assert_eq!(cg.limit(limit.kind()).unwrap(), Some(limit));
        } else {
            let e = cg.set_limit(limit).unwrap_err();
            assert!(
                matches!(&e, Error::ControllerUnavailable { controller, .. } if controller == ctrl),
                "{e}"
            );
            let msg = e.to_string();
            assert!(msg.contains(ctrl), "{msg}");
            // What to do, pointing at the real file (there is no --controllers flag).
            let control = root.path().join("cgroup.subtree_control");
            assert!(msg.contains(&control.display().to_string()), "{msg}");
            assert!(msg.contains("run without this limit"), "{msg}");
            assert!(!msg.contains("--controllers"), "{msg}");
            assert_eq!(
                cg.limit(limit.kind()).unwrap(),
                None,
                "absent, not a default value"
            );
            eprintln!("controller {ctrl} not available here: {e}");
        }
    }
    // Asking the root for a controller the hierarchy lacks names it and where it is.
    for missing in ["memory", "pids", "cpu", "nosuchctl"] {
        if available.iter().any(|a| a == missing) {
            continue;
        }
        let e = root.enable_controllers(&[missing]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(missing), "{msg}");
        if std::path::Path::new(&format!("/sys/fs/cgroup/{missing}")).exists()
            && missing != "nosuchctl"
        {
            assert!(msg.contains("v1"), "{msg}");
        }
    }
    // Out-of-range values are rejected before anything is written.
    assert!(matches!(
        cg.set_limit(Limit::CpuWeight(0)),
        Err(Error::InvalidValue { .. })
    ));
    assert!(matches!(
        cg.set_limit(Limit::CpuMax(CpuMax {
            quota_us: Some(10),
            period_us: 100_000
        })),
        Err(Error::InvalidValue { .. })
    ));
    cg.remove(&RemoveOptions::default()).await.unwrap();
}

#[tokio::test]
async fn stats_report_absent_controllers_as_none() {
    let Some((_t, root)) = root("stats_report_absent_controllers_as_none") else {
        return;
    };
    let cg = root.create(&name("sbx-stats")).unwrap();
    let child = spawn_in(
        &cg,
        "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exec sleep 300",
    );
    wait_procs(&cg, 1, Duration::from_secs(5));
    let s = cg.stats().unwrap();
    let cpu = s.cpu.expect("cpu.stat is always present");
    assert!(cpu.usage_usec >= cpu.user_usec);
    let has_memory = cg.has_controller("memory").unwrap();
    assert_eq!(s.memory_current.is_some(), has_memory);
    assert_eq!(s.memory_events.is_some(), has_memory);
    assert_eq!(s.pids_current.is_some(), cg.has_controller("pids").unwrap());
    cg.remove(&RemoveOptions::default()).await.unwrap();
    let _ = reap(child, Duration::from_secs(3));
}

#[tokio::test]
async fn owner_tag_roundtrip() {
    let Some((_t, root)) = root("owner_tag_roundtrip") else {
        return;
    };
    let cg = root.create(&name("sbx-owner")).unwrap();
    assert_eq!(cg.owner().unwrap(), None);
    cg.set_owner("paddock:node-1").unwrap();
    assert_eq!(cg.owner().unwrap().as_deref(), Some("paddock:node-1"));
    assert_eq!(
        root.owner_of(&name("sbx-owner")).unwrap().as_deref(),
        Some("paddock:node-1")
    );
    let (names, other) = root.list().unwrap();
    assert_eq!(names, vec![name("sbx-owner")]);
    assert!(other.is_empty());
    cg.remove(&RemoveOptions::default()).await.unwrap();
    let st = root.stat().unwrap();
    assert_eq!(st.nr_descendants, 0);
}
