use std::net::IpAddr;

use http::{HeaderMap, Method};

use super::*;
use crate::identity::{PeerIdentity, SpiffeId};

fn peer(spiffe: Option<&str>, cn: Option<&str>) -> PeerIdentity {
    PeerIdentity {
        spiffe_id: spiffe.map(|s| SpiffeId::parse(s).unwrap()),
        spiffe_error: None,
        uris: spiffe.map(|s| vec![s.to_string()]).unwrap_or_default(),
        dns: vec!["web.corp.example".into()],
        emails: vec!["ops@corp.example".into()],
        ips: vec![],
        common_name: cn.map(str::to_string),
        organizations: vec!["Corp".into()],
        organizational_units: vec!["payments".into()],
        subject: String::new(),
        issuer: "CN=corp CA".into(),
        serial: "01".into(),
        fingerprint_sha256: "ab".repeat(32),
        spki_sha256: String::new(),
        not_before: 0,
        not_after: 1,
    }
}

const EXAMPLE: &str = include_str!("../../config/policy.toml");
const CLIENT: &str = "spiffe://ztgate.dev/ns/default/sa/client";
const ADMIN: &str = "spiffe://ztgate.dev/ns/ops/sa/admin";

/// A request as a test describes it.
struct Req<'a> {
    method: &'a str,
    path: &'a str,
    host: Option<&'a str>,
    route: Option<&'a str>,
    headers: HeaderMap,
    source: &'a str,
    posture: Option<crate::posture::PostureResult>,
    user: Option<crate::user::User>,
}

impl Default for Req<'_> {
    fn default() -> Self {
        Self {
            method: "GET",
            path: "/",
            host: Some("app.internal"),
            route: Some("default"),
            headers: HeaderMap::new(),
            source: "10.0.0.1",
            posture: None,
            user: None,
        }
    }
}

fn decide<'p>(p: &'p Policy, who: &PeerIdentity, r: &Req<'_>) -> Decision<'p> {
    let method = Method::from_bytes(r.method.as_bytes()).unwrap();
    let f = RequestFacts {
        peer: who,
        method: &method,
        path: r.path,
        host: r.host,
        route: r.route,
        headers: &r.headers,
        source_ip: r.source.parse::<IpAddr>().unwrap(),
        posture: r.posture.as_ref(),
        user: r.user.as_ref(),
    };
    let d = p.evaluate(&f);
    // The indexed evaluation and the exhaustive explanation must always agree.
    assert_eq!(
        p.explain(&f).decision,
        d,
        "index and explain disagree for {} {}",
        r.method,
        r.path
    );
    d
}

fn get<'a>(path: &'a str) -> Req<'a> {
    Req { path, ..Req::default() }
}

fn policy(text: &str) -> Policy {
    Policy::from_toml(Path::new("p.toml"), text).unwrap_or_else(|e| panic!("{e}"))
}

fn problems(text: &str) -> Vec<(usize, String)> {
    match Policy::from_toml(Path::new("p.toml"), text) {
        Err(PolicyError::Invalid(d)) => d.problems.into_iter().map(|p| (p.line, p.message)).collect(),
        other => panic!("expected an invalid policy, got {other:?}"),
    }
}

#[test]
fn example_policy_lets_client_everywhere_but_admin() {
    let p = policy(EXAMPLE);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
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
        let d = decide(&p, who, &Req { method, ..get(path) });
        assert_eq!(d.allowed, want, "{} {method} {path}: {d:?}", who.display_name());
    }
    let d = decide(&p, &client, &get("/admin/x"));
    assert_eq!(
        (d.rule, d.reason),
        (Some("admin-area-only-for-ops"), Reason::DeniedByRule)
    );
    let d = decide(&p, &stranger, &get("/"));
    assert_eq!((d.rule, d.reason), (None, Reason::NoAllowRule));
}

#[test]
fn deny_overrides_an_allow_whatever_the_order() {
    let p = policy(
        r#"
        [[rule]]
        id = "no-deletes"
        effect = "deny"
        methods = ["delete"]
        [[rule]]
        id = "all"
        effect = "allow"
        spiffe_id = ["spiffe://corp.example/**"]
        "#,
    );
    let web = peer(Some("spiffe://corp.example/ns/a/sa/web"), None);
    assert!(decide(&p, &web, &get("/x")).allowed);
    let d = decide(
        &p,
        &web,
        &Req {
            method: "DELETE",
            ..get("/x")
        },
    );
    assert_eq!((d.allowed, d.rule), (false, Some("no-deletes")));
}

