//! Structured logs on stderr with `tracing`.
//!
//! The supervisor runs every operation on a sandbox inside a `sandbox` span carrying
//! `sandbox` (the ID) and `lifecycle`, so every line logged on its behalf — also by the
//! cgroup layer below it, which knows neither — names both. Text lines show the span as a
//! `sandbox{sandbox=… lifecycle=…}:` prefix; JSON lines carry the span's fields as
//! top-level keys (an event's own field of the same name wins).
//!
//! Under systemd, when stderr is journald's stream (`JOURNAL_STREAM` names it) and the
//! format is text, events go to the journal with journald's native protocol instead, each
//! field its own journal field: `PADDOCK_SANDBOX=`, `PADDOCK_LIFECYCLE=`, `PADDOCK_PID=`…
//! (the event's and its spans' fields, upper-cased, with the prefix `PADDOCK_`), the message
//! as `MESSAGE=`, the level as `PRIORITY=`, and `TARGET=`, so `journalctl -u paddock
//! PADDOCK_SANDBOX=web-1` finds a sandbox's lines.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The prefix of paddock's own fields in the journal (`PADDOCK_SANDBOX=`).
pub const JOURNAL_FIELD_PREFIX: &str = "PADDOCK";

/// Installs the global subscriber. `PADDOCK_LOG` (or `RUST_LOG`) overrides `default`
/// with an `EnvFilter` directive such as `info` or `paddock_cgroup=debug`. With the text
/// format and stderr connected to journald, logs go to the journal with structured fields
/// (see the module docs); if the journal's socket cannot be reached, to stderr as text.
pub fn init(format: Format, default: &str) {
    let filter = std::env::var("PADDOCK_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    if format == Format::Text
        && stderr_is_journal()
        && let Ok(journal) = tracing_journald::layer()
    {
        tracing_subscriber::registry()
            .with(filter)
            .with(journal.with_field_prefix(Some(JOURNAL_FIELD_PREFIX.to_owned())))
            .init();
        return;
    }
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        Format::Text => b.with_ansi(false).init(),
        Format::Json => b
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .init(),
    }
}

/// Whether stderr is the stream systemd connected to journald: `JOURNAL_STREAM`
/// (`<device>:<inode>`) names the file stderr is (systemd.exec(5) says to compare both, as
/// a child whose stderr was redirected inherits the variable).
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let stderr = std::io::stderr();
    match rustix::fs::fstat(stderr.as_fd()) {
        Ok(st) => st.st_dev == dev && st.st_ino == ino,
        Err(_) => false,
    }
}

/// One JSON object per event: `timestamp`, `level`, `target`, the fields of every span the
/// event is in (outermost first), then the event's own fields (`message` among them).
struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut map = Map::new();
        let mut ts = String::new();
        if SystemTime.format_time(&mut Writer::new(&mut ts)).is_ok() {
            map.insert("timestamp".into(), Value::String(ts));
        }
        let meta = event.metadata();
        map.insert("level".into(), Value::String(meta.level().to_string()));
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(o)) = serde_json::from_str::<Value>(fields.as_str())
                {
                    map.extend(o);
                }
            }
        }
        event.record(&mut JsonVisitor(&mut map));
        map.insert("target".into(), Value::String(meta.target().to_owned()));
        writeln!(writer, "{}", Value::Object(map))
    }
}

/// Records an event's fields into a JSON map.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::Bool(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}
