use std::time::{Duration, SystemTime};

use super::*;

fn posture(text: &str) -> DevicePosture {
    serde_json::from_str::<RawPosture>(text)
        .unwrap()
        .into_posture()
        .unwrap()
}

#[test]
fn versions_compare_numerically_with_missing_parts_as_zero() {
    let v = |s| Version::parse(s).unwrap();
    assert!(v("14.10") > v("14.9"));
    assert_eq!(v("14"), v("14.0.0"));
    assert!(v("14.2.1") >= v("14.2"));
    assert!(v("13.6.9") < v("14.2"));
    assert_eq!(v("14.2-beta"), v("14.2"));
    assert_eq!(Version::parse("sonoma"), None);
    assert_eq!(Version::parse(""), None);
    assert_eq!(Version::parse("1.2.3.4.5"), None);
}

#[test]
fn every_stated_requirement_must_hold_and_the_first_failure_is_named() {
    let now = SystemTime::now();
    let good = Ok(Arc::new(DevicePosture {
        managed: Some(true),
        disk_encrypted: Some(true),
        firewall: Some(true),
        os: Some("macos".into()),
        os_version: Version::parse("14.5"),
        last_seen: Some(now - Duration::from_secs(3600)),
        tags: vec!["corp".into(), "eng".into()],
    }));
    let req = Requirement {
        managed: Some(true),
        disk_encrypted: Some(true),
        firewall: Some(true),
        os: vec!["macos".into(), "linux".into()],
        min_os_version: Version::parse("14.2"),
        max_staleness: Some(Duration::from_secs(86_400)),
        tags: vec!["corp".into()],
    };
    assert_eq!(req.check(Some(&good), now), Ok(()));
    let with = |f: &dyn Fn(&mut DevicePosture)| {
        let mut p = (**good.as_ref().unwrap()).clone();
        f(&mut p);
        req.check(Some(&Ok(Arc::new(p))), now)
    };
    assert_eq!(with(&|p| p.disk_encrypted = Some(false)), Err("disk_encrypted"));
    // An attribute the provider does not report fails: unknown is not "fine".
    assert_eq!(with(&|p| p.managed = None), Err("managed"));
    assert_eq!(with(&|p| p.firewall = None), Err("firewall"));
    assert_eq!(with(&|p| p.os = Some("windows".into())), Err("os"));
    assert_eq!(
        with(&|p| p.os_version = Version::parse("14.1.9")),
        Err("min_os_version")
    );
    assert_eq!(with(&|p| p.os_version = None), Err("min_os_version"));
    assert_eq!(
        with(&|p| p.last_seen = Some(now - Duration::from_secs(90_000))),
        Err("max_staleness")
    );
    assert_eq!(with(&|p| p.last_seen = None), Err("max_staleness"));
    assert_eq!(with(&|p| p.tags = vec!["eng".into()]), Err("tags"));
    // Fail closed when posture is unknown or could not be looked up.
    assert_eq!(req.check(None, now), Err("posture-unavailable"));
    assert_eq!(
        req.check(Some(&Err(Unavailable::ServiceDown)), now),
        Err("service-down")
    );
    assert_eq!(
        req.check(Some(&Err(Unavailable::DeviceUnknown)), now),
        Err("device-unknown")
    );
}

#[test]
fn posture_records_parse_timestamps_and_refuse_unknown_keys() {
    let p = posture(r#"{"os": "macOS", "os_version": "14.2", "last_seen": "2026-11-23T08:00:00Z"}"#);
    assert_eq!(p.os.as_deref(), Some("macos"));
    assert_eq!(
        p.last_seen,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_420_800))
    );
    assert_eq!(
        posture(r#"{"last_seen": 1795420800}"#).last_seen,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_420_800))
    );
    assert!(serde_json::from_str::<RawPosture>(r#"{"disk_encripted": true}"#).is_err());
    let bad = serde_json::from_str::<RawPosture>(r#"{"last_seen": "yesterday"}"#).unwrap();
    assert!(bad.into_posture().unwrap_err().contains("RFC 3339"));
}

#[test]
fn inventories_normalise_fingerprints_and_report_the_line_of_a_mistake() {
    let text = "[device.\"AB:CD:EF\"]\nmanaged = true\n\n[device.\"serial-2\"]\nmanagd = true\n";
    let err = inventory::parse(text, false, DeviceIdSource::Fingerprint).unwrap_err();
    assert!(err.contains("line 5"), "{err}");
    assert!(err.contains("managd"), "{err}");
    let ok = inventory::parse(
        "[device.\"AB:CD:EF\"]\nmanaged = true\n",
        false,
        DeviceIdSource::Fingerprint,
    )
    .unwrap();
    assert_eq!(ok.get("abcdef").and_then(|p| p.managed), Some(true));
    let json = inventory::parse(
        r#"{"device": {"spiffe://td/dev/1": {"os_version": "1.2"}}}"#,
        true,
        DeviceIdSource::UriSan,
    )
    .unwrap();
    assert!(json.contains_key("spiffe://td/dev/1"));
    let err = inventory::parse(
        r#"{"device": {"x": {"os_version": "v"}}}"#,
        true,
        DeviceIdSource::Serial,
    )
    .unwrap_err();
    assert!(err.contains("device `x`"), "{err}");
}

#[test]
fn thumbprints_compare_base64url_against_hex_fingerprints() {
    use base64::Engine;
    let fp = [0xabu8; 32];
    let hex: String = fp.iter().map(|b| format!("{b:02x}")).collect();
    let x5t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(fp);
    assert!(crate::jwt::thumbprint_matches(&x5t, &hex));
    let other = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xacu8; 32]);
    assert!(!crate::jwt::thumbprint_matches(&other, &hex));
    assert!(!crate::jwt::thumbprint_matches("not base64!", &hex));
    assert!(!crate::jwt::thumbprint_matches(&x5t, &hex[..62]));
}

#[test]
fn jwks_files_refuse_symmetric_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, r#"{"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}"#).unwrap();
    let err = crate::jwt::Jwks::load(&path, vec![jsonwebtoken::Algorithm::ES256], None, None, 0)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("symmetric"), "{err}");
    std::fs::write(&path, r#"{"keys": []}"#).unwrap();
    let err = crate::jwt::Jwks::load(&path, vec![jsonwebtoken::Algorithm::ES256], None, None, 0)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no key"), "{err}");
}
