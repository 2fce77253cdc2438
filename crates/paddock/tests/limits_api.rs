//! The limits through the daemon, end to end: `PATCH /v1/sandboxes/{id}` and `paddock
//! update` change a running sandbox's limits (the core ones on the hybrid host; memory,
//! cpu and pids where offered), the change survives a daemon crash (adoption from the
//! store), is announced as `limits_updated`; bad changes are 400, what the node lacks 422,
//! a stopped sandbox 409; `paddock run` refuses a new limit whose controller is missing,
//! naming it.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn read(cgroot: &std::path::Path, info: &serde_json::Value, file: &str) -> String {
    let p = std::path::Path::new(info["cgroup_path"].as_str().unwrap()).join(file);
    assert!(p.starts_with(cgroot), "{}", p.display());
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[test]
fn patch_and_update_change_limits_and_survive_a_crash() {
    let Some(w) = world("patch_and_update_change_limits_and_survive_a_crash") else {
        return;
    };
    let mut d = w.daemon(&[]);
    let r = w.http(
        "POST",
        "/v1/sandboxes",
        Some(&spec("upd", "exec sleep 300")),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let info = r.json();
    let offered: Vec<String> = std::fs::read_to_string(w.cgroot.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let has = |c: &str| offered.iter().any(|o| o == c);
    // PATCH: the core limits work everywhere.
    let body = json!({"limits": {"max_descendants": 3, "max_depth": 2}});
    let r = w.http(
        "PATCH",
        "/v1/sandboxes/upd",
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["spec"]["limits"]["max_descendants"], 3);
    assert_eq!(read(&w.cgroot, &info, "cgroup.max.descendants"), "3");
    assert_eq!(read(&w.cgroot, &info, "cgroup.max.depth"), "2");
    // The CLI: lift one with null (`max`), and memory/cpu/pids where offered.
    let r = w.http(
        "PATCH",
        "/v1/sandboxes/upd",
        Some(
            json!({"limits": {"max_depth": null}})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(read(&w.cgroot, &info, "cgroup.max.depth"), "max");
    if has("memory") && has("cpu") && has("pids") {
        let out = w.cli_ok(&[
            "update", "upd", "--memory", "1G", "--cpus", "2", "--pids", "512", "--json",
        ]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["spec"]["limits"]["pids_max"], 512);
        assert_eq!(read(&w.cgroot, &info, "memory.max"), "1073741824");
        assert_eq!(read(&w.cgroot, &info, "cpu.max"), "200000 100000");
        assert_eq!(read(&w.cgroot, &info, "pids.max"), "512");
    } else {
        // What the node lacks is a 422 naming the controller; nothing changes.
        let o = w.cli(&[
            "update", "upd", "--memory", "1G", "--cpus", "2", "--pids", "512",
        ]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("controller \""), "{err}");
        assert_eq!(read(&w.cgroot, &info, "cgroup.max.descendants"), "3");
    }
    // An empty change changes nothing and answers with the sandbox as it is.
    let r = w.http(
        "PATCH",
        "/v1/sandboxes/upd",
        Some(json!({"limits": {}}).to_string().as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(read(&w.cgroot, &info, "cgroup.max.descendants"), "3");
    // A value the document refuses is a 400; an unknown field too.
    for (body, status, want) in [
        (json!({"limits": {"cpus": 0}}), 400, "cpus"),
        (json!({"limits": {"memory": 1}}), 400, "unknown field"),
        (
            json!({"limits": {"io_max": [{"device": "/dev/null", "write_bps": 1}]}}),
            422,
            "not a block device",
        ),
    ] {
        let r = w.http(
            "PATCH",
            "/v1/sandboxes/upd",
            Some(body.to_string().as_bytes()),
        );
        assert_eq!(r.status, status, "{body}: {}", r.text());
        assert!(r.error().contains(want), "{body}: {}", r.error());
    }
    let r = w.http(
        "PATCH",
        "/v1/sandboxes/nope",
        Some(json!({"limits": {"max_depth": 1}}).to_string().as_bytes()),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    // The daemon crashes; its successor adopts the sandbox with the updated limits.
    d.sigkill();
    let d2 = w.daemon(&[]);
    let r = w.http("GET", "/v1/sandboxes/upd", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let limits = &r.json()["spec"]["limits"];
    assert_eq!(limits["max_descendants"], 3, "{limits}");
    assert_eq!(limits["max_depth"], serde_json::Value::Null, "{limits}");
    // The event stream announces an update.
    let ev = std::thread::spawn({
        let socket = w.socket.clone();
        move || {
            std::process::Command::new(BIN)
                .args(["events", "--id", "upd", "--count", "1", "--json"])
                .env("PADDOCK_SOCKET", socket)
                .output()
                .unwrap()
        }
    });
    // Updates (each a change) until the stream, subscribed at some point meanwhile, has
    // reported one (bounded).
    let t0 = std::time::Instant::now();
    let mut depth = 5;
    while !ev.is_finished() {
        depth += 1;
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no limits_updated event"
        );
        let r = w.http(
            "PATCH",
            "/v1/sandboxes/upd",
            Some(
                json!({"limits": {"max_depth": depth}})
                    .to_string()
                    .as_bytes(),
            ),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = ev.join().unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.contains("\"limits_updated\""), "{line}");
    // Stopped: 409.
    w.cli_ok(&["kill", "upd"]);
    let r = w.http(
        "PATCH",
        "/v1/sandboxes/upd",
        Some(json!({"limits": {"max_depth": 1}}).to_string().as_bytes()),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    drop(d2);
    w.assert_no_leaks();
}

/// `paddock run` with a limit whose controller the hierarchy lacks fails (exit 125),
/// naming the controller; with every controller offered (the VM) it runs.
#[test]
fn run_names_a_missing_controller() {
    let Some(w) = world("run_names_a_missing_controller") else {
        return;
    };
    w.t.enable_all_controllers();
    let root = w.cgroot.display().to_string();
    for (flag, ctrl) in [
        ("--io-weight=50", "io"),
        ("--cpuset-cpus=0", "cpuset"),
        ("--memory-low=1M", "memory"),
    ] {
        let o = output_within(
            {
                let mut c = std::process::Command::new(BIN);
                c.args(["run", "--cgroup-root", &root, flag, "--", "true"]);
                c
            },
            Duration::from_secs(30),
        );
        // What the managed root (`<test cgroup>/sandboxes`) can get: what its parent
        // enables for its children.
        let offered =
            std::fs::read_to_string(w.t.path().join("cgroup.subtree_control")).unwrap_or_default();
        if offered.split_whitespace().any(|c| c == ctrl) {
            assert!(o.status.success(), "{flag}: {o:?}");
        } else {
            assert_eq!(o.status.code(), Some(125), "{flag}: {o:?}");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains(&format!("controller {ctrl:?}")),
                "{flag}: {err}"
            );
        }
    }
    w.assert_no_leaks();
}

/// Pressure (PSI, a core file of every cgroup, so this runs on the hybrid host) in `stats`
/// (API and CLI), in `top`, and in the metrics: always for all sandboxes together, and with
/// `--metrics-per-sandbox` per live sandbox, labelled with its ID, gone once it stops.
#[test]
fn pressure_in_stats_top_and_metrics() {
    let Some(w) = world("pressure_in_stats_top_and_metrics") else {
        return;
    };
    if !std::path::Path::new("/proc/pressure/cpu").exists() {
        paddock_testutil::skip("pressure_in_stats_top_and_metrics", "the kernel has no PSI");
        return;
    }
    let _d = w.daemon(&["--metrics-per-sandbox"]);
    let r = w.http(
        "POST",
        "/v1/sandboxes",
        Some(&spec("psi", "while :; do :; done")),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let s = w.http("GET", "/v1/sandboxes/psi/stats", None).json();
    for res in ["cpu", "memory", "io"] {
        let p = &s["pressure"][res];
        assert!(p["some"]["total_usec"].is_u64(), "{res}: {s}");
        assert!(p["some"]["avg10"].is_number(), "{res}: {s}");
    }
    let out = w.cli_ok(&["stats", "psi"]);
    assert!(
        out.contains("cpu.pressure:") && out.contains("some "),
        "{out}"
    );
    let top = w.cli_ok(&["top", "--once"]);
    assert!(top.lines().next().unwrap().contains("PSI c/m/io"), "{top}");
    let m = w.http("GET", "/metrics", None).text();
    let pids = std::fs::read_to_string(w.cgroot.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .any(|c| c == "pids");
    for want in [
        "paddock_sandboxes_pressure_seconds_total{resource=\"cpu\",kind=\"some\"}",
        "paddock_sandboxes_pressure_avg10_ratio{resource=\"memory\",kind=\"some\"}",
        "paddock_sandbox_cpu_seconds_total{id=\"psi\"}",
        "paddock_sandbox_pressure_seconds_total{id=\"psi\",resource=\"io\",kind=\"some\"}",
        "paddock_sandbox_pressure_avg60_ratio{id=\"psi\",resource=\"cpu\",kind=\"some\"}",
        "paddock_sandbox_pids{id=\"psi\"}",
    ] {
        if want.contains("pids{") && !pids {
            assert!(!m.contains(want), "no pids controller, no pids series");
            continue;
        }
        assert!(
            m.lines().any(|l| l.starts_with(want)),
            "{want} missing:\n{m}"
        );
    }
    let cpu = metric(&m, "paddock_sandbox_cpu_seconds_total{id=\"psi\"}").unwrap();
    assert!(cpu > 0.0, "{cpu}");
    w.cli_ok(&["kill", "psi"]);
    let m = w.http("GET", "/metrics", None).text();
    assert!(
        !m.contains("id=\"psi\""),
        "a stopped sandbox's series are gone"
    );
    assert!(m.contains("paddock_sandboxes_pressure_seconds_total"));
    w.assert_no_leaks();
}
