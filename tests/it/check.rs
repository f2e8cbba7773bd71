//! `ztgate check` tells every problem at once, each where it is (issue #19 item 9): problems in
//! several sections and missing files in one run, each with the config's file:line:col and the
//! key; relative paths are relative to the config file's folder, from any working directory, with
//! a warning when the working directory (what ztgate used to read) holds another file.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use http::StatusCode;

use crate::support::*;

/// `ztgate ARGS` run from `cwd`.
fn ztgate_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ztgate"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// A dev PKI in `root/pki`, an empty `root/conf` for the config and `root/elsewhere` to run from.
fn layout(pki: &Pki) -> (PathBuf, PathBuf) {
    let root = pki.dir.path();
    let (conf, elsewhere) = (root.join("conf"), root.join("elsewhere"));
    std::fs::create_dir_all(root.join("pki")).unwrap();
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    for name in ["server.pem", "server-key.pem", "ca.pem"] {
        std::fs::copy(root.join(name), root.join("pki").join(name)).unwrap();
    }
    (conf, elsewhere)
}

/// A config whose paths are all relative to `conf/`.
fn relative_config(upstream: &str, audit: &str) -> String {
    format!(
        r#"[listener]
address = "127.0.0.1:0"

[tls]
cert = "../pki/server.pem"
key = "../pki/server-key.pem"
client_ca = "../pki/ca.pem"

[policy]
file = "policy.toml"

[[upstream]]
name = "app"
url = "{upstream}"

[[route]]
name = "default"
upstream = "app"

[audit]
file = "{audit}"

[log]
format = "json"
"#
    )
}

