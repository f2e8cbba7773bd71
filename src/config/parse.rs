//! The config file's text → [`RawConfig`], reporting every shape problem, not only the first.
//!
//! serde stops at the first key it cannot deserialise, so a file with a wrong type in `[listener]`
//! and an unknown key in `[audit]` would be fixed one edit-run cycle at a time. Instead the file is
//! parsed once into toml's spanned document (`toml::de::DeTable`), deserialised, and on each error
//! the offending key is reported and taken out of the document before trying again:
//!
//! - a key of the wrong type, an unknown key, a bad list element: that key (or element) goes, and
//!   the rest of its section is still checked;
//! - a required key that is missing (or went in the step above): the table that needed it (a
//!   section, or one `[[route]]`) goes, and it is remembered in [`Parsed::skipped`] so that
//!   checks depending on it ("no [[upstream]] defined") are not reported as further problems.
//!
//! TOML syntax errors are the exception: a file that is not valid TOML has no table structure to
//! check, so its syntax errors are all that is reported (toml's recovering parser finds several).

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use super::file::RawConfig;
use crate::diag::Collector;

/// The raw config, and what was left out of it to get there.
pub(crate) struct Parsed {
    pub(crate) raw: RawConfig,
    /// Top-level names (`tls`, `route`) of tables, or elements of `[[...]]` arrays, left out
    /// because a required key was missing or unusable. Their problems are already reported.
    pub(crate) skipped: BTreeSet<String>,
}

/// The name an operator would use for the key whose value starts at a byte offset:
/// `[tls] cert`, `[[route]] upstream`, `[tls] crl_sources.file`.
pub(crate) type KeyNames = HashMap<usize, String>;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Each round removes one key, element or table, so this only bounds a pathological file.
const MAX_ROUNDS: usize = 512;

/// Parses and deserialises `text`, pushing every problem to `c`. `None` when nothing usable is
/// left (a syntax error, or an error that names no position).
pub(crate) fn parse(c: &mut Collector<'_>, text: &str) -> Option<(Parsed, KeyNames)> {
    let (doc, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        // The note goes on the first error in the file, which is where an operator starts reading.
        let first = errors.iter().filter_map(|e| e.span()).map(|s| s.start).min();
        for e in &errors {
            let message = e.message().lines().next().unwrap_or("invalid TOML").trim();
            let note = if e.span().map(|s| s.start) == first {
                " (the file is not valid TOML, so its values and the files it names were not checked)"
            } else {
                ""
            };
            c.push(e.span().unwrap_or(0..0), format!("TOML syntax: {message}{note}"));
        }
        return None;
    }
    let names = key_names(doc.get_ref());
    let span = doc.span();
    let mut root = DeValue::Table(doc.into_inner());
    let mut skipped = BTreeSet::new();
    // Keys taken out for a bad value: a "missing field" for one of them is no new problem.
    let mut removed: Vec<(Vec<Step>, String)> = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let DeValue::Table(table) = &root else {
            return None;
        };
        let de = toml::de::Deserializer::from(Spanned::new(span.clone(), table.clone()));
        let err = match RawConfig::deserialize(de) {
            Ok(raw) => return Some((Parsed { raw, skipped }, names)),
            Err(e) => e,
        };
        let Some(at) = err.span() else {
            c.push_toml(&err, &[]);
            return None;
        };
        let path = locate(&root, &at);
        if let Some(field) = missing_field(err.message()) {
            let already = removed.iter().any(|(p, k)| *p == path && k == field);
            if !already {
                c.push(at.clone(), format!("missing required key `{field}`"));
            }
            // The table cannot be built without it: leave the whole table out.
            if path.is_empty() || !remove(&mut root, &path) {
                return None;
            }
        } else {
            c.push_toml(&err, &[]);
            if path.is_empty() || !remove(&mut root, &path) {
                return None;
            }
            if let Some((Step::Key(k), parent)) = path.split_last() {
                removed.push((parent.to_vec(), k.clone()));
                // A whole section of the wrong type (`tls = 5`) is gone: do not also call it missing.
                if parent.is_empty() {
                    skipped.insert(k.clone());
                }
            }
            // Otherwise a key of a section is gone, not the section: nothing is skipped.
            continue;
        }
        if let Some(Step::Key(top)) = path.first() {
            skipped.insert(top.clone());
        }
    }
    None
}

