//! Command line (DESIGN.md "Contracts"): `run`, `check`, `certs dev`, `demo`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "ztgate", version, about = "Identity-aware mTLS reverse proxy")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Run {
        #[arg(long, short, default_value = "config/ztgate.toml")]
        config: PathBuf,
    },
    /// Validate the config, the policy and the TLS files without starting; print every problem.
    Check {
        #[arg(long, short, default_value = "config/ztgate.toml")]
        config: PathBuf,
    },
    /// Certificate helpers.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Everything a newcomer needs: dev PKI, an echo upstream and the proxy, with curl lines.
    Demo {
        #[arg(long, short, default_value = "config/ztgate.toml")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Mint a development PKI (CA, server, client and admin certificates; ECDSA P-256).
    Dev {
        #[arg(long, default_value = "certs/dev")]
        out: PathBuf,
        /// Replace an existing dev PKI.
        #[arg(long)]
        force: bool,
    },
}
