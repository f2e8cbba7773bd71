//! PEM loading with `rustls-pki-types`' `PemObject`; every error names the file.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use super::TlsError;

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = collect(path, "certificates", CertificateDer::pem_file_iter(path))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            kind: "PEM certificate (\"-----BEGIN CERTIFICATE-----\")",
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| match source {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            kind: "PEM private key (PKCS#8, SEC1 or PKCS#1)",
            path: path.to_path_buf(),
        },
        source => TlsError::Pem {
            kind: "private key",
            path: path.to_path_buf(),
            source,
        },
    })
}

pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let crls = collect(path, "CRLs", CertificateRevocationListDer::pem_file_iter(path))?;
    if crls.is_empty() {
        return Err(TlsError::Empty {
            kind: "PEM CRL (\"-----BEGIN X509 CRL-----\")",
            path: path.to_path_buf(),
        });
    }
    Ok(crls)
}

fn collect<T, I>(
    path: &Path,
    kind: &'static str,
    iter: Result<I, rustls::pki_types::pem::Error>,
) -> Result<Vec<T>, TlsError>
where
    I: Iterator<Item = Result<T, rustls::pki_types::pem::Error>>,
{
    let err = |source| TlsError::Pem {
        kind,
        path: path.to_path_buf(),
        source,
    };
    iter.map_err(err)?.collect::<Result<Vec<_>, _>>().map_err(err)
}
