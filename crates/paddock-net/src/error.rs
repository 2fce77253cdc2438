//! The crate's error type: every failure names the operation, the object (link,
//! namespace, file) and the errno, and says what the user can do where that is known.

use std::io;

/// Every error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or netlink request failed.
    #[error("{op} {object}: {source}{}", hint(.source))]
    Os {
        /// What was being done (`create veth pair`, `mount namespace`, …).
        op: &'static str,
        /// The object it was done to (a link, namespace or file name).
        object: String,
        /// The errno (as `io::Error`; its text ends with `(os error N)`).
        #[source]
        source: io::Error,
    },
    /// A name or value given by the caller is not acceptable.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// Which input (`tag`, `key`, `tap name`, …).
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// An object with the name this crate would use belongs to someone else; it is left
    /// alone.
    #[error(
        "{object} is not owned by {owner} (its owner mark is {found:?}); it was left alone: remove or rename it if it is stale"
    )]
    NotOwned {
        /// The object's name.
        object: String,
        /// The owner this crate expected.
        owner: String,
        /// The owner mark found on it (`None`: none).
        found: Option<String>,
    },
    /// The lease pool has no free subnet, or another pool error.
    #[error(transparent)]
    Pool(#[from] crate::pool::PoolError),
    /// A host port asked to be published is published by another sandbox (of any
    /// paddock process sharing the lease file).
    #[error(
        "host port {port} is already published by sandbox {owner}; pick another port or stop that sandbox"
    )]
    PortTaken {
        /// The port and protocol (`8080/tcp`).
        port: String,
        /// The owner (`<tag>+<key>`) publishing it.
        owner: String,
    },
    /// `nft` failed or is missing.
    #[error("nft {op} {object}: {detail}")]
    Nft {
        /// What was being done.
        op: &'static str,
        /// The table, chain or rule.
        object: String,
        /// nft's message, or why it could not run.
        detail: String,
    },
    /// The `nft` program is not installed (nftables rules cannot be made on this node).
    #[error("nft {op} {object}: {program} not found: install nftables (Debian package `nftables`)")]
    NftMissing {
        /// What was being done.
        op: &'static str,
        /// The table.
        object: String,
        /// The program looked for.
        program: String,
    },
}

impl Error {
    /// Whether this is the failure to open `/dev/net/tun` for a tap because the node has no
    /// tun driver or device node (`ENOENT`, `ENODEV`, `ENXIO`): what the node lacks, not a
    /// fault of the call.
    pub fn is_tun_missing(&self) -> bool {
        use rustix::io::Errno;
        matches!(self, Self::Os { op, source, .. }
            if *op == crate::tap::OPEN_TUN
                && [Errno::NOENT, Errno::NODEV, Errno::NXIO]
                    .iter()
                    .any(|e| source.raw_os_error() == Some(e.raw_os_error())))
    }

    /// Whether this is the refusal to turn `net.ipv4.ip_forward` on (a read-only
    /// `/proc/sys`, as in a container: `EROFS`, `EACCES`, `EPERM`): the host's setting is
    /// for its administrator to change, not a fault of the call.
    pub fn is_forwarding_refused(&self) -> bool {
        use rustix::io::Errno;
        matches!(self, Self::Os { op, source, .. }
            if *op == crate::netns::WRITE_IP_FORWARD
                && [Errno::ROFS, Errno::ACCESS, Errno::PERM]
                    .iter()
                    .any(|e| source.raw_os_error() == Some(e.raw_os_error())))
    }

    pub(crate) fn os(op: &'static str, object: impl Into<String>, source: io::Error) -> Self {
        Self::Os {
            op,
            object: object.into(),
            source,
        }
    }

    pub(crate) fn netlink(
        op: &'static str,
        object: impl Into<String>,
        e: rtnetlink::Error,
    ) -> Self {
        Self::os(op, object, netlink_io(e))
    }

    /// The errno, when the failure was a system call's or the kernel's.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A netlink error as an `io::Error` carrying the kernel's errno.
pub(crate) fn netlink_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) if m.raw_code() != 0 => m.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc_errno::EPERM) | Some(libc_errno::EACCES) => {
            " (needs CAP_NET_ADMIN and CAP_SYS_ADMIN: run as root)"
        }
        Some(libc_errno::EEXIST) => {
            " (the name is taken: a stale object of a previous run, or another program's; reclaim or remove it)"
        }
        _ => "",
    }
}

/// The errnos `hint` explains (kept here so the crate needs no libc dependency).
pub(crate) mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EACCES: i32 = 13;
    pub const EEXIST: i32 = 17;
    pub const ENODEV: i32 = 19;
    pub const EINVAL: i32 = 22;
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
