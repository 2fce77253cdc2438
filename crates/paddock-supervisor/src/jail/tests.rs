//! The jail spec's decoding, validation, resolution and conversion, without root.
//!
//! Over 600 lines: one table of refused jails per kind of rule keeps every field's refusal
//! (and its 400 or 422 kind) in one place.

use std::path::PathBuf;

use paddock_proc::Namespaces;
use paddock_proc::jail::{CapSet, CgroupFs, IdMap, LandlockMode, Mount, User};
use serde_json::json;

use super::*;
use crate::uids::UidRange;

fn jail(v: serde_json::Value) -> JailSpec {
    serde_json::from_value(v).unwrap()
}

fn resolved(uid: u32, gid: u32) -> Resolved {
    Resolved {
        uid,
        gid,
        ..Default::default()
    }
}

/// Every field, in every form the API takes, decodes and validates.
#[test]
fn a_full_spec_decodes_and_validates() {
    let j = jail(json!({
        "user": {"uid": 1000, "gid": "1000", "groups": [10, "kvm"]},
        "privileges": {"no_new_privs": true, "cap_drop": ["ALL"]},
        "rlimits": {"nofile": {"soft": 1024, "hard": 4096}, "core": {"soft": 0}, "stack": {"soft": "unlimited"}},
        "namespaces": ["pid", "mount", "ipc", "uts", "cgroup"],
        "hostname": "box-1.example",
        "filesystem": {
            "rootfs": "/srv/jail/x",
            "readonly": true,
            "mounts": [
                {"type": "bind", "source": "/data", "target": "/data", "readonly": true},
                {"type": "tmpfs", "target": "/tmp", "size": 67108864, "mode": 1023},
                {"type": "proc", "target": "/proc"},
                {"type": "sysfs", "target": "/sys"},
                {"type": "mqueue", "target": "/dev/mqueue"}
            ],
            "minimal_dev": true,
            "devices": ["/dev/kvm"],
            "masked_paths": ["/proc/kcore"],
            "cgroupfs": "readonly"
        },
        "seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO"}]},
        "landlock": {"mode": "required", "tcp_bind": [8080], "tcp_connect": [443]},
        "init": true
    }));
    j.validate().unwrap();
    assert_eq!(j.rlimits.entries().len(), 3);
    let list = jail(json!({"rlimits": [{"name": "RLIMIT_NOFILE", "soft": 10}]}));
    list.validate().unwrap();
    assert_eq!(list.rlimits.entries()[0].1.raw(), (10, 10));
    // Round trip: what the API sends back is what it takes.
    let back: JailSpec = serde_json::from_str(&serde_json::to_string(&j).unwrap()).unwrap();
    assert_eq!(back, j);
    assert_eq!(jail(json!({})), JailSpec::default());
    assert_eq!(
        jail(json!({"seccomp": "unconfined"})).seccomp,
        SeccompSpec::Builtin(SeccompBuiltin::Unconfined)
    );
}

/// Unknown fields are refused at every level, and a malformed value says what was
/// expected.
#[test]
fn unknown_fields_and_bad_shapes_are_refused() {
    for bad in [
        json!({"usr": {}}),
        json!({"user": {"uid": 1, "home": "/"}}),
        json!({"filesystem": {"mounts": [{"type": "bind", "source": "/a", "target": "/b", "rw": true}]}}),
        json!({"filesystem": {"mounts": [{"type": "overlay", "target": "/b"}]}}),
        json!({"privileges": {"caps": []}}),
        json!({"landlock": {"mode": "sometimes"}}),
        json!({"namespaces": ["net"]}),
        json!({"rlimits": {"nofile": {"soft": 1, "max": 2}}}),
    ] {
        assert!(
            serde_json::from_value::<JailSpec>(bad.clone()).is_err(),
            "{bad}"
        );
    }
    let e = serde_json::from_value::<JailSpec>(json!({"seccomp": "strict"}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"default\", \"unconfined\" or an OCI"), "{e}");
    let e = serde_json::from_value::<JailSpec>(json!({"rlimits": 5}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("rlimits"), "{e}");
}

/// Which step refuses a bad jail: `F`, a field on its own (`validate_fields`, the
/// schema's rules: the API's 400); `C`, fields that do not fit together
/// (`check_consistency`: the API's 422).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    F,
    C,
}
use Kind::{C, F};

