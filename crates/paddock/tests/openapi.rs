//! The committed OpenAPI document must equal the one the code generates. To update it:
//! `PADDOCK_UPDATE_OPENAPI=1 cargo test -p paddock --test openapi`.

#[test]
fn committed_openapi_matches_the_code() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .arg("openapi")
        .output()
        .unwrap();
    assert!(o.status.success());
    let generated = String::from_utf8(o.stdout).unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    if std::env::var_os("PADDOCK_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale; regenerate it with PADDOCK_UPDATE_OPENAPI=1 cargo test -p paddock --test openapi",
        path.display()
    );
}

use paddock_supervisor::{
    Event, EventKind, KilledProcess, LifecycleId, Limits, MainExit, Network, SandboxId,
    SandboxInfo, SandboxSpec, SandboxStats, State, StdioSpec, StdioTarget, StopReason, StopReport,
    StuckProcess,
};
use serde_json::{Value, json};

fn document() -> Value {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .arg("openapi")
        .output()
        .unwrap();
    assert!(o.status.success());
    serde_json::from_slice(&o.stdout).unwrap()
}

fn resolve<'a>(doc: &'a Value, mut s: &'a Value) -> &'a Value {
    while let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected $ref {r}"));
        s = doc["components"]["schemas"]
            .get(name)
            .unwrap_or_else(|| panic!("$ref to a missing schema {name}"));
    }
    s
}

fn type_ok(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        other => panic!("unknown schema type {other}"),
    }
}

/// Checks `v` against `schema`: every key of every object is a documented property (or the
/// schema allows free keys with `additionalProperties`), types and enums match, nested
/// values recursively. Returns the problems, each with its JSON path.
fn check(doc: &Value, schema: &Value, v: &Value, path: &str) -> Vec<String> {
    let s = resolve(doc, schema);
    for key in ["oneOf", "anyOf"] {
        if let Some(alts) = s.get(key).and_then(Value::as_array) {
            let results: Vec<Vec<String>> = alts.iter().map(|a| check(doc, a, v, path)).collect();
            if results.iter().any(Vec::is_empty) {
                return Vec::new();
            }
            return vec![format!(
                "{path}: matches no alternative of {key}: {}",
                results.concat().join("; ")
            )];
        }
    }
    let mut problems = Vec::new();
    let mut props = serde_json::Map::new();
    let mut free: Option<&Value> = None;
    let mut parts = vec![s];
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        parts.extend(all.iter().map(|a| resolve(doc, a)));
    }
    let mut types: Vec<&str> = Vec::new();
    for p in &parts {
        if let Some(m) = p.get("properties").and_then(Value::as_object) {
            props.extend(m.clone());
        }
        if let Some(a) = p.get("additionalProperties").filter(|a| a.is_object()) {
            free = Some(a);
        }
        match p.get("type") {
            Some(Value::String(t)) => types.push(t),
            Some(Value::Array(ts)) => types.extend(ts.iter().filter_map(Value::as_str)),
            _ => {}
        }
        if let Some(e) = p.get("enum").and_then(Value::as_array)
            && !e.contains(v)
        {
            problems.push(format!("{path}: {v} is not in the enum {e:?}"));
        }
        if let Some(c) = p.get("const")
            && c != v
        {
            problems.push(format!("{path}: {v} is not the const {c}"));
        }
    }
    if !types.is_empty() && !types.iter().any(|t| type_ok(v, t)) {
        problems.push(format!("{path}: {v} is not of type {types:?}"));
        return problems;
    }
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                let p = format!("{path}.{k}");
                match (props.get(k), free) {
                    (Some(ps), _) => problems.extend(check(doc, ps, val, &p)),
                    (None, Some(f)) => problems.extend(check(doc, f, val, &p)),
                    (None, None) => problems.push(format!("{p}: not in the schema")),
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = parts.iter().find_map(|p| p.get("items")) {
                for (i, it) in items.iter().enumerate() {
                    problems.extend(check(doc, is, it, &format!("{path}[{i}]")));
                }
            }
        }
        _ => {}
    }
    problems
}

fn stop_report() -> StopReport {
    StopReport {
        reason: StopReason::Requested,
        signalled: 3,
        signal_ms: 0.2,
        grace_ms: 1000.0,
        killed_after_grace: 1,
        kill_ms: 2.5,
        remove_ms: 0.7,
        rmdir_fallback: true,
        pids_frozen: true,
        total_ms: 1003.4,
        cpu_usage_usec: Some(1234),
        memory_peak: Some(4096),
        oom_kills: Some(1),
        killed: vec![KilledProcess {
            pid: 43,
            comm: Some("worker".into()),
        }],
        stuck: vec![stuck()],
        error: Some("an error".into()),
    }
}

