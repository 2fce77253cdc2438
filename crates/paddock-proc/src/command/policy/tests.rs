//! The fallback policy's decision tables (no root, no kernel needed).

use super::*;

const U: Known = Known::Unknown;
const Y: Known = Known::Yes;
const N: Known = Known::No;

fn det(clone3: Known, into_cgroup: Known, clear_sighand: Known) -> Detected {
    Detected {
        clone3,
        into_cgroup,
        clear_sighand,
    }
}

fn c3(into_cgroup: bool, clear_sighand: bool) -> CloneKind {
    CloneKind::Clone3 {
        into_cgroup,
        clear_sighand,
    }
}

const LEGACY: CloneKind = CloneKind::Legacy;

#[test]
fn first_attempt_follows_the_path_and_the_cache() {
    let table = [
        (SpawnPath::Auto, det(U, U, U), c3(true, true)),
        (SpawnPath::Auto, det(Y, U, U), c3(true, true)),
        (SpawnPath::Auto, det(Y, N, U), c3(false, true)),
        (SpawnPath::Auto, det(Y, U, N), c3(true, false)),
        (SpawnPath::Auto, det(Y, N, N), c3(false, false)),
        (SpawnPath::Auto, det(N, U, U), LEGACY),
        (SpawnPath::Auto, det(N, Y, Y), LEGACY),
        (
            SpawnPath::Clone3WithoutIntoCgroup,
            det(U, U, U),
            c3(false, true),
        ),
        (
            SpawnPath::Clone3WithoutIntoCgroup,
            det(U, Y, N),
            c3(false, false),
        ),
        // The explicit path tries clone3 even where it is known missing (a test of the
        // ENOSYS fallback itself).
        (
            SpawnPath::Clone3WithoutIntoCgroup,
            det(N, U, U),
            c3(false, true),
        ),
        (SpawnPath::LegacyClone, det(U, U, U), LEGACY),
        (SpawnPath::LegacyClone, det(Y, Y, Y), LEGACY),
    ];
    for (path, d, want) in table {
        assert_eq!(first_attempt(path, d), want, "{path:?} {d:?}");
    }
}

#[test]
fn after_error_table() {
    let retry = |kind, finding| Next::Retry {
        kind,
        finding: Some(finding),
        probing_eperm: false,
    };
    let probe = Next::Retry {
        kind: LEGACY,
        finding: None,
        probing_eperm: true,
    };
    let fail3 = |errno| Next::Fail {
        op: "clone3",
        errno,
    };
    let fail = |errno| Next::Fail { op: "clone", errno };
    // (attempt, errno, spawn into a cgroup, detected so far) → decision.
    let table = [
        // CLONE_CLEAR_SIGHAND refused: keep everything else, reset by hand.
        (
            c3(true, true),
            Errno::INVAL,
            true,
            det(U, U, U),
            retry(c3(true, false), Finding::NoClearSighand),
        ),
        (
            c3(false, true),
            Errno::INVAL,
            false,
            det(Y, U, U),
            retry(c3(false, false), Finding::NoClearSighand),
        ),
        // ... but not once the flag is known to work, nor without the flag.
        (
            c3(true, true),
            Errno::INVAL,
            true,
            det(Y, U, Y),
            fail3(Errno::INVAL),
        ),
        (
            c3(true, false),
            Errno::INVAL,
            true,
            det(U, U, N),
            fail3(Errno::INVAL),
        ),
        // E2BIG: no CLONE_INTO_CGROUP (clone_args too large for the kernel).
        (
            c3(true, true),
            Errno::TOOBIG,
            true,
            det(U, U, U),
            retry(c3(false, true), Finding::NoIntoCgroup),
        ),
        (
            c3(true, false),
            Errno::TOOBIG,
            true,
            det(U, U, N),
            retry(c3(false, false), Finding::NoIntoCgroup),
        ),
        // Without a cgroup the large struct was never used: E2BIG is an error.
        (
            c3(true, true),
            Errno::TOOBIG,
            false,
            det(U, U, U),
            fail3(Errno::TOOBIG),
        ),
        (
            c3(false, true),
            Errno::TOOBIG,
            true,
            det(U, N, U),
            fail3(Errno::TOOBIG),
        ),
        // EOPNOTSUPP: this target (threaded); not cached.
        (
            c3(true, true),
            Errno::OPNOTSUPP,
            true,
            det(Y, U, U),
            retry(c3(false, true), Finding::TargetRefusesIntoCgroup),
        ),
        (
            c3(false, true),
            Errno::OPNOTSUPP,
            true,
            det(Y, U, U),
            fail3(Errno::OPNOTSUPP),
        ),
        // EBUSY into a cgroup: not a leaf.
        (
            c3(true, true),
            Errno::BUSY,
            true,
            det(U, U, U),
            Next::NotLeaf,
        ),
        (
            c3(true, false),
            Errno::BUSY,
            true,
            det(Y, U, N),
            Next::NotLeaf,
        ),
        (
            c3(false, true),
            Errno::BUSY,
            true,
            det(Y, N, U),
            fail3(Errno::BUSY),
        ),
        (
            c3(true, true),
            Errno::BUSY,
            false,
            det(U, U, U),
            fail3(Errno::BUSY),
        ),
        // ENOSYS: no clone3 at all (old kernel or seccomp), whatever the flags.
        (
            c3(true, true),
            Errno::NOSYS,
            true,
            det(U, U, U),
            retry(LEGACY, Finding::NoClone3),
        ),
        (
            c3(false, false),
            Errno::NOSYS,
            false,
            det(U, N, N),
            retry(LEGACY, Finding::NoClone3),
        ),
        // EPERM: probe with legacy clone, unless clone3 is known to work.
        (c3(true, true), Errno::PERM, true, det(U, U, U), probe),
        (c3(false, true), Errno::PERM, false, det(N, U, U), probe),
        (
            c3(true, true),
            Errno::PERM,
            true,
            det(Y, U, U),
            fail3(Errno::PERM),
        ),
        // Anything else is the spawn's error.
        (
            c3(true, true),
            Errno::NOMEM,
            true,
            det(U, U, U),
            fail3(Errno::NOMEM),
        ),
        (
            c3(true, true),
            Errno::AGAIN,
            true,
            det(Y, U, U),
            fail3(Errno::AGAIN),
        ),
        (LEGACY, Errno::PERM, true, det(U, U, U), fail(Errno::PERM)),
        (LEGACY, Errno::NOSYS, true, det(N, U, U), fail(Errno::NOSYS)),
        (
            LEGACY,
            Errno::AGAIN,
            false,
            det(U, U, U),
            fail(Errno::AGAIN),
        ),
        (LEGACY, Errno::INVAL, true, det(U, U, U), fail(Errno::INVAL)),
    ];
    for (kind, errno, has_cgroup, d, want) in table {
        assert_eq!(
            after_error(kind, errno, has_cgroup, d),
            want,
            "{kind:?} {errno:?} cgroup={has_cgroup} {d:?}"
        );
    }
}

