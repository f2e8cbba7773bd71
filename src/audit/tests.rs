//! The writer and the verifier together, on real files.

use std::path::{Path, PathBuf};
use std::time::Duration;

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
        queue: 64,
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
    let v = verify(&[log.as_path()]).unwrap();
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
    let v = verify(&files).unwrap();
    assert_eq!(v.last_seq, Some(40));
    // Out of order, the link between files breaks.
    assert!(matches!(
        verify(&[rotated[1].as_path(), rotated[0].as_path()]),
        Err(VerifyError::Sequence { .. })
    ));
}

#[tokio::test]
async fn every_kind_of_tampering_is_detected_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    write_records(&config(&log, 1 << 30, 1), 6).await;
    let original = lines(&log);
    let check = |content: String| {
        let p = dir.path().join("tampered.log");
        std::fs::write(&p, content).unwrap();
        verify(&[p.as_path()])
    };
    let join = |ls: &[String]| ls.join("\n") + "\n";
    let p = |_: ()| dir.path().join("tampered.log");

    let mut edited = original.clone();
    edited[2] = edited[2].replace(r#""i":2"#, r#""i":9"#);
    assert_eq!(
        check(join(&edited)),
        Err(VerifyError::BrokenLink { path: p(()), line: 4 })
    );

    let mut deleted = original.clone();
    deleted.remove(3);
    assert_eq!(
        check(join(&deleted)),
        Err(VerifyError::Sequence {
            path: p(()),
            line: 4,
            got: 5,
            want: 4
        })
    );

    let mut reordered = original.clone();
    reordered.swap(1, 2);
    assert!(matches!(
        check(join(&reordered)),
        Err(VerifyError::Sequence { line: 2, .. })
    ));

    let truncated = join(&original);
    assert_eq!(
        check(truncated[..truncated.len() - 10].to_string()),
        Err(VerifyError::Truncated { path: p(()) })
    );

    let mut garbage = original.clone();
    garbage[4] = "not json".into();
    assert_eq!(
        check(join(&garbage)),
        Err(VerifyError::Malformed { path: p(()), line: 5 })
    );

    assert_eq!(check(join(&original)).unwrap().records, 6);
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
    let v = verify(&[real.as_path()]).unwrap();
    assert_eq!(
        (v.records, v.first_seq, v.last_seq),
        (2, Some(1), Some(2)),
        "the held record was not lost"
    );
}