fn stuck() -> StuckProcess {
    StuckProcess {
        pid: 42,
        comm: Some("sleep".into()),
        state: Some("D".into()),
        wchan: Some("fuse_wait".into()),
    }
}

fn full_spec() -> SandboxSpec {
    let mut spec = SandboxSpec::new(SandboxId::new("s-1").unwrap(), "/bin/sh", ["-c", "true"]);
    spec.env.insert("K".into(), "V".into());
    spec.labels.insert("team".into(), "a".into());
    spec.clear_env = true;
    spec.cwd = Some("/tmp".into());
    spec.stdio = StdioSpec {
        stdin: StdioTarget::Null,
        stdout: StdioTarget::Log,
        stderr: StdioTarget::File("/tmp/err".into()),
    };
    spec.limits = Limits {
        memory_max: Some(1 << 30),
        memory_high: Some(1 << 29),
        cpus: Some(1.5),
        cpu_weight: Some(100),
        pids_max: Some(64),
        max_descendants: Some(10),
        max_depth: Some(3),
    };
    spec.network = Network::Named("blue".into());
    spec
}

fn info(stopped: bool) -> SandboxInfo {
    SandboxInfo {
        id: SandboxId::new("s-1").unwrap(),
        lifecycle: LifecycleId::fresh(),
        state: if stopped {
            State::Stopped
        } else {
            State::Running
        },
        paused: false,
        current: true,
        pid: Some(7),
        cgroup_path: "/sys/fs/cgroup/paddock/s-1@0000000000000001".into(),
        main_exit: stopped.then_some(MainExit {
            code: None,
            signal: Some(9),
            core_dumped: false,
        }),
        stop_report: stopped.then(stop_report),
        stuck: vec![stuck()],
        error: Some("e".into()),
        created_at_ms: 1,
        spec: full_spec(),
    }
}

fn events() -> Vec<Event> {
    let kinds = vec![
        EventKind::Started { pid: 1 },
        EventKind::Adopted {
            pid: Some(1),
            state: State::Stopping,
        },
        EventKind::Adopted {
            pid: None,
            state: State::Running,
        },
        EventKind::StartFailed { error: "e".into() },
        EventKind::MainExited {
            status: MainExit::UNKNOWN,
        },
        EventKind::Stopping {
            reason: StopReason::Recovered,
        },
        EventKind::LeakedProcessesKilled { count: 2 },
        EventKind::Stopped {
            report: stop_report(),
        },
        EventKind::Quarantined {
            stuck: vec![stuck()],
        },
        EventKind::Failed { error: "e".into() },
        EventKind::Paused,
        EventKind::Resumed,
    ];
    kinds
        .into_iter()
        .map(|kind| Event {
            id: SandboxId::new("s-1").unwrap(),
            lifecycle: LifecycleId::fresh(),
            at_ms: 5,
            kind,
        })
        .collect()
}

/// The schema of the `code` answer of `method path`.
fn response_schema<'a>(doc: &'a Value, path: &str, method: &str, code: &str) -> &'a Value {
    let r = &doc["paths"][path][method]["responses"][code];
    assert!(r.is_object(), "{method} {path}: no {code} response");
    let c = r["content"].as_object().expect("content");
    let (_, media) = c.iter().next().expect("a media type");
    &media["schema"]
}

