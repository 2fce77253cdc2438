//! The OpenAPI document is derived from the code (`src/openapi.rs`, utoipa): these tests
//! check that the committed `openapi.json` is the generated one, that its patterns say
//! exactly what the server enforces, and, with a standard JSON Schema validator (the
//! `jsonschema` crate, draft 2020-12), that what the daemon sends is what it documents:
//! samples of every type, then the answers and the event stream of a real daemon.
//!
//! To update the committed document: `PADDOCK_UPDATE_OPENAPI=1 cargo test -p paddock --test
//! openapi`.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use common::{spec, world};
use paddock_supervisor::{
    Event, EventKind, KilledProcess, LifecycleId, Limits, MainExit, Network, SandboxId,
    SandboxInfo, SandboxSpec, SandboxStats, State, StdioSpec, StdioTarget, StopReason, StopReport,
    StuckProcess,
};
use serde_json::{Value, json};

fn generate() -> String {
    let o = std::process::Command::new(common::BIN)
        .arg("openapi")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn document() -> Value {
    serde_json::from_str(&generate()).unwrap()
}

#[test]
fn committed_openapi_matches_the_code() {
    let generated = generate();
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
    // The same document every time (nothing in it comes from a hash map's order).
    assert_eq!(generate(), generated);
}

/// A validator of `schema_ref` (e.g. `#/components/schemas/SandboxId`) that resolves
/// references within the document.
fn validator_for(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = json!({ "components": doc["components"].clone() });
    if let Value::Object(m) = schema {
        for (k, v) in m {
            root[k] = v.clone();
        }
    }
    jsonschema::draft202012::new(&root)
        .unwrap_or_else(|e| panic!("schema {schema} does not compile: {e}"))
}

fn component(doc: &Value, name: &str) -> jsonschema::Validator {
    validator_for(
        doc,
        &json!({ "$ref": format!("#/components/schemas/{name}") }),
    )
}

/// Strings that probe every rule of the patterns: lengths around 32 and 128, ASCII and not,
/// control characters, `/`, `.`, `..`, NUL, `=`, cgroup interface prefixes, digits.
fn probe_strings() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        "a",
        "web-1",
        ".",
        "..",
        "...",
        ".a",
        "a.",
        "a/b",
        "/",
        "a\0b",
        "\0",
        "a\x1fb",
        "a\x7fb",
        "a\u{85}b",
        "a\u{9f}b",
        "a\u{a0}b",
        "é",
        "😍",
        "a b",
        " ",
        "=",
        "a=b",
        "$\\",
        "172.31.0.1/30",
        "172.31.0.0/30",
        "127.0.0.1/8",
        "10.0.0.1/8",
        "10.0.0.1/7",
        "10.0.0.1/31",
        "10.0.0.1/030",
        "010.0.0.1/24",
        "256.0.0.1/24",
        "1.2.3/24",
        "1.2.3.4.5/24",
        "1.2.3.4/",
        "1.2.3.4",
        "::1/64",
        " 1.2.3.4/24",
        "1.2.3.4/24\n",
        "a<b",
        "a|b",
        "A",
        "cgroup.procs",
        "cgroup.",
        "cgroup",
        "xcgroup.procs",
        "memory.max",
        "io.x",
        "irq.a",
        "perf_event.x",
        "dmem.x",
        "misc.",
        "pids.x",
        "cpu",
        "cpu.",
        "cpuset.cpus",
        "@",
        "a@b",
        "%",
        "\\",
        "\u{202e}",
        "\u{feff}",
        "\u{10ffff}",
        "0000000000000000",
        "0123456789abcdef",
        "0123456789ABCDEF",
        "+123456789abcdef",
        "0123456789abcde",
        "0123456789abcdef0",
        "ffffffffffffffff",
        "g123456789abcdef",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for n in [31, 32, 33, 127, 128, 129, 200] {
        v.push("a".repeat(n));
        v.push(format!("é{}", "a".repeat(n - 1)));
        v.push("é".repeat(n));
        v.push("😍".repeat(n));
        v.push(format!("{}\u{1}", "a".repeat(n - 1)));
    }
    // A pseudo-random sample over all of Unicode, short and long.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..3000 {
        let len = [1usize, 2, 5, 20, 33, 40, 130][i % 7];
        let s: String = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let c = match x % 4 {
                    0 => (x >> 8) % 0x80,
                    1 => 0x20 + (x >> 8) % 0x5f,
                    2 => (x >> 8) % 0x800,
                    _ => (x >> 8) % 0x11_0000,
                };
                char::from_u32(c as u32).unwrap_or('a')
            })
            .collect();
        v.push(s);
    }
    v
}

fn spec_with(f: impl FnOnce(&mut SandboxSpec)) -> SandboxSpec {
    let mut s = SandboxSpec::new(SandboxId::new("p").unwrap(), "/bin/true", ["x"]);
    f(&mut s);
    s
}

