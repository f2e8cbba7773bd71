//! The audit log proves itself and loses nothing: `audit verify` names the line and exits by kind
//! of problem, signed checkpoints prove the log up to them, group commit refuses a response whose
//! record cannot be written, and SIGTERM with a failing disk diverts records instead of panicking.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::support::*;

fn ztgate(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ztgate"))
        .args(args)
        .output()
        .unwrap()
}

fn verify_cli(key: Option<&Path>, files: &[&Path]) -> (Option<i32>, String, String) {
    let mut args = vec!["audit".to_string(), "verify".to_string()];
    if let Some(k) = key {
        args.extend(["--key".to_string(), k.display().to_string()]);
    }
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = ztgate(&args);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(path: &Path, ls: &[String]) {
    std::fs::write(path, ls.join("\n") + "\n").unwrap();
}

/// A line rewritten with its own hash recomputed, as a forger who knows the format would.
fn rehash(line: &str) -> String {
    let body = &line[..line.len() - r#","hash":""#.len() - 64 - 2];
    format!(r#"{body},"hash":"{}"}}"#, ztgate::audit::hash_line(body.as_bytes()))
}

/// ztgate with an audit log signed by the dev key pair `ztgate certs dev` mints, a checkpoint
/// every 5 records.
async fn signed_server() -> (Server, PathBuf, PathBuf) {
    let pki = Pki::new();
    let keys = pki.path("keys");
    let o = ztgate(&["certs", "dev", "--out", keys.to_str().unwrap()]);
    assert!(o.status.success());
    let log = pki.path("audit/ztgate-audit.log");
    let opts = Opts {
        audit: Some(format!(
            "file = \"{}\"\nsigning_key = \"{}\"\ncheckpoint_every = 5",
            log.display(),
            keys.join("audit-signing-key.pem").display()
        )),
        ..Opts::default()
    };
    (Server::start_with(pki, opts).await, log, keys.join("audit-signing.pub"))
}

#[tokio::test]
async fn audit_verify_key_proves_a_stopped_log_to_its_shutdown_checkpoint_and_finds_edits_and_cuts() {
    let (mut s, log, public) = signed_server().await;
    for i in 0..12 {
        assert_eq!(s.client().get(s.addr, &format!("/app/{i}")).await.unwrap().status, 200);
    }
    s.stop().await;
    let recs = audit_records(&log);
    let checkpoints: Vec<&serde_json::Value> = recs.iter().filter(|r| r["kind"] == "checkpoint").collect();
    assert_eq!(checkpoints.len(), 3, "after records 5 and 10, and at shutdown");
    assert_eq!(checkpoints[2]["reason"], "shutdown");
    let n = recs.len();
    assert_eq!(n, 15);

    let (code, out, err) = verify_cli(Some(&public), &[&log]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("OK: 15 record(s), seq 1..15, chain intact (3 checkpoint(s))"),
        "{out}"
    );
    assert!(out.contains("PROVEN: seq 1..15 by the checkpoint signed at"), "{out}");
    assert!(
        out.contains("nothing follows it; it is ztgate's shutdown checkpoint"),
        "{out}"
    );

    let original = lines(&log);
    let copy = s.pki.path("copy.log");
    // The last request's record edited and rehashed: the shutdown checkpoint catches it, naming
    // the edited line (14), not the one after it.
    let mut edited = original.clone();
    edited[13] = rehash(&edited[13].replace("/app/11", "/app/99"));
    write_lines(&copy, &edited);
    let (code, _, err) = verify_cli(Some(&public), &[&copy]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("copy.log:14: the line was rewritten"), "{err}");
    // Edited without rehashing: the line itself is named, key or not.
    edited[13] = original[13].replace("/app/11", "/app/99");
    write_lines(&copy, &edited);
    let (code, _, err) = verify_cli(None, &[&copy]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("copy.log:14: the line does not match its own hash"),
        "{err}"
    );

    // Lines: records 1-5, checkpoint 6, records 7-11, checkpoint 12, records 13-14, shutdown 15.
    // Cut after line 13 (the last record and the shutdown checkpoint gone): proven up to seq 12,
    // the record after it reported unproven, and not "nothing follows".
    write_lines(&copy, &original[..13]);
    let (code, out, _) = verify_cli(Some(&public), &[&copy]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("PROVEN: seq 1..12"), "{out}");
    assert!(out.contains("UNPROVEN: 1 record(s) after it (seq 13..13)"), "{out}");
    // Without any checkpoint (cut before the first), nothing is proven: exit 3.
    write_lines(&copy, &original[..4]);
    let (code, out, _) = verify_cli(Some(&public), &[&copy]);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("NOT PROVEN"), "{out}");
    // A checkpoint forged with another key is refused.
    let other = s.pki.path("other");
    assert!(
        ztgate(&["certs", "dev", "--out", other.to_str().unwrap()])
            .status
            .success()
    );
    let (code, _, err) = verify_cli(Some(&other.join("audit-signing.pub")), &[&log]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not among the --key files given"), "{err}");
}

#[test]
fn audit_verify_exit_codes_tell_a_missing_file_an_empty_log_and_tampering_apart() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("ztgate-audt.log");
    let (code, out, err) = verify_cli(None, &[&missing]);
    assert_eq!(code, Some(66), "{out}{err}");
    assert!(
        err.starts_with(&format!("cannot read {}: No such file or directory", missing.display())),
        "{err}"
    );
    assert!(!err.contains("TAMPERED"), "{err}");
    let (code, _, err) = verify_cli(Some(&missing), &[&missing]);
    assert_eq!(code, Some(66), "an unreadable key: {err}");

    let empty = dir.path().join("empty.log");
    std::fs::write(&empty, "").unwrap();
    let (code, out, _) = verify_cli(None, &[&empty]);
    assert_eq!(code, Some(0));
    assert_eq!(out.trim(), format!("EMPTY: no records in {}", empty.display()));
    assert!(!out.contains("seq -"), "{out}");

    std::fs::write(&empty, "not a record\n").unwrap();
    let (code, _, err) = verify_cli(None, &[&empty]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("TAMPERED or damaged") && err.contains("empty.log:1:"),
        "{err}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn with_group_commit_a_response_waits_for_its_record_and_a_full_disk_refuses_the_first_request() {
    // On a healthy disk, a response is sent only once its record is in the file.
    let pki = Pki::new();
    let log = pki.path("audit.log");
    let opts = Opts {
        audit: Some(format!("file = \"{}\"\nrespond_after = \"durable\"", log.display())),
        ..Opts::default()
    };
    let mut s = Server::start_with(pki, opts).await;
    for i in 0..5 {
        let r = s.client().get(s.addr, &format!("/app/{i}")).await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        let id = r.headers["x-request-id"].to_str().unwrap().to_string();
        let recs = audit_records(&log);
        assert!(
            recs.iter().any(|r| r["request_id"] == id.as_str()),
            "the record of {id} must be written before its response"
        );
    }
    s.stop().await;

    // A full disk: the very first request is refused (503), not only the ones after it.
    let pki = Pki::new();
    let log = pki.path("audit.log");
    let real = pki.path("real-audit.log");
    std::os::unix::fs::symlink("/dev/full", &log).unwrap();
    let opts = Opts {
        audit: Some(format!("file = \"{}\"\nrespond_after = \"durable\"", log.display())),
        ..Opts::default()
    };
    let mut s = Server::start_with(pki, opts).await;
    let first = s.client().get(s.addr, "/first").await.unwrap();
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(s.admin_get("/readyz").await.0, 503);
    // Space comes back: served again, and the first request's record says what it got.
    std::fs::remove_file(s.pki.path("audit.log")).unwrap();
    std::os::unix::fs::symlink(&real, s.pki.path("audit.log")).unwrap();
    let recovered = eventually(5, || async {
        s.client().get(s.addr, "/").await.unwrap().status == StatusCode::OK
    })
    .await;
    assert!(recovered);
    s.stop().await;
    ztgate::audit::verify(&[real.as_path()], &[]).unwrap();
    let recs = audit_records(&real);
    let first = recs
        .iter()
        .find(|r| r["path"] == "/first")
        .expect("the refused request is recorded");
    assert_eq!(
        (
            &first["status"],
            &first["reason"],
            &first["decision"],
            &first["reached_upstream"]
        ),
        (
            &serde_json::json!(503),
            &serde_json::json!("audit-unavailable"),
            &serde_json::json!("error"),
            &serde_json::json!(true)
        ),
        "{first}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn without_group_commit_the_first_request_on_a_full_disk_is_still_answered() {
    // The documented difference: the default mode answers once the record is queued.
    let pki = Pki::new();
    let log = pki.path("audit.log");
    let real = pki.path("real-audit.log");
    std::os::unix::fs::symlink("/dev/full", &log).unwrap();
    let opts = Opts {
        audit: Some(format!("file = \"{}\"", log.display())),
        ..Opts::default()
    };
    let mut s = Server::start_with(pki, opts).await;
    assert_eq!(s.client().get(s.addr, "/first").await.unwrap().status, StatusCode::OK);
    std::fs::remove_file(s.pki.path("audit.log")).unwrap();
    std::os::unix::fs::symlink(&real, s.pki.path("audit.log")).unwrap();
    s.stop().await;
}

/// `ztgate run` as a subprocess, its standard error collected.
fn spawn_collecting(config: &Path) -> (std::process::Child, std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let (child, addr) = spawn_daemon_with(config, move |l| sink.lock().unwrap().push(l));
    (child, addr, seen)
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_with_a_full_audit_disk_diverts_every_record_to_stderr_and_exits_74() {
    let pki = Pki::new();
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_url = format!("http://{}", upstream.local_addr().unwrap());
    tokio::spawn(ztgate::demo::echo_upstream(upstream));
    let policy = pki.write("policy.toml", EXAMPLE_POLICY);
    let log = pki.path("audit.log");
    std::os::unix::fs::symlink("/dev/full", &log).unwrap();
    let keys = pki.path("keys");
    std::fs::create_dir_all(&keys).unwrap();
    ztgate::pki::write_audit_signing_key(&keys).unwrap();
    let cfg = config_toml(pki.dir.path(), &policy, "", &upstream_url, "", "/").replace("\"5s\"", "\"1s\"")
        + &format!(
            "\n[audit]\nfile = \"{}\"\nsigning_key = \"{}\"\n\n[log]\nformat = \"json\"\n",
            log.display(),
            keys.join("audit-signing-key.pem").display()
        );
    let (child, addr, stderr) = spawn_collecting(&pki.write("ztgate.toml", &cfg));
    let client = Client::new(&pki.ca.cert_pem(), Some(&pki.client));
    // Answered (its record queued), then refused once the writer has seen the disk is full.
    assert_eq!(client.get(addr, "/answered").await.unwrap().status, StatusCode::OK);
    let refused = eventually(5, || async {
        client.get(addr, "/refused").await.unwrap().status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert!(refused);
    signal(&child, "TERM");
    let started = Instant::now();
    let status = wait_for_exit(child).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by the drain timeout"
    );
    assert_eq!(status.code(), Some(74), "records not in the audit file: non-zero exit");
    tokio::time::sleep(Duration::from_millis(100)).await; // the reader thread catches up
    let stderr = stderr.lock().unwrap().clone();
    assert!(!stderr.iter().any(|l| l.contains("panicked")), "{stderr:#?}");
    let diverted: Vec<serde_json::Value> = stderr
        .iter()
        .filter(|l| l.starts_with(r#"{"ztgate":"audit-record-not-written""#))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let records: Vec<&serde_json::Value> = diverted.iter().map(|d| &d["record"]).collect();
    assert!(
        records.iter().any(|r| r["path"] == "/answered" && r["status"] == 200),
        "{records:#?}"
    );
    assert!(records.iter().any(|r| r["path"] == "/refused" && r["status"] == 503));
    assert_eq!(
        records.last().unwrap()["kind"],
        "checkpoint",
        "the diverted lines end signed"
    );
    assert!(
        diverted[0]["error"].as_str().unwrap().contains("No space left"),
        "{:?}",
        diverted[0]
    );
    let n = records.len();
    assert!(
        stderr.iter().any(|l| l.contains(&format!(
            "{n} audit record(s) were not written to the audit log: {n} written to standard error instead, 0 lost"
        ))),
        "the count is logged: {stderr:#?}"
    );

    // The diverted lines are the chain's continuation: appended to the file, it verifies and is
    // proven by the diverted checkpoint.
    // (The raw bytes, as serde_json would reorder the fields.)
    std::fs::remove_file(&log).unwrap();
    let raw: String = stderr
        .iter()
        .filter(|l| l.starts_with(r#"{"ztgate":"audit-record-not-written""#))
        .map(|l| {
            let start = l.find(r#","record":"#).unwrap() + r#","record":"#.len();
            l[start..l.len() - 1].to_string() + "\n"
        })
        .collect();
    std::fs::write(&log, raw).unwrap();
    let (code, out, err) = verify_cli(Some(&keys.join("audit-signing.pub")), &[&log]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("nothing follows it; it is ztgate's shutdown checkpoint"),
        "{out}"
    );
}
