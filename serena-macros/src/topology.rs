//! The compile-time topology check: the file must be a valid topology, and the consumer's
//! queue one of its queues.
//!
//! The file is `topology = "..."` (relative to the crate's `CARGO_MANIFEST_DIR`), or else
//! `topology.toml` beside the crate's `Cargo.toml` when that exists. It is loaded by
//! `serena-topology`, the loader and rules serena runs (`serena::topology::Topology::load`), so
//! a file the build accepts is one the worker accepts, and every problem it has is a compile
//! error. The queue may be one the file lists or one a retry schedule adds (a delay queue
//! `<queue>.retry.<delay>`, a park queue).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use proc_macro2::Span;
use serena_topology::{Topology, TopologyError, suggest};
use syn::LitStr;

/// The file looked for when the attribute names none.
const DEFAULT_FILE: &str = "topology.toml";

/// A topology file that was read: its absolute path, for `include_bytes!`.
#[derive(Debug)]
pub(crate) struct Checked {
    pub(crate) path: PathBuf,
}

/// Checks the topology the attribute names, or the default one, and `queue` against it.
///
/// `Ok(None)` when there is no topology to check against. Errors point at the `topology` value
/// for a file that cannot be read or is not a valid topology (at the queue when the file was
/// found by convention), and at the queue for a queue the topology does not have.
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
    let topology = load(&text, &shown).map_err(|m| syn::Error::new(blame, m))?;
    check_queue(&queue.value(), &topology, &shown).map_err(|m| syn::Error::new(queue.span(), m))?;
    Ok(Some(Checked { path }))
}

/// The topology in `text` (the file shown as `file`), or a message listing every problem it
/// has, one per line, as `serena topology check` prints them.
pub(crate) fn load(text: &str, file: &str) -> Result<Topology, String> {
    Topology::from_toml(text, file).map_err(|e| {
        let problems = match &e {
            TopologyError::Invalid { problems } => problems.as_slice(),
            TopologyError::Read { .. } => return format!("the topology file `{file}`: {e}"),
        };
        let n = problems.len();
        let mut message = format!(
            "the topology file `{file}` is not valid ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        );
        for p in problems {
            message.push_str("\n  ");
            message.push_str(&p.to_string());
        }
        message
    })
}

/// `Err(message)` when `queue` is none of the queues of `topology` (from the file shown as
/// `file`): neither listed in `[[queues]]` nor added by a retry schedule. The message lists
/// them, closest to `queue` first.
pub(crate) fn check_queue(queue: &str, topology: &Topology, file: &str) -> Result<(), String> {
    let plan = topology.queue_plan();
    if plan.iter().any(|(_, q)| q.name == queue) {
        return Ok(());
    }
    if plan.is_empty() {
        return Err(format!(
            "queue `{queue}` is not declared in `{file}`, which declares no queues; add a \
             `[[queues]]` table with `name = {queue:?}`"
        ));
    }
    let names = |added: bool| {
        suggest::rank(
            queue,
            plan.iter()
                .filter(|(_, q)| matches!(q, Cow::Owned(_)) == added)
                .map(|(_, q)| q.name.as_str()),
        )
    };
    let (listed, added) = (names(false), names(true));
    let quoted = |names: &[&str]| {
        names
            .iter()
            .map(|q| format!("`{q}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let guess = suggest::closest(queue, listed.iter().chain(&added).copied())
        .map_or_else(String::new, |best| format!("did you mean `{best}`? "));
    let mut message = format!(
        "queue `{queue}` is not declared in `{file}`; {guess}declared queues: {}",
        quoted(&listed)
    );
    if !added.is_empty() {
        message.push_str(&format!("; added by retry schedules: {}", quoted(&added)));
    }
    Err(message)
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
retry = { delays = ["1s", "1m"] }

[[queues]]
name = "payments"
retry = { delays = ["10s"], park = "payments.dead" }

[[bindings]]
source = "shop"
queue = "orders"
"#;

    fn topology() -> Topology {
        load(TOPOLOGY, "t.toml").unwrap()
    }

    #[test]
    fn a_listed_queue_passes_and_so_does_one_a_retry_schedule_adds() {
        let t = topology();
        for queue in [
            "orders",
            "payments",
            "orders.retry.1s",
            "orders.retry.1m",
            "orders.parked",
            "payments.retry.10s",
            "payments.dead",
        ] {
            check_queue(queue, &t, "t.toml").unwrap_or_else(|e| panic!("{queue}: {e}"));
        }
        assert!(check_queue("payments.parked", &t, "t.toml").is_err());
    }

    #[test]
    fn an_unknown_queue_lists_the_closest_first() {
        let t = topology();
        let message = check_queue("payment", &t, "t.toml").unwrap_err();
        assert_eq!(
            message,
            "queue `payment` is not declared in `t.toml`; did you mean `payments`? \
             declared queues: `payments`, `orders`; added by retry schedules: \
             `payments.dead`, `orders.parked`, `payments.retry.10s`, `orders.retry.1s`, \
             `orders.retry.1m`"
        );
        let message = check_queue("orders.parkd", &t, "t.toml").unwrap_err();
        assert!(
            message.contains("did you mean `orders.parked`?"),
            "{message}"
        );
        let message = check_queue("zzzzzzzzzz", &t, "t.toml").unwrap_err();
        assert!(!message.contains("did you mean"), "{message}");
    }

    #[test]
    fn no_queues_says_so() {
        let message = check_queue("orders", &Topology::default(), "t.toml").unwrap_err();
        assert!(message.contains("declares no queues"), "{message}");
        let message = check_queue("orders", &load("", "t.toml").unwrap(), "t.toml").unwrap_err();
        assert!(!message.contains("added by"), "{message}");
    }

    #[test]
    fn every_problem_of_the_file_is_listed() {
        let text = "[[queues]]\nname = \"q\"\ntype = \"quorum\"\nmax_priority = 5\n\n\
                    [[bindings]]\nsource = \"nowhere\"\nqueue = \"q\"\n";
        let message = load(text, "t.toml").unwrap_err();
        let lines: Vec<&str> = message.lines().collect();
        assert_eq!(
            lines[0],
            "the topology file `t.toml` is not valid (2 problems):"
        );
        assert!(
            lines[1].starts_with("  t.toml:4:1: queue \"q\": "),
            "{message}"
        );
        assert!(lines[2].starts_with("  t.toml:7:1: binding "), "{message}");
        assert_eq!(lines.len(), 3, "{message}");
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
    fn a_named_file_must_exist_and_be_valid() {
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
            error.to_string().starts_with(
                "the topology file `topology.toml` is not valid (1 problem):\n  \
                 topology.toml:1:"
            ),
            "{error}"
        );
        assert!(error.to_string().contains("TOML syntax"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
