//! The systemd cgroup driver (issue 25): on a host whose PID 1 is systemd, `paddock run`
//! asks systemd for a transient scope with `Delegate=yes` holding its own process, and
//! lays out that scope's cgroup like any delegated one ([`Root::open_delegated`]: paddock
//! in `supervisor/`, the sandbox in `sandboxes/`), so it creates nothing in the part of
//! the cgroup tree that systemd owns. As root it asks the system manager (system bus); as
//! any other user, that user's own manager, `user@UID.service` (the user bus), within
//! the controllers that one is delegated ([`Instance`]). `paddock serve` never makes a
//! scope: outside a unit on such a host it refuses to start and points to
//! `deploy/systemd/` (docs/systemd.md).
//!
//! This module holds the pure decisions (which driver, the scope's unit name) and the
//! host probes; [`dbus`] is the D-Bus client.

pub mod dbus;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use paddock_supervisor::{Root, SandboxSpec};

/// Where systemd keeps its runtime state; a directory exactly when systemd is PID 1
/// (`sd_booted(3)`).
pub const BOOTED_MARKER: &str = "/run/systemd/system";

/// The slice `paddock run`'s scopes go into unless `--slice` says otherwise.
pub const DEFAULT_SLICE: &str = "paddock.slice";

/// Longest unit name systemd accepts (`UNIT_NAME_MAX` less its NUL).
pub const MAX_UNIT_NAME: usize = 255;

/// The prefix of a `paddock run` scope's unit name.
pub const SCOPE_PREFIX: &str = "paddock-run-";

/// Which systemd instance makes the scope: the system manager for root, the user's own
/// manager (`user@UID.service`, reached on the user bus) for anyone else, as rootless
/// Podman does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instance {
    /// PID 1, on the system bus.
    System,
    /// `user@<uid>.service`, on the user bus (`$DBUS_SESSION_BUS_ADDRESS`, else
    /// `$XDG_RUNTIME_DIR/bus`, else `/run/user/<uid>/bus`).
    User {
        /// The effective uid of this process.
        uid: u32,
    },
}

impl Instance {
    /// The instance for a process of effective uid `euid`.
    pub fn for_euid(euid: u32) -> Instance {
        if euid == 0 {
            Instance::System
        } else {
            Instance::User { uid: euid }
        }
    }

    /// The instance for this process.
    pub fn current() -> Instance {
        Instance::for_euid(rustix::process::geteuid().as_raw())
    }

    /// How an error names it.
    pub fn describe(self) -> String {
        match self {
            Instance::System => "systemd (the system manager)".into(),
            Instance::User { uid } => format!("your systemd user instance (user@{uid}.service)"),
        }
    }
}

/// `--cgroup-manager`: who makes the cgroups of `paddock run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CgroupManager {
    /// `systemd` when systemd is PID 1, no `--cgroup-root` is given and (as root) paddock
    /// is not already inside a delegated unit's cgroup (then [`Driver::Delegated`], that
    /// unit's cgroup); `cgroupfs` otherwise.
    #[default]
    Auto,
    /// A transient scope with `Delegate=yes` under `--slice`, made by systemd over D-Bus.
    Systemd,
    /// paddock makes its cgroups itself, under `--cgroup-root` (default
    /// `<cgroup2 mount>/paddock`).
    Cgroupfs,
}

/// The driver [`select`] chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// A transient scope made by systemd.
    Systemd,
    /// paddock's own cgroups under the managed root.
    Cgroupfs,
    /// The delegated cgroup of the systemd unit paddock already runs in (`Delegate=yes`):
    /// laid out like a scope's ([`paddock_supervisor::Root::open_delegated`]: paddock moves
    /// into a `supervisor` leaf, the sandbox lives in `sandboxes` beside it), so nothing is
    /// made outside the unit.
    Delegated,
}