#[test]
fn principal_conditions_each_match_their_certificate_field() {
    let who = peer(Some("spiffe://corp.example/ns/prod/sa/web"), Some("web"));
    let fp = "AB:".repeat(31) + "AB";
    let cases: &[(&str, bool)] = &[
        (r#"spiffe_id = ["spiffe://corp.example/ns/*/sa/web"]"#, true),
        (r#"spiffe_id = ["spiffe://corp.example/ns/*/sa/db"]"#, false),
        (r#"spiffe_id = ["spiffe://evil.example/ns/prod/sa/web"]"#, false),
        (r#"trust_domain = ["corp.example"]"#, true),
        (r#"trust_domain = ["other.example"]"#, false),
        (r#"cn = ["web"]"#, true),
        (r#"cn = ["we"]"#, false),
        (r#"dns = ["*.corp.example"]"#, true),
        (r#"dns = ["corp.example"]"#, false),
        (r#"email = ["@corp.example"]"#, true),
        (r#"email = ["root@corp.example"]"#, false),
        (r#"org = ["Corp"]"#, true),
        (r#"ou = ["payments", "risk"]"#, true),
        (r#"ou = ["risk"]"#, false),
        (r#"issuer = ["CN=corp CA"]"#, true),
        (r#"issuer = ["CN=other CA"]"#, false),
        (&format!(r#"fingerprint = ["{fp}"]"#), true),
        (&format!(r#"fingerprint = ["{}"]"#, "cd".repeat(32)), false),
    ];
    for (cond, want) in cases {
        let p = policy(&format!("[[rule]]\nid = \"r\"\neffect = \"allow\"\n{cond}\n"));
        assert_eq!(decide(&p, &who, &get("/")).allowed, *want, "{cond}");
    }
    // A certificate without a SPIFFE ID never matches a SPIFFE condition.
    let p = policy("[[rule]]\nid = \"r\"\neffect = \"allow\"\ntrust_domain = [\"corp.example\"]\n");
    assert!(!decide(&p, &peer(None, Some("web")), &get("/")).allowed);
}

#[test]
fn a_cn_spelling_a_spiffe_id_matches_no_spiffe_condition() {
    let rule = |cond: &str| policy(&format!("[[rule]]\nid = \"r\"\neffect = \"allow\"\n{cond}\n"));
    let real = peer(Some(ADMIN), Some("admin"));
    let forged = peer(None, Some(ADMIN));
    for cond in [
        format!("spiffe_id = [\"{ADMIN}\"]"),
        "spiffe_id = [\"spiffe://ztgate.dev/**\"]".to_string(),
        "trust_domain = [\"ztgate.dev\"]".to_string(),
    ] {
        let p = rule(&cond);
        assert!(decide(&p, &real, &get("/admin/x")).allowed, "{cond}");
        assert!(!decide(&p, &forged, &get("/admin/x")).allowed, "{cond}");
    }
    // And in the example policy, the forged admin is not admin (nor client).
    let p = policy(EXAMPLE);
    assert!(decide(&p, &real, &get("/admin/users")).allowed);
    assert!(!decide(&p, &forged, &get("/admin/users")).allowed);
    assert_eq!(forged.display_name().to_string(), format!("cn:{ADMIN}"));
}

#[test]
fn request_conditions_each_match_their_request_field() {
    let who = peer(Some(CLIENT), None);
    let mut with_header = HeaderMap::new();
    with_header.insert("x-env", "prod".parse().unwrap());
    let cases: Vec<(&str, Req<'_>, bool)> = vec![
        (r#"route = ["default"]"#, get("/"), true),
        (r#"route = ["billing"]"#, get("/"), false),
        (r#"host = ["*.internal"]"#, get("/"), true),
        (r#"host = ["billing.internal"]"#, get("/"), false),
        (r#"methods = ["get", "HEAD"]"#, get("/"), true),
        (r#"methods = ["POST"]"#, get("/"), false),
        (r#"paths = ["/v1/*/items"]"#, get("/v1/a/items"), true),
        (r#"paths = ["/v1/*/items"]"#, get("/v1/a/b/items"), false),
        (
            r#"headers = { X-Env = "prod" }"#,
            Req {
                headers: with_header.clone(),
                ..get("/")
            },
            true,
        ),
        (
            r#"headers = { x-env = "dev" }"#,
            Req {
                headers: with_header.clone(),
                ..get("/")
            },
            false,
        ),
        (
            r#"headers_present = ["x-env"]"#,
            Req {
                headers: with_header.clone(),
                ..get("/")
            },
            true,
        ),
        (r#"headers_present = ["x-env"]"#, get("/"), false),
        (r#"source_cidr = ["10.0.0.0/8"]"#, get("/"), true),
        (r#"source_cidr = ["192.168.0.0/16"]"#, get("/"), false),
    ];
    for (cond, req, want) in cases {
        let p = policy(&format!("[[rule]]\nid = \"r\"\neffect = \"allow\"\n{cond}\n"));
        assert_eq!(decide(&p, &who, &req).allowed, want, "{cond}");
    }
}

#[test]
fn all_any_and_not_compose() {
    let p = policy(
        r#"
        [[rule]]
        id = "composed"
        effect = "allow"
        any = [{ cn = ["a"] }, { cn = ["b"] }]
        all = [{ methods = ["GET"] }, { paths = ["/v1/**"] }]
        not = { paths = ["/v1/secret"] }
        "#,
    );
    let a = peer(None, Some("a"));
    assert!(decide(&p, &a, &get("/v1/x")).allowed);
    assert!(decide(&p, &peer(None, Some("b")), &get("/v1/x")).allowed);
    assert!(!decide(&p, &peer(None, Some("c")), &get("/v1/x")).allowed);
    assert!(
        !decide(
            &p,
            &a,
            &Req {
                method: "POST",
                ..get("/v1/x")
            }
        )
        .allowed
    );
    assert!(!decide(&p, &a, &get("/v1/secret")).allowed);
}

#[test]
fn groups_are_defined_once_and_reused() {
    let p = policy(
        r#"
        [group.ops]
        spiffe_id = ["spiffe://corp.example/ns/ops/**"]
        cn = ["break-glass"]

        [[rule]]
        id = "ops-everything"
        effect = "allow"
        group = ["ops"]
        "#,
    );
    assert!(decide(&p, &peer(Some("spiffe://corp.example/ns/ops/sa/x"), None), &get("/")).allowed);
    assert!(decide(&p, &peer(None, Some("break-glass")), &get("/")).allowed);
    assert!(!decide(&p, &peer(Some("spiffe://corp.example/ns/dev/sa/x"), None), &get("/")).allowed);
}

#[test]
fn shadow_rules_are_reported_but_never_change_the_decision() {
    let p = policy(
        r#"
        [[rule]]
        id = "app"
        effect = "allow"
        paths = ["/app/**"]
        [[rule]]
        id = "trial-deny-exports"
        effect = "deny"
        mode = "shadow"
        paths = ["/app/export"]
        [[rule]]
        id = "trial-open-reports"
        effect = "allow"
        mode = "shadow"
        paths = ["/reports/**"]
        "#,
    );
    let who = peer(None, Some("x"));
    let d = decide(&p, &who, &get("/app/export"));
    assert!(d.allowed, "a shadow deny must not deny");
    assert_eq!(
        d.shadow,
        Some(Shadow {
            rule: "trial-deny-exports",
            would_allow: false
        })
    );
    assert_eq!(d.shadow.unwrap().reason(), "shadow-deny");
    let d = decide(&p, &who, &get("/reports/q3"));
    assert!(!d.allowed, "a shadow allow must not allow");
    assert_eq!(d.shadow.as_ref().map(Shadow::reason), Some("shadow-allow"));
    assert_eq!(decide(&p, &who, &get("/app/x")).shadow, None);
}

#[test]
fn index_agrees_with_exhaustive_evaluation_on_many_rules() {
    let mut text = String::new();
    for i in 0..200 {
        let (effect, key) = if i % 7 == 0 {
            ("deny", "cn")
        } else {
            ("allow", "spiffe_id")
        };
        let value = if key == "cn" {
            format!("svc{i}")
        } else {
            format!("spiffe://corp.example/ns/n{}/sa/svc{i}", i % 5)
        };
        text += &format!(
            "[[rule]]\nid = \"r{i}\"\neffect = \"{effect}\"\n{key} = [\"{value}\"]\npaths = [\"/p{}/**\"]\n",
            i % 3
        );
    }
    text += "[[rule]]\nid = \"glob\"\neffect = \"allow\"\nspiffe_id = [\"spiffe://corp.example/ns/n1/**\"]\nroute = [\"default\"]\n";
    let p = policy(&text);
    for i in 0..200 {
        let who = peer(
            Some(&format!("spiffe://corp.example/ns/n{}/sa/svc{i}", i % 5)),
            Some(&format!("svc{i}")),
        );
        for path in ["/p0/x", "/p1/x", "/p2/x", "/other"] {
            decide(&p, &who, &get(path)); // asserts index == explain
        }
    }
}

#[test]
fn every_problem_is_reported_with_its_line() {
    let text = "[[rule]]\nid = \"a\"\neffect = \"allow\"\npaths = [\"/v1*\"]\n\n[[rule]]\nid = \"a\"\neffect = \"permit\"\nspiffe_id = [\"http://x\"]\n";
    let got = problems(text);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[0].0, 4);
    assert!(got[0].1.contains("whole segment"));
    assert_eq!(got[1].0, 7);
    assert!(got[1].1.contains("duplicate rule id `a` (first defined on line 2)"));
    assert_eq!(got[2].0, 8);
    assert!(got[2].1.contains("unknown effect `permit`"));
    assert_eq!(got[3].0, 9);
}

#[test]
fn typos_in_several_rules_are_all_reported_with_a_hint() {
    let got = problems(
        "[[rule]]\nid = \"a\"\neffect = \"allow\"\nspife_id = [\"x\"]\n\n[[rule]]\nid = \"b\"\nefect = \"allow\"\n",
    );
    let messages: Vec<&str> = got.iter().map(|(_, m)| m.as_str()).collect();
    assert!(
        messages.contains(&"unknown key `spife_id` (did you mean `spiffe_id`?)"),
        "{got:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("`efect` (did you mean `effect`?)")),
        "{got:?}"
    );
}

#[test]
fn patterns_that_can_never_match_are_errors() {
    for (cond, needle) in [
        (r#"paths = ["/a/../admin"]"#, "never appear"),
        (r#"paths = ["/%61dmin"]"#, "decoded to `a`"),
        (r#"paths = ["/a%2fb"]"#, "encoded `/`"),
        (r#"paths = ["//admin"]"#, "duplicate slashes"),
        (r#"spiffe_id = ["spiffe://Corp.Example/x"]"#, "lowercase"),
        (r#"group = ["nope"]"#, "unknown group `nope`"),
        (r#"fingerprint = ["abc"]"#, "SHA-256"),
        (r#"source_cidr = ["10.0.0.0/40"]"#, "prefix length"),
        (r#"posture = { managd = true }"#, "did you mean `managed`"),
        (r#"posture = { managed = "yes" }"#, "true or false"),
        (r#"posture = { min_os_version = "sonoma" }"#, "not a dotted version"),
        (r#"posture = { max_staleness = "1d" }"#, "unknown unit"),
        (r#"posture = {}"#, "requires nothing"),
        (r#"posture = true"#, "must be a table"),
        (
            r#"issuer = ["CN=corp CA, O=Corp"]"#,
            "not an RFC 4514 distinguished name",
        ),
        (r#"issuer = ["cn=corp CA"]"#, "writes this DN as `CN=corp CA`"),
    ] {
        let got = problems(&format!("[[rule]]\nid = \"r\"\neffect = \"allow\"\n{cond}\n"));
        assert!(
            got.iter().any(|(line, m)| *line >= 1 && m.contains(needle)),
            "{cond}: {got:?}"
        );
    }
}

#[test]
fn allow_rules_covered_by_a_deny_are_warned_about() {
    let p = policy(
        r#"
        [[rule]]
        id = "no-admin"
        effect = "deny"
        paths = ["/admin/**"]
        [[rule]]
        id = "admin-tools"
        effect = "allow"
        cn = ["ops"]
        paths = ["/admin/**"]
        [[rule]]
        id = "app"
        effect = "allow"
        paths = ["/app/**"]
        "#,
    );
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(
        p.warnings[0]
            .message
            .contains("`admin-tools` never takes effect: deny rule `no-admin`")
    );
    assert_eq!(p.warnings[0].line, 6);
}

#[test]
fn a_policy_without_enforced_allow_is_rejected() {
    let got = problems("[[rule]]\nid = \"a\"\neffect = \"allow\"\nmode = \"shadow\"\n");
    assert!(got[0].1.contains("no enforced allow rule"), "{got:?}");
}

#[test]
fn rule_rate_limits_are_checked_at_load_and_enforced_per_identity() {
    let p = policy(
        r#"
[[rule]]
id = "app"
effect = "allow"
paths = ["/app/**"]
rate_limit = { requests_per_second = 1, burst = 2 }

[[rule]]
id = "rest"
effect = "allow"
paths = ["/**"]
"#,
    );
    assert_eq!(
        p.rules()[0].rate_limit.map(|r| (r.per_second.get(), r.burst.get())),
        Some((1, 2))
    );
    let a: std::sync::Arc<str> = "spiffe://x/a".into();
    let b: std::sync::Arc<str> = "spiffe://x/b".into();
    assert!(p.check_rule_limit(0, &a).is_ok());
    assert!(p.check_rule_limit(0, &a).is_ok());
    assert!(p.check_rule_limit(0, &a).is_err(), "burst of 2 used up");
    assert!(p.check_rule_limit(0, &b).is_ok(), "another identity has its own budget");
    assert!(
        p.check_rule_limit(1, &a).is_ok(),
        "a rule without rate_limit is unlimited"
    );

    let errs = problems(
        r#"
[[rule]]
id = "d"
effect = "deny"
paths = ["/x"]
rate_limit = { requests_per_second = 5 }

[[rule]]
id = "a"
effect = "allow"
paths = ["/**"]
rate_limit = { requests_per_second = 0 }

[[rule]]
id = "b"
effect = "allow"
paths = ["/y"]
rate_limit = { rps = 5 }
"#,
    );
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert_eq!(errs[0].0, 6);
    assert!(errs[0].1.contains("enforced allow rule"), "{errs:?}");
    assert_eq!(errs[1].0, 12);
    assert!(errs[1].1.contains("between 1 and"), "{errs:?}");
    assert_eq!(errs[2].0, 18);
    assert!(errs[2].1.contains("unknown key `rps`"), "{errs:?}");
}

#[test]
fn may_allow_decides_on_the_certificate_alone_and_keeps_what_depends_on_the_request() {
    let p = policy(
        r#"
[[rule]]
id = "client-app"
effect = "allow"
spiffe_id = ["spiffe://ztgate.dev/ns/default/sa/client"]
paths = ["/app/**"]

[[rule]]
id = "any-office"
effect = "allow"
any = [{ cn = ["laptop"] }, { source_cidr = ["10.0.0.0/8"] }]

[[rule]]
id = "banned"
effect = "deny"
cn = ["banned"]

[[rule]]
id = "banned-maybe"
effect = "deny"
cn = ["sometimes"]
methods = ["DELETE"]

[[rule]]
id = "shadow-only"
effect = "allow"
mode = "shadow"
cn = ["shadowed"]
"#,
    );
    let client = peer(Some("spiffe://ztgate.dev/ns/default/sa/client"), None);
    assert!(p.may_allow(&client), "allowed on /app");
    // `any` with a request condition: may match any identity from the right network.
    let stranger = peer(Some("spiffe://other.example/x"), Some("stranger"));
    assert!(p.may_allow(&stranger), "source_cidr could still match");
    let banned = peer(None, Some("banned"));
    assert!(!p.may_allow(&banned), "an unconditional deny on the certificate");
    let sometimes = peer(None, Some("sometimes"));
    assert!(
        p.may_allow(&sometimes),
        "a deny that depends on the method is not everywhere"
    );

    let strict = policy(
        r#"
[[rule]]
id = "admin-only"
effect = "allow"
spiffe_id = ["spiffe://ztgate.dev/ns/ops/sa/admin"]
"#,
    );
    assert!(!strict.may_allow(&client));
    assert!(!strict.may_allow(&peer(None, Some("shadowed"))));
}

fn device(f: impl FnOnce(&mut crate::posture::DevicePosture)) -> Option<crate::posture::PostureResult> {
    let mut p = crate::posture::DevicePosture {
        managed: Some(true),
        disk_encrypted: Some(true),
        ..Default::default()
    };
    f(&mut p);
    Some(Ok(std::sync::Arc::new(p)))
}

#[test]
fn posture_requirements_gate_allow_rules_and_name_the_failed_requirement() {
    let p = policy(
        r#"
        [[rule]]
        id = "laptops"
        effect = "allow"
        spiffe_id = ["spiffe://ztgate.dev/**"]
        posture = { managed = true, disk_encrypted = true }

        [[rule]]
        id = "public"
        effect = "allow"
        spiffe_id = ["spiffe://ztgate.dev/**"]
        paths = ["/public/**"]
        "#,
    );
    assert!(p.uses_posture());
    let who = peer(Some(CLIENT), None);
    let healthy = Req {
        posture: device(|_| {}),
        ..get("/app")
    };
    let d = decide(&p, &who, &healthy);
    assert!(d.allowed);
    assert_eq!(d.rule, Some("laptops"));

    let unencrypted = Req {
        posture: device(|d| d.disk_encrypted = Some(false)),
        ..get("/app")
    };
    let d = decide(&p, &who, &unencrypted);
    assert!(!d.allowed);
    assert_eq!(d.reason, Reason::PostureFailed);
    assert_eq!(d.rule, Some("laptops"));
    assert_eq!(d.posture_failed, Some("disk_encrypted"));

    // Another allow rule without posture still applies where it matches.
    let public = Req {
        posture: device(|d| d.disk_encrypted = Some(false)),
        ..get("/public/x")
    };
    assert_eq!(decide(&p, &who, &public).rule, Some("public"));

    // Unknown device and no lookup at all: denied, fail closed, with the reason.
    let unknown = Req {
        posture: Some(Err(crate::posture::Unavailable::DeviceUnknown)),
        ..get("/app")
    };
    assert_eq!(decide(&p, &who, &unknown).posture_failed, Some("device-unknown"));
    assert_eq!(
        decide(&p, &who, &get("/app")).posture_failed,
        Some("posture-unavailable")
    );
    // Posture does not count against an identity no rule names.
    let stranger = peer(Some("spiffe://other.dev/x"), None);
    assert_eq!(decide(&p, &stranger, &unencrypted).reason, Reason::NoAllowRule);
}

#[test]
fn posture_on_a_deny_rule_is_refused() {
    let got = problems("[[rule]]\nid = \"r\"\neffect = \"deny\"\nposture = { managed = true }\n");
    assert!(
        got.iter().any(|(_, m)| m.contains("use it on an allow rule")),
        "{got:?}"
    );
}

#[test]
fn user_conditions_match_the_token_claims() {
    let p = policy(
        r#"
        [[rule]]
        id = "sre"
        effect = "allow"
        user_groups = ["sre", "oncall"]
        user_mfa = true
        [[rule]]
        id = "alice"
        effect = "allow"
        user_email = ["@corp.example"]
        user_sub = ["alice"]
        paths = ["/alice/**"]
        "#,
    );
    let who = peer(Some(CLIENT), None);
    let user = |sub: &str, groups: &[&str], amr: &[&str]| crate::user::User {
        sub: sub.into(),
        email: Some(format!("{sub}@corp.example")),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        amr: amr.iter().map(|g| g.to_string()).collect(),
        header: http::HeaderValue::from_static("x"),
    };
    let with = |u: Option<crate::user::User>, path| Req { user: u, ..get(path) };
    assert!(decide(&p, &who, &with(Some(user("bob", &["oncall"], &["pwd", "mfa"])), "/x")).allowed);
    assert!(!decide(&p, &who, &with(Some(user("bob", &["oncall"], &["pwd"])), "/x")).allowed);
    assert!(!decide(&p, &who, &with(Some(user("bob", &["dev"], &["mfa"])), "/x")).allowed);
    assert!(!decide(&p, &who, &with(None, "/x")).allowed);
    assert!(decide(&p, &who, &with(Some(user("alice", &[], &[])), "/alice/a")).allowed);
    assert!(!decide(&p, &who, &with(Some(user("alicia", &[], &[])), "/alice/a")).allowed);
    // User conditions depend on the request: they never close a connection on reload.
    assert!(p.may_allow(&who));
}

#[test]
fn an_unknown_method_is_refused_with_its_line_and_the_closest_known_one() {
    let got = problems("[[rule]]\nid = \"a\"\neffect = \"allow\"\nmethods = [\"GET\", \"GTE\"]\n");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, 4);
    assert!(
        got[0].1.starts_with("unknown HTTP method `GTE` (did you mean `GET`?)"),
        "{}",
        got[0].1
    );
    // Known methods, any case, WebDAV's included, are accepted.
    policy("[[rule]]\nid = \"a\"\neffect = \"allow\"\nmethods = [\"get\", \"PATCH\", \"propfind\"]\n");
}
