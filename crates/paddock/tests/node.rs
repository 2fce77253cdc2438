//! The node API against a real daemon: `GET /v1/node`, drain and undrain (racing creates,
//! across a restart), memory admission (`--overcommit-memory`, `--require-memory-limit`),
//! label selectors, and the CLI's `node`, `drain`, `undrain` and `ls --label`.

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{World, http_unix, spec, world};
use serde_json::{Value, json};

fn node(w: &World) -> Value {
    let r = w.http("GET", "/v1/node", None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// A spec of a payload that lives until it is stopped, with extra fields merged in.
fn spec_with(id: &str, extra: Value) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&spec(id, "exec sleep 300")).unwrap();
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    serde_json::to_vec(&v).unwrap()
}

fn has_header(headers: &str, name: &str, value: &str) -> bool {
    headers.lines().any(|l| {
        l.split_once(':')
            .is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case(name) && v.trim() == value)
    })
}

/// The managed root's controllers as the node reports them.
fn controllers(n: &Value) -> Vec<String> {
    n["cgroup"]["controllers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

/// Capacity, reserve and allocatable add up; the version, kernel, cgroup mode and root are
/// the host's; the counts and the committed memory follow a create and a stop.
#[test]
fn node_info_is_sane_and_counts_follow_sandboxes() {
    let Some(w) = world("node_info_is_sane_and_counts_follow_sandboxes") else {
        return;
    };
    let _d = w.daemon(&["--reserve-cpus", "0.5", "--reserve-memory", "64M"]);
    let n = node(&w);
    let cap_cpus = n["capacity"]["cpus"].as_f64().unwrap();
    assert!(cap_cpus >= 1.0, "{n}");
    assert_eq!(cap_cpus.fract(), 0.0, "{n}");
    assert_eq!(n["reserved"]["cpus"].as_f64(), Some(0.5), "{n}");
    assert_eq!(
        n["allocatable"]["cpus"].as_f64(),
        Some(cap_cpus - 0.5),
        "{n}"
    );
    let cap_mem = n["capacity"]["memory_bytes"].as_u64().unwrap();
    let total_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    assert!(cap_mem > 64 << 20 && cap_mem <= total_kb * 1024, "{n}");
    assert_eq!(n["reserved"]["memory_bytes"].as_u64(), Some(64 << 20));
    assert_eq!(
        n["allocatable"]["memory_bytes"].as_u64(),
        Some(cap_mem - (64 << 20)),
        "{n}"
    );
    assert_eq!(n["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        n["kernel"].as_str().unwrap(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap()
            .trim()
    );
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let v1 = mountinfo.lines().any(|l| l.contains(" - cgroup "));
    assert_eq!(
        n["cgroup"]["mode"],
        if v1 { "hybrid" } else { "unified" },
        "{n}"
    );
    assert_eq!(n["cgroup"]["root"], w.cgroot.display().to_string());
    assert_eq!(n["cgroup"]["mount"], w.t.mount().display().to_string());
    let root_ctrls =
        std::fs::read_to_string(w.cgroot.join("cgroup.controllers")).unwrap_or_default();
    assert_eq!(
        controllers(&n),
        root_ctrls
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    );
    assert_eq!(n["draining"], false);
    assert_eq!(n["memory"]["overcommit_ratio"], Value::Null);
    assert_eq!(n["memory"]["admission_limit_bytes"], Value::Null);
    assert_eq!(n["memory"]["committed_bytes"], 0);
    assert_eq!(n["sandboxes"]["live"], 0, "{n}");

    // One sandbox: running and live; with a memory limit where the node has the memory
    // controller, it is committed.
    let with_memory = controllers(&n).iter().any(|c| c == "memory");
    if !with_memory {
        paddock_testutil::note_skip(
            "node_info_is_sane_and_counts_follow_sandboxes (committed memory)",
            "the managed root has no memory controller (a hybrid host): memory_max cannot be set",
        );
    }
    let extra = if with_memory {
        json!({"limits": {"memory_max": 32 << 20}})
    } else {
        json!({})
    };
    let r = w.http("POST", "/v1/sandboxes", Some(&spec_with("n-1", extra)));
    assert_eq!(r.status, 201, "{}", r.text());
    let n = node(&w);
    assert_eq!(n["sandboxes"]["running"], 1, "{n}");
    assert_eq!(n["sandboxes"]["live"], 1, "{n}");
    assert_eq!(n["sandboxes"]["creating"], 0, "{n}");
    if with_memory {
        assert_eq!(n["memory"]["committed_bytes"], 32 << 20, "{n}");
        assert_eq!(n["memory"]["live_without_limit"], 0, "{n}");
    } else {
        assert_eq!(n["memory"]["live_without_limit"], 1, "{n}");
    }
    let r = w.http("POST", "/v1/sandboxes/n-1/pause", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(node(&w)["sandboxes"]["paused"], 1);
    let r = w.http("POST", "/v1/sandboxes/n-1/stop?timeout=1s", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let n = node(&w);
    assert_eq!(n["sandboxes"]["running"], 0, "{n}");
    assert_eq!(n["sandboxes"]["paused"], 0, "{n}");
    assert_eq!(n["sandboxes"]["stopped"], 1, "{n}");
    assert_eq!(n["sandboxes"]["live"], 0, "{n}");
    assert_eq!(n["memory"]["committed_bytes"], 0, "{n}");
    // It takes no query parameter.
    assert_eq!(w.http("GET", "/v1/node?x=1", None).status, 400);
    w.assert_no_leaks();
}

/// The outcome of one racing create.
struct Raced {
    id: String,
    status: u16,
}

/// Fires `n` creates at once from threads, with `mid` run on another thread at the same
/// moment; returns the creates' outcomes and `mid`'s result.
fn race<T: Send + 'static>(
    w: &World,
    prefix: &str,
    n: usize,
    mid: impl FnOnce() -> T + Send + 'static,
) -> (Vec<Raced>, T) {
    let barrier = Arc::new(Barrier::new(n + 1));
    let mut threads = Vec::new();
    for i in 0..n {
        let (b, socket) = (barrier.clone(), w.socket.clone());
        let prefix = prefix.to_owned();
        threads.push(std::thread::spawn(move || {
            b.wait();
            // Each thread creates one after another, so creates keep arriving while the
            // drain runs.
            (0..3)
                .map(|k| {
                    let id = format!("{prefix}-{i}-{k}");
                    let body = spec_with(&id, json!({}));
                    let r = http_unix(&socket, "POST", "/v1/sandboxes", Some(&body), &[]);
                    if r.status == 503 {
                        assert!(
                            has_header(&r.headers, "retry-after", "30"),
                            "a draining 503 has Retry-After: {}",
                            r.headers
                        );
                        assert!(r.error().contains("draining"), "{}", r.text());
                    }
                    Raced {
                        id,
                        status: r.status,
                    }
                })
                .collect::<Vec<_>>()
        }));
    }
    let (b, socket) = (barrier.clone(), w.socket.clone());
    let mid = std::thread::spawn(move || {
        b.wait();
        // The drain begins once creates are under way: one has been admitted (it shows
        // as creating) or has started.
        let base = http_unix(&socket, "GET", "/v1/node", None, &[]).json();
        let started = |n: &Value| {
            n["sandboxes"]["creating"].as_u64().unwrap() > 0
                || n["sandboxes"]["live"] != base["sandboxes"]["live"]
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !started(&http_unix(&socket, "GET", "/v1/node", None, &[]).json()) {
            assert!(
                std::time::Instant::now() < deadline,
                "no racing create within 20 s"
            );
        }
        mid()
    });
    let out = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    (out, mid.join().unwrap())
}

/// A drain with stop racing many creates: every create is either a 201 whose sandbox the
/// drain then stopped (reason `drain`) or a 503; nothing is live afterwards and no cgroup
/// is left. Without stop, no create the drain did not count starts a sandbox after it
/// answered. Repeated, with an undrain between.
#[test]
fn drain_races_creates() {
    let Some(w) = world("node_drain_races_creates") else {
        return;
    };
    let _d = w.daemon(&[]);
    for round in 0..3 {
        let pre = format!("pre{round}");
        let r = w.http("POST", "/v1/sandboxes", Some(&spec_with(&pre, json!({}))));
        assert_eq!(r.status, 201, "{}", r.text());
        let socket = w.socket.clone();
        let (raced, drained) = race(&w, &format!("r{round}"), 16, move || {
            http_unix(
                &socket,
                "POST",
                "/v1/node/drain",
                Some(br#"{"stop": true, "grace": "2s"}"#),
                &[],
            )
        });
        assert_eq!(drained.status, 200, "{}", drained.text());
        let report = drained.json();
        assert_eq!(report["draining"], true);
        assert!(report["failed"].as_array().unwrap().is_empty(), "{report}");
        for c in &raced {
            assert!(c.status == 201 || c.status == 503, "{}: {}", c.id, c.status);
        }
        // Every sandbox that was created is stopped, by the drain.
        for id in raced
            .iter()
            .filter(|c| c.status == 201)
            .map(|c| c.id.as_str())
            .chain([pre.as_str()])
        {
            let i = w.http("GET", &format!("/v1/sandboxes/{id}"), None).json();
            assert_eq!(i["state"], "stopped", "{id}: {i}");
            assert_eq!(i["stop_report"]["reason"], "drain", "{id}: {i}");
        }
        let n = node(&w);
        assert_eq!(n["sandboxes"]["live"], 0, "{n}");
        assert_eq!(n["sandboxes"]["creating"], 0, "{n}");
        assert_eq!(n["draining"], true);
        assert!(w.cgroups().is_empty(), "cgroups left: {:?}", w.cgroups());
        // Still draining: a create now is a 503.
        let r = w.http("POST", "/v1/sandboxes", Some(&spec_with("late", json!({}))));
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(has_header(&r.headers, "retry-after", "30"), "{}", r.headers);
        eprintln!(
            "round {round}: {} created and stopped, {} refused, {} in flight at the drain",
            raced.iter().filter(|c| c.status == 201).count(),
            raced.iter().filter(|c| c.status == 503).count(),
            report["creates_in_flight"]
        );
        let r = w.http("POST", "/v1/node/undrain", None);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["was_draining"], true);
        for c in raced.iter().filter(|c| c.status == 201) {
            assert_eq!(
                w.http("DELETE", &format!("/v1/sandboxes/{}", c.id), None)
                    .status,
                204
            );
        }
    }

    // Without stop: once the drain has answered, the live count no longer grows.
    let socket = w.socket.clone();
    let (raced, (drained, live_then)) = race(&w, "ns", 16, move || {
        let d = http_unix(&socket, "POST", "/v1/node/drain", None, &[]);
        let n = http_unix(&socket, "GET", "/v1/node", None, &[]);
        (d, n.json()["sandboxes"]["live"].as_u64().unwrap())
    });
    assert_eq!(drained.status, 200, "{}", drained.text());
    let created = raced.iter().filter(|c| c.status == 201).count() as u64;
    assert!(raced.iter().all(|c| c.status == 201 || c.status == 503));
    assert_eq!(
        live_then, created,
        "creates started after the drain answered"
    );
    assert_eq!(node(&w)["sandboxes"]["live"].as_u64().unwrap(), created);
    assert_eq!(drained.json()["stopped"], 0);
    // Now stop them all through a second drain.
    let r = w.http(
        "POST",
        "/v1/node/drain",
        Some(br#"{"stop": true, "grace": "0"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["was_draining"], true);
    assert_eq!(r.json()["stopped"].as_u64().unwrap(), created);
    assert_eq!(r.json()["live"], 0);
    w.assert_no_leaks();
}

/// The drain flag survives a restart of the daemon (its file in the state directory) until
/// an undrain removes it; bad drain bodies are 400s that change nothing.
#[test]
fn drain_persists_across_a_restart() {
    let Some(w) = world("node_drain_persists_across_a_restart") else {
        return;
    };
    let mut d = w.daemon(&[]);
    for (body, want) in [
        (&br#"{"stop": "yes"}"#[..], "stop"),
        (br#"{"grace": "forever", "stop": true}"#, "grace"),
        (br#"{"what": 1}"#, "what"),
        (br#"{"stop": true, "stop": false}"#, "duplicate"),
        (b"[]", "object"),
    ] {
        let r = w.http("POST", "/v1/node/drain", Some(body));
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.error().contains(want), "{}", r.text());
    }
    assert_eq!(
        node(&w)["draining"],
        false,
        "a refused drain changed nothing"
    );
    assert!(!w.state.join("draining").exists());
    let r = w.http("POST", "/v1/node/drain", Some(b"null"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["was_draining"], false);
    assert!(w.state.join("draining").exists());
    let since = node(&w)["draining_since_ms"].as_u64().unwrap();
    assert_eq!(d.sigterm(Duration::from_secs(20)), Some(0));

    let mut d = w.daemon(&[]);
    let n = node(&w);
    assert_eq!(n["draining"], true, "{n}");
    assert_eq!(n["draining_since_ms"], since, "{n}");
    let r = w.http(
        "POST",
        "/v1/sandboxes",
        Some(&spec_with("after", json!({}))),
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(has_header(&r.headers, "retry-after", "30"), "{}", r.headers);
    let r = w.http("POST", "/v1/node/undrain", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"draining": false, "was_draining": true}));
    assert!(!w.state.join("draining").exists());
    // Undrain again: nothing to do.
    assert_eq!(
        w.http("POST", "/v1/node/undrain", None).json()["was_draining"],
        false
    );
    let r = w.http(
        "POST",
        "/v1/sandboxes",
        Some(&spec_with("after", json!({}))),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(d.sigterm(Duration::from_secs(20)), Some(0));

    let _d = w.daemon(&[]);
    assert_eq!(node(&w)["draining"], false);
    let r = w.http("POST", "/v1/sandboxes/after/kill", None);
    assert_eq!(r.status, 200, "{}", r.text());
    w.assert_no_leaks();
}

/// `--overcommit-memory`: a create that would commit past allocatable × the ratio is a 429
/// naming committed, requested and allowed bytes; `--require-memory-limit` refuses a
/// create without `limits.memory_max`. Where the node has the memory controller, creates
/// racing for the last room are admitted exactly as many as fit.
#[test]
fn memory_admission() {
    let Some(w) = world("node_memory_admission") else {
        return;
    };
    // Learn the capacity, then reserve all but 1 GiB of it.
    let mut d = w.daemon(&[]);
    let cap = node(&w)["capacity"]["memory_bytes"].as_u64().unwrap();
    let with_memory = controllers(&node(&w)).iter().any(|c| c == "memory");
    assert_eq!(d.sigterm(Duration::from_secs(20)), Some(0));
    const GIB: u64 = 1 << 30;
    // The sandboxes below commit 1.5 GiB on paper; each uses a few pages for real.
    assert!(
        cap > GIB,
        "this test wants more than 1 GiB of memory (capacity {cap})"
    );
    let reserve = (cap - GIB).to_string();
    let _d = w.daemon(&[
        "--reserve-memory",
        &reserve,
        "--overcommit-memory",
        "1.5",
        "--require-memory-limit",
    ]);
    let n = node(&w);
    let allowed = GIB + GIB / 2;
    assert_eq!(n["allocatable"]["memory_bytes"], GIB, "{n}");
    assert_eq!(n["memory"]["overcommit_ratio"], 1.5, "{n}");
    assert_eq!(n["memory"]["admission_limit_bytes"], allowed, "{n}");
    assert_eq!(n["memory"]["require_limit"], true, "{n}");

    // No memory_max: refused, naming the field.
    let r = w.http("POST", "/v1/sandboxes", Some(&spec_with("m-0", json!({}))));
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.error().contains("limits.memory_max"), "{}", r.text());
    // Too much at once: a 429 naming the bytes.
    let want = allowed + 1;
    let r = w.http(
        "POST",
        "/v1/sandboxes",
        Some(&spec_with("m-1", json!({"limits": {"memory_max": want}}))),
    );
    assert_eq!(r.status, 429, "{}", r.text());
    let e = r.error();
    assert!(
        e.contains(&format!("{want} bytes requested"))
            && e.contains("0 bytes committed")
            && e.contains(&format!("{allowed} bytes allowed")),
        "{e}"
    );
    assert!(w.cgroups().is_empty());
    if !with_memory {
        paddock_testutil::note_skip(
            "node_memory_admission (racing creates)",
            "the managed root has no memory controller (a hybrid host): no create with memory_max can start",
        );
        return;
    }
    // 400 MiB each: three fit under 1.5 GiB, a fourth does not, however they race.
    let (raced, ()) = race_memory(&w, 8, 400 << 20);
    let ok = raced.iter().filter(|c| c.status == 201).count();
    assert_eq!(
        ok,
        3,
        "statuses: {:?}",
        raced.iter().map(|c| c.status).collect::<Vec<_>>()
    );
    assert!(raced.iter().all(|c| c.status == 201 || c.status == 429));
    assert_eq!(node(&w)["memory"]["committed_bytes"], 3 * (400u64 << 20));
    let r = w.http(
        "POST",
        "/v1/node/drain",
        Some(br#"{"stop": true, "grace": "0"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    w.assert_no_leaks();
}

fn race_memory(w: &World, n: usize, each: u64) -> (Vec<Raced>, ()) {
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (b, socket) = (barrier.clone(), w.socket.clone());
            std::thread::spawn(move || {
                let id = format!("mr-{i}");
                let body = spec_with(&id, json!({"limits": {"memory_max": each}}));
                b.wait();
                let r = http_unix(&socket, "POST", "/v1/sandboxes", Some(&body), &[]);
                Raced {
                    id,
                    status: r.status,
                }
            })
        })
        .collect();
    (threads.into_iter().map(|t| t.join().unwrap()).collect(), ())
}

fn ids(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// `?label=key=value` and `?label=key`, repeated: all must match; bad selectors are 400s
/// naming the parameter. The CLI's `ls --label` and `node`, `drain`, `undrain`.
#[test]
fn label_selectors_and_cli() {
    let Some(w) = world("node_label_selectors_and_cli") else {
        return;
    };
    let _d = w.daemon(&[]);
    for (id, labels) in [
        ("l-web", json!({"app": "web", "tier": "front"})),
        ("l-db", json!({"app": "db", "tier": "back", "a=b": "c"})),
        ("l-none", json!({})),
    ] {
        let r = w.http(
            "POST",
            "/v1/sandboxes",
            Some(&spec_with(id, json!({ "labels": labels }))),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }
    for (q, want) in [
        ("", vec!["l-db", "l-none", "l-web"]),
        ("?label=app=web", vec!["l-web"]),
        ("?label=app", vec!["l-db", "l-web"]),
        ("?label=app&label=tier=back", vec!["l-db"]),
        ("?label=app=web&label=tier=back", vec![]),
        ("?label=nope", vec![]),
        ("?label=app=we", vec![]),
        // Split at the first `=`: the key `a` is not there.
        ("?label=a%3Db=c", vec![]),
        ("?label=tier%3Dfront", vec!["l-web"]),
    ] {
        let r = w.http("GET", &format!("/v1/sandboxes{q}"), None);
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        assert_eq!(ids(&r.json()), want, "{q}");
    }
    for (q, named) in [
        ("?label=", "label"),
        ("?label==web", "label"),
        ("?labels=app", "labels"),
        ("?label=app&x=1", "`x`"),
    ] {
        let r = w.http("GET", &format!("/v1/sandboxes{q}"), None);
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        assert!(r.error().contains(named), "{q}: {}", r.text());
    }
    let many: String = (0..17).map(|i| format!("label=k{i}&")).collect();
    let r = w.http("GET", &format!("/v1/sandboxes?{many}"), None);
    assert_eq!(r.status, 400, "{}", r.text());
    let long = format!("/v1/sandboxes?label={}", "k".repeat(257));
    assert_eq!(w.http("GET", &long, None).status, 400);
    let longest = format!("/v1/sandboxes?label={}", "k".repeat(256));
    assert_eq!(w.http("GET", &longest, None).status, 200);

    // The CLI.
    let out = w.cli_ok(&["ls", "--label", "app=web"]);
    assert!(out.contains("l-web") && !out.contains("l-db"), "{out}");
    let out = w.cli_ok(&["ps", "--label", "app", "--label", "tier=back", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ids(&v), vec!["l-db"]);
    let o = w.cli(&["ls", "--label", "=x"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("label"));

    let out = w.cli_ok(&["node"]);
    for want in [
        "CAPACITY",
        "ALLOCATABLE",
        "kernel:",
        "draining:     no",
        "3 live",
    ] {
        assert!(out.contains(want), "{want:?} in:\n{out}");
    }
    let v: Value = serde_json::from_str(&w.cli_ok(&["node", "--json"])).unwrap();
    assert_eq!(v["sandboxes"]["live"], 3);
    let out = w.cli_ok(&["drain"]);
    assert!(out.contains("draining") && out.contains("3 live"), "{out}");
    assert!(w.cli_ok(&["node"]).contains("draining:     YES"));
    let o = w.cli(&["run", "-d", "--name", "l-late", "--", "sleep", "300"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("draining"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value =
        serde_json::from_str(&w.cli_ok(&["drain", "--stop", "--grace", "0", "--json"])).unwrap();
    assert_eq!(v["stopped"], 3, "{v}");
    assert_eq!(v["live"], 0, "{v}");
    let out = w.cli_ok(&["undrain"]);
    assert!(out.contains("undrained"), "{out}");
    assert!(w.cli_ok(&["node"]).contains("draining:     no"));
    w.assert_no_leaks();
}