/// Every pattern of the document accepts exactly what the server accepts: the sandbox ID,
/// the lifecycle, a named network namespace, the command, arguments, environment, the
/// working directory and stdio file paths.
#[test]
fn patterns_state_what_the_server_enforces() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    let spec_props = &schemas["SandboxSpec"]["properties"];
    let id = component(&doc, "SandboxId");
    let lc = component(&doc, "LifecycleId");
    let named = validator_for(&doc, &schemas["Network"]["oneOf"][1]["properties"]["named"]);
    let tap_name = validator_for(&doc, &schemas["TapSpec"]["properties"]["name"]);
    let tap_address = validator_for(&doc, &schemas["TapSpec"]["properties"]["address"]);
    let command = validator_for(&doc, &spec_props["command"]);
    let arg = validator_for(&doc, &spec_props["args"]["items"]);
    let env_name = validator_for(&doc, &spec_props["env"]["propertyNames"]);
    let env_value = validator_for(&doc, &spec_props["env"]["additionalProperties"]);
    let cwd = validator_for(&doc, &spec_props["cwd"]);
    let file = validator_for(
        &doc,
        &schemas["StdioSpec"]["properties"]["stdout"]["oneOf"][1]["properties"]["file"],
    );
    let mut disagree = Vec::new();
    let mut accepted = BTreeSet::new();
    for s in probe_strings() {
        let j = Value::String(s.clone());
        let mut check = |what: &'static str, doc_says: bool, server_says: bool| {
            if doc_says != server_says {
                disagree.push(format!(
                    "{what} {s:?}: document {doc_says}, server {server_says}"
                ));
            }
            if server_says {
                accepted.insert(what);
            }
        };
        check("id", id.is_valid(&j), SandboxId::new(s.clone()).is_ok());
        check(
            "lifecycle",
            lc.is_valid(&j),
            LifecycleId::parse(&s).is_some(),
        );
        check(
            "network.named",
            named.is_valid(&j),
            spec_with(|p| p.network = Network::Named(s.clone()))
                .validate()
                .is_ok(),
        );
        check(
            "network.veth.taps[].name",
            tap_name.is_valid(&j),
            spec_with(|p| {
                p.network = Network::Veth(paddock_supervisor::VethSpec {
                    taps: vec![paddock_supervisor::TapSpec {
                        name: s.clone(),
                        uid: None,
                        gid: None,
                        multi_queue: false,
                        vnet_hdr: false,
                        address: None,
                    }],
                    ..Default::default()
                })
            })
            .validate()
            .is_ok(),
        );
        // A 400 is what the pattern refuses; an address written right but unusable (the
        // subnet's network address, a loopback) is a 422, past the schema.
        let tap_with = |a: &str| {
            spec_with(|p| {
                p.network = Network::Veth(paddock_supervisor::VethSpec {
                    taps: vec![paddock_supervisor::TapSpec {
                        name: "tap0".into(),
                        uid: None,
                        gid: None,
                        multi_queue: false,
                        vnet_hdr: false,
                        address: Some(a.to_owned()),
                    }],
                    ..Default::default()
                })
            })
            .validate()
        };
        check(
            "network.veth.taps[].address",
            tap_address.is_valid(&j),
            !matches!(tap_with(&s), Err(paddock_supervisor::Error::InvalidSpec(_))),
        );
        check(
            "command",
            command.is_valid(&j),
            spec_with(|p| p.command = s.clone()).validate().is_ok(),
        );
        check(
            "args[]",
            arg.is_valid(&j),
            spec_with(|p| p.args = vec![s.clone()]).validate().is_ok(),
        );
        check(
            "env name",
            env_name.is_valid(&j),
            spec_with(|p| {
                p.env.insert(s.clone(), "v".into());
            })
            .validate()
            .is_ok(),
        );
        check(
            "env value",
            env_value.is_valid(&j),
            spec_with(|p| {
                p.env.insert("K".into(), s.clone());
            })
            .validate()
            .is_ok(),
        );
        check(
            "cwd",
            cwd.is_valid(&j),
            spec_with(|p| p.cwd = Some(s.clone().into()))
                .validate()
                .is_ok(),
        );
        check(
            "stdio file",
            file.is_valid(&j),
            spec_with(|p| p.stdio.stdout = StdioTarget::File(s.clone().into()))
                .validate()
                .is_ok(),
        );
    }
    assert!(
        disagree.is_empty(),
        "{} disagreements, e.g.:\n{}",
        disagree.len(),
        disagree[..disagree.len().min(20)].join("\n")
    );
    // The probe reaches both answers of every rule.
    assert_eq!(accepted.len(), 11, "{accepted:?}");
    // The checker can fail: a pattern that allows one string more is caught.
    let loose = validator_for(&doc, &json!({ "type": "string", "maxLength": 128 }));
    assert!(loose.is_valid(&json!("..")) && SandboxId::new("..").is_err());
}

