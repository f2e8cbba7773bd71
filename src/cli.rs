//! Command line (DESIGN.md "Contracts"): `run`, `check`, `explain`, `audit verify`, `certs dev`,
//! `certs issue`, `healthcheck`, `demo`. A usage error (unknown flag, missing value) exits 2.

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
        /// The config file (TOML).
        #[arg(long, short, default_value = "config/ztgate.toml")]
        config: PathBuf,
    },
    /// Validate the config, the policy and the TLS files without starting; print every problem.
    Check {
        /// The config file (TOML).
        #[arg(long, short, default_value = "config/ztgate.toml")]
        config: PathBuf,
    },
    /// Show the decision a request would get, the rule that made it, and why other rules did not
    /// match.
    Explain {
        /// The config file (TOML).
        #[arg(long, short, default_value = "config/ztgate.toml")]
        config: PathBuf,
        /// The client certificate (PEM) the request would be made with.
        #[arg(long)]
        cert: PathBuf,
        #[arg(long, default_value = "GET")]
        method: String,
        /// Full URL, e.g. https://localhost:8443/admin/users
        #[arg(long)]
        url: String,
        /// Client address, for `source_cidr` conditions.
        #[arg(long, default_value = "127.0.0.1")]
        source_ip: std::net::IpAddr,
        /// Request header `name: value` (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Certificate helpers.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Probe the admin listener (exit 0 on HTTP 200): the container HEALTHCHECK, which has no
    /// curl in a distroless image.
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:9090/healthz")]
        url: String,
        #[arg(long, default_value = "3s", value_parser = parse_timeout)]
        timeout: std::time::Duration,
    },
    /// Everything a newcomer needs: dev PKI, an echo upstream and the proxy, with curl lines.
    Demo {
        /// The config file (TOML).
        #[arg(long, short, default_value = "config/ztgate.toml")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Mint a development PKI (CA, server, client and admin certificates; ECDSA P-256). The CA's
    /// key is kept as ca-key.pem (mode 0600) so that `certs issue` can mint more identities.
    Dev {
        /// Directory to write ca.pem, ca-key.pem, server.pem, client.pem, admin.pem and their keys.
        #[arg(long, default_value = "certs/dev")]
        out: PathBuf,
        /// Replace an existing dev PKI.
        #[arg(long)]
        force: bool,
    },
    /// Mint one more client certificate and key from a dev CA (as `certs dev` wrote it), e.g. a
    /// third identity to try a policy with: writes NAME.pem and NAME-key.pem.
    Issue {
        /// The SPIFFE ID to certify (URI SAN), e.g. spiffe://ztgate.dev/ns/default/sa/reader.
        #[arg(long, value_name = "ID")]
        spiffe_id: String,
        /// A DNS name to add as a SAN (repeatable).
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// Directory holding the dev CA's ca.pem and ca-key.pem.
        #[arg(long, value_name = "DIR", default_value = "certs/dev")]
        ca_dir: PathBuf,
        /// Directory to write the certificate and key to.
        #[arg(long, value_name = "DIR", default_value = "certs/dev")]
        out: PathBuf,
        /// File name stem and certificate CN (default: the SPIFFE ID's last segment).
        #[arg(long)]
        name: Option<String>,
        /// Replace existing files of that name.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of audit files, given oldest first (e.g. `audit.log.2 audit.log.1
    /// audit.log`); names the first edited, deleted, reordered or truncated line. With --key,
    /// checks the signed checkpoints: every record up to the last one is proven, and the records
    /// after it are counted. Exit codes: 0 intact, 1 tampered or damaged, 2 usage, 3 nothing
    /// proven by a checkpoint (with --key), 66 a file or key cannot be read.
    Verify {
        /// Public key (PEM, Ed25519) the checkpoints are signed with; repeat for rotated keys.
        #[arg(long = "key", value_name = "PUB")]
        keys: Vec<PathBuf>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    crate::diag::parse_duration(s)
}