/// Each bad value is refused with a message naming its field, by the step of its kind: a
/// field's own value by `validate_fields` (and `check_consistency` is never reached), fields
/// that do not fit together by `check_consistency` only (each field passes on its own).
/// Through the whole spec the first is `Error::InvalidSpec` and the second
/// `Error::Inconsistent`.
#[test]
fn validation_names_the_field_and_its_kind() {
    let many = |n: usize, v: serde_json::Value| vec![v; n];
    let map = |inside: u32, outside: u32, count: u32| json!({"inside": inside, "outside": outside, "count": count});
    let cases: Vec<(serde_json::Value, &str, Kind)> = vec![
        (
            json!({"filesystem": {"mounts": [{"type": "proc", "target": "/proc"}, {"type": "proc", "target": "/p"}, {"type": "tmpfs", "target": "tmp"}]}}),
            "jail.filesystem.mounts[2].target: tmp must be an absolute path",
            F,
        ),
        (
            json!({"filesystem": {"mounts": [{"type": "tmpfs", "target": "/"}]}}),
            "jail.filesystem.mounts[0].target: / must not be `/`",
            F,
        ),
        (
            json!({"filesystem": {"mounts": [{"type": "bind", "source": "/a/../etc", "target": "/x"}]}}),
            "jail.filesystem.mounts[0].source: /a/../etc must not contain `..`",
            F,
        ),
        (
            json!({"filesystem": {"mounts": [{"type": "tmpfs", "target": "/t", "size": 0}]}}),
            "jail.filesystem.mounts[0].size",
            F,
        ),
        (
            json!({"filesystem": {"mounts": [{"type": "tmpfs", "target": "/t", "size": (1u64 << 40) + 1}]}}),
            "jail.filesystem.mounts[0].size",
            F,
        ),
        (
            json!({"filesystem": {"mounts": [{"type": "tmpfs", "target": "/t", "mode": 0o10000}]}}),
            "jail.filesystem.mounts[0].mode",
            F,
        ),
        (
            json!({"filesystem": {"mounts": [{"type": "mqueue", "target": "/dev/mqueue"}]}}),
            "jail.filesystem.mounts[0]: an mqueue mount needs an ipc namespace",
            C,
        ),
        (
            json!({"filesystem": {"mounts": many(65, json!({"type": "proc", "target": "/proc"}))}}),
            "jail.filesystem.mounts: 65 mounts; at most 64",
            F,
        ),
        (
            json!({"filesystem": {"rootfs": "relative"}}),
            "jail.filesystem.rootfs",
            F,
        ),
        (
            json!({"filesystem": {"rootfs": "/"}}),
            "jail.filesystem.rootfs: / must not be `/`",
            F,
        ),
        (
            json!({"filesystem": {"devices": ["/etc/passwd"]}}),
            "jail.filesystem.devices[0]: /etc/passwd is not under /dev",
            F,
        ),
        (
            json!({"filesystem": {"devices": many(33, json!("/dev/null"))}}),
            "jail.filesystem.devices: 33 devices",
            F,
        ),
        (
            json!({"filesystem": {"masked_paths": ["proc/kcore"]}}),
            "jail.filesystem.masked_paths[0]",
            F,
        ),
        (
            json!({"user": {"groups": many(65, json!(1))}}),
            "jail.user.groups: 65 groups; at most 64",
            F,
        ),
        (
            json!({"user": {"groups": ["a:b"]}}),
            "jail.user.groups[0]",
            F,
        ),
        (json!({"user": {"uid": ""}}), "jail.user.uid", F),
        (
            json!({"user": {"uid": 4294967295u32}}),
            "jail.user.uid: 4294967295",
            F,
        ),
        (
            json!({"user": {"dynamic": true, "uid": 5}}),
            "jail.user.uid: not with dynamic",
            C,
        ),
        (
            json!({"privileges": {"cap_add": ["CAP_FLY"]}}),
            "jail.privileges.cap_add[0]: unknown capability",
            F,
        ),
        (
            json!({"privileges": {"cap_drop": ["NET_ADMIN", "sys_nothing"]}}),
            "jail.privileges.cap_drop[1]",
            F,
        ),
        (
            json!({"privileges": {"cap_add": ["NET_ADMIN"], "cap_drop": ["net_admin"]}}),
            "jail.privileges.cap_drop[0]: net_admin is also in cap_add",
            C,
        ),
        (
            json!({"user": {"uid": 1000}, "privileges": {"cap_add": ["NET_ADMIN"]}}),
            "jail.privileges.cap_add: the program runs as uid 1000",
            C,
        ),
        (
            json!({"user": {"dynamic": true}, "privileges": {"cap_add": ["NET_ADMIN"]}}),
            "jail.privileges.cap_add: a dynamic user",
            C,
        ),
        (
            json!({"rlimits": {"nofiles": {"soft": 1}}}),
            "jail.rlimits.nofiles: unknown rlimit",
            F,
        ),
        (
            json!({"rlimits": {"nofile": {"soft": 10, "hard": 5}}}),
            "jail.rlimits.nofile: rlimit nofile: soft limit 10 above hard limit 5",
            C,
        ),
        (
            json!({"rlimits": [{"name": "nofile", "soft": 1}, {"name": "NOFILE", "soft": 2}]}),
            "jail.rlimits[1]: nofile is given twice",
            C,
        ),
        (
            json!({"namespaces": ["pid", "pid"]}),
            "jail.namespaces: a namespace is listed twice",
            F,
        ),
        (
            json!({"namespaces": ["user"]}),
            "jail.namespaces: user needs jail.user_ns",
            C,
        ),
        (json!({"hostname": "-bad"}), "jail.hostname", F),
        (json!({"hostname": "a".repeat(65)}), "jail.hostname", F),
        (json!({"hostname": "a b"}), "jail.hostname", F),
        (json!({"init": true}), "jail.init: needs a pid namespace", C),
        (
            json!({"landlock": {"tcp_bind": (0..65).collect::<Vec<u16>>()}}),
            "jail.landlock.tcp_bind: 65 ports",
            F,
        ),
        (
            json!({"seccomp": {"syscalls": []}}),
            "jail.seccomp.defaultAction",
            F,
        ),
        (
            json!({"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ERRNO"}]}}),
            "jail.seccomp.syscalls[0].names",
            F,
        ),
        (
            json!({"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": many(513, json!({"names": ["x"], "action": "SCMP_ACT_ERRNO"}))}}),
            "jail.seccomp.syscalls: 513 rules",
            F,
        ),
        (
            json!({"user_ns": {"uid_map": [], "gid_map": [{"inside": 0, "outside": 1000, "count": 1}]}}),
            "jail.user_ns.uid_map: at least one line",
            F,
        ),
        (
            json!({"user_ns": {"uid_map": [{"inside": 0, "outside": 0, "count": 1}], "gid_map": [{"inside": 0, "outside": 1000, "count": 1}]}}),
            "jail.user_ns.uid_map[0].outside: maps onto host id 0",
            F,
        ),
        (
            json!({"user_ns": {"uid_map": [{"inside": 0, "outside": 1000, "count": 10}, {"inside": 5, "outside": 5000, "count": 1}], "gid_map": [{"inside": 0, "outside": 1000, "count": 1}]}}),
            "jail.user_ns.uid_map[1]: inside ids overlap jail.user_ns.uid_map[0]",
            C,
        ),
        (
            json!({"user_ns": {"uid_map": [{"inside": 0, "outside": 1000, "count": 10}, {"inside": 50, "outside": 1009, "count": 1}], "gid_map": [{"inside": 0, "outside": 1000, "count": 1}]}}),
            "jail.user_ns.uid_map[1]: outside ids overlap",
            C,
        ),
        (
            json!({"user_ns": {"uid_map": [{"inside": 0, "outside": 1000, "count": 0}], "gid_map": [{"inside": 0, "outside": 1000, "count": 1}]}}),
            "jail.user_ns.uid_map[0].count",
            F,
        ),
        (
            json!({"user_ns": {"uid_map": [{"inside": 0, "outside": 4294967295u32, "count": 2}], "gid_map": [{"inside": 0, "outside": 1000, "count": 1}]}}),
            "jail.user_ns.uid_map[0].outside: 4294967295 is not a valid id",
            F,
        ),
        (
            json!({"user_ns": {"uid_map": [map(0, 1, 1)], "gid_map": [map(4294967295, 1000, 1)]}}),
            "jail.user_ns.gid_map[0].inside: 4294967295 is not a valid id",
            F,
        ),
        (
            json!({"user_ns": {"uid_map": [map(0, 4294967290, 10)], "gid_map": [map(0, 1000, 1)]}}),
            "jail.user_ns.uid_map[0]: the range passes",
            C,
        ),
        (
            json!({"user_ns": {"uid_map": [map(0, 1000, 1)], "gid_map": [map(0, 1000, 1), map(4294967290, 2000, 6)]}}),
            "jail.user_ns.gid_map[1]: the range passes",
            C,
        ),
        (
            json!({"user_ns": {"uid_map": many(65, map(0, 1000, 1)), "gid_map": [map(0, 1000, 1)]}}),
            "jail.user_ns.uid_map: 65 lines",
            F,
        ),
        (
            json!({"user_ns": {"uid_map": [map(0, 1000, 1)], "gid_map": [map(0, 1000, 1)]}, "user": {"groups": [5]}}),
            "jail.user.groups[0]: 5 is not mapped",
            C,
        ),
        (
            json!({"user": {"groups": [4294967295u32]}}),
            "jail.user.groups[0]: 4294967295 is not a valid id",
            F,
        ),
        (
            json!({"user": {"gid": "004294967295"}}),
            "jail.user.gid: 4294967295 is not a valid id",
            F,
        ),
        (
            json!({"user": {"uid": "a".repeat(257)}}),
            "jail.user.uid",
            F,
        ),
        (json!({"user": {"uid": "é".repeat(65)}}), "jail.user.uid", F),
        (
            json!({"user": {"uid": "0".repeat(257)}}),
            "jail.user.uid",
            F,
        ),
        (
            json!({"user": {"dynamic": true, "gid": "kvm"}}),
            "jail.user.gid: not with dynamic",
            C,
        ),
        (
            json!({"privileges": {"cap_add": many(43, json!("ALL"))}}),
            "jail.privileges.cap_add: 43 entries",
            F,
        ),
        (
            json!({"rlimits": many(17, json!({"name": "nofile", "soft": 1}))}),
            "jail.rlimits: 17 entries",
            F,
        ),
        (
            json!({"rlimits": [{"name": "nofile", "soft": 10, "hard": 5}]}),
            "jail.rlimits[0]: rlimit nofile: soft limit 10 above hard limit 5",
            C,
        ),
        (
            json!({"rlimits": [{"name": "NOFILES", "soft": 10, "hard": 5}]}),
            "jail.rlimits[0]: unknown rlimit",
            F,
        ),
        (
            json!({"filesystem": {"devices": ["/dev"]}}),
            "jail.filesystem.devices[0]: /dev is not under /dev",
            F,
        ),
        (
            json!({"filesystem": {"devices": ["//dev/kvm"]}}),
            "jail.filesystem.devices[0]: //dev/kvm is not under /dev",
            F,
        ),
        (
            json!({"filesystem": {"devices": ["/dev/./"]}}),
            "jail.filesystem.devices[0]",
            F,
        ),
        (
            json!({"filesystem": {"masked_paths": ["/a\u{0}b"]}}),
            "jail.filesystem.masked_paths[0]",
            F,
        ),
        (
            json!({"filesystem": {"rootfs": format!("/{}", "a".repeat(4096))}}),
            "jail.filesystem.rootfs",
            F,
        ),
        (
            json!({"filesystem": {"rootfs": format!("/{}", "é".repeat(1024))}}),
            "jail.filesystem.rootfs",
            F,
        ),
        (
            json!({"filesystem": {"rootfs": "/./."}}),
            "jail.filesystem.rootfs: /./. must not be `/`",
            F,
        ),
        (
            json!({"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [1], "action": "SCMP_ACT_ERRNO"}]}}),
            "jail.seccomp.syscalls[0].names",
            F,
        ),
        (
            json!({"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": []}]}}),
            "jail.seccomp.syscalls[0].action",
            F,
        ),
        (
            json!({"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": "none"}}),
            "jail.seccomp.syscalls: must be a list",
            F,
        ),
        (
            json!({"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": many(5, json!({"names": many(820, json!("x")), "action": "SCMP_ACT_ERRNO"}))}}),
            "jail.seccomp.syscalls: 4100 system call names in all",
            C,
        ),
        (
            json!({"user": {"uid": 7}, "user_ns": {"uid_map": [{"inside": 0, "outside": 1000, "count": 1}], "gid_map": [{"inside": 0, "outside": 1000, "count": 8}]}}),
            "jail.user.uid: 7 is not mapped",
            C,
        ),
        (
            json!({"user_ns": {"uid_map": [{"inside": 1, "outside": 1000, "count": 1}], "gid_map": [{"inside": 1, "outside": 1000, "count": 1}]}}),
            "jail.user_ns: the program runs as uid and gid 0",
            C,
        ),
        (
            json!({"user": {"dynamic": true}, "user_ns": {"uid_map": [{"inside": 0, "outside": 1000, "count": 1}], "gid_map": [{"inside": 0, "outside": 1000, "count": 1}]}}),
            "jail.user_ns: not with user.dynamic",
            C,
        ),
    ];
    let mut kinds = std::collections::BTreeSet::new();
    for (v, want, kind) in cases {
        let j: JailSpec = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"));
        let e = j.validate().expect_err(&v.to_string());
        assert!(e.starts_with(want), "{v}:\n  got  {e}\n  want {want}…");
        let fields = j.validate_fields();
        match kind {
            F => assert_eq!(fields, Err(e.clone()), "{v}: a field's own value"),
            C => {
                assert_eq!(fields, Ok(()), "{v}: every field is valid on its own");
                assert_eq!(j.check_consistency(), Err(e.clone()), "{v}");
            }
        }
        let mut s =
            crate::SandboxSpec::new(crate::SandboxId::new("j").unwrap(), "/bin/true", [""; 0]);
        s.jail = Some(j);
        match (kind, s.validate()) {
            (F, Err(crate::Error::InvalidSpec(m))) | (C, Err(crate::Error::Inconsistent(m))) => {
                assert_eq!(m, e, "{v}")
            }
            (_, other) => panic!("{v}: {kind:?} gave {other:?}"),
        }
        kinds.insert(format!("{kind:?}"));
    }
    assert_eq!(kinds.len(), 2, "both kinds are tried");
    // A spec with a fault of each kind is refused for its field first.
    let j = jail(json!({"hostname": "-x", "init": true}));
    assert!(j.validate().unwrap_err().starts_with("jail.hostname"));
    // Id maps are required whole: both maps, each with a line.
    for bad in [
        json!({"user_ns": {}}),
        json!({"user_ns": {"uid_map": [{"inside": 0, "outside": 1, "count": 1}]}}),
    ] {
        let e = serde_json::from_value::<JailSpec>(bad.clone()).unwrap_err();
        assert!(e.to_string().contains("missing field"), "{bad}: {e}");
    }
}

