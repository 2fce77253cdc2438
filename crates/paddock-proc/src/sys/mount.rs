//! The child side of a jail's filesystem: the flat list of mount operations the parent
//! planned (`jail::mounts`), run with raw system calls only (as everything in `child.rs`).
//!
//! Targets inside the new tree are opened with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)` relative to the root being built, so a symlink in the rootfs (to
//! `/etc`, say) resolves inside the rootfs and can never make a mount land on the host; the
//! mount is then made onto `/proc/self/fd/N` of that fd. A missing target is created in its
//! parent directory so opened (kept open for the next target in the same directory: the
//! minimal `/dev`'s nodes), or, when parents are missing too, one component at a time.

use std::ffi::{c_char, c_int, c_ulong};
use std::os::fd::RawFd;

use super::child::{RawStage, fail, last_errno};

/// What one [`MountOp`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// `mount(source, target, fstype, flags, data)` with host paths, nothing resolved:
    /// making the tree private, the rootfs's bind onto itself.
    Host,
    /// The root of the new tree becomes `open(target, O_PATH | O_DIRECTORY)` (a host path).
    OpenRoot,
    /// Create the target if missing (`create`), open it in the root, mount onto it.
    MountIn,
    /// Open the target in the root (skip when missing and `skip_missing`), mount onto it
    /// (a remount: `source`, `fstype` and `data` are null).
    RemountIn,
    /// Create the parent directories of the target, then `symlinkat(source, dir, name)`.
    SymlinkIn,
    /// Open the target in the root, skipped when missing: a directory gets an empty
    /// read-only tmpfs, anything else `/dev/null` bound over it.
    MaskIn,
    /// A character device node like the host's `source` at the target, which lies in a
    /// tmpfs of the jail (the minimal `/dev`): `mknodat` in its parent directory with the
    /// host node's number, mode and owner (`node_*`), no mount. Where `mknod` is refused
    /// (`EPERM`: no `CAP_MKNOD`, a user namespace), or the target exists, it is done as a
    /// [`OpKind::MountIn`] bind of `source` onto an empty file instead.
    NodeIn,
    /// `pivot_root` into the root (`fchdir`, `pivot_root(".", ".")`, `umount2(".",
    /// MNT_DETACH)`, `chdir("/")`).
    Pivot,
}

/// How to create a missing target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    /// Do not: a missing target fails the mount (`ENOENT`).
    No,
    /// A directory (mode 0755), and its missing parents.
    Dir,
    /// An empty file (mode 0644), and its missing parent directories.
    File,
}

/// One mount operation, with pointers into the parent's `PreparedFs`.
#[derive(Debug)]
pub(crate) struct MountOp {
    pub kind: OpKind,
    /// NUL-terminated, or null.
    pub source: *const c_char,
    /// NUL-terminated: a host path for [`OpKind::Host`] and [`OpKind::OpenRoot`], else the
    /// target relative to the root (no leading `/`; `.` for the root itself).
    pub target: *const c_char,
    pub fstype: *const c_char,
    pub flags: c_ulong,
    pub data: *const c_char,
    pub create: Create,
    pub skip_missing: bool,
    /// The target's cumulative prefixes (`a`, `a/b`, `a/b/c`) and last components (`a`,
    /// `b`, `c`), for creating it; `n` of each.
    pub prefixes: *const *const c_char,
    pub names: *const *const c_char,
    pub n: usize,
    /// [`OpKind::NodeIn`]: `S_IFCHR` and the permission bits, the device number, the owner.
    pub node_mode: u32,
    pub node_rdev: u64,
    pub node_uid: u32,
    pub node_gid: u32,
}

/// The filesystem plan of a jailed child.
#[derive(Debug)]
pub(crate) struct RawFs {
    pub ops: *const MountOp,
    pub ops_len: usize,
    /// NUL-terminated `/dev/null` (the host's), the source of masks over files.
    pub dev_null: *const c_char,
    pub tmpfs: *const c_char,
    /// Data of the masks' tmpfs (`size=0,mode=0555`).
    pub mask_data: *const c_char,
}

/// `/proc/self/fd/N` of `fd` in `buf`, NUL-terminated; returns a pointer to it.
fn fd_path(buf: &mut [u8; 32], fd: RawFd) -> *const c_char {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 12];
    let mut n = fd.max(0) as u32;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut at = PREFIX.len();
    while len > 0 {
        len -= 1;
        buf[at] = digits[len];
        at += 1;
    }
    buf[at] = 0;
    buf.as_ptr().cast()
}

/// `openat2(root, path, O_PATH | O_CLOEXEC, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`.
fn open_in_root(root: RawFd, path: *const c_char, extra: c_int) -> RawFd {
    // SAFETY: `open_how` is plain data; all-zero bytes are valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC | extra) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 with a NUL-terminated path the parent prepared and a valid `open_how`
    // on this stack of the size passed.
    unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            path,
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        ) as RawFd
    }
}

