//! The event stream (server-sent events): committed events from the store's ring, then
//! live, resumable by seq (`?since=`, `Last-Event-ID`).
//!
//! **No gap, no duplicate.** A stream subscribes to the store's live channel *before* it
//! reads the ring. Every event sent on that channel was committed before it was sent, so an
//! event is either in the ring read (committed before the read) or received live (sent
//! after the subscription), or both; the stream keeps a cursor (the last seq it passed) and
//! drops whatever is not past it. A stream that falls behind the live channel (`Lagged`)
//! reads the ring again from its cursor the same way; only events the ring has already
//! dropped are reported missing (`lagged`).

use std::collections::VecDeque;

use axum::http::HeaderMap;

use super::*;
use crate::store::{Committed, EventPage, Store};

/// Events read from the ring at a time.
const PAGE: usize = 256;

/// `?id=` and `?since=` of the event stream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    id: Option<String>,
    since: Option<u64>,
}

/// The body of a 410 from `/v1/events`: the cursor is older than the events kept.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventsGone {
    /// What happened and what to do.
    pub error: String,
    /// The oldest seq still kept (events after `oldest_seq - 1` can be replayed); absent
    /// when none is kept.
    pub oldest_seq: Option<u64>,
    /// The seq of the newest committed event: after re-listing the sandboxes, follow with
    /// `since=<last_seq>`.
    pub last_seq: u64,
}

/// The `Last-Event-ID` header as a seq, if sent.
fn last_event_id(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    let Some(v) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let Ok(s) = v.to_str() else {
        return Err(ApiError::bad(
            "Last-Event-ID header: not visible ASCII; expected an event seq (a non-negative integer, the `id:` of an event of this stream)",
        ));
    };
    // An empty value is how a browser's EventSource says "no ID yet".
    if s.is_empty() {
        return Ok(None);
    }
    // Digits beyond u64 (the document's pattern allows 20) are past any seq: a 422 later.
    if s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Some(s.parse::<u64>().unwrap_or(u64::MAX)));
    }
    s.parse::<u64>().map(Some).map_err(|_| {
        let shown: String = s.chars().take(40).collect();
        ApiError::bad(format!(
            "Last-Event-ID header: {shown:?} is not an event seq (a non-negative integer, the `id:` of an event of this stream)"
        ))
    })
}

/// Reads the ring after `since` on a blocking thread.
async fn read_page(store: &Arc<Store>, since: u64) -> anyhow::Result<EventPage> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.events_after(since, PAGE))
        .await
        .map_err(|e| anyhow::anyhow!("read events: the reading thread failed: {e}"))?
}

