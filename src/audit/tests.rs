//! The writer and the verifier together, on real files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::time::Instant;

use super::*;

fn config(path: &Path, max_bytes: u64, keep: usize) -> AuditConfig {
    AuditConfig {
        sink: SinkConfig::File {
            path: path.to_path_buf(),
            max_bytes,
            keep,
        },
        fsync: Fsync::Batch,
        on_full: OnFull::Block,
        respond_after: RespondAfter::Queued,
        queue: 64,
        checkpoint: None,
    }
}

async fn write_records(cfg: &AuditConfig, n: usize) {
    let (auditor, task) = Auditor::start(cfg).unwrap();
    for i in 0..n {
        auditor
            .record(format!(r#"{{"kind":"test","i":{i}}}"#).into_bytes())
            .await;
        if i % 5 == 4 {
            // Let the writer take what is queued as one batch (rotation happens between batches).
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    task.finish(Duration::from_secs(5)).await;
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn a_restart_continues_the_chain_in_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    write_records(&config(&log, 1 << 30, 3), 5).await;
    write_records(&config(&log, 1 << 30, 3), 5).await;
    let v = verify(&[log.as_path()], &[]).unwrap();
    assert_eq!((v.records, v.first_seq, v.last_seq), (10, Some(1), Some(10)));
    assert!(lines(&log)[0].starts_with(&format!(r#"{{"seq":1,"prev":"{GENESIS}","kind":"test""#)));
}

#[tokio::test]
async fn rotation_keeps_the_chain_across_files_and_the_retention_count() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    write_records(&config(&log, 300, 2), 40).await;
    let rotated: Vec<PathBuf> = [2, 1]
        .iter()
        .map(|n| PathBuf::from(format!("{}.{n}", log.display())))
        .collect();
    assert!(rotated.iter().all(|p| p.exists()), "two rotated files are kept");
    assert!(
        !PathBuf::from(format!("{}.3", log.display())).exists(),
        "older ones are deleted"
    );
    let files = [rotated[0].as_path(), rotated[1].as_path(), log.as_path()];
    let v = verify(&files, &[]).unwrap();
    assert_eq!(v.last_seq, Some(40));
    // Out of order, the link between files breaks.
    assert!(matches!(
        verify(&[rotated[1].as_path(), rotated[0].as_path()], &[]),
        Err(VerifyError::Sequence { .. })
    ));
}

/// Rewrites `line` with its `hash` recomputed, as a forger who knows the format would.
fn rehash(line: &str) -> String {
    let body = &line[..line.len() - r#","hash":""#.len() - 64 - 2];
    format!(r#"{body},"hash":"{}"}}"#, hash_line(body.as_bytes()))
}

#[tokio::test]
async fn every_kind_of_tampering_is_named_at_the_line_that_was_changed() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    write_records(&config(&log, 1 << 30, 1), 6).await;
    let original = lines(&log);
    let p = dir.path().join("tampered.log");
    let check = |ls: &[String]| {
        std::fs::write(&p, ls.join("\n") + "\n").unwrap();
        verify(&[p.as_path()], &[])
    };

    // Line 2 edited: line 2 is named (it no longer matches its own hash).
    let mut edited = original.clone();
    edited[1] = edited[1].replace(r#""i":1"#, r#""i":9"#);
    assert!(matches!(check(&edited), Err(VerifyError::Edited { line: 2, .. })));
    // Line 2 edited and its hash recomputed: still line 2 (line 3 chains to the original).
    edited[1] = rehash(&edited[1]);
    let err = check(&edited).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Rewritten {
                line: 2,
                next_line: 3,
                ..
            }
        ),
        "{err}"
    );
    // The last line edited: named too.
    let mut last = original.clone();
    last[5] = last[5].replace(r#""i":5"#, r#""i":0"#);
    assert!(matches!(check(&last), Err(VerifyError::Edited { line: 6, .. })));

    let mut deleted = original.clone();
    deleted.remove(3);
    let err = check(&deleted).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Sequence {
                line: 4,
                got: 5,
                want: 4,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("record 4 was deleted"), "{err}");

    let mut reordered = original.clone();
    reordered.swap(1, 2);
    let err = check(&reordered).unwrap_err();
    assert!(matches!(err, VerifyError::Sequence { line: 2, .. }), "{err}");
    assert!(err.to_string().contains("reordered (seq 2 is at"), "{err}");

    let truncated = original.join("\n");
    std::fs::write(&p, &truncated[..truncated.len() - 10]).unwrap();
    assert!(matches!(
        verify(&[p.as_path()], &[]),
        Err(VerifyError::Truncated { .. })
    ));

    let mut garbage = original.clone();
    garbage[4] = "not json".into();
    assert!(matches!(check(&garbage), Err(VerifyError::Malformed { line: 5, .. })));

    assert_eq!(check(&original).unwrap().records, 6);
    let missing = dir.path().join("missing.log");
    assert!(verify(&[missing.as_path()], &[]).unwrap_err().is_unreadable());
    std::fs::write(&p, "").unwrap();
    let empty = verify(&[p.as_path()], &[]).unwrap();
    assert_eq!((empty.records, empty.first_seq), (0, None));
}

fn signed(path: &Path, dir: &Path, every: u64) -> (AuditConfig, VerifyingKey) {
    let (private, public) = checkpoint::generate_pem().unwrap();
    std::fs::write(dir.join("audit-signing-key.pem"), private).unwrap();
    std::fs::write(dir.join("audit-signing.pub"), public).unwrap();
    let mut cfg = config(path, 1 << 30, 1);
    cfg.checkpoint = Some(CheckpointConfig {
        key: dir.join("audit-signing-key.pem"),
        every,
        interval: Duration::from_secs(3600),
    });
    (cfg, VerifyingKey::load(&dir.join("audit-signing.pub")).unwrap())
}

#[tokio::test]
async fn checkpoints_every_n_records_and_at_shutdown_prove_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let (cfg, key) = signed(&log, dir.path(), 4);
    write_records(&cfg, 10).await;
    let recs: Vec<serde_json::Value> = lines(&log).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<&str> = recs.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    // 4 records, a checkpoint, 4 more, a checkpoint, the last 2, the shutdown checkpoint.
    assert_eq!(kinds.iter().filter(|k| **k == "checkpoint").count(), 3, "{kinds:?}");
    assert_eq!(
        (kinds[4], kinds[9], kinds[12]),
        ("checkpoint", "checkpoint", "checkpoint")
    );
    assert_eq!(recs[12]["reason"], "shutdown");
    let v = verify(&[log.as_path()], std::slice::from_ref(&key)).unwrap();
    let proven = v.proven.unwrap();
    assert_eq!(
        (v.records, proven.seq, proven.at_shutdown, v.unproven),
        (13, 13, true, 0)
    );
    // Without the key, the chain still verifies; checkpoints are counted.
    assert_eq!(verify(&[log.as_path()], &[]).unwrap().checkpoints, 3);
}

#[tokio::test]
async fn the_tail_is_proven_against_a_checkpoint_and_cuts_are_reported_as_unproven() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let (cfg, key) = signed(&log, dir.path(), 4);
    write_records(&cfg, 6).await;
    // 1-4, checkpoint (5), records 6-7, shutdown checkpoint (8).
    let original = lines(&log);
    assert_eq!(original.len(), 8);
    let p = dir.path().join("tampered.log");
    let keys = std::slice::from_ref(&key);
    let check = |ls: &[String]| {
        std::fs::write(&p, ls.join("\n") + "\n").unwrap();
        verify(&[p.as_path()], keys)
    };
    // The last record edited and rehashed: the shutdown checkpoint names it.
    let mut edited = original.clone();
    edited[6] = rehash(&edited[6].replace(r#""i":5"#, r#""i":0"#));
    assert!(matches!(check(&edited), Err(VerifyError::Rewritten { line: 7, .. })));
    // ... and with the checkpoint re-pointed at the forgery, its signature fails.
    edited[7] = rehash(&edited[7].replace(
        &original[7][17..81],
        &hash_line(&edited[6].as_bytes()[..edited[6].len() - 75]),
    ));
    let err = check(&edited).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Checkpoint {
                line: 8,
                why: CheckpointFault::BadSignature,
                ..
            }
        ),
        "{err}"
    );
    // The shutdown checkpoint and the last record cut off: what remains after the first
    // checkpoint is reported as unproven, never as proven.
    let v = check(&original[..7]).unwrap();
    assert_eq!((v.proven.as_ref().map(|p| p.seq), v.unproven), (Some(5), 2));
    assert!(!v.proven.unwrap().at_shutdown);
    // A key that did not sign the checkpoints proves nothing.
    let other = tempfile::tempdir().unwrap();
    let (_, other_key) = signed(&log, other.path(), 4);
    let err = verify(&[log.as_path()], &[other_key]).unwrap_err();
    assert!(matches!(
        err,
        VerifyError::Checkpoint {
            why: CheckpointFault::UnknownKey(_),
            ..
        }
    ));
}

#[tokio::test]
async fn a_restart_and_a_rotation_keep_checkpoints_provable_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let (mut cfg, key) = signed(&log, dir.path(), 1000);
    cfg.sink = SinkConfig::File {
        path: log.clone(),
        max_bytes: 600,
        keep: 5,
    };
    write_records(&cfg, 12).await;
    write_records(&cfg, 3).await;
    let mut files: Vec<PathBuf> = (1..=5)
        .rev()
        .map(|n| PathBuf::from(format!("{}.{n}", log.display())))
        .filter(|p| p.exists())
        .collect();
    assert!(files.len() >= 2, "rotated: {files:?}");
    for f in &files {
        // Each rotated file ends with the checkpoint written before it was rotated.
        let last: serde_json::Value = serde_json::from_str(lines(f).last().unwrap()).unwrap();
        assert_eq!(last["kind"], "checkpoint", "{}", f.display());
    }
    files.push(log.clone());
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let v = verify(&paths, std::slice::from_ref(&key)).unwrap();
    // 15 records and a checkpoint per rotation and per stop, one unbroken chain, nothing unproven.
    assert_eq!((v.first_seq, v.last_seq, v.unproven), (Some(1), Some(v.records), 0));
    assert_eq!(v.records - v.checkpoints, 15);
}

#[cfg(unix)]
#[tokio::test]
async fn group_commit_answers_after_the_write_and_refuses_when_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let mut cfg = config(&log, 1 << 30, 1);
    cfg.respond_after = RespondAfter::Durable;
    let (auditor, task) = Auditor::start(&cfg).unwrap();
    assert!(auditor.group_commit());
    let commit = || {
        auditor.commit(serde_json::json!({"kind": "test", "status": 200}), |r| {
            r["status"] = 503.into();
        })
    };
    assert_eq!(commit().await, Ok(()));
    // Released only once written: the record is in the file now.
    assert_eq!(lines(&log).len(), 1);
    drop(auditor);
    task.finish(Duration::from_secs(5)).await;

    // A disk that is full from the start: the very first response is refused.
    let full = dir.path().join("full.log");
    std::os::unix::fs::symlink("/dev/full", &full).unwrap();
    let mut cfg = config(&full, 1 << 30, 1);
    cfg.respond_after = RespondAfter::Durable;
    let (auditor, task) = Auditor::start(&cfg).unwrap();
    let commit = || {
        auditor.commit(serde_json::json!({"kind": "test", "status": 200}), |r| {
            r["status"] = 503.into();
        })
    };
    let sent = Instant::now();
    assert_eq!(commit().await, Err(CommitError::NotRecorded));
    // Known failing: the next one is refused without waiting for another write.
    let refused = commit().await;
    assert_eq!(refused, Err(CommitError::NotRecorded));
    assert!(sent.elapsed() < Duration::from_secs(2));
    drop(auditor);
    let delivery = task.finish(Duration::from_millis(300)).await;
    assert_eq!((delivery.diverted, delivery.lost, delivery.finished), (2, 0, true));
    assert!(!delivery.complete());
}

#[cfg(unix)]
#[tokio::test]
async fn a_sink_failing_at_shutdown_diverts_what_it_holds_and_says_how_many() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    std::os::unix::fs::symlink("/dev/full", &log).unwrap();
    let (auditor, task) = Auditor::start(&config(&log, 1 << 30, 1)).unwrap();
    for i in 0..3 {
        auditor
            .record(format!(r#"{{"kind":"test","i":{i}}}"#).into_bytes())
            .await;
    }
    let started = Instant::now();
    let delivery = task.finish(Duration::from_millis(500)).await;
    assert!(started.elapsed() < Duration::from_secs(3), "bounded by the deadline");
    assert_eq!((delivery.diverted, delivery.lost, delivery.finished), (3, 0, true));
    // A record arriving after the writer stopped goes to the last resort too, and is counted.
    auditor.record(br#"{"kind":"test","i":3}"#.to_vec()).await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_full_disk_fails_closed_and_recovers_without_losing_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let real = dir.path().join("real.log");
    // The audit path points at /dev/full: every write fails with ENOSPC, as on a full disk.
    std::os::unix::fs::symlink("/dev/full", &log).unwrap();
    let (auditor, task) = Auditor::start(&config(&log, 1 << 30, 1)).unwrap();
    assert!(auditor.accepting());
    auditor.record(br#"{"kind":"test","i":0}"#.to_vec()).await;
    let mut failed = false;
    for _ in 0..100 {
        if !auditor.accepting() {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(failed, "a failing sink must stop ztgate from accepting requests");

    // Space comes back: the writer reopens the path, writes the held record, accepts again.
    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink(&real, &log).unwrap();
    let mut recovered = false;
    for _ in 0..100 {
        if auditor.accepting() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(recovered, "the sink must recover by itself");
    auditor.record(br#"{"kind":"test","i":1}"#.to_vec()).await;
    drop(auditor);
    task.finish(Duration::from_secs(5)).await;
    let v = verify(&[real.as_path()], &[]).unwrap();
    assert_eq!(
        (v.records, v.first_seq, v.last_seq),
        (2, Some(1), Some(2)),
        "the held record was not lost"
    );
}
