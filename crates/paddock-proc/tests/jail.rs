//! Jails against the real kernel: credentials, capabilities, rlimits, no_new_privs, the
//! hostname, seccomp, Landlock, user namespace maps, the failure reports, and cgroup
//! placement of a jailed child. Needs root (skipped with a reason otherwise).

mod common;

use std::collections::HashMap;
use std::fs;
use std::os::fd::AsFd;
use std::time::Duration;

use common::leaf;
use paddock_proc::jail::{CapSet, IdMap, IdMaps, Jail, Landlock, LandlockMode, Rlimit, User};
use paddock_proc::jail::{SeccompFilter, landlock};
use paddock_proc::{Command, ExitStatus, Namespaces, SpawnError, Stage, Stdio};

const UID: u32 = 300_100;
const GID: u32 = 300_101;

fn root(test: &str) -> bool {
    match paddock_testutil::root_tests_unavailable() {
        Some(reason) => {
            paddock_testutil::skip(test, &reason);
            false
        }
        None => true,
    }
}

fn user(uid: u32, gid: u32, groups: &[u32]) -> Option<User> {
    Some(User {
        uid,
        gid,
        groups: groups.to_vec(),
    })
}

/// Run `script` with `sh -c` in `jail` (and `ns`), returning (status, stdout, stderr).
fn run(jail: Jail, ns: Namespaces, script: &str) -> (ExitStatus, String, String) {
    let out = Command::new("/bin/sh")
        .args(["-c", script])
        .unshare(ns)
        .jail(jail)
        .output()
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `Key:\tvalue` lines of a `/proc/PID/status` text.
fn status_map(s: &str) -> HashMap<String, String> {
    s.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn caps_hex(c: u64) -> String {
    format!("{c:016x}")
}

#[test]
fn runs_with_the_given_uid_gid_groups_and_no_new_privs() {
    if !root("runs_with_the_given_uid_gid_groups_and_no_new_privs") {
        return;
    }
    let jail = Jail {
        user: user(UID, GID, &[300_102, 300_103]),
        no_new_privs: true,
        capabilities: Some(CapSet::EMPTY),
        ..Jail::default()
    };
    let (st, out, err) = run(jail, Namespaces::NONE, "cat /proc/self/status");
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    let m = status_map(&out);
    assert_eq!(m["Uid"], format!("{UID}\t{UID}\t{UID}\t{UID}"));
    assert_eq!(m["Gid"], format!("{GID}\t{GID}\t{GID}\t{GID}"));
    assert_eq!(m["Groups"], "300102 300103");
    assert_eq!(m["NoNewPrivs"], "1");
    for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(m[k], caps_hex(0), "{k}");
    }

    // Empty groups clear the daemon's supplementary groups.
    let jail = Jail {
        user: user(UID, GID, &[]),
        ..Jail::default()
    };
    let (_, out, _) = run(jail, Namespaces::NONE, "cat /proc/self/status");
    let m = status_map(&out);
    assert_eq!(m["Groups"], "");
    assert_eq!(m["NoNewPrivs"], "0");
}

#[test]
fn exclusive_ids_change_credentials_and_leave_the_spawner_dumpable() {
    if !root("exclusive_ids_change_credentials_and_leave_the_spawner_dumpable") {
        return;
    }
    use rustix::process::{DumpableBehavior, dumpable_behavior};
    // The kernel clears the dumpable flag of the memory a child that changes its uid still
    // shares (the spawner's, on the vfork-like clone exclusive ids keep): restored after.
    assert_eq!(dumpable_behavior().unwrap(), DumpableBehavior::Dumpable);
    let threads: Vec<_> = (0..8u32)
        .map(|i| {
            std::thread::spawn(move || {
                let uid = 300_910 + i;
                let jail = Jail {
                    user: user(uid, uid, &[]),
                    no_new_privs: true,
                    capabilities: Some(CapSet::EMPTY),
                    exclusive_ids: true,
                    ..Jail::default()
                };
                let (st, out, err) = run(jail, Namespaces::NONE, "cat /proc/self/status");
                assert_eq!(st, ExitStatus::Exited(0), "{err}");
                let m = status_map(&out);
                assert_eq!(m["Uid"], format!("{uid}\t{uid}\t{uid}\t{uid}"));
                assert_eq!(m["Gid"], format!("{uid}\t{uid}\t{uid}\t{uid}"));
                assert_eq!(m["CapEff"], caps_hex(0));
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a spawning thread panicked");
    }
    assert_eq!(
        dumpable_behavior().unwrap(),
        DumpableBehavior::Dumpable,
        "the spawner was left non-dumpable"
    );
}

#[test]
fn kept_capabilities_survive_the_uid_change_and_exec() {
    if !root("kept_capabilities_survive_the_uid_change_and_exec") {
        return;
    }
    let set = CapSet::from_names(&["CAP_NET_BIND_SERVICE", "kill"]).unwrap();
    for (uid, what) in [(UID, "non-root"), (0, "root")] {
        let jail = Jail {
            user: user(uid, GID, &[]),
            capabilities: Some(set),
            ..Jail::default()
        };
        let (st, out, err) = run(jail, Namespaces::NONE, "cat /proc/self/status");
        assert_eq!(st, ExitStatus::Exited(0), "{what}: {err}");
        let m = status_map(&out);
        for k in ["CapInh", "CapPrm", "CapEff", "CapBnd"] {
            assert_eq!(m[k], caps_hex(set.0), "{what}: {k}");
        }
        // Only a non-root uid needs them in the ambient set to keep them across execve.
        let amb = if uid == 0 { 0 } else { set.0 };
        assert_eq!(m["CapAmb"], caps_hex(amb), "{what}: CapAmb");
        assert_eq!(m["Uid"], format!("{uid}\t{uid}\t{uid}\t{uid}"), "{what}");
    }
}

#[test]
fn rlimits_and_the_hostname_are_applied() {
    if !root("rlimits_and_the_hostname_are_applied") {
        return;
    }
    let jail = Jail {
        rlimits: vec![
            Rlimit::from_name("nofile", 100, 200).unwrap(),
            Rlimit::from_name("core", 0, u64::MAX).unwrap(),
        ],
        hostname: Some("jailed-host".into()),
        ..Jail::default()
    };
    let (st, out, err) = run(
        jail,
        Namespaces::UTS,
        "ulimit -Sn; ulimit -Hn; ulimit -Hc; cat /proc/sys/kernel/hostname",
    );
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    assert_eq!(out, "100\n200\nunlimited\njailed-host\n");
    // The test's own hostname is untouched.
    assert_ne!(
        fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        "jailed-host\n"
    );
}

#[test]
fn the_default_seccomp_profile_denies_unshare() {
    if !root("the_default_seccomp_profile_denies_unshare") {
        return;
    }
    if !std::path::Path::new("/usr/bin/unshare").exists() {
        paddock_testutil::skip(
            "the_default_seccomp_profile_denies_unshare",
            "no /usr/bin/unshare",
        );
        return;
    }
    let script = "/usr/bin/unshare --uts /bin/true; echo $?";
    // Control: root may unshare without the filter.
    let (_, out, err) = run(Jail::default(), Namespaces::NONE, script);
    assert_eq!(out, "0\n", "{err}");
    let jail = Jail {
        no_new_privs: true,
        seccomp: Some(SeccompFilter::default_profile()),
        ..Jail::default()
    };
    let (st, out, err) = run(jail, Namespaces::NONE, script);
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    assert_eq!(out, "1\n", "{err}");
    assert!(err.contains("Operation not permitted"), "{err}");
}

#[test]
fn landlock_denies_writes_outside_the_rules() {
    let test = "landlock_denies_writes_outside_the_rules";
    if !root(test) {
        return;
    }
    if landlock::kernel_abi().is_none() {
        paddock_testutil::skip(test, "the kernel has no Landlock");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x");
    let jail = Jail {
        no_new_privs: true,
        landlock: Landlock {
            mode: LandlockMode::Required,
            ..Landlock::default()
        },
        ..Jail::default()
    };
    let script = format!(
        "echo hi >{} || echo denied; grep -q Uid /proc/self/status && echo read",
        file.display()
    );
    let (st, out, err) = run(jail, Namespaces::NONE, &script);
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    assert_eq!(out, "denied\nread\n", "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(!file.exists());
}

#[test]
fn a_user_namespace_gets_the_maps_before_the_program_runs() {
    if !root("a_user_namespace_gets_the_maps_before_the_program_runs") {
        return;
    }
    let line = |inside, outside, count| IdMap {
        inside,
        outside,
        count,
    };
    let jail = Jail {
        user: user(0, 0, &[]),
        id_maps: Some(IdMaps {
            uid: vec![line(0, 300_300, 1), line(1, 300_400, 10)],
            gid: vec![line(0, 300_300, 1)],
        }),
        ..Jail::default()
    };
    let mut p = Command::new("/bin/sh")
        .args([
            "-c",
            "cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups; \
             grep -E '^(Uid|Gid)' /proc/self/status; read x || true",
        ])
        .unshare(Namespaces::USER)
        .jail(jail)
        .stdin(Stdio::Pipe)
        .stdout(Stdio::Pipe)
        .spawn()
        .unwrap();
    let stdin = p.take_stdin().unwrap();
    let out = read_to_string_until(p.take_stdout().unwrap(), "Gid:");
    // Seen from outside: the mapped ids.
    let outside = status_map(&fs::read_to_string(format!("/proc/{}/status", p.pid())).unwrap());
    drop(stdin);
    assert_eq!(p.wait_blocking(), ExitStatus::Exited(0));
    let words: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        words,
        vec![
            vec!["0", "300300", "1"],
            vec!["1", "300400", "10"],
            vec!["0", "300300", "1"],
            vec!["allow"],
            vec!["Uid:", "0", "0", "0", "0"],
            vec!["Gid:", "0", "0", "0", "0"],
        ]
    );
    assert!(outside["Uid"].starts_with("300300\t"), "{outside:?}");
}

/// Read `fd` until a line starting with `marker` has been read (the writer keeps it open).
fn read_to_string_until(fd: std::os::fd::OwnedFd, marker: &str) -> String {
    use std::io::{BufRead, BufReader};
    let mut r = BufReader::new(fs::File::from(fd));
    let mut s = String::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap() == 0 {
            return s;
        }
        s.push_str(&l);
        if l.starts_with(marker) {
            return s;
        }
    }
}

#[test]
fn failures_name_the_stage_and_what_it_was_doing() {
    if !root("failures_name_the_stage_and_what_it_was_doing") {
        return;
    }
    // soft > hard, built by hand (from_name refuses it).
    let jail = Jail {
        rlimits: vec![
            Rlimit::from_name("core", 0, 0).unwrap(),
            Rlimit {
                resource: libc::RLIMIT_NOFILE,
                soft: 20,
                hard: 10,
            },
        ],
        ..Jail::default()
    };
    let e = Command::new("/bin/true").jail(jail).spawn().unwrap_err();
    assert_eq!(
        (e.stage(), e.errno()),
        (Some(Stage::Rlimit), Some(libc::EINVAL))
    );
    assert!(e.to_string().contains("nofile soft 20 hard 10"), "{e}");

    // A uid the user namespace does not map: setresuid fails, and is named.
    let jail = Jail {
        user: user(5, 0, &[]),
        id_maps: Some(IdMaps {
            uid: vec![IdMap {
                inside: 0,
                outside: 300_300,
                count: 1,
            }],
            gid: vec![IdMap {
                inside: 0,
                outside: 300_300,
                count: 1,
            }],
        }),
        ..Jail::default()
    };
    let e = Command::new("/bin/true")
        .unshare(Namespaces::USER)
        .jail(jail)
        .spawn()
        .unwrap_err();
    assert_eq!(
        (e.stage(), e.errno()),
        (Some(Stage::Credentials), Some(libc::EINVAL)),
        "{e}"
    );
    assert!(e.to_string().contains("setresuid(5)"), "{e}");

    // Overlapping map lines: the kernel refuses the map; the error names the file.
    let line = |inside, outside, count| IdMap {
        inside,
        outside,
        count,
    };
    let jail = Jail {
        user: user(0, 0, &[]),
        id_maps: Some(IdMaps {
            uid: vec![line(0, 300_300, 10), line(5, 300_500, 1)],
            gid: vec![line(0, 300_300, 1)],
        }),
        ..Jail::default()
    };
    let e = Command::new("/bin/true")
        .unshare(Namespaces::USER)
        .jail(jail)
        .spawn()
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, SpawnError::Os { .. }), "{msg}");
    assert!(msg.contains("/uid_map") && msg.contains("EINVAL"), "{msg}");
    assert!(common::zombie_children().is_empty());
}

#[test]
fn a_part_needing_a_missing_namespace_is_invalid() {
    let cases: Vec<(Jail, &str)> = vec![
        (
            Jail {
                hostname: Some("x".into()),
                ..Jail::default()
            },
            "uts",
        ),
        (
            Jail {
                id_maps: Some(IdMaps::default()),
                ..Jail::default()
            },
            "user",
        ),
        (
            Jail {
                init: true,
                ..Jail::default()
            },
            "pid",
        ),
        (
            Jail {
                filesystem: Some(Default::default()),
                ..Jail::default()
            },
            "mount",
        ),
    ];
    for (jail, ns) in cases {
        let e = Command::new("/bin/true").jail(jail).spawn().unwrap_err();
        match &e {
            SpawnError::Invalid(m) => assert!(m.contains(&format!("new {ns} namespace")), "{m}"),
            _ => panic!("{ns}: {e}"),
        }
    }
}

#[test]
fn a_jailed_child_is_placed_in_its_cgroup_and_killed_with_it() {
    let Some(root) = paddock_testutil::test_root("a_jailed_child_is_placed_in_its_cgroup") else {
        return;
    };
    for fork in [false, true] {
        // A leaf each: on this kernel (6.18) a spawn into a cgroup just after its
        // cgroup.kill is killed too, jail or not.
        let (leafp, cg) = leaf(root.path(), if fork { "fork" } else { "vfork" });
        let jail = Jail {
            user: fork.then(|| User {
                uid: UID,
                gid: GID,
                groups: vec![],
            }),
            no_new_privs: true,
            seccomp: Some(SeccompFilter::default_profile()),
            ..Jail::default()
        };
        let mut p = Command::new("/bin/sh")
            .args(["-c", "echo ready; exec cat"])
            .jail(jail)
            .stdin(Stdio::Pipe)
            .stdout(Stdio::Pipe)
            .spawn_in(cg.as_fd())
            .unwrap();
        let _stdin = p.take_stdin().unwrap();
        let out = read_to_string_until(p.take_stdout().unwrap(), "ready");
        assert_eq!(out, "ready\n", "fork-like: {fork}");
        let procs = fs::read_to_string(leafp.join("cgroup.procs")).unwrap();
        assert_eq!(procs.trim(), p.pid().to_string(), "fork-like: {fork}");
        fs::write(leafp.join("cgroup.kill"), "1").unwrap();
        assert_eq!(
            p.wait_blocking(),
            ExitStatus::Signaled {
                signal: libc::SIGKILL,
                core_dumped: false
            }
        );
        assert!(paddock_testutil::wait_unpopulated(
            &leafp,
            Duration::from_secs(10)
        ));
    }
}
