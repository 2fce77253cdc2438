//! Runs `paddock-bench` with tiny iterations over every scenario, so the benchmark cannot
//! rot. Speed is not judged; correctness of the run (every scenario reported, no errors,
//! no leaks, nothing left behind) is.

use std::process::Command;

#[test]
fn every_scenario_runs_and_leaves_nothing() {
    if let Some(reason) = paddock_testutil::root_tests_unavailable() {
        paddock_testutil::skip("paddock-bench smoke", &reason);
        return;
    }
    let out_dir = std::env::temp_dir().join(format!("paddock-bench-smoke.{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_paddock-bench"))
        .args([
            "--iterations",
            "2",
            "--warmup",
            "1",
            "--grace-ms",
            "200",
            "--slow-iterations",
            "1",
            "--burst",
            "10",
            "--scale-levels",
            "0,10",
            "--out",
        ])
        .arg(&out_dir)
        .output()
        .expect("run paddock-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "paddock-bench failed: {stderr}\n{stdout}"
    );
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    for sc in [
        "lifecycle",
        "leaked-teardown",
        "incident-stop",
        "burst",
        "scale",
    ] {
        for imp in ["paddock", "floor"] {
            assert!(
                rows.iter()
                    .any(|r| r["scenario"] == sc && r["impl"] == imp && r["n"].as_u64() > Some(0)),
                "no {imp} result for {sc}:\n{stdout}"
            );
        }
    }
    for r in rows.iter().filter(|r| r["available"] == true) {
        assert_eq!(r["errors"], 0, "errors in {r}");
        assert_eq!(r["leaks"], 0, "leaks in {r}");
        for k in ["p50_us", "p99_us", "ops_per_s", "kernel", "cores"] {
            assert!(!r[k].is_null(), "{k} missing in {r}");
        }
    }
    for imp in [
        "seed-algorithm",
        "signal-wrapper",
        "paddock-api",
        "paddock-cli",
    ] {
        assert!(rows.iter().any(|r| r["impl"] == imp), "no {imp} row");
    }
    assert!(stdout.contains("| scenario | impl |"), "no Markdown table");
    for f in ["results.json", "results.md", "latency.svg"] {
        assert!(out_dir.join(f).is_file(), "{f} not written");
    }
    let svg = std::fs::read_to_string(out_dir.join("latency.svg")).unwrap();
    assert!(
        svg.contains("<svg") && svg.contains("polyline"),
        "chart has no lines"
    );
    let _ = std::fs::remove_dir_all(&out_dir);
    let mount = paddock_testutil::cgroup2_mount().expect("cgroup2 mount");
    let left: Vec<String> = std::fs::read_dir(&mount)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.strip_prefix("paddock-bench.")
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        })
        .collect();
    assert!(left.is_empty(), "bench roots left behind: {left:?}");
}
