//! `serena rpc QUEUE BODY`: one request over direct reply-to, its reply as one JSON line.
//!
//! ```json
//! {"properties":{"content_type":"application/json","correlation_id":"0",...},"body":"42","body_encoding":"utf8"}
//! ```
//!
//! The line is `serena consume`'s without the envelope (a reply has no delivery tag worth
//! printing). Exit 1 when no reply came within `--timeout`, or the request was returned
//! unroutable.

use std::io::{Read, Write};
use std::time::Duration;

use clap::Args;
use serde_json::json;
use serena::proto::BasicProperties;
use serena::topology::ConnectionSettings;
use serena::{Error, ReplyMessage, RpcOptions};

use crate::consume::{body_json, properties};
use crate::{Failure, connection_config, with_connection};

#[derive(Debug, Args)]
pub(crate) struct RpcArgs {
    /// The queue the request goes to (through the default exchange).
    queue: String,
    /// Request body; read from stdin when absent or "-".
    body: Option<String>,
    /// Seconds to wait for the reply (exit 1 when none came).
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    timeout: f64,
    /// The request's content type.
    #[arg(long, value_name = "TYPE", default_value = "application/json")]
    content_type: String,
}

/// The reply as one JSON object.
fn reply_json(reply: &ReplyMessage) -> serde_json::Value {
    let (body, encoding) = body_json(&reply.body);
    json!({
        "properties": properties(&reply.properties),
        "body": body,
        "body_encoding": encoding,
    })
}

pub(crate) async fn run(args: RpcArgs, url: Option<&str>) -> Result<(), Failure> {
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return Err(Failure::usage(
            "--timeout must be a positive number of seconds",
        ));
    }
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .map_err(|e| Failure::usage(format!("--timeout: {e}")))?;
    let body = match args.body.as_deref() {
        Some(b) if b != "-" => b.as_bytes().to_vec(),
        _ => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Failure::usage(format!("cannot read the body from stdin: {e}")))?;
            buf
        }
    };
    let config = connection_config(url, &ConnectionSettings::default())?;
    let queue = args.queue.as_str();
    let properties = BasicProperties::default().with_content_type(args.content_type.as_str());
    with_connection(&config, async |conn| {
        let options = RpcOptions::new()
            .with_timeout(timeout)
            .with_max_in_flight(1);
        let reply = conn
            .open_rpc_with(options, async |rpc| {
                rpc.request("", queue, &body, properties).await
            })
            .await
            .map_err(|e| match e {
                Error::Timeout(after) => {
                    Failure::failed(format!("queue {queue:?}: no reply within {after:?}"))
                }
                Error::Returned(_) => Failure::failed(format!(
                    "queue {queue:?}: {e}; no queue of that name (declare it first)"
                )),
                e => Failure::failed(format!("queue {queue:?}: {e}")),
            })?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", reply_json(&reply))
            .and_then(|()| stdout.flush())
            .map_err(|e| Failure::failed(format!("cannot write to stdout: {e}")))
    })
    .await
}
