//! `paddock top`: live CPU, memory and processes per sandbox.
//!
//! On a terminal it is a full-screen view: the alternate screen, the cursor hidden, keys
//! read without echo; `q` (or Ctrl-C) quits with status 0, and the terminal is given back
//! as it was, also when the daemon goes away (an error) or on SIGTERM or SIGHUP; Ctrl-Z
//! gives it back before the job stops, and takes it again on `fg`. The table
//! follows the terminal's size (SIGWINCH redraws at once): columns are dropped from the
//! right, then IDs cut, and no line is longer than the terminal is wide, nor are there
//! more lines than it is high. Anything else (`--once`, `--json`, a pipe) prints tables.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Result;
use hyper::Method;
use paddock_supervisor::{SandboxInfo, SandboxStats};
use serde_json::Value;

use super::Out;
use super::render::{TopRow, fit, opt_bytes, psi_cell, safe_json, term_safe};
use crate::client::{Client, enc};

/// The CPU counters of the last refresh, per `id@lifecycle`: the CPU% is the difference.
#[derive(Default)]
struct Sampler {
    prev: HashMap<String, (u64, Instant)>,
}

impl Sampler {
    /// The live sandboxes (not stopped, failed or quarantined) with their usage, sorted by
    /// ID (byte order), then lifecycle, as `paddock ps` lists them.
    async fn sample(&mut self, c: &Client) -> Result<Vec<TopRow>> {
        let mut list: Vec<SandboxInfo> =
            serde_json::from_value(c.json(Method::GET, "/v1/sandboxes", None).await?)?;
        list.sort_by(|a, b| (a.id.as_str(), a.lifecycle).cmp(&(b.id.as_str(), b.lifecycle)));
        let mut rows: Vec<TopRow> = Vec::new();
        for i in list.into_iter().filter(|i| !i.state.is_terminal()) {
            let path = format!(
                "/v1/sandboxes/{}/stats?lifecycle={}",
                enc(i.id.as_str()),
                i.lifecycle
            );
            // Gone since the list was read: not shown.
            let Ok(v) = c.json(Method::GET, &path, None).await else {
                continue;
            };
            let Ok(s) = serde_json::from_value::<SandboxStats>(v) else {
                continue;
            };
            let key = format!("{}@{}", i.id, i.lifecycle);
            let now = Instant::now();
            let cpu_pct = match (s.cpu_usage_usec, self.prev.get(&key)) {
                (Some(u), Some((pu, pt))) => {
                    let dt = now.duration_since(*pt).as_secs_f64();
                    (dt > 0.0).then(|| (u.saturating_sub(*pu)) as f64 / 1e6 / dt * 100.0)
                }
                _ => None,
            };
            if let Some(u) = s.cpu_usage_usec {
                self.prev.insert(key, (u, now));
            }
            rows.push((i, s, cpu_pct));
        }
        Ok(rows)
    }
}

/// `paddock top`: full-screen on a terminal (see the module's documentation), else a table
/// (or a JSON array with `--json`) per refresh, or once with `--once`.
pub async fn top(c: &Client, out: Out, once: bool, interval: Duration) -> Result<u8> {
    if !once && !out.json && rustix::termios::isatty(std::io::stdout()) {
        return full_screen(c, interval).await;
    }
    let mut sampler = Sampler::default();
    loop {
        let rows = sampler.sample(c).await?;
        if out.json {
            let v: Vec<Value> = rows
                .iter()
                .map(|(i, s, cpu)| {
                    serde_json::json!({"id": i.id, "lifecycle": i.lifecycle, "state": i.state, "paused": i.paused, "cpu_percent": cpu, "stats": s})
                })
                .collect();
            println!("{}", safe_json(&v, false)?);
        } else {
            let mut o = std::io::stdout().lock();
            if !once {
                // Home and clear, as before each table on a terminal.
                write!(o, "\x1b[H\x1b[2J")?;
            }
            o.write_all(render_top(&rows).as_bytes())?;
            o.flush()?;
        }
        if once {
            return Ok(0);
        }
        tokio::time::sleep(interval).await;
    }
}

/// The terminal as `paddock top` found it, given back on drop: the alternate screen left,
/// the cursor shown, stdin's modes restored.
struct Screen {
    /// stdin's modes before (`None` when stdin is not a terminal: no keys then).
    saved: Option<rustix::termios::Termios>,
}

