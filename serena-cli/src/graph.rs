//! `serena topology graph FILE --format mermaid|dot|svg`: the routing as a picture.

use std::io::{ErrorKind, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use clap::ValueEnum;
use serena::topology::{GraphFormat, Topology};

use crate::Failure;

/// What `graph` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// A Mermaid flowchart (GitHub renders it in a ```mermaid block).
    Mermaid,
    /// Graphviz DOT.
    Dot,
    /// SVG, drawn by Graphviz's `dot` (it must be on PATH).
    Svg,
}

/// The picture of `t` as `format`, ready to print.
pub(crate) fn render(t: &Topology, format: Format, file: &Path) -> Result<Vec<u8>, Failure> {
    match format {
        Format::Mermaid => Ok(t.graph(GraphFormat::Mermaid).into_bytes()),
        Format::Dot => Ok(t.graph(GraphFormat::Dot).into_bytes()),
        Format::Svg => svg(&t.graph(GraphFormat::Dot), file),
    }
}

/// Runs `dot -Tsvg` on `text`. A missing `dot` is a usage problem (exit 2) that says what to
/// install; a `dot` that fails is exit 1 with its stderr.
fn svg(text: &str, file: &Path) -> Result<Vec<u8>, Failure> {
    let program = "dot";
    let mut child = Command::new(program)
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                Failure::usage(format!(
                    "--format svg needs Graphviz's `{program}`, which is not on PATH: install \
                     Graphviz (apt-get install graphviz, brew install graphviz), or write \
                     `--format dot` or `--format mermaid` and draw it elsewhere"
                ))
            } else {
                Failure::failed(format!("cannot run `{program}`: {e}"))
            }
        })?;
    // dot reads all of its input before it writes, so writing first cannot deadlock.
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| Failure::failed(format!("cannot write to dot: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Failure::failed(format!("dot failed: {e}")))?;
    if !out.status.success() {
        return Err(Failure::failed(format!(
            "dot could not draw the graph of {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}