/// The largest values each field's schema allows pass `validate_fields`.
#[test]
fn the_bounds_of_the_schema_pass() {
    let j = jail(json!({
        "user": {"uid": 4294967294u32, "gid": "4294967294", "groups": ["é".repeat(64), "a".repeat(256), "0".repeat(256)]},
        "privileges": {"cap_add": ["all", "cap_chown", "Net_Admin"], "cap_drop": ["CAP_SYS_ADMIN"]},
        "rlimits": {"RLIMIT_NOFILE": {"soft": 18446744073709551615u64}, "Core": {"soft": "infinity"}},
        "user_ns": {"uid_map": [{"inside": 4294967294u32, "outside": 4294967294u32, "count": 1}], "gid_map": [{"inside": 0, "outside": 1, "count": 4294967295u32}]},
        "filesystem": {
            "rootfs": format!("/{}", "a".repeat(4095)),
            "mounts": [
                {"type": "tmpfs", "target": "/.a", "size": 1u64 << 40, "mode": 0o7777},
                {"type": "bind", "source": "/", "target": format!("/{}", "é".repeat(1023))},
            ],
            "devices": ["/dev/./kvm", "/dev//net/tun"],
            "masked_paths": ["/...", "//x/."]
        },
        "seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": many_names(), "action": "SCMP_ACT_ERRNO"}]},
        "landlock": {"tcp_bind": [0, 65535]}
    }));
    j.validate_fields().unwrap();
}

