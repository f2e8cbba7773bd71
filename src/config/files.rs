//! The files a config names: can each be read (or written), what it contains, and whether the
//! working directory would have found another one (earlier versions resolved relative paths
//! against it). Every problem is positioned at the value that names the file, with the key:
//! `ztgate.toml:12:8: [tls] cert = "certs/server.pem": cannot read certs/server.pem: No such file
//! or directory (os error 2)`.

use std::path::{Path, PathBuf};

use super::{Access, FileRef};
use crate::diag::{Diagnostics, Problem};

/// A config that did not validate: its problems, the files it names (so that `ztgate check` can
/// still look inside them) and its warnings.
#[derive(Debug, Clone)]
pub struct Invalid {
    pub diagnostics: Diagnostics,
    pub files: Vec<FileRef>,
    pub warnings: Vec<Problem>,
}

impl Invalid {
    /// One `file:line:col: message` line per problem, then one per warning.
    pub fn problems_text(&self) -> String {
        let mut out = self.diagnostics.to_string();
        let warnings = warning_lines(&self.diagnostics.path, &self.warnings);
        if !warnings.is_empty() {
            out.push('\n');
            out.push_str(&warnings);
        }
        out
    }
}

/// `file:line:col: warning: message`, one line each.
pub fn warning_lines(path: &Path, warnings: &[Problem]) -> String {
    warnings
        .iter()
        .map(|w| format!("{}:{}:{}: warning: {}", path.display(), w.line, w.col, w.message))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(super) fn diagnostics(
    path: &Path,
    mut problems: Vec<Problem>,
    files: Vec<FileRef>,
    warnings: Vec<Problem>,
) -> Invalid {
    problems.sort_by_key(|p| (p.line, p.col));
    Invalid {
        diagnostics: Diagnostics {
            path: path.to_path_buf(),
            problems,
        },
        files,
        warnings,
    }
}

/// A file ztgate reads must open as a file; one it writes (and creates, with its folders) must
/// not be a folder.
pub fn check_access(f: &FileRef) -> Option<Problem> {
    let shown = f.path.display();
    match f.access {
        Access::Read => match std::fs::File::open(&f.path).and_then(|file| file.metadata()) {
            Ok(m) if m.is_dir() => Some(f.problem(format!("cannot read {shown}: it is a folder, not a file"))),
            Ok(_) => None,
            Err(e) => Some(f.problem(format!("cannot read {shown}: {e}"))),
        },
        Access::Write => f
            .path
            .is_dir()
            .then(|| f.problem(format!("cannot write {shown}: it is a folder, not a file"))),
    }
}

/// What the readable files contain, by the key that names them: certificates, private keys, CA
/// bundles and CRLs parse as PEM, the audit signing key loads, the policy compiles. Files of
/// other keys (JWKS, device inventories) are loaded by `app::prepare`. Returns problems positioned
/// in the config file, and the policy file's own diagnostics.
pub fn check_contents(files: &[FileRef]) -> (Vec<Problem>, Vec<Diagnostics>) {
    use crate::policy::{Policy, PolicyError};
    let mut problems = Vec::new();
    let mut other = Vec::new();
    for f in files.iter().filter(|f| f.access == Access::Read) {
        let p = f.path.as_path();
        let result: Result<(), String> = match f.key.as_str() {
            "[tls] cert"
            | "[[upstream]] client_cert"
            | "[posture] client_cert"
            | "[cluster_rate_limit] client_cert" => crate::tls::load_certs(p).map(drop).map_err(|e| e.to_string()),
            "[tls] client_ca" | "[[upstream]] ca" | "[posture] ca" | "[cluster_rate_limit] ca" => {
                crate::tls::load_certs(p).map(drop).map_err(|e| e.to_string())
            }
            "[tls] key" | "[[upstream]] client_key" | "[posture] client_key" | "[cluster_rate_limit] client_key" => {
                crate::tls::load_key(p).map(drop).map_err(|e| e.to_string())
            }
            "[tls] crls" => crate::tls::load_crls(p).map(drop).map_err(|e| e.to_string()),
            "[audit] signing_key" => crate::audit::SigningKey::load(p).map(drop).map_err(|e| e.to_string()),
            "[policy] file" => match Policy::load(p) {
                Ok(_) => Ok(()),
                Err(PolicyError::Invalid(d)) => {
                    other.push(d);
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            },
            _ => Ok(()),
        };
        if let Err(e) = result {
            problems.push(f.problem(e));
        }
    }
    (problems, other)
}

/// `dir/sub/../x` as `dir/x`, and without `.` components, so messages name a file the way an
/// operator writes it (`/etc/ztgate/../certs/ca.pem` reads `/etc/certs/ca.pem`). A `..` is folded
/// only after a real directory: after a symbolic link or a missing directory it is kept, because
/// the OS resolves `..` physically, and folding it there would name (and open) another file.
pub(super) fn tidy(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let foldable = matches!(out.components().next_back(), Some(Component::Normal(_)))
                    && std::fs::symlink_metadata(&out).is_ok_and(|m| m.is_dir());
                if foldable {
                    out.pop();
                } else {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// One warning per relative path that the working directory resolves to a different existing
/// file than the config file's folder does: an operator who relied on the old resolution is told
/// which file ztgate reads now.
pub fn working_directory_warnings(files: &[FileRef]) -> Vec<Problem> {
    files
        .iter()
        .filter(|f| Path::new(&f.written).is_relative() && Path::new(&f.written) != f.path)
        .filter_map(|f| {
            let before = std::fs::canonicalize(&f.written).ok()?;
            let now = std::fs::canonicalize(&f.path).ok();
            (now.as_ref() != Some(&before)).then(|| {
                let now = now.unwrap_or_else(|| PathBuf::from(&f.path));
                f.problem(format!(
                    "this is {}: relative paths are relative to the config file's folder; the working directory's {} is another file, which earlier ztgate versions read and this one does not",
                    now.display(),
                    before.display()
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy_folds_dot_dot_after_real_directories_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("config")).unwrap();
        std::fs::create_dir_all(root.join("elsewhere/deep")).unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere/deep"), root.join("link")).unwrap();
        assert_eq!(tidy(&root.join("config/../certs/ca.pem")), root.join("certs/ca.pem"));
        assert_eq!(tidy(&root.join("./config/./x.pem")), root.join("config/x.pem"));
        // Through a link, `..` is the link target's parent: kept as written.
        assert_eq!(tidy(&root.join("link/../x.pem")), root.join("link/../x.pem"));
        // A missing directory: `missing/..` fails to open, so it is not folded into a path that opens.
        assert_eq!(tidy(&root.join("missing/../x.pem")), root.join("missing/../x.pem"));
        assert_eq!(tidy(Path::new("../a/./b")), PathBuf::from("../a/b"));
        assert_eq!(tidy(Path::new(".")), PathBuf::from("."));
    }

    fn file_ref(path: PathBuf, access: Access) -> FileRef {
        FileRef {
            key: "[tls] cert".into(),
            written: "server.pem".into(),
            path,
            line: 3,
            col: 8,
            access,
        }
    }

    #[test]
    fn a_missing_file_is_named_with_its_key_and_position() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("server.pem");
        let p = check_access(&file_ref(missing.clone(), Access::Read)).map(|p| (p.line, p.col, p.message));
        assert_eq!(
            p,
            Some((
                3,
                8,
                format!(
                    "[tls] cert = \"server.pem\": cannot read {}: No such file or directory (os error 2)",
                    missing.display()
                )
            ))
        );
        std::fs::write(&missing, "x").unwrap();
        assert_eq!(check_access(&file_ref(missing, Access::Read)), None);
    }

    #[test]
    fn a_file_ztgate_writes_may_be_missing_but_not_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            check_access(&file_ref(dir.path().join("new/audit.log"), Access::Write)),
            None
        );
        let p = check_access(&file_ref(dir.path().to_path_buf(), Access::Write)).map(|p| p.message);
        assert_eq!(
            p,
            Some(format!(
                "[tls] cert = \"server.pem\": cannot write {}: it is a folder, not a file",
                dir.path().display()
            ))
        );
    }

    #[test]
    fn contents_are_checked_by_the_key_that_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let (problems, other) = check_contents(&[file_ref(path.clone(), Access::Read)]);
        let messages: Vec<String> = problems.into_iter().map(|p| p.message).collect();
        assert_eq!(
            messages,
            vec![format!(
                "[tls] cert = \"server.pem\": {} contains no PEM certificate (\"-----BEGIN CERTIFICATE-----\")",
                path.display()
            )]
        );
        assert!(other.is_empty());
    }
}
