//! The dev PKI on disk: `ztgate certs dev` (a CA and three certificates) and `ztgate certs
//! issue` (one more client certificate from that CA, to try a policy with a new identity).

use std::path::{Path, PathBuf};

use super::{CertAuthority, LeafSpec, PkiError};

/// SPIFFE IDs of the dev PKI's two client identities (DESIGN.md contract).
pub const DEV_CLIENT_SPIFFE_ID: &str = "spiffe://ztgate.dev/ns/default/sa/client";
pub const DEV_ADMIN_SPIFFE_ID: &str = "spiffe://ztgate.dev/ns/ops/sa/admin";

/// Writes the dev PKI into `out`: `ca.pem`, `ca-key.pem`, `server.pem`, `server-key.pem`,
/// `client.pem`, `client-key.pem`, `admin.pem`, `admin-key.pem`. Keys are written with mode
/// 0600. The CA's name carries a random suffix, so two dev PKIs never share an issuer name (a
/// certificate from another one is refused as `unknown_ca`, not as a bad signature).
pub fn write_dev_pki(out: &Path, force: bool) -> Result<Vec<PathBuf>, PkiError> {
    let ca_path = out.join("ca.pem");
    if ca_path.exists() && !force {
        return Err(PkiError::Exists(ca_path));
    }
    std::fs::create_dir_all(out).map_err(|source| PkiError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let ca = CertAuthority::new(&format!("ztgate dev CA {}", random_suffix()?))?;
    let server = ca.issue(&LeafSpec::server("ztgate dev server"))?;
    let client = ca.issue(&LeafSpec::client("client", Some(DEV_CLIENT_SPIFFE_ID)))?;
    let admin = ca.issue(&LeafSpec::client("admin", Some(DEV_ADMIN_SPIFFE_ID)))?;
    let files = [
        ("ca.pem", ca.cert_pem(), false),
        ("ca-key.pem", ca.key.serialize_pem(), true),
        ("server.pem", server.cert_pem, false),
        ("server-key.pem", server.key_pem, true),
        ("client.pem", client.cert_pem, false),
        ("client-key.pem", client.key_pem, true),
        ("admin.pem", admin.cert_pem, false),
        ("admin-key.pem", admin.key_pem, true),
    ];
    let mut written = write_all(out, files)?;
    written.extend(write_audit_signing_key(out)?);
    Ok(written)
}

/// The dev audit signing key pair (Ed25519): `audit-signing-key.pem` (PKCS#8, 0600; the config's
/// `[audit] signing_key`) and `audit-signing.pub` (for `ztgate audit verify --key`). Returns the
/// files written.
pub fn write_audit_signing_key(out: &Path) -> Result<Vec<PathBuf>, PkiError> {
    let (private, public) = crate::audit::checkpoint::generate_pem()?;
    write_all(
        out,
        [
            (DEV_AUDIT_SIGNING_KEY, private, true),
            (DEV_AUDIT_VERIFY_KEY, public, false),
        ],
    )
}

/// File names of the dev audit signing key pair, in the `certs dev` directory.
pub const DEV_AUDIT_SIGNING_KEY: &str = "audit-signing-key.pem";
pub const DEV_AUDIT_VERIFY_KEY: &str = "audit-signing.pub";

fn write_all<const N: usize>(out: &Path, files: [(&str, String, bool); N]) -> Result<Vec<PathBuf>, PkiError> {
    let mut written = Vec::new();
    for (name, content, secret) in files {
        let path = out.join(name);
        write_file(&path, content.as_bytes(), secret).map_err(|source| PkiError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

fn write_file(path: &Path, content: &[u8], secret: bool) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    std::io::Write::write_all(&mut opts.open(path)?, content)
}

/// Eight hex digits from the secure random source: the dev CA's name suffix.
fn random_suffix() -> Result<String, PkiError> {
    let mut b = [0u8; 4];
    crate::tls::provider()
        .secure_random
        .fill(&mut b)
        .map_err(|e| PkiError::Random(format!("{e:?}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// What `ztgate certs issue` mints.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// The SPIFFE ID written as the certificate's URI SAN (what policy rules match).
    pub spiffe_id: String,
    /// DNS names written as SANs too (`--dns`, repeatable).
    pub dns: Vec<String>,
    /// File name stem: `<name>.pem`, `<name>-key.pem`; also the certificate's CN.
    pub name: String,
    /// Replace existing files.
    pub force: bool,
}

impl IssueRequest {
    /// The default file name for `spiffe_id`: its last path segment (`.../sa/reader` → `reader`).
    pub fn default_name(spiffe_id: &str) -> String {
        spiffe_id
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty() && !s.contains(':'))
            .unwrap_or("client")
            .to_string()
    }
}

/// Mints a client certificate (clientAuth, one year) and its key from the dev CA in `ca_dir`
/// (`ca.pem`, `ca-key.pem`, as `ztgate certs dev` wrote them) into `out`. Returns the files
/// written.
pub fn issue_from_dir(ca_dir: &Path, out: &Path, req: &IssueRequest) -> Result<Vec<PathBuf>, PkiError> {
    crate::identity::SpiffeId::parse(&req.spiffe_id).map_err(|_| PkiError::SpiffeId(req.spiffe_id.clone()))?;
    // The name becomes `<name>.pem` and `<name>-key.pem` inside `out`, and nowhere else.
    let plain = req
        .name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !plain || req.name.is_empty() || req.name == "." || req.name == ".." {
        return Err(PkiError::FileName(req.name.clone()));
    }
    let read = |name: &str| {
        let path = ca_dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| PkiError::Read { path, source })
    };
    let (cert_pem, key_pem) = (read("ca.pem")?, read("ca-key.pem")?);
    let ca = CertAuthority::from_pem(&ca_dir.join("ca.pem"), &cert_pem, &key_pem)?;
    let mut spec = LeafSpec::client(&req.name, Some(&req.spiffe_id));
    spec.dns = req.dns.clone();
    let issued = ca.issue(&spec)?;
    let cert_path = out.join(format!("{}.pem", req.name));
    if cert_path.exists() && !req.force {
        return Err(PkiError::IdentityExists(cert_path));
    }
    std::fs::create_dir_all(out).map_err(|source| PkiError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let files = [
        (cert_path, issued.cert_pem, false),
        (out.join(format!("{}-key.pem", req.name)), issued.key_pem, true),
    ];
    let mut written = Vec::new();
    for (path, content, secret) in files {
        write_file(&path, content.as_bytes(), secret).map_err(|source| PkiError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}