fn many_names() -> Vec<String> {
    vec!["x".into(); 4096]
}

/// The conversion with nothing asked: root with the minimal set, no new namespace.
#[test]
fn an_empty_jail_is_root_with_the_minimal_set() {
    let (j, ns) = proc_jail(&JailSpec::default(), &resolved(0, 0));
    assert_eq!(ns, Namespaces::NONE);
    assert_eq!(
        j.user,
        Some(User {
            uid: 0,
            gid: 0,
            groups: vec![]
        }),
        "supplementary groups are cleared"
    );
    assert!(j.no_new_privs);
    let caps = j.capabilities.unwrap();
    assert_eq!(caps, CapSet::from_names(&DEFAULT_ROOT_CAPS).unwrap());
    for dangerous in [
        "SYS_ADMIN",
        "NET_ADMIN",
        "NET_RAW",
        "MKNOD",
        "SETFCAP",
        "SYS_PTRACE",
        "SYS_MODULE",
        "BPF",
        "DAC_READ_SEARCH",
    ] {
        assert_eq!(
            caps.0 & CapSet::from_names(&[dangerous]).unwrap().0,
            0,
            "{dangerous} is not in the default set"
        );
    }
    assert!(j.filesystem.is_none() && j.id_maps.is_none() && j.hostname.is_none());
    assert_eq!(j.landlock.mode, LandlockMode::Off, "auto without a rootfs");
    assert!(!j.init);
    assert!(j.seccomp.is_none(), "the filter comes from `resolve`");
}