/// Which driver runs: `requested` is `--cgroup-manager`, `explicit_root` whether a root
/// was given (`--cgroup-root` or `PADDOCK_CGROUP_ROOT`), `booted` whether systemd is PID 1,
/// `instance` whose scope it would be, `in_delegated` whether this process is already
/// inside a delegated unit's cgroup (only asked for when it decides, and only for root:
/// a user's processes all run below `user@UID.service`, which is delegated to the user
/// manager, not to paddock, and the default cgroupfs root is not the user's to write).
/// An explicit `systemd` that cannot be honoured is an error saying why; `auto` never is.
pub fn select(
    requested: CgroupManager,
    explicit_root: bool,
    booted: bool,
    instance: Instance,
    in_delegated: impl FnOnce() -> bool,
) -> Result<Driver, String> {
    match requested {
        CgroupManager::Cgroupfs => Ok(Driver::Cgroupfs),
        CgroupManager::Systemd if explicit_root => Err(
            "--cgroup-manager systemd and --cgroup-root (or PADDOCK_CGROUP_ROOT) exclude each \
             other: the systemd driver's cgroup is the scope systemd makes; drop one of them"
                .into(),
        ),
        CgroupManager::Systemd if !booted => Err(format!(
            "--cgroup-manager systemd: systemd is not running as PID 1 on this host \
             ({BOOTED_MARKER} does not exist); use --cgroup-manager cgroupfs"
        )),
        CgroupManager::Systemd => Ok(Driver::Systemd),
        CgroupManager::Auto if explicit_root || !booted => Ok(Driver::Cgroupfs),
        CgroupManager::Auto if instance == Instance::System && in_delegated() => {
            Ok(Driver::Delegated)
        }
        CgroupManager::Auto => Ok(Driver::Systemd),
    }
}

/// `paddock serve --cgroup-manager`: whether the daemon may start as asked (`Err` says
/// why not). `delegated` is `--delegated`; `explicit_root` is `None` without
/// `--cgroup-root` (or `PADDOCK_CGROUP_ROOT`), else whether that root lies in a delegated
/// subtree ([`root_delegated`]: only asked for `systemd`); `booted` whether systemd is
/// PID 1, `in_delegated` whether the daemon already runs in a delegated unit's cgroup
/// (asked only for the error's hint). The daemon never makes a scope: a scope holds the
/// process that asked for it, and the daemon's sandboxes must outlive the daemon and be
/// adopted by its next start, which could not join that scope. So `systemd` means "my
/// root is a systemd unit's with Delegate=yes": `--delegated`, or a `--cgroup-root`
/// inside such a unit (deploy/systemd/paddock.service's
/// `paddock.slice/paddock-sandboxes.service/sandboxes`). `auto` and `cgroupfs` keep the
/// daemon's own rules (the default root is refused on a systemd host, see serve).
pub fn serve_check(
    requested: CgroupManager,
    delegated: bool,
    explicit_root: Option<impl FnOnce() -> bool>,
    booted: bool,
    in_delegated: impl FnOnce() -> bool,
) -> Result<(), String> {
    if requested != CgroupManager::Systemd {
        return Ok(());
    }
    if !booted {
        return Err(format!(
            "--cgroup-manager systemd: systemd is not running as PID 1 on this host \
             ({BOOTED_MARKER} does not exist); use --cgroup-manager cgroupfs"
        ));
    }
    if delegated {
        return Ok(());
    }
    if let Some(root_delegated) = explicit_root {
        return if root_delegated() {
            Ok(())
        } else {
            Err(
                "--cgroup-manager systemd: the --cgroup-root (or PADDOCK_CGROUP_ROOT) is not \
                 inside a systemd unit with Delegate=yes (no trusted.delegate on it or an \
                 ancestor); give a root inside such a unit (as deploy/systemd/paddock.service \
                 does: paddock.slice/paddock-sandboxes.service/sandboxes), use --delegated in \
                 one, or --cgroup-manager cgroupfs"
                    .into(),
            )
        };
    }
    let hint = if in_delegated() {
        "this daemon runs in a delegated unit's cgroup: add --delegated (or `delegated = \
         true` in the config file)"
    } else {
        "run it as the unit deploy/systemd/paddock.service (docs/systemd.md), or in a unit \
         with Delegate=yes and --delegated (`systemd-run -p Delegate=yes paddock serve \
         --delegated`)"
    };
    Err(format!(
        "--cgroup-manager systemd: paddock serve does not ask systemd for a scope of its own \
         (a scope holds the daemon itself, and its sandboxes must outlive the daemon and be \
         adopted by its next start, which could not join that scope); its cgroup root must \
         be inside a systemd unit with Delegate=yes: {hint}"
    ))
}