/// Strings that probe the jail's path, device, name, capability and rlimit patterns.
fn jail_probe_strings() -> Vec<String> {
    let mut v = probe_strings();
    for s in [
        "/",
        "/a",
        "/.",
        "/..",
        "/./",
        "//",
        "/a/..",
        "/a/../b",
        "/..a",
        "/a..",
        "/.../",
        "/./.",
        "//.//",
        "/.a",
        "/a/.",
        "/dev/kvm",
        "/dev",
        "/dev/",
        "//dev/kvm",
        "/dev/.",
        "/dev/./x",
        "/dev//x",
        "/dev/..",
        "/dev/../x",
        "/dev/...",
        "/devx",
        "/dev/kvm/..",
        "/a\0",
        "/a\n",
        "/a\n/..",
        "/\n..",
        "/..\n",
        "/\n",
        "/a/\n/..",
        "\n/a",
        "/é",
        "/.é",
        "/\u{2028}..",
        "CAP_SYS_ADMIN",
        "cap_sys_admin",
        "Cap_Chown",
        "SYS_ADMIN",
        "ALL",
        "all",
        "All",
        "CAP_ALL",
        "cap_",
        "CAP_FLY",
        "\u{17f}ys_admin",
        "\u{212a}ill",
        "kill\n",
        "CAP_KILL ",
        "nofile",
        "NOFILE",
        "RLIMIT_NOFILE",
        "rlimit_nofile",
        "RLIMIT_",
        "nofile\n",
        "nofiles",
        "as",
        "AS",
        "4294967295",
        "04294967295",
        "00004294967295",
        "4294967294",
        "99999999999",
        "a:b",
        "a/b",
        "root",
        "_x-1$",
        "a\u{85}",
        "box-1",
        "box-1.example",
        "-x",
        "x-",
        "a..b",
        "a.b.",
        ".a",
    ] {
        v.push(s.to_string());
    }
    for n in [
        63, 64, 65, 255, 256, 257, 1023, 1024, 1025, 4095, 4096, 4097,
    ] {
        v.push("0".repeat(n));
        v.push(format!("/{}", "a".repeat(n - 1)));
        v.push(format!("/{}", "é".repeat(n - 1)));
        v.push(format!("/dev/{}", "a".repeat(n.saturating_sub(5))));
        v.push(format!("/{}é", "a".repeat(n - 2)));
    }
    v
}

/// The jail's patterns accept exactly what `JailSpec::validate_fields` accepts: the
/// hostname, user and group names, paths (rootfs, mount sources and targets, devices,
/// masked paths), capability and rlimit names.
#[test]
fn jail_patterns_state_what_the_server_enforces() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    let fs = &schemas["FilesystemSpec"]["properties"];
    let bind = &schemas["MountSpec"]["oneOf"][0]["properties"];
    let validators = [
        (
            "hostname",
            validator_for(&doc, &schemas["JailSpec"]["properties"]["hostname"]),
        ),
        ("name", component(&doc, "IdOrName")),
        ("rootfs", validator_for(&doc, &fs["rootfs"])),
        ("source", validator_for(&doc, &bind["source"])),
        ("target", validator_for(&doc, &bind["target"])),
        ("device", validator_for(&doc, &fs["devices"]["items"])),
        ("masked", validator_for(&doc, &fs["masked_paths"]["items"])),
        (
            "cap",
            validator_for(
                &doc,
                &schemas["PrivilegesSpec"]["properties"]["cap_drop"]["items"],
            ),
        ),
        (
            "rlimit",
            validator_for(&doc, &schemas["NamedRlimit"]["properties"]["name"]),
        ),
    ];
    let jail_of = |what: &str, s: &str| -> Value {
        match what {
            "hostname" => json!({"hostname": s}),
            "name" => json!({"user": {"groups": [s]}}),
            "rootfs" => json!({"filesystem": {"rootfs": s}}),
            "source" => {
                json!({"filesystem": {"mounts": [{"type": "bind", "source": s, "target": "/t"}]}})
            }
            "target" => {
                json!({"filesystem": {"mounts": [{"type": "bind", "source": "/s", "target": s}]}})
            }
            "device" => json!({"filesystem": {"devices": [s]}}),
            "masked" => json!({"filesystem": {"masked_paths": [s]}}),
            "cap" => json!({"privileges": {"cap_drop": [s]}}),
            "rlimit" => json!({"rlimits": [{"name": s, "soft": 1}]}),
            _ => unreachable!(),
        }
    };
    let mut disagree = Vec::new();
    let mut accepted = BTreeSet::new();
    let mut refused = BTreeSet::new();
    for s in jail_probe_strings() {
        for (what, v) in &validators {
            let j: paddock_supervisor::JailSpec =
                serde_json::from_value(jail_of(what, &s)).unwrap();
            let server = j.validate_fields().is_ok();
            let doc_says = v.is_valid(&json!(s));
            if doc_says != server {
                disagree.push(format!(
                    "{what} {s:?}: document {doc_says}, server {server}"
                ));
            }
            if server {
                accepted.insert(*what);
            } else {
                refused.insert(*what);
            }
        }
    }
    assert!(
        disagree.is_empty(),
        "{} disagreements, e.g.:\n{}",
        disagree.len(),
        disagree[..disagree.len().min(20)].join("\n")
    );
    // The probe reaches both answers of every rule.
    assert_eq!(
        (accepted.len(), refused.len()),
        (9, 9),
        "{accepted:?} {refused:?}"
    );
}

