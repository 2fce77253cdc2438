//! Fallback detection when `clone3` fails with `EPERM` (a seccomp filter): probed with
//! legacy `clone`, which works, so clone3 is given up.
//! Detected once and cached, with the reason logged once; both spawns land in the target
//! cgroup. (Its own test binary: the seccomp filter and the detection are process-global.)

mod common;

use common::Clone3Denial;

#[test]
fn fallback_eperm_is_detected_once() {
    common::fallback_is_detected_once(
        "fallback_eperm_is_detected_once",
        Clone3Denial::Always(libc::EPERM),
        &["clone3", "EPERM"],
        |c| c.clone3 == Some(false),
    );
}
