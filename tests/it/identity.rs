//! What the upstream learns about the client cannot be confused: DNs are RFC 4514 strings whose
//! values cannot pose as separators, and `x-ztgate-identity` reads as a SPIFFE ID only for a
//! verified SVID.

use http::StatusCode;
use ztgate::identity::parse_xfcc;
use ztgate::pki::LeafSpec;

use crate::support::*;

/// An RFC 4514 string's attributes as `(type, value)`, split on unescaped `,` and `+` and
/// unescaped (`\X` and `\HH`), written independently of ztgate's own parser.
fn rfc4514_attributes(dn: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut bytes = Vec::new();
    let mut ty = None;
    let mut it = dn.bytes().peekable();
    while let Some(b) = it.next() {
        match b {
            b'\\' => {
                let c = it.next().expect("escape at the end");
                if c.is_ascii_hexdigit() && it.peek().is_some_and(u8::is_ascii_hexdigit) {
                    let lo = it.next().unwrap();
                    bytes.push(u8::from_str_radix(&format!("{}{}", c as char, lo as char), 16).unwrap());
                } else {
                    bytes.push(c);
                }
            }
            b'=' if ty.is_none() => ty = Some(String::from_utf8(std::mem::take(&mut bytes)).unwrap()),
            b',' | b'+' => out.push((
                ty.take().unwrap(),
                String::from_utf8(std::mem::take(&mut bytes)).unwrap(),
            )),
            _ => bytes.push(b),
        }
    }
    out.push((ty.take().unwrap(), String::from_utf8(bytes).unwrap()));
    out
}

#[test]
fn the_test_parser_splits_only_on_unescaped_separators() {
    assert_eq!(
        rfc4514_attributes(r"CN=client,O=Acme\, CN=admin+OU=a\2Bb"),
        [("CN", "client"), ("O", "Acme, CN=admin"), ("OU", "a+b")].map(|(t, v)| (t.to_string(), v.to_string()))
    );
    // Without the escape, the same text is two CNs: what an unescaped rendering would have said.
    let unescaped = rfc4514_attributes("O=Acme, CN=admin, CN=client");
    assert_eq!(unescaped.iter().filter(|(t, _)| t.trim() == "CN").count(), 2);
}

#[tokio::test]
async fn a_subject_value_with_separators_reaches_the_upstream_as_one_attribute() {
    let s = Server::start(Opts::default()).await;
    let mut spec = LeafSpec::client("client", Some(CLIENT_ID));
    spec.organization = Some("Acme, CN=admin".into());
    let crafted = s.pki.issue(&spec);
    let r = Client::new(&s.pki.ca.cert_pem(), Some(&crafted))
        .get(s.addr, "/hello")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let xfcc = echoed(&r.body, "x-forwarded-client-cert");
    assert_eq!(xfcc.len(), 1);
    let elements = parse_xfcc(xfcc[0]).unwrap();
    let subject = &elements[0].iter().find(|(k, _)| k == "Subject").unwrap().1;
    assert_eq!(subject, r"CN=client,O=Acme\, CN=admin");
    let attributes = rfc4514_attributes(subject);
    let cns: Vec<_> = attributes
        .iter()
        .filter(|(t, _)| t == "CN")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(cns, ["client"], "exactly one CN, and not `admin`: {attributes:?}");
    let orgs: Vec<_> = attributes
        .iter()
        .filter(|(t, _)| t == "O")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(orgs, ["Acme, CN=admin"]);

    // A plain certificate's subject is unchanged by escaping.
    let plain = s.client().get(s.addr, "/hello").await.unwrap();
    assert!(
        echoed(&plain.body, "x-forwarded-client-cert")[0].contains(r#";Subject="CN=client";"#),
        "{}",
        plain.body
    );
}

#[tokio::test]
async fn a_cn_spelling_a_spiffe_id_is_typed_upstream_and_is_not_the_svid() {
    let policy = format!(
        r#"
[[rule]]
id = "by-cn"
effect = "allow"
cn = ["{ADMIN_ID}"]
paths = ["/public/**"]

[[rule]]
id = "ops-admin"
effect = "allow"
spiffe_id = ["{ADMIN_ID}"]
"#
    );
    let s = Server::start(Opts {
        policy,
        ..Opts::default()
    })
    .await;
    let forged = s.pki.issue(&LeafSpec::client(ADMIN_ID, None));
    let forged = Client::new(&s.pki.ca.cert_pem(), Some(&forged));

    let r = forged.get(s.addr, "/public/x").await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        echoed(&r.body, "x-ztgate-identity"),
        ["cn:spiffe://ztgate.dev/ns/ops/sa/admin"]
    );
    assert!(!echoed(&r.body, "x-forwarded-client-cert")[0].contains("URI="));
    // The SPIFFE rule does not take the CN for an SVID.
    let denied = forged.get(s.addr, "/admin/users").await.unwrap();
    assert_eq!(denied.status, StatusCode::FORBIDDEN);

    // The real SVID is still named by its bare SPIFFE ID.
    let real = s.admin_client().get(s.addr, "/admin/users").await.unwrap();
    assert_eq!(real.status, StatusCode::OK);
    assert_eq!(echoed(&real.body, "x-ztgate-identity"), [ADMIN_ID]);
}
