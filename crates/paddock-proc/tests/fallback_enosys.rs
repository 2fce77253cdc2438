//! Fallback detection when `clone3` fails with `ENOSYS` (old kernel, or a seccomp filter
//! like Docker's): legacy `clone` + `cgroup.procs` write + `pidfd_open`.
//! Detected once and cached, with the reason logged once; both spawns land in the target
//! cgroup. (Its own test binary: the seccomp filter and the detection are process-global.)

mod common;

use common::Clone3Denial;

#[test]
fn fallback_enosys_is_detected_once() {
    common::fallback_is_detected_once(
        "fallback_enosys_is_detected_once",
        Clone3Denial::Always(libc::ENOSYS),
        &["clone3", "ENOSYS"],
        |c| c.clone3 == Some(false),
    );
}
