//! The OpenAPI 3.1 document of the daemon's API, built from this code (the routes in
//! [`crate::api::router`] and the types they exchange). `crates/paddock/openapi.json` is
//! this document committed; `tests/openapi.rs` fails when the two differ
//! (`PADDOCK_UPDATE_OPENAPI=1 cargo test -p paddock --test openapi` rewrites the file).

use serde_json::{Value, json};

use crate::api::MAX_BODY;

fn err_resp(desc: &str) -> Value {
    json!({ "description": desc, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn ok_json(desc: &str, schema: &str) -> Value {
    json!({ "description": desc, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

fn id_param() -> Value {
    json!({ "name": "id", "in": "path", "required": true, "description": "Sandbox ID (1-128 bytes, a cgroup-safe name)", "schema": { "type": "string" } })
}

fn lc_param() -> Value {
    json!({ "name": "lifecycle", "in": "query", "required": false, "description": "A specific lifecycle (16 hex digits); default the current one", "schema": { "type": "string", "pattern": "^[0-9a-f]{16}$" } })
}

fn sandbox_op(summary: &str, ok: Value, extra_params: Vec<Value>) -> Value {
    let mut params = vec![id_param(), lc_param()];
    params.extend(extra_params);
    json!({
        "summary": summary,
        "parameters": params,
        "responses": {
            "200": ok,
            "400": err_resp("Invalid ID (also one whose percent-decoding is not UTF-8), lifecycle or parameter, or an unknown query parameter"),
            "404": err_resp("No such sandbox"),
            "409": err_resp("Not possible in the sandbox's state"),
            "500": err_resp("The daemon failed")
        }
    })
}

fn opt(t: &str) -> Value {
    json!({ "type": [t, "null"] })
}

/// The OpenAPI document.
pub fn document() -> Value {
    let max_ms = paddock_supervisor::MAX_DURATION.as_millis() as u64;
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "paddock daemon API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Sandboxes on cgroup v2 whose every process lives and dies with the sandbox. Served on a unix socket (no auth; file mode controls access) and optionally on TCP, where every request needs `Authorization: Bearer <token>` (the scheme in any case). Access to this API is root on the node: payloads run as root, and stdio files are opened and created as root. Errors are `{\"error\": \"...\"}`."
        },
        "paths": {
            "/v1/sandboxes": {
                "get": {
                    "summary": "List every known lifecycle (current ones, and older ones still stopping or quarantined)",
                    "responses": { "200": { "description": "Sandboxes", "content": { "application/json": { "schema": { "type": "array", "items": { "$ref": "#/components/schemas/SandboxInfo" } } } } }, "400": err_resp("A query parameter (none is taken)") }
                },
                "post": {
                    "summary": "Create and start a sandbox",
                    "description": format!("The body is a SandboxSpec (unknown fields and duplicate keys are rejected) plus an optional `\"start\": true`; the daemon always starts what it creates (`false` is a 400). Without `stdio`, stdout and stderr go to the sandbox's log file (GET .../logs). `inherit` and `pipe` are refused. A `file` target is opened by the daemon, as root, before anything is created: it must be a regular file (created if missing for output), not a symbolic link, FIFO, device, socket or directory; an absolute path, or with `serve --stdio-dir DIR` a path beneath DIR (relative to it, or absolute under it; no `..` out of it, no symbolic link on the way). A named network namespace must exist. Bodies above {MAX_BODY} bytes are refused."),
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/CreateRequest" } } } },
                    "responses": {
                        "201": ok_json("Started", "SandboxInfo"),
                        "400": err_resp("Malformed JSON, unknown field, duplicate key, invalid ID or value (out of the kernel's range too), a stdio file target that is not acceptable, a named network namespace that does not exist, oversized body, a query parameter (none is taken); the message names the field; nothing changed"),
                        "409": err_resp("A sandbox with this ID is creating or running; nothing started"),
                        "422": err_resp("The program could not be started; nothing left behind"),
                        "429": err_resp("An admission limit (max-sandboxes or max-starting) was reached; the message names it"),
                        "503": err_resp("The durable store refused the record, or opening a stdio file did not finish in time (a hung file system); nothing created")
                    }
                }
            },
            "/v1/sandboxes/{id}": {
                "get": sandbox_op("Get a sandbox", ok_json("The sandbox", "SandboxInfo"), vec![]),
                "delete": {
                    "summary": "Forget a stopped or failed sandbox (and delete its log); with `lifecycle`, only if that is still the sandbox's current lifecycle (a stale handle never forgets a newer one: 404)",
                    "parameters": [id_param(), lc_param()],
                    "responses": { "204": { "description": "Forgotten" }, "400": err_resp("Invalid ID or lifecycle, or an unknown query parameter"), "404": err_resp("No such sandbox"), "409": err_resp("Still live: stop it first") }
                }
            },
            "/v1/sandboxes/{id}/stop": { "post": sandbox_op(
                "Stop gracefully: the stop signal to every process, the grace period, the kill, the removal; waits for the outcome",
                ok_json("The stop's report", "StopReport"),
                vec![json!({ "name": "timeout", "in": "query", "required": false, "description": "Grace period replacing the spec's (e.g. 10s, 500ms, 0; at most 365 days)", "schema": { "type": "string" } })]) },
            "/v1/sandboxes/{id}/kill": { "post": sandbox_op("Kill at once (no grace period); waits for the outcome", ok_json("The stop's report", "StopReport"), vec![]) },
            "/v1/sandboxes/{id}/wait": { "get": sandbox_op(
                "Wait until the lifecycle has ended (stopped, failed or quarantined: its stop report and main exit are in the answer) or the timeout passed (the answer shows it still live); the lifecycle is pinned when the request arrives. 503 when the daemon shuts down meanwhile",
                ok_json("The sandbox", "SandboxInfo"),
                vec![json!({ "name": "timeout", "in": "query", "required": false, "description": "Return after this long at the latest (e.g. 30s; at most 365 days); default no limit", "schema": { "type": "string" } })]) },
            "/v1/sandboxes/{id}/pause": { "post": sandbox_op("Freeze a running sandbox", ok_json("The sandbox", "SandboxInfo"), vec![]) },
            "/v1/sandboxes/{id}/resume": { "post": sandbox_op("Thaw a paused sandbox", ok_json("The sandbox", "SandboxInfo"), vec![]) },
            "/v1/sandboxes/{id}/stats": { "get": sandbox_op("Resource usage of a live sandbox", ok_json("Usage", "SandboxStats"), vec![]) },
            "/v1/sandboxes/{id}/logs": { "get": sandbox_op(
                "The sandbox's stdout and stderr (the last 4 MiB of its log file)",
                json!({ "description": "Log text", "content": { "text/plain": { "schema": { "type": "string" } } } }),
                vec![]) },
            "/v1/events": { "get": {
                "summary": "Lifecycle events as server-sent events (`event:` is the type, `data:` an Event); ends when the daemon shuts down",
                "parameters": [{ "name": "id", "in": "query", "required": false, "description": "Only this sandbox's events", "schema": { "type": "string" } }],
                "responses": { "200": { "description": "Event stream", "content": { "text/event-stream": { "schema": { "$ref": "#/components/schemas/Event" } } } }, "400": err_resp("Invalid ID, or an unknown query parameter") }
            } },
            "/v1/openapi.json": { "get": { "summary": "This document", "responses": { "200": { "description": "OpenAPI 3.1", "content": { "application/json": {} } }, "400": err_resp("A query parameter (none is taken)") } } },
            "/metrics": { "get": { "summary": "Prometheus metrics (OpenMetrics text)", "responses": { "200": { "description": "Metrics", "content": { "application/openmetrics-text": {} } }, "400": err_resp("A query parameter (none is taken)") } } },
            "/healthz": { "get": { "summary": "Liveness", "responses": { "200": ok_json("Alive: {\"status\": \"ok\"}", "Status"), "400": err_resp("A query parameter (none is taken)") } } },
            "/readyz": { "get": { "summary": "Readiness: the first reconciliation after start has finished", "responses": { "200": ok_json("Ready: {\"status\": \"ready\"}", "Status"), "400": err_resp("A query parameter (none is taken)"), "503": err_resp("Still recovering") } } }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "description": "TCP listener only" } },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "string" } } },
                "CreateRequest": { "allOf": [ { "$ref": "#/components/schemas/SandboxSpec" }, { "type": "object", "properties": { "start": { "type": "boolean", "const": true } } } ] },
                "SandboxSpec": {
                    "type": "object",
                    "required": ["id", "command"],
                    "additionalProperties": false,
                    "properties": {
                        "id": { "type": "string", "minLength": 1, "maxLength": paddock_supervisor::MAX_ID_LEN },
                        "command": { "type": "string", "minLength": 1 },
                        "args": { "type": "array", "items": { "type": "string" } },
                        "env": { "type": "object", "additionalProperties": { "type": "string" } },
                        "clear_env": { "type": "boolean" },
                        "cwd": opt("string"),
                        "stdio": { "type": "object", "additionalProperties": false, "properties": {
                            "stdin": { "$ref": "#/components/schemas/StdioTarget" },
                            "stdout": { "$ref": "#/components/schemas/StdioTarget" },
                            "stderr": { "$ref": "#/components/schemas/StdioTarget" } } },
                        "limits": { "type": "object", "additionalProperties": false, "properties": {
                            "memory_max": opt("integer"), "memory_high": opt("integer"), "cpus": opt("number"),
                            "cpu_weight": opt("integer"),
                            "pids_max": { "type": ["integer", "null"], "maximum": paddock_supervisor::MAX_PIDS_LIMIT },
                            "max_descendants": { "type": ["integer", "null"], "maximum": paddock_supervisor::MAX_CGROUP_COUNT_LIMIT },
                            "max_depth": { "type": ["integer", "null"], "maximum": paddock_supervisor::MAX_CGROUP_COUNT_LIMIT } } },
                        "network": { "oneOf": [ { "type": "string", "enum": ["host", "isolated"] }, { "type": "object", "required": ["named"], "properties": { "named": { "type": "string" } }, "additionalProperties": false } ] },
                        "stop": { "type": "object", "additionalProperties": false, "properties": {
                            "signal": { "type": "integer", "minimum": 1, "maximum": 64 },
                            "grace_period_ms": { "type": "integer", "minimum": 0, "maximum": max_ms },
                            "kill_timeout_ms": { "type": "integer", "minimum": 1, "maximum": max_ms } } },
                        "on_main_exit": { "type": "string", "enum": ["stop", "keep_running"] },
                        "labels": { "type": "object", "additionalProperties": { "type": "string" } }
                    }
                },
                "StdioTarget": { "oneOf": [ { "type": "string", "enum": ["null", "log"] }, { "type": "object", "required": ["file"], "properties": { "file": { "type": "string", "description": "A regular file, opened by the daemon as root (not through a symbolic link; FIFOs, devices, sockets and directories are refused): an absolute path, or beneath the daemon's --stdio-dir when it has one" } }, "additionalProperties": false } ] },
                "State": { "type": "string", "enum": paddock_supervisor::State::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>() },
                "SandboxInfo": {
                    "type": "object",
                    "properties": {
                        "id": { "type": "string" }, "lifecycle": { "type": "string" }, "state": { "$ref": "#/components/schemas/State" },
                        "paused": { "type": "boolean" }, "current": { "type": "boolean" }, "pid": opt("integer"), "cgroup_path": { "type": "string" },
                        "main_exit": { "oneOf": [ { "$ref": "#/components/schemas/MainExit" }, { "type": "null" } ] },
                        "stop_report": { "oneOf": [ { "$ref": "#/components/schemas/StopReport" }, { "type": "null" } ] },
                        "stuck": { "type": "array", "items": { "$ref": "#/components/schemas/StuckProcess" } }, "error": opt("string"), "created_at_ms": { "type": "integer" },
                        "spec": { "$ref": "#/components/schemas/SandboxSpec" }
                    }
                },
                "StopReport": {
                    "type": "object",
                    "properties": {
                        "reason": { "$ref": "#/components/schemas/StopReason" },
                        "signalled": { "type": "integer" }, "signal_ms": { "type": "number" }, "grace_ms": { "type": "number" }, "killed_after_grace": { "type": "integer" },
                        "kill_ms": { "type": "number" }, "remove_ms": { "type": "number" }, "rmdir_fallback": { "type": "boolean" },
                        "pids_frozen": { "type": "boolean" }, "total_ms": { "type": "number" }, "cpu_usage_usec": opt("integer"),
                        "memory_peak": opt("integer"), "oom_kills": opt("integer"),
                        "killed": { "type": "array", "description": "Who had to be killed (the first 64; killed_after_grace counts all)", "items": { "$ref": "#/components/schemas/KilledProcess" } },
                        "stuck": { "type": "array", "items": { "$ref": "#/components/schemas/StuckProcess" } }, "error": opt("string")
                    }
                },
                "KilledProcess": {
                    "type": "object",
                    "description": "A process a stop had to kill, as /proc named it just before the kill",
                    "properties": { "pid": { "type": "integer" }, "comm": opt("string") }
                },
                "StopReason": { "type": "string", "enum": ["requested", "killed", "main_exited", "shutdown", "recovered"] },
                "MainExit": {
                    "type": "object",
                    "description": "How the main process ended: `code` if it exited, `signal` if a signal killed it; both null when it ended while no daemon was its parent (status unknown)",
                    "properties": { "code": opt("integer"), "signal": opt("integer"), "core_dumped": { "type": "boolean" } }
                },
                "StuckProcess": {
                    "type": "object",
                    "description": "A process that survived the kill deadline, as /proc described it",
                    "properties": { "pid": { "type": "integer" }, "comm": opt("string"), "state": opt("string"), "wchan": opt("string") }
                },
                "Status": { "type": "object", "required": ["status"], "properties": { "status": { "type": "string" } } },
                "SandboxStats": {
                    "type": "object",
                    "description": "null means the controller is not available, not zero",
                    "properties": {
                        "cpu_usage_usec": opt("integer"), "cpu_user_usec": opt("integer"), "cpu_system_usec": opt("integer"), "cpu_nr_throttled": opt("integer"),
                        "memory_current": opt("integer"), "memory_peak": opt("integer"), "memory_oom_kill": opt("integer"), "memory_high_events": opt("integer"),
                        "memory_max_events": opt("integer"), "pids_current": opt("integer"), "io_read_bytes": opt("integer"), "io_write_bytes": opt("integer"), "processes": { "type": "integer" }
                    }
                },
                "Event": {
                    "type": "object",
                    "description": "The fields beyond id, lifecycle, at_ms and type depend on the type: started {pid}; adopted {pid, state}; start_failed {error}; main_exited {status}; stopping {reason}; leaked_processes_killed {count}; stopped {report}; quarantined {stuck}; failed {error}; paused and resumed none",
                    "required": ["id", "lifecycle", "at_ms", "type"],
                    "properties": {
                        "id": { "type": "string" }, "lifecycle": { "type": "string" }, "at_ms": { "type": "integer" },
                        "type": { "type": "string", "enum": ["started", "adopted", "start_failed", "main_exited", "stopping", "leaked_processes_killed", "stopped", "quarantined", "failed", "paused", "resumed"] },
                        "pid": opt("integer"),
                        "state": { "$ref": "#/components/schemas/State" },
                        "error": { "type": "string" },
                        "status": { "$ref": "#/components/schemas/MainExit" },
                        "reason": { "$ref": "#/components/schemas/StopReason" },
                        "count": { "type": "integer" },
                        "report": { "$ref": "#/components/schemas/StopReport" },
                        "stuck": { "type": "array", "items": { "$ref": "#/components/schemas/StuckProcess" } }
                    }
                }
            }
        }
    })
}

/// The document as pretty JSON with a trailing newline (the committed file's format).
pub fn document_string() -> String {
    let mut s = serde_json::to_string_pretty(&document()).expect("a JSON value serialises");
    s.push('\n');
    s
}