impl Screen {
    fn enter() -> Result<Self> {
        let stdin = std::io::stdin();
        let saved = if rustix::termios::isatty(&stdin) {
            Some(rustix::termios::tcgetattr(&stdin)?)
        } else {
            None
        };
        let s = Screen { saved };
        s.take()?;
        Ok(s)
    }

    /// Puts the terminal in `top`'s modes: keys one by one, not echoed (Ctrl-C and Ctrl-Z
    /// stay signals, ISIG, handled by `full_screen`; VMIN = VTIME = 0: a read returns what
    /// is there, never blocks), the alternate screen (what was on the terminal comes back
    /// on exit), the cursor hidden.
    fn take(&self) -> Result<()> {
        use rustix::termios::{LocalModes, OptionalActions, SpecialCodeIndex};
        if let Some(saved) = &self.saved {
            let mut t = saved.clone();
            t.local_modes.remove(LocalModes::ICANON | LocalModes::ECHO);
            t.special_codes[SpecialCodeIndex::VMIN] = 0;
            t.special_codes[SpecialCodeIndex::VTIME] = 0;
            rustix::termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &t)?;
        }
        let mut o = std::io::stdout().lock();
        o.write_all(b"\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J")?;
        o.flush()?;
        Ok(())
    }

    /// Gives the terminal back as it was found (on exit, and while suspended by Ctrl-Z).
    fn give_back(&self) {
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(b"\x1b[?25h\x1b[?1049l");
        let _ = o.flush();
        if let Some(t) = &self.saved {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                t,
            );
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.give_back();
    }
}

/// The terminal's size (columns, rows); 80×24 when it cannot be read.
fn term_size() -> (usize, usize) {
    match rustix::termios::tcgetwinsize(std::io::stdout()) {
        Ok(w) if w.ws_col > 0 && w.ws_row > 0 => (w.ws_col.into(), w.ws_row.into()),
        _ => (80, 24),
    }
}

/// Reads the keys there are (stdin is in non-canonical mode with VMIN = 0); `true` when
/// one of them is `q`. Waits until stdin is readable; never returns when there is no
/// terminal to read.
async fn quit_key(keys: Option<&tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>) -> Result<bool> {
    let Some(fd) = keys else {
        return std::future::pending().await;
    };
    let mut g = fd.readable().await?;
    let mut buf = [0u8; 64];
    // Everything there is (readiness is edge-triggered): a read of 0 is "no more".
    loop {
        match rustix::io::read(fd.get_ref(), &mut buf) {
            Ok(0) | Err(rustix::io::Errno::AGAIN) => break,
            Ok(n) if buf[..n].iter().any(|b| matches!(b, b'q' | b'Q')) => return Ok(true),
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            // The terminal is gone (EIO after a hang-up): nobody to show anything to.
            Err(rustix::io::Errno::IO) => return Ok(true),
            Err(e) => return Err(e.into()),
        }
    }
    g.clear_ready();
    Ok(false)
}

async fn full_screen(c: &Client, interval: Duration) -> Result<u8> {
    use tokio::signal::unix::{SignalKind, signal};
    // The handlers first: a signal between entering the screen and the loop would end the
    // process with the terminal in its modes.
    let mut winch = signal(SignalKind::window_change())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut tstp = signal(SignalKind::from_raw(rustix::process::Signal::TSTP.as_raw()))?;
    let screen = Screen::enter()?;
    let keys = match screen.saved {
        Some(_) => {
            // A descriptor of our own for stdin's terminal, registered with the reactor.
            let fd = rustix::io::dup(std::io::stdin())?;
            // SAFETY: `fd` is an `OwnedFd` moved into the `AsyncFd`, which owns it (open,
            // the same description) until it is dropped.
            let r = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            };
            Some(r.map_err(|e| e.into_parts().1)?)
        }
        None => None,
    };
    let mut sampler = Sampler::default();
    let mut rows: Option<Vec<TopRow>> = None;
    let mut due = tokio::time::Instant::now();
    loop {
        let refresh = async {
            tokio::time::sleep_until(due).await;
            sampler.sample(c).await
        };
        tokio::select! {
            r = refresh => {
                rows = Some(r?);
                due = tokio::time::Instant::now() + interval;
            }
            _ = winch.recv() => {}
            q = quit_key(keys.as_ref()) => {
                if q? {
                    return Ok(0);
                }
            }
            _ = int.recv() => return Ok(0),
            _ = term.recv() => return Ok(128 + 15),
            _ = hup.recv() => return Ok(128 + 1),
            _ = tstp.recv() => {
                // Ctrl-Z: the terminal back to the shell, then stop (SIGSTOP, which cannot
                // be caught: the shell sees the job stopped); on `fg` (SIGCONT) the kill
                // returns, and the screen is taken again and redrawn below.
                screen.give_back();
                let _ = rustix::process::kill_process(
                    rustix::process::getpid(),
                    rustix::process::Signal::STOP,
                );
                screen.take()?;
            }
        }
        if let Some(rows) = &rows {
            let (w, h) = term_size();
            let mut o = std::io::stdout().lock();
            o.write_all(draw(&screen_lines(rows, w, h, interval), h).as_bytes())?;
            o.flush()?;
        }
    }
}

