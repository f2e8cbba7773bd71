use std::process::ExitCode;

use clap::Parser;
use ztgate::cli::{AuditCommand, CertsCommand, Cli, Command};
use ztgate::config::Config;
use ztgate::{app, demo, pki};

/// sysexits.h EX_USAGE / EX_CONFIG-style exit for a bad config, so scripts can tell it apart.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            let cfg = match Config::load(&config) {
                Ok(cfg) => cfg,
                Err(e) => return fail_config(&e.to_string()),
            };
            match runtime().block_on(app::run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                // A port in use or an unreachable CRL server is an environment problem, not a config one.
                Err(errors)
                    if errors
                        .iter()
                        .all(|e| matches!(e, app::AppError::Bind { .. } | app::AppError::CrlFetch(_))) =>
                {
                    eprintln!("{}", join(&errors));
                    ExitCode::FAILURE
                }
                Err(errors) => fail_config(&join(&errors)),
            }
        }
        Command::Check { config } => {
            let cfg = match Config::load(&config) {
                Ok(cfg) => cfg,
                Err(e) => return fail_config(&e.to_string()),
            };
            // Trust material that loads but no longer works: a stale CRL fails the check, an
            // expired CA next to valid ones is a warning.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            let (stale, expired): (Vec<_>, Vec<_>) = ztgate::tls::stale_trust(&cfg.tls, now)
                .into_iter()
                .partition(ztgate::tls::StaleTrust::is_problem);
            for w in &expired {
                eprintln!("{}: warning: {w}", w.path().display());
            }
            let stale: Vec<String> = stale.iter().map(|p| format!("{}: {p}", p.path().display())).collect();
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
                    let mut all: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    all.extend(stale);
                    fail_config(&all.join("\n"))
                }
            }
        }
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
            command: AuditCommand::Verify { files },
        } => {
            let paths: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
            match ztgate::audit::verify(&paths) {
                Ok(v) => {
                    println!(
                        "OK: {} record(s), seq {}..{}, chain intact",
                        v.records,
                        v.first_seq.map_or("-".into(), |s| s.to_string()),
                        v.last_seq.map_or("-".into(), |s| s.to_string())
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("TAMPERED or damaged: {e}");
                    ExitCode::FAILURE
                }
            }
        }
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
        Command::Demo { config } => match runtime().block_on(demo::run(&config)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    #[allow(clippy::expect_used)] // start-up: without a runtime there is nothing to run
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn runtime() -> tokio::runtime::Runtime {
    #[allow(clippy::expect_used)] // start-up: without a runtime there is nothing to run
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime")
}

fn join(errors: &[app::AppError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

fn fail_config(msg: &str) -> ExitCode {
    eprintln!("{msg}");
    ExitCode::from(EXIT_CONFIG)
}