/// Create what is missing of `op`'s target (all of its components for `last`, else all
/// but the last). Errors report `idx`.
fn create_missing(root: RawFd, op: &MountOp, last: bool, err_fd: RawFd, idx: u32) {
    // SAFETY: (both) the parent's arrays of `n` NUL-terminated strings.
    let prefixes = unsafe { std::slice::from_raw_parts(op.prefixes, op.n) };
    // SAFETY: see above.
    let names = unsafe { std::slice::from_raw_parts(op.names, op.n) };
    let upto = if last { op.n } else { op.n.saturating_sub(1) };
    for i in 0..upto {
        let fd = open_in_root(root, prefixes[i], 0);
        if fd >= 0 {
            // SAFETY: closes the fd just opened.
            unsafe { libc::close(fd) };
            continue;
        }
        if last_errno() != libc::ENOENT {
            fail(err_fd, RawStage::Filesystem, idx);
        }
        let dir = if i == 0 {
            root
        } else {
            let d = open_in_root(root, prefixes[i - 1], libc::O_DIRECTORY);
            if d < 0 {
                fail(err_fd, RawStage::Filesystem, idx);
            }
            d
        };
        let file = i + 1 == op.n && op.create == Create::File;
        let r = if file {
            // SAFETY: openat of a single component in a directory fd, creating an empty
            // file; never following a symlink there.
            let f = unsafe {
                libc::openat(
                    dir,
                    names[i],
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                    0o644,
                )
            };
            if f >= 0 {
                // SAFETY: closes the fd just opened.
                unsafe { libc::close(f) };
            }
            f
        } else {
            // SAFETY: mkdirat of a single component in a directory fd.
            unsafe { libc::mkdirat(dir, names[i], 0o755) }
        };
        let e = last_errno();
        if dir != root {
            // SAFETY: closes the directory fd opened above.
            unsafe { libc::close(dir) };
        }
        if r < 0 && e != libc::EEXIST {
            fail(err_fd, RawStage::Filesystem, idx);
        }
    }
}

/// Whether the NUL-terminated strings `a` and `b` are equal.
fn same(a: *const c_char, b: *const c_char) -> bool {
    let mut i = 0;
    loop {
        // SAFETY: both are NUL-terminated strings the parent prepared; reading stops at
        // the first difference or at the NUL of both.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return false;
        }
        if x == 0 {
            return true;
        }
        i += 1;
    }
}

/// Whether the relative path `target` lies strictly below the relative path `dir`
/// (`dir/...`), both NUL-terminated.
fn strictly_below(target: *const c_char, dir: *const c_char) -> bool {
    let mut i = 0;
    loop {
        // SAFETY: both are NUL-terminated strings the parent prepared; reading stops at
        // the end of `dir` or at the first difference (a NUL of `target` is one).
        let (t, d) = unsafe { (*target.add(i), *dir.add(i)) };
        if d == 0 {
            return t == b'/' as c_char;
        }
        if t != d {
            return false;
        }
        i += 1;
    }
}

/// `openat2(dir, name, O_PATH | O_CLOEXEC, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: one
/// component just created in `dir`, never through a symlink.
fn open_created(dir: RawFd, name: *const c_char) -> RawFd {
    // SAFETY: `open_how` is plain data; all-zero bytes are valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 with a NUL-terminated name the parent prepared and a valid
    // `open_how` on this stack of the size passed.
    unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            name,
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        ) as RawFd
    }
}

/// The last directory a missing target was created in, kept open for the next target in
/// the same directory (the minimal `/dev`'s nodes): `fd` (or -1) is valid for the relative
/// path `path` until a mount lands on that directory or above it.
struct ParentCache {
    fd: RawFd,
    path: *const c_char,
}

impl ParentCache {
    fn clear(&mut self) {
        if self.fd >= 0 {
            // SAFETY: closes the directory fd this cache opened.
            unsafe { libc::close(self.fd) };
        }
        self.fd = -1;
        self.path = std::ptr::null();
    }

    /// After a mount onto `target` (relative to the root): the cached directory stays
    /// what its path names only if the mount is strictly below it.
    fn mounted(&mut self, target: *const c_char) {
        if self.fd >= 0 && !strictly_below(target, self.path) {
            self.clear();
        }
    }
}