/// The bytes that put `lines` on a screen `height` lines high from its top-left corner,
/// each line cleared first, and the rest of the screen cleared. No newline after the
/// bottom line: that would scroll the screen.
fn draw(lines: &[String], height: usize) -> String {
    let mut s = String::from("\x1b[H");
    for (n, l) in lines.iter().enumerate() {
        if n > 0 {
            s.push_str("\r\n");
        }
        s.push_str("\x1b[2K");
        s.push_str(l);
    }
    if lines.len() < height {
        // Below the last line, from the start of the next one (clearing from a full
        // line's end would erase its last character).
        s.push_str("\r\n\x1b[J");
    }
    s
}

#[derive(Clone, Copy, PartialEq)]
enum Align {
    Left,
    Right,
}

/// The columns of `top`, left to right: header, width, alignment. ID's width is the
/// widest ID's (at least 24); the others' are fixed.
const COLUMNS: [(&str, usize, Align); 8] = [
    ("ID", 24, Align::Left),
    ("STATE", 12, Align::Left),
    ("CPU%", 7, Align::Right),
    ("MEMORY", 11, Align::Right),
    ("PEAK", 11, Align::Right),
    ("PIDS", 6, Align::Right),
    ("PROCS", 6, Align::Right),
    ("PSI c/m/io", 11, Align::Right),
];

/// Which columns go first when the terminal is too narrow (indexes into [`COLUMNS`]):
/// pressure, peak memory, processes and pids while the IDs fit whole; then, with the ID
/// column narrowed to [`MIN_ID_WIDTH`], memory, CPU% and state. ID stays.
const DROP_FIRST: [usize; 4] = [7, 4, 6, 5];
const DROP_THEN: [usize; 3] = [3, 2, 1];

/// The narrowest the ID column is cut to (IDs with `...`) while other columns are shown.
const MIN_ID_WIDTH: usize = 12;

fn cells(i: &SandboxInfo, s: &SandboxStats, cpu: &Option<f64>) -> [String; 8] {
    [
        term_safe(i.id.as_str()).into_owned(),
        if i.paused {
            "paused".to_string()
        } else {
            i.state.to_string()
        },
        cpu.map(|c| format!("{c:.1}")).unwrap_or_else(|| "-".into()),
        opt_bytes(s.memory_current),
        opt_bytes(s.memory_peak),
        s.pids_current
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into()),
        s.processes.to_string(),
        psi_cell(&s.pressure),
    ]
}

