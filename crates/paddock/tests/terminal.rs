//! `paddock top` and `paddock events` as a person sees them: run in a real terminal
//! (a tmux pane of a tmux server of the test's own, 120×30), driven with `send-keys`, read
//! with `capture-pane`. `top`: its rows aligned under its header and sorted by ID,
//! refreshed without a key (sandboxes come and go), the layout following a resize (no
//! line wider than the pane, columns dropped and back), `q` and Ctrl-C quitting with status
//! 0 and the terminal as it was (modes, cursor, the screen before), also on SIGTERM and
//! when the daemon goes away. `events`: a sandbox's lines in order as they happen, and
//! Ctrl-C ending it.
//!
//! Needs tmux (Debian package `tmux`); without it the tests skip, which CI
//! (PADDOCK_TEST_REQUIRE=1) counts as a failure. Every wait polls the screen with a
//! deadline and fails with the last screen.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// How long a screen may take to show what is expected (generous: a loaded 2-core CI).
const DEADLINE: Duration = Duration::from_secs(15);

/// `top`'s columns, as its help and docs name them; ID and STATE are left-aligned, the
/// numbers right-aligned.
const TOP_COLUMNS: [(&str, bool); 8] = [
    ("ID", true),
    ("STATE", true),
    ("CPU%", false),
    ("MEMORY", false),
    ("PEAK", false),
    ("PIDS", false),
    ("PROCS", false),
    ("PSI c/m/io", false),
];

/// A tmux server of this test's own (its socket in the test's temp dir, no config file),
/// with one session `t` of one pane; the server is killed on drop, which hangs up the
/// pane's processes.
struct Tmux {
    socket: String,
    dir: PathBuf,
}