#[test]
fn check_reports_every_problem_in_every_section_and_each_missing_file_with_its_key() {
    let pki = Pki::new();
    let (conf, elsewhere) = layout(&pki);
    // Three independent problems in three sections (a wrong type used to stop deserialisation of
    // the whole file), and two files that do not exist.
    let cfg = r#"[listener]
address = "127.0.0.1:0"
max_connections = "lots"

[tls]
cert = "certs/server.pem"
key = "../pki/server-key.pem"
client_ca = "../pki/ca.pem"

[policy]
file = "policy.toml"

[[upstream]]
name = "app"
url = "ftp://127.0.0.1:1"

[[route]]
name = "default"
upstream = "app"

[audit]
file = "audit.log"
fsync = "sometimes"
"#;
    let path = conf.join("ztgate.toml");
    std::fs::write(&path, cfg).unwrap();
    let o = ztgate_in(&elsewhere, &["check", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(64), "{stderr}");
    let (p, c) = (path.display(), conf.display());
    let expected = [
        format!("{p}:3:19: [listener] max_connections: expected a whole number (no quotes), found the string \"lots\""),
        format!(
            "{p}:6:8: [tls] cert = \"certs/server.pem\": cannot read {c}/certs/server.pem: No such file or directory (os error 2)"
        ),
        format!(
            "{p}:11:8: [policy] file = \"policy.toml\": cannot read {c}/policy.toml: No such file or directory (os error 2)"
        ),
        format!(
            "{p}:15:7: [[upstream]] url: upstream url `ftp://127.0.0.1:1` must be http://host:port or https://host:port"
        ),
        format!("{p}:23:9: [audit] fsync: unknown value `sometimes` (expected \"batch\" or \"interval\")"),
    ];
    assert_eq!(stderr.lines().collect::<Vec<_>>(), expected);
    assert!(o.stdout.is_empty());

    // The same config with the problems fixed passes, from the same working directory.
    std::fs::write(conf.join("policy.toml"), EXAMPLE_POLICY).unwrap();
    let fixed = cfg
        .replace("max_connections = \"lots\"\n", "")
        .replace("certs/server.pem", "../pki/server.pem")
        .replace("ftp://", "http://")
        .replace("fsync = \"sometimes\"\n", "");
    std::fs::write(&path, fixed).unwrap();
    let o = ztgate_in(&elsewhere, &["check", "--config", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn check_names_the_key_of_a_file_that_exists_but_holds_no_certificate() {
    let pki = Pki::new();
    let (conf, elsewhere) = layout(&pki);
    std::fs::write(conf.join("policy.toml"), EXAMPLE_POLICY).unwrap();
    std::fs::write(conf.join("notes.txt"), "not a certificate\n").unwrap();
    let cfg = relative_config("http://127.0.0.1:1", "audit.log").replace("../pki/ca.pem", "notes.txt");
    let path = conf.join("ztgate.toml");
    std::fs::write(&path, cfg).unwrap();
    let o = ztgate_in(&elsewhere, &["check", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(64), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "{}:7:13: [tls] client_ca = \"notes.txt\": {}/notes.txt contains no PEM certificate (\"-----BEGIN CERTIFICATE-----\")",
            path.display(),
            conf.display()
        )
    );

    // With a problem in the config as well, the files that can be opened are still looked into:
    // the config's problem, the CA's and the policy's, in one run.
    std::fs::write(
        conf.join("policy.toml"),
        "[[rule]]\nid = \"a\"\neffect = \"allow\"\nmethod = [\"GET\"]\n",
    )
    .unwrap();
    let cfg = std::fs::read_to_string(&path)
        .unwrap()
        .replace("url = \"http://", "url = \"ftp://");
    std::fs::write(&path, cfg).unwrap();
    let o = ztgate_in(&elsewhere, &["check", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(64), "{stderr}");
    let (p, c) = (path.display(), conf.display());
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            format!(
                "{p}:7:13: [tls] client_ca = \"notes.txt\": {c}/notes.txt contains no PEM certificate (\"-----BEGIN CERTIFICATE-----\")"
            ),
            format!(
                "{p}:14:7: [[upstream]] url: upstream url `ftp://127.0.0.1:1` must be http://host:port or https://host:port"
            ),
            format!("{c}/policy.toml:4:1: unknown key `method` (did you mean `methods`?)"),
        ]
    );
}

#[test]
fn a_file_named_by_two_keys_is_reported_at_the_key_it_fails_for() {
    let pki = Pki::new();
    let (conf, elsewhere) = layout(&pki);
    std::fs::write(conf.join("policy.toml"), EXAMPLE_POLICY).unwrap();
    // The TLS private key, also given (by mistake) as the IdP's CA bundle: it holds no
    // certificate, which is jwks_ca's problem, not [tls] key's.
    let cfg = relative_config("http://127.0.0.1:1", "audit.log")
        + "\n[user_auth]\nissuer = \"https://idp.test\"\naudience = \"ztgate\"\n\
           jwks_url = \"https://idp.test/keys\"\njwks_ca = \"../pki/server-key.pem\"\n";
    let line = cfg.lines().position(|l| l.starts_with("jwks_ca")).unwrap() + 1;
    let path = conf.join("ztgate.toml");
    std::fs::write(&path, cfg).unwrap();
    let o = ztgate_in(&elsewhere, &["check", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(64), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "{}:{line}:11: [user_auth] jwks_ca = \"../pki/server-key.pem\": user tokens: jwks_ca: {}/pki/server-key.pem contains no PEM certificate (\"-----BEGIN CERTIFICATE-----\")",
            path.display(),
            pki.dir.path().display()
        )
    );
}

/// `ztgate run` from a working directory that is not the config's folder: every relative path
/// (certificates, key, CA, policy, audit log) is the config folder's, and requests are served.
#[tokio::test]
async fn relative_paths_are_relative_to_the_config_file_from_any_working_directory() {
    let pki = Pki::new();
    let (conf, elsewhere) = layout(&pki);
    std::fs::write(conf.join("policy.toml"), EXAMPLE_POLICY).unwrap();
    let upstream = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(ztgate::demo::echo_upstream(l));
        url
    };
    let path = conf.join("ztgate.toml");
    std::fs::write(&path, relative_config(&upstream, "audit/ztgate-audit.log")).unwrap();

    let o = ztgate_in(&elsewhere, &["check", "--config", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.stderr.is_empty(),
        "no warning: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    // The config named relative to the working directory works as well.
    let o = ztgate_in(
        &pki.dir.path().join("pki"),
        &["check", "--config", "../conf/ztgate.toml"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let mut child = Command::new(env!("CARGO_BIN_EXE_ztgate"))
        .args(["run", "--config", path.to_str().unwrap()])
        .current_dir(&elsewhere)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: std::net::SocketAddr = loop {
        let line = lines.next().expect("ztgate exited before it was ready").unwrap();
        if let Some(rest) = line.split("\"listen\":\"").nth(1) {
            break rest.split('"').next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let client = Client::new(&pki.ca.cert_pem(), Some(&pki.client));
    let reply = client.get(addr, "/hello").await.unwrap();
    signal(&child, "TERM");
    let _ = child.wait();
    assert_eq!(reply.status, StatusCode::OK);
    // The audit log is the config folder's, not the working directory's.
    let records = audit_records(&conf.join("audit/ztgate-audit.log"));
    assert!(records.iter().any(|r| r["path"] == "/hello"), "{records:?}");
    assert!(!elsewhere.join("audit").exists());
}

/// An operator who relied on the working directory is told, once, which file is read now.
#[test]
fn a_relative_path_the_working_directory_resolves_elsewhere_is_warned_about_once() {
    let pki = Pki::new();
    let (conf, elsewhere) = layout(&pki);
    std::fs::write(conf.join("policy.toml"), EXAMPLE_POLICY).unwrap();
    // What an older ztgate, started from `elsewhere`, would have read.
    std::fs::write(elsewhere.join("policy.toml"), EXAMPLE_POLICY).unwrap();
    let path = conf.join("ztgate.toml");
    std::fs::write(&path, relative_config("http://127.0.0.1:1", "audit.log")).unwrap();
    let now = std::fs::canonicalize(conf.join("policy.toml")).unwrap();
    let before = std::fs::canonicalize(elsewhere.join("policy.toml")).unwrap();
    let warning = format!(
        "[policy] file = \"policy.toml\": this is {}: relative paths are relative to the config file's folder; the working directory's {} is another file, which earlier ztgate versions read and this one does not",
        now.display(),
        before.display()
    );

    let o = ztgate_in(&elsewhere, &["check", "--config", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim_end(),
        format!("{}:10:8: warning: {warning}", path.display())
    );
    // From the config's own folder nothing differs, so nothing is said.
    let o = ztgate_in(&conf, &["check", "--config", "ztgate.toml"]);
    assert!(o.status.success() && o.stderr.is_empty(), "{o:?}");

    // `run` logs it once, at start.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ztgate"))
        .args(["run", "--config", path.to_str().unwrap()])
        .current_dir(&elsewhere)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut warned = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains("\"ztgate ready\"") {
            break;
        }
        warned.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    let _ = child.kill();
    let _ = child.wait();
    let warned: Vec<_> = warned
        .iter()
        .filter(|l| l["message"].as_str() == Some(warning.as_str()))
        .collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert_eq!(warned[0]["level"], "WARN");
    assert_eq!(warned[0]["line"], 10);
    assert_eq!(warned[0]["col"], 8);
}

/// The shipped `config/ztgate.toml` (paths relative to its folder) checks from any working
/// directory, with the dev PKI where its comments say to mint it.
#[test]
fn the_shipped_config_checks_from_any_working_directory() {
    let root = tempfile::tempdir().unwrap();
    let (conf, elsewhere) = (root.path().join("config"), root.path().join("elsewhere"));
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["ztgate.toml", "policy.toml"] {
        std::fs::copy(repo.join("config").join(name), conf.join(name)).unwrap();
    }
    let o = ztgate_in(root.path(), &["certs", "dev", "--out", "certs/dev"]);
    assert!(o.status.success(), "{o:?}");
    let path = conf.join("ztgate.toml");
    let o = ztgate_in(&elsewhere, &["check", "--config", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim_end(),
        format!(
            "{}: OK (1 upstream(s), 1 route(s), policy {})",
            path.display(),
            conf.join("policy.toml").display()
        )
    );
}

/// The shipped config lists every `[cluster_rate_limit]` key, commented out, with its default;
/// uncommented (without the TLS files, which need a `rediss://` Redis) the table checks as it is.
#[test]
fn the_shipped_config_lists_the_cluster_rate_limit_keys_and_they_check_uncommented() {
    let root = tempfile::tempdir().unwrap();
    let conf = root.path().join("config");
    std::fs::create_dir_all(&conf).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(repo.join("config/policy.toml"), conf.join("policy.toml")).unwrap();
    let shipped = std::fs::read_to_string(repo.join("config/ztgate.toml")).unwrap();
    for key in [
        "[cluster_rate_limit]",
        "redis_url = ",
        "ca = ",
        "client_cert = ",
        "client_key = ",
        "timeout = \"50ms\"",
        "on_error = \"closed\"",
        "lease = 5 ",
        "key_prefix = \"ztgate:rl:\"",
    ] {
        assert!(
            shipped.lines().any(|l| l.starts_with(&format!("# {key}"))),
            "no commented-out `{key}` in config/ztgate.toml"
        );
    }
    let mut in_table = false;
    let uncommented: String = shipped
        .lines()
        .map(|l| {
            if l == "# [cluster_rate_limit]" {
                in_table = true;
                return "[cluster_rate_limit]\n".to_string();
            }
            let key = l.strip_prefix("# ").filter(|rest| in_table && rest.contains(" = "));
            match key {
                Some(rest) if !rest.starts_with("ca ") && !rest.starts_with("client_") => format!("{rest}\n"),
                Some(_) => format!("{l}\n"),
                None => {
                    in_table = in_table && l.starts_with('#');
                    format!("{l}\n")
                }
            }
        })
        .collect();
    assert!(
        uncommented.contains("\n[cluster_rate_limit]\nredis_url = "),
        "{uncommented}"
    );
    let path = conf.join("ztgate.toml");
    std::fs::write(&path, &uncommented).unwrap();
    let o = ztgate_in(root.path(), &["certs", "dev", "--out", "certs/dev"]);
    assert!(o.status.success(), "{o:?}");
    let o = ztgate_in(&conf, &["check", "--config", "ztgate.toml"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.stderr.is_empty(),
        "no warning: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}