/// Number ranges: each bound of the document is the server's, the value one past it is
/// refused by both.
#[test]
fn ranges_state_what_the_server_enforces() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    type Set = fn(&mut SandboxSpec, &Value);
    let u = |v: &Value| v.as_u64().unwrap();
    let cases: Vec<(&str, &Value, Set)> = vec![
        (
            "Limits.memory_max",
            &schemas["Limits"]["properties"]["memory_max"],
            |s, v| s.limits.memory_max = v.as_u64(),
        ),
        (
            "Limits.memory_high",
            &schemas["Limits"]["properties"]["memory_high"],
            |s, v| s.limits.memory_high = v.as_u64(),
        ),
        (
            "Limits.cpu_weight",
            &schemas["Limits"]["properties"]["cpu_weight"],
            |s, v| s.limits.cpu_weight = v.as_u64(),
        ),
        (
            "Limits.pids_max",
            &schemas["Limits"]["properties"]["pids_max"],
            |s, v| s.limits.pids_max = v.as_u64(),
        ),
        (
            "Limits.max_descendants",
            &schemas["Limits"]["properties"]["max_descendants"],
            |s, v| s.limits.max_descendants = v.as_u64(),
        ),
        (
            "Limits.max_depth",
            &schemas["Limits"]["properties"]["max_depth"],
            |s, v| s.limits.max_depth = v.as_u64(),
        ),
        (
            "StopPolicy.grace_period_ms",
            &schemas["StopPolicy"]["properties"]["grace_period_ms"],
            |s, v| s.stop.grace_period_ms = v.as_u64().unwrap(),
        ),
        (
            "StopPolicy.kill_timeout_ms",
            &schemas["StopPolicy"]["properties"]["kill_timeout_ms"],
            |s, v| s.stop.kill_timeout_ms = v.as_u64().unwrap(),
        ),
        (
            "StopPolicy.signal",
            &schemas["StopPolicy"]["properties"]["signal"],
            |s, v| s.stop.signal = v.as_i64().unwrap() as i32,
        ),
    ];
    for (name, schema, set) in cases {
        let v = validator_for(&doc, schema);
        let (min, max) = (u(&schema["minimum"]), u(&schema["maximum"]));
        let mut values = vec![min, max];
        if min > 0 {
            values.push(min - 1);
        }
        if max < u64::MAX {
            values.push(max + 1);
        }
        for n in values {
            let j = json!(n);
            let server = {
                let mut s = spec_with(|_| {});
                set(&mut s, &j);
                s.validate().is_ok()
            };
            assert_eq!(v.is_valid(&j), server, "{name} = {n}");
        }
    }
    let cpus = &schemas["Limits"]["properties"]["cpus"];
    let v = validator_for(&doc, cpus);
    let (min, max) = (
        cpus["minimum"].as_f64().unwrap(),
        cpus["maximum"].as_f64().unwrap(),
    );
    for c in [
        min,
        max,
        min - 1e-9,
        f64::from_bits(min.to_bits() - 1),
        max + 1.0,
        0.0,
        1.5,
    ] {
        let server = spec_with(|s| s.limits.cpus = Some(c)).validate().is_ok();
        assert_eq!(v.is_valid(&json!(c)), server, "cpus = {c}");
    }
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
        oom_group_kills: None,
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
        memory_low: Some(1 << 20),
        memory_min: Some(1 << 19),
        memory_swap_max: Some(0),
        oom_group: Some(false),
        io_weight: Some(200),
        io_max: vec![paddock_supervisor::IoDeviceLimit {
            device: "/dev/vdb".into(),
            read_bps: Some(1 << 20),
            write_bps: None,
            read_iops: None,
            write_iops: Some(100),
        }],
        cpuset_cpus: Some("0-1".into()),
        cpuset_mems: Some("0".into()),
        hugetlb_max: [("2MB".to_string(), 4 << 20)].into(),
    };
    spec.network = Network::Named("blue".into());
    spec.deadline_ms = Some(60_000);
    spec.restart = paddock_supervisor::RestartPolicy {
        mode: paddock_supervisor::RestartMode::OnFailure,
        max_restarts: Some(3),
        initial_backoff_ms: 200,
        max_backoff_ms: 10_000,
    };
    spec.jail = Some(
        serde_json::from_value(json!({
            "user": {"uid": 1000, "gid": "kvm", "groups": [10, "video"]},
            "privileges": {"no_new_privs": true, "cap_add": [], "cap_drop": ["ALL"]},
            "rlimits": {"nofile": {"soft": 1024, "hard": 4096}, "stack": {"soft": "unlimited"}},
            "namespaces": ["pid", "mount", "ipc", "uts", "cgroup"],
            "hostname": "box-1",
            "filesystem": {
                "rootfs": "/srv/jail/x", "readonly": true,
                "mounts": [
                    {"type": "bind", "source": "/data", "target": "/data", "readonly": true},
                    {"type": "tmpfs", "target": "/tmp", "size": 67108864, "mode": 1023},
                    {"type": "proc", "target": "/proc"},
                    {"type": "sysfs", "target": "/sys"},
                    {"type": "mqueue", "target": "/dev/mqueue"}
                ],
                "minimal_dev": true, "devices": ["/dev/kvm"], "masked_paths": ["/proc/kcore"],
                "cgroupfs": "hidden"
            },
            "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]},
            "landlock": {"mode": "auto", "tcp_bind": [8080], "tcp_connect": null},
            "init": true
        }))
        .unwrap(),
    );
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
        jail: Some(paddock_supervisor::JailStatus {
            uid: 200_001,
            gid: 200_001,
            groups: vec![10],
            dynamic_uid: Some(200_001),
            capabilities: vec!["CAP_KILL".into()],
            landlock_mode: Default::default(),
            landlock_abi: Some(4),
        }),
        deadline_at_ms: Some(2),
        restart_count: 1,
        restart_pending: Some(paddock_supervisor::PendingRestart {
            attempt: 2,
            since_reset: 2,
            at_ms: 3,
        }),
        network: Some(paddock_supervisor::NetStatus {
            owner: "daemon:0123456789abcdef0123456789abcdef+0000000000000001".into(),
            netns: "/run/paddock/netns/daemon:0123456789abcdef0123456789abcdef+0000000000000001"
                .into(),
            host_ifname: "pdk01234567".into(),
            sandbox_ifname: "eth0".into(),
            subnet: "10.231.0.0/30".into(),
            host_address: "10.231.0.1".into(),
            sandbox_address: "10.231.0.2".into(),
            taps: vec!["tap0".into()],
            rules: vec!["nat".into(), "publish 8080->80/tcp".into()],
            table: Some("ip paddock_01234567".into()),
        }),
    }
}