/// `missing field `x`` → `x`.
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name)
}

fn contains(span: &Range<usize>, at: &Range<usize>) -> bool {
    span.start <= at.start && (at.start < span.end || (span.is_empty() && span.start == at.start))
}

/// The deepest key or element whose key or value span holds `at`. A `[table]` header's value
/// span is the header only, so each entry is searched inside before it is matched itself.
fn locate(v: &DeValue<'_>, at: &Range<usize>) -> Vec<Step> {
    match v {
        DeValue::Table(t) => {
            for (k, val) in t.iter() {
                let inner = locate(val.get_ref(), at);
                if !inner.is_empty() {
                    let mut path = vec![Step::Key(k.get_ref().to_string())];
                    path.extend(inner);
                    return path;
                }
            }
            t.iter()
                .find(|(k, val)| contains(&k.span(), at) || contains(&val.span(), at))
                .map(|(k, _)| vec![Step::Key(k.get_ref().to_string())])
                .unwrap_or_default()
        }
        DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                let inner = locate(item.get_ref(), at);
                if !inner.is_empty() {
                    let mut path = vec![Step::Index(i)];
                    path.extend(inner);
                    return path;
                }
            }
            a.iter()
                .position(|item| contains(&item.span(), at))
                .map(|i| vec![Step::Index(i)])
                .unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// Removes the key or element at `path`; `false` when there is none.
fn remove(root: &mut DeValue<'_>, path: &[Step]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = root;
    for step in parents {
        node = match (node, step) {
            (DeValue::Table(t), Step::Key(k)) => match t.get_mut(k.as_str()) {
                Some(v) => v.get_mut(),
                None => return false,
            },
            (DeValue::Array(a), Step::Index(i)) => match a.get_mut(*i) {
                Some(v) => v.get_mut(),
                None => return false,
            },
            _ => return false,
        };
    }
    match (node, last) {
        (DeValue::Table(t), Step::Key(k)) => t.remove(k.as_str()).is_some(),
        (DeValue::Array(a), Step::Index(i)) if *i < a.len() => {
            let kept: DeArray<'_> = a
                .iter()
                .enumerate()
                .filter(|(j, _)| j != i)
                .map(|(_, v)| v.clone())
                .collect();
            *a = kept;
            true
        }
        _ => false,
    }
}

fn key_names(doc: &DeTable<'_>) -> KeyNames {
    let mut names = KeyNames::new();
    for (section, value) in doc.iter() {
        let section = section.get_ref();
        match value.get_ref() {
            DeValue::Table(t) => name_table(&format!("[{section}]"), "", t, &mut names),
            DeValue::Array(a) if a.iter().all(|v| v.get_ref().is_table()) && !a.is_empty() => {
                for item in a.iter() {
                    if let DeValue::Table(t) = item.get_ref() {
                        name_table(&format!("[[{section}]]"), "", t, &mut names);
                    }
                }
            }
            _ => name_value(&format!("`{section}`"), value, &mut names),
        }
    }
    names
}

fn name_table(header: &str, prefix: &str, t: &DeTable<'_>, names: &mut KeyNames) {
    for (k, v) in t.iter() {
        let key = format!("{prefix}{}", k.get_ref());
        match v.get_ref() {
            DeValue::Table(inner) => name_table(header, &format!("{key}."), inner, names),
            DeValue::Array(a) => {
                names.insert(v.span().start, format!("{header} {key}"));
                for item in a.iter() {
                    match item.get_ref() {
                        DeValue::Table(inner) => name_table(header, &format!("{key}."), inner, names),
                        _ => name_value(&format!("{header} {key}"), item, names),
                    }
                }
            }
            _ => name_value(&format!("{header} {key}"), v, names),
        }
    }
}

fn name_value(name: &str, v: &Spanned<DeValue<'_>>, names: &mut KeyNames) {
    names.insert(v.span().start, name.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Diagnostics;

    fn problems(text: &str) -> (Vec<String>, Option<Parsed>) {
        let mut c = Collector::new(text);
        let parsed = parse(&mut c, text).map(|(p, _)| p);
        let lines = match c.finish(std::path::Path::new("z.toml")) {
            Ok(()) => Vec::new(),
            Err(Diagnostics { problems, .. }) => problems
                .into_iter()
                .map(|p| format!("{}:{}: {}", p.line, p.col, p.message))
                .collect(),
        };
        (lines, parsed)
    }

    const BASE: &str = "[listener]\naddress = \"127.0.0.1:0\"\n[tls]\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"ca\"\n";

    #[test]
    fn a_valid_file_parses_with_nothing_skipped() {
        let (lines, parsed) = problems(BASE);
        assert_eq!(lines, Vec::<String>::new());
        let parsed = parsed.map(|p| p.skipped.len());
        assert_eq!(parsed, Some(0));
    }

    #[test]
    fn every_shape_error_is_reported_not_only_the_first() {
        let text = format!(
            "{BASE}max_chain = 1\n[audit]\nkeep = \"ten\"\nqueue = \"x\"\n[[route]]\nname = \"a\"\nupstream = 5\n[[route]]\nname = \"b\"\nupstream = \"u\"\n"
        );
        let (lines, parsed) = problems(&text);
        assert_eq!(
            lines,
            vec![
                "7:1: unknown key `max_chain` (valid keys: cert, key, client_ca, crls, crl_scope, reload_interval, crl_sources, crl_fetch_interval, crl_discovery, ocsp, ocsp_responder, revocation_timeout, profile)".to_string(),
                "9:8: expected a whole number (no quotes), found the string \"ten\"".to_string(),
                "10:9: expected a whole number (no quotes), found the string \"x\"".to_string(),
                "13:12: expected a string in double quotes (a duration is written like \"60s\"), found the number 5".to_string(),
            ]
        );
        let parsed = parsed.map(|p| (p.raw.routes.len(), p.skipped.into_iter().collect::<Vec<_>>()));
        // The route whose required `upstream` was unusable is left out; the other is kept.
        assert_eq!(parsed, Some((1, vec!["route".to_string()])));
    }

    #[test]
    fn a_missing_required_key_is_reported_once_and_its_table_left_out() {
        let text = "[listener]\naddress = \"127.0.0.1:0\"\n[tls]\ncert = \"c\"\nkey = \"k\"\n";
        let (lines, parsed) = problems(text);
        assert_eq!(lines, vec!["3:1: missing required key `client_ca`".to_string()]);
        let parsed = parsed.map(|p| (p.raw.tls.is_none(), p.skipped.into_iter().collect::<Vec<_>>()));
        assert_eq!(parsed, Some((true, vec!["tls".to_string()])));
    }

    #[test]
    fn a_section_of_the_wrong_type_is_reported_once() {
        let text = "tls = 5\n[listener]\naddress = \"127.0.0.1:0\"\n";
        let (lines, parsed) = problems(text);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("1:7: "), "{lines:?}");
        let parsed = parsed.map(|p| p.skipped.into_iter().collect::<Vec<_>>());
        assert_eq!(parsed, Some(vec!["tls".to_string()]));
    }

    #[test]
    fn syntax_errors_stop_there_and_say_so() {
        let (lines, parsed) = problems("[listener]\naddress = \n[tls\n");
        assert!(parsed.is_none());
        assert_eq!(
            lines.first().map(String::as_str),
            Some(
                "2:11: TOML syntax: string values must be quoted, expected literal string (the file is not valid TOML, so its values and the files it names were not checked)"
            )
        );
        assert_eq!(lines.len(), 2, "{lines:?}");
    }

    #[test]
    fn keys_are_named_as_an_operator_writes_them() {
        let text = "[tls]\ncert = \"c\"\ncrls = [\"a\", \"b\"]\ncrl_sources = [{ url = \"u\", file = \"f\" }]\n[[upstream]]\nca = \"x\"\n";
        let (doc, _) = DeTable::parse_recoverable(text);
        let names = key_names(doc.get_ref());
        let at = |needle: &str| text.find(needle).and_then(|i| names.get(&i)).cloned();
        assert_eq!(at("\"c\"").as_deref(), Some("[tls] cert"));
        assert_eq!(at("\"b\"").as_deref(), Some("[tls] crls"));
        assert_eq!(at("\"f\"").as_deref(), Some("[tls] crl_sources.file"));
        assert_eq!(at("\"x\"").as_deref(), Some("[[upstream]] ca"));
    }
}
