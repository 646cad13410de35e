//! `serena`: apply and check `topology.toml`, publish, consume and call from the command line.
//!
//! ```text
//! serena topology check FILE      validate offline (exit 2 when invalid)
//! serena topology apply FILE      declare exchanges, queues, bindings (exit 1 when any fails)
//! serena topology verify FILE     passive checks; exit 1 when anything is missing
//! serena topology graph FILE [--format mermaid|dot|svg]   the routing as a picture
//! serena topology to-definitions FILE   RabbitMQ's definitions.json for it
//! serena topology export                a topology.toml of a broker's virtual host
//! serena topology diff FILE             missing, different and extra entities; exit 1 on drift
//! serena publish EXCHANGE ROUTING_KEY [BODY]   body from stdin when absent or "-"
//! serena consume QUEUE [--count N]             one JSON line per delivery
//! serena rpc QUEUE [BODY] [--timeout SECS]     one request, its reply as a JSON line
//! ```
//!
//! The broker comes from `--url`, else `SERENA_URL`, else the topology file's `[connection]`,
//! else `amqp://guest:guest@127.0.0.1:5672/%2f`. Exit codes: 0 ok, 1 drift or failure, 2 bad
//! usage or invalid file.
//!
//! `export`, `diff` and `verify`'s full check read the management HTTP API (feature
//! `management`, on by default): `--url http://user:pass@host:15672`, else
//! `SERENA_MANAGEMENT_URL`, else port 15672 of the AMQP broker with its login. `verify` falls
//! back to passive declares when the API does not answer.

mod base64;
mod consume;
#[cfg(feature = "management")]
mod drift;
mod graph;
#[cfg(feature = "management")]
mod management;
mod publish;
mod rpc;
mod topology;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serena::topology::{ConnectionSettings, ConnectionSettingsExt};
use serena::{Connection, ConnectionConfig, Error};

/// Declarative RabbitMQ topology, publishing and consuming, over AMQP 0-9-1.
#[derive(Debug, Parser)]
#[command(name = "serena", version, about)]
struct Cli {
    /// Broker URI, e.g. amqp://user:pass@host:5672/vhost [default: SERENA_URL, the topology
    /// file's [connection] url, then amqp://guest:guest@127.0.0.1:5672/%2f]
    #[arg(long, global = true, value_name = "URI")]
    url: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check, apply or verify a topology file.
    #[command(subcommand)]
    Topology(topology::TopologyCommand),
    /// Publish one message and wait for the broker's confirm.
    Publish(Box<publish::PublishArgs>),
    /// Consume from a queue, printing each delivery as one JSON line.
    Consume(consume::ConsumeArgs),
    /// Send one request over direct reply-to and print its reply as one JSON line (exit 1
    /// when none came within the timeout).
    Rpc(rpc::RpcArgs),
}

/// A failure with the exit code it maps to and a message a person can act on.
#[derive(Debug)]
pub(crate) struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// Bad usage or an invalid file: exit code 2.
    pub(crate) fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }

    /// The broker refused, something is missing, or the connection failed: exit code 1.
    pub(crate) fn failed(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

/// Resolves the connection settings: `--url`, the environment, the file, the default.
pub(crate) fn connection_config(
    url: Option<&str>,
    settings: &ConnectionSettings,
) -> Result<ConnectionConfig, Failure> {
    settings
        .resolve_with(url, |name| std::env::var(name).ok())
        .map_err(|e| Failure::usage(e.to_string()))
}

/// Opens a connection, runs `body`, closes it; connection errors become exit code 1 with a hint.
///
/// The connection is not a scope here: when the server closes it (a 503 for an unknown exchange
/// type, say), the calls in `body` fail one by one instead of `body` being cancelled, so
/// `topology apply` still prints its whole report.
pub(crate) async fn with_connection<T>(
    config: &ConnectionConfig,
    body: impl AsyncFnOnce(&Connection) -> Result<T, Failure>,
) -> Result<T, Failure> {
    let conn = Connection::open(config)
        .await
        .map_err(|e| connection_failure(config, &e))?;
    let result = body(&conn).await;
    let _ = conn.close().await;
    result
}

fn connection_failure(config: &ConnectionConfig, e: &Error) -> Failure {
    let hint = match e {
        Error::Io(_) | Error::ConnectTimeout { .. } => {
            "; is RabbitMQ running there? Set the broker with --url or SERENA_URL"
        }
        _ if e.reply_code() == Some(serena::UnexpectedCloseError::ACCESS_REFUSED) => {
            "; check the user name, password (SERENA_PASSWORD) and virtual host"
        }
        _ => "",
    };
    Failure::failed(format!(
        "broker {} (virtual host {:?}, user {:?}): {e}{hint}",
        config.addr(),
        config.virtual_host,
        config.username
    ))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("serena: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let url = cli.url.as_deref();
    let result = runtime.block_on(async {
        match cli.command {
            Command::Topology(cmd) => topology::run(cmd, url).await,
            Command::Publish(args) => publish::run(*args, url).await,
            Command::Consume(args) => consume::run(args, url).await,
            Command::Rpc(args) => rpc::run(args, url).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            for line in f.message.lines() {
                eprintln!("serena: {line}");
            }
            ExitCode::from(f.code)
        }
    }
}
