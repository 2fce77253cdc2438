//! Prometheus metrics of the daemon (OpenMetrics text at `/metrics`).
//!
//! Event-driven metrics (the stop-duration histogram) are fed from
//! [`paddock_supervisor::Hooks::on_event`]; everything the supervisor and the cgroup layer
//! already count is read at scrape time by a collector, so nothing is counted twice.
//!
//! Over 600 lines with its unit tests (about 580 without): one family per metric, each with
//! its help text, registered and exported in one place, so that a metric cannot be
//! exported without being documented and tested next to the others.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use paddock_supervisor::{Event, EventKind, State, StopReason, Supervisor};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

type Labels = [(&'static str, &'static str); 1];

/// Every stop reason, with its name in the API (`StopReport::reason`, the `stopping`
/// event), so that `paddock_sandbox_stops_begun_total` has every series from the start.
const STOP_REASONS: [StopReason; 8] = [
    StopReason::Requested,
    StopReason::Killed,
    StopReason::MainExited,
    StopReason::Shutdown,
    StopReason::Recovered,
    StopReason::Deadline,
    StopReason::Oom,
    StopReason::Drain,
];

/// Every admission limit a create can be refused by (the `limit` label of
/// `paddock_admission_rejected_total`): each series exists from the start, at 0, so that
/// `increase()` and `rate()` see the first refusal.
pub const ADMISSION_LIMITS: [&str; 5] = [
    "max_sandboxes",
    "max_starting",
    "overcommit_memory",
    "require_memory_limit",
    "draining",
];

/// The API's name of a stop reason (its serde name; a unit test holds them equal).
fn stop_reason_label(r: StopReason) -> &'static str {
    match r {
        StopReason::Requested => "requested",
        StopReason::Killed => "killed",
        StopReason::MainExited => "main_exited",
        StopReason::Shutdown => "shutdown",
        StopReason::Recovered => "recovered",
        StopReason::Deadline => "deadline",
        StopReason::Oom => "oom",
        StopReason::Drain => "drain",
    }
}

fn stop_histogram() -> Histogram {
    // 1 ms .. ~65 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 17,
    ))
}

/// Counters the daemon keeps itself.
#[derive(Debug, Default)]
pub struct DaemonCounters {
    /// The durable store's commits and failed writes.
    pub store: Arc<crate::store::StoreCounters>,
    /// Reconciliation passes run.
    pub reconcile_runs: AtomicU64,
    /// Records reconciliation could not adopt.
    pub reconcile_errors: AtomicU64,
    /// Records dropped because their sandbox was gone.
    pub records_gone: AtomicU64,
    /// The unix socket's connections.
    pub unix: Arc<crate::listen::ListenerStats>,
    /// The TCP listener's connections.
    pub tcp: Arc<crate::listen::ListenerStats>,
}

/// All metrics of the daemon.
pub struct Metrics {
    registry: Registry,
    stop_duration: Family<Labels, Histogram, fn() -> Histogram>,
    admission_rejected: Family<Labels, Counter>,
    stops_begun: Family<Labels, Counter>,
    /// The daemon's own counters.
    pub daemon: Arc<DaemonCounters>,
    sup: Arc<OnceLock<Supervisor>>,
    per_sandbox: Arc<AtomicBool>,
    max_sandboxes: Arc<AtomicU64>,
}

