//! The event stream's cursor against a real daemon: `seq`, `?since=`, `Last-Event-ID`,
//! the 410 of a cursor older than the ring, the replay→live switch under concurrent
//! lifecycles, and a cursor that survives a SIGKILL of the daemon.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// One item of an event stream.
#[derive(Debug, Clone, PartialEq)]
struct Item {
    event: String,
    /// The SSE `id:` (absent for `lagged`).
    id: Option<u64>,
    data: Value,
}

impl Item {
    fn seq(&self) -> u64 {
        let seq = self.data["seq"].as_u64().expect("an event with a seq");
        assert_eq!(self.id, Some(seq), "the SSE id is the seq: {self:?}");
        seq
    }
}

/// An open event stream: its items arrive on `rx` from a reader thread; dropping it closes
/// the connection and joins the thread.
struct Stream {
    rx: Receiver<Item>,
    conn: UnixStream,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// The answer to a `GET /v1/events…`: a stream (200) or a status with its JSON body.
enum Opened {
    Stream(Stream),
    Refused(u16, Value),
}

/// Reads one HTTP/1.1 chunk's payload (`None` at the last chunk or EOF).
fn chunk(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut size = String::new();
    if r.read_line(&mut size).ok()? == 0 {
        return None;
    }
    let n = usize::from_str_radix(size.trim(), 16).ok()?;
    if n == 0 {
        return None;
    }
    let mut buf = vec![0; n + 2];
    r.read_exact(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn open(socket: &Path, path: &str, headers: &[(&str, &str)]) -> Opened {
    let mut conn = UnixStream::connect(socket).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut head = String::new();
    loop {
        let mut l = String::new();
        assert!(r.read_line(&mut l).unwrap() > 0, "EOF in the head: {head}");
        if l == "\r\n" {
            break;
        }
        head.push_str(&l);
    }
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let lower = head.to_ascii_lowercase();
    if status != 200 {
        let body = if lower.contains("transfer-encoding: chunked") {
            let mut b = Vec::new();
            while let Some(c) = chunk(&mut r) {
                b.extend(c);
            }
            b
        } else {
            let len: usize = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            let mut b = vec![0; len];
            r.read_exact(&mut b).unwrap();
            b
        };
        return Opened::Refused(status, serde_json::from_slice(&body).unwrap());
    }
    assert!(lower.contains("content-type: text/event-stream"), "{head}");
    assert!(lower.contains("transfer-encoding: chunked"), "{head}");
    let (tx, rx) = channel();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        while let Some(c) = chunk(&mut r) {
            text.push_str(&String::from_utf8(c).unwrap());
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::new(), None, String::new());
                for l in block.lines() {
                    if let Some(v) = l.strip_prefix("event: ") {
                        event = v.to_owned();
                    } else if let Some(v) = l.strip_prefix("id: ") {
                        id = Some(v.parse().unwrap());
                    } else if let Some(v) = l.strip_prefix("data: ") {
                        data = v.to_owned();
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                let item = Item {
                    event,
                    id,
                    data: serde_json::from_str(&data).unwrap(),
                };
                if tx.send(item).is_err() {
                    return;
                }
            }
        }
    });
    Opened::Stream(Stream {
        rx,
        conn,
        reader: Some(reader),
    })
}

fn stream(socket: &Path, path: &str, headers: &[(&str, &str)]) -> Stream {
    match open(socket, path, headers) {
        Opened::Stream(s) => s,
        Opened::Refused(st, b) => panic!("GET {path}: {st} {b}"),
    }
}

fn refused(socket: &Path, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    match open(socket, path, headers) {
        Opened::Stream(_) => panic!("GET {path} {headers:?}: a stream, not a refusal"),
        Opened::Refused(st, b) => (st, b),
    }
}

impl Stream {
    /// The next item, within `timeout`.
    fn next(&self, timeout: Duration) -> Item {
        match self.rx.recv_timeout(timeout) {
            Ok(i) => i,
            Err(RecvTimeoutError::Timeout) => panic!("no event within {timeout:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("the stream ended"),
        }
    }

    /// Items until (and with) the first one `stop` accepts, within 60 s in all.
    fn until(&self, mut stop: impl FnMut(&Item) -> bool) -> Vec<Item> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let i = match self.rx.recv_timeout(left) {
                Ok(i) => i,
                Err(e) => panic!("{e:?} before the awaited event; got {out:#?}"),
            };
            let done = stop(&i);
            out.push(i);
            if done {
                return out;
            }
        }
    }

