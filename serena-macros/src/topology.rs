//! The compile-time queue check: the consumer's queue must be declared in the topology file.
//!
//! The file is `topology = "..."` (relative to the crate's `CARGO_MANIFEST_DIR`), or else
//! `topology.toml` beside the crate's `Cargo.toml` when that exists. Only one thing is read from
//! it: the `name` of every `[[queues]]` table. Everything else is the topology loader's business
//! at run time.

use std::path::{Path, PathBuf};

use proc_macro2::Span;
use syn::LitStr;
use toml::de::{DeTable, DeValue};

use crate::attr::edit_distance;

/// The file looked for when the attribute names none.
const DEFAULT_FILE: &str = "topology.toml";

/// A topology file that was read: its absolute path, for `include_bytes!`.
#[derive(Debug)]
pub(crate) struct Checked {
    pub(crate) path: PathBuf,
}

/// Checks `queue` against the topology the attribute names, or the default one.
///
/// `Ok(None)` when there is no topology to check against. Errors point at the `topology` value
/// for a file that cannot be read or parsed, and at the queue for a queue it does not declare.
pub(crate) fn check(queue: &LitStr, topology: Option<&LitStr>) -> syn::Result<Option<Checked>> {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    check_in(manifest_dir.as_deref(), queue, topology)
}

/// [`check`] with the crate's directory given.
fn check_in(
    manifest_dir: Option<&Path>,
    queue: &LitStr,
    topology: Option<&LitStr>,
) -> syn::Result<Option<Checked>> {
    let (path, shown, blame) = match (topology, manifest_dir) {
        (Some(lit), Some(dir)) => (dir.join(lit.value()), lit.value(), lit.span()),
        (Some(lit), None) => {
            return Err(syn::Error::new(
                lit.span(),
                "`topology` paths are relative to CARGO_MANIFEST_DIR, which is not set: \
                 build with cargo",
            ));
        }
        (None, Some(dir)) => {
            let path = dir.join(DEFAULT_FILE);
            if !path.is_file() {
                return Ok(None);
            }
            // Found by convention: a broken file is blamed on the queue being checked.
            (path, DEFAULT_FILE.to_owned(), queue.span())
        }
        (None, None) => return Ok(None),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::NotFound {
            "it does not exist".to_owned()
        } else {
            e.to_string()
        };
        syn::Error::new(
            blame,
            format!(
                "cannot read the topology file `{shown}`: {why}; the path is relative to the \
                 directory of this crate's Cargo.toml"
            ),
        )
    })?;
    let queues = declared_queues(&text).map_err(|e| {
        syn::Error::new(
            blame,
            format!("the topology file `{shown}` is not valid TOML: {e}"),
        )
    })?;
    check_queue(&queue.value(), &queues, &shown).map_err(|m| syn::Error::new(queue.span(), m))?;
    Ok(Some(Checked { path }))
}