#[test]
fn capabilities_follow_the_uid_and_the_lists() {
    let p = |add: &[&str], drop: &[&str]| PrivilegesSpec {
        no_new_privs: None,
        cap_add: add.iter().map(|s| s.to_string()).collect(),
        cap_drop: drop.iter().map(|s| s.to_string()).collect(),
    };
    assert_eq!(capabilities(1000, &p(&[], &[])), CapSet::EMPTY);
    assert_eq!(capabilities(0, &p(&[], &["ALL"])), CapSet::EMPTY);
    assert_eq!(
        capabilities(0, &p(&["NET_ADMIN"], &["all"])),
        CapSet::from_names(&["NET_ADMIN"]).unwrap()
    );
    let c = capabilities(0, &p(&["sys_ptrace"], &["KILL", "CAP_CHOWN"]));
    assert!(c.names().contains(&"CAP_SYS_PTRACE".to_owned()));
    assert!(!c.names().contains(&"CAP_KILL".to_owned()));
    assert!(!c.names().contains(&"CAP_CHOWN".to_owned()));
    assert!(c.names().contains(&"CAP_SETUID".to_owned()));
    let (j, _) = proc_jail(
        &jail(json!({"user": {"uid": 1000}, "privileges": {"no_new_privs": false}})),
        &resolved(1000, 1000),
    );
    assert_eq!(j.capabilities, Some(CapSet::EMPTY));
    assert!(!j.no_new_privs);
}