    /// The next `n` items, within 60 s in all.
    fn take(&self, n: usize) -> Vec<Item> {
        let mut left = n;
        self.until(|_| {
            left -= 1;
            left == 0
        })
    }

    /// Items until every one of `ids` has had both its `main_exited` and then its
    /// `stopped` (the last event of a lifecycle: a `stopped` before its `main_exited` fails
    /// the test): after them, these sandboxes emit nothing more.
    fn settled(&self, ids: &[&str]) -> Vec<Item> {
        let mut want: std::collections::BTreeSet<(String, &str)> = ids
            .iter()
            .flat_map(|id| [(id.to_string(), "stopped"), (id.to_string(), "main_exited")])
            .collect();
        self.until(|i| {
            let id = i.data["id"].as_str().unwrap_or_default().to_owned();
            if i.event == "stopped" && ids.contains(&id.as_str()) {
                assert!(
                    !want.contains(&(id.clone(), "main_exited")),
                    "{id}: stopped before main_exited (seq {})",
                    i.seq()
                );
            }
            want.retain(|(w, e)| !(*w == id && *e == i.event));
            want.is_empty()
        })
    }

    /// Every item until the stream ends (the daemon died), within 60 s.
    fn rest(&self) -> Vec<Item> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(i) => out.push(i),
                Err(RecvTimeoutError::Disconnected) => return out,
                Err(RecvTimeoutError::Timeout) => panic!("the stream did not end"),
            }
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.conn.shutdown(std::net::Shutdown::Both);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn is(event: &str, id: &str) -> impl Fn(&Item) -> bool {
    move |i: &Item| i.event == event && i.data["id"] == id
}

/// Seqs strictly increasing by one from `after + 1` (no gap, no duplicate), every item an
/// event (no `lagged`).
fn assert_contiguous(items: &[Item], after: u64) {
    for (want, i) in (after + 1..).zip(items) {
        assert_ne!(i.event, "lagged", "{items:#?}");
        assert_eq!(i.seq(), want, "seq after {}: {items:#?}", want - 1);
    }
}