/// Following the decisions from the first attempt reaches a working clone for each
/// kernel the fallbacks exist for, through the findings the cache records.
#[test]
fn fallback_chains() {
    // `refuses(kind) -> Option<errno>` plays the kernel.
    let run = |refuses: &dyn Fn(CloneKind) -> Option<Errno>| {
        let mut d = det(U, U, U);
        let mut kind = first_attempt(SpawnPath::Auto, d);
        let mut probing = false;
        let mut findings = Vec::new();
        for _ in 0..10 {
            let Some(errno) = refuses(kind) else {
                findings.extend(after_success(kind, probing));
                return (kind, findings);
            };
            match after_error(kind, errno, true, d) {
                Next::Retry {
                    kind: k,
                    finding,
                    probing_eperm,
                } => {
                    if let Some(f) = finding {
                        findings.push(f);
                        match f {
                            Finding::NoClearSighand => d.clear_sighand = N,
                            Finding::NoIntoCgroup => d.into_cgroup = N,
                            Finding::NoClone3 => d.clone3 = N,
                            _ => {}
                        }
                    }
                    kind = k;
                    probing = probing_eperm;
                }
                other => panic!("gave up: {other:?}"),
            }
        }
        panic!("no end");
    };
    // Linux >= 5.7: the first attempt works.
    assert_eq!(run(&|_| None), (c3(true, true), vec![Finding::Clone3Works]));
    // Linux 5.5/5.6: E2BIG for the large clone_args.
    assert_eq!(
        run(&|k| matches!(
            k,
            CloneKind::Clone3 {
                into_cgroup: true,
                ..
            }
        )
        .then_some(Errno::TOOBIG)),
        (
            c3(false, true),
            vec![Finding::NoIntoCgroup, Finding::Clone3Works]
        )
    );
    // Linux 5.3/5.4: no CLONE_CLEAR_SIGHAND either (EINVAL checked first by the kernel).
    assert_eq!(
        run(&|k| match k {
            CloneKind::Clone3 {
                clear_sighand: true,
                ..
            } => Some(Errno::INVAL),
            CloneKind::Clone3 {
                into_cgroup: true, ..
            } => Some(Errno::TOOBIG),
            _ => None,
        }),
        (
            c3(false, false),
            vec![
                Finding::NoClearSighand,
                Finding::NoIntoCgroup,
                Finding::Clone3Works
            ]
        )
    );
    // No clone3 (Linux < 5.3, or seccomp with ENOSYS).
    assert_eq!(
        run(&|k| matches!(k, CloneKind::Clone3 { .. }).then_some(Errno::NOSYS)),
        (LEGACY, vec![Finding::NoClone3])
    );
    // seccomp denying clone3 with EPERM: the legacy probe works.
    assert_eq!(
        run(&|k| matches!(k, CloneKind::Clone3 { .. }).then_some(Errno::PERM)),
        (LEGACY, vec![Finding::Clone3Denied])
    );
}

