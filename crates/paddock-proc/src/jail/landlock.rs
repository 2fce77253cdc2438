//! Landlock: a ruleset prepared in the parent (paths opened by inode before any
//! `pivot_root`), enforced by the child (`landlock_restrict_self`) after everything else but
//! seccomp.

use std::os::fd::OwnedFd;

/// Whether and how a jail uses Landlock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LandlockMode {
    /// No Landlock.
    #[default]
    Off,
    /// Enforce what the kernel supports; a kernel without Landlock (or without an ABI
    /// feature asked for) gets a warning, not a failure.
    BestEffort,
    /// Fail the spawn when the kernel cannot enforce every rule asked for.
    Required,
}

/// The Landlock part of a jail. The filesystem rules are derived from the jail's
/// [`Filesystem`](super::Filesystem): the rootfs and every bind and device, read-only binds
/// read-only; nothing else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Landlock {
    /// Off, best effort or required.
    pub mode: LandlockMode,
    /// TCP ports the program may bind (Landlock ABI 4); `None`: not restricted.
    pub tcp_bind: Option<Vec<u16>>,
    /// TCP ports the program may connect to (Landlock ABI 4); `None`: not restricted.
    pub tcp_connect: Option<Vec<u16>>,
}

/// A ruleset ready for the child: the ruleset fd and the ABI version enforced.
#[derive(Debug)]
pub(crate) struct PreparedLandlock {
    /// The ruleset fd, passed to `landlock_restrict_self` in the child.
    #[allow(dead_code)]
    pub fd: OwnedFd,
    /// The Landlock ABI version the ruleset uses.
    #[allow(dead_code)]
    pub abi: u32,
}

/// Build the ruleset for `jail` in the parent; `Ok(None)` when Landlock is off (or
/// unsupported in best-effort mode).
pub(crate) fn prepare(jail: &super::Jail) -> Result<Option<PreparedLandlock>, crate::SpawnError> {
    if jail.landlock.mode == LandlockMode::Off {
        return Ok(None);
    }
    Err(crate::SpawnError::Invalid(
        "landlock is not implemented yet".into(),
    ))
}