fn veth_info() -> SandboxInfo {
    use paddock_supervisor::{Protocol, PublishSpec, TapSpec, VethSpec};
    let mut i = info(false);
    i.spec.network = Network::Veth(VethSpec {
        nat: true,
        publish: vec![PublishSpec {
            host_port: 8080,
            sandbox_port: 80,
            protocol: Protocol::Udp,
        }],
        isolate: true,
        taps: vec![TapSpec {
            name: "tap0".into(),
            uid: Some(1),
            gid: None,
            multi_queue: true,
            vnet_hdr: true,
            address: Some("172.31.0.1/30".into()),
        }],
    });
    i
}

fn events() -> Vec<Event> {
    let kinds = vec![
        EventKind::Started { pid: 1, jail: None },
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
        EventKind::Stopping {
            reason: StopReason::Deadline,
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
        EventKind::DeadlineSet { deadline_at_ms: 3 },
        EventKind::Deadline { deadline_at_ms: 3 },
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

/// The document, stricter: every named object schema refuses keys it does not list
/// (`unevaluatedProperties: false`; the event's variants are only used through `Event`'s
/// `allOf`, and `Event` only through `SequencedEvent`'s, which gets it instead), so a key
/// the daemon sends and the document lacks fails.
fn strict(doc: &Value) -> Value {
    let mut doc = doc.clone();
    let schemas = doc["components"]["schemas"].as_object_mut().unwrap();
    for (name, s) in schemas.iter_mut() {
        let object = s.get("properties").is_some() || s.get("allOf").is_some();
        if object
            && s.get("additionalProperties").is_none()
            && name != "EventKind"
            && name != "Event"
        {
            s["unevaluatedProperties"] = json!(false);
        }
    }
    doc
}

/// The schema of the `code` answer of `method path` with its media type.
fn response<'a>(
    doc: &'a Value,
    method: &str,
    path: &str,
    code: u16,
) -> Option<(&'a str, &'a Value)> {
    let r = &doc["paths"][path][method.to_ascii_lowercase()]["responses"][code.to_string()];
    if !r.is_object() {
        return None;
    }
    match r["content"].as_object() {
        Some(c) => {
            let (media, m) = c.iter().next().expect("a media type");
            Some((media.as_str(), &m["schema"]))
        }
        None => Some(("", &Value::Null)),
    }
}

/// Checks `body` against the documented `code` answer of `method path`: the status is
/// documented, and a JSON body validates. Returns the problems.
fn conforms(doc: &Value, method: &str, path: &str, code: u16, body: &[u8]) -> Vec<String> {
    let Some((media, schema)) = response(doc, method, path, code) else {
        return vec![format!("{method} {path}: status {code} is not documented")];
    };
    if media != "application/json" {
        return Vec::new();
    }
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return vec![format!("{method} {path} {code}: not JSON: {e}")],
    };
    validator_for(doc, schema)
        .iter_errors(&v)
        .map(|e| format!("{method} {path} {code}: {e} at {}", e.instance_path()))
        .collect()
}

/// Samples of every type the daemon sends validate against the schema of the answer that
/// carries them, with unknown keys refused; so does a full create body.
/// An event is one JSON object: the event's own fields (`id`, `lifecycle`, `at_ms`, and the
/// stream's `seq`) beside its kind's (flattened). No kind may have a field of the same name:
/// the object would carry the key twice (`restarting` once had two `at_ms`), and readers
/// disagree on which one wins.
#[test]
fn event_kinds_share_no_key_with_the_event() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    let mut own: BTreeSet<String> = BTreeSet::new();
    for (name, part) in [("Event", 1), ("SequencedEvent", 1)] {
        let props = schemas[name]["allOf"][part]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{name}'s own properties: {}", schemas[name]));
        own.extend(props.keys().cloned());
    }
    assert!(own.contains("at_ms") && own.contains("seq"), "{own:?}");
    let kinds = schemas["EventKind"]["oneOf"].as_array().unwrap();
    assert!(kinds.len() > 10, "{} kinds", kinds.len());
    for k in kinds {
        for key in k["properties"].as_object().unwrap().keys() {
            assert!(
                key == "type" || !own.contains(key),
                "an event kind has the event's own key {key:?}: {k}"
            );
        }
    }
}

