//! A thin typed client of systemd's manager (`org.freedesktop.systemd1.Manager`) on the
//! system bus (root) or the user bus (anyone else, the user's own manager):
//! `StartTransientUnit`, `GetUnit` and the `JobRemoved` signal, which is all the scope of
//! `paddock run` needs (what runc does with go-systemd's dbus package).

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::StreamExt;
use zbus::zvariant::{OwnedObjectPath, Value};

use super::Instance;

/// How long `paddock run` waits for systemd to connect, answer and finish the scope's job.
pub const SCOPE_TIMEOUT: Duration = Duration::from_secs(30);

/// `org.freedesktop.systemd1.Manager`, the calls and the signal paddock uses.
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub trait Manager {
    /// Creates and starts a transient unit; returns the path of its start job.
    #[allow(clippy::type_complexity)]
    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, Value<'_>)],
        aux: &[(&str, &[(&str, Value<'_>)])],
    ) -> zbus::Result<OwnedObjectPath>;

    /// The object path of a loaded unit.
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;

    /// A job finished: its ID, path, unit and result (`done`, `failed`, `canceled`,
    /// `timeout`, `dependency`, `skipped`).
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: zbus::zvariant::ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

/// What `paddock run` asks systemd for.
#[derive(Debug, Clone)]
pub struct ScopeRequest {
    /// Whose manager is asked.
    pub instance: Instance,
    /// The scope's unit name (`paddock-run-<escaped id>.scope`).
    pub unit: String,
    /// Its slice (`--slice`).
    pub slice: String,
    /// Its `Description=`.
    pub description: String,
    /// The process it holds (paddock run's own).
    pub pid: u32,
    /// Its `TimeoutStopSec=`.
    pub stop_timeout: Duration,
}

/// Asks systemd for the transient scope of `req` (`Delegate=yes`,
/// `CollectMode=inactive-or-failed`, so it is gone once its last process has exited, even
/// after a failure) holding `req.pid`, and waits until its start job is done: the
/// `JobRemoved` signal is subscribed to before the call, so it cannot be missed, and all
/// of it runs within [`SCOPE_TIMEOUT`]. Runs on a runtime of its own that is shut down
/// before it returns, so the caller is left with the one thread it had (the guardian is
/// forked after this).
pub fn start_scope(req: &ScopeRequest) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the runtime that asks systemd for the scope")?;
    let res = rt.block_on(async {
        tokio::time::timeout(SCOPE_TIMEOUT, start_scope_async(req))
            .await
            .map_err(|_| {
                anyhow!(
                    "{} did not start the scope {} within {SCOPE_TIMEOUT:?}",
                    req.instance.describe(),
                    req.unit
                )
            })?
    });
    drop(rt);
    res
}

async fn start_scope_async(req: &ScopeRequest) -> Result<()> {
    let conn = match req.instance {
        Instance::System => zbus::Connection::system().await.context(
            "connect to the D-Bus system bus (/run/dbus/system_bus_socket) to ask systemd for a \
             scope; is dbus running? (--cgroup-manager cgroupfs does without systemd)",
        )?,
        Instance::User { uid } => zbus::Connection::session().await.with_context(|| {
            format!(
                "connect to your D-Bus user bus ($DBUS_SESSION_BUS_ADDRESS, else \
                 $XDG_RUNTIME_DIR/bus, else /run/user/{uid}/bus) to ask your systemd user \
                 instance (user@{uid}.service) for a scope, as a non-root paddock run does; \
                 is it running? It runs while you are logged in, or always after \
                 `loginctl enable-linger`; the user bus needs dbus-user-session (Debian) or \
                 an equivalent. Otherwise run paddock as root, or pass \
                 --cgroup-manager cgroupfs with a --cgroup-root you may write"
            )
        })?,
    };
    let mgr = ManagerProxy::new(&conn)
        .await
        .context("make the proxy of org.freedesktop.systemd1.Manager")?;
    // Subscribed (the match rule is added) before the call: the job may end before its
    // reply arrives.
    let mut removed = mgr
        .receive_job_removed()
        .await
        .context("subscribe to systemd's JobRemoved signal")?;
    let stop_usec = u64::try_from(req.stop_timeout.as_micros()).unwrap_or(u64::MAX);
    let props: Vec<(&str, Value<'_>)> = vec![
        ("Description", Value::from(req.description.as_str())),
        ("Slice", Value::from(req.slice.as_str())),
        ("Delegate", Value::from(true)),
        ("PIDs", Value::from(vec![req.pid])),
        ("CollectMode", Value::from("inactive-or-failed")),
        ("TimeoutStopUSec", Value::from(stop_usec)),
    ];
    let job = mgr
        .start_transient_unit(&req.unit, "fail", &props, &[])
        .await
        .map_err(|e| explain(e, req))?;
    while let Some(sig) = removed.next().await {
        let Ok(args) = sig.args() else { continue };
        if args.job.as_str() != job.as_str() {
            continue;
        }
        if args.result == "done" {
            return Ok(());
        }
        bail!(
            "the job of {} starting the scope {} ended with {:?} (see `journalctl {}-u {}`)",
            req.instance.describe(),
            req.unit,
            args.result,
            if req.instance == Instance::System {
                ""
            } else {
                "--user "
            },
            req.unit
        );
    }
    bail!(
        "the D-Bus connection closed before systemd's job starting the scope {} ended",
        req.unit
    )
}

/// `StartTransientUnit`'s refusals, said for a user.
fn explain(e: zbus::Error, req: &ScopeRequest) -> anyhow::Error {
    let unit = &req.unit;
    if let zbus::Error::MethodError(name, msg, _) = &e {
        let msg = msg.as_deref().unwrap_or("");
        return match name.as_str() {
            "org.freedesktop.systemd1.UnitExists" => anyhow!(
                "systemd already has a unit {unit}: a paddock run of this sandbox ID is still \
                 running (or its scope is still being stopped); pick another --name ({msg})"
            ),
            "org.freedesktop.DBus.Error.AccessDenied"
            | "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired" => anyhow!(
                "{} refused to make the scope {unit}: {msg} (run paddock as root)",
                req.instance.describe()
            ),
            "org.freedesktop.systemd1.NoSuchUnit" | "org.freedesktop.DBus.Error.InvalidArgs" => {
                anyhow!(
                    "systemd refused the scope {unit} in slice {}: {msg} (check --slice)",
                    req.slice
                )
            }
            _ => anyhow!(
                "{} refused to make the scope {unit}: {name}: {msg}",
                req.instance.describe()
            ),
        };
    }
    anyhow!(e).context(format!(
        "ask {} (StartTransientUnit) for the scope {unit}",
        req.instance.describe()
    ))
}