/// The directory `op`'s target is to be made in, with its last component's name: the root
/// for a single component, else the parent opened in the root (`O_DIRECTORY`; created with
/// its missing parents one component at a time when missing) or the same directory still
/// open in `cache`. The fd belongs to the root or to `cache`: the caller does not close it.
/// `None` for the root itself. Errors report `idx`.
fn parent_dir(
    root: RawFd,
    op: &MountOp,
    cache: &mut ParentCache,
    err_fd: RawFd,
    idx: u32,
) -> Option<(RawFd, *const c_char)> {
    // SAFETY: (both) the parent's arrays of `n` NUL-terminated strings.
    let prefixes = unsafe { std::slice::from_raw_parts(op.prefixes, op.n) };
    // SAFETY: see above.
    let names = unsafe { std::slice::from_raw_parts(op.names, op.n) };
    let &name = names.last()?;
    if op.n == 1 {
        return Some((root, name));
    }
    let parent = prefixes[op.n - 2];
    if cache.fd < 0 || !same(cache.path, parent) {
        cache.clear();
        let mut d = open_in_root(root, parent, libc::O_DIRECTORY);
        if d < 0 && last_errno() == libc::ENOENT {
            create_missing(root, op, false, err_fd, idx);
            d = open_in_root(root, parent, libc::O_DIRECTORY);
        }
        if d < 0 {
            fail(err_fd, RawStage::Filesystem, idx);
        }
        cache.fd = d;
        cache.path = parent;
    }
    Some((cache.fd, name))
}

/// Create `op`'s missing target (and its missing parents) and open it (`O_PATH`): in its
/// parent directory ([`parent_dir`]) a file with `O_EXCL | O_NOFOLLOW` or a directory with
/// `mkdirat`, then opened from there without following any symlink. Errors report `idx`.
fn create_target(
    root: RawFd,
    op: &MountOp,
    cache: &mut ParentCache,
    err_fd: RawFd,
    idx: u32,
) -> RawFd {
    let Some((dir, name)) = parent_dir(root, op, cache, err_fd, idx) else {
        // The root itself, which exists: report the open's ENOENT.
        return -1;
    };
    if op.create == Create::File {
        // SAFETY: openat of a single component in a directory fd, creating an empty file
        // that did not exist; never following a symlink there.
        let f = unsafe {
            libc::openat(
                dir,
                name,
                libc::O_CREAT
                    | libc::O_EXCL
                    | libc::O_RDONLY
                    | libc::O_CLOEXEC
                    | libc::O_NOFOLLOW
                    | libc::O_NONBLOCK,
                0o644,
            )
        };
        if f >= 0 {
            return f;
        }
        if last_errno() != libc::EEXIST {
            fail(err_fd, RawStage::Filesystem, idx);
        }
    } else {
        // SAFETY: mkdirat of a single component in a directory fd.
        if unsafe { libc::mkdirat(dir, name, 0o755) } != 0 && last_errno() != libc::EEXIST {
            fail(err_fd, RawStage::Filesystem, idx);
        }
    }
    open_created(dir, name)
}

/// [`OpKind::NodeIn`] by `mknodat`: true when the node was made (owner and mode set);
/// false when `mknod` is refused (`EPERM`) or the target exists, for the bind instead.
fn make_node(root: RawFd, op: &MountOp, cache: &mut ParentCache, err_fd: RawFd, idx: u32) -> bool {
    let Some((dir, name)) = parent_dir(root, op, cache, err_fd, idx) else {
        return false;
    };
    // SAFETY: mknodat of a single component in a directory fd, with integer arguments.
    if unsafe { libc::mknodat(dir, name, op.node_mode, op.node_rdev) } != 0 {
        let e = last_errno();
        if e == libc::EPERM || e == libc::EEXIST {
            return false;
        }
        fail(err_fd, RawStage::Filesystem, idx);
    }
    if op.node_uid != 0 || op.node_gid != 0 {
        // SAFETY: fchownat of the node just made, not following a symlink.
        let r = unsafe {
            libc::fchownat(
                dir,
                name,
                op.node_uid,
                op.node_gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r != 0 {
            fail(err_fd, RawStage::Filesystem, idx);
        }
    }
    // The mode again without the umask's bits.
    // SAFETY: fchmodat of the node just made (a device node, not a symlink).
    if unsafe { libc::fchmodat(dir, name, op.node_mode & 0o7777, 0) } != 0 {
        fail(err_fd, RawStage::Filesystem, idx);
    }
    true
}

/// [`OpKind::MountIn`], [`OpKind::RemountIn`] and [`OpKind::MaskIn`] (and the bind of a
/// refused [`OpKind::NodeIn`]): open the target in the root (creating it when missing and
/// `op.create` says so), then mount onto it. A missing target is skipped for a mask or
/// with `skip_missing`.
fn mount_in(
    fs: &RawFs,
    root: RawFd,
    op: &MountOp,
    cache: &mut ParentCache,
    buf: &mut [u8; 32],
    err_fd: RawFd,
    idx: u32,
) {
    let mut fd = open_in_root(root, op.target, 0);
    if fd < 0 && op.create != Create::No && last_errno() == libc::ENOENT {
        fd = create_target(root, op, cache, err_fd, idx);
    }
    if fd < 0 {
        if (op.skip_missing || op.kind == OpKind::MaskIn) && last_errno() == libc::ENOENT {
            return;
        }
        fail(err_fd, RawStage::Filesystem, idx);
    }
    let (mut source, mut fstype, mut flags, mut data) = (op.source, op.fstype, op.flags, op.data);
    if op.kind == OpKind::MaskIn {
        // SAFETY: `struct stat` is plain data; all-zero bytes are valid.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat of the fd just opened into a valid struct on this stack.
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            fail(err_fd, RawStage::Filesystem, idx);
        }
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            source = fs.tmpfs;
            fstype = fs.tmpfs;
            flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            data = fs.mask_data;
        } else {
            source = fs.dev_null;
            fstype = std::ptr::null();
            flags = libc::MS_BIND;
            data = std::ptr::null();
        }
    }
    let path = fd_path(buf, fd);
    // SAFETY: mount(2) onto this child's own fd (through /proc/self/fd) with NUL-terminated
    // strings (or null) the parent prepared.
    let r = unsafe { libc::mount(source, path, fstype, flags, data.cast()) };
    let e = last_errno();
    // SAFETY: closes the fd opened above.
    unsafe { libc::close(fd) };
    if r != 0 {
        // SAFETY: restores the errno of the failed mount for the report.
        unsafe { *libc::__errno_location() = e };
        fail(err_fd, RawStage::Filesystem, idx);
    }
    cache.mounted(op.target);
}