/// The table of `top` in at most `width` characters per line: the header, then a line per
/// row. Columns are dropped whole (see [`DROP_FIRST`]) until the lines fit, the ID column
/// narrowed (IDs cut with `...`) to the room left, and lines cut only when even the ID
/// column alone does not fit. Every
/// cell is aligned under its header: left for ID and STATE, right for the numbers. A cell
/// wider than its column (a CPU% of 12345.6) widens the column, never shifts the row.
pub fn top_table(rows: &[TopRow], width: usize) -> Vec<String> {
    let cells: Vec<[String; 8]> = rows.iter().map(|(i, s, c)| cells(i, s, c)).collect();
    let mut widths: Vec<usize> = COLUMNS
        .iter()
        .enumerate()
        .map(|(n, (h, w, _))| {
            cells
                .iter()
                .map(|c| c[n].chars().count())
                .chain([*w, h.chars().count()])
                .max()
                .unwrap_or(*w)
        })
        .collect();
    let mut shown = [true; 8];
    // The width of the columns other than ID, with their separators.
    let others =
        |shown: &[bool; 8]| -> usize { (1..8).filter(|n| shown[*n]).map(|n| widths[n] + 1).sum() };
    let natural = widths[0];
    for n in DROP_FIRST {
        if others(&shown) + natural <= width {
            break;
        }
        shown[n] = false;
    }
    for n in DROP_THEN {
        if others(&shown) + natural.min(MIN_ID_WIDTH) <= width {
            break;
        }
        shown[n] = false;
    }
    widths[0] = natural.min(width.saturating_sub(others(&shown)));
    let line = |texts: [&str; 8]| -> String {
        let mut l = String::new();
        for n in (0..8).filter(|n| shown[*n]) {
            if !l.is_empty() {
                l.push(' ');
            }
            let w = widths[n];
            let t = if n == 0 {
                fit(texts[n], w)
            } else {
                texts[n].to_owned()
            };
            let _ = match COLUMNS[n].2 {
                Align::Left => write!(l, "{t:<w$}"),
                Align::Right => write!(l, "{t:>w$}"),
            };
        }
        cut(l.trim_end(), width)
    };
    let mut out = vec![line(COLUMNS.map(|c| c.0))];
    for c in &cells {
        out.push(line([
            &c[0], &c[1], &c[2], &c[3], &c[4], &c[5], &c[6], &c[7],
        ]));
    }
    out
}

/// `s` cut to at most `width` characters.
fn cut(s: &str, width: usize) -> String {
    s.chars().take(width).collect()
}

/// The table of `paddock top --once` (and of `top` into a pipe): every column, with its
/// newlines. Terminal-safe, one line per row after the header.
pub fn render_top(rows: &[TopRow]) -> String {
    let mut o = String::new();
    for l in top_table(rows, usize::MAX) {
        o.push_str(&l);
        o.push('\n');
    }
    o
}

/// The full screen of `top` for a `width` × `height` terminal: a title line (how many
/// sandboxes, the interval, `q` to quit), the table, and `... and N more` in its last line
/// when the rows do not all fit. No line is wider than `width`, and there are at most
/// `height` lines.
pub fn screen_lines(
    rows: &[TopRow],
    width: usize,
    height: usize,
    interval: Duration,
) -> Vec<String> {
    let title = format!(
        "paddock top: {} sandbox{}, every {}; q quits",
        rows.len(),
        if rows.len() == 1 { "" } else { "es" },
        humantime(interval)
    );
    let mut lines = vec![cut(&title, width)];
    lines.extend(top_table(rows, width));
    if lines.len() > height {
        // The title, the header, as many rows as fit, and the line that says how many
        // more there are.
        let keep = height.saturating_sub(1);
        let more = lines.len() - keep;
        lines.truncate(keep);
        if height > 0 {
            lines.push(cut(&format!("... and {more} more"), width));
        }
    }
    lines
}

fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, cpu: Option<f64>) -> TopRow {
        let id = paddock_supervisor::SandboxId::new(id).unwrap();
        let info: SandboxInfo = serde_json::from_value(serde_json::json!({
            "id": id, "lifecycle": paddock_supervisor::LifecycleId::fresh(), "state": "running",
            "paused": false, "current": true, "pid": 42, "cgroup_path": "/x",
            "main_exit": null, "stop_report": null, "stuck": [], "error": null,
            "created_at_ms": 0, "spec": paddock_supervisor::SandboxSpec::new(id, "x", Vec::<String>::new()),
            "restart_count": 0
        }))
        .unwrap();
        let stats: SandboxStats = serde_json::from_value(serde_json::json!({
            "cpu_usage_usec": 1, "cpu_user_usec": null, "cpu_system_usec": null,
            "cpu_nr_throttled": null, "memory_current": 123456, "memory_peak": 2345678,
            "memory_oom_kill": null, "memory_high_events": null,
            "memory_max_events": null, "pids_current": 3, "io_read_bytes": null,
            "io_write_bytes": null, "processes": 3
        }))
        .unwrap();
        (info, stats, cpu)
    }

    /// Each cell sits under its header: left-aligned ones start where the header does,
    /// right-aligned ones end where it ends.
    fn assert_aligned(lines: &[String]) {
        let header = &lines[0];
        let spans: Vec<(usize, usize, Align)> = COLUMNS
            .iter()
            .filter_map(|(h, _, a)| header.find(h).map(|s| (s, s + h.len(), *a)))
            .collect();
        for l in &lines[1..] {
            let mut tokens = Vec::new();
            let mut start = None;
            for (n, ch) in l.char_indices().chain([(l.len(), ' ')]) {
                match (ch == ' ', start) {
                    (false, None) => start = Some(n),
                    (true, Some(s)) => {
                        tokens.push((s, n));
                        start = None;
                    }
                    _ => {}
                }
            }
            assert_eq!(tokens.len(), spans.len(), "{header}\n{l}");
            for ((s, e), (hs, he, a)) in tokens.iter().zip(&spans) {
                match a {
                    Align::Left => assert_eq!(s, hs, "{header}\n{l}"),
                    Align::Right => assert_eq!(e, he, "{header}\n{l}"),
                }
            }
        }
    }

    #[test]
    fn columns_stay_aligned_with_long_ids_and_big_numbers() {
        let rows = vec![
            row("web", Some(1.5)),
            row("a-sandbox-id-longer-than-twenty-four", Some(12345.6)),
        ];
        let lines = top_table(&rows, usize::MAX);
        assert!(lines[2].starts_with("a-sandbox-id-longer-than-twenty-four "));
        assert_aligned(&lines);
    }

    #[test]
    fn narrow_terminals_drop_columns_then_cut() {
        let rows = vec![row("web", None), row("db-0123456789abcdef", Some(3.0))];
        let full = top_table(&rows, usize::MAX);
        assert_eq!(full[0].chars().count(), 95, "{}", full[0]);
        for w in [200, 95, 94, 80, 60, 45, 40, 20, 1, 0] {
            let lines = top_table(&rows, w);
            assert_eq!(lines.len(), 3);
            assert!(
                lines.iter().all(|l| l.chars().count() <= w),
                "{w}: {lines:#?}"
            );
            if w >= 13 {
                assert_aligned(&lines);
            }
        }
        let cols = |w: usize| -> Vec<&str> {
            let h = &top_table(&rows, w)[0];
            COLUMNS
                .iter()
                .map(|c| c.0)
                .filter(|c| h.contains(c))
                .collect()
        };
        assert_eq!(
            cols(94),
            ["ID", "STATE", "CPU%", "MEMORY", "PEAK", "PIDS", "PROCS"]
        );
        assert_eq!(cols(80), ["ID", "STATE", "CPU%", "MEMORY", "PIDS", "PROCS"]);
        assert_eq!(cols(60), ["ID", "STATE", "CPU%", "MEMORY"]);
        assert_eq!(cols(40), ["ID", "STATE", "CPU%"]);
        assert_eq!(cols(30), ["ID", "STATE"]);
        assert_eq!(cols(20), ["ID"]);
        let l = top_table(&rows, 60);
        assert!(l[2].starts_with("db-0123456789abcdef "), "{l:#?}");
        let l = top_table(&rows, 30);
        assert!(l[2].starts_with("db-0123456789a... running"), "{l:#?}");
        let l = top_table(&rows, 10);
        assert_eq!(l[2], "db-0123...");
    }

    #[test]
    fn drawing_never_scrolls() {
        let lines = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(draw(&lines, 3), "\x1b[H\x1b[2Ka\r\n\x1b[2Kb\r\n\x1b[J");
        assert_eq!(draw(&lines, 2), "\x1b[H\x1b[2Ka\r\n\x1b[2Kb");
    }

    #[test]
    fn the_screen_fits_the_terminal() {
        let rows: Vec<TopRow> = (0..10).map(|n| row(&format!("s{n:02}"), None)).collect();
        let iv = Duration::from_millis(1500);
        let l = screen_lines(&rows, 120, 30, iv);
        assert_eq!(l.len(), 12);
        assert_eq!(l[0], "paddock top: 10 sandboxes, every 1500ms; q quits");
        let l = screen_lines(&rows, 50, 6, iv);
        assert_eq!(l.len(), 6, "{l:#?}");
        assert!(l[4].starts_with("s02 "), "{l:#?}");
        assert_eq!(l[5], "... and 7 more");
        assert!(l.iter().all(|l| l.chars().count() <= 50));
        assert!(screen_lines(&rows, 10, 0, iv).is_empty());
        assert_eq!(
            screen_lines(&rows[..1], 80, 3, Duration::from_secs(1))[0],
            "paddock top: 1 sandbox, every 1s; q quits"
        );
    }
}
