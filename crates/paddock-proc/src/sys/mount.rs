//! The child side of a jail's filesystem: the mount operations the parent planned
//! (`jail::mounts`), run with raw system calls only.

use std::os::fd::RawFd;

/// The filesystem plan of a jailed child.
#[derive(Debug)]
pub(crate) struct RawFs {
    _private: (),
}

/// Run the filesystem plan.
///
/// # Safety
/// As [`child_main`](super::child::child_main).
pub(super) unsafe fn run(_fs: &RawFs, _err_fd: RawFd) {}