#[test]
fn samples_of_every_type_validate() {
    let doc = strict(&document());
    let v = |x: &dyn erased::Ser| x.json();
    let mut samples: Vec<(String, String, u16, Value)> = [
        ("POST", "/v1/sandboxes", 201, v(&info(false))),
        (
            "GET",
            "/v1/sandboxes",
            200,
            json!([info(false), info(true)]),
        ),
        ("GET", "/v1/sandboxes/{id}", 200, v(&info(true))),
        ("GET", "/v1/sandboxes/{id}", 200, v(&veth_info())),
        ("GET", "/v1/sandboxes/{id}/wait", 200, v(&info(true))),
        ("POST", "/v1/sandboxes/{id}/pause", 200, v(&info(false))),
        ("POST", "/v1/sandboxes/{id}/resume", 200, v(&info(false))),
        ("POST", "/v1/sandboxes/{id}/stop", 200, v(&stop_report())),
        ("POST", "/v1/sandboxes/{id}/kill", 200, v(&stop_report())),
        (
            "GET",
            "/v1/sandboxes/{id}/stats",
            200,
            v(&SandboxStats {
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
                pressure: paddock_supervisor::SandboxPressure {
                    cpu: Some(paddock_supervisor::PsiStats {
                        some: paddock_supervisor::PsiLine {
                            avg10: 1.5,
                            avg60: 0.0,
                            avg300: 0.0,
                            total_usec: 7,
                        },
                        full: None,
                    }),
                    memory: None,
                    io: None,
                },
            }),
        ),
        ("GET", "/healthz", 200, json!({ "status": "ok" })),
        ("GET", "/readyz", 200, json!({ "status": "ready" })),
    ]
    .into_iter()
    .map(|(m, p, c, b)| (m.to_owned(), p.to_owned(), c, b))
    .collect();
    // Every error answer of every operation is {"error": "..."}.
    let error = json!({ "error": "no sandbox x" });
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for code in op["responses"].as_object().unwrap().keys() {
                let code: u16 = code.parse().unwrap();
                if code >= 400 {
                    // The 410 of the event stream says which events are kept.
                    let body = if path == "/v1/events" && code == 410 {
                        json!({ "error": "gone", "oldest_seq": 9, "last_seq": 20 })
                    } else {
                        error.clone()
                    };
                    samples.push((method.to_ascii_uppercase(), path.clone(), code, body));
                }
            }
        }
    }
    let mut problems = Vec::new();
    for (method, path, code, body) in &samples {
        problems.extend(conforms(
            &doc,
            method,
            path,
            *code,
            body.to_string().as_bytes(),
        ));
    }
    // Events: each as the `data` of a stream item.
    let item = component(&doc, "EventStreamItem");
    let data = validator_for(
        &doc,
        &doc["components"]["schemas"]["EventStreamItem"]["properties"]["data"]["contentSchema"],
    );
    for (seq, ev) in events().into_iter().enumerate() {
        let mut j = serde_json::to_value(&ev).unwrap();
        j["seq"] = json!(seq + 1);
        let name = j["type"].as_str().unwrap().to_owned();
        let it = json!({ "event": name, "id": (seq + 1).to_string(), "data": j.to_string() });
        problems.extend(
            item.iter_errors(&it)
                .map(|e| format!("stream item {name}: {e}")),
        );
        problems.extend(
            data.iter_errors(&j)
                .map(|e| format!("event {name}: {e} at {}", e.instance_path())),
        );
    }
    assert!(data.is_valid(&json!({ "missed": 3 })));
    // An event without its seq is not what the stream sends.
    let unnumbered = serde_json::to_value(&events()[0]).unwrap();
    assert!(
        !data.is_valid(&unnumbered),
        "an event without seq validates"
    );
    // The request body: a full spec plus "start".
    let mut create = serde_json::to_value(full_spec()).unwrap();
    create["start"] = json!(true);
    let req = &doc["paths"]["/v1/sandboxes"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    problems.extend(
        validator_for(&doc, req)
            .iter_errors(&create)
            .map(|e| format!("create body: {e} at {}", e.instance_path())),
    );
    assert!(
        problems.is_empty(),
        "the OpenAPI document drifted from the types:\n{problems:#?}"
    );

    // The check can fail: an undocumented key, a wrong type, an unknown event are caught.
    let mut bad = serde_json::to_value(stop_report()).unwrap();
    bad["surprise"] = json!(1);
    assert!(
        !conforms(
            &doc,
            "POST",
            "/v1/sandboxes/{id}/stop",
            200,
            bad.to_string().as_bytes()
        )
        .is_empty()
    );
    let mut bad = serde_json::to_value(info(true)).unwrap();
    bad["stop_report"]["signalled"] = json!("three");
    assert!(
        !conforms(
            &doc,
            "GET",
            "/v1/sandboxes/{id}",
            200,
            bad.to_string().as_bytes()
        )
        .is_empty()
    );
    assert!(!item.is_valid(&json!({ "event": "exploded", "data": "{}" })));
    assert!(!data.is_valid(&json!({ "type": "exploded" })));
    // A create body with an unknown field is refused by the document, as by the daemon.
    create["surprise"] = json!(1);
    assert!(!validator_for(&doc, req).is_valid(&create));
}

/// `serde_json::to_value` for the sample builders.
mod erased {
    pub trait Ser {
        fn json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap()
        }
    }
}

/// Reads the event stream of `socket` (for `id`) until `stop_at` is seen: the raw head and
/// the parsed items (`event`, `data`).
/// The head and the items (`event`, `id`, `data`) of an event stream.
type Stream = (String, Vec<(String, String, String)>);

/// The receiver hears once the head has arrived: the daemon has subscribed the stream then.
fn read_events(
    socket: std::path::PathBuf,
    id: &str,
    stop_at: &'static str,
) -> (
    std::thread::JoinHandle<Stream>,
    std::sync::mpsc::Receiver<()>,
) {
    let req = format!("GET /v1/events?id={id} HTTP/1.1\r\nHost: x\r\n\r\n");
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut head = String::new();
        let mut items = Vec::new();
        let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
        let mut in_head = true;
        for l in BufReader::new(s).lines() {
            let l = l.unwrap();
            if in_head {
                in_head = !l.is_empty();
                head.push_str(&l);
                head.push('\n');
                if !in_head {
                    let _ = tx.send(());
                }
                continue;
            }
            if let Some(e) = l.strip_prefix("event: ") {
                event = e.to_owned();
            } else if let Some(i) = l.strip_prefix("id: ") {
                id = i.to_owned();
            } else if let Some(d) = l.strip_prefix("data: ") {
                data = d.to_owned();
            } else if l.is_empty() && !data.is_empty() {
                let done = event == stop_at;
                items.push((
                    std::mem::take(&mut event),
                    std::mem::take(&mut id),
                    std::mem::take(&mut data),
                ));
                if done {
                    break;
                }
            }
        }
        (head, items)
    });
    (t, rx)
}

