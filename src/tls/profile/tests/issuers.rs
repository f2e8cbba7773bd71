//! Real issuers' certificates, minted the way each writes them.

use super::*;

// Real issuers' certificates, minted the way each writes them (assumptions from their sources and
// defaults as of 2025, stated per issuer; docs/security.md repeats them).

/// SPIRE server CA (self-signed, no UpstreamAuthority): subject `C=US, O=SPIFFE`, the trust
/// domain as a URI SAN, critical basicConstraints cA, critical keyUsage
/// certSign+cRLSign+digitalSignature, a subjectKeyIdentifier (Go). X.509-SVID: subject
/// `C=US, O=SPIRE, x500UniqueIdentifier=…`, critical basicConstraints cA FALSE, critical keyUsage
/// digitalSignature+keyEncipherment+keyAgreement, EKU serverAuth+clientAuth, the SPIFFE ID as
/// the only (non-critical) URI SAN, SKI, AKI (Go copies the parent's SKI), 128-bit serial.
#[test]
fn spire_x509_svids_pass() {
    let ca = RawCa::root_with("", |c| {
        c.subject = raw::name(&[(raw::OID_C, "US"), (raw::OID_O, "SPIFFE")]);
        c.issuer = c.subject.clone();
        c.extension_mut(ext::KEY_USAGE).unwrap().value =
            ext::key_usage(&[ext::DIGITAL_SIGNATURE, ext::KEY_CERT_SIGN, ext::CRL_SIGN]);
        c.push_extension(
            ext::SUBJECT_ALT_NAME,
            false,
            ext::general_names(&[ext::uri("spiffe://example.org")]),
        );
    })
    .unwrap();
    let downstream = ca
        .intermediate_with("", |c| {
            c.subject = raw::name(&[(raw::OID_C, "US"), (raw::OID_O, "SPIFFE"), (raw::OID_UNIQUE_ID, "a1b2")]);
            c.push_extension(
                ext::SUBJECT_ALT_NAME,
                false,
                ext::general_names(&[ext::uri("spiffe://example.org")]),
            );
        })
        .unwrap();
    let svid = |ca: &RawCa| {
        leaf(ca, |c| {
            c.subject = raw::name(&[
                (raw::OID_C, "US"),
                (raw::OID_O, "SPIRE"),
                (raw::OID_UNIQUE_ID, "9f86d081"),
            ]);
            c.push_extension(ext::BASIC_CONSTRAINTS, true, ext::basic_constraints(false, None));
            c.extension_mut(ext::KEY_USAGE).unwrap().value =
                ext::key_usage(&[ext::DIGITAL_SIGNATURE, ext::KEY_ENCIPHERMENT, ext::KEY_AGREEMENT]);
            c.extension_mut(ext::EXT_KEY_USAGE).unwrap().value =
                ext::ext_key_usage(&[ext::EKU_SERVER_AUTH, ext::EKU_CLIENT_AUTH]);
            let id = raw::key_id(&c.spki);
            c.push_extension(ext::SUBJECT_KEY_ID, false, ext::subject_key_id(&id));
        })
    };
    allowed(&[&svid(&ca)], &[&ca.der]);
    allowed(&[&svid(&downstream), &downstream.der], &[&ca.der]);
}

/// cert-manager: a `SelfSigned` issuer's `isCA: true` Certificate (critical basicConstraints cA,
/// critical keyUsage digitalSignature+keyEncipherment+certSign: cert-manager adds certSign to a
/// CA's usages, SKI from Go, no AKI), then a `CA` issuer's leaf with only `dnsNames` (empty
/// subject, so Go marks the SAN critical), critical keyUsage digitalSignature+keyEncipherment,
/// no EKU, a 128-bit serial that may need the DER sign octet.
#[test]
fn cert_manager_ca_issuer_certificates_pass() {
    let ca = RawCa::root_with("cluster-ca", |c| {
        c.extension_mut(ext::KEY_USAGE).unwrap().value =
            ext::key_usage(&[ext::DIGITAL_SIGNATURE, ext::KEY_ENCIPHERMENT, ext::KEY_CERT_SIGN]);
    })
    .unwrap();
    let l = leaf(&ca, |c| {
        c.subject = raw::cn("");
        c.serial = [&[0x00][..], &[0xc3; 16]].concat();
        c.extension_mut(ext::KEY_USAGE).unwrap().value =
            ext::key_usage(&[ext::DIGITAL_SIGNATURE, ext::KEY_ENCIPHERMENT]);
        c.remove_extension(ext::EXT_KEY_USAGE);
        let san = c.extension_mut(ext::SUBJECT_ALT_NAME).unwrap();
        san.critical = true;
        san.value = ext::general_names(&[ext::dns("api.default.svc.cluster.local")]);
    });
    allowed(&[&l], &[&ca.der]);
}

