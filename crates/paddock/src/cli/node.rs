//! `paddock node`, `paddock drain` and `paddock undrain`: the node's view for an operator
//! or a control plane.

use std::fmt::Write as _;

use anyhow::Result;
use hyper::Method;

use super::{Out, json_or_decode};
use crate::api::{DrainReport, NodeInfo, UndrainReport};
use crate::cli::{human_bytes, term_safe};
use crate::client::Client;

/// `paddock node`: what the node is and holds (`GET /v1/node`).
pub async fn node(c: &Client, out: Out) -> Result<u8> {
    let v = c.json(Method::GET, "/v1/node", None).await?;
    let Some(n) = json_or_decode::<NodeInfo>(out, v, "a NodeInfo")? else {
        return Ok(0);
    };
    print!("{}", render_node(&n));
    Ok(0)
}

/// CPUs as the table shows them: whole numbers without a fraction.
fn cpus(c: f64) -> String {
    if c.fract() == 0.0 {
        format!("{c:.0}")
    } else {
        format!("{c:.2}")
    }
}

/// The text of `paddock node` (terminal-safe).
pub fn render_node(n: &NodeInfo) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "version:      {}{}",
        term_safe(&n.version),
        n.git_commit
            .as_deref()
            .map(|c| format!(" (commit {})", term_safe(c)))
            .unwrap_or_default()
    );
    let _ = writeln!(o, "kernel:       {}", term_safe(&n.kernel));
    let _ = writeln!(
        o,
        "cgroup:       {} (cgroup2 at {}), root {}",
        term_safe(&n.cgroup.mode),
        term_safe(&n.cgroup.mount),
        term_safe(&n.cgroup.root)
    );
    let _ = writeln!(
        o,
        "controllers:  {}",
        term_safe(&n.cgroup.controllers.join(" "))
    );
    let _ = writeln!(
        o,
        "draining:     {}",
        match (n.draining, n.draining_since_ms) {
            (false, _) => "no".to_owned(),
            (true, Some(ms)) => format!("YES (since {ms} ms after the epoch): creates are refused"),
            (true, None) => "YES: creates are refused".to_owned(),
        }
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<10} {:>12} {:>12} {:>12}",
        "", "CAPACITY", "RESERVED", "ALLOCATABLE"
    );
    let _ = writeln!(
        o,
        "{:<10} {:>12} {:>12} {:>12}",
        "cpus",
        cpus(n.capacity.cpus),
        cpus(n.reserved.cpus),
        cpus(n.allocatable.cpus)
    );
    let _ = writeln!(
        o,
        "{:<10} {:>12} {:>12} {:>12}",
        "memory",
        human_bytes(n.capacity.memory_bytes),
        human_bytes(n.reserved.memory_bytes),
        human_bytes(n.allocatable.memory_bytes)
    );
    let _ = writeln!(o);
    let m = &n.memory;
    let _ = writeln!(
        o,
        "memory committed: {}{}{}",
        human_bytes(m.committed_bytes),
        match (m.admission_limit_bytes, m.overcommit_ratio) {
            (Some(l), Some(r)) => format!(" of {} admitted (overcommit ratio {r})", human_bytes(l)),
            _ => " (memory is not admitted: no --overcommit-memory)".to_owned(),
        },
        if m.live_without_limit > 0 {
            format!("; {} live without memory_max", m.live_without_limit)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        o,
        "memory limit required: {}",
        if m.require_limit { "yes" } else { "no" }
    );
    let s = &n.sandboxes;
    let _ = writeln!(
        o,
        "sandboxes:    {} live: {} running ({} paused), {} stopping, {} quarantined; {} creating; {} stopped, {} failed",
        s.live, s.running, s.paused, s.stopping, s.quarantined, s.creating, s.stopped, s.failed
    );
    o
}

/// `paddock drain [--stop] [--grace D]`.
pub async fn drain(c: &Client, out: Out, stop: bool, grace: Option<&str>) -> Result<u8> {
    let mut body = serde_json::json!({ "stop": stop });
    if let Some(g) = grace {
        body["grace"] = g.into();
    }
    // With --stop the answer waits for every sandbox's stop, as `paddock stop` would: no
    // deadline then (the daemon bounds each stop by its grace period and kill timeout).
    let deadline = if stop { None } else { c.timeout() };
    let v = c
        .json_within(
            deadline,
            Method::POST,
            "/v1/node/drain",
            Some(serde_json::to_vec(&body)?),
        )
        .await?;
    let Some(r) = json_or_decode::<DrainReport>(out, v, "a DrainReport")? else {
        return Ok(0);
    };
    println!(
        "draining{}: creates are refused until `paddock undrain`; {} create(s) in flight finished first",
        if r.was_draining { " (already)" } else { "" },
        r.creates_in_flight
    );
    if stop {
        println!("stopped {} sandbox(es)", r.stopped);
    }
    for f in &r.failed {
        eprintln!(
            "paddock: stop of {} failed: {}",
            term_safe(f.id.as_str()),
            term_safe(&f.error)
        );
    }
    println!("{} live sandbox(es)", r.live);
    Ok(u8::from(!r.failed.is_empty()))
}

/// `paddock undrain`.
pub async fn undrain(c: &Client, out: Out) -> Result<u8> {
    let v = c.json(Method::POST, "/v1/node/undrain", None).await?;
    let Some(r) = json_or_decode::<UndrainReport>(out, v, "an UndrainReport")? else {
        return Ok(0);
    };
    println!(
        "{}creates are admitted",
        if r.was_draining {
            "undrained: "
        } else {
            "not draining: "
        }
    );
    Ok(0)
}
