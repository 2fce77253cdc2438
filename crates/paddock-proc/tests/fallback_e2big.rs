//! Fallback detection when `clone3` fails with `E2BIG` for the 5.7 `clone_args` size (a
//! 5.3–5.6 kernel): `clone3` without `CLONE_INTO_CGROUP` + `cgroup.procs` write.
//! Detected once and cached, with the reason logged once; both spawns land in the target
//! cgroup. (Its own test binary: the seccomp filter and the detection are process-global.)

mod common;

use common::Clone3Denial;

#[test]
fn fallback_e2big_is_detected_once() {
    common::fallback_is_detected_once(
        "fallback_e2big_is_detected_once",
        Clone3Denial::LargeArgs,
        &["CLONE_INTO_CGROUP", "E2BIG"],
        |c| c.clone3 == Some(true) && c.into_cgroup == Some(false),
    );
}
