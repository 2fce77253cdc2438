//! The crate's only `unsafe`: `unshare(CLONE_NEWNET)` and the tun/tap ioctls.
//! Each function is called on a dedicated thread (see `netns::on_thread`).

use std::io;
use std::os::fd::AsFd;

use rustix::ioctl::{IntegerSetter, Updater, ioctl, opcode};
use rustix::thread::UnshareFlags;

/// Moves the calling thread into a new network namespace.
pub(crate) fn unshare_net() -> io::Result<()> {
    // SAFETY: `unshare_unsafe` is unsafe because of `CLONE_FILES` and `CLONE_FS`, which
    // would give this thread an fd table or cwd that other threads do not see. Only
    // `CLONE_NEWNET` is passed: it changes this thread's network namespace and nothing
    // another thread can observe; the caller runs it on a thread of its own that ends
    // after the namespace work.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }?;
    Ok(())
}

/// `struct ifreq` as TUNSETIFF reads and writes it: the name, then `ifr_flags` (a
/// `short`) at the start of the 24-byte union.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

const TUNSETIFF: rustix::ioctl::Opcode = opcode::write::<i32>(b'T', 202);
const TUNSETPERSIST: rustix::ioctl::Opcode = opcode::write::<i32>(b'T', 203);
const TUNSETOWNER: rustix::ioctl::Opcode = opcode::write::<i32>(b'T', 204);
const TUNSETGROUP: rustix::ioctl::Opcode = opcode::write::<i32>(b'T', 206);

/// `IFF_TAP`.
pub(crate) const IFF_TAP: i16 = 0x0002;
/// `IFF_NO_PI`: no packet information header.
pub(crate) const IFF_NO_PI: i16 = 0x1000;
/// `IFF_MULTI_QUEUE`.
pub(crate) const IFF_MULTI_QUEUE: i16 = 0x0100;
/// `IFF_VNET_HDR`.
pub(crate) const IFF_VNET_HDR: i16 = 0x4000;

/// Attaches the tun fd to (creating) the device `name` (at most 15 bytes, checked by the
/// caller) with `flags`.
pub(crate) fn tun_set_iff(fd: impl AsFd, name: &str, flags: i16) -> io::Result<()> {
    let mut req = IfReq {
        name: [0; 16],
        flags,
        _pad: [0; 22],
    };
    let n = name.len().min(15);
    req.name[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: TUNSETIFF takes a pointer to a `struct ifreq` (40 bytes on 64-bit Linux:
    // 16 for the name, a 24-byte union whose first member `ifr_flags` is a short), which
    // `IfReq` lays out with `repr(C)`; the kernel reads it and writes the final name back
    // into it, through the `&mut` the updater holds.
    unsafe { ioctl(fd, Updater::<TUNSETIFF, IfReq>::new(&mut req)) }?;
    Ok(())
}

fn int_ioctl<const OP: rustix::ioctl::Opcode>(fd: impl AsFd, value: u32) -> io::Result<()> {
    // SAFETY: used only with TUNSETPERSIST, TUNSETOWNER and TUNSETGROUP, which take their
    // argument (a flag, a uid, a gid) as the integer value of `arg`, not as a pointer.
    unsafe { ioctl(fd, IntegerSetter::<OP>::new_usize(value as usize)) }?;
    Ok(())
}

/// TUNSETOWNER.
pub(crate) fn tun_set_owner(fd: impl AsFd, uid: u32) -> io::Result<()> {
    int_ioctl::<TUNSETOWNER>(fd, uid)
}

/// TUNSETGROUP.
pub(crate) fn tun_set_group(fd: impl AsFd, gid: u32) -> io::Result<()> {
    int_ioctl::<TUNSETGROUP>(fd, gid)
}

/// TUNSETPERSIST: the device outlives the fd (until deleted, or its namespace ends).
pub(crate) fn tun_set_persist(fd: impl AsFd, persist: bool) -> io::Result<()> {
    int_ioctl::<TUNSETPERSIST>(fd, u32::from(persist))
}

#[cfg(test)]
mod tests {
    #[test]
    fn opcodes_match_linux_if_tun_h() {
        assert_eq!(super::TUNSETIFF as u64, 0x4004_54ca);
        assert_eq!(super::TUNSETPERSIST as u64, 0x4004_54cb);
        assert_eq!(super::TUNSETOWNER as u64, 0x4004_54cc);
        assert_eq!(super::TUNSETGROUP as u64, 0x4004_54ce);
        assert_eq!(std::mem::size_of::<super::IfReq>(), 40);
    }
}