/// `max_sandboxes` when no limit is set (the gauge is not exported then).
const NO_MAX: u64 = u64::MAX;

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Builds the registry.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let stop_duration =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(stop_histogram);
        registry.register_with_unit(
            "paddock_stop_duration",
            "Duration of sandbox stops by phase",
            Unit::Seconds,
            stop_duration.clone(),
        );
        let admission_rejected = Family::<Labels, Counter>::default();
        for l in ADMISSION_LIMITS {
            let _ = admission_rejected.get_or_create(&[("limit", l)]);
        }
        registry.register(
            "paddock_admission_rejected",
            "Create requests refused by an admission limit, by limit",
            admission_rejected.clone(),
        );
        let stops_begun = Family::<Labels, Counter>::default();
        for r in STOP_REASONS {
            let _ = stops_begun.get_or_create(&[("reason", stop_reason_label(r))]);
        }
        registry.register(
            "paddock_sandbox_stops_begun",
            "Sandbox stops begun, by reason (the `stopping` event; their results are paddock_sandbox_stops_total)",
            stops_begun.clone(),
        );
        let daemon = Arc::new(DaemonCounters::default());
        let sup = Arc::new(OnceLock::new());
        let per_sandbox = Arc::new(AtomicBool::new(false));
        let max_sandboxes = Arc::new(AtomicU64::new(NO_MAX));
        registry.register_collector(Box::new(ScrapeCollector {
            sup: sup.clone(),
            daemon: daemon.clone(),
            per_sandbox: per_sandbox.clone(),
            max_sandboxes: max_sandboxes.clone(),
        }));
        Metrics {
            registry,
            stop_duration,
            admission_rejected,
            stops_begun,
            daemon,
            sup,
            per_sandbox,
            max_sandboxes,
        }
    }

    /// Exports `paddock_max_sandboxes` with the value of `--max-sandboxes`; without a
    /// limit (`None`) the gauge is not exported at all.
    pub fn set_max_sandboxes(&self, max: Option<usize>) {
        let v = max.map_or(NO_MAX, |m| m as u64);
        self.max_sandboxes.store(v, Relaxed);
    }

    /// Exports the per-sandbox series too (`serve --metrics-per-sandbox`; see
    /// [`crate::sandbox_metrics`]).
    pub fn export_per_sandbox(&self, on: bool) {
        self.per_sandbox.store(on, Relaxed);
    }

    /// Connects the scrape-time collector to the supervisor.
    pub fn attach(&self, sup: Supervisor) {
        let _ = self.sup.set(sup);
    }

    /// Feeds one supervisor event.
    pub fn on_event(&self, ev: &Event) {
        if let EventKind::Stopping { reason } = &ev.kind {
            self.stops_begun
                .get_or_create(&[("reason", stop_reason_label(*reason))])
                .inc();
        }
        if let EventKind::Stopped { report } = &ev.kind {
            for (phase, v) in [
                ("signal", report.signal_ms),
                ("grace", report.grace_ms),
                ("kill", report.kill_ms),
                ("remove", report.remove_ms),
                ("total", report.total_ms),
            ] {
                self.stop_duration
                    .get_or_create(&[("phase", phase)])
                    .observe(v / 1000.0);
            }
        }
    }

    /// Counts a create refused by `limit` (one of [`ADMISSION_LIMITS`]).
    pub fn admission_rejected(&self, limit: &'static str) {
        debug_assert!(ADMISSION_LIMITS.contains(&limit), "unknown limit {limit}");
        self.admission_rejected
            .get_or_create(&[("limit", limit)])
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut s, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        s
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[derive(Debug)]
struct ScrapeCollector {
    sup: Arc<OnceLock<Supervisor>>,
    daemon: Arc<DaemonCounters>,
    per_sandbox: Arc<AtomicBool>,
    max_sandboxes: Arc<AtomicU64>,
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    let m = enc.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

fn counter_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    vals: &[(&'static str, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (l, v) in vals {
        let labels = [(label, *l)];
        ConstCounter::new(*v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let d = &self.daemon;
        counter(
            &mut enc,
            "paddock_store_write_failures",
            "Durable store writes that failed",
            d.store.write_failures.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "paddock_store_commits",
            "Transactions committed by the durable store (concurrent writes share one)",
            d.store.commits.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "paddock_events_committed",
            "Lifecycle events numbered and committed to the event ring",
            d.store.events_committed.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "paddock_events_lost",
            "Lifecycle events lost before they could be committed (the store failed for too long, or was closed); each loss is logged",
            d.store.events_lost.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "paddock_event_stream_missed",
            "Events an event stream could not deliver because the ring had dropped them before the client read them (each is a `lagged` event on that stream)",
            d.store.stream_missed.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "paddock_reconcile_runs",
            "Reconciliation passes of the store against the cgroup tree",
            d.reconcile_runs.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "paddock_reconcile_errors",
            "Records reconciliation could not adopt",
            d.reconcile_errors.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "paddock_reconcile_records_gone",
            "Records dropped because their cgroup no longer existed",
            d.records_gone.load(Relaxed),
        )?;
        let listeners = [("unix", &d.unix), ("tcp", &d.tcp)];
        let per_listener =
            |f: fn(&crate::listen::ListenerStats) -> u64| listeners.map(|(n, s)| (n, f(s)));
        {
            let mut m = enc.encode_descriptor(
                "paddock_connections",
                "API connections open now, by listener",
                None,
                MetricType::Gauge,
            )?;
            for (l, v) in per_listener(|s| s.open.load(Relaxed)) {
                ConstGauge::new(v as i64).encode(m.encode_family(&[("listener", l)])?)?;
            }
        }
        counter_family(
            &mut enc,
            "paddock_connections_accepted",
            "API connections accepted, by listener",
            "listener",
            &per_listener(|s| s.accepted.load(Relaxed)),
        )?;
        counter_family(
            &mut enc,
            "paddock_accept_errors",
            "Failed accepts (EMFILE and the like; each burst is logged once), by listener",
            "listener",
            &per_listener(|s| s.accept_errors.load(Relaxed)),
        )?;
        {
            let mut m = enc.encode_descriptor(
                "paddock_connection_timeouts",
                "API connections closed by a timeout, by listener and reason (header: --header-timeout; idle, stall: --idle-timeout)",
                None,
                MetricType::Counter,
            )?;
            for (l, s) in listeners {
                for (reason, v) in [
                    ("header", s.header_timeouts.load(Relaxed)),
                    ("idle", s.idle_timeouts.load(Relaxed)),
                    ("stall", s.stall_timeouts.load(Relaxed)),
                ] {
                    let labels = [("listener", l), ("reason", reason)];
                    ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        gauge(
            &mut enc,
            "paddock_reaper_healthy",
            "1 while the child reaper every spawn goes through works (not started yet, or running); 0 once its start-up failed or a thread of it died: then no sandbox can start and /readyz answers 503",
            i64::from(paddock_supervisor::reaper_health().is_healthy()),
        )?;
        let max = self.max_sandboxes.load(Relaxed);
        if max != NO_MAX {
            gauge(
                &mut enc,
                "paddock_max_sandboxes",
                "The --max-sandboxes limit: live sandboxes (running, stopping, quarantined) plus admitted creates beyond it are refused; absent without a limit",
                max.min(i64::MAX as u64) as i64,
            )?;
        }
        let Some(sup) = self.sup.get() else {
            return Ok(());
        };
        crate::sandbox_metrics::encode_total(&mut enc, sup)?;
        if self.per_sandbox.load(Relaxed) {
            crate::sandbox_metrics::encode_per_sandbox(&mut enc, sup)?;
        }
        let list = sup.list();
        {
            let mut m = enc.encode_descriptor(
                "paddock_sandboxes",
                "Sandbox lifecycles known to the daemon, by state",
                None,
                MetricType::Gauge,
            )?;
            for st in State::ALL {
                let n = list.iter().filter(|i| i.state == st).count() as i64;
                let labels = [("state", st.as_str())];
                ConstGauge::new(n).encode(m.encode_family(&labels)?)?;
            }
        }
        gauge(
            &mut enc,
            "paddock_sandboxes_paused",
            "Running sandboxes that are frozen",
            list.iter().filter(|i| i.paused).count() as i64,
        )?;
        gauge(
            &mut enc,
            "paddock_quarantined_sandboxes",
            "Sandboxes whose processes survived the kill deadline, kept and watched",
            list.iter()
                .filter(|i| i.state == State::Quarantined)
                .count() as i64,
        )?;
        let c = sup.counters();
        counter_family(
            &mut enc,
            "paddock_sandbox_starts",
            "Sandbox starts by result",
            "result",
            &[
                ("ok", c.starts_ok.load(Relaxed)),
                ("failed", c.starts_failed.load(Relaxed)),
                ("conflict", c.starts_conflict.load(Relaxed)),
            ],
        )?;
        counter_family(
            &mut enc,
            "paddock_sandbox_stops",
            "Sandbox stops by result",
            "result",
            &[
                ("ok", c.stops_ok.load(Relaxed)),
                ("quarantined", c.stops_quarantined.load(Relaxed)),
                ("failed", c.stops_failed.load(Relaxed)),
            ],
        )?;
        counter(
            &mut enc,
            "paddock_processes_killed_after_grace",
            "Processes killed because they outlived the grace period",
            c.killed_after_grace.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "paddock_processes_killed_without_grace",
            "Processes killed by a stop with no grace period (a kill, or a grace period of 0)",
            c.killed_without_grace.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "paddock_sandbox_restarts",
            "Restarts a restart policy attempted (each also counts as a start)",
            c.restarts.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "paddock_quarantines_drained",
            "Quarantined sandboxes whose processes finally exited",
            c.quarantines_drained.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "paddock_reconcile_adopted",
            "Sandboxes adopted from a previous daemon process",
            c.adopted.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "paddock_stopped_pruned",
            "Stopped or failed sandboxes deleted by --retain-stopped-age/--retain-stopped-count",
            c.retention_pruned.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "paddock_reconcile_reclaimed",
            "Cgroups killed and removed by reconciliation: owned ones without a record, and those of dead owners",
            c.reclaimed.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "paddock_reconcile_reclaimed_dead_owner",
            "Cgroups of dead owners (a killed paddock run) killed and removed by reconciliation",
            c.reclaimed_dead_owner.load(Relaxed),
        )?;
        let n = sup.net_gauges();
        for (name, help, v) in [
            (
                "paddock_net_namespaces",
                "Network namespaces of veth sandboxes owned by the daemon",
                n.namespaces,
            ),
            (
                "paddock_net_links",
                "Host-side veth links of sandboxes owned by the daemon",
                n.links,
            ),
            (
                "paddock_net_leases",
                "Address leases of the pool held by the daemon",
                n.leases,
            ),
        ] {
            gauge(&mut enc, name, help, v as i64)?;
        }
        counter_family(
            &mut enc,
            "paddock_net_reclaimed",
            "Sandbox network objects without a live sandbox removed by reconciliation, by kind",
            "kind",
            &[
                ("link", c.net_reclaimed_links.load(Relaxed)),
                ("namespace", c.net_reclaimed_namespaces.load(Relaxed)),
                ("rules", c.net_reclaimed_rules.load(Relaxed)),
                ("lease", c.net_reclaimed_leases.load(Relaxed)),
            ],
        )?;
        counter(
            &mut enc,
            "paddock_net_teardown_failures",
            "Sandbox network teardowns that failed at a stop (left for reconciliation)",
            c.net_teardowns_failed.load(Relaxed),
        )?;
        let root = sup.root();
        let k = root.counters().snapshot();
        counter(
            &mut enc,
            "paddock_cgroup_rmdir_fallback",
            "Cgroup removals whose rmdir failed (EBUSY) so the cgroup.kill backstop ran",
            k.rmdir_fallback,
        )?;
        counter(
            &mut enc,
            "paddock_cgroup_rmdir_fast",
            "Cgroup removals that succeeded on the first rmdir",
            k.rmdir_fast,
        )?;
        counter(
            &mut enc,
            "paddock_cgroup_processes_killed",
            "Processes found in a cgroup when a kill started",
            k.processes_killed,
        )?;
        counter(
            &mut enc,
            "paddock_cgroup_kill_rewrites",
            "Extra cgroup.kill writes because the wait for populated 0 stalled",
            k.kill_rewrites,
        )?;
        counter(
            &mut enc,
            "paddock_cgroup_kill_freeze_fallback",
            "Kills that used freeze-and-signal instead of cgroup.kill",
            k.kill_freeze_fallback,
        )?;
        counter(
            &mut enc,
            "paddock_cgroup_kill_failures",
            "Kills that reached their deadline with processes left",
            k.kill_failures,
        )?;
        counter(
            &mut enc,
            "paddock_cgroup_remove_failures",
            "Cgroup removals that returned an error",
            k.remove_failures,
        )?;
        match root.stat() {
            Ok(st) => {
                gauge(
                    &mut enc,
                    "paddock_cgroup_root_descendants",
                    "Live descendant cgroups of the managed root (nr_descendants)",
                    st.nr_descendants as i64,
                )?;
                gauge(
                    &mut enc,
                    "paddock_cgroup_root_dying_descendants",
                    "Removed descendants of the managed root the kernel has not freed yet (nr_dying_descendants)",
                    st.nr_dying_descendants as i64,
                )?;
            }
            Err(e) => tracing::warn!(error = %e, "cannot read cgroup.stat of the managed root"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paddock_supervisor::{LifecycleId, SandboxId};

    fn stopping(reason: StopReason) -> Event {
        Event {
            id: SandboxId::new("m").unwrap(),
            lifecycle: LifecycleId::fresh(),
            at_ms: 1,
            kind: EventKind::Stopping { reason },
        }
    }

    /// The labels are the API's names of the reasons.
    #[test]
    fn stop_reason_labels_are_the_api_names() {
        for r in STOP_REASONS {
            let v = serde_json::to_value(r).unwrap();
            assert_eq!(v.as_str(), Some(stop_reason_label(r)), "{r:?}");
        }
    }

    /// Every reason is exported from the start (at 0); a `stopping` event counts its reason.
    #[test]
    fn stops_begun_by_reason() {
        let m = Metrics::new();
        let text = m.render();
        for r in STOP_REASONS {
            let line = format!(
                "paddock_sandbox_stops_begun_total{{reason=\"{}\"}} 0\n",
                stop_reason_label(r)
            );
            assert!(text.contains(&line), "{line} in:\n{text}");
        }
        m.on_event(&stopping(StopReason::Deadline));
        m.on_event(&stopping(StopReason::Deadline));
        m.on_event(&stopping(StopReason::Killed));
        let text = m.render();
        assert!(
            text.contains("paddock_sandbox_stops_begun_total{reason=\"deadline\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("paddock_sandbox_stops_begun_total{reason=\"killed\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("paddock_sandbox_stops_begun_total{reason=\"requested\"} 0\n"),
            "{text}"
        );
    }

    /// `paddock_max_sandboxes` is the limit, and absent without one.
    #[test]
    fn max_sandboxes_gauge() {
        let m = Metrics::new();
        assert!(!m.render().contains("paddock_max_sandboxes"));
        m.set_max_sandboxes(Some(7));
        let text = m.render();
        assert!(
            text.contains("# TYPE paddock_max_sandboxes gauge\n"),
            "{text}"
        );
        assert!(text.contains("\npaddock_max_sandboxes 7\n"), "{text}");
        m.set_max_sandboxes(None);
        assert!(!m.render().contains("paddock_max_sandboxes"));
    }

    /// Every admission limit's series exists from the start, at 0; a refusal counts.
    #[test]
    fn admission_rejected_series_exist_at_zero() {
        let m = Metrics::new();
        let text = m.render();
        for l in ADMISSION_LIMITS {
            let line = format!("paddock_admission_rejected_total{{limit=\"{l}\"}} 0\n");
            assert!(text.contains(&line), "{line} in:\n{text}");
        }
        m.admission_rejected("draining");
        let text = m.render();
        assert!(
            text.contains("paddock_admission_rejected_total{limit=\"draining\"} 1\n"),
            "{text}"
        );
    }

    /// The reaper's health is exported as 1 while it is healthy (this process has not
    /// broken it).
    #[test]
    fn reaper_healthy_gauge() {
        let text = Metrics::new().render();
        assert!(
            text.contains("# TYPE paddock_reaper_healthy gauge\n"),
            "{text}"
        );
        assert!(text.contains("\npaddock_reaper_healthy 1\n"), "{text}");
    }
}
