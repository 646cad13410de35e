//! `serena topology graph`: the README's picture is the example topology's, svg goes through
//! Graphviz's `dot`, and a missing `dot` is a clear exit 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn graph(args: &[&str], path: Option<&std::ffi::OsStr>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_serena"));
    cmd.args(["topology", "graph"])
        .args(args)
        .current_dir(repo());
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_topology_docs_show_the_graph_of_the_root_topology() {
    let o = graph(&["topology.toml"], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let drawn = text(&o.stdout);
    let docs = std::fs::read_to_string(repo().join("docs/topology.md")).unwrap();
    let start = docs.find("```mermaid\n").expect("a mermaid block") + "```mermaid\n".len();
    let end = start + docs[start..].find("```").unwrap();
    assert_eq!(
        &docs[start..end],
        drawn,
        "docs/topology.md's mermaid block is stale: paste `serena topology graph topology.toml` into it"
    );
    // What the example routes, each once.
    for edge in [
        "x0 -->|\"order.*\"| q4",
        "x3 -->|\"[any: priority=urgent or customer-tier=gold]\"| q9",
        "x0 -.->|\"unrouted\"| x1",
        "q5 -.->|\"after 1s\"| q4",
        "q4 ==>|\"attempt 4 fails\"| q8",
    ] {
        assert_eq!(drawn.matches(edge).count(), 1, "{edge} in\n{drawn}");
    }
    let dot = graph(&["topology.toml", "--format", "dot"], None);
    assert_eq!(dot.status.code(), Some(0));
    assert!(text(&dot.stdout).starts_with("digraph topology {"));
}

#[test]
fn svg_needs_dot_and_says_so_when_it_is_missing() {
    let empty = std::env::temp_dir().join(format!("serena-no-dot-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let o = graph(
        &["topology.toml", "--format", "svg"],
        Some(empty.as_os_str()),
    );
    std::fs::remove_dir_all(&empty).unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(o.stdout.is_empty());
    let err = text(&o.stderr);
    assert!(
        err.contains("--format svg needs Graphviz's `dot`, which is not on PATH"),
        "{err}"
    );

    // With the PATH as it is: an SVG when Graphviz is installed, the same exit 2 when not.
    let out = std::env::temp_dir().join(format!("serena-graph-{}.svg", std::process::id()));
    let o = graph(
        &[
            "topology.toml",
            "--format",
            "svg",
            "-o",
            out.to_str().unwrap(),
        ],
        None,
    );
    let installed = Command::new("dot").arg("-V").output().is_ok();
    if installed {
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        let svg = std::fs::read_to_string(&out).unwrap();
        std::fs::remove_file(&out).unwrap();
        assert!(svg.contains("<svg"), "{svg}");
        assert!(svg.contains(">orders.work.retry.10s</text>"), "{svg}");
    } else {
        assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
        assert!(!out.exists());
    }
}

#[test]
fn an_invalid_file_or_format_exits_2() {
    let o = graph(&["serena/tests/topology/bad/quorum_rules.toml"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    let o = graph(&["topology.toml", "--format", "png"], None);
    assert_eq!(o.status.code(), Some(2));
}
