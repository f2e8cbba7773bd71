//! CRL fetching: download each configured CRL on a schedule, check it (parses, signed by a CA in
//! `client_ca`, newer than the one on disk), and write it atomically to its file. The TLS file
//! watcher then reloads it like any CRL file, which also closes open connections it revokes.
//!
//! A failed fetch changes nothing: the current CRL stays in force until its nextUpdate, after which
//! handshakes fail closed (`crl_expired`). Failures are logged and counted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateRevocationListDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use super::CrlSource;

/// Largest CRL accepted: big CAs publish a few MiB; more is a mistake or an attack.
pub(crate) const MAX_CRL_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CrlFetchError {
    #[error("{url}: {source}")]
    Http {
        url: Uri,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: Uri, timeout: Duration },
    #[error("{url}: HTTP {status}")]
    Status { url: Uri, status: StatusCode },
    #[error("{url}: not a CRL (DER or PEM): {reason}")]
    NotACrl { url: Uri, reason: String },
    #[error("{url}: CRL issued by `{issuer}` is not signed by any CA in {client_ca}")]
    Untrusted {
        url: Uri,
        issuer: String,
        client_ca: PathBuf,
    },
    #[error("cannot read the client CA bundle {path}: {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CrlFetchError {
    /// Bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Http { .. } | Self::Timeout { .. } | Self::Status { .. } => "http",
            Self::NotACrl { .. } => "invalid",
            Self::Untrusted { .. } => "untrusted",
            Self::Ca { .. } | Self::Write { .. } => "local",
        }
    }
}

/// What a fetch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// A newer CRL was written to the file.
    Updated,
    /// The CRL served is not newer than the one on disk; nothing was written.
    Unchanged,
}

pub struct CrlFetcher {
    http: HttpFetch,
    client_ca: PathBuf,
}

impl CrlFetcher {
    pub fn new(client_ca: PathBuf, timeout: Duration) -> Self {
        Self {
            http: HttpFetch::new(timeout),
            client_ca,
        }
    }

    /// Downloads `src`, checks it and, if newer than its file, replaces the file atomically.
    pub async fn fetch(&self, src: &CrlSource) -> Result<Fetched, CrlFetchError> {
        let body = self.http.get(&src.url, MAX_CRL_BYTES).await?;
        let ders = decode(&body).map_err(|reason| CrlFetchError::NotACrl {
            url: src.url.clone(),
            reason,
        })?;
        let cas = crate::tls::load_certs(&self.client_ca).map_err(|e| CrlFetchError::Ca {
            path: self.client_ca.clone(),
            reason: e.to_string(),
        })?;
        let mut newest = i64::MIN;
        for der in &ders {
            let (_, crl) = CertificateRevocationList::from_der(der).map_err(|e| CrlFetchError::NotACrl {
                url: src.url.clone(),
                reason: e.to_string(),
            })?;
            if !signed_by_a_ca(&crl, &cas) {
                return Err(CrlFetchError::Untrusted {
                    url: src.url.clone(),
                    issuer: crl.issuer().to_string(),
                    client_ca: self.client_ca.clone(),
                });
            }
            newest = newest.max(crl.last_update().timestamp());
        }
        if current_this_update(&src.file).is_some_and(|on_disk| on_disk >= newest) {
            return Ok(Fetched::Unchanged);
        }
        let pem = ders
            .iter()
            .map(|d| pem_encode("X509 CRL", d))
            .collect::<Vec<_>>()
            .join("");
        write_atomically(&src.file, pem.as_bytes()).map_err(|source| CrlFetchError::Write {
            path: src.file.clone(),
            source,
        })?;
        Ok(Fetched::Updated)
    }
}