/// A rootfs with a pid namespace: its defaults, and the namespaces they imply.
#[test]
fn a_rootfs_with_pid_namespace_gets_its_defaults() {
    let spec = jail(json!({
        "namespaces": ["pid", "ipc"],
        "hostname": "box",
        "filesystem": {"rootfs": "/srv/r", "mounts": [{"type": "bind", "source": "/a", "target": "/b", "readonly": true}]},
        "rlimits": {"nofile": {"soft": 64}},
    }));
    spec.validate().unwrap();
    let (j, ns) = proc_jail(&spec, &resolved(65534, 65534));
    assert_eq!(
        ns,
        Namespaces::PID | Namespaces::MOUNT | Namespaces::IPC | Namespaces::UTS
    );
    assert!(j.init, "init is on with a pid namespace");
    assert_eq!(j.hostname.as_deref(), Some(std::ffi::OsStr::new("box")));
    assert_eq!(j.rlimits.len(), 1);
    assert_eq!(
        (j.rlimits[0].name(), j.rlimits[0].soft, j.rlimits[0].hard),
        ("nofile", 64, 64)
    );
    assert_eq!(
        j.landlock.mode,
        LandlockMode::BestEffort,
        "auto with a rootfs"
    );
    let fs = j.filesystem.unwrap();
    assert_eq!(fs.rootfs, Some(PathBuf::from("/srv/r")));
    assert!(fs.minimal_dev);
    assert_eq!(fs.cgroupfs, CgroupFs::Hidden);
    assert_eq!(
        fs.masked_paths,
        paddock_proc::jail::DEFAULT_MASKED_PATHS
            .iter()
            .map(PathBuf::from)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        fs.mounts,
        vec![
            Mount::Bind {
                source: "/a".into(),
                target: "/b".into(),
                readonly: true,
                nosuid: true,
                nodev: true,
                noexec: false
            },
            Mount::Proc {
                target: "/proc".into()
            },
        ],
        "a fresh /proc is added for the pid namespace; binds are nosuid and nodev by default"
    );
    // Asked otherwise, it is otherwise.
    let spec = jail(json!({
        "namespaces": ["pid"], "init": false, "landlock": {"mode": "off"},
        "filesystem": {"rootfs": "/srv/r", "minimal_dev": false, "masked_paths": [], "cgroupfs": "unchanged",
                       "mounts": [{"type": "proc", "target": "/p"}]},
    }));
    let (j, _) = proc_jail(&spec, &resolved(0, 0));
    assert!(!j.init);
    assert_eq!(j.landlock.mode, LandlockMode::Off);
    let fs = j.filesystem.unwrap();
    assert!(!fs.minimal_dev && fs.masked_paths.is_empty());
    assert_eq!(fs.cgroupfs, CgroupFs::Unchanged);
    assert_eq!(
        fs.mounts,
        vec![Mount::Proc {
            target: "/p".into()
        }]
    );
}

