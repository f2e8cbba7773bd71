//! Logs (tracing), metrics (Prometheus) and the admin listener.

mod config;
pub(crate) mod loglimit;
pub(crate) mod metrics;

use tracing_subscriber::EnvFilter;

pub use config::{LogConfig, LogFormat};

/// Installs the global tracing subscriber. `RUST_LOG` wins over the configured level, as
/// operators expect. Safe to call twice (the second call is a no-op).
pub(crate) fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let colour = colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
}

/// Whether log lines get ANSI colour: only on a terminal, and never when `NO_COLOR` is set to a
/// non-empty value (<https://no-color.org>). A file or a pipe (journald, `kubectl logs`) gets
/// plain text.
fn colour(stderr_is_tty: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_tty && no_color.is_none_or(|v| v.is_empty())
}

/// Renders a value whose text spans lines (every problem of a rejected policy) as one line,
/// lines joined by `"; "`, so that one event is one log line with a timestamp and a level.
pub(crate) struct OneLine<T>(pub(crate) T);

impl<T: std::fmt::Display> std::fmt::Display for OneLine<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.0.to_string();
        let mut lines = text.lines().map(str::trim_end).filter(|l| !l.is_empty());
        if let Some(first) = lines.next() {
            f.write_str(first)?;
        }
        for line in lines {
            write!(f, "; {line}")?;
        }
        Ok(())
    }
}

/// `err` and each of its sources, `": "`-separated, repeated texts skipped (hyper's errors
/// often embed their source's text in their own).
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    for e in std::iter::successors(Some(err), |e| e.source()) {
        let text = e.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
        assert!(!colour(false, Some(OsStr::new("1"))));
    }

    #[test]
    fn a_multi_line_error_renders_as_one_line() {
        let text = "policy.toml:3:1: unknown key\npolicy.toml:9:5: duplicate rule\n";
        assert_eq!(
            OneLine(text).to_string(),
            "policy.toml:3:1: unknown key; policy.toml:9:5: duplicate rule"
        );
        assert_eq!(OneLine("one").to_string(), "one");
    }
}
