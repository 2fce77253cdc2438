//! The metrics of the sandboxes' resources, read at scrape time: the pressure of all
//! sandboxes together (the managed root's `*.pressure`), always; and with `serve
//! --metrics-per-sandbox`, cpu, memory, pids, io and pressure of each live sandbox, labelled
//! with its ID. Only lifecycles that are running now are exported (one series set per
//! live sandbox, gone with it), so the cardinality is bounded by `--max-sandboxes` and
//! never grows with the sandboxes that came and went.

use paddock_supervisor::{PsiStats, SandboxPressure, SandboxStats, State, Supervisor};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// `(some|full, the line)` of a resource's pressure.
fn lines(p: &PsiStats) -> impl Iterator<Item = (&'static str, paddock_supervisor::PsiLine)> {
    std::iter::once(("some", p.some)).chain(p.full.map(|f| ("full", f)))
}

/// The pressure of all sandboxes together: `paddock_sandboxes_pressure_seconds_total` and
/// `paddock_sandboxes_pressure_avg10_ratio`/`_avg60_ratio`, by resource and kind.
pub fn encode_total(enc: &mut DescriptorEncoder, sup: &Supervisor) -> Result<(), std::fmt::Error> {
    let Ok(p) = sup.pressure_all() else {
        return Ok(());
    };
    encode_pressure(
        enc,
        "paddock_sandboxes",
        "all sandboxes together",
        &[(None, p)],
    )
}

/// Pressure series of `rows` (each with its sandbox ID label, or none).
fn encode_pressure(
    enc: &mut DescriptorEncoder,
    prefix: &str,
    whose: &str,
    rows: &[(Option<&str>, SandboxPressure)],
) -> Result<(), std::fmt::Error> {
    {
        let name = format!("{prefix}_pressure_seconds");
        let help = format!(
            "Time tasks stalled on a resource (PSI total), {whose}, by resource and kind (some: some tasks, full: all at once)"
        );
        let mut m = enc.encode_descriptor(&name, &help, None, MetricType::Counter)?;
        for (id, p) in rows {
            for (res, stats) in p.by_resource() {
                for (kind, l) in stats.iter().flat_map(lines) {
                    let c = ConstCounter::new(l.total_usec as f64 / 1e6);
                    match id {
                        Some(id) => c.encode(m.encode_family(&[
                            ("id", *id),
                            ("resource", res),
                            ("kind", kind),
                        ])?)?,
                        None => c.encode(m.encode_family(&[("resource", res), ("kind", kind)])?)?,
                    }
                }
            }
        }
    }
    for (window, pick) in [
        (
            "avg10",
            (|l: &paddock_supervisor::PsiLine| l.avg10) as fn(&paddock_supervisor::PsiLine) -> f64,
        ),
        ("avg60", |l| l.avg60),
    ] {
        let name = format!("{prefix}_pressure_{window}_ratio");
        let help = format!(
            "Share of wall time tasks stalled on a resource over the last {} s (PSI {window}), {whose}, by resource and kind",
            &window[3..]
        );
        let mut m = enc.encode_descriptor(&name, &help, None, MetricType::Gauge)?;
        for (id, p) in rows {
            for (res, stats) in p.by_resource() {
                for (kind, l) in stats.iter().flat_map(lines) {
                    let g = ConstGauge::new(pick(&l) / 100.0);
                    match id {
                        Some(id) => g.encode(m.encode_family(&[
                            ("id", *id),
                            ("resource", res),
                            ("kind", kind),
                        ])?)?,
                        None => g.encode(m.encode_family(&[("resource", res), ("kind", kind)])?)?,
                    }
                }
            }
        }
    }
    Ok(())
}

/// One gauge (or counter) family over the live sandboxes, labelled `id`.
fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    rows: &[(String, SandboxStats)],
    value: impl Fn(&SandboxStats) -> Option<f64>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for (id, s) in rows {
        let Some(v) = value(s) else { continue };
        let labels = [("id", id.as_str())];
        if ty == MetricType::Counter {
            ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
        } else {
            ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// The per-sandbox series (`--metrics-per-sandbox`) of the running lifecycles.
pub fn encode_per_sandbox(
    enc: &mut DescriptorEncoder,
    sup: &Supervisor,
) -> Result<(), std::fmt::Error> {
    let rows: Vec<(String, SandboxStats)> = sup
        .list()
        .into_iter()
        .filter(|i| i.state == State::Running && i.current)
        .filter_map(|i| {
            let s = sup.stats(&i.id, Some(i.lifecycle)).ok()?;
            Some((i.id.to_string(), s))
        })
        .collect();
    use MetricType::{Counter, Gauge};
    family(
        enc,
        "paddock_sandbox_cpu_seconds",
        "CPU time of a live sandbox (cpu.stat usage_usec)",
        Counter,
        &rows,
        |s| s.cpu_usage_usec.map(|u| u as f64 / 1e6),
    )?;
    family(
        enc,
        "paddock_sandbox_memory_bytes",
        "Memory of a live sandbox (memory.current)",
        Gauge,
        &rows,
        |s| s.memory_current.map(|v| v as f64),
    )?;
    family(
        enc,
        "paddock_sandbox_memory_peak_bytes",
        "Peak memory of a live sandbox (memory.peak)",
        Gauge,
        &rows,
        |s| s.memory_peak.map(|v| v as f64),
    )?;
    family(
        enc,
        "paddock_sandbox_oom_kills",
        "OOM kills in a live sandbox (memory.events oom_kill)",
        Counter,
        &rows,
        |s| s.memory_oom_kill.map(|v| v as f64),
    )?;
    family(
        enc,
        "paddock_sandbox_pids",
        "Processes and threads of a live sandbox (pids.current)",
        Gauge,
        &rows,
        |s| s.pids_current.map(|v| v as f64),
    )?;
    family(
        enc,
        "paddock_sandbox_io_read_bytes",
        "Bytes a live sandbox read from block devices (io.stat rbytes)",
        Counter,
        &rows,
        |s| s.io_read_bytes.map(|v| v as f64),
    )?;
    family(
        enc,
        "paddock_sandbox_io_write_bytes",
        "Bytes a live sandbox wrote to block devices (io.stat wbytes)",
        Counter,
        &rows,
        |s| s.io_write_bytes.map(|v| v as f64),
    )?;
    let pressure: Vec<(Option<&str>, SandboxPressure)> = rows
        .iter()
        .map(|(id, s)| (Some(id.as_str()), s.pressure))
        .collect();
    encode_pressure(enc, "paddock_sandbox", "of a live sandbox", &pressure)
}
