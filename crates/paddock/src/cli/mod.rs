//! The client commands: they talk to the daemon over its unix socket.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use http_body_util::BodyExt;
use hyper::Method;
use paddock_supervisor::{SandboxInfo, SandboxStats, StdioSpec, StdioTarget, StopReport};
use serde_json::Value;

use crate::client::{Client, DaemonError, enc};

pub mod jail;
pub mod limits;
pub mod net;
pub mod node;
mod render;
mod top;
pub use render::*;
pub use top::top;

/// Output options shared by the client commands.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    /// Print machine-readable JSON.
    pub json: bool,
}

fn lc_query(lifecycle: &Option<String>) -> String {
    query(&[("lifecycle", lifecycle.as_deref())])
}

/// `?k=v&…` of the pairs that have a value (URL-encoded); empty when none has.
fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let q: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", enc(v))))
        .collect();
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", safe_json(v, true)?);
    Ok(())
}

/// With `--json`, prints the daemon's answer `v` as it came and gives `None` (the command
/// is done); otherwise decodes it as the wire type `T` for the caller to render (`what`
/// names the type in the error, "a StopReport").
pub(crate) fn json_or_decode<T: serde::de::DeserializeOwned>(
    out: Out,
    v: Value,
    what: &str,
) -> Result<Option<T>> {
    if out.json {
        print_json(&v)?;
        return Ok(None);
    }
    serde_json::from_value(v)
        .with_context(|| format!("decode the daemon's answer ({what})"))
        .map(Some)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `paddock ps` (`ls`), with `labels` the `--label` selectors (every one must match).
pub async fn ps(c: &Client, out: Out, labels: &[String]) -> Result<u8> {
    let q: Vec<(&str, Option<&str>)> = labels.iter().map(|l| ("label", Some(l.as_str()))).collect();
    let path = format!("/v1/sandboxes{}", query(&q));
    let list: Vec<SandboxInfo> = serde_json::from_value(c.json(Method::GET, &path, None).await?)?;
    if out.json {
        print_json(&list)?;
        return Ok(0);
    }
    print!("{}", render_ps(&list, now_ms()));
    Ok(0)
}

/// `paddock inspect` (JSON); with `jail`, the jail's rendering ([`render_jail`]), or with
/// `--json` its spec and status.
pub async fn inspect(
    c: &Client,
    out: Out,
    id: &str,
    lifecycle: &Option<String>,
    jail: bool,
    network: bool,
) -> Result<u8> {
    let v = c
        .json(
            Method::GET,
            &format!("/v1/sandboxes/{}{}", enc(id), lc_query(lifecycle)),
            None,
        )
        .await?;
    if network {
        if out.json {
            print_json(
                &serde_json::json!({ "spec": v["spec"]["network"], "status": v["network"] }),
            )?;
        } else if let Some(info) = json_or_decode::<SandboxInfo>(out, v, "a SandboxInfo")? {
            print!("{}", net::render_network(&info));
        }
        return Ok(0);
    }
    if !jail {
        print_json(&v)?;
        return Ok(0);
    }
    if out.json {
        print_json(&serde_json::json!({ "spec": v["spec"]["jail"], "status": v["jail"] }))?;
        return Ok(0);
    }
    let info: SandboxInfo =
        serde_json::from_value(v).context("decode the daemon's answer (a SandboxInfo)")?;
    print!("{}", render_jail(&info));
    Ok(0)
}

/// How long a stop or kill of `id` may take to be answered: the client's deadline plus
/// what the daemon may spend before it answers — the grace period (`grace`, else the
/// sandbox's own) and the kill timeout, read from the sandbox. `None` when the client has
/// no deadline.
async fn stop_deadline(
    c: &Client,
    id: &str,
    lifecycle: &Option<String>,
    grace: Option<Duration>,
) -> Result<Option<Duration>> {
    let Some(base) = c.timeout() else {
        return Ok(None);
    };
    let path = format!("/v1/sandboxes/{}{}", enc(id), lc_query(lifecycle));
    let info = match c.json(Method::GET, &path, None).await {
        Ok(v) => v,
        // The stop itself answers this at once (an error, or a finished stop's report).
        Err(e) if e.downcast_ref::<DaemonError>().is_some() => return Ok(Some(base)),
        Err(e) => return Err(e),
    };
    let ms = |k: &str| Duration::from_millis(info["spec"]["stop"][k].as_u64().unwrap_or(0));
    let grace = grace.unwrap_or_else(|| ms("grace_period_ms"));
    Ok(Some(
        base.saturating_add(grace)
            .saturating_add(ms("kill_timeout_ms")),
    ))
}

/// `paddock stop` and `paddock kill`.
pub async fn stop(
    c: &Client,
    out: Out,
    id: &str,
    timeout: Option<&str>,
    kill: bool,
    lifecycle: &Option<String>,
) -> Result<u8> {
    let qs = query(&[("timeout", timeout), ("lifecycle", lifecycle.as_deref())]);
    let path = format!(
        "/v1/sandboxes/{}/{}{qs}",
        enc(id),
        if kill { "kill" } else { "stop" }
    );
    let grace = match (kill, timeout) {
        (true, _) => Some(Duration::ZERO),
        // A bad value is the daemon's 400 to give.
        (false, Some(t)) => paddock_supervisor::parse_duration(t).ok(),
        (false, None) => None,
    };
    let deadline = stop_deadline(c, id, lifecycle, grace).await?;
    let v = c.json_within(deadline, Method::POST, &path, None).await?;
    if let Some(r) = json_or_decode::<StopReport>(out, v, "a StopReport")? {
        print!("{}", render_report(id, &r));
    }
    Ok(0)
}

/// `paddock wait`: waits for the lifecycle to end; exits with its main process's shell exit
/// code (0 when it had none), 1 when it failed or is quarantined, 124 when `timeout` passed.
pub async fn wait(
    c: &Client,
    out: Out,
    id: &str,
    timeout: Option<&str>,
    lifecycle: &Option<String>,
) -> Result<u8> {
    // Checked here, for a clear error before anything is sent. Without --timeout the wait
    // has no deadline: waiting is what was asked for.
    let deadline = match timeout {
        Some(t) => c.timeout_plus(
            paddock_supervisor::parse_duration(t).with_context(|| format!("--timeout {t:?}"))?,
        ),
        None => None,
    };
    let qs = query(&[("lifecycle", lifecycle.as_deref()), ("timeout", timeout)]);
    let v = c
        .json_within(
            deadline,
            Method::GET,
            &format!("/v1/sandboxes/{}/wait{qs}", enc(id)),
            None,
        )
        .await?;
    let info: SandboxInfo = serde_json::from_value(v.clone())?;
    if out.json {
        print_json(&v)?;
    }
    use paddock_supervisor::State as S;
    let id = term_safe(id);
    let code = match info.state {
        S::Stopped => info
            .main_exit
            .map_or(0, |m| m.shell_code().clamp(0, 255) as u8),
        S::Failed | S::Quarantined => 1,
        S::Creating | S::Running | S::Stopping => {
            if !out.json {
                eprintln!(
                    "paddock: {id} is still {} after {}",
                    info.state,
                    timeout.unwrap_or("the wait")
                );
            }
            return Ok(124);
        }
    };
    if !out.json {
        match (&info.main_exit, info.state) {
            (_, S::Failed) => eprintln!(
                "paddock: {id} failed: {}",
                term_safe(info.error.as_deref().unwrap_or("unknown error"))
            ),
            (_, S::Quarantined) => eprintln!(
                "paddock: {id} is quarantined: {} process(es) could not be killed",
                info.stuck.len()
            ),
            (Some(m), _) => match (m.code, m.signal) {
                (Some(c), _) => println!("{id}: exited with code {c}"),
                (None, Some(sig)) => println!("{id}: killed by signal {sig}"),
                _ => println!("{id}: stopped"),
            },
            (None, _) => println!("{id}: stopped"),
        }
    }
    Ok(code)
}

/// `paddock pause` and `paddock resume`.
pub async fn pause(
    c: &Client,
    out: Out,
    id: &str,
    pause: bool,
    lifecycle: &Option<String>,
) -> Result<u8> {
    let path = format!(
        "/v1/sandboxes/{}/{}{}",
        enc(id),
        if pause { "pause" } else { "resume" },
        lc_query(lifecycle)
    );
    let v = c.json(Method::POST, &path, None).await?;
    if out.json {
        print_json(&v)?;
    } else {
        println!(
            "{}: {}",
            term_safe(id),
            if pause { "paused" } else { "resumed" }
        );
    }
    Ok(0)
}

/// `paddock deadline ID --extend D`.
pub async fn extend_deadline(c: &Client, out: Out, id: &str, extend: &str) -> Result<u8> {
    let path = format!("/v1/sandboxes/{}/deadline?extend={}", enc(id), enc(extend));
    let v = c.json(Method::POST, &path, None).await?;
    if out.json {
        print_json(&v)?;
    } else {
        let at = v
            .get("deadline_at_ms")
            .and_then(|d| d.as_u64())
            .unwrap_or(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let left = at.saturating_sub(now);
        println!(
            "{}: deadline in {:.1} s (at {} ms since the epoch)",
            term_safe(id),
            left as f64 / 1000.0,
            at
        );
    }
    Ok(0)
}

/// `paddock rm`.
pub async fn rm(c: &Client, out: Out, id: &str, force: bool) -> Result<u8> {
    if force {
        let deadline = stop_deadline(c, id, &None, Some(Duration::ZERO)).await?;
        match c
            .json_within(
                deadline,
                Method::POST,
                &format!("/v1/sandboxes/{}/kill", enc(id)),
                None,
            )
            .await
        {
            Ok(_) => {}
            Err(e)
                if e.downcast_ref::<DaemonError>()
                    .is_some_and(|d| d.status == hyper::StatusCode::CONFLICT) => {}
            Err(e) => return Err(e),
        }
    }
    c.call(Method::DELETE, &format!("/v1/sandboxes/{}", enc(id)), None)
        .await?;
    if out.json {
        print_json(&serde_json::json!({ "deleted": id }))?;
    } else {
        println!("{}", term_safe(id));
    }
    Ok(0)
}

/// `paddock stats`.
pub async fn stats(c: &Client, out: Out, id: &str, lifecycle: &Option<String>) -> Result<u8> {
    let v = c
        .json(
            Method::GET,
            &format!("/v1/sandboxes/{}/stats{}", enc(id), lc_query(lifecycle)),
            None,
        )
        .await?;
    let Some(s) = json_or_decode::<SandboxStats>(out, v, "a SandboxStats")? else {
        return Ok(0);
    };
    println!("processes:      {}", s.processes);
    println!(
        "pids.current:   {}",
        s.pids_current
            .map(|p| p.to_string())
            .unwrap_or_else(|| "n/a".into())
    );
    println!(
        "cpu:            {}",
        s.cpu_usage_usec
            .map(|u| format!("{:.3}s", u as f64 / 1e6))
            .unwrap_or_else(|| "n/a".into())
    );
    println!("memory.current: {}", opt_bytes(s.memory_current));
    println!("memory.peak:    {}", opt_bytes(s.memory_peak));
    print!("{}", render_pressure(&s.pressure));
    Ok(0)
}

/// `paddock logs`; with `--json` one object `{"id", "lifecycle", "log"}` (the lifecycle
/// asked for, or the current one, pinned before the log is read).
pub async fn logs(c: &Client, out: Out, id: &str, lifecycle: &Option<String>) -> Result<u8> {
    let lifecycle = match (out.json, lifecycle) {
        (true, None) => {
            let info = c
                .json(Method::GET, &format!("/v1/sandboxes/{}", enc(id)), None)
                .await?;
            info["lifecycle"].as_str().map(str::to_owned)
        }
        _ => lifecycle.clone(),
    };
    let b = c
        .call(
            Method::GET,
            &format!("/v1/sandboxes/{}/logs{}", enc(id), lc_query(&lifecycle)),
            None,
        )
        .await?;
    if out.json {
        print_json(&serde_json::json!({
            "id": id,
            "lifecycle": lifecycle,
            "log": String::from_utf8_lossy(&b),
        }))?;
    } else {
        std::io::stdout().write_all(&b)?;
    }
    Ok(0)
}

/// `paddock events`: follows the event stream (after `since`, if given) until the daemon
/// ends it (or `--count`).
pub async fn events(
    c: &Client,
    out: Out,
    id: Option<&str>,
    since: Option<u64>,
    count: Option<usize>,
) -> Result<u8> {
    let mut query = Vec::new();
    if let Some(id) = id {
        query.push(format!("id={}", enc(id)));
    }
    if let Some(since) = since {
        query.push(format!("since={since}"));
    }
    let path = if query.is_empty() {
        "/v1/events".to_owned()
    } else {
        format!("/v1/events?{}", query.join("&"))
    };
    let resp = c.send(Method::GET, &path, None).await?;
    if !resp.status().is_success() {
        let status = resp.status();
        let b = resp.into_body().collect().await?.to_bytes();
        let msg = serde_json::from_slice::<Value>(&b)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| status.to_string());
        anyhow::bail!(DaemonError {
            status,
            message: msg
        });
    }
    let mut body = resp.into_body();
    // Bytes, not text: a frame may end inside a character.
    let mut buf: Vec<u8> = Vec::new();
    let mut seen = 0;
    let stdout = std::io::stdout();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        buf.extend_from_slice(data);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = buf.drain(..end + 2).collect();
            let block = String::from_utf8_lossy(&block);
            let data: String = block
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect::<Vec<_>>()
                .join("\n");
            if data.is_empty() {
                continue;
            }
            let mut o = stdout.lock();
            o.write_all(render_event(&data, out.json).as_bytes())?;
            o.flush()?;
            seen += 1;
            if count.is_some_and(|n| seen >= n) {
                return Ok(0);
            }
        }
    }
    Ok(0)
}

/// `paddock run -d`: creates the sandbox through the daemon; output goes to its log.
pub async fn run_detached(
    c: &Client,
    out: Out,
    mut spec: paddock_supervisor::SandboxSpec,
) -> Result<u8> {
    spec.stdio = StdioSpec {
        stdin: StdioTarget::Null,
        stdout: StdioTarget::Log,
        stderr: StdioTarget::Log,
    };
    let body = serde_json::to_vec(&spec).context("encode spec")?;
    let v = c.json(Method::POST, "/v1/sandboxes", Some(body)).await?;
    if out.json {
        print_json(&v)?;
    } else {
        println!("{}", term_safe(v["id"].as_str().unwrap_or_default()));
    }
    Ok(0)
}
