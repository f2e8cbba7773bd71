//! The daemon under soak: its configuration, the `ztgate run` process with its standard error
//! collected, its resident memory, and the join of the clients' records with the audit log.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::load::Outcome;
use crate::support::{Pki, config_toml, signal, spawn_daemon_with};

/// Seconds each scenario runs (`ZTGATE_SOAK_SECS`); the short form by default, so that the
/// whole suite takes about a minute and a half on a shared 2-core machine.
pub fn secs() -> u64 {
    std::env::var("ZTGATE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8)
        .max(3)
}

/// How much the daemon's resident set (VmRSS) may grow between the sample taken once the load
/// has warmed up and the one at the end of the scenario. A leak of a few hundred bytes per
/// request passes this in the short form and fails it in the long one; a stuck buffer per
/// connection fails it in both. Measured growth is printed by every scenario.
pub const RSS_GROWTH_MAX_KIB: u64 = 32 * 1024;

/// The knobs a scenario turns on top of `support::config_toml`.
#[derive(Default)]
pub struct Setup {
    pub upstream_url: String,
    /// Appended to `[tls]`.
    pub tls_extra: String,
    /// Appended to `[policy]`.
    pub policy_extra: String,
    /// Replaces the `handshake_timeout = "2s"` line of `[listener]`.
    pub listener: Option<String>,
    /// Appended to `[audit]` (after `file = ...`).
    pub audit_extra: String,
    /// `[shutdown] drain_timeout`; `"5s"` when empty.
    pub drain_timeout: String,
}

/// The demo's echo upstream on a free loopback port; its `http://` URL.
pub async fn echo_upstream() -> String {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", upstream.local_addr().unwrap());
    tokio::spawn(ztgate::demo::echo_upstream(upstream));
    url
}

/// Writes `ztgate.toml` (and the example policy) into the PKI's folder, with the audit log at
/// `audit`; returns the config's path.
pub fn write_config(pki: &Pki, audit: &Path, setup: &Setup) -> PathBuf {
    let policy = pki.write("policy.toml", crate::support::EXAMPLE_POLICY);
    let mut text = config_toml(pki.dir.path(), &policy, &setup.tls_extra, &setup.upstream_url, "", "/")
        .replace("[policy]\n", &format!("[policy]\n{}\n", setup.policy_extra));
    if let Some(listener) = &setup.listener {
        text = text.replace("handshake_timeout = \"2s\"\n", &format!("{listener}\n"));
    }
    if !setup.drain_timeout.is_empty() {
        text = text.replace(
            "drain_timeout = \"5s\"",
            &format!("drain_timeout = \"{}\"", setup.drain_timeout),
        );
    }
    text += &format!(
        "\n[audit]\nfile = \"{}\"\n{}\n\n[log]\nformat = \"json\"\n",
        audit.display(),
        setup.audit_extra
    );
    pki.write("ztgate.toml", &text)
}

/// One scenario's world: a fresh PKI, the echo upstream, the audit log's path (in the PKI's
/// folder; nothing is written there yet) and the config written with `setup`, whose
/// `upstream_url` is set here.
pub struct World {
    pub pki: Pki,
    pub audit: PathBuf,
    pub config: PathBuf,
}

impl World {
    pub async fn new(setup: Setup) -> Self {
        let pki = Pki::new();
        let audit = pki.path("audit.log");
        let setup = Setup {
            upstream_url: echo_upstream().await,
            ..setup
        };
        let config = write_config(&pki, &audit, &setup);
        Self { pki, audit, config }
    }
}

/// `ztgate run` as a child process.
pub struct Daemon {
    /// `None` once [`Daemon::terminate`] has taken it; a daemon still here when the scenario
    /// fails is killed on drop, so no failed run leaves one behind.
    child: Option<Child>,
    pub addr: SocketAddr,
    /// Every standard error line after the ready line.
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    pub fn spawn(config: &Path) -> Self {
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let (child, addr) = spawn_daemon_with(config, move |l| sink.lock().unwrap().push(l));
        Self {
            child: Some(child),
            addr,
            stderr,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// VmRSS from /proc/<pid>/status, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    pub fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            signal(child, sig);
        }
    }

    /// How many standard error lines contain `needle` so far.
    pub fn stderr_count(&self, needle: &str) -> usize {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Sends SIGTERM and waits for the exit (at most `within`); returns the status and how long
    /// the exit took.
    pub async fn terminate(mut self, within: Duration) -> (ExitStatus, Duration, Vec<String>) {
        self.signal("TERM");
        let started = Instant::now();
        let mut child = self.child.take().expect("a running daemon");
        let status = tokio::time::timeout(within, tokio::task::spawn_blocking(move || child.wait()))
            .await
            .expect("ztgate did not exit within the bound after SIGTERM")
            .unwrap()
            .unwrap();
        let took = started.elapsed();
        tokio::time::sleep(Duration::from_millis(200)).await; // the reader thread catches up
        let lines = self.stderr.lock().unwrap().clone();
        assert!(
            !lines.iter().any(|l| l.contains("panicked")),
            "ztgate panicked: {lines:#?}"
        );
        (status, took, lines)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Resident memory at two points of a scenario.
pub struct Rss {
    start_kib: u64,
}

impl Rss {
    pub fn sample(d: &Daemon) -> Self {
        Self { start_kib: d.rss_kib() }
    }

    /// Asserts the growth since [`Rss::sample`] is below [`RSS_GROWTH_MAX_KIB`]; returns
    /// (start, end) in KiB.
    pub fn check(&self, d: &Daemon, scenario: &str) -> (u64, u64) {
        let end = d.rss_kib();
        let growth = end.saturating_sub(self.start_kib);
        println!(
            "[soak {scenario}] VmRSS {} KiB -> {end} KiB (growth {growth} KiB, bound {RSS_GROWTH_MAX_KIB} KiB)",
            self.start_kib
        );
        assert!(
            growth < RSS_GROWTH_MAX_KIB,
            "{scenario}: VmRSS grew {growth} KiB ({} -> {end}), bound {RSS_GROWTH_MAX_KIB} KiB",
            self.start_kib
        );
        (self.start_kib, end)
    }
}

/// `ztgate audit verify FILE` (the binary): exit code and output.
pub fn audit_verify(log: &Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ztgate"))
        .args(["audit", "verify", log.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The request records (`kind = "request"`) of audit lines, by request id: (status, how many).
pub fn request_records(records: &[serde_json::Value]) -> HashMap<String, (u64, usize)> {
    let mut by_id: HashMap<String, (u64, usize)> = HashMap::new();
    for r in records.iter().filter(|r| r["kind"] == "request") {
        let id = r["request_id"]
            .as_str()
            .expect("a request record has a request_id")
            .to_string();
        let status = r["status"].as_u64().expect("a request record has a status");
        by_id.entry(id).or_insert((status, 0)).1 += 1;
    }
    by_id
}

/// What the join of the clients' outcomes with the audit log found.
#[derive(Debug)]
pub struct Join {
    /// Responses the clients got.
    pub answered: usize,
    /// Request records in the log.
    pub records: usize,
    /// Request records whose request id no client was answered with (a request whose response
    /// was cut, e.g. a client that reset its connection).
    pub unmatched_records: usize,
}

/// Asserts that every answered outcome has exactly one request record with its status, that no
/// request id is recorded twice, and that at most `may_be_unanswered` records belong to requests
/// no client saw answered.
pub fn join_audit(records: &[serde_json::Value], outcomes: &[&Outcome], may_be_unanswered: usize) -> Join {
    let by_id = request_records(records);
    let dups: Vec<_> = by_id.iter().filter(|(_, (_, n))| *n > 1).collect();
    assert!(dups.is_empty(), "request ids recorded more than once: {dups:?}");
    let mut answered = 0;
    let mut seen = std::collections::HashSet::new();
    for o in outcomes {
        let Ok((status, id)) = &o.result else { continue };
        answered += 1;
        let rec = by_id.get(id);
        assert!(
            rec.is_some(),
            "a request answered {status} has no audit record (request id {id:?})"
        );
        assert_eq!(
            rec.map(|r| r.0),
            Some(u64::from(*status)),
            "request {id}: answered {status}, recorded otherwise"
        );
        assert!(seen.insert(id.clone()), "two responses carried request id {id}");
    }
    let unmatched = by_id.keys().filter(|id| !seen.contains(*id)).count();
    assert!(
        unmatched <= may_be_unanswered,
        "{unmatched} request records have no answered request (at most {may_be_unanswered} may)"
    );
    Join {
        answered,
        records: by_id.len(),
        unmatched_records: unmatched,
    }
}

/// Reads the audit log, checks it with `ztgate audit verify` (exit 0) and joins it with the
/// outcomes ([`join_audit`]).
pub fn check_audit_file(log: &Path, outcomes: &[&Outcome], may_be_unanswered: usize) -> Join {
    let (code, out) = audit_verify(log);
    assert_eq!(code, Some(0), "ztgate audit verify {}: {out}", log.display());
    let records = crate::support::audit_records(log);
    join_audit(&records, outcomes, may_be_unanswered)
}