/// One lifecycle through the API: create (started), kill (stopped), delete.
fn lifecycle(w: &World, id: &str) {
    let r = w.http("POST", "/v1/sandboxes", Some(&spec(id, "sleep 300")));
    assert_eq!(r.status, 201, "{}", r.text());
    let r = w.http("POST", &format!("/v1/sandboxes/{id}/kill"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = w.http("DELETE", &format!("/v1/sandboxes/{id}"), None);
    assert_eq!(r.status, 204, "{}", r.text());
}

/// `since` replays exactly the events after it, in order, then continues live; so does
/// `Last-Event-ID`, `since` wins over it, the `id` filter applies to the replay, bad
/// cursors are a 400 and future ones a 422, each naming the cursor.
#[test]
fn since_replays_exactly_the_events_after_the_cursor() {
    let Some(w) = world("events_since_replays_exactly") else {
        return;
    };
    let _d = w.daemon(&[]);
    let live = stream(&w.socket, "/v1/events", &[]);
    for id in ["sr-1", "sr-2", "sr-3"] {
        lifecycle(&w, id);
    }
    let all = live.settled(&["sr-1", "sr-2", "sr-3"]);
    assert_contiguous(&all, 0);
    assert!(all.len() >= 9, "{all:#?}");
    let k = all.len() / 2;
    let cursor = all[k - 1].seq();

    let replay = stream(&w.socket, &format!("/v1/events?since={cursor}"), &[]);
    let got = replay.take(all.len() - k);
    assert_eq!(got, all[k..].to_vec());
    // From the start.
    let from0 = stream(&w.socket, "/v1/events?since=0", &[]);
    assert_eq!(from0.take(all.len()), all);
    // Last-Event-ID, as an EventSource sends it; `since` wins over it.
    let lei = stream(
        &w.socket,
        "/v1/events",
        &[("Last-Event-ID", &cursor.to_string())],
    );
    assert_eq!(lei.take(all.len() - k), all[k..].to_vec());
    let both = stream(
        &w.socket,
        &format!("/v1/events?since={}", cursor + 1),
        &[("Last-Event-ID", "0")],
    );
    assert_eq!(both.take(all.len() - k - 1), all[k + 1..].to_vec());
    // The id filter applies to the replay.
    let only = stream(&w.socket, "/v1/events?since=0&id=sr-2", &[]);
    let sr2: Vec<Item> = all
        .iter()
        .filter(|i| i.data["id"] == "sr-2")
        .cloned()
        .collect();
    assert_eq!(only.take(sr2.len()), sr2);

    // The CLI resumes the same way, each line starting with the seq.
    let out = w.cli_ok(&["events", "--since", &cursor.to_string(), "--count", "2"]);
    let seqs: Vec<&str> = out.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        seqs,
        [(cursor + 1).to_string(), (cursor + 2).to_string()],
        "{out}"
    );
    assert!(
        out.lines()
            .next()
            .unwrap()
            .contains(all[k].data["id"].as_str().unwrap()),
        "{out}"
    );

    // After the replay, each stream continues live: the next event is the next seq (no
    // duplicate of a replayed one, nothing skipped).
    let last = all.last().unwrap().seq();
    let r = w.http("POST", "/v1/sandboxes", Some(&spec("sr-4", "sleep 300")));
    assert_eq!(r.status, 201, "{}", r.text());
    for s in [&live, &replay, &from0, &lei, &both] {
        let next = s.next(Duration::from_secs(10));
        assert_eq!(next.seq(), last + 1, "{next:?}");
        assert_eq!(next.data["id"], "sr-4");
    }
    // The filtered stream sees sr-4 only if it is sr-2: nothing arrives for it; its next
    // sr-2 event would be live. Close it.
    drop(only);

    // Bad cursors: 400 naming them; future ones 422; no stream.
    let (st, b) = refused(&w.socket, "/v1/events?since=-1", &[]);
    assert_eq!(st, 400);
    assert!(b["error"].as_str().unwrap().contains("since"), "{b}");
    let future = last + 1000;
    let (st, b) = refused(&w.socket, &format!("/v1/events?since={future}"), &[]);
    assert_eq!(st, 422);
    let e = b["error"].as_str().unwrap();
    assert!(e.contains("since") && e.contains("past the newest"), "{e}");
    let (st, b) = refused(&w.socket, "/v1/events", &[("Last-Event-ID", "abc")]);
    assert_eq!(st, 400);
    assert!(
        b["error"].as_str().unwrap().contains("Last-Event-ID"),
        "{b}"
    );
    let (st, _) = refused(
        &w.socket,
        "/v1/events",
        &[("Last-Event-ID", &future.to_string())],
    );
    assert_eq!(st, 422);

    let r = w.http("POST", "/v1/sandboxes/sr-4/kill", None);
    assert_eq!(r.status, 200, "{}", r.text());
    drop((live, replay, from0, lei, both));
    w.assert_no_leaks();
}

/// Streams opened with a cursor while lifecycles run concurrently switch from the replay
/// to live with no gap and no duplicate: every one of them sees each seq after its cursor
/// exactly once, in order, up to the marker event that follows the churn.
#[test]
fn replay_to_live_switch_has_no_gap_or_duplicate_under_churn() {
    let Some(w) = world("events_replay_live_switch") else {
        return;
    };
    let _d = w.daemon(&[]);
    let watcher = stream(&w.socket, "/v1/events", &[]);
    let w = std::sync::Arc::new(w);
    let churn: Vec<_> = (0..4)
        .map(|t| {
            let w = w.clone();
            std::thread::spawn(move || {
                for i in 0..6 {
                    lifecycle(&w, &format!("ch-{t}-{i}"));
                }
            })
        })
        .collect();
    // Open streams at cursors a little behind the newest event, while the churn commits.
    let mut streams = Vec::new();
    let mut seen = 0;
    for _ in 0..12 {
        let i = watcher.next(Duration::from_secs(30));
        seen = i.seq();
        let cursor = seen.saturating_sub(3);
        streams.push((
            cursor,
            stream(&w.socket, &format!("/v1/events?since={cursor}"), &[]),
        ));
    }
    for c in churn {
        c.join().unwrap();
    }
    let r = w.http("POST", "/v1/sandboxes", Some(&spec("marker", "sleep 300")));
    assert_eq!(r.status, 201, "{}", r.text());
    let marker = |i: &Item| i.event == "started" && i.data["id"] == "marker";
    for (cursor, s) in &streams {
        let got = s.until(marker);
        assert_contiguous(&got, *cursor);
    }
    let tail = watcher.until(marker);
    assert_contiguous(&tail, seen);
    let r = w.http("POST", "/v1/sandboxes/marker/kill", None);
    assert_eq!(r.status, 200, "{}", r.text());
    drop(streams);
    drop(watcher);
    w.assert_no_leaks();
}

/// With a small ring, a cursor older than it is a 410 that names the oldest seq kept and
/// the newest, and says what to do; a cursor still inside it replays. Metrics count the
/// committed events.
#[test]
fn a_cursor_older_than_the_ring_is_gone() {
    let Some(w) = world("events_cursor_gone") else {
        return;
    };
    let _d = w.daemon(&["--event-retention", "4"]);
    let live = stream(&w.socket, "/v1/events", &[]);
    for id in ["g-1", "g-2", "g-3"] {
        lifecycle(&w, id);
    }
    let all = live.settled(&["g-1", "g-2", "g-3"]);
    assert_contiguous(&all, 0);
    let last = all.last().unwrap().seq();
    assert!(last > 8, "{all:#?}");
    let oldest = last - 3;
    for headers in [vec![], vec![("Last-Event-ID", "1")]] {
        let path = if headers.is_empty() {
            "/v1/events?since=0"
        } else {
            "/v1/events"
        };
        let (st, b) = refused(&w.socket, path, &headers);
        assert_eq!(st, 410, "{b}");
        assert_eq!(b["oldest_seq"], oldest, "{b}");
        assert_eq!(b["last_seq"], last, "{b}");
        let e = b["error"].as_str().unwrap();
        assert!(
            e.contains(&format!("oldest kept is {oldest}"))
                && e.contains("re-list the sandboxes")
                && e.contains(&format!("since={last}")),
            "{e}"
        );
    }
    // One before the oldest kept is fine: the ring has everything after it.
    let s = stream(&w.socket, &format!("/v1/events?since={}", oldest - 1), &[]);
    assert_eq!(s.take(4), all[all.len() - 4..].to_vec());
    let (st, _) = refused(&w.socket, &format!("/v1/events?since={}", oldest - 2), &[]);
    assert_eq!(st, 410);
    // The CLI says so too, and fails.
    let o = w.cli(&["events", "--since", "0"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no longer kept") && err.contains("re-list"),
        "{err}"
    );
    let m = w.http("GET", "/metrics", None).text();
    assert_eq!(
        metric(&m, "paddock_events_committed_total"),
        Some(last as f64),
        "{m}"
    );
    assert_eq!(metric(&m, "paddock_events_lost_total"), Some(0.0), "{m}");
    drop((live, s));
    w.assert_no_leaks();
}

/// The cursor survives a SIGKILL of the daemon: a client reads events up to seq N while
/// lifecycles run, the daemon is killed, a new one starts on the same state directory and
/// more lifecycles run; then `since=N` yields every committed event after N exactly once,
/// in order (seq strictly increasing by one), and no seq the client saw was given to a
/// different event.
#[test]
fn a_cursor_survives_sigkill_of_the_daemon() {
    let Some(w) = world("events_cursor_survives_sigkill") else {
        return;
    };
    let mut a = w.daemon(&[]);
    let live = stream(&w.socket, "/v1/events", &[]);
    lifecycle(&w, "k-1");
    // A sandbox that lives across the crash (the next daemon adopts it).
    let r = w.http("POST", "/v1/sandboxes", Some(&spec("k-keep", "sleep 300")));
    assert_eq!(r.status, 201, "{}", r.text());
    let before = live.until(is("started", "k-keep"));
    assert_contiguous(&before, 0);
    // Lifecycles in flight when the daemon dies: their events may or may not be
    // committed; whatever was committed must come back, numbered as it was served.
    let w = std::sync::Arc::new(w);
    let churn: Vec<_> = (0..2)
        .map(|t| {
            let w = w.clone();
            std::thread::spawn(move || {
                for i in 0.. {
                    let id = format!("k-{t}-{i}");
                    let r = try_http_unix(
                        &w.socket,
                        "POST",
                        "/v1/sandboxes",
                        Some(&spec(&id, "sleep 300")),
                        &[],
                    );
                    if !matches!(r, Ok(ref r) if r.status == 201) {
                        return;
                    }
                    let path = format!("/v1/sandboxes/{id}/kill");
                    if try_http_unix(&w.socket, "POST", &path, None, &[]).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    // Let the churn produce a few events, then kill the daemon mid-flight.
    let mid =
        live.until(|i| i.event == "stopped" && i.data["id"].as_str().unwrap().starts_with("k-1-"));
    a.sigkill();
    for c in churn {
        c.join().unwrap();
    }
    let after_kill = live.rest();
    let seen: Vec<Item> = before.into_iter().chain(mid).chain(after_kill).collect();
    assert_contiguous(&seen, 0);
    let n = seen.last().unwrap().seq();

    // The next daemon on the same state directory, more lifecycles.
    let b = w.daemon(&["--stop-sandboxes-on-exit"]);
    let r = w.http("POST", "/v1/sandboxes/k-keep/kill", None);
    assert_eq!(r.status, 200, "{}", r.text());
    lifecycle(&w, "k-2");
    let r = w.http(
        "POST",
        "/v1/sandboxes",
        Some(&spec("k-marker", "sleep 300")),
    );
    assert_eq!(r.status, 201, "{}", r.text());

    let resumed = stream(&w.socket, &format!("/v1/events?since={n}"), &[]);
    let got = resumed.until(|i| i.event == "started" && i.data["id"] == "k-marker");
    assert_contiguous(&got, n);
    // Everything the second daemon did is there, after N.
    let kinds: Vec<(String, String)> = got
        .iter()
        .map(|i| (i.data["id"].as_str().unwrap().to_owned(), i.event.clone()))
        .collect();
    for want in [
        ("k-keep", "adopted"),
        ("k-keep", "stopped"),
        ("k-2", "started"),
        ("k-2", "stopped"),
    ] {
        assert!(
            kinds.contains(&(want.0.to_owned(), want.1.to_owned())),
            "no {want:?} after {n}: {kinds:?}"
        );
    }
    // No seq the client saw was reused: the ring holds exactly what it was served.
    let from0 = stream(&w.socket, "/v1/events?since=0", &[]);
    let ring: BTreeMap<u64, Item> = from0
        .until(|i| i.event == "started" && i.data["id"] == "k-marker")
        .into_iter()
        .map(|i| (i.seq(), i))
        .collect();
    for i in &seen {
        assert_eq!(ring.get(&i.seq()), Some(i), "seq {} changed", i.seq());
    }
    drop((resumed, from0));
    let mut b = b;
    assert_eq!(
        b.sigterm(Duration::from_secs(60)),
        Some(0),
        "{}",
        b.log_text()
    );
    w.assert_no_leaks();
}