/// A plain-HTTP client for revocation data (CRLs, OCSP): every exchange bounded in time and size.
pub(crate) struct HttpFetch {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl HttpFetch {
    pub(crate) fn new(timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new()).build(http),
            timeout,
        }
    }

    pub(crate) async fn get(&self, url: &Uri, limit: usize) -> Result<Bytes, CrlFetchError> {
        self.exchange(url, None, limit).await
    }

    /// POSTs `body` with `content_type` (an OCSP request).
    pub(crate) async fn post(
        &self,
        url: &Uri,
        content_type: &'static str,
        body: Vec<u8>,
        limit: usize,
    ) -> Result<Bytes, CrlFetchError> {
        self.exchange(url, Some((content_type, body)), limit).await
    }

    async fn exchange(
        &self,
        url: &Uri,
        post: Option<(&'static str, Vec<u8>)>,
        limit: usize,
    ) -> Result<Bytes, CrlFetchError> {
        let http = |source: Box<dyn std::error::Error + Send + Sync>| CrlFetchError::Http {
            url: url.clone(),
            source,
        };
        let builder = Request::builder()
            .uri(url.clone())
            .header(http::header::USER_AGENT, concat!("ztgate/", env!("CARGO_PKG_VERSION")));
        let req = match post {
            None => builder.method(http::Method::GET).body(Full::default()),
            Some((content_type, body)) => builder
                .method(http::Method::POST)
                .header(http::header::CONTENT_TYPE, content_type)
                .body(Full::new(Bytes::from(body))),
        }
        .map_err(|e| http(e.into()))?;
        let call = async {
            let resp = self.client.request(req).await.map_err(|e| http(e.into()))?;
            if resp.status() != StatusCode::OK {
                return Err(CrlFetchError::Status {
                    url: url.clone(),
                    status: resp.status(),
                });
            }
            let body = Limited::new(resp.into_body(), limit).collect().await.map_err(http)?;
            Ok(body.to_bytes())
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| CrlFetchError::Timeout {
                url: url.clone(),
                timeout: self.timeout,
            })?
    }
}

/// DER (one CRL, a SEQUENCE: first byte 0x30) or PEM (one or more `X509 CRL` blocks); anything
/// else, e.g. an HTML error page, is read as PEM and has no block.
pub(crate) fn decode(body: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    match body.first() {
        None => Err("empty body".into()),
        Some(0x30) => Ok(vec![body.to_vec()]),
        Some(_) => {
            let ders: Vec<Vec<u8>> = CertificateRevocationListDer::pem_slice_iter(body)
                .map(|r| r.map(|d| d.as_ref().to_vec()))
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            if ders.is_empty() {
                return Err("no `-----BEGIN X509 CRL-----` block".into());
            }
            Ok(ders)
        }
    }
}

fn signed_by_a_ca(crl: &CertificateRevocationList<'_>, cas: &[rustls::pki_types::CertificateDer<'_>]) -> bool {
    cas.iter().any(|ca| {
        x509_parser::certificate::X509Certificate::from_der(ca)
            .is_ok_and(|(_, ca)| ca.subject() == crl.issuer() && crl.verify_signature(ca.public_key()).is_ok())
    })
}

/// The newest thisUpdate of the CRLs in `file`, if it exists and parses.
fn current_this_update(file: &Path) -> Option<i64> {
    let crls = crate::tls::load_crls(file).ok()?;
    crls.iter()
        .filter_map(|d| CertificateRevocationList::from_der(d).ok())
        .map(|(_, c)| c.last_update().timestamp())
        .max()
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Write to a temporary file beside `path`, fsync, then rename over it: readers see the old file
/// or the new one, never half of one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map_or_else(|| "crl".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_der_and_pem_and_refuses_garbage() {
        let ca = crate::pki::CertAuthority::new("t").unwrap();
        let pem = ca.crl_pem(&[]).unwrap();
        let ders = decode(pem.as_bytes()).unwrap();
        assert_eq!(ders.len(), 1);
        assert_eq!(decode(&ders[0]).unwrap(), ders);
        assert!(decode(b"<html>not found</html>").is_err());
        assert!(decode(b"").is_err());
        let round = pem_encode("X509 CRL", &ders[0]);
        assert_eq!(decode(round.as_bytes()).unwrap(), ders);
    }
}
