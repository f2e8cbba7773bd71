//! `[log]`: the validated log settings.

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `RUST_LOG`-style filter; the `RUST_LOG` environment variable overrides it.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}