/// Every key of a sample of every response type is documented in the schema of the
/// response that carries it (no drift between the types and the document).
#[test]
fn every_response_key_is_in_the_schema() {
    let doc = document();
    let mut samples: Vec<(&str, &str, &str, Value)> = vec![
        (
            "/v1/sandboxes",
            "post",
            "201",
            serde_json::to_value(info(false)).unwrap(),
        ),
        (
            "/v1/sandboxes",
            "get",
            "200",
            json!([info(false), info(true)]),
        ),
        (
            "/v1/sandboxes/{id}",
            "get",
            "200",
            serde_json::to_value(info(true)).unwrap(),
        ),
        (
            "/v1/sandboxes/{id}/wait",
            "get",
            "200",
            serde_json::to_value(info(true)).unwrap(),
        ),
        (
            "/v1/sandboxes/{id}/pause",
            "post",
            "200",
            serde_json::to_value(info(false)).unwrap(),
        ),
        (
            "/v1/sandboxes/{id}/resume",
            "post",
            "200",
            serde_json::to_value(info(false)).unwrap(),
        ),
        (
            "/v1/sandboxes/{id}/stop",
            "post",
            "200",
            serde_json::to_value(stop_report()).unwrap(),
        ),
        (
            "/v1/sandboxes/{id}/kill",
            "post",
            "200",
            serde_json::to_value(stop_report()).unwrap(),
        ),
        (
            "/v1/sandboxes/{id}/stats",
            "get",
            "200",
            serde_json::to_value(SandboxStats {
                cpu_usage_usec: Some(1),
                cpu_user_usec: Some(1),
                cpu_system_usec: Some(1),
                cpu_nr_throttled: None,
                memory_current: Some(1),
                memory_peak: None,
                memory_oom_kill: Some(0),
                memory_high_events: Some(0),
                memory_max_events: Some(0),
                pids_current: Some(1),
                io_read_bytes: Some(0),
                io_write_bytes: None,
                processes: 1,
            })
            .unwrap(),
        ),
        ("/healthz", "get", "200", json!({ "status": "ok" })),
        ("/readyz", "get", "200", json!({ "status": "ready" })),
    ];
    for ev in events() {
        samples.push((
            "/v1/events",
            "get",
            "200",
            serde_json::to_value(ev).unwrap(),
        ));
    }
    // Every error answer of every operation is {"error": "..."}.
    let error = json!({ "error": "sandbox x: not found" });
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (code, resp) in op["responses"].as_object().unwrap() {
                if code.starts_with('4') || code.starts_with('5') {
                    assert!(
                        resp["content"].is_object(),
                        "{method} {path} {code}: no schema"
                    );
                    let s = response_schema(&doc, path, method, code);
                    let p = check(&doc, s, &error, &format!("{method} {path} {code}"));
                    assert!(p.is_empty(), "{p:#?}");
                }
            }
        }
    }
    let mut problems = Vec::new();
    for (path, method, code, v) in &samples {
        let s = response_schema(&doc, path, method, code);
        problems.extend(check(&doc, s, v, &format!("{method} {path} {code}")));
    }
    // The request body too: a full spec plus "start".
    let mut create = serde_json::to_value(full_spec()).unwrap();
    create["start"] = json!(true);
    let req = &doc["paths"]["/v1/sandboxes"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    problems.extend(check(&doc, req, &create, "POST /v1/sandboxes body"));
    assert!(
        problems.is_empty(),
        "the OpenAPI document drifted from the types:\n{problems:#?}"
    );

    // The checker can fail: an undocumented key is caught.
    let mut bad = serde_json::to_value(stop_report()).unwrap();
    bad["surprise"] = json!(1);
    let s = response_schema(&doc, "/v1/sandboxes/{id}/stop", "post", "200");
    assert_eq!(check(&doc, s, &bad, "x").len(), 1);
}

/// Every route of `api::router` (read from its source) has a path entry with its methods,
/// and every path in the document is a route.
#[test]
fn every_route_has_a_path_entry() {
    let doc = document();
    let src = include_str!("../src/api.rs");
    let body = src
        .split_once("pub fn router(")
        .expect("api::router")
        .1
        .split_once(".fallback(")
        .expect("the router's fallback")
        .0;
    let mut routes = Vec::new();
    for part in body.split(".route(\"").skip(1) {
        let (path, rest) = part.split_once('"').unwrap();
        let handlers = rest.split_once(")\n").map_or(rest, |(h, _)| h);
        let methods: Vec<&str> = ["get", "post", "delete", "put", "patch"]
            .into_iter()
            .filter(|m| {
                handlers.contains(&format!(" {m}(")) || handlers.contains(&format!(".{m}("))
            })
            .collect();
        assert!(
            !methods.is_empty(),
            "{path}: no methods found in {handlers:?}"
        );
        routes.push((path.to_owned(), methods));
    }
    assert!(routes.len() >= 14, "{routes:?}");
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in &routes {
        let entry = paths
            .get(path)
            .unwrap_or_else(|| panic!("route {path} has no path entry in the document"));
        for m in methods {
            assert!(entry.get(*m).is_some(), "{m} {path} is not in the document");
        }
        for m in entry.as_object().unwrap().keys() {
            assert!(
                methods.contains(&m.as_str()),
                "{m} {path} is documented but not routed"
            );
        }
    }
    for p in paths.keys() {
        assert!(
            routes.iter().any(|(r, _)| r == p),
            "{p} is documented but not routed"
        );
    }
}
