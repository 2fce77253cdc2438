//! systemd notifications for a `Type=notify` unit, through the `sd-notify` crate: `STATUS=`
//! lines as the daemon starts, `READY=1` once the API accepts connections and the first
//! reconciliation is done (when /readyz answers 200), `STOPPING=1` on shutdown, and
//! `WATCHDOG=1` at half of `WATCHDOG_USEC` while the daemon is healthy, so that systemd
//! (`WatchdogSec=`) restarts a daemon whose runtime is wedged or whose child reaper has
//! died. Every function is a no-op when `NOTIFY_SOCKET` is unset (not under systemd).

use std::time::Duration;

use sd_notify::NotifyState;

/// Sends `states` to the service manager, if there is one; a failure is logged (the daemon
/// runs on: systemd's start timeout or watchdog then tells).
fn send(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    // `false`: the variables stay, for the later notifications (sandboxes do not inherit
    // them: the supervisor removes them from their environment).
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, socket = ?std::env::var_os("NOTIFY_SOCKET"), "sd_notify: cannot notify the service manager through NOTIFY_SOCKET");
    }
}

/// `STATUS=<text>`: what `systemctl status` shows.
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// `READY=1` with a status line.
pub fn ready(text: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(text)]);
}

/// `STOPPING=1` with a status line.
pub fn stopping(text: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(text)]);
}

/// The watchdog period asked for by `WATCHDOG_USEC` (for this process: `WATCHDOG_PID`, when
/// set, must be ours, as sd_watchdog_enabled(3) checks), or `None`.
pub fn watchdog_period() -> Option<Duration> {
    std::env::var_os("NOTIFY_SOCKET")?;
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Whether the daemon may tell the watchdog it is alive: not while its child reaper is
/// dead (no sandbox can start or be reaped; a restart is the cure). A reaper that could
/// not start yet (`EMFILE`) is retried by the next create, so it still pings.
pub fn healthy(reaper: &paddock_supervisor::ReaperHealth) -> bool {
    !matches!(reaper, paddock_supervisor::ReaperHealth::Dead { .. })
}

/// Pings the watchdog at half of `WATCHDOG_USEC` from the runtime (a wedged runtime stops
/// the pings) while [`healthy`]; does nothing without a watchdog.
pub fn spawn_watchdog() {
    let Some(period) = watchdog_period() else {
        return;
    };
    let every = (period / 2).max(Duration::from_millis(1));
    tracing::info!(
        watchdog_ms = period.as_millis() as u64,
        ping_ms = every.as_millis() as u64,
        "systemd watchdog on"
    );
    tokio::spawn(async move {
        let mut t = tokio::time::interval(every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sick = false;
        loop {
            t.tick().await;
            let reaper = paddock_supervisor::reaper_health();
            if healthy(&reaper) {
                send(&[NotifyState::Watchdog]);
                sick = false;
            } else if !sick {
                sick = true;
                let msg = format!(
                    "unhealthy: the child reaper is {reaper}; watchdog pings stop so that systemd restarts the daemon"
                );
                tracing::error!("{msg}");
                status(&msg);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::healthy;
    use paddock_supervisor::ReaperHealth;

    /// The watchdog is fed unless the reaper is dead.
    #[test]
    fn pings_stop_only_when_the_reaper_is_dead() {
        assert!(healthy(&ReaperHealth::Running));
        assert!(healthy(&ReaperHealth::NotStarted));
        assert!(healthy(&ReaperHealth::StartFailed {
            op: "eventfd",
            errno: 24
        }));
        assert!(!healthy(&ReaperHealth::Dead {
            thread: "paddock-reaper",
            reason: "boom".into()
        }));
    }
}
