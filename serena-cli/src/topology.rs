//! `serena topology check|apply|verify|graph FILE`.

use std::path::PathBuf;

use clap::Subcommand;
use serena::topology::{Report, Status, Topology, TopologyError, TopologyExt};

use crate::{Failure, connection_config, graph, with_connection};

#[derive(Debug, Subcommand)]
pub(crate) enum TopologyCommand {
    /// Validate FILE without connecting (exit 2 and every problem on stderr when invalid).
    Check {
        /// The topology file.
        file: PathBuf,
    },
    /// Declare FILE's exchanges, queues and bindings; exit 1 when any fails.
    Apply {
        /// The topology file.
        file: PathBuf,
    },
    /// Check with passive declares that FILE's exchanges and queues exist; exit 1 on drift.
    Verify {
        /// The topology file.
        file: PathBuf,
    },
    /// Draw FILE's routing: exchanges, queues, bindings, alternate exchanges, dead-letter
    /// routes and retry loops (offline).
    Graph {
        /// The topology file.
        file: PathBuf,
        /// mermaid, dot, or svg (runs Graphviz's `dot`).
        #[arg(long, value_enum, default_value = "mermaid")]
        format: graph::Format,
        /// Write to this file instead of stdout.
        #[arg(long, short, value_name = "PATH")]
        output: Option<PathBuf>,
    },
    /// Write RabbitMQ's definitions.json for FILE: its exchanges, queues (retry queues
    /// included) and bindings, for `POST /api/definitions` or `rabbitmqctl import_definitions`.
    #[cfg(feature = "management")]
    ToDefinitions {
        /// The topology file.
        file: PathBuf,
        /// The virtual host [default: the broker URI's]
        #[arg(long)]
        vhost: Option<String>,
        /// Write to this file instead of stdout.
        #[arg(long, short, value_name = "PATH")]
        output: Option<PathBuf>,
    },
    /// Write a topology.toml of a broker's virtual host, read through the management API
    /// (--url http://user:pass@host:15672).
    #[cfg(feature = "management")]
    Export {
        /// The virtual host [default: the broker URI's, else /]
        #[arg(long)]
        vhost: Option<String>,
        /// Only exchanges and queues whose names start with this (and their bindings).
        #[arg(long)]
        prefix: Option<String>,
        /// Write to this file instead of stdout.
        #[arg(long, short, value_name = "PATH")]
        output: Option<PathBuf>,
    },
    /// Compare FILE with the broker through the management API: what is missing, what differs
    /// (type, flags, every argument, bindings) and what the broker has beyond it; exit 1 on
    /// drift.
    #[cfg(feature = "management")]
    Diff {
        /// The topology file.
        file: PathBuf,
        /// The virtual host [default: the broker URI's]
        #[arg(long)]
        vhost: Option<String>,
        /// Only exchanges and queues whose names start with this (and their bindings).
        #[arg(long)]
        prefix: Option<String>,
    },
}

pub(crate) fn load(file: &PathBuf) -> Result<Topology, Failure> {
    Topology::load(file).map_err(|e| match e {
        TopologyError::Invalid { problems } => {
            let n = problems.len();
            let mut message: Vec<String> = problems.iter().map(ToString::to_string).collect();
            message.push(format!(
                "{}: {n} problem{} found; nothing was sent to the broker",
                file.display(),
                if n == 1 { "" } else { "s" }
            ));
            Failure::usage(message.join("\n"))
        }
        read @ TopologyError::Read { .. } => Failure::usage(read.to_string()),
    })
}

pub(crate) async fn run(cmd: TopologyCommand, url: Option<&str>) -> Result<(), Failure> {
    match cmd {
        TopologyCommand::Check { file } => {
            let t = load(&file)?;
            // The broker URI (`--url`, SERENA_URL or the file's) is parsed here, not by load.
            connection_config(url, &t.connection)?;
            let retry = match t.retry_queues().len() {
                0 => String::new(),
                n => format!(" (and {n} for retries)"),
            };
            println!(
                "{}: ok: {} exchanges, {} queues{retry}, {} bindings",
                file.display(),
                t.exchanges.len(),
                t.queues.len(),
                t.bindings.len()
            );
            // Advice, not errors: the file is fine as it is.
            for note in t.notes() {
                eprintln!("note: {note}");
            }
            Ok(())
        }
        TopologyCommand::Apply { file } => {
            let t = load(&file)?;
            let config = connection_config(url, &t.connection)?;
            let report = with_connection(&config, async |conn| Ok(t.apply(conn).await)).await?;
            outcome(&report, |failed, total| {
                format!(
                    "apply: {failed} of {total} entities failed on {}",
                    config.addr()
                )
            })
        }
        TopologyCommand::Graph {
            file,
            format,
            output,
        } => {
            let t = load(&file)?;
            let picture = graph::render(&t, format, &file)?;
            write_out(output.as_deref(), &picture)
        }
        #[cfg(feature = "management")]
        TopologyCommand::ToDefinitions {
            file,
            vhost,
            output,
        } => {
            let t = load(&file)?;
            let config = crate::drift::amqp_config(url, &t.connection)?;
            let vhost = vhost.unwrap_or(config.virtual_host);
            let mut text = serde_json::to_string_pretty(&t.to_definitions(&vhost))
                .map_err(|e| Failure::failed(e.to_string()))?;
            text.push('\n');
            write_out(output.as_deref(), text.as_bytes())
        }
        #[cfg(feature = "management")]
        TopologyCommand::Export {
            vhost,
            prefix,
            output,
        } => {
            let text = crate::drift::export(url, vhost, prefix.as_deref())?;
            write_out(output.as_deref(), text.as_bytes())
        }
        #[cfg(feature = "management")]
        TopologyCommand::Diff {
            file,
            vhost,
            prefix,
        } => {
            let t = load(&file)?;
            crate::drift::diff(&t, url, vhost, prefix.as_deref())
        }
        TopologyCommand::Verify { file } => {
            let t = load(&file)?;
            #[cfg(feature = "management")]
            if let Some(done) = crate::drift::verify(&t, url) {
                return done;
            }
            let config = connection_config(url, &t.connection)?;
            let report = with_connection(&config, async |conn| Ok(t.verify(conn).await)).await?;
            outcome(&report, |failed, total| {
                format!(
                    "verify: drift: {failed} of {total} entities missing or not checkable on {}; \
                     run `serena topology apply {}` to create what is missing",
                    config.addr(),
                    file.display()
                )
            })
        }
    }
}

/// Writes `bytes` to `path`, or to stdout.
fn write_out(path: Option<&std::path::Path>, bytes: &[u8]) -> Result<(), Failure> {
    match path {
        Some(path) => std::fs::write(path, bytes)
            .map_err(|e| Failure::failed(format!("cannot write {}: {e}", path.display()))),
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(bytes)
                .map_err(|e| Failure::failed(format!("cannot write to stdout: {e}")))
        }
    }
}

/// Prints an apply or verify report. When an entity failed, the error is one `entity: status`
/// line per failed entity, then `last_line(failed, total)`.
fn outcome<S: Status>(
    report: &Report<S>,
    last_line: impl FnOnce(usize, usize) -> String,
) -> Result<(), Failure> {
    println!("{report}");
    if report.is_ok() {
        return Ok(());
    }
    let mut lines: Vec<String> = report
        .failures()
        .map(|e| format!("{}: {}", e.entity, e.status))
        .collect();
    lines.push(last_line(lines.len(), report.entries.len()));
    Err(Failure::failed(lines.join("\n")))
}