/// The names of the `[[queues]]` tables in a topology document. Entries without a string
/// `name` are skipped: the topology loader reports those.
pub(crate) fn declared_queues(text: &str) -> Result<Vec<String>, String> {
    let doc = DeTable::parse(text).map_err(|e| {
        let message = e.message().trim();
        match e.span() {
            Some(span) => {
                let (line, column) = line_column(text, span.start);
                format!("line {line}, column {column}: {message}")
            }
            None => message.to_owned(),
        }
    })?;
    let Some(queues) = doc.get_ref().get("queues") else {
        return Ok(Vec::new());
    };
    let DeValue::Array(entries) = queues.get_ref() else {
        return Err("`queues` must be an array of tables, written `[[queues]]`".to_owned());
    };
    Ok(entries
        .iter()
        .filter_map(|entry| match entry.get_ref() {
            DeValue::Table(table) => match table.get("name").map(|n| n.get_ref()) {
                Some(DeValue::String(name)) => Some(name.to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect())
}

/// The 1-based line and column (in chars) of byte offset `at`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// `Err(message)` when `queue` is not among `declared` (from the file shown as `file`). The
/// message lists the declared queues, closest to `queue` first.
pub(crate) fn check_queue(queue: &str, declared: &[String], file: &str) -> Result<(), String> {
    if declared.iter().any(|q| q == queue) {
        return Ok(());
    }
    if declared.is_empty() {
        return Err(format!(
            "queue `{queue}` is not declared in `{file}`, which declares no queues; add a \
             `[[queues]]` table with `name = {queue:?}`"
        ));
    }
    let mut ranked: Vec<(usize, &str)> = declared
        .iter()
        .map(|q| (edit_distance(queue, q), q.as_str()))
        .collect();
    ranked.sort_by_key(|&(d, _)| d);
    ranked.dedup_by_key(|&mut (_, q)| q);
    let listed = ranked
        .iter()
        .map(|(_, q)| format!("`{q}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let (best_distance, best) = ranked[0];
    let guess = if best_distance <= (best.chars().count() / 3).max(1) {
        format!("did you mean `{best}`? ")
    } else {
        String::new()
    };
    Err(format!(
        "queue `{queue}` is not declared in `{file}`; {guess}declared queues: {listed}"
    ))
}

/// `const _: &[u8] = include_bytes!("<path>");` makes cargo rebuild the crate when the file
/// changes. `None` for a path that cannot be written as a string literal.
pub(crate) fn track(checked: &Checked) -> Option<LitStr> {
    let path: &Path = &checked.path;
    path.to_str().map(|p| LitStr::new(p, Span::call_site()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPOLOGY: &str = r#"
[[exchanges]]
name = "shop"
type = "topic"

[[queues]]
name = "orders"
durable = true

[[queues]]
name = "payments"

[[queues]]
type = "quorum"   # no name: skipped here, reported by the loader

[[bindings]]
source = "shop"
queue = "ghost"
"#;

    #[test]
    fn reads_queue_names_only() {
        assert_eq!(declared_queues(TOPOLOGY).unwrap(), ["orders", "payments"]);
        assert_eq!(declared_queues("").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_declared_queue_passes() {
        let declared = declared_queues(TOPOLOGY).unwrap();
        check_queue("orders", &declared, "topology.toml").unwrap();
        // A binding's queue is not a declaration.
        assert!(check_queue("ghost", &declared, "topology.toml").is_err());
    }

    #[test]
    fn an_unknown_queue_lists_the_closest_first() {
        let declared = declared_queues(TOPOLOGY).unwrap();
        let message = check_queue("payment", &declared, "t.toml").unwrap_err();
        assert_eq!(
            message,
            "queue `payment` is not declared in `t.toml`; did you mean `payments`? \
             declared queues: `payments`, `orders`"
        );
        let message = check_queue("zzzzzzzzzz", &declared, "t.toml").unwrap_err();
        assert!(!message.contains("did you mean"), "{message}");
    }

    #[test]
    fn no_queues_says_so() {
        let message = check_queue("orders", &[], "t.toml").unwrap_err();
        assert!(message.contains("declares no queues"), "{message}");
    }

    /// A fresh directory standing for a crate's CARGO_MANIFEST_DIR.
    fn crate_dir(test: &str, topology: Option<&str>) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("serena-macros-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(text) = topology {
            std::fs::write(dir.join("topology.toml"), text).unwrap();
        }
        dir
    }

    fn lit(s: &str) -> LitStr {
        LitStr::new(s, Span::call_site())
    }

    #[test]
    fn the_default_file_is_used_when_present() {
        let dir = crate_dir("default", Some(TOPOLOGY));
        let checked = check_in(Some(&dir), &lit("orders"), None).unwrap().unwrap();
        assert_eq!(checked.path, dir.join("topology.toml"));
        assert!(track(&checked).is_some());
        let error = check_in(Some(&dir), &lit("order"), None).unwrap_err();
        assert!(
            error.to_string().contains("did you mean `orders`?"),
            "{error}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn no_file_no_check() {
        let dir = crate_dir("none", None);
        assert!(
            check_in(Some(&dir), &lit("anything"), None)
                .unwrap()
                .is_none()
        );
        assert!(check_in(None, &lit("anything"), None).unwrap().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_named_file_must_exist_and_parse() {
        let dir = crate_dir("named", Some("[[queues]\n"));
        std::fs::create_dir_all(dir.join("config")).unwrap();
        std::fs::write(dir.join("config/topo.toml"), TOPOLOGY).unwrap();
        let named = lit("config/topo.toml");
        assert!(
            check_in(Some(&dir), &lit("payments"), Some(&named))
                .unwrap()
                .is_some()
        );

        let error = check_in(Some(&dir), &lit("orders"), Some(&lit("nope.toml"))).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cannot read the topology file `nope.toml`"),
            "{error}"
        );
        // The default file is broken, but a named file replaces it.
        let error = check_in(Some(&dir), &lit("orders"), None).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("`topology.toml` is not valid TOML"),
            "{error}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let message = declared_queues("[[queues]]\nname = \n").unwrap_err();
        assert!(message.starts_with("line 2, column 8: "), "{message}");
        let message = declared_queues("queues = \"orders\"\n").unwrap_err();
        assert!(message.contains("`[[queues]]`"), "{message}");
    }
}
