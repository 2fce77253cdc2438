//! The program a jail's init runs: `paddock-init` (`init/paddock-init.c`, built by
//! `build.rs`), embedded in this crate and written once per process into a sealed memfd
//! that the init `execveat`s once it has started the program.
//!
//! Why an exec'd image: an init that only ran code of the spawner had to be a fork-like copy
//! of the spawner (it outlives the clone), and copying a daemon's page tables, then faulting
//! its pages back in copy-on-write, cost more than the rest of a jailed start. An init that
//! execs can be cloned vfork-like, sharing the spawner's memory for the few system calls
//! before its `execve`, like the program itself; after that it maps nothing but this image
//! (8 KB). The memfd is sealed (no write, grow or shrink), so nothing can change what the
//! inits of later sandboxes run.
//!
//! Without the image (not built, `memfd_create` refused, e.g. `vm.memfd_noexec = 2`, or an
//! `execveat` of it that failed once), [`fd`] is `None` and inits are fork-like copies as
//! before.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

#[cfg(paddock_init_image)]
static IMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/paddock-init"));

static MEMFD: OnceLock<Option<OwnedFd>> = OnceLock::new();
/// Set once an init failed to exec the image: later spawns fork their inits instead.
static REFUSED: AtomicBool = AtomicBool::new(false);
/// Set by [`set_init_image`]`(false)`.
static DISABLED: AtomicBool = AtomicBool::new(false);

/// Whether the inits of this process's later spawns exec the embedded `paddock-init` image
/// (`true`, the default where it was built) or are fork-like copies of the spawner that run
/// the init's loop themselves (`false`). Both behave the same for the sandbox (signals
/// forwarded, every child reaped, the program's status passed on, privileges dropped); the
/// image makes a jailed start with an init about as cheap as one without (no copy of the
/// spawner's memory). Turn it off where executing from a memfd is not allowed by policy.
/// Spawns already under way are not affected.
pub fn set_init_image(enabled: bool) {
    DISABLED.store(!enabled, Relaxed);
}

/// Whether a spawn started now would exec the init image: it was built, enabled
/// ([`set_init_image`]), its memfd could be made, and no init has failed to exec it.
pub fn init_image_in_use() -> bool {
    fd().is_some()
}

/// The memfd holding the init image (close-on-exec, sealed), created on first use; `None`
/// when inits must fork instead (see the module docs).
pub(crate) fn fd() -> Option<RawFd> {
    if REFUSED.load(Relaxed) || DISABLED.load(Relaxed) {
        return None;
    }
    MEMFD
        .get_or_init(|| match create() {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "paddock-init: cannot create the init image's memfd; jailed inits will fork instead"
                );
                None
            }
        })
        .as_ref()
        .map(AsRawFd::as_raw_fd)
}

/// Record that an init could not exec the image (`errno`): later inits fork.
pub(crate) fn refused(errno: i32) {
    if !REFUSED.swap(true, Relaxed) {
        tracing::warn!(
            errno,
            "paddock-init: a jail's init could not execveat the init image; jailed inits will fork instead"
        );
    }
}

#[cfg(paddock_init_image)]
fn create() -> std::io::Result<Option<OwnedFd>> {
    use rustix::fs::{MemfdFlags, SealFlags};
    use std::io::Write;
    let fd = rustix::fs::memfd_create(
        "paddock-init",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut file = std::fs::File::from(fd);
    file.write_all(IMAGE)?;
    rustix::fs::fchmod(&file, rustix::fs::Mode::from_raw_mode(0o555))?;
    rustix::fs::fcntl_add_seals(
        &file,
        SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
    )?;
    Ok(Some(file.into()))
}

#[cfg(not(paddock_init_image))]
fn create() -> std::io::Result<Option<OwnedFd>> {
    Ok(None)
}