impl Tmux {
    /// Starts the server with a `width`×`height` session running `script` (with sh) in
    /// its pane, which stays when the script ends (`remain-on-exit`). `None` (a skip) when
    /// tmux is not installed.
    fn start(test: &str, dir: &Path, script: &str) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            paddock_testutil::skip(test, "tmux is not installed (Debian package tmux)");
            return None;
        }
        static N: AtomicUsize = AtomicUsize::new(0);
        let t = Tmux {
            socket: format!(
                "paddock-{test}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ),
            dir: dir.to_owned(),
        };
        let path = dir.join(format!("{}.sh", t.socket));
        std::fs::write(&path, script).unwrap();
        let cmd = format!("/bin/sh {}", path.display());
        t.run(&[
            "start-server",
            ";",
            "set-option",
            "-g",
            "remain-on-exit",
            "on",
            ";",
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "120",
            "-y",
            "30",
            &cmd,
        ]);
        Some(t)
    }

    fn command(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "-f", "/dev/null"])
            // The socket goes in the test's temp dir, removed with it.
            .env("TMUX_TMPDIR", &self.dir)
            .env("TERM", "xterm-256color")
            .env_remove("TMUX");
        c
    }

    /// Runs a tmux command; panics if it fails.
    fn run(&self, args: &[&str]) -> String {
        let o: Output = self.command().args(args).output().expect("run tmux");
        assert!(
            o.status.success(),
            "tmux {args:?}: {:?}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The pane's screen, a line per row (wrapped lines as tmux shows them: split).
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "t"])
    }

    /// The pane's screen with wrapped lines joined (a log's lines whole).
    fn joined(&self) -> String {
        self.run(&["capture-pane", "-p", "-J", "-t", "t"])
    }

    /// A tmux format of the pane (`#{pane_dead}`...).
    fn format(&self, f: &str) -> String {
        self.run(&["display-message", "-p", "-t", "t", f])
            .trim()
            .to_owned()
    }

    /// Polls `screen` until `f` holds (returns its value); panics with the last screen
    /// after [`DEADLINE`].
    fn wait<T>(
        &self,
        what: &str,
        screen: impl Fn(&Tmux) -> String,
        f: impl Fn(&str) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let s = screen(self);
            if let Some(v) = f(&s) {
                return v;
            }
            if Instant::now() > deadline {
                panic!("timed out ({DEADLINE:?}) waiting for {what}; the screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the pane's script has ended.
    fn wait_dead(&self, what: &str) {
        self.wait(
            what,
            |t| format!("{}\n{}", t.format("#{pane_dead}"), t.screen()),
            |s| s.starts_with("1\n").then_some(()),
        );
    }

    fn keys(&self, keys: &[&str]) {
        let mut a = vec!["send-keys", "-t", "t"];
        a.extend(keys);
        self.run(&a);
    }

    fn resize(&self, w: u16, h: u16) {
        self.run(&[
            "resize-window",
            "-t",
            "t",
            "-x",
            &w.to_string(),
            "-y",
            &h.to_string(),
        ]);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
    }
}

/// A script for the pane: records the terminal's modes, prints a marker line, runs
/// paddock with `args` against `w`'s daemon, prints its exit status, records the modes
/// again, and waits for a line (so that the terminal can be looked at while its shell
/// still runs: tmux hides a dead pane's cursor). sh ignores Ctrl-C (`trap :`), so paddock
/// alone gets it, and the lines after it run.
fn script(w: &World, args: &str) -> String {
    let d = w.tmp.path().display();
    format!(
        "trap : INT\nstty -g > '{d}/stty.before'\necho 'before paddock'\n'{BIN}' --socket '{}' {args}\necho \"paddock exited with status $?\"\nstty -g > '{d}/stty.after'\nread line\n",
        w.socket.display()
    )
}

fn create(w: &World, id: &str) {
    let r = w.http("POST", "/v1/sandboxes", Some(&spec(id, "exec sleep 300")));
    assert_eq!(r.status, 201, "create {id}: {}", r.text());
}

fn remove(w: &World, id: &str) {
    let r = w.http("POST", &format!("/v1/sandboxes/{id}/kill"), None);
    assert_eq!(r.status, 200, "kill {id}: {}", r.text());
    let r = w.http("DELETE", &format!("/v1/sandboxes/{id}"), None);
    assert!(r.status / 100 == 2, "rm {id}: {} {}", r.status, r.text());
}

/// `top`'s table on a screen: the header's columns (name, start, end, left-aligned) and
/// the rows, each checked to have a cell under every column, aligned (left-aligned cells
/// start where their header does, right-aligned ones end where it ends). `Err` says why
/// the screen is not (yet) such a table.
#[derive(Debug)]
struct Table {
    title: String,
    columns: Vec<&'static str>,
    /// The first cell of each row.
    ids: Vec<String>,
    /// The line after the rows (`... and N more`), if any.
    more: Option<String>,
}

fn table(screen: &str) -> Result<Table, String> {
    let lines: Vec<&str> = screen.lines().collect();
    let h = lines
        .iter()
        .position(|l| l.starts_with("ID "))
        .ok_or("no header")?;
    let title = if h > 0 { lines[h - 1] } else { "" }.to_owned();
    let header = lines[h];
    let mut spans = Vec::new();
    let mut from = 0;
    for (name, left) in TOP_COLUMNS {
        match header[from..].find(name) {
            Some(s) => {
                spans.push((name, from + s, from + s + name.len(), left));
                from += s + name.len();
            }
            None => break,
        }
    }
    if header[from..].trim() != "" {
        return Err(format!("header with more than the columns: {header:?}"));
    }
    let mut ids = Vec::new();
    let mut more = None;
    for l in &lines[h + 1..] {
        if l.trim().is_empty() {
            break;
        }
        if l.starts_with("... and ") {
            more = Some(l.to_string());
            continue;
        }
        // Cells are single words here (IDs, states and numbers without spaces).
        let mut cells = Vec::new();
        let mut start = None;
        for (n, ch) in l.char_indices().chain([(l.len(), ' ')]) {
            match (ch == ' ', start) {
                (false, None) => start = Some(n),
                (true, Some(s)) => {
                    cells.push((s, n));
                    start = None;
                }
                _ => {}
            }
        }
        if cells.len() != spans.len() {
            return Err(format!(
                "{} cells under {} columns:\n{header}\n{l}",
                cells.len(),
                spans.len()
            ));
        }
        for ((s, e), (name, hs, he, left)) in cells.iter().zip(&spans) {
            let ok = if *left { s == hs } else { e == he };
            if !ok {
                return Err(format!("{name} not aligned:\n{header}\n{l}"));
            }
        }
        ids.push(l[cells[0].0..cells[0].1].to_owned());
    }
    Ok(Table {
        title,
        columns: spans.iter().map(|s| s.0).collect(),
        ids,
        more,
    })
}

/// Waits for a screen whose table satisfies `f`.
fn wait_table(t: &Tmux, what: &str, f: impl Fn(&Table) -> bool) -> Table {
    t.wait(what, Tmux::screen, |s| table(s).ok().filter(|t| f(t)))
}

/// The terminal is as it was before paddock ran: the same modes (`stty -g`), the cursor
/// shown, the normal screen with what was on it (the marker) and not the table (which
/// was on the alternate screen), and the script's line with paddock's exit status.
/// Returns the normal screen with its history.
fn assert_restored(t: &Tmux, w: &World, status: &str) -> String {
    let after = w.tmp.path().join("stty.after");
    // With the history: the screen may have scrolled.
    let screen = t.wait(
        "paddock to exit",
        |t| t.run(&["capture-pane", "-p", "-S", "-", "-t", "t"]),
        // The modes' line written whole (the file exists once the shell opens it).
        |s| {
            let modes = std::fs::read_to_string(&after).unwrap_or_default();
            (s.contains("paddock exited with status") && modes.ends_with('\n'))
                .then(|| s.to_owned())
        },
    );
    assert!(
        screen.contains(&format!("paddock exited with status {status}\n")),
        "want status {status}:\n{screen}"
    );
    assert!(screen.contains("before paddock"), "{screen}");
    assert!(!screen.contains("PSI c/m/io"), "{screen}");
    assert_eq!(
        t.format("#{alternate_on}/#{cursor_flag}"),
        "0/1",
        "{screen}"
    );
    let read = |n: &str| std::fs::read_to_string(w.tmp.path().join(n)).unwrap();
    assert_eq!(read("stty.before"), read("stty.after"), "{screen}");
    std::fs::remove_file(after).unwrap();
    // The script's `read`: it ends.
    t.keys(&["Enter"]);
    t.wait_dead("the script to end");
    screen
}

#[test]
fn top_in_a_terminal() {
    let test = "terminal_top";
    let Some(w) = world(test) else { return };
    let mut d = w.daemon(&[]);
    // Created out of order: the table lists them by ID.
    for id in ["web-2", "db-1", "cache-3"] {
        create(&w, id);
    }
    let Some(t) = Tmux::start(test, w.tmp.path(), &script(&w, "top --interval 200ms")) else {
        return;
    };
    let started = Instant::now();
    let tb = wait_table(&t, "the three sandboxes, sorted", |tb| {
        tb.ids == ["cache-3", "db-1", "web-2"]
    });
    assert_eq!(tb.columns, TOP_COLUMNS.map(|c| c.0), "{tb:?}");
    assert_eq!(
        tb.title, "paddock top: 3 sandboxes, every 200ms; q quits",
        "{tb:?}"
    );
    assert_eq!(t.format("#{alternate_on}/#{cursor_flag}"), "1/0");

    // Come and go, with no key pressed: an ID longer than the ID column's 24 characters
    // (the column widens, the row stays aligned), then one stopped and removed.
    let long = "a-sandbox-with-a-long-id-0123";
    create(&w, long);
    wait_table(&t, "the long ID's row, first and aligned", |tb| {
        tb.ids == [long, "cache-3", "db-1", "web-2"]
    });
    remove(&w, "db-1");
    wait_table(&t, "db-1 gone", |tb| tb.ids == [long, "cache-3", "web-2"]);

    // Narrower: the pressure, peak, pids and processes columns go, nothing wraps; then
    // memory, with the long ID cut to the room left.
    t.resize(60, 30);
    wait_table(&t, "the 60-column layout", |tb| {
        tb.columns == ["ID", "STATE", "CPU%", "MEMORY"] && tb.ids.len() == 3
    });
    t.resize(40, 30);
    let tb = wait_table(&t, "the 40-column layout", |tb| {
        tb.columns == ["ID", "STATE", "CPU%"] && tb.ids.len() == 3
    });
    assert!(tb.ids[0].ends_with("..."), "{tb:?}");
    // Wider again: every column back.
    t.resize(120, 30);
    wait_table(&t, "the 120-column layout", |tb| {
        tb.columns.len() == TOP_COLUMNS.len() && tb.ids.len() == 3
    });
    // Lower than the table: as many rows as fit, and how many more there are.
    t.resize(120, 4);
    // From the top line: nothing scrolled (a newline after the bottom line would).
    let screen = t.wait("the 4-line layout", Tmux::screen, |s| {
        let tb = table(s).ok()?;
        (s.lines().count() == 4 && tb.more.is_some() && s.starts_with("paddock top: "))
            .then(|| s.to_owned())
    });
    let tb = table(&screen).unwrap();
    assert_eq!(tb.ids, [long], "{screen}");
    assert_eq!(tb.more.as_deref(), Some("... and 2 more"), "{screen}");
    t.resize(120, 30);
    wait_table(&t, "every row back", |tb| tb.ids.len() == 3);

    // q quits: status 0, the terminal as it was.
    t.keys(&["q"]);
    assert_restored(&t, &w, "0");

    // Ctrl-C too.
    t.run(&["respawn-pane", "-t", "t"]);
    wait_table(&t, "the table again", |tb| tb.ids.len() == 3);
    t.keys(&["C-c"]);
    assert_restored(&t, &w, "0");

    // SIGTERM: the terminal given back, status 143.
    t.run(&["respawn-pane", "-t", "t"]);
    wait_table(&t, "the table again", |tb| tb.ids.len() == 3);
    let sh: i32 = t.format("#{pane_pid}").parse().unwrap();
    let top = wait_for(
        DEADLINE,
        "paddock top, the child of the pane's shell",
        || {
            let c = std::fs::read_to_string(format!("/proc/{sh}/task/{sh}/children")).ok()?;
            c.split_whitespace().next()?.parse::<i32>().ok()
        },
    );
    // SAFETY: kill(2) of the pane's paddock top, a process of this test.
    assert_eq!(unsafe { libc::kill(top, libc::SIGTERM) }, 0);
    assert_restored(&t, &w, "143");

    // The daemon going away ends top with its error, and the terminal given back.
    t.run(&["respawn-pane", "-t", "t"]);
    wait_table(&t, "the table again", |tb| tb.ids.len() == 3);
    for id in [long, "cache-3", "web-2"] {
        remove(&w, id);
    }
    wait_table(&t, "an empty table", |tb| {
        tb.ids.is_empty() && tb.title.contains(": 0 sandboxes")
    });
    w.assert_no_leaks();
    d.sigkill();
    let screen = assert_restored(&t, &w, "125");
    assert!(
        screen.contains("paddock: cannot connect to the paddock daemon"),
        "{screen}"
    );
    eprintln!("{test}: {:?} in the terminal", started.elapsed());
}

/// Ctrl-Z suspends `top` as a shell's job: the terminal is given back first (the shell's
/// modes, the normal screen, the cursor), the job stops; `fg` brings the table back, and
/// `q` still quits with the terminal as it was. (bash with job control, `set -m`.)
#[test]
fn top_suspends_on_ctrl_z() {
    let test = "terminal_top_ctrl_z";
    let Some(w) = world(test) else { return };
    let _d = w.daemon(&[]);
    create(&w, "z-1");
    let dir = w.tmp.path().display().to_string();
    let job = format!(
        "set -m\ntrap : INT\nstty -g > '{dir}/stty.before'\necho 'before paddock'\n'{BIN}' --socket '{}' top --interval 200ms\necho \"paddock stopped with status $?\"\nstty -g > '{dir}/stty.suspended'\nread line\nfg\necho \"paddock exited with status $?\"\nstty -g > '{dir}/stty.after'\nread line\n",
        w.socket.display()
    );
    std::fs::write(w.tmp.path().join("job.bash"), job).unwrap();
    let Some(t) = Tmux::start(
        test,
        w.tmp.path(),
        &format!("exec bash --norc --noprofile '{dir}/job.bash'\n"),
    ) else {
        return;
    };
    wait_table(&t, "the table with z-1", |tb| tb.ids == ["z-1"]);
    t.keys(&["C-z"]);
    // SIGSTOP (19) stopped it: the shell reports 128 + 19, with the terminal given back.
    let suspended = w.tmp.path().join("stty.suspended");
    let screen = t.wait("the job to stop", Tmux::screen, |s| {
        let modes = std::fs::read_to_string(&suspended).unwrap_or_default();
        (s.contains("paddock stopped with status") && modes.ends_with('\n')).then(|| s.to_owned())
    });
    assert!(
        screen.contains("paddock stopped with status 147"),
        "{screen}"
    );
    assert!(screen.contains("before paddock"), "{screen}");
    assert_eq!(
        t.format("#{alternate_on}/#{cursor_flag}"),
        "0/1",
        "{screen}"
    );
    let read = |n: &str| std::fs::read_to_string(w.tmp.path().join(n)).unwrap();
    assert_eq!(read("stty.before"), read("stty.suspended"), "{screen}");
    // `fg`: the table again, refreshed.
    t.keys(&["Enter"]);
    wait_table(&t, "the table back after fg", |tb| tb.ids == ["z-1"]);
    assert_eq!(t.format("#{alternate_on}"), "1");
    t.keys(&["q"]);
    assert_restored(&t, &w, "0");
    remove(&w, "z-1");
    w.assert_no_leaks();
}

/// An event line on the screen: seq, ID, type.
fn event_lines(screen: &str) -> Vec<(u64, String, String)> {
    screen
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let seq = f.next()?.parse().ok()?;
            let id = f.next()?.to_owned();
            let _lifecycle = f.next()?;
            Some((seq, id, f.next()?.to_owned()))
        })
        .collect()
}