/// Vault PKI: a root with critical basicConstraints cA and keyUsage certSign+cRLSign, SKI and an
/// AKI naming its own key, a 20-octet serial (< 2^159); a role's leaf with CN and DNS SANs,
/// critical keyUsage digitalSignature+keyAgreement+keyEncipherment, EKU serverAuth+clientAuth,
/// SKI, AKI, and the mount's AIA (issuing certificate URL).
#[test]
fn vault_pki_certificates_pass() {
    let serial = || [&[0x5a][..], &[0x17; 19]].concat();
    let ca = RawCa::root_with("vault-root", |c| {
        c.serial = serial();
        let id = raw::key_id(&c.spki);
        c.push_extension(ext::AUTHORITY_KEY_ID, false, ext::authority_key_id(&id));
    })
    .unwrap();
    let int = ca.intermediate_with("vault-int", |c| c.serial = serial()).unwrap();
    let ca_issuers = raw::seq(&[&raw::seq(&[
        &raw::oid(&[1, 3, 6, 1, 5, 5, 7, 48, 2]),
        &ext::uri("https://vault.example:8200/v1/pki_int/ca"),
    ])]);
    let l = leaf(&int, |c| {
        c.serial = serial();
        c.subject = raw::cn("app.service.consul");
        c.extension_mut(ext::KEY_USAGE).unwrap().value =
            ext::key_usage(&[ext::DIGITAL_SIGNATURE, ext::KEY_ENCIPHERMENT, ext::KEY_AGREEMENT]);
        c.extension_mut(ext::EXT_KEY_USAGE).unwrap().value =
            ext::ext_key_usage(&[ext::EKU_SERVER_AUTH, ext::EKU_CLIENT_AUTH]);
        c.extension_mut(ext::SUBJECT_ALT_NAME).unwrap().value = ext::general_names(&[ext::dns("app.service.consul")]);
        let id = raw::key_id(&c.spki);
        c.push_extension(ext::SUBJECT_KEY_ID, false, ext::subject_key_id(&id));
        c.push_extension(ext::AUTHORITY_INFO_ACCESS, false, ca_issuers);
    });
    allowed(&[&l, &int.der], &[&ca.der]);
}

/// step-ca (`step ca init`): root with critical basicConstraints cA pathLen 1 and intermediate
/// with pathLen 0, both critical keyUsage certSign+cRLSign, SKI, the intermediate's AKI; a leaf
/// from the default template: CN and SANs, critical keyUsage digitalSignature, EKU
/// serverAuth+clientAuth, SKI, AKI, and step's non-critical provisioner extension.
#[test]
fn step_ca_certificates_pass() {
    let ca = RawCa::root_with("Smallstep Root CA", |c| {
        c.extension_mut(ext::BASIC_CONSTRAINTS).unwrap().value = ext::basic_constraints(true, Some(1));
    })
    .unwrap();
    let int = ca
        .intermediate_with("Smallstep Intermediate CA", |c| {
            c.extension_mut(ext::BASIC_CONSTRAINTS).unwrap().value = ext::basic_constraints(true, Some(0));
        })
        .unwrap();
    let l = leaf(&int, |c| {
        c.subject = raw::cn("svc.internal");
        c.extension_mut(ext::EXT_KEY_USAGE).unwrap().value =
            ext::ext_key_usage(&[ext::EKU_SERVER_AUTH, ext::EKU_CLIENT_AUTH]);
        c.extension_mut(ext::SUBJECT_ALT_NAME).unwrap().value = ext::general_names(&[ext::dns("svc.internal")]);
        let id = raw::key_id(&c.spki);
        c.push_extension(ext::SUBJECT_KEY_ID, false, ext::subject_key_id(&id));
        c.push_extension(
            &[1, 3, 6, 1, 4, 1, 37476, 9000, 64, 1],
            false,
            raw::seq(&[&raw::tlv(0x02, &[1])]),
        );
    });
    allowed(&[&l, &int.der], &[&ca.der]);
}

/// `openssl req -x509` with OpenSSL 3's default `v3_ca` section: critical basicConstraints cA,
/// SKI, an AKI naming its own key, and no keyUsage at all. Refused by `ca-key-usage`, which is
/// why that rule is relaxable.
#[test]
fn an_openssl_default_ca_needs_ca_key_usage_relaxed() {
    let ca = RawCa::root_with("OpenSSL Test CA", |c| {
        c.remove_extension(ext::KEY_USAGE);
        let id = raw::key_id(&c.spki);
        c.push_extension(ext::AUTHORITY_KEY_ID, false, ext::authority_key_id(&id));
    })
    .unwrap();
    refused(Rule::CaKeyUsage, &[&leaf(&ca, |_| {})], &[&ca.der]);
}
