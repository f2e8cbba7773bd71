use std::process::ExitCode;

/// jemalloc instead of glibc's malloc: ~6–7 % fewer instructions per request for 1–3 MiB more idle
/// RSS; mimalloc saved as much but cost 8–17 MiB idle and 46 KiB per connection (docs/performance.md,
/// "Global allocator"). The binary's choice only: the library and its tests keep the system allocator.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `eprintln!` and `println!` that cannot panic: a closed standard error or output (`ztgate check
/// 2>&1 | head -1`) must not turn exit 64 into a panic's 101. What cannot be written is lost either
/// way; the exit code still says what happened. (Shadows std's macros for this file.)
macro_rules! eprintln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}
macro_rules! println {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

use clap::Parser;
use ztgate::cli::{AuditCommand, CertsCommand, Cli, Command};
use ztgate::config::Config;
use ztgate::{app, demo, pki};

/// sysexits.h EX_USAGE / EX_CONFIG-style exit for a bad config, so scripts can tell it apart.
const EXIT_CONFIG: u8 = 64;
/// `audit verify`: a file or key cannot be read (sysexits.h EX_NOINPUT); 1 is tampering.
const EXIT_NO_INPUT: u8 = 66;
/// `audit verify --key`: the chain is intact but no signed checkpoint proves it.
const EXIT_NOT_PROVEN: u8 = 3;
/// sysexits.h EX_IOERR: ztgate stopped with audit records that did not reach the audit log.
const EXIT_AUDIT_INCOMPLETE: u8 = 74;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            let cfg = match Config::load(&config) {
                Ok(cfg) => cfg,
                Err(e) => return fail_config(&e.to_string()),
            };
            match runtime(&cfg.listener).block_on(app::run(cfg.clone())) {
                Ok(()) => ExitCode::SUCCESS,
                // A port in use or an unreachable CRL server is an environment problem, not a config one.
                // Records that did not reach the audit log: systemd and Kubernetes record the code.
                Err(errors) if errors.iter().any(|e| matches!(e, app::AppError::AuditIncomplete(_))) => {
                    eprintln!("{}", join(&errors));
                    ExitCode::from(EXIT_AUDIT_INCOMPLETE)
                }
                Err(errors)
                    if errors.iter().all(|e| {
                        matches!(
                            e,
                            app::AppError::Bind { .. } | app::AppError::CrlFetch(_) | app::AppError::Workers(_)
                        )
                    }) =>
                {
                    eprintln!("{}", join(&errors));
                    ExitCode::FAILURE
                }
                Err(errors) => {
                    let located: Vec<String> = errors.iter().map(|e| locate(&cfg, e)).collect();
                    fail_config(&located.join("\n"))
                }
            }
        }
        Command::Check { config } => check(&config),
        Command::Explain {
            config,
            cert,
            method,
            url,
            source_ip,
            headers,
            json,
        } => {
            let cfg = match Config::load(&config) {
                Ok(cfg) => cfg,
                Err(e) => return fail_config(&e.to_string()),
            };
            let req = app::ExplainRequest {
                cert,
                method,
                url,
                source_ip,
                headers,
            };
            match app::explain(&cfg, &req, json) {
                Ok(out) => {
                    print!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail_config(&e.to_string()),
            }
        }
        Command::Audit {
            command: AuditCommand::Verify { files, keys },
        } => audit_verify(&files, &keys),
        Command::Certs {
            command: CertsCommand::Dev { out, force },
        } => match pki::write_dev_pki(&out, force) {
            Ok(files) => {
                for f in files {
                    println!("wrote {}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Certs {
            command:
                CertsCommand::Issue {
                    spiffe_id,
                    dns,
                    ca_dir,
                    out,
                    name,
                    force,
                },
        } => {
            let name = name.unwrap_or_else(|| pki::IssueRequest::default_name(&spiffe_id));
            let req = pki::IssueRequest {
                spiffe_id,
                dns,
                name,
                force,
            };
            match pki::issue_from_dir(&ca_dir, &out, &req) {
                Ok(files) => {
                    for f in files {
                        println!("wrote {}", f.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Healthcheck { url, timeout } => {
            match current_thread().block_on(ztgate::app::admin::probe(&url, timeout)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo { config } => {
            // The default config is the checkout's `config/ztgate.toml`, relative to the working
            // directory: say so rather than leave "cannot read" alone.
            if !config.exists() {
                return fail_config(&format!(
                    "error: cannot read config file {}: no such file (the demo runs on the repository's \
                     config: start it from the root of the ztgate checkout, or pass --config PATH)",
                    config.display()
                ));
            }
            // The demo reads its config itself: the shared runtime's defaults.
            match shared_runtime(None).block_on(demo::run(&config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(demo::DemoError::Config(e)) => fail_config(&format!("error: {e}")),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `ztgate audit verify`; exit codes in docs/audit.md.
fn audit_verify(files: &[std::path::PathBuf], keys: &[std::path::PathBuf]) -> ExitCode {
    use ztgate::audit::{VerifyingKey, verify};
    let mut loaded = Vec::new();
    for k in keys {
        match VerifyingKey::load(k) {
            Ok(k) => loaded.push(k),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(EXIT_NO_INPUT);
            }
        }
    }
    let paths: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
    let v = match verify(&paths, &loaded) {
        Ok(v) => v,
        Err(e) if e.is_unreadable() => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_NO_INPUT);
        }
        Err(e) => {
            eprintln!("TAMPERED or damaged: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (Some(first), Some(last)) = (v.first_seq, v.last_seq) else {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        println!("EMPTY: no records in {}", names.join(", "));
        return if loaded.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_NOT_PROVEN)
        };
    };
    println!(
        "OK: {} record(s), seq {first}..{last}, chain intact ({} checkpoint(s))",
        v.records, v.checkpoints
    );
    if loaded.is_empty() {
        if v.checkpoints > 0 {
            println!("checkpoint signatures not checked: pass the public key with --key");
        }
        return ExitCode::SUCCESS;
    }
    match &v.proven {
        Some(p) => {
            println!(
                "PROVEN: seq {first}..{} by the checkpoint signed at {} ({}:{})",
                p.seq,
                p.ts,
                p.path.display(),
                p.line
            );
            if v.unproven == 0 {
                let end = if p.at_shutdown {
                    "; it is ztgate's shutdown checkpoint"
                } else {
                    ""
                };
                println!("nothing follows it{end}");
            } else {
                println!(
                    "UNPROVEN: {} record(s) after it (seq {}..{last}): written since, or the end of the log was cut off or edited",
                    v.unproven,
                    p.seq + 1
                );
            }
            ExitCode::SUCCESS
        }
        None => {
            println!(
                "NOT PROVEN: no checkpoint signed by the given key(s); {} record(s) unproven",
                v.unproven
            );
            ExitCode::from(EXIT_NOT_PROVEN)
        }
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    #[allow(clippy::expect_used)] // start-up: without a runtime there is nothing to run
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The runtime `ztgate run` starts on. `shared`: the work-stealing pool that runs everything.
/// `per-core`: the workers bring their own runtimes (`server::serve_per_core`); the main thread
/// keeps a small one for the rest (admin, reloads, CRL fetches, the drain), so that none of that
/// work (a policy compile, a metrics scrape) ever runs between a worker's requests.
fn runtime(listener: &ztgate::config::ListenerConfig) -> tokio::runtime::Runtime {
    match listener.runtime {
        ztgate::config::RuntimeModel::Shared => shared_runtime(Some(listener.workers.get())),
        ztgate::config::RuntimeModel::PerCore => current_thread(),
    }
}

/// A work-stealing runtime with `workers` threads (`None`: one per CPU).
fn shared_runtime(workers: Option<usize>) -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    #[allow(clippy::expect_used)] // start-up: without a runtime there is nothing to run
    builder.enable_all().build().expect("cannot start the tokio runtime")
}

/// `ztgate check`: every problem of the config and of the files it names, at once; exit 64 on any.
fn check(config: &std::path::Path) -> ExitCode {
    use ztgate::config::{ConfigError, files};
    let cfg = match Config::load(config) {
        Ok(cfg) => cfg,
        Err(ConfigError::Invalid(invalid)) => {
            // The files that could be opened are still looked into, so that one run shows it all.
            let readable: Vec<_> = invalid
                .files
                .iter()
                .filter(|f| files::check_access(f).is_none())
                .cloned()
                .collect();
            let (problems, other) = files::check_contents(&readable);
            let mut diagnostics = invalid.diagnostics.clone();
            diagnostics.problems.extend(problems);
            diagnostics.problems.sort_by_key(|p| (p.line, p.col));
            let mut out = vec![diagnostics.to_string()];
            out.extend(other.iter().map(ToString::to_string));
            let warnings = files::warning_lines(config, &invalid.warnings);
            if !warnings.is_empty() {
                out.push(warnings);
            }
            return fail_config(&out.join("\n"));
        }
        Err(e) => return fail_config(&e.to_string()),
    };
    if !cfg.warnings.is_empty() {
        eprintln!("{}", files::warning_lines(config, &cfg.warnings));
    }
    let (problems, other) = files::check_contents(&cfg.files);
    if !problems.is_empty() || !other.is_empty() {
        let mut out = Vec::new();
        if !problems.is_empty() {
            out.push(
                ztgate::config::Diagnostics {
                    path: config.to_path_buf(),
                    problems,
                }
                .to_string(),
            );
        }
        out.extend(other.iter().map(ToString::to_string));
        return fail_config(&out.join("\n"));
    }
    // Trust material that loads but no longer works: a stale CRL fails the check, an expired CA
    // next to valid ones is a warning.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let (stale, expired): (Vec<_>, Vec<_>) = ztgate::tls::stale_trust(&cfg.tls, now)
        .into_iter()
        .partition(ztgate::tls::StaleTrust::is_problem);
    for w in &expired {
        eprintln!("{}", located_at(&cfg, w.path(), "warning: ", &w.to_string()));
    }
    let stale: Vec<String> = stale
        .iter()
        .map(|p| located_at(&cfg, p.path(), "", &p.to_string()))
        .collect();
    match app::prepare(&cfg, ztgate::audit::Auditor::disabled()) {
        Ok(prepared) => {
            let policy = prepared.policy.load();
            for w in &policy.warnings {
                eprintln!(
                    "{}:{}:{}: warning: {}",
                    policy.source.display(),
                    w.line,
                    w.col,
                    w.message
                );
            }
            if !stale.is_empty() {
                return fail_config(&stale.join("\n"));
            }
            println!(
                "{}: OK ({} upstream(s), {} route(s), policy {})",
                config.display(),
                cfg.upstreams.len(),
                cfg.routes.len(),
                cfg.policy.file.display()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            let mut all: Vec<String> = errors.iter().map(|e| locate(&cfg, e)).collect();
            all.extend(stale);
            fail_config(&all.join("\n"))
        }
    }
}

/// An error found while loading a file the config names, positioned at the key that names it.
fn locate(cfg: &Config, e: &app::AppError) -> String {
    match e.file() {
        Some((path, keys)) => located_by(cfg, path, keys, "", &e.to_string()),
        None => e.to_string(),
    }
}

/// `config:line:col: {kind}[tls] cert = "...": {what}`; `kind` is "" or "warning: ".
fn located_at(cfg: &Config, path: &std::path::Path, kind: &str, what: &str) -> String {
    located_by(cfg, path, &[], kind, what)
}

/// As [`located_at`], at the one of `keys` that names `path` when the file is named by several.
fn located_by(cfg: &Config, path: &std::path::Path, keys: &[&str], kind: &str, what: &str) -> String {
    match cfg.file_ref_by(path, keys) {
        Some(f) => {
            let p = f.problem(what);
            format!("{}:{}:{}: {kind}{}", cfg.source.display(), p.line, p.col, p.message)
        }
        None => format!("{}: {kind}{what}", path.display()),
    }
}

fn join(errors: &[app::AppError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

fn fail_config(msg: &str) -> ExitCode {
    eprintln!("{msg}");
    ExitCode::from(EXIT_CONFIG)
}