/// A real daemon: every answer to a walk through a sandbox's life (and to bad requests)
/// has a documented status and validates against the document; so does every event of
/// the stream; and every documented operation is routed (none answers with the router's
/// own 404 or 405).
#[test]
fn a_real_daemon_answers_as_documented() {
    let Some(w) = world("openapi_a_real_daemon_answers_as_documented") else {
        return;
    };
    let doc = strict(&document());
    let _d = w.daemon(&[]);
    let (events, subscribed) = read_events(w.socket.clone(), "oa-1", "stopped");
    subscribed
        .recv_timeout(Duration::from_secs(10))
        .expect("the event stream's head within 10 s");

    let mut problems = Vec::new();
    let mut call = |method: &str, path: &str, templ: &str, body: Option<&[u8]>| {
        let r = w.http(method, path, body);
        problems.extend(conforms(&doc, method, templ, r.status, &r.body));
        r
    };
    let created = call(
        "POST",
        "/v1/sandboxes",
        "/v1/sandboxes",
        Some(&spec("oa-1", "echo hello; exec sleep 300")),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let lc = created.json()["lifecycle"].as_str().unwrap().to_owned();
    let q = format!("?lifecycle={lc}");
    for (method, path, templ, want) in [
        ("GET", "/v1/sandboxes".to_owned(), "/v1/sandboxes", 200),
        (
            "GET",
            format!("/v1/sandboxes/oa-1{q}"),
            "/v1/sandboxes/{id}",
            200,
        ),
        (
            "GET",
            format!("/v1/sandboxes/oa-1/stats{q}"),
            "/v1/sandboxes/{id}/stats",
            200,
        ),
        (
            "POST",
            format!("/v1/sandboxes/oa-1/pause{q}"),
            "/v1/sandboxes/{id}/pause",
            200,
        ),
        (
            "POST",
            format!("/v1/sandboxes/oa-1/resume{q}"),
            "/v1/sandboxes/{id}/resume",
            200,
        ),
        ("POST", "/v1/sandboxes".to_owned(), "/v1/sandboxes", 409),
        (
            "DELETE",
            format!("/v1/sandboxes/oa-1{q}"),
            "/v1/sandboxes/{id}",
            409,
        ),
        (
            "GET",
            format!("/v1/sandboxes/oa-1/wait{q}&timeout=50ms"),
            "/v1/sandboxes/{id}/wait",
            200,
        ),
        (
            "POST",
            format!("/v1/sandboxes/oa-1/stop{q}&timeout=1s"),
            "/v1/sandboxes/{id}/stop",
            200,
        ),
        (
            "POST",
            format!("/v1/sandboxes/oa-1/kill{q}"),
            "/v1/sandboxes/{id}/kill",
            200,
        ),
        (
            "GET",
            format!("/v1/sandboxes/oa-1/wait{q}"),
            "/v1/sandboxes/{id}/wait",
            200,
        ),
        (
            "GET",
            format!("/v1/sandboxes/oa-1/logs{q}"),
            "/v1/sandboxes/{id}/logs",
            200,
        ),
        (
            "GET",
            format!("/v1/sandboxes/oa-1/stats{q}"),
            "/v1/sandboxes/{id}/stats",
            409,
        ),
        (
            "POST",
            format!("/v1/sandboxes/oa-1/pause{q}"),
            "/v1/sandboxes/{id}/pause",
            409,
        ),
        (
            "DELETE",
            format!("/v1/sandboxes/oa-1{q}"),
            "/v1/sandboxes/{id}",
            204,
        ),
        (
            "GET",
            "/v1/sandboxes/oa-1".to_owned(),
            "/v1/sandboxes/{id}",
            404,
        ),
        (
            "GET",
            "/v1/sandboxes/..".to_owned(),
            "/v1/sandboxes/{id}",
            400,
        ),
        (
            "GET",
            "/v1/sandboxes/x?lifecycle=ABCDEF0123456789".to_owned(),
            "/v1/sandboxes/{id}",
            400,
        ),
        (
            "POST",
            "/v1/sandboxes/x/stop?timeout=8761h".to_owned(),
            "/v1/sandboxes/{id}/stop",
            400,
        ),
        ("GET", "/v1/events?id=..".to_owned(), "/v1/events", 400),
        ("GET", "/v1/events?since=x".to_owned(), "/v1/events", 400),
        (
            "GET",
            "/v1/events?since=18446744073709551615".to_owned(),
            "/v1/events",
            422,
        ),
        ("GET", "/healthz".to_owned(), "/healthz", 200),
        ("GET", "/readyz".to_owned(), "/readyz", 200),
        ("GET", "/metrics".to_owned(), "/metrics", 200),
        (
            "GET",
            "/v1/openapi.json".to_owned(),
            "/v1/openapi.json",
            200,
        ),
        ("GET", "/healthz?x=1".to_owned(), "/healthz", 400),
    ] {
        let body =
            (method == "POST" && templ == "/v1/sandboxes").then(|| spec("oa-1", "exec sleep 300"));
        let r = call(method, &path, templ, body.as_deref());
        assert_eq!(r.status, want, "{method} {path}: {}", r.text());
    }
    let logs = call(
        "GET",
        "/v1/sandboxes/oa-2/logs",
        "/v1/sandboxes/{id}/logs",
        None,
    );
    assert_eq!(logs.status, 404);
    // Creates the node cannot carry out: 422, documented, with the error body.
    for body in [
        json!({ "id": "oa-3", "command": "/nonexistent/program" }),
        json!({ "id": "oa-3", "command": "/bin/true", "network": { "named": format!("paddock-no-such-{}", std::process::id()) } }),
        json!({ "id": "oa-3", "command": "/bin/true", "stdio": { "stdout": { "file": "/dev/null" } } }),
        json!({ "id": "oa-3", "command": "/bin/true", "stdio": { "stdin": { "file": "relative" } } }),
    ] {
        let r = call(
            "POST",
            "/v1/sandboxes",
            "/v1/sandboxes",
            Some(body.to_string().as_bytes()),
        );
        assert_eq!(r.status, 422, "{body}: {}", r.text());
    }
    // Bad input the document refuses is a 400: an empty stdio file (a 500 once), NUL in the
    // working directory, 1.5 as an integer, an ID over 32 characters that is not all ASCII.
    for body in [
        json!({ "id": "oa-4", "command": "/bin/true", "stdio": { "stdout": { "file": "" } } }),
        json!({ "id": "oa-4", "command": "/bin/true", "cwd": "/\u{0}" }),
        json!({ "id": "oa-4", "command": "/bin/true", "limits": { "pids_max": 1.5 } }),
        json!({ "id": "é".repeat(33), "command": "/bin/true" }),
    ] {
        let r = call(
            "POST",
            "/v1/sandboxes",
            "/v1/sandboxes",
            Some(body.to_string().as_bytes()),
        );
        assert_eq!(r.status, 400, "{body}: {}", r.text());
    }
    // The node endpoints, label selectors and a create refused while draining.
    for (method, path, templ, body, want) in [
        ("GET", "/v1/node", "/v1/node", None, 200),
        ("GET", "/v1/node?x=1", "/v1/node", None, 400),
        (
            "GET",
            "/v1/sandboxes?label=a=b&label=c",
            "/v1/sandboxes",
            None,
            200,
        ),
        ("GET", "/v1/sandboxes?label==b", "/v1/sandboxes", None, 400),
        (
            "POST",
            "/v1/node/drain",
            "/v1/node/drain",
            Some(&br#"{"stop": 1}"#[..]),
            400,
        ),
        (
            "POST",
            "/v1/node/drain",
            "/v1/node/drain",
            Some(br#"{"stop": false, "grace": null}"#),
            200,
        ),
        (
            "POST",
            "/v1/sandboxes",
            "/v1/sandboxes",
            Some(br#"{"id": "oa-5", "command": "/bin/true"}"#),
            503,
        ),
        ("POST", "/v1/node/undrain", "/v1/node/undrain", None, 200),
        (
            "POST",
            "/v1/node/undrain?x=1",
            "/v1/node/undrain",
            None,
            400,
        ),
    ] {
        let r = call(method, path, templ, body);
        assert_eq!(r.status, want, "{method} {path}: {}", r.text());
    }
    // Every documented operation is routed: with an unknown sandbox it answers one of its
    // documented statuses, never the router's "no such endpoint" or 405.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let m = method.to_ascii_uppercase();
            if path == "/v1/events" || (m == "POST" && path == "/v1/sandboxes") {
                continue;
            }
            let concrete = path.replace("{id}", "oa-nosuch");
            let r = call(&m, &concrete, path, None);
            assert!(
                ![405].contains(&r.status) && !r.text().contains("no such endpoint"),
                "{m} {path} is documented but not routed: {} {}",
                r.status,
                r.text()
            );
        }
    }
    let (head, items) = events.join().unwrap();
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    let item = component(&doc, "EventStreamItem");
    let data = validator_for(
        &doc,
        &doc["components"]["schemas"]["EventStreamItem"]["properties"]["data"]["contentSchema"],
    );
    let names: Vec<&str> = items.iter().map(|(e, _, _)| e.as_str()).collect();
    for want in ["started", "paused", "resumed", "stopping", "stopped"] {
        assert!(names.contains(&want), "no {want} event in {names:?}");
    }
    let mut last_seq = 0;
    for (event, id, d) in &items {
        let it = json!({ "event": event, "id": id, "data": d });
        problems.extend(
            item.iter_errors(&it)
                .map(|e| format!("stream item {event}: {e}")),
        );
        let v: Value = serde_json::from_str(d).unwrap();
        problems.extend(
            data.iter_errors(&v)
                .map(|e| format!("event {event}: {e} at {}", e.instance_path())),
        );
        assert_eq!(v["type"], event.as_str());
        // The SSE id is the seq, and seqs increase.
        let seq = v["seq"].as_u64().expect("seq");
        assert_eq!(id, &seq.to_string());
        assert!(seq > last_seq, "seq {seq} after {last_seq}");
        last_seq = seq;
    }
    assert!(problems.is_empty(), "{problems:#?}");
    w.assert_no_leaks();
}
