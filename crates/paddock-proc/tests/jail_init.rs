//! The jail's init against the real kernel: pid 1 of the new PID namespace with the program
//! as pid 2; signals forwarded; orphans reaped; the program's status passed on (its code, or
//! 128 + the signal); with the default seccomp profile and a credential change; stopped
//! with its whole tree by `cgroup.kill`. Needs root (skipped with a reason otherwise).

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

use common::leaf;
use paddock_proc::jail::{Filesystem, Jail, Mount, SeccompFilter, User, set_init_image};
use paddock_proc::{Command, ExitStatus, Namespaces, Stdio};

fn ready(test: &str) -> bool {
    match paddock_testutil::root_tests_unavailable() {
        Some(reason) => {
            paddock_testutil::skip(test, &reason);
            false
        }
        None => true,
    }
}

/// Runs `f` with the init image (where it was built) and then with fork-like inits that run
/// the init's loop themselves (`set_init_image(false)`), one test of this file at a time
/// (the switch is process-wide).
fn in_both_modes(test: &str, f: impl Fn(bool)) {
    static MODE: Mutex<()> = Mutex::new(());
    if !ready(test) {
        return;
    }
    let _one = MODE.lock().unwrap_or_else(|e| e.into_inner());
    for image in [true, false] {
        set_init_image(image);
        f(image);
    }
    set_init_image(true);
}

/// An init jail on the host tree with its own /proc; with `strict`, a credential change and
/// the default seccomp profile too.
fn jail(strict: bool) -> Jail {
    Jail {
        init: true,
        user: strict.then(|| User {
            uid: 300_800,
            gid: 300_800,
            groups: vec![],
        }),
        no_new_privs: strict,
        seccomp: strict.then(SeccompFilter::default_profile),
        filesystem: Some(Filesystem {
            mounts: vec![Mount::Proc {
                target: "/proc".into(),
            }],
            ..Filesystem::default()
        }),
        ..Jail::default()
    }
}

fn cmd(strict: bool, script: &str) -> Command {
    let mut c = Command::new("/bin/sh");
    c.args(["-c", script])
        .unshare(Namespaces::PID | Namespaces::MOUNT)
        .jail(jail(strict))
        .stdout(Stdio::Pipe);
    c
}

fn line(r: &mut BufReader<fs::File>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l
}

fn reader(fd: OwnedFd) -> BufReader<fs::File> {
    BufReader::new(fs::File::from(fd))
}

#[test]
fn the_program_is_pid_2_under_the_init_and_its_status_is_passed_on() {
    in_both_modes(
        "the_program_is_pid_2_under_the_init_and_its_status_is_passed_on",
        |_image| {
            for strict in [false, true] {
                let mut p = cmd(
                    strict,
                    "echo $$; grep PPid /proc/$$/status; sh -c 'echo forked'; exit 5",
                )
                .spawn()
                .unwrap();
                let mut r = reader(p.take_stdout().unwrap());
                assert_eq!(line(&mut r), "2\n", "strict {strict}");
                assert_eq!(line(&mut r), "PPid:\t1\n");
                assert_eq!(line(&mut r), "forked\n");
                assert_eq!(p.wait_blocking(), ExitStatus::Exited(5), "strict {strict}");
            }
            // Killed by a signal: 128 + the signal.
            let p = cmd(false, "kill -9 $$").spawn().unwrap();
            assert_eq!(p.wait_blocking(), ExitStatus::Exited(128 + libc::SIGKILL));
            assert!(common::zombie_children().is_empty());
        },
    );
}

#[test]
fn sigterm_to_the_spawned_pid_reaches_the_program() {
    in_both_modes("sigterm_to_the_spawned_pid_reaches_the_program", |_image| {
        for strict in [false, true] {
            // The background sleep is an orphan once the program exits; the kernel ends it with
            // the namespace when the init exits.
            let mut p = cmd(
                strict,
                "trap 'echo got-term; exit 3' TERM; sleep 1000 & echo ready; wait $!",
            )
            .spawn()
            .unwrap();
            let mut r = reader(p.take_stdout().unwrap());
            assert_eq!(line(&mut r), "ready\n");
            p.signal(libc::SIGTERM).unwrap();
            assert_eq!(line(&mut r), "got-term\n", "strict {strict}");
            assert_eq!(p.wait_blocking(), ExitStatus::Exited(3), "strict {strict}");
        }
    });
}

#[test]
fn orphans_are_reaped_by_the_init_and_cgroup_kill_stops_the_tree() {
    in_both_modes(
        "orphans_are_reaped_by_the_init_and_cgroup_kill_stops_the_tree",
        |_image| {
            let Some(root) = paddock_testutil::test_root("orphans_are_reaped_by_the_init") else {
                return;
            };
            let (leafp, cg) = leaf(root.path(), "leaf");
            // The subshell exits at once, so its `true` is reparented to the init, which must
            // reap it: its /proc entry (kept while it is a zombie) goes away. Bounded busy wait.
            let script = "o=$( (/bin/true & echo $!) ); i=0; \
                  while [ -e /proc/$o ] && [ $i -lt 200000 ]; do i=$((i+1)); done; \
                  [ -e /proc/$o ] && echo zombie $o || echo reaped; \
                  sleep 1000 & echo ready; wait";
            let mut p = cmd(true, script).spawn_in(cg.as_fd()).unwrap();
            let mut r = reader(p.take_stdout().unwrap());
            assert_eq!(line(&mut r), "reaped\n");
            assert_eq!(line(&mut r), "ready\n");
            let procs = fs::read_to_string(leafp.join("cgroup.procs")).unwrap();
            assert_eq!(procs.lines().count(), 3, "init, sh, sleep: {procs}");
            assert!(procs.lines().any(|l| l == p.pid().to_string()));
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
        },
    );
}

