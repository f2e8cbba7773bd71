use super::*;
use crate::identity::SpiffeId;

fn peer(spiffe: Option<&str>, cn: Option<&str>) -> PeerIdentity {
    PeerIdentity {
        spiffe_id: spiffe.map(|s| SpiffeId::parse(s).unwrap()),
        spiffe_error: None,
        uris: spiffe.map(|s| vec![s.to_string()]).unwrap_or_default(),
        dns: vec![],
        emails: vec![],
        ips: vec![],
        common_name: cn.map(str::to_string),
        organizations: vec![],
        organizational_units: vec![],
        subject: String::new(),
        issuer: String::new(),
        serial: "01".into(),
        fingerprint_sha256: "00".repeat(32),
        not_before: 0,
        not_after: 1,
    }
}

const EXAMPLE: &str = include_str!("../../config/policy.toml");
const CLIENT: &str = "spiffe://ztgate.dev/ns/default/sa/client";
const ADMIN: &str = "spiffe://ztgate.dev/ns/ops/sa/admin";

fn decide<'p>(p: &'p Policy, who: &PeerIdentity, method: &str, path: &str) -> Decision<'p> {
    p.evaluate(&RequestFacts {
        peer: who,
        method: &Method::from_bytes(method.as_bytes()).unwrap(),
        path,
    })
}

#[test]
fn example_policy_lets_client_everywhere_but_admin() {
    let p = Policy::from_toml(Path::new("policy.toml"), EXAMPLE).unwrap();
    let client = peer(Some(CLIENT), Some("client"));
    let admin = peer(Some(ADMIN), Some("admin"));
    let stranger = peer(Some("spiffe://ztgate.dev/ns/default/sa/other"), Some("other"));
    let cases = [
        (&client, "GET", "/", true),
        (&client, "POST", "/api/items", true),
        (&client, "GET", "/admin", false),
        (&client, "GET", "/admin/users", false),
        (&client, "GET", "/administrator", true),
        (&admin, "GET", "/admin/users", true),
        (&admin, "DELETE", "/api/items/1", true),
        (&stranger, "GET", "/", false),
    ];
    for (who, method, path, want) in cases {
        let d = decide(&p, who, method, path);
        assert_eq!(d.allowed, want, "{} {method} {path}: {d:?}", who.display_name());
    }
    let d = decide(&p, &client, "GET", "/admin/x");
    assert_eq!((d.rule, d.reason), (Some("admin-area-only-for-ops"), "denied-by-rule"));
    let d = decide(&p, &stranger, "GET", "/");
    assert_eq!((d.rule, d.reason), (None, "no-matching-allow"));
}

#[test]
fn deny_overrides_an_earlier_allow() {
    let p = Policy::from_toml(
        Path::new("p.toml"),
        r#"
        [[rule]]
        id = "all"
        effect = "allow"
        spiffe_id = ["spiffe://corp.example/**"]
        [[rule]]
        id = "no-deletes"
        effect = "deny"
        methods = ["delete"]
        "#,
    )
    .unwrap();
    let web = peer(Some("spiffe://corp.example/ns/a/sa/web"), None);
    assert!(decide(&p, &web, "GET", "/x").allowed);
    let d = decide(&p, &web, "DELETE", "/x");
    assert_eq!((d.allowed, d.rule), (false, Some("no-deletes")));
}

#[test]
fn spiffe_globs_match_one_segment_and_the_trust_domain_exactly() {
    let p = Policy::from_toml(
        Path::new("p.toml"),
        r#"
        [[rule]]
        id = "web"
        effect = "allow"
        spiffe_id = ["spiffe://corp.example/ns/*/sa/web"]
        "#,
    )
    .unwrap();
    assert!(
        decide(
            &p,
            &peer(Some("spiffe://corp.example/ns/prod/sa/web"), None),
            "GET",
            "/"
        )
        .allowed
    );
    assert!(!decide(&p, &peer(Some("spiffe://corp.example/ns/prod/sa/db"), None), "GET", "/").allowed);
    assert!(
        !decide(
            &p,
            &peer(Some("spiffe://evil.example/ns/prod/sa/web"), None),
            "GET",
            "/"
        )
        .allowed
    );
    // A certificate without a SPIFFE ID never matches a SPIFFE condition.
    assert!(!decide(&p, &peer(None, Some("web")), "GET", "/").allowed);
}

#[test]
fn cn_condition_matches_exactly() {
    let p = Policy::from_toml(
        Path::new("p.toml"),
        "[[rule]]\nid = \"a\"\neffect = \"allow\"\ncn = [\"batch\"]\n",
    )
    .unwrap();
    assert!(decide(&p, &peer(None, Some("batch")), "GET", "/").allowed);
    assert!(!decide(&p, &peer(None, Some("batch2")), "GET", "/").allowed);
    assert!(!decide(&p, &peer(None, None), "GET", "/").allowed);
}

#[test]
fn every_problem_is_reported_with_its_line() {
    let text = "[[rule]]\nid = \"a\"\neffect = \"allow\"\npaths = [\"/v1*\"]\n\n[[rule]]\nid = \"a\"\neffect = \"permit\"\nspiffe_id = [\"http://x\"]\n";
    let Err(PolicyError::Invalid(d)) = Policy::from_toml(Path::new("p.toml"), text) else {
        panic!("expected invalid policy");
    };
    let got: Vec<(usize, &str)> = d.problems.iter().map(|p| (p.line, p.message.as_str())).collect();
    assert_eq!(got.len(), 4, "{d}");
    assert_eq!(got[0].0, 4);
    assert!(got[0].1.contains("whole segment"));
    assert_eq!(got[1].0, 7);
    assert!(got[1].1.contains("duplicate rule id `a` (first defined on line 2)"));
    assert_eq!(got[2].0, 8);
    assert!(got[2].1.contains("unknown effect `permit`"));
    assert_eq!(got[3].0, 9);
    assert!(d.to_string().starts_with("p.toml:4:"));
}

#[test]
fn unknown_keys_and_policies_without_allow_are_rejected() {
    let Err(PolicyError::Invalid(d)) = Policy::from_toml(
        Path::new("p.toml"),
        "[[rule]]\nid = \"a\"\neffect = \"allow\"\nspife_id = [\"x\"]\n",
    ) else {
        panic!("typo must be rejected");
    };
    assert_eq!(d.problems[0].line, 4, "{d}");
    assert!(d.problems[0].message.contains("spife_id"), "{d}");
    let Err(PolicyError::Invalid(d)) =
        Policy::from_toml(Path::new("p.toml"), "[[rule]]\nid = \"a\"\neffect = \"deny\"\n")
    else {
        panic!("deny-only policy must be rejected");
    };
    assert!(d.problems[0].message.contains("no allow rule"));
}
