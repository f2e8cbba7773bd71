//! Logs (tracing), metrics (Prometheus) and the admin listener.

mod config;
pub(crate) mod metrics;

use tracing_subscriber::EnvFilter;

pub use config::{LogConfig, LogFormat};

/// Installs the global tracing subscriber. `RUST_LOG` wins over the configured level, as
/// operators expect. Safe to call twice (the second call is a no-op).
pub(crate) fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
}
