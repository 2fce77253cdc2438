//! Structured logs on stderr with `tracing`.

use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. `PADDOCK_LOG` (or `RUST_LOG`) overrides `default`
/// with an `EnvFilter` directive such as `info` or `paddock_cgroup=debug`.
pub fn init(format: Format, default: &str) {
    let filter = std::env::var("PADDOCK_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        Format::Text => b.with_ansi(false).init(),
        Format::Json => b.json().flatten_event(true).with_current_span(false).init(),
    }
}
