//! Results: percentiles, JSON lines, the Markdown table with ratios to `floor`.

use std::time::Duration;

use serde::Serialize;

/// One (scenario, variant, implementation) result.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Scenario name.
    pub scenario: String,
    /// Implementation name.
    #[serde(rename = "impl")]
    pub imp: String,
    /// Sub-case (`start`/`stop` of burst, `live=N` of scale), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Whether the implementation could run here.
    pub available: bool,
    /// Measured operations.
    pub n: usize,
    /// Median latency, µs.
    pub p50_us: Option<f64>,
    /// 90th percentile, µs.
    pub p90_us: Option<f64>,
    /// 99th percentile, µs.
    pub p99_us: Option<f64>,
    /// Slowest, µs.
    pub max_us: Option<f64>,
    /// Operations per second (1 / mean latency; for burst, n / total time).
    pub ops_per_s: Option<f64>,
    /// Processes or cgroups left behind (checked independently); `None` when not run.
    pub leaks: Option<usize>,
    /// Failed operations.
    pub errors: usize,
    /// `uname -r`.
    pub kernel: String,
    /// CPUs available to the benchmark.
    pub cores: usize,
    /// Why it is not available, or a note on what was measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Scenario-specific figures (totals, memory).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// The raw samples, µs (for the chart; not serialised).
    #[serde(skip)]
    pub samples_us: Vec<f64>,
}

/// The machine: kernel release and core count.
#[derive(Debug, Clone)]
pub struct Machine {
    /// `uname -r`.
    pub kernel: String,
    /// Available parallelism.
    pub cores: usize,
}

impl Machine {
    /// Reads the machine.
    pub fn read() -> Machine {
        Machine {
            kernel: rustix::system::uname()
                .release()
                .to_string_lossy()
                .into_owned(),
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }
}

/// Nearest-rank percentile of sorted values.
pub fn pct(sorted: &[f64], q: f64) -> f64 {
    let idx = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

impl Row {
    /// A row from latency samples.
    pub fn from_samples(
        m: &Machine,
        scenario: &str,
        imp: &str,
        variant: Option<String>,
        samples: &[Duration],
        errors: usize,
    ) -> Row {
        let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        us.sort_by(|a, b| a.total_cmp(b));
        let stat = |q| (!us.is_empty()).then(|| pct(&us, q));
        let mean = (!us.is_empty()).then(|| us.iter().sum::<f64>() / us.len() as f64);
        Row {
            scenario: scenario.into(),
            imp: imp.into(),
            variant,
            available: true,
            n: us.len(),
            p50_us: stat(0.5),
            p90_us: stat(0.9),
            p99_us: stat(0.99),
            max_us: us.last().copied(),
            ops_per_s: mean.filter(|m| *m > 0.0).map(|m| 1e6 / m),
            leaks: None,
            errors,
            kernel: m.kernel.clone(),
            cores: m.cores,
            note: None,
            extra: Default::default(),
            samples_us: us,
        }
    }

    /// A row for an implementation that cannot run here.
    pub fn unavailable(
        m: &Machine,
        scenario: &str,
        imp: &str,
        variant: Option<String>,
        why: &str,
    ) -> Row {
        let mut r = Row::from_samples(m, scenario, imp, variant, &[], 0);
        r.available = false;
        r.note = Some(why.into());
        r
    }

    /// Adds a scenario-specific figure.
    pub fn with(mut self, k: &str, v: impl Into<serde_json::Value>) -> Row {
        self.extra.insert(k.into(), v.into());
        self
    }

    /// The row's group label (scenario and variant).
    pub fn group(&self) -> String {
        match &self.variant {
            Some(v) => format!("{} ({v})", self.scenario),
            None => self.scenario.clone(),
        }
    }
}

fn fmt_us(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v >= 10_000.0 => format!("{:.1} ms", v / 1000.0),
        Some(v) if v >= 1000.0 => format!("{:.2} ms", v / 1000.0),
        Some(v) => format!("{v:.0} µs"),
    }
}

/// The Markdown table: one line per row, with the p50 and p99 ratios to `floor` of the
/// same scenario and variant.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| scenario | impl | n | p50 | p90 | p99 | max | ops/s | leaks | p50 / floor | p99 / floor | notes |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        let floor = rows
            .iter()
            .find(|f| f.imp == "floor" && f.scenario == r.scenario && f.variant == r.variant);
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 && r.imp != "floor" => format!("{:.2}×", a / b),
            _ => "–".into(),
        };
        let mut notes: Vec<String> = r
            .extra
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::Number(n) => match n.as_f64() {
                    Some(f) if f.fract() != 0.0 => format!("{k} {f:.1}"),
                    _ => format!("{k} {n}"),
                },
                other => format!("{k} {other}"),
            })
            .collect();
        if r.errors > 0 {
            notes.push(format!("{} errors", r.errors));
        }
        if let Some(n) = &r.note {
            notes.push(n.clone());
        }
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.group(),
            r.imp,
            r.n,
            fmt_us(r.p50_us),
            fmt_us(r.p90_us),
            fmt_us(r.p99_us),
            fmt_us(r.max_us),
            r.ops_per_s
                .map(|v| format!("{v:.0}"))
                .unwrap_or_else(|| "–".into()),
            r.leaks.map(|v| v.to_string()).unwrap_or_else(|| "–".into()),
            ratio(r.p50_us, floor.and_then(|f| f.p50_us)),
            ratio(r.p99_us, floor.and_then(|f| f.p99_us)),
            notes.join("; ").replace('|', "/"),
        ));
    }
    s
}

/// Checks the `--max-ratio` gates against `rows` (rows without a variant): one line per
/// gate, and whether every gate held. A gate whose scenario or implementation has no p50
/// (not run, not available, every operation failed) does not hold.
pub fn check_gates(rows: &[Row], gates: &[crate::Gate]) -> (Vec<String>, bool) {
    let p50 = |scenario: &str, imp: &str| {
        rows.iter()
            .find(|r| r.scenario == scenario && r.imp == imp && r.variant.is_none())
            .and_then(|r| r.p50_us)
    };
    let mut ok = true;
    let lines = gates
        .iter()
        .map(|g| {
            let name = format!("{}:{} ≤ {}× floor", g.scenario, g.imp, g.max);
            match (p50(&g.scenario, &g.imp), p50(&g.scenario, "floor")) {
                (Some(a), Some(f)) if f > 0.0 => {
                    let r = a / f;
                    let held = r <= g.max;
                    ok &= held;
                    let verdict = if held { "ok" } else { "FAILED" };
                    format!("gate {name}: {verdict} ({r:.2}×: p50 {a:.0} µs, floor {f:.0} µs)")
                }
                (a, _) => {
                    ok = false;
                    let missing = if a.is_none() { g.imp.as_str() } else { "floor" };
                    format!("gate {name}: FAILED (no p50 for {missing})")
                }
            }
        })
        .collect();
    (lines, ok)
}