/// Run the filesystem plan. Any failure reports [`RawStage::Filesystem`] with the index of
/// the operation.
///
/// # Safety
/// As [`child_main`](super::child::child_main); `fs` valid as [`RawFs`] documents.
pub(super) unsafe fn run(fs: &RawFs, err_fd: RawFd) {
    // SAFETY: the parent's array of `ops_len` operations.
    let ops = unsafe { std::slice::from_raw_parts(fs.ops, fs.ops_len) };
    let mut root: RawFd = libc::AT_FDCWD;
    let mut buf = [0u8; 32];
    let mut cache = ParentCache {
        fd: -1,
        path: std::ptr::null(),
    };
    for (i, op) in ops.iter().enumerate() {
        let idx = i as u32;
        match op.kind {
            OpKind::Host => {
                cache.clear();
                // SAFETY: mount(2) with NUL-terminated strings (or null) the parent prepared.
                let r = unsafe {
                    libc::mount(op.source, op.target, op.fstype, op.flags, op.data.cast())
                };
                if r != 0 {
                    fail(err_fd, RawStage::Filesystem, idx);
                }
            }
            OpKind::OpenRoot => {
                cache.clear();
                // SAFETY: open(2) of a NUL-terminated host path.
                root = unsafe {
                    libc::open(
                        op.target,
                        libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                    )
                };
                if root < 0 {
                    fail(err_fd, RawStage::Filesystem, idx);
                }
            }
            OpKind::MountIn | OpKind::RemountIn | OpKind::MaskIn => {
                mount_in(fs, root, op, &mut cache, &mut buf, err_fd, idx);
            }
            OpKind::NodeIn => {
                if !make_node(root, op, &mut cache, err_fd, idx) {
                    mount_in(fs, root, op, &mut cache, &mut buf, err_fd, idx);
                }
            }
            OpKind::SymlinkIn => {
                let Some((dir, name)) = parent_dir(root, op, &mut cache, err_fd, idx) else {
                    continue;
                };
                // SAFETY: symlinkat with NUL-terminated strings, in a directory fd.
                if unsafe { libc::symlinkat(op.source, dir, name) } != 0
                    && last_errno() != libc::EEXIST
                {
                    fail(err_fd, RawStage::Filesystem, idx);
                }
            }
            OpKind::Pivot => {
                cache.clear();
                // SAFETY: fchdir to the root's O_PATH directory fd.
                if unsafe { libc::fchdir(root) } != 0 {
                    fail(err_fd, RawStage::Filesystem, idx);
                }
                let dot = c".".as_ptr();
                // SAFETY: pivot_root(".", "."): the old root is stacked on the new one.
                if unsafe { libc::syscall(libc::SYS_pivot_root, dot, dot) } != 0 {
                    fail(err_fd, RawStage::Filesystem, idx);
                }
                // SAFETY: detaches the old root (on top of ".") from this namespace.
                if unsafe { libc::umount2(dot, libc::MNT_DETACH) } != 0 {
                    fail(err_fd, RawStage::Filesystem, idx);
                }
                // SAFETY: chdir to a static NUL-terminated path.
                if unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
                    fail(err_fd, RawStage::Filesystem, idx);
                }
            }
        }
    }
    cache.clear();
    if root >= 0 {
        // SAFETY: closes the root fd this function opened.
        unsafe { libc::close(root) };
    }
}