#[test]
fn user_namespaces_map_what_was_asked() {
    let spec = jail(json!({
        "user_ns": {"uid_map": [{"inside": 0, "outside": 100000, "count": 65536}],
                    "gid_map": [{"inside": 0, "outside": 100000, "count": 65536}]},
    }));
    spec.validate().unwrap();
    let (j, ns) = proc_jail(&spec, &resolved(0, 0));
    assert_eq!(ns, Namespaces::USER);
    let maps = j.id_maps.unwrap();
    assert_eq!(
        maps.uid,
        vec![IdMap {
            inside: 0,
            outside: 100000,
            count: 65536
        }]
    );
    // A dynamic user in a user namespace is mapped onto itself.
    let spec = jail(json!({"user": {"dynamic": true}, "namespaces": ["user"]}));
    spec.validate().unwrap();
    let mut r = resolved(0, 0);
    r.set_dynamic(200_007);
    let (j, ns) = proc_jail(&spec, &r);
    assert_eq!(ns, Namespaces::USER);
    let line = IdMap {
        inside: 200_007,
        outside: 200_007,
        count: 1,
    };
    assert_eq!(j.id_maps.unwrap().uid, vec![line]);
    assert_eq!(j.user.unwrap().uid, 200_007);
    let st = status(&spec, &r);
    assert_eq!(
        (st.uid, st.gid, st.dynamic_uid),
        (200_007, 200_007, Some(200_007))
    );
    assert!(st.capabilities.is_empty());
    assert_eq!(st.landlock_abi, None);
}

#[test]
fn passwd_and_group_files_parse() {
    let p = parse_passwd(
        "# c\nroot:x:0:0:root:/root:/bin/sh\n+nis\nbad line\nnobody:x:65534:65533::/:/x\nnum:x:zz:1::/:\n",
    );
    assert_eq!(
        p,
        vec![("root".into(), 0, 0), ("nobody".into(), 65534, 65533)]
    );
    let g = parse_group("kvm:x:108:alice\n-x\nempty::9:\n");
    assert_eq!(g, vec![("kvm".into(), 108), ("empty".into(), 9)]);
}

