//! Operator foot-guns of `paddock serve` (issue 13, item 7): what is at `--socket`, the
//! state directory's mode and owner, a failed `--socket-group`.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::*;

fn serve_fails(w: &World, args: &[String]) -> String {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(args).env_remove("PADDOCK_TEST_PAUSE_AT");
    let o = output_within(cmd, Duration::from_secs(20));
    assert!(!o.status.success(), "serve started: {o:?}");
    assert!(w.cgroups().is_empty());
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

/// `--socket` naming a regular file, a directory or a symbolic link is refused, and the
/// file is left as it was (it used to be deleted).
#[test]
fn socket_path_must_be_a_socket_or_nothing() {
    let Some(w) = world("hardening_serve_socket_path_must_be_a_socket_or_nothing") else {
        return;
    };
    std::fs::write(&w.socket, "not a socket\n").unwrap();
    let err = serve_fails(&w, &w.serve_args());
    assert!(
        err.contains("regular file") && err.contains("not a socket"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&w.socket).unwrap(),
        "not a socket\n"
    );
    assert!(
        !w.state.exists(),
        "nothing was changed: no state directory made"
    );
    std::fs::remove_file(&w.socket).unwrap();

    std::os::unix::fs::symlink(w.tmp.path().join("elsewhere"), &w.socket).unwrap();
    let err = serve_fails(&w, &w.serve_args());
    assert!(err.contains("symbolic link"), "{err}");
    assert!(
        std::fs::symlink_metadata(&w.socket)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    std::fs::remove_file(&w.socket).unwrap();

    std::fs::create_dir(&w.socket).unwrap();
    let err = serve_fails(&w, &w.serve_args());
    assert!(err.contains("directory"), "{err}");
    std::fs::remove_dir(&w.socket).unwrap();

    // A stale socket (its daemon gone) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&w.socket).unwrap());
    let _d = w.daemon(&[]);
    assert_eq!(w.http("GET", "/healthz", None).status, 200);
}

/// The state directory: a new one is made with mode 0700; an existing one keeps its mode
/// (a shared /tmp lost its sticky bit to a chmod 700) and must be owned by root and not be
/// writable by group or others.
#[test]
fn state_dir_is_never_chmodded_and_must_be_private() {
    let Some(w) = world("hardening_serve_state_dir_is_never_chmodded_and_must_be_private") else {
        return;
    };
    // Like /tmp: world-writable with the sticky bit.
    std::fs::create_dir(&w.state).unwrap();
    std::fs::set_permissions(&w.state, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let err = serve_fails(&w, &w.serve_args());
    assert!(err.contains("--state-dir") && err.contains("1777"), "{err}");
    assert!(err.contains("chmod go-w"), "says what to do: {err}");
    assert_eq!(mode(&w.state), 0o1777, "the mode was changed");
    assert_eq!(
        std::fs::read_dir(&w.state).unwrap().count(),
        0,
        "nothing was written"
    );
    // Group-writable.
    std::fs::set_permissions(&w.state, std::fs::Permissions::from_mode(0o770)).unwrap();
    let err = serve_fails(&w, &w.serve_args());
    assert!(err.contains("770"), "{err}");
    assert_eq!(mode(&w.state), 0o770);
    // Owned by someone else.
    std::fs::set_permissions(&w.state, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&w.state, Some(65534), Some(65534)).unwrap();
    let err = serve_fails(&w, &w.serve_args());
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert_eq!(std::fs::read_dir(&w.state).unwrap().count(), 0);
    // Root's own, 0755: used as it is.
    std::os::unix::fs::chown(&w.state, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&w.state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = w.daemon(&[]);
    assert_eq!(mode(&w.state), 0o755, "the mode was changed");
    drop(d);
    // A new one (and its missing parent): created 0700.
    let fresh = w.tmp.path().join("a/b/state");
    let mut args = w.serve_args();
    args[4] = fresh.display().to_string();
    let mut child = std::process::Command::new(BIN)
        .args(&args)
        .env_remove("PADDOCK_TEST_PAUSE_AT")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(20), "the daemon to be ready", || {
        try_http_unix(&w.socket, "GET", "/readyz", None, &[])
            .ok()
            .filter(|r| r.status == 200)
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(mode(&fresh), 0o700);
}

/// A `--socket-group` that does not exist fails before anything is made: no socket file
/// is left behind (it used to be), and no state.
#[test]
fn failed_socket_group_leaves_no_socket() {
    let Some(w) = world("hardening_serve_failed_socket_group_leaves_no_socket") else {
        return;
    };
    let mut args = w.serve_args();
    args.extend(["--socket-group".into(), "paddock-no-such-group-h13".into()]);
    let err = serve_fails(&w, &args);
    assert!(
        err.contains("paddock-no-such-group-h13") && err.contains("no such group"),
        "{err}"
    );
    assert!(
        std::fs::symlink_metadata(&w.socket).is_err(),
        "the socket file was left behind"
    );
    assert!(!w.state.exists());
}