/// Lifecycle events, as server-sent events.
///
/// Each has `event:` the type, `id:` the event's seq, and `data:` a SequencedEvent (a
/// `lagged` event, which has no `id:`, says how many events this stream could not deliver
/// because the ring had dropped them). Without `since` (or `Last-Event-ID`) the stream
/// starts with the next event committed; with it, it first replays the kept events with a
/// greater seq, then continues live, with no gap and no duplicate. `since` wins over
/// `Last-Event-ID`. Only committed events are served (they survive a crash of the daemon),
/// numbered across restarts: resuming after a restart of the daemon misses nothing that
/// is still kept. The stream ends when the daemon shuts down.
#[utoipa::path(
    get,
    path = "/v1/events",
    operation_id = "events",
    params(
        ("id" = Option<SandboxId>, Query, description = "Only this sandbox's events (the cursor still counts every event)"),
        ("since" = Option<u64>, Query, description = "Replay the kept events with a greater seq first, then follow live (0: from the first event of the state directory)", minimum = 0),
        ("Last-Event-ID" = Option<String>, Header, description = "As `since` (what an EventSource sends when it reconnects); `since` wins if both are given (a malformed one is a 400 even then)", pattern = "^[0-9]{0,20}$", nullable = false),
    ),
    responses(
        (status = 200, description = "The event stream", body = crate::openapi::EventStreamItem, content_type = "text/event-stream"),
        (status = 400, description = "An invalid ID, an unknown query parameter, or a `since` or `Last-Event-ID` that is not a seq (a non-negative integer)", body = ErrorBody),
        (status = 410, description = "The events right after the cursor are no longer kept (`--event-retention`): re-list the sandboxes, then follow with `since=<last_seq>`", body = EventsGone),
        (status = 422, description = "A `since` or `Last-Event-ID` past the newest event of this daemon's state directory (a cursor of another state directory); the message names the newest", body = ErrorBody),
        (status = 503, description = "The event ring could not be read (the message says why)", body = ErrorBody),
    ),
)]
pub(super) async fn events(
    State(st): State<Shared>,
    headers: HeaderMap,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Response> {
    let Query(q) = q.map_err(|e| ApiError::from(e).into_response())?;
    let filter =
        q.id.as_deref()
            .map(parse_id)
            .transpose()
            .map_err(IntoResponse::into_response)?;
    // Checked even when `since` wins: a malformed header is a 400 either way.
    let header = last_event_id(&headers).map_err(IntoResponse::into_response)?;
    let since = q.since.or(header);
    let store = st.store.clone();
    // Subscribe before reading anything (see the module docs).
    let rx = store.subscribe();
    let mut buf = VecDeque::new();
    let (cursor, catching_up) = match since {
        None => (store.last_seq(), false),
        Some(since) => {
            let page = read_page(&store, since).await.map_err(|e| {
                ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    message: format!("{e:#}"),
                }
                .into_response()
            })?;
            check_cursor(since, &page)?;
            let more = page.events.len() >= PAGE;
            buf.extend(page.events);
            (since, more)
        }
    };
    let follow = Follow {
        rx,
        store,
        cursor,
        buf,
        catching_up,
        filter,
        shutdown: st.shutdown.clone(),
        missed: st.metrics.daemon.store.clone(),
    };
    let stream = futures_util::stream::unfold(follow, |mut f| async move {
        let item = f.next().await?;
        Some((Ok(item), f))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// A 422 for a cursor past the newest event (a seq the document allows, which this state
/// directory has not reached), a 410 for one older than the ring.
#[allow(clippy::result_large_err)]
fn check_cursor(since: u64, page: &EventPage) -> Result<(), Response> {
    if since > page.last {
        return Err(ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: format!(
                "since: {since} is past the newest event (seq {}) of this daemon's state directory; a cursor from another state directory? Follow with since={} (or without since)",
                page.last, page.last
            ),
        }
        .into_response());
    }
    // The first seq that a replay from `since` needs, and whether the ring still has it.
    let needed = since + 1;
    let kept = match page.oldest {
        Some(oldest) => oldest <= needed,
        None => since >= page.last,
    };
    if kept {
        return Ok(());
    }
    let body = EventsGone {
        error: format!(
            "since: the events after seq {since} are no longer kept (the daemon keeps the newest --event-retention events; the oldest kept is {}): re-list the sandboxes (GET /v1/sandboxes), then follow with since={}",
            page.oldest
                .map_or_else(|| "none".to_owned(), |o| o.to_string()),
            page.last
        ),
        oldest_seq: page.oldest,
        last_seq: page.last,
    };
    Err((StatusCode::GONE, axum::Json(body)).into_response())
}

/// One event stream's state.
struct Follow {
    rx: broadcast::Receiver<Arc<Committed>>,
    store: Arc<Store>,
    /// The seq of the last event passed (sent, or filtered out); only later ones are sent.
    cursor: u64,
    /// Events read from the ring, not yet passed.
    buf: VecDeque<Arc<Committed>>,
    /// Whether the ring must be read again from `cursor` before the live channel.
    catching_up: bool,
    filter: Option<SandboxId>,
    shutdown: watch::Receiver<bool>,
    missed: Arc<crate::store::StoreCounters>,
}

impl Follow {
    /// The next server-sent event, or `None` when the stream ends.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if *self.shutdown.borrow() {
                return None;
            }
            if let Some(ev) = self.buf.pop_front() {
                if ev.seq <= self.cursor {
                    continue;
                }
                if ev.seq > self.cursor + 1 {
                    // The ring dropped these before this stream read them.
                    let missed = ev.seq - self.cursor - 1;
                    self.missed
                        .stream_missed
                        .fetch_add(missed, std::sync::atomic::Ordering::Relaxed);
                    self.cursor = ev.seq - 1;
                    self.buf.push_front(ev);
                    let data = serde_json::to_string(&Lagged { missed }).unwrap_or_default();
                    return Some(SseEvent::default().event("lagged").data(data));
                }
                self.cursor = ev.seq;
                if self.filter.as_ref().is_some_and(|f| *f != ev.id) {
                    continue;
                }
                return Some(
                    SseEvent::default()
                        .event(ev.kind.as_str())
                        .id(ev.seq.to_string())
                        .data(ev.json.as_str()),
                );
            }
            if self.catching_up {
                let page = tokio::select! {
                    r = read_page(&self.store, self.cursor) => r,
                    _ = self.shutdown.changed() => return None,
                };
                let page = match page {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), cursor = self.cursor, "event stream ended: the ring could not be read (the client can resume with Last-Event-ID)");
                        return None;
                    }
                };
                self.catching_up = page.events.len() >= PAGE;
                self.buf.extend(page.events);
                continue;
            }
            let r = tokio::select! {
                r = self.rx.recv() => r,
                _ = self.shutdown.changed() => return None,
            };
            match r {
                Ok(ev) => self.buf.push_back(ev),
                // What was missed is in the ring (or reported missing by the seq gap).
                Err(broadcast::error::RecvError::Lagged(_)) => self.catching_up = true,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreCounters;
    use paddock_supervisor::{Event, EventKind};

    fn event(i: usize) -> Event {
        Event {
            id: SandboxId::new(format!("s{}", i % 3)).unwrap(),
            lifecycle: LifecycleId::fresh(),
            at_ms: 1,
            kind: EventKind::Paused,
        }
    }

    /// A follower subscribed at `cursor` on `store`, with no shutdown.
    fn follow(store: &Arc<Store>, cursor: u64, filter: Option<&str>) -> Follow {
        let (tx, shutdown) = watch::channel(false);
        std::mem::forget(tx);
        Follow {
            rx: store.subscribe(),
            store: store.clone(),
            cursor,
            buf: VecDeque::new(),
            catching_up: false,
            filter: filter.map(|f| SandboxId::new(f).unwrap()),
            shutdown,
            missed: Arc::new(StoreCounters::default()),
        }
    }

    /// The SSE text of the next `n` items.
    async fn take(f: &mut Follow, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..n {
            let ev = tokio::time::timeout(Duration::from_secs(10), f.next())
                .await
                .expect("an item within 10 s")
                .expect("the stream goes on");
            let mut s = String::new();
            use std::fmt::Write as _;
            let _ = write!(s, "{ev:?}");
            out.push(s);
        }
        out
    }

    fn seq_of(item: &str) -> Option<u64> {
        let at = item.find("\\\"seq\\\":")? + 8;
        item[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    }

    /// A live follower that falls far behind the live channel (past its capacity) reads
    /// what it missed from the ring: every event, in order, no `lagged`; with a ring too
    /// small to hold them, it reports exactly how many it could not deliver, then goes on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lagging_follower_recovers_from_the_ring() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(Store::open(&dir.path().join("s.redb"), Arc::default(), 10_000).unwrap());
        let mut f = follow(&store, store.last_seq(), None);
        let mut filtered = follow(&store, store.last_seq(), Some("s1"));
        for i in 0..3000 {
            store.push_event(&event(i));
        }
        store.flush().await.unwrap();
        let items = take(&mut f, 3000).await;
        for (i, it) in items.iter().enumerate() {
            assert!(!it.contains("lagged"), "{it}");
            assert_eq!(seq_of(it), Some(i as u64 + 1), "{it}");
        }
        // The filter passes only its sandbox's events (every third), still all of them.
        let items = take(&mut filtered, 1000).await;
        for (i, it) in items.iter().enumerate() {
            assert_eq!(seq_of(it), Some(3 * i as u64 + 2), "{it}");
        }
        drop((f, filtered, store));

        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("s.redb"), Arc::default(), 100).unwrap());
        let mut f = follow(&store, 0, None);
        for i in 0..3000 {
            store.push_event(&event(i));
        }
        store.flush().await.unwrap();
        let items = take(&mut f, 101).await;
        assert!(
            items[0].contains("lagged") && items[0].contains("2900"),
            "{}",
            items[0]
        );
        assert_eq!(f.missed.stream_missed.load(Ordering::Relaxed), 2900);
        for (i, it) in items[1..].iter().enumerate() {
            assert_eq!(seq_of(it), Some(2901 + i as u64), "{it}");
        }
    }
}
