//! `[audit]`.

use super::*;

pub(super) fn audit(c: &mut Collector<'_>, a: &RawAudit) -> Option<AuditConfig> {
    let choice = |c: &mut Collector<'_>, v: &Option<Spanned<String>>, allowed: &[&str], default: &str| -> String {
        match v {
            None => default.to_string(),
            Some(s) if allowed.contains(&s.get_ref().as_str()) => s.get_ref().clone(),
            Some(s) => {
                let quoted: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
                c.push(
                    s.span(),
                    format!("unknown value `{}` (expected {})", s.get_ref(), quoted.join(" or ")),
                );
                default.to_string()
            }
        }
    };
    let positive = |c: &mut Collector<'_>, v: &Option<Spanned<i64>>, default: usize, what: &str| match v {
        None => default,
        Some(n) => usize::try_from(*n.get_ref())
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| {
                c.push(n.span(), format!("{what} must be a positive number"));
                default
            }),
    };
    let sink = choice(c, &a.sink, &["file", "stdout"], "file");
    let max_bytes = match &a.max_size {
        None => 100 * 1024 * 1024,
        Some(s) => parse_size(s.get_ref()).unwrap_or_else(|e| {
            c.push(s.span(), e);
            0
        }),
    };
    let keep = match &a.keep {
        None => 10,
        Some(n) => usize::try_from(*n.get_ref()).unwrap_or_else(|_| {
            c.push(n.span(), "keep must be 0 or more");
            0
        }),
    };
    let sink = match (sink.as_str(), &a.file) {
        ("stdout", None) => SinkConfig::Stdout,
        ("stdout", Some(f)) => {
            c.push(f.span(), "`file` conflicts with sink = \"stdout\"");
            SinkConfig::Stdout
        }
        (_, Some(f)) => SinkConfig::File {
            path: output_path(c, f),
            max_bytes,
            keep,
        },
        (_, None) => {
            c.push(
                0..0,
                "[audit] with sink = \"file\" needs `file = \"...\"` (or sink = \"stdout\")",
            );
            return None;
        }
    };
    let fsync = match choice(c, &a.fsync, &["batch", "interval"], "batch").as_str() {
        "interval" => Fsync::Interval(
            a.fsync_interval
                .as_ref()
                .map_or(Some(Duration::from_secs(1)), |d| duration(c, d))?,
        ),
        _ => Fsync::Batch,
    };
    let on_full = match choice(c, &a.on_full, &["block", "drop"], "block").as_str() {
        "drop" => OnFull::Drop,
        _ => OnFull::Block,
    };
    let respond_after = match choice(c, &a.respond_after, &["queued", "durable"], "queued").as_str() {
        "durable" => RespondAfter::Durable,
        _ => RespondAfter::Queued,
    };
    if let Some(r) = a
        .respond_after
        .as_ref()
        .filter(|_| respond_after == RespondAfter::Durable)
    {
        // A response that waits for its record contradicts both dropping it and deferring its fsync.
        if on_full == OnFull::Drop {
            c.push(
                r.span(),
                "respond_after = \"durable\" conflicts with on_full = \"drop\"",
            );
        }
        if matches!(fsync, Fsync::Interval(_)) {
            c.push(
                r.span(),
                "respond_after = \"durable\" conflicts with fsync = \"interval\"",
            );
        }
    }
    let queue = positive(c, &a.queue, 8192, "queue");
    let every = positive(c, &a.checkpoint_every, 1000, "checkpoint_every") as u64;
    let interval = a
        .checkpoint_interval
        .as_ref()
        .map_or(Some(Duration::from_secs(60)), |d| duration(c, d))?;
    let checkpoint = match &a.signing_key {
        Some(k) => Some(CheckpointConfig {
            key: non_empty_path(c, k),
            every,
            interval,
        }),
        None => {
            for span in [
                a.checkpoint_every.as_ref().map(Spanned::span),
                a.checkpoint_interval.as_ref().map(Spanned::span),
            ]
            .into_iter()
            .flatten()
            {
                c.push(span, "checkpoints need `signing_key = \"...\"` in [audit]");
            }
            None
        }
    };
    Some(AuditConfig {
        sink,
        fsync,
        on_full,
        respond_after,
        queue,
        checkpoint,
    })
}