#[test]
fn after_success_table() {
    assert_eq!(
        after_success(c3(true, true), false),
        Some(Finding::Clone3Works)
    );
    assert_eq!(
        after_success(c3(false, false), false),
        Some(Finding::Clone3Works)
    );
    assert_eq!(after_success(LEGACY, false), None);
    assert_eq!(after_success(LEGACY, true), Some(Finding::Clone3Denied));
}

#[test]
fn procs_write_and_handler_reset() {
    // (kind, has_cgroup) → (child writes cgroup.procs, child resets every handler)
    let table = [
        (c3(true, true), true, (false, false)),
        (c3(true, false), true, (false, true)),
        (c3(false, true), true, (true, false)),
        (c3(false, true), false, (false, false)),
        (c3(true, true), false, (false, false)),
        (LEGACY, true, (true, true)),
        (LEGACY, false, (false, true)),
    ];
    for (kind, has_cgroup, want) in table {
        assert_eq!(
            (
                needs_procs_write(kind, has_cgroup),
                resets_all_handlers(kind)
            ),
            want,
            "{kind:?} cgroup={has_cgroup}"
        );
    }
}

#[test]
fn close_mode_from_probes() {
    let refused = || Err(io::Error::from_raw_os_error(libc::EINVAL));
    let missing = || Err(io::Error::from_raw_os_error(libc::ENOSYS));
    let (m, e) = choose_close_mode(Ok(()), || panic!("plain probe not needed"));
    assert_eq!((m, e.is_none()), (CloseMode::CloseRangeCloexec, true));
    let (m, e) = choose_close_mode(refused(), || Ok(()));
    assert_eq!(
        (m, e.and_then(|e| e.raw_os_error())),
        (CloseMode::CloseRange, Some(libc::EINVAL))
    );
    let (m, e) = choose_close_mode(missing(), missing);
    assert_eq!(
        (m, e.and_then(|e| e.raw_os_error())),
        (CloseMode::Fcntl, Some(libc::ENOSYS))
    );
}

#[test]
fn jails_that_change_credentials_to_shared_ids_make_a_user_namespace_or_run_an_init_clone_like_fork()
 {
    use crate::jail::{Jail, User};
    let plain = Jail::default();
    assert!(!needs_fork_like(
        None,
        Namespaces::NONE,
        false,
        (0, 0),
        false
    ));
    assert!(needs_fork_like(None, Namespaces::NONE, true, (0, 0), false));
    assert!(!needs_fork_like(
        Some(&plain),
        Namespaces::PID | Namespaces::MOUNT,
        false,
        (0, 0),
        false
    ));
    let user = Jail {
        user: Some(User {
            uid: 1,
            gid: 1,
            groups: vec![],
        }),
        ..Jail::default()
    };
    assert!(needs_fork_like(
        Some(&user),
        Namespaces::NONE,
        false,
        (0, 0),
        false
    ));
    // The caller's own uid and gid (a root jail that only drops capabilities): no change.
    assert!(!needs_fork_like(
        Some(&user),
        Namespaces::NONE,
        false,
        (1, 1),
        false
    ));
    assert!(needs_fork_like(
        Some(&user),
        Namespaces::NONE,
        false,
        (1, 0),
        false
    ));
    // Ids no other process holds (a dynamic user): the vfork-like clone stays.
    let exclusive = Jail {
        exclusive_ids: true,
        ..user.clone()
    };
    assert!(!needs_fork_like(
        Some(&exclusive),
        Namespaces::PID | Namespaces::MOUNT,
        false,
        (0, 0),
        false
    ));
    assert!(changes_ids(&exclusive, (0, 0)) && !changes_ids(&exclusive, (1, 1)));
    // ... but not with an init or a user namespace.
    let exclusive_init = Jail {
        init: true,
        ..exclusive.clone()
    };
    assert!(needs_fork_like(
        Some(&exclusive_init),
        Namespaces::PID,
        false,
        (0, 0),
        false
    ));
    assert!(needs_fork_like(
        Some(&exclusive),
        Namespaces::USER,
        false,
        (0, 0),
        false
    ));
    let init = Jail {
        init: true,
        ..Jail::default()
    };
    assert!(needs_fork_like(
        Some(&init),
        Namespaces::PID,
        false,
        (0, 0),
        false
    ));
    // An init that execs the init image shares the spawner's memory only until then: it
    // keeps the vfork-like clone, also for a dynamic user, not for shared ids.
    assert!(!needs_fork_like(
        Some(&init),
        Namespaces::PID,
        false,
        (0, 0),
        true
    ));
    assert!(!needs_fork_like(
        Some(&exclusive_init),
        Namespaces::PID,
        false,
        (0, 0),
        true
    ));
    let shared_init = Jail {
        init: true,
        ..user.clone()
    };
    assert!(needs_fork_like(
        Some(&shared_init),
        Namespaces::PID,
        false,
        (0, 0),
        true
    ));
    assert!(needs_fork_like(
        Some(&plain),
        Namespaces::USER,
        false,
        (0, 0),
        false
    ));
}