/// Whether systemd is PID 1 here: [`BOOTED_MARKER`] is a directory (as `sd_booted(3)`).
pub fn booted() -> bool {
    std::fs::symlink_metadata(BOOTED_MARKER).is_ok_and(|m| m.is_dir())
}

/// Whether `cgroup` (an absolute path of a cgroup directory, or of one yet to be made:
/// its missing components are skipped) or one of its ancestors is a cgroup systemd
/// delegated: it carries the `trusted.delegate` (system manager) or `user.delegate` (user
/// manager) extended attribute set to `1`, which systemd sets on the cgroup of every unit
/// with `Delegate=yes` (since systemd 251/252).
pub fn in_delegated_subtree(cgroup: &Path) -> bool {
    // The ancestors up to the cgroup2 mount's root (the last with a `cgroup.procs`).
    cgroup
        .ancestors()
        .skip_while(|p| !p.exists())
        .take_while(|p| p.join("cgroup.procs").exists())
        .any(|p| {
            ["trusted.delegate", "user.delegate"].iter().any(|x| {
                let mut buf = [0u8; 8];
                matches!(rustix::fs::getxattr(p, *x, &mut buf[..]), Ok(n) if &buf[..n] == b"1")
            })
        })
}

/// Whether a managed root `path` (`--cgroup-root`: relative to the cgroup2 mount, or
/// absolute) lies in a delegated subtree (false when the mount cannot be found).
pub fn root_delegated(path: &Path) -> bool {
    Root::resolve(path).is_ok_and(|p| in_delegated_subtree(&p))
}

/// Whether this process's own cgroup lies in a delegated subtree (false when it cannot be
/// read).
pub fn own_cgroup_delegated() -> bool {
    Root::own_cgroup().is_ok_and(|c| in_delegated_subtree(&c))
}

