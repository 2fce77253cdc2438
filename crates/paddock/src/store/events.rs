//! The event ring of the store: every lifecycle event the daemon serves, numbered and kept
//! in a bounded table of the same database (`events`: seq → the event's wire JSON), so a
//! client can resume the stream after a reconnect or a restart of the daemon.
//!
//! **Numbering.** The writer thread numbers events when it commits them (the first one of
//! a state directory is 1), in the transaction that stores them, and records the last
//! number in the `meta` table in that same transaction. A number is therefore used only
//! by a committed event, and the next daemon on the state directory continues after the
//! highest committed one, even after a SIGKILL: an event that was queued but not committed
//! when the daemon died was never served (clients see committed events only), and its
//! number is simply given to the next committed one.
//!
//! **Bounds.** The table keeps the newest `retention` events (`--event-retention`); each
//! commit drops the ones it pushes out, in the same transaction. Numbers in the table are
//! contiguous (each commit appends `last + 1 ..`), so "the oldest kept" is the first key.

// The functions here return redb's own error type, which the store matches by variant
// (`PreviousIo`, to reopen the database).
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use paddock_supervisor::{Event, SandboxId};
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// seq → the event's wire JSON ([`SequencedEvent`]).
pub(super) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Small named values; [`LAST_SEQ`] is the only one.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The number of the last event ever committed in this database (0: none yet).
const LAST_SEQ: &str = "events.last_seq";

/// Default of `--event-retention`.
pub const DEFAULT_RETENTION: u64 = 10_000;

/// Largest `--event-retention` (about 1 KiB an event: ~1 GiB of database).
pub const MAX_RETENTION: u64 = 1_000_000;

/// One event as the daemon serves it (`GET /v1/events`): its sequence number and the
/// supervisor's [`Event`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SequencedEvent {
    /// Its sequence number: strictly increasing over every event of this daemon's state
    /// directory (the first is 1), never reused, also across restarts and crashes of the
    /// daemon. It is also the server-sent event's `id:`; resume after it with
    /// `?since=<seq>` or `Last-Event-ID`.
    #[schema(minimum = 1)]
    pub seq: u64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// A committed event, as the stream hands it on: what a filter and the SSE framing need,
/// and its wire JSON, encoded once.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// Its sequence number.
    pub seq: u64,
    /// The sandbox.
    pub id: SandboxId,
    /// The event's `type` (the SSE `event:` name).
    pub kind: String,
    /// The JSON of the [`SequencedEvent`].
    pub json: String,
}

/// The parts of a stored event's JSON a [`Committed`] needs besides the JSON.
#[derive(Deserialize)]
struct Head {
    seq: u64,
    id: SandboxId,
    #[serde(rename = "type")]
    kind: String,
}

impl Committed {
    /// Decodes a stored row; `None` for JSON that does not hold a valid event head (not
    /// written by this code: such a row is skipped, and logged).
    fn decode(json: &[u8]) -> Option<Committed> {
        let head: Head = serde_json::from_slice(json).ok()?;
        Some(Committed {
            seq: head.seq,
            id: head.id,
            kind: head.kind,
            json: String::from_utf8(json.to_vec()).ok()?,
        })
    }
}

/// What a read of the ring found: the events after a cursor (at most the page's size),
/// and the bounds of the ring in the same snapshot.
#[derive(Debug, Clone, Default)]
pub struct EventPage {
    /// The events, in order of seq.
    pub events: Vec<Arc<Committed>>,
    /// The oldest seq still kept (`None`: the ring is empty).
    pub oldest: Option<u64>,
    /// The seq of the last event ever committed (0: none yet).
    pub last: u64,
}

/// The last seq committed in the database (in the meta table, or the ring's last key if
/// that is higher: a database written before the meta row existed).
pub(super) fn last_seq_in(tx: &ReadTransaction) -> Result<u64, redb::Error> {
    let meta = tx.open_table(META)?.get(LAST_SEQ)?.map_or(0, |v| v.value());
    let ring = tx.open_table(EVENTS)?.last()?.map_or(0, |(k, _)| k.value());
    Ok(meta.max(ring))
}

/// Appends `events` (already encoded as [`SequencedEvent`] JSON, numbered `first..`) to
/// the ring, records the last seq, and drops what falls out of the newest `retention`.
pub(super) fn append(
    tx: &WriteTransaction,
    encoded: &[(u64, Vec<u8>)],
    retention: u64,
) -> Result<(), redb::Error> {
    let Some(&(last, _)) = encoded.last() else {
        return Ok(());
    };
    let mut t = tx.open_table(EVENTS)?;
    for (seq, json) in encoded {
        t.insert(*seq, json.as_slice())?;
    }
    let cutoff = last.saturating_sub(retention.max(1));
    if cutoff > 0 {
        t.retain_in(..=cutoff, |_, _| false)?;
    }
    tx.open_table(META)?.insert(LAST_SEQ, last)?;
    Ok(())
}

/// Encodes `ev` numbered `seq` as its wire JSON.
pub(super) fn encode(seq: u64, ev: &Event) -> Result<(Vec<u8>, Committed), serde_json::Error> {
    let wire = SequencedEvent {
        seq,
        event: ev.clone(),
    };
    let json = serde_json::to_string(&wire)?;
    let kind = serde_json::to_value(&ev.kind)?
        .get("type")
        .and_then(|v| v.as_str())
        .unwrap_or("event")
        .to_owned();
    Ok((
        json.clone().into_bytes(),
        Committed {
            seq,
            id: ev.id.clone(),
            kind,
            json,
        },
    ))
}

/// The events with seq > `since`, at most `max` of them, and the ring's bounds.
pub(super) fn read_after(
    tx: &ReadTransaction,
    since: u64,
    max: usize,
) -> Result<EventPage, redb::Error> {
    let last = last_seq_in(tx)?;
    let t = tx.open_table(EVENTS)?;
    let oldest = t.first()?.map(|(k, _)| k.value());
    let mut events = Vec::new();
    if let Some(from) = since.checked_add(1) {
        for row in t.range(from..)? {
            let (k, v) = row?;
            match Committed::decode(v.value()) {
                Some(c) if c.seq == k.value() => events.push(Arc::new(c)),
                _ => tracing::error!(
                    seq = k.value(),
                    "the event ring holds a row that is not an event of this seq; skipped"
                ),
            }
            if events.len() >= max {
                break;
            }
        }
    }
    Ok(EventPage {
        events,
        oldest,
        last,
    })
}