/// With the image, pid 1 is `paddock-init` exec'd from its memfd and holds none of the
/// spawner's memory (a few pages resident, where the spawner has megabytes); without it,
/// pid 1 is a copy of the spawner (its executable is the spawner's).
#[test]
fn the_init_execs_the_image_and_keeps_none_of_the_spawners_memory() {
    in_both_modes(
        "the_init_execs_the_image_and_keeps_none_of_the_spawners_memory",
        |image| {
            if image && !paddock_proc::jail::init_image_in_use() {
                paddock_testutil::skip(
                    "the_init_execs_the_image (image mode)",
                    "the init image was not built or cannot be used here (see the build warning)",
                );
                return;
            }
            // The init's last step is no_new_privs in both modes: wait for it, then look.
            let mut p = cmd(
                false,
                "i=0; until grep -q '^NoNewPrivs:.1' /proc/1/status || [ $i -ge 500 ]; do \
               i=$((i+1)); sleep 0.01; done; \
             readlink /proc/1/exe; grep VmRSS /proc/1/status",
            )
            .spawn()
            .unwrap();
            let mut r = reader(p.take_stdout().unwrap());
            let exe = line(&mut r);
            let rss = line(&mut r);
            assert_eq!(p.wait_blocking(), ExitStatus::Exited(0));
            let rss_kb: u64 = rss
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("VmRSS line: {rss:?}"));
            let own = fs::read_link("/proc/self/exe").unwrap();
            if image {
                assert!(exe.starts_with("/memfd:paddock-init"), "exe {exe:?}");
                assert!(rss_kb < 512, "the init's VmRSS is {rss_kb} kB");
            } else {
                assert_eq!(exe.trim_end(), own.to_str().unwrap(), "exe");
            }
        },
    );
}

/// The init keeps nothing it does not need: it is named `paddock-init`, runs as the jail's
/// uid and gid (not the caller's root), with no capabilities, `no_new_privs` and not
/// dumpable (its memory is a copy of the spawning process's), so the program cannot read
/// it through `/proc/1/mem` even as the same uid.
#[test]
fn the_init_drops_its_privileges() {
    in_both_modes("the_init_drops_its_privileges", |_image| {
        for strict in [false, true] {
            // The init drops its credentials while the program starts: the script waits (up
            // to 5 s) until pid 1 has no_new_privs, the last step, before it looks.
            let mut p = cmd(
                strict,
                "i=0; until grep -q '^NoNewPrivs:.1' /proc/1/status || [ $i -ge 500 ]; do \
               i=$((i+1)); sleep 0.01; done; \
             cat /proc/1/comm; grep -E '^(Uid|Gid|CapEff|CapPrm|NoNewPrivs):' /proc/1/status; \
             head -c 1 /proc/1/mem >/dev/null 2>&1 && echo MEM-READ; echo end",
            )
            .spawn()
            .unwrap();
            let mut r = reader(p.take_stdout().unwrap());
            let mut out = String::new();
            loop {
                let l = line(&mut r);
                if l.is_empty() || l == "end\n" {
                    break;
                }
                out.push_str(&l);
            }
            assert_eq!(p.wait_blocking(), ExitStatus::Exited(0), "{out}");
            assert!(out.starts_with("paddock-init\n"), "{out}");
            let uid = if strict { "300800" } else { "0" };
            assert!(
                out.contains(&format!("Uid:\t{uid}\t{uid}\t{uid}\t{uid}")),
                "{out}"
            );
            assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
            assert!(out.contains("CapPrm:\t0000000000000000"), "{out}");
            assert!(out.contains("NoNewPrivs:\t1"), "{out}");
            if strict {
                assert!(!out.contains("MEM-READ"), "{out}");
            }
        }
    });
}

#[test]
fn a_program_that_fails_after_the_init_started_is_reported_with_its_stage() {
    in_both_modes(
        "a_program_that_fails_after_the_init_started_is_reported_with_its_stage",
        |_image| {
            // The init's child runs the spawn's last steps (on a stack of its own, sharing the
            // init's memory until it execs): their failures come back through the error pipe like
            // any other child's, and the init exits with it.
            for strict in [false, true] {
                for (program, cwd, stage) in [
                    ("/nonexistent/program", None, paddock_proc::Stage::Exec),
                    (
                        "/bin/true",
                        Some("/nonexistent/dir"),
                        paddock_proc::Stage::Chdir,
                    ),
                ] {
                    let mut c = Command::new(program);
                    if let Some(dir) = cwd {
                        c.cwd(dir);
                    }
                    let e = c
                        .unshare(Namespaces::PID | Namespaces::MOUNT)
                        .jail(jail(strict))
                        .spawn()
                        .expect_err("the program cannot start");
                    assert_eq!(e.stage(), Some(stage), "strict {strict}: {e}");
                    assert_eq!(e.errno(), Some(libc::ENOENT), "strict {strict}: {e}");
                }
            }
        },
    );
}