/// Names are resolved inside the rootfs (a symbolic link there resolves inside it too);
/// what the node lacks is refused naming the field.
#[test]
fn resolution_reads_the_rootfs_and_names_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("real")).unwrap();
    std::fs::write(root.join("real/passwd"), "app:x:1234:4321::/:/bin/sh\n").unwrap();
    // An absolute link: followed inside the rootfs, never to the host's /real/passwd.
    std::os::unix::fs::symlink("/real/passwd", root.join("etc/passwd")).unwrap();
    std::fs::write(root.join("etc/group"), "kvm:x:77:\nvideo:x:44:\n").unwrap();
    let spec = |user: serde_json::Value| {
        jail(json!({"user": user, "filesystem": {"rootfs": root}, "seccomp": "unconfined"}))
    };
    let r = resolve(&spec(json!({"uid": "app", "groups": ["kvm", 44, "kvm"]}))).unwrap();
    assert_eq!((r.uid, r.gid, r.groups.clone()), (1234, 4321, vec![77, 44]));
    assert!(r.seccomp.is_none());
    let r = resolve(&spec(json!({"uid": "app", "gid": "video"}))).unwrap();
    assert_eq!((r.uid, r.gid), (1234, 44));
    let r = resolve(&spec(json!({"uid": 99}))).unwrap();
    assert_eq!(
        (r.uid, r.gid),
        (99, 99),
        "a number's gid is the same number"
    );
    let r = resolve(&spec(json!({"dynamic": true, "groups": ["kvm"]}))).unwrap();
    assert_eq!(r.groups, vec![77]);

    let e = resolve(&spec(json!({"uid": "nobody-here"}))).unwrap_err();
    assert!(
        e.starts_with("jail.user.uid: no user \"nobody-here\" in"),
        "{e}"
    );
    let e = resolve(&spec(json!({"groups": [1, "audio"]}))).unwrap_err();
    assert!(
        e.starts_with("jail.user.groups[1]: no group \"audio\""),
        "{e}"
    );
    let e = resolve(&jail(json!({"user": {"uid": "app"}, "filesystem": {"rootfs": root.join("nope")}, "seccomp": "unconfined"}))).unwrap_err();
    assert!(e.starts_with("jail.filesystem.rootfs: "), "{e}");
    let e = resolve(&jail(
        json!({"filesystem": {"rootfs": root.join("etc/group")}, "seccomp": "unconfined"}),
    ))
    .unwrap_err();
    assert!(e.contains("is not a directory"), "{e}");
    let e = resolve(&jail(json!({"filesystem": {"mounts": [{"type": "proc", "target": "/proc"}, {"type": "bind", "source": root.join("missing"), "target": "/m"}]}, "seccomp": "unconfined"}))).unwrap_err();
    assert!(e.starts_with("jail.filesystem.mounts[1].source: "), "{e}");
    let e = resolve(&jail(
        json!({"filesystem": {"devices": ["/dev/null", "/dev/shm"]}, "seccomp": "unconfined"}),
    ))
    .unwrap_err();
    assert!(
        e.starts_with("jail.filesystem.devices[1]: /dev/shm is not a character device"),
        "{e}"
    );
    let e = resolve(&jail(json!({"user": {"uid": "app"}, "privileges": {"cap_add": ["NET_ADMIN"]}, "filesystem": {"rootfs": root}, "seccomp": "unconfined"}))).unwrap_err();
    assert!(
        e.starts_with("jail.privileges.cap_add: the program runs as uid 1234"),
        "{e}"
    );
    // The default profile compiles; a bad OCI profile is refused naming the field.
    let r = resolve(&JailSpec::default()).unwrap();
    assert!(r.seccomp.is_some());
    let e = resolve(&jail(json!({"seccomp": {"defaultAction": "SCMP_ACT_FOO"}}))).unwrap_err();
    assert!(e.starts_with("jail.seccomp: "), "{e}");
}

#[test]
fn the_dynamic_range_is_kept_for_dynamic_users() {
    let range = Some(UidRange {
        first: 300_000,
        last: 300_099,
    });
    let dynamic = jail(json!({"user": {"dynamic": true}}));
    let e = check_dynamic_range(&dynamic, &resolved(0, 0), None).unwrap_err();
    assert!(
        e.starts_with("jail.user.dynamic: dynamic users are off here"),
        "{e}"
    );
    check_dynamic_range(&dynamic, &resolved(0, 0), range).unwrap();
    let plain = jail(json!({"user": {"uid": 300_005}}));
    let e = check_dynamic_range(&plain, &resolved(300_005, 1), range).unwrap_err();
    assert!(
        e.starts_with("jail.user: uid 300005 is in the dynamic uid range 300000-300099"),
        "{e}"
    );
    let mut r = resolved(1000, 1000);
    r.groups = vec![300_099];
    let e = check_dynamic_range(&plain, &r, range).unwrap_err();
    assert!(e.starts_with("jail.user: group 300099"), "{e}");
    check_dynamic_range(&plain, &resolved(1000, 1000), range).unwrap();
    check_dynamic_range(&plain, &resolved(300_005, 1), None).unwrap();
    let mapped = jail(json!({"user_ns": {
        "uid_map": [{"inside": 0, "outside": 299_990, "count": 11}],
        "gid_map": [{"inside": 0, "outside": 100_000, "count": 1}]}}));
    let e = check_dynamic_range(&mapped, &resolved(0, 0), range).unwrap_err();
    assert!(
        e.starts_with("jail.user_ns.uid_map[0]: maps onto the dynamic uid range"),
        "{e}"
    );
}
