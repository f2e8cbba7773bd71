//! The `ztgate` binary's verbs: `check` reports every problem with file:line:col, `certs dev`
//! mints the documented file names.

use std::process::{Command, Output};

use crate::support::*;

fn ztgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ztgate")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn certs_dev_mints_the_documented_files_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dev");
    let o = ztgate(&["certs", "dev", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    for f in [
        "ca.pem",
        "server.pem",
        "server-key.pem",
        "client.pem",
        "client-key.pem",
        "admin.pem",
        "admin-key.pem",
        "audit-signing-key.pem",
        "audit-signing.pub",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // The audit signing pair is Ed25519 and belongs together.
    let signing = ztgate::audit::SigningKey::load(&out.join("audit-signing-key.pem")).unwrap();
    let verifying = ztgate::audit::VerifyingKey::load(&out.join("audit-signing.pub")).unwrap();
    assert_eq!(signing.id(), verifying.id());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["client-key.pem", "audit-signing-key.pem"] {
            let mode = std::fs::metadata(out.join(key)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "private keys must not be group/world readable");
        }
    }
    let client = std::fs::read(out.join("client.pem")).unwrap();
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(&client)
        .map(|c: rustls::pki_types::CertificateDer| c.to_vec())
        .unwrap();
    let id = ztgate::identity::PeerIdentity::from_der(&der).unwrap();
    assert_eq!(id.spiffe_id.unwrap().as_str(), CLIENT_ID);

    let again = ztgate(&["certs", "dev", "--out", out.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(text(&again).contains("--force"), "{}", text(&again));
}

/// A valid config (the minted PKI and the example policy) for `check`.
fn valid_config(pki: &Pki) -> std::path::PathBuf {
    let policy = pki.write("policy.toml", EXAMPLE_POLICY);
    let cfg = config_toml(pki.dir.path(), &policy, "", "http://127.0.0.1:8080", "", "/");
    pki.write("ztgate.toml", &cfg)
}

#[test]
fn check_accepts_a_valid_config() {
    let pki = Pki::new();
    let cfg = valid_config(&pki);
    let o = ztgate(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(": OK ("), "{}", text(&o));
}

#[test]
fn check_reports_every_config_problem_with_its_line() {
    let pki = Pki::new();
    let cfg = valid_config(&pki);
    let good = std::fs::read_to_string(&cfg).unwrap();
    let bad = good
        .replace("handshake_timeout = \"2s\"", "handshake_timeout = \"2 seconds\"")
        .replace("url = \"http://127.0.0.1:8080\"", "url = \"ftp://127.0.0.1:8080\"");
    std::fs::write(&cfg, &bad).unwrap();
    let o = ztgate(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    let out = text(&o);
    let line_of = |needle: &str| bad.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let path = cfg.display();
    assert!(
        out.contains(&format!(
            "{path}:{}:21: [listener] handshake_timeout: unknown unit",
            line_of("2 seconds")
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{path}:{}:7: [[upstream]] url: upstream url `ftp://",
            line_of("ftp://")
        )),
        "{out}"
    );
}

#[test]
fn check_names_the_line_of_a_typo() {
    let pki = Pki::new();
    let cfg = valid_config(&pki);
    let bad = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("client_ca =", "clent_ca =");
    std::fs::write(&cfg, &bad).unwrap();
    let o = ztgate(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64));
    let line = bad.lines().position(|l| l.contains("clent_ca")).unwrap() + 1;
    let out = text(&o);
    assert!(
        out.contains(&format!(
            ":{line}:1: in [tls]: unknown key `clent_ca` (did you mean `client_ca`?)"
        )),
        "{out}"
    );
}

#[test]
fn check_refuses_a_config_without_policy() {
    let pki = Pki::new();
    let cfg = valid_config(&pki);
    let text_ = std::fs::read_to_string(&cfg).unwrap();
    let start = text_.find("[policy]").unwrap();
    let end = start + text_[start..].find("[[upstream]]").unwrap();
    let bad = format!("{}{}", &text_[..start], &text_[end..]);
    std::fs::write(&cfg, bad).unwrap();
    let o = ztgate(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64));
    assert!(
        text(&o).contains("refuses to start without an explicit access policy"),
        "{}",
        text(&o)
    );
}

#[test]
fn check_reports_policy_and_certificate_problems_by_file() {
    let pki = Pki::new();
    let cfg = valid_config(&pki);
    pki.write(
        "policy.toml",
        "[[rule]]\nid = \"a\"\neffect = \"allow\"\nmethod = [\"GET\"]\n",
    );
    pki.write("server-key.pem", "not a key\n");
    let o = ztgate(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64));
    let out = text(&o);
    assert!(
        out.contains(&format!(
            "{}:4:1: unknown key `method` (did you mean `methods`?)",
            pki.path("policy.toml").display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{} contains no PEM private key",
            pki.path("server-key.pem").display()
        )),
        "{out}"
    );
}

/// `YYYY-MM-DDTHH:MM:SSZ`, as `check` prints times.
fn rfc3339(t: x509_parser::time::ASN1Time) -> String {
    let t = t.to_datetime();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A config whose `[tls]` lists `crl` (a file in the PKI dir) for `check`.
fn config_with_crl(pki: &Pki, crl_pem: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let crl = pki.write("ca.crl.pem", crl_pem);
    let policy = pki.write("policy.toml", EXAMPLE_POLICY);
    let tls = format!("crls = [\"{}\"]", crl.display());
    let cfg = config_toml(pki.dir.path(), &policy, &tls, "http://127.0.0.1:8080", "", "/");
    (pki.write("ztgate.toml", &cfg), crl)
}

#[test]
fn check_fails_on_a_crl_past_its_next_update_and_names_the_file_and_time() {
    use x509_parser::prelude::FromDer;
    let pki = Pki::new();
    let (cfg, _) = config_with_crl(&pki, &pki.ca.crl_pem(&[]).unwrap());
    let o = ztgate(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "a current CRL is fine: {}", text(&o));

    let stale = pki.ca.crl_pem_until(&[], -3600).unwrap();
    let (cfg, crl) = config_with_crl(&pki, &stale);
    let der = crl_der(&stale);
    let (_, parsed) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der).unwrap();
    let o = ztgate(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    // Positioned at the key that names the file, in the config.
    let want = format!(
        "{}:10:9: [tls] crls = \"{}\": CRL of `CN=test CA` is past its nextUpdate {}: every handshake it covers is refused (crl_expired)",
        cfg.display(),
        crl.display(),
        rfc3339(parsed.next_update().unwrap())
    );
    assert!(text(&o).contains(&want), "want {want}\n got {}", text(&o));
    assert!(!text(&o).contains(": OK ("), "{}", text(&o));
}

#[test]
fn check_warns_about_an_expired_ca_in_the_bundle_and_fails_when_none_is_valid() {
    use ztgate::pki::CertAuthority;
    let pki = Pki::new();
    let cfg = valid_config(&pki);
    let retired = CertAuthority::with_validity("retired CA", -400, -10).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(retired.der()).unwrap();
    let expired_at = rfc3339(cert.validity().not_after);
    let ca = pki.write("ca.pem", &format!("{}{}", pki.ca.cert_pem(), retired.cert_pem()));
    let o = ztgate(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "a warning is not a failure: {}", text(&o));
    let want = format!(
        "{}:9:13: warning: [tls] client_ca = \"{}\": CA `CN=retired CA` expired at {expired_at}: it verifies no client any more; remove it from the bundle",
        cfg.display(),
        ca.display()
    );
    assert!(text(&o).contains(&want), "want {want}\n got {}", text(&o));
    assert!(text(&o).contains(": OK ("), "{}", text(&o));

    // Only expired CAs: nobody can connect.
    pki.write("ca.pem", &retired.cert_pem());
    let o = ztgate(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert!(
        text(&o).contains(&format!(
            "{}:9:13: [tls] client_ca = \"{}\": CA `CN=retired CA` expired at {expired_at} and no CA in the bundle is valid",
            cfg.display(),
            ca.display()
        )),
        "{}",
        text(&o)
    );
}

/// A config for `check` with `tls_extra` in `[tls]`.
fn config_with_tls(pki: &Pki, tls_extra: &str) -> std::path::PathBuf {
    let policy = pki.write("policy.toml", EXAMPLE_POLICY);
    let cfg = config_toml(pki.dir.path(), &policy, tls_extra, "http://127.0.0.1:8080", "", "/");
    pki.write("ztgate.toml", &cfg)
}

#[test]
fn check_fails_on_a_client_ca_that_breaks_the_profile_unless_the_rule_is_relaxed() {
    use ztgate::pki::raw::{RawCa, ext};
    let pki = Pki::new();
    // What `openssl req -x509` makes with OpenSSL 3's default v3_ca section: no keyUsage.
    let openssl = RawCa::root_with("OpenSSL CA", |c| c.remove_extension(ext::KEY_USAGE)).unwrap();
    let ca = pki.write("ca.pem", &format!("{}{}", pki.ca.cert_pem(), openssl.cert_pem()));
    let cfg = config_with_tls(&pki, "");
    let o = ztgate(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    let want = format!(
        "{}:9:13: [tls] client_ca = \"{}\": the trust anchor `CN=OpenSSL CA` is a CA whose keyUsage is missing (RFC 5280 §4.2.1.3): no client chaining to it is accepted (profile_ca_key_usage); reissue the CA, or accept it with [tls.profile] relax = [\"ca-key-usage\"]",
        cfg.display(),
        ca.display()
    );
    assert!(text(&o).contains(&want), "want {want}\n got {}", text(&o));

    let cfg = config_with_tls(&pki, "[tls.profile]\nrelax = [\"ca-key-usage\"]");
    let o = ztgate(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    // ztgate's own CAs (rcgen, `ztgate certs dev`) conform.
    pki.write("ca.pem", &pki.ca.cert_pem());
    let o = ztgate(&["check", "--config", config_with_tls(&pki, "").to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn check_names_the_closest_profile_rule_and_the_allowed_chain_depth() {
    let pki = Pki::new();
    let good = config_with_tls(
        &pki,
        "[tls.profile]\nmax_chain_depth = 2\nrelax = [\"ca-key-usage\", \"aki-missing\"]",
    );
    let o = ztgate(&["check", "--config", good.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));

    let cfg = config_with_tls(
        &pki,
        "[tls.profile]\nmax_chain_depth = 9\nrelax = [\"ca-keyusage\", \"path\", \"chain-depth\"]",
    );
    let bad = std::fs::read_to_string(&cfg).unwrap();
    let line_of = |needle: &str| bad.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let o = ztgate(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    let out = text(&o);
    let depth = line_of("max_chain_depth");
    let relax = line_of("relax");
    for want in [
        format!(":{depth}:19: [tls] profile.max_chain_depth: max_chain_depth must be 0..=6"),
        format!(":{relax}:10: [tls] profile.relax: unknown profile rule `ca-keyusage` (did you mean `ca-key-usage`?)"),
        format!(":{relax}:25: [tls] profile.relax: `path` cannot be relaxed"),
        format!(":{relax}:33: [tls] profile.relax: `chain-depth` is not relaxed: set max_chain_depth instead"),
    ] {
        assert!(out.contains(&want), "want {want}\n got {out}");
    }
}

#[test]
fn run_exits_64_on_a_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("z.toml");
    std::fs::write(&cfg, "[listener]\naddress = \"nowhere\"\n").unwrap();
    let o = ztgate(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
}

#[test]
fn check_rejects_a_zero_rate_limit_with_its_line() {
    let pki = Pki::new();
    let cfg = valid_config(&pki);
    let text_ = std::fs::read_to_string(&cfg).unwrap() + "\n[rate_limit]\nrequests_per_second = 0\n";
    std::fs::write(&cfg, &text_).unwrap();
    let o = ztgate(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64));
    // The problem points at the `[rate_limit]` table.
    let line = text_.lines().position(|l| l == "[rate_limit]").unwrap() + 1;
    assert!(
        text(&o).contains(&format!(":{line}:1: rate_limit needs requests_per_second")),
        "{}",
        text(&o)
    );
}

#[tokio::test]
async fn healthcheck_exits_zero_on_a_healthy_admin_listener_and_names_the_failure_otherwise() {
    let mut s = Server::start(Opts::default()).await;
    let url = format!("http://{}/healthz", s.admin);
    let o = tokio::task::spawn_blocking(move || ztgate(&["healthcheck", "--url", &url]))
        .await
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let url = format!("http://{}/nope", s.admin);
    let o = tokio::task::spawn_blocking(move || ztgate(&["healthcheck", "--url", &url]))
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("HTTP 404"));
    let admin = s.admin;
    s.stop().await;
    let url = format!("http://{admin}/healthz");
    let o = tokio::task::spawn_blocking(move || ztgate(&["healthcheck", "--url", &url]))
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unhealthy") && err.contains("refused"), "{err}");
}

#[test]
fn run_refuses_to_start_when_a_fetched_crl_cannot_be_downloaded_yet() {
    let pki = Pki::new();
    let policy = pki.write("policy.toml", EXAMPLE_POLICY);
    // Port 1 on loopback: nothing listens, the download fails at once.
    let extra = format!(
        "crl_sources = [{{ url = \"http://127.0.0.1:1/ca.crl\", file = \"{}\" }}]",
        pki.path("never/ca.crl.pem").display()
    );
    let cfg = config_toml(pki.dir.path(), &policy, &extra, "http://127.0.0.1:8080", "", "/");
    let cfg = pki.write("ztgate.toml", &cfg);
    let o = ztgate(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("initial CRL download failed") && t.contains("127.0.0.1:1"),
        "{t}"
    );
    assert!(!pki.path("never/ca.crl.pem").exists());
}

#[test]
fn check_names_each_cluster_rate_limit_problem_at_its_line_and_a_good_table_passes() {
    let pki = Pki::new();
    let cfg = valid_config(&pki);
    let base = std::fs::read_to_string(&cfg).unwrap() + "\n[rate_limit]\nrequests_per_second = 5\n";
    let bad = base.clone()
        + "\n[cluster_rate_limit]\nredis_url = \"http://cache:6379\"\nca = \"ca.pem\"\non_error = \"maybe\"\nlease = 0\n";
    std::fs::write(&cfg, &bad).unwrap();
    let o = ztgate(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64));
    let line = |prefix: &str| bad.lines().position(|l| l.starts_with(prefix)).unwrap() + 1;
    for (key, problem) in [
        ("redis_url", "must start with redis:// or rediss://"),
        ("ca", "`ca` only applies to a rediss:// (TLS) redis_url"),
        ("on_error", "unknown on_error `maybe`"),
        ("lease", "lease must be between 1 and 1000"),
    ] {
        let at = format!(":{}:", line(&format!("{key} = ")));
        assert!(
            text(&o).lines().any(|l| l.contains(&at) && l.contains(problem)),
            "{key}: {problem}\n{}",
            text(&o)
        );
    }
    // A valid table: accepted without contacting Redis (nothing listens there).
    let good = base + "\n[cluster_rate_limit]\nredis_url = \"redis://127.0.0.1:1\"\ntimeout = \"20ms\"\n";
    std::fs::write(&cfg, &good).unwrap();
    let o = ztgate(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// `ca`, `client_cert` and `client_key` are looked into like the other PEM files a config names:
/// a private key given as the CA is reported at its line, not found out at run time as timeouts.
#[test]
fn check_looks_into_the_cluster_rate_limit_tls_files() {
    let pki = Pki::new();
    let cfg = valid_config(&pki);
    let base = std::fs::read_to_string(&cfg).unwrap() + "\n[rate_limit]\nrequests_per_second = 5\n";
    let bad = base.clone()
        + "\n[cluster_rate_limit]\nredis_url = \"rediss://cache:6380\"\nca = \"server-key.pem\"\nclient_cert = \"server-key.pem\"\nclient_key = \"ca.pem\"\n";
    std::fs::write(&cfg, &bad).unwrap();
    let o = ztgate(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    let line = |prefix: &str| bad.lines().position(|l| l.starts_with(prefix)).unwrap() + 1;
    let (p, dir) = (cfg.display(), pki.dir.path().display());
    let out = text(&o);
    assert!(
        out.lines().any(|l| l
            == format!(
                "{p}:{}:6: [cluster_rate_limit] ca = \"server-key.pem\": {dir}/server-key.pem contains no PEM certificate (\"-----BEGIN CERTIFICATE-----\")",
                line("ca = ")
            )),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with(&format!(
            "{p}:{}:15: [cluster_rate_limit] client_cert = \"server-key.pem\": {dir}/server-key.pem contains no PEM certificate",
            line("client_cert = ")
        ))),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with(&format!(
            "{p}:{}:14: [cluster_rate_limit] client_key = \"ca.pem\": ",
            line("client_key = ")
        ))),
        "{out}"
    );
    // The CA that signed Redis' certificate, and no client certificate: passes.
    let good = base + "\n[cluster_rate_limit]\nredis_url = \"rediss://cache:6380\"\nca = \"ca.pem\"\n";
    std::fs::write(&cfg, &good).unwrap();
    let o = ztgate(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// A Redis URL's password is never echoed: `check` shows it as `***`.
#[test]
fn check_never_shows_the_redis_password() {
    let pki = Pki::new();
    let cfg = valid_config(&pki);
    let bad = std::fs::read_to_string(&cfg).unwrap()
        + "\n[rate_limit]\nrequests_per_second = 5\n\n[cluster_rate_limit]\nredis_url = \"redis://:hunter2@127.0.0.1:notaport\"\n";
    std::fs::write(&cfg, &bad).unwrap();
    let o = ztgate(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("[cluster_rate_limit] redis_url: redis_url `redis://:***@127.0.0.1:notaport`: "),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "{out}");
}

/// A lease as large as the smallest shared burst is valid but warned about, at its line: one
/// replica can take the whole burst. Below it, nothing is said.
#[test]
fn check_warns_when_the_cluster_lease_reaches_the_smallest_burst() {
    let pki = Pki::new();
    let cfg = valid_config(&pki);
    let base = std::fs::read_to_string(&cfg).unwrap()
        + "\n[rate_limit]\nrequests_per_second = 5\nburst = 40\n\n[[route]]\nname = \"tight\"\npath_prefix = \"/tight\"\nupstream = \"app\"\nrate_limit = { requests_per_second = 1, burst = 8 }\n";
    let risky = base.clone() + "\n[cluster_rate_limit]\nredis_url = \"redis://127.0.0.1:1\"\nlease = 8\n";
    std::fs::write(&cfg, &risky).unwrap();
    let o = ztgate(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "a warning, not an error: {}", text(&o));
    let line = risky.lines().position(|l| l == "lease = 8").unwrap() + 1;
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim_end(),
        format!(
            "{}:{line}:9: warning: [cluster_rate_limit] lease: 8 is at least the burst of route `tight` (8): one replica can take the whole burst in one round trip, and requests to the other replicas are refused until it refills; keep lease well below the smallest burst",
            cfg.display()
        )
    );
    let fine = base + "\n[cluster_rate_limit]\nredis_url = \"redis://127.0.0.1:1\"\nlease = 3\n";
    std::fs::write(&cfg, &fine).unwrap();
    let o = ztgate(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(o.stderr.is_empty(), "{}", text(&o));
}
