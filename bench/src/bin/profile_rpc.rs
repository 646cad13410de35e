//! A fixed amount of request/reply work for instruction counting: `count` (default 2,000)
//! sequential round trips over direct reply-to to a responder on the same connection, made
//! with serena's `RpcClient` (`rpc`) or by hand on a channel (`raw`: the reply consumer and an
//! unawaited confirm, what rpc_latency does). Under callgrind, whose counts do not depend on
//! what else the machine is doing, the difference is what `RpcClient` costs per call:
//!
//! ```sh
//! cargo build --release --manifest-path bench/Cargo.toml --bin profile_rpc
//! valgrind --tool=callgrind --callgrind-out-file=cg.rpc bench/target/release/profile_rpc rpc 2000
//! valgrind --tool=callgrind --callgrind-out-file=cg.raw bench/target/release/profile_rpc raw 2000
//! ```

use serena::proto::BasicProperties;
use serena::{
    Channel, ConnectionConfig, ConsumeOptions, Error, PublishOptions, QueueDeclareOptions,
    UnconfirmedChannel, open_connection,
};

/// Echoes each request to its reply_to, not mandatory, until its channel ends.
async fn respond(requests: &Channel, replies: &UnconfirmedChannel, queue: &str) -> Error {
    let options = ConsumeOptions::default().with_no_ack(true);
    let mut consumer = match requests.basic_consume(queue, options).await {
        Ok(c) => c,
        Err(e) => return e,
    };
    loop {
        let request = match consumer.next().await {
            Some(Ok(d)) => d,
            Some(Err(e)) => return e,
            None => return Error::Closed("consumer"),
        };
        let props = &request.properties;
        let mut reply = BasicProperties::default();
        if let Some(id) = &props.correlation_id {
            reply = reply.with_correlation_id(id.clone());
        }
        let to = props.reply_to.as_deref().unwrap_or_default();
        if let Err(e) = replies.basic_publish("", to, &request.body, reply).await {
            return e;
        }
    }
}

/// `count` round trips by hand: consume `amq.rabbitmq.reply-to`, publish, wait for the reply.
async fn raw(ch: &Channel, queue: &str, count: u32) -> serena::Result<()> {
    let options = ConsumeOptions::default().with_no_ack(true);
    let mut replies = ch.basic_consume("amq.rabbitmq.reply-to", options).await?;
    let not_mandatory = PublishOptions::default().with_mandatory(false);
    for i in 0..count {
        let props = BasicProperties::default()
            .with_correlation_id(i.to_string())
            .with_reply_to("amq.rabbitmq.reply-to");
        let _unawaited = ch
            .basic_publish_with("", queue, [7u8; 64], props, not_mandatory)
            .await?;
        let reply = replies.next().await.ok_or(Error::Closed("consumer"))??;
        assert_eq!(
            reply.properties.correlation_id.as_deref(),
            Some(&*i.to_string())
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> serena::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "rpc".into());
    let count: u32 = match args.next() {
        Some(n) => n
            .parse()
            .map_err(|_| Error::Config(format!("not a count: {n}")))?,
        None => 2_000,
    };
    let config = ConnectionConfig::from_uri(
        &std::env::var("SERENA_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
    )?;
    open_connection(&config, async |conn| {
        let requests = conn.channel().await?;
        let exclusive = QueueDeclareOptions::default().with_exclusive(true);
        let queue = requests.queue_declare("", exclusive).await?.queue;
        let replies = conn.unconfirmed_channel().await?;
        let calls = async {
            match mode.as_str() {
                "raw" => raw(&conn.channel().await?, &queue, count).await,
                "rpc" => {
                    conn.open_rpc(async |rpc| {
                        for _ in 0..count {
                            let reply = rpc.request("", &queue, [7u8; 64], Default::default());
                            assert_eq!(reply.await?.body.len(), 64);
                        }
                        Ok(())
                    })
                    .await
                }
                other => Err(Error::Config(format!("mode rpc or raw, not {other}"))),
            }
        };
        tokio::select! {
            e = respond(&requests, &replies, &queue) => Err(e),
            r = calls => r,
        }
    })
    .await
}
