//! `paddock hold-cgroup`: the main process of `paddock-sandboxes.service`, the systemd unit
//! whose delegated cgroup holds the daemon's sandboxes (deploy/systemd/, docs/systemd.md).
//!
//! systemd 252 (Debian 12) cannot restart a `Delegate=yes` service whose cgroup has
//! controllers enabled for its children: the new main process is attached to the unit's
//! cgroup itself, which the no-internal-process rule forbids (`EBUSY`, status
//! `219/CGROUP`; systemd issue #24064, fixed by `DelegateSubgroup=` in v254). So the
//! sandboxes live in a unit of their own that is never restarted with the daemon: this
//! process lays its cgroup out, says READY, and then only waits for SIGTERM.

use anyhow::{Context, Result};
use paddock_supervisor::Root;
use tokio::signal::unix::{SignalKind, signal};

/// The leaf `hold-cgroup` moves itself into, by default.
pub const DEFAULT_LEAF: &str = "holder";

/// Arguments of `paddock hold-cgroup`.
#[derive(Debug, clap::Args)]
pub struct HoldArgs {
    /// The leaf of this process's cgroup that it (and anything else in that cgroup) is
    /// moved into; the managed root beside it is always `sandboxes`.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_LEAF)]
    pub leaf: String,
}

/// Lays out the cgroup this process was started in (a systemd unit's, with
/// `Delegate=yes`): the process moves into the leaf `<cgroup>/<leaf>`, every controller
/// the cgroup is offered is enabled in it and in `<cgroup>/sandboxes`, the managed root
/// `paddock serve --cgroup-root` is pointed at. Then it notifies systemd (`READY=1`, with
/// the root in `STATUS=`; nothing without `NOTIFY_SOCKET`) and waits for SIGTERM or
/// SIGINT, and returns 0. It holds no other resource: what happens to the sandboxes
/// when the unit stops is the unit's `KillMode=`.
pub async fn hold(a: HoldArgs) -> Result<u8> {
    // Signals first, so a SIGTERM during the layout is not lost (it ends the wait below).
    let mut sigterm = signal(SignalKind::terminate()).context("install a SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("install a SIGINT handler")?;
    let own = Root::own_cgroup().context("find this process's own cgroup (hold-cgroup)")?;
    let offered = Root::open_or_create(&own)
        .and_then(|r| r.controllers())
        .with_context(|| format!("read the controllers offered to {}", own.display()))?;
    let offered: Vec<&str> = offered.iter().map(String::as_str).collect();
    let root = Root::open_delegated_with_leaf(&own, &a.leaf, &offered).with_context(|| {
        format!(
            "lay out the delegated cgroup {} (hold-cgroup): it must be writable by this \
             process, as systemd's Delegate=yes makes it",
            own.display()
        )
    })?;
    tracing::info!(cgroup = %own.display(), leaf = %a.leaf, sandboxes = %root.path().display(), controllers = ?offered, "holding the sandboxes' delegated cgroup");
    let status = format!("holding {}", root.path().display());
    sd_notify::notify(
        false,
        &[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status),
        ],
    )
    .context("notify systemd (READY=1) on $NOTIFY_SOCKET")?;
    let sig = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    tracing::info!(signal = sig, "hold-cgroup exiting");
    Ok(0)
}