/// `s` escaped like `systemd-escape` does (`unit_name_escape`): ASCII letters, digits,
/// `:`, `_` and `.` (not leading) stay, `/` becomes `-`, every other byte is `\xNN`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i > 0 => out.push('.'),
            b if b.is_ascii_alphanumeric() || b == b':' || b == b'_' => out.push(b as char),
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// The unit name of the scope of the `paddock run` of sandbox `id`:
/// `paddock-run-<escape(id)>.scope`. An ID whose escaped form would make the name longer
/// than [`MAX_UNIT_NAME`] is cut (at a whole escaped byte) and followed by `-` and the
/// 16 hex digits of the FNV-1a hash of the whole ID, so distinct IDs keep distinct names.
pub fn scope_unit_name(id: &str) -> String {
    const SUFFIX: &str = ".scope";
    let room = MAX_UNIT_NAME - SCOPE_PREFIX.len() - SUFFIX.len();
    let esc = escape(id);
    if esc.len() <= room {
        return format!("{SCOPE_PREFIX}{esc}{SUFFIX}");
    }
    let hash = format!("-{:016x}", fnv1a(id.as_bytes()));
    let keep = room - hash.len();
    // Cut before an escape sequence, never inside one.
    let mut cut = 0;
    let mut i = 0;
    let b = esc.as_bytes();
    while i < b.len() {
        let step = if b[i] == b'\\' { 4 } else { 1 };
        if i + step > keep {
            break;
        }
        i += step;
        cut = i;
    }
    format!("{SCOPE_PREFIX}{}{hash}{SUFFIX}", &esc[..cut])
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &c| {
        (h ^ u64::from(c)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Checks `--slice`: a valid unit name (the characters `[A-Za-z0-9:_.\-]`, at most
/// [`MAX_UNIT_NAME`]) ending in `.slice`, with something before it.
pub fn check_slice(s: &str) -> Result<(), String> {
    let Some(stem) = s.strip_suffix(".slice") else {
        return Err(format!(
            "--slice {s:?}: must end in .slice (e.g. {DEFAULT_SLICE})"
        ));
    };
    if stem.is_empty() || s.len() > MAX_UNIT_NAME {
        return Err(format!(
            "--slice {s:?}: must have a name before .slice and be at most {MAX_UNIT_NAME} characters"
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '-' | '\\')))
    {
        return Err(format!(
            "--slice {s:?}: {c:?} is not allowed in a unit name (letters, digits, :, _, ., -, \\)"
        ));
    }
    Ok(())
}

/// How long systemd waits, when it stops the scope (`systemctl stop` of it or its slice),
/// before it SIGKILLs what is left: paddock's own stop (the grace period, then the kill and
/// its wait) plus a margin, so systemd's kill only comes if paddock's fails.
pub fn scope_stop_timeout(spec: &SandboxSpec) -> Duration {
    Duration::from_millis(
        spec.stop
            .grace_period_ms
            .saturating_add(spec.stop.kill_timeout_ms),
    ) + Duration::from_secs(15)
}

/// The systemd driver's part of `paddock run`'s preparation: asks the systemd
/// [`Instance`] of this process's user for the scope `paddock-run-<id>.scope` in `slice`
/// holding this process ([`dbus::start_scope`]), checks that this process now runs in it,
/// and lays out its cgroup ([`Root::open_delegated`]): this process moves into
/// `supervisor/`, the returned root is `sandboxes/`, with every controller of
/// [`paddock_supervisor::DEFAULT_CONTROLLERS`] and of the spec's limits that the scope is
/// offered enabled. A limit whose controller the scope is not offered is an error naming
/// it ([`missing_controllers`]). Must be called while this process has one thread (it runs
/// its own short-lived runtime and leaves none behind).
pub fn scope_root(spec: &SandboxSpec, slice: &str) -> Result<Root> {
    let instance = Instance::current();
    let unit = scope_unit_name(spec.id.as_str());
    let req = dbus::ScopeRequest {
        instance,
        unit: unit.clone(),
        slice: slice.to_owned(),
        description: format!("paddock run {}", spec.id),
        pid: std::process::id(),
        stop_timeout: scope_stop_timeout(spec),
    };
    dbus::start_scope(&req)?;
    let own = Root::own_cgroup().context("find this process's cgroup after systemd moved it")?;
    if own.file_name().and_then(|n| n.to_str()) != Some(unit.as_str()) {
        bail!(
            "{} reported the scope {unit} started, but this process is in {} instead of it",
            instance.describe(),
            own.display()
        );
    }
    let want = spec.limits.controllers();
    let mut controllers: Vec<&str> = paddock_supervisor::DEFAULT_CONTROLLERS.to_vec();
    for c in &want {
        if !controllers.contains(c) {
            controllers.push(c);
        }
    }
    let root = Root::open_delegated(&own, &controllers).with_context(|| {
        format!(
            "lay out the delegated cgroup {} of the scope {unit}",
            own.display()
        )
    })?;
    let offered = root
        .controllers()
        .with_context(|| format!("read {}/cgroup.controllers", root.path().display()))?;
    if let Some(e) = missing_controllers(&want, &offered, &unit, &own, instance) {
        bail!(e);
    }
    tracing::debug!(unit, cgroup = %own.display(), sandboxes = %root.path().display(), controllers = ?offered, ?instance, "running in a systemd scope");
    Ok(root)
}

/// The error when the limits need controllers (`want`) that the scope `unit` (cgroup
/// `cgroup`) of `instance` is not `offered`, naming them; `None` when none is missing.
pub fn missing_controllers(
    want: &[&str],
    offered: &[String],
    unit: &str,
    cgroup: &Path,
    instance: Instance,
) -> Option<String> {
    let missing: Vec<&str> = want
        .iter()
        .copied()
        .filter(|c| !offered.iter().any(|o| o == c))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let fix = match instance {
        Instance::System => {
            "drop those limits, or use --cgroup-manager cgroupfs with a --cgroup-root that is \
             offered them"
                .to_owned()
        }
        Instance::User { uid } => format!(
            "user@{uid}.service is delegated only some controllers (cpu, memory and pids by \
             default); drop those limits, have an administrator add the controller with a \
             drop-in `[Service] Delegate=cpu cpuset io memory pids` for user@.service, or run \
             paddock as root"
        ),
    };
    Some(format!(
        "the limits need the {} controller(s), which {} does not delegate to the scope \
         {unit} (its cgroup {} is offered: {}); {fix}",
        missing.join(", "),
        instance.describe(),
        cgroup.display(),
        if offered.is_empty() {
            "none".to_owned()
        } else {
            offered.join(" ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_is_systemd_escape() {
        // Each pair as `systemd-escape` prints it.
        for (i, o) in [
            ("web-1", "web\\x2d1"),
            ("a_b:c.d", "a_b:c.d"),
            (".hidden", "\\x2ehidden"),
            ("a b", "a\\x20b"),
            ("x/y", "x-y"),
            ("é", "\\xc3\\xa9"),
            ("run-1234", "run\\x2d1234"),
        ] {
            assert_eq!(escape(i), o, "{i:?}");
        }
    }

    fn valid_unit_name(n: &str) -> bool {
        n.len() <= MAX_UNIT_NAME
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '-' | '\\'))
    }

    #[test]
    fn scope_names_are_valid_and_distinct() {
        assert_eq!(scope_unit_name("run-42"), "paddock-run-run\\x2d42.scope");
        // The longest IDs (128 bytes) of the worst bytes: every byte escaped.
        let long_a = "-".repeat(128);
        let long_b = format!("{}+", "-".repeat(127));
        let emoji = "😀".repeat(32);
        let mut seen = std::collections::HashSet::new();
        for id in [
            "a",
            "run-1",
            long_a.as_str(),
            long_b.as_str(),
            emoji.as_str(),
            &"x".repeat(128),
        ] {
            let n = scope_unit_name(id);
            assert!(valid_unit_name(&n), "{n}");
            assert!(n.starts_with(SCOPE_PREFIX) && n.ends_with(".scope"), "{n}");
            assert!(seen.insert(n.clone()), "duplicate {n}");
        }
        let cut = scope_unit_name(&long_a);
        // As long as whole escaped bytes allow.
        assert!(cut.len() > MAX_UNIT_NAME - 4, "{cut}");
        assert!(!cut.contains("\\x2-") && !cut.contains("\\x-"), "{cut}");
    }

    #[test]
    fn slices_are_checked() {
        assert!(check_slice("paddock.slice").is_ok());
        assert!(check_slice("machine-paddock.slice").is_ok());
        for bad in [
            "paddock",
            ".slice",
            "a b.slice",
            "a/b.slice",
            &"x".repeat(300),
        ] {
            assert!(check_slice(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selection() {
        use CgroupManager::*;
        use Driver as D;
        let sys = Instance::System;
        let user = Instance::User { uid: 1000 };
        let no = || false;
        let yes = || true;
        // auto: systemd only when booted, no explicit root, not delegated.
        assert_eq!(select(Auto, false, true, sys, no), Ok(D::Systemd));
        // Inside a unit with Delegate=yes: that unit's cgroup, laid out as a scope's.
        assert_eq!(select(Auto, false, true, sys, yes), Ok(D::Delegated));
        assert_eq!(select(Auto, true, true, sys, no), Ok(D::Cgroupfs));
        assert_eq!(select(Auto, false, false, sys, no), Ok(D::Cgroupfs));
        // The delegation probe is only run when it decides.
        assert_eq!(
            select(Auto, true, true, sys, || panic!("not needed")),
            Ok(D::Cgroupfs)
        );
        assert_eq!(
            select(Auto, false, false, sys, || panic!("not needed")),
            Ok(D::Cgroupfs)
        );
        // A user's processes all run below the delegated user@UID.service: the probe is
        // never asked, the user instance makes the scope.
        assert_eq!(
            select(Auto, false, true, user, || panic!("not for a user")),
            Ok(D::Systemd)
        );
        assert_eq!(select(Auto, true, true, user, yes), Ok(D::Cgroupfs));
        assert_eq!(select(Auto, false, false, user, yes), Ok(D::Cgroupfs));
        // cgroupfs: always honoured.
        for (r, b) in [(false, false), (true, true), (false, true)] {
            assert_eq!(select(Cgroupfs, r, b, sys, yes), Ok(D::Cgroupfs));
            assert_eq!(select(Cgroupfs, r, b, user, yes), Ok(D::Cgroupfs));
        }
        // systemd: honoured when it can be, else an error saying why.
        assert_eq!(select(Systemd, false, true, sys, yes), Ok(D::Systemd));
        assert_eq!(select(Systemd, false, true, user, yes), Ok(D::Systemd));
        let e = select(Systemd, true, true, sys, no).unwrap_err();
        assert!(e.contains("--cgroup-root"), "{e}");
        let e = select(Systemd, false, false, user, no).unwrap_err();
        assert!(e.contains(BOOTED_MARKER), "{e}");
    }

    #[test]
    fn instances() {
        assert_eq!(Instance::for_euid(0), Instance::System);
        assert_eq!(Instance::for_euid(1000), Instance::User { uid: 1000 });
        assert!(
            Instance::for_euid(1000)
                .describe()
                .contains("user@1000.service")
        );
    }

    #[test]
    fn missing_controllers_are_named() {
        let offered: Vec<String> = ["cpu", "memory", "pids"].map(String::from).to_vec();
        let cg = Path::new("/sys/fs/cgroup/x.scope");
        let user = Instance::User { uid: 1000 };
        assert_eq!(
            missing_controllers(&["memory", "pids"], &offered, "x.scope", cg, user),
            None
        );
        let e = missing_controllers(&["memory", "io", "cpuset"], &offered, "x.scope", cg, user)
            .unwrap();
        assert!(e.contains("the io, cpuset controller(s)"), "{e}");
        assert!(e.contains("user@1000.service"), "{e}");
        assert!(e.contains("offered: cpu memory pids"), "{e}");
        assert!(e.contains("Delegate="), "{e}");
        let e = missing_controllers(&["hugetlb"], &[], "x.scope", cg, Instance::System).unwrap();
        assert!(e.contains("hugetlb") && e.contains("offered: none"), "{e}");
        assert!(e.contains("--cgroup-manager cgroupfs"), "{e}");
    }

    #[test]
    fn serve_checks() {
        use CgroupManager::*;
        let no_root: Option<fn() -> bool> = None;
        let root = |d: bool| Some(move || d);
        // auto and cgroupfs: the daemon's own rules, whatever the host.
        for m in [Auto, Cgroupfs] {
            for b in [true, false] {
                assert_eq!(
                    serve_check(m, false, no_root, b, || panic!("not asked")),
                    Ok(())
                );
                assert_eq!(
                    serve_check(m, true, no_root, b, || panic!("not asked")),
                    Ok(())
                );
                assert_eq!(
                    serve_check(m, false, Some(|| panic!("not asked")), b, || panic!()),
                    Ok(())
                );
            }
        }
        // systemd: a root inside a delegated unit (--delegated, or a --cgroup-root there).
        assert_eq!(serve_check(Systemd, true, no_root, true, || false), Ok(()));
        assert_eq!(
            serve_check(Systemd, false, root(true), true, || false),
            Ok(())
        );
        let e = serve_check(Systemd, false, root(false), true, || false).unwrap_err();
        assert!(
            e.contains("--cgroup-root") && e.contains("Delegate=yes"),
            "{e}"
        );
        let e = serve_check(Systemd, false, no_root, true, || false).unwrap_err();
        assert!(
            e.contains("deploy/systemd/paddock.service") && e.contains("scope"),
            "{e}"
        );
        let e = serve_check(Systemd, false, no_root, true, || true).unwrap_err();
        assert!(e.contains("add --delegated"), "{e}");
        let e = serve_check(Systemd, true, no_root, false, || false).unwrap_err();
        assert!(e.contains(BOOTED_MARKER), "{e}");
    }

    #[test]
    fn delegation_is_read_from_the_xattrs() {
        // A directory tree with no xattrs is not delegated, and the walk stops where
        // `cgroup.procs` ends.
        let d = tempfile::tempdir().unwrap();
        let leaf = d.path().join("a/b");
        std::fs::create_dir_all(&leaf).unwrap();
        for p in [d.path().join("a"), leaf.clone()] {
            std::fs::write(p.join("cgroup.procs"), "").unwrap();
        }
        assert!(!in_delegated_subtree(&leaf));
        // user.delegate=1 on the parent (tmpfs/ext4 take user xattrs; skip where not).
        let a = d.path().join("a");
        match rustix::fs::setxattr(&a, "user.delegate", b"1", rustix::fs::XattrFlags::empty()) {
            Ok(()) => assert!(in_delegated_subtree(&leaf)),
            Err(e) => eprintln!("skipped the positive case: setxattr user.delegate: {e}"),
        }
    }
}