/// Waits until the event lines (of the screen with wrapped lines joined), as (ID, type),
/// satisfy `f`; their seqs must increase strictly down the screen.
fn wait_events(t: &Tmux, what: &str, f: impl Fn(&[(&str, &str)]) -> bool) {
    t.wait(what, Tmux::joined, |s| {
        let ev = event_lines(s);
        let got: Vec<(&str, &str)> = ev
            .iter()
            .map(|(_, i, ty)| (i.as_str(), ty.as_str()))
            .collect();
        (f(&got) && ev.windows(2).all(|p| p[0].0 < p[1].0)).then_some(())
    });
}

/// Whether `got` is a requested stop of `id` after its start: `started`, `stopping`,
/// `stopped` in this order, and `main_exited` after `stopping` (the main process's exit,
/// from the SIGTERM, is seen by a task of its own: before or after `stopped`, as
/// tests/events.rs says).
fn started_and_stopped(got: &[(&str, &str)], id: &str) -> bool {
    let types: Vec<&str> = got.iter().filter(|e| e.0 == id).map(|e| e.1).collect();
    matches!(
        types[..],
        ["started", "stopping", "main_exited", "stopped"]
            | ["started", "stopping", "stopped", "main_exited"]
    )
}

#[test]
fn events_in_a_terminal() {
    let test = "terminal_events";
    let Some(w) = world(test) else { return };
    let _d = w.daemon(&[]);
    // From the first event (none yet): what happens before the stream is open shows too,
    // so nothing below races the connection.
    let Some(t) = Tmux::start(test, w.tmp.path(), &script(&w, "events --since 0")) else {
        return;
    };
    t.wait("the marker", Tmux::screen, |s| {
        s.contains("before paddock").then_some(())
    });
    create(&w, "job-a");
    wait_events(&t, "job-a started", |got| got == [("job-a", "started")]);
    let r = w.http("POST", "/v1/sandboxes/job-a/stop", None);
    assert_eq!(r.status, 200, "{}", r.text());
    wait_events(&t, "job-a's stop", |got| {
        got.len() == 4 && started_and_stopped(got, "job-a")
    });
    create(&w, "job-b");
    wait_events(&t, "job-b started after job-a's stop", |got| {
        got.len() == 5 && started_and_stopped(&got[..4], "job-a") && got[4] == ("job-b", "started")
    });
    // Ctrl-C ends it: killed by SIGINT (the shell's 130), the terminal as it was.
    t.keys(&["C-c"]);
    assert_restored(&t, &w, "130");
    remove(&w, "job-b");
    let r = w.http("DELETE", "/v1/sandboxes/job-a", None);
    assert!(r.status / 100 == 2, "{}", r.text());
    w.assert_no_leaks();
}
