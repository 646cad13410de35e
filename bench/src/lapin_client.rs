//! The scenarios with lapin (4.x from crates.io), on the tokio runtime it finds itself in.
//!
//! lapin runs its socket I/O loop on a thread of its own, outside the runtime; its CPU time is
//! counted all the same, since CPU is read for the whole process.

use std::collections::VecDeque;
use std::time::Instant;

use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer,
    PublisherConfirm,
};
use tokio::sync::oneshot;

use crate::measure::{Meter, current_rss_bytes};
use crate::scenario::{
    Body, Client, Names, Outcome, Params, Result, Tally, UnconfirmedClient, check_reply,
    correlation_id, expect_count, expect_distinct_ids, mismatch, per_item, until_held,
};

/// lapin, driven through its public API.
pub struct Lapin;

/// The local broker, as guest.
const AMQP_URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

async fn connect() -> Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name("lapin-bench".into());
    Ok(Connection::connect(AMQP_URI, props).await?)
}

async fn close(conn: Connection) -> Result<()> {
    conn.close(200, "bye".into()).await?;
    Ok(())
}

/// A channel with publisher confirms on.
async fn confirm_channel(conn: &Connection) -> Result<Channel> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(ch)
}

async fn declare(ch: &Channel, queue: &str) -> Result<()> {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// Ready messages in `queue`.
async fn ready(ch: &Channel, queue: &str) -> Result<u64> {
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::default().passive(),
            FieldTable::default(),
        )
        .await?;
    Ok(u64::from(q.message_count()))
}

async fn delete(ch: &Channel, queue: &str) -> Result<()> {
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    Ok(())
}

/// Awaits one confirm and fails unless the broker acked it.
async fn confirmed(confirm: PublisherConfirm) -> Result<()> {
    match confirm.await? {
        Confirmation::Ack(None) => Ok(()),
        other => mismatch!("publish confirmed as {other:?}, expected a plain ack"),
    }
}

async fn publish(
    ch: &Channel,
    queue: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<PublisherConfirm> {
    Ok(ch
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await?)
}

/// Publishes `count` stamped bodies, at most `window` unconfirmed, and waits for every confirm.
async fn publish_window(
    ch: &Channel,
    queue: &str,
    body: &mut Body,
    count: u64,
    window: usize,
) -> Result<()> {
    let mut pending: VecDeque<PublisherConfirm> = VecDeque::with_capacity(window);
    for index in 0..count {
        if pending.len() == window {
            confirmed(pending.pop_front().expect("window is full")).await?;
        }
        pending.push_back(publish(ch, queue, body.stamp(index), BasicProperties::default()).await?);
    }
    while let Some(confirm) = pending.pop_front() {
        confirmed(confirm).await?;
    }
    Ok(())
}

/// The next delivery of `consumer`, or a failure naming `what` if the stream ended.
async fn next(consumer: &mut Consumer, what: &str) -> Result<lapin::message::Delivery> {
    match crate::next(consumer).await {
        Some(delivery) => Ok(delivery?),
        None => mismatch!("{what}: the consumer ended"),
    }
}

/// The responder of rpc_latency: echoes each request to its reply_to until told to stop.
async fn respond(queue: String, size: usize, stop: oneshot::Receiver<()>) -> Result<u64> {
    let conn = connect().await?;
    let ch = conn.create_channel().await?;
    let mut requests = ch
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut answered = 0;
    tokio::pin!(stop);
    loop {
        let request = tokio::select! {
            r = next(&mut requests, "responder") => r?,
            _ = &mut stop => break,
        };
        let props = &request.properties;
        let (Some(reply_to), Some(correlation)) = (props.reply_to(), props.correlation_id()) else {
            mismatch!("request without reply_to or correlation_id");
        };
        if request.data.len() != size {
            mismatch!("request of {} bytes, expected {size}", request.data.len());
        }
        let reply = BasicProperties::default().with_correlation_id(correlation.clone());
        // No confirm mode on this channel: the reply needs no confirm.
        publish(&ch, reply_to.as_str(), &request.data, reply).await?;
        answered += 1;
    }
    ch.basic_cancel(requests.tag(), BasicCancelOptions::default())
        .await?;
    ch.close(200, "bye".into()).await?;
    close(conn).await?;
    Ok(answered)
}

/// RabbitMQ's direct reply-to pseudo-queue (rpc_direct).
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// One request/reply round trip, the reply to `reply_to`; `index` `u64::MAX` is the warm-up
/// call.
async fn rpc_call(
    ch: &Channel,
    replies: &mut Consumer,
    (names, reply_to): (&Names, &str),
    body: &mut Body,
    index: u64,
    size: usize,
) -> Result<()> {
    let props = BasicProperties::default()
        .with_correlation_id(correlation_id(index).into())
        .with_reply_to(reply_to.into());
    publish(ch, &names.main, body.stamp(index), props).await?;
    let reply = next(replies, "reply consumer").await?;
    let correlation = reply
        .properties
        .correlation_id()
        .as_ref()
        .map(|c| c.as_str());
    check_reply(index, correlation, &reply.data, size)
}

/// rpc_latency with the replies to `reply_to`: `names.reply` (a queue declared here) or
/// direct reply-to.
async fn rpc_run(p: &Params, names: &Names, reply_to: &str) -> Result<Outcome> {
    let conn = connect().await?;
    let ch = conn.create_channel().await?;
    declare(&ch, &names.main).await?;
    if reply_to == names.reply {
        declare(&ch, &names.reply).await?;
    }
    let mut replies = ch
        .basic_consume(
            reply_to.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let (stop, stopped) = oneshot::channel();
    let responder = tokio::spawn(respond(names.main.clone(), p.small_body, stopped));
    let mut body = Body::new(p.small_body);
    let mut latencies = Vec::with_capacity(p.rpc_round_trips as usize);
    rpc_call(
        &ch,
        &mut replies,
        (names, reply_to),
        &mut body,
        u64::MAX,
        p.small_body,
    )
    .await?;

    let meter = Meter::start();
    for index in 0..p.rpc_round_trips {
        let start = Instant::now();
        rpc_call(
            &ch,
            &mut replies,
            (names, reply_to),
            &mut body,
            index,
            p.small_body,
        )
        .await?;
        latencies.push(start.elapsed());
    }
    let span = meter.stop();

    let _ = stop.send(());
    let answered = responder.await??;
    expect_count("requests answered", p.rpc_round_trips + 1, answered)?;
    ch.basic_cancel(replies.tag(), BasicCancelOptions::default())
        .await?;
    delete(&ch, &names.main).await?;
    if reply_to == names.reply {
        delete(&ch, &names.reply).await?;
    }
    ch.close(200, "bye".into()).await?;
    close(conn).await?;
    Ok(Outcome {
        messages: p.rpc_round_trips,
        payload_bytes: 2 * p.rpc_round_trips * p.small_body as u64,
        span: Some(span),
        latencies,
        ..Outcome::default()
    })
}

impl Client for Lapin {
    const NAME: &'static str = "lapin";

    async fn publish_confirm(p: &Params, names: &Names) -> Result<Outcome> {
        let conn = connect().await?;
        let ch = confirm_channel(&conn).await?;
        declare(&ch, &names.main).await?;
        let mut body = Body::new(p.small_body);

        let meter = Meter::start();
        publish_window(
            &ch,
            &names.main,
            &mut body,
            p.publish_messages,
            p.publish_window,
        )
        .await?;
        let span = meter.stop();

        expect_count(
            "confirmed messages in the queue",
            p.publish_messages,
            ready(&ch, &names.main).await?,
        )?;
        delete(&ch, &names.main).await?;
        ch.close(200, "bye".into()).await?;
        close(conn).await?;
        Ok(Outcome {
            messages: p.publish_messages,
            payload_bytes: p.publish_messages * p.small_body as u64,
            span: Some(span),
            ..Outcome::default()
        })
    }

    async fn consume_ack(p: &Params, names: &Names) -> Result<Outcome> {
        let conn = connect().await?;
        let ch = conn.create_channel().await?;
        expect_count(
            "prefilled messages",
            p.consume_messages,
            ready(&ch, &names.main).await?,
        )?;
        ch.basic_qos(p.consume_prefetch, BasicQosOptions::default())
            .await?;
        let mut tally = Tally::new(p.consume_messages);

        let meter = Meter::start();
        let mut consumer = ch
            .basic_consume(
                names.main.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        while !tally.complete() {
            let delivery = next(&mut consumer, "consume_ack").await?;
            tally.record_body(&delivery.data, p.small_body)?;
            delivery.ack(BasicAckOptions::default()).await?;
        }
        // A round trip on the channel: every ack before it has reached the broker.
        let left = ready(&ch, &names.main).await?;
        let span = meter.stop();

        expect_count("ready messages after consuming", 0, left)?;
        ch.basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await?;
        ch.close(200, "bye".into()).await?;
        // Unacked messages would be back in the queue now that the channel is closed.
        let check = conn.create_channel().await?;
        expect_count(
            "messages back in the queue",
            0,
            ready(&check, &names.main).await?,
        )?;
        delete(&check, &names.main).await?;
        check.close(200, "bye".into()).await?;
        close(conn).await?;
        Ok(Outcome {
            messages: p.consume_messages,
            payload_bytes: p.consume_messages * p.small_body as u64,
            span: Some(span),
            ..Outcome::default()
        })
    }

    async fn rpc_latency(p: &Params, names: &Names) -> Result<Outcome> {
        rpc_run(p, names, &names.reply).await
    }

    async fn rpc_direct(p: &Params, names: &Names) -> Result<Outcome> {
        rpc_run(p, names, DIRECT_REPLY_TO).await
    }

    async fn large_body(p: &Params, names: &Names) -> Result<Outcome> {
        let conn = connect().await?;
        let publisher = confirm_channel(&conn).await?;
        declare(&publisher, &names.main).await?;
        let consumer_ch = conn.create_channel().await?;
        consumer_ch
            .basic_qos(u16::try_from(p.large_window)?, BasicQosOptions::default())
            .await?;
        let mut body = Body::new(p.large_body);
        let (expected, size) = (p.large_messages, p.large_body);

        let meter = Meter::start();
        let mut consumer = consumer_ch
            .basic_consume(
                names.main.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let consuming = tokio::spawn(async move {
            let mut tally = Tally::new(expected);
            while !tally.complete() {
                let delivery = next(&mut consumer, "large_body").await?;
                tally.record_body(&delivery.data, size)?;
                delivery.ack(BasicAckOptions::default()).await?;
            }
            Ok::<_, crate::scenario::BenchError>(consumer)
        });
        publish_window(&publisher, &names.main, &mut body, expected, p.large_window).await?;
        let consumer = consuming.await??;
        let left = ready(&consumer_ch, &names.main).await?;
        let span = meter.stop();

        expect_count("ready messages after consuming", 0, left)?;
        consumer_ch
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await?;
        consumer_ch.close(200, "bye".into()).await?;
        expect_count(
            "messages back in the queue",
            0,
            ready(&publisher, &names.main).await?,
        )?;
        delete(&publisher, &names.main).await?;
        publisher.close(200, "bye".into()).await?;
        close(conn).await?;
        Ok(Outcome {
            messages: expected,
            payload_bytes: expected * size as u64,
            span: Some(span),
            ..Outcome::default()
        })
    }

    async fn many_channels(p: &Params, names: &Names) -> Result<Outcome> {
        let conn = connect().await?;
        let control = conn.create_channel().await?;
        declare(&control, &names.main).await?;
        let mut body = Body::new(p.small_body);
        let mut channels = Vec::with_capacity(p.channels as usize);
        let rss_before = current_rss_bytes();

        let meter = Meter::start();
        let opening = Instant::now();
        for _ in 0..p.channels {
            channels.push(confirm_channel(&conn).await?);
        }
        let open_time = opening.elapsed();
        let rss_after = current_rss_bytes();
        let round = Instant::now();
        let mut confirms = Vec::with_capacity(channels.len());
        for (index, ch) in (0..).zip(&channels) {
            confirms.push(
                publish(
                    ch,
                    &names.main,
                    body.stamp(index),
                    BasicProperties::default(),
                )
                .await?,
            );
        }
        for confirm in confirms {
            confirmed(confirm).await?;
        }
        let round_time = round.elapsed();
        let span = meter.stop();

        expect_distinct_ids(channels.iter().map(Channel::id).collect(), p.channels)?;
        expect_count(
            "messages in the queue",
            p.channels,
            ready(&control, &names.main).await?,
        )?;
        for ch in channels {
            ch.close(200, "bye".into()).await?;
        }
        delete(&control, &names.main).await?;
        control.close(200, "bye".into()).await?;
        close(conn).await?;
        Ok(Outcome {
            messages: p.channels,
            payload_bytes: p.channels * p.small_body as u64,
            span: Some(span),
            rss_bytes_per_channel: Some(per_item(rss_before, rss_after, p.channels)),
            open_time: Some(open_time),
            round_time: Some(round_time),
            ..Outcome::default()
        })
    }

    async fn spread_publish(
        p: &Params,
        names: &Names,
        channels: usize,
        total: u64,
        window: usize,
    ) -> Result<Outcome> {
        let conn = connect().await?;
        let control = conn.create_channel().await?;
        declare(&control, &names.main).await?;
        let mut publishers = Vec::with_capacity(channels);
        for _ in 0..channels {
            publishers.push(confirm_channel(&conn).await?);
        }
        let mut body = Body::new(p.small_body);
        let mut pending: VecDeque<PublisherConfirm> = VecDeque::with_capacity(window);

        let meter = Meter::start();
        for (index, ch) in (0..total).zip(publishers.iter().cycle()) {
            if pending.len() == window {
                confirmed(pending.pop_front().expect("window is full")).await?;
            }
            pending.push_back(
                publish(
                    ch,
                    &names.main,
                    body.stamp(index),
                    BasicProperties::default(),
                )
                .await?,
            );
        }
        while let Some(confirm) = pending.pop_front() {
            confirmed(confirm).await?;
        }
        let span = meter.stop();

        expect_count(
            "confirmed messages in the queue",
            total,
            ready(&control, &names.main).await?,
        )?;
        for ch in publishers {
            ch.close(200, "bye".into()).await?;
        }
        delete(&control, &names.main).await?;
        control.close(200, "bye".into()).await?;
        close(conn).await?;
        Ok(Outcome {
            messages: total,
            payload_bytes: total * p.small_body as u64,
            span: Some(span),
            ..Outcome::default()
        })
    }

    async fn concurrent_publish(
        p: &Params,
        names: &Names,
        publishers: usize,
        total: u64,
        window: usize,
    ) -> Result<Outcome> {
        let each = total / publishers as u64;
        expect_count(
            "messages per publisher × publishers",
            total,
            each * publishers as u64,
        )?;
        let conn = connect().await?;
        let control = conn.create_channel().await?;
        declare(&control, &names.main).await?;
        let mut channels = Vec::with_capacity(publishers);
        for _ in 0..publishers {
            channels.push(confirm_channel(&conn).await?);
        }

        let meter = Meter::start();
        let tasks: Vec<_> = channels
            .into_iter()
            .map(|ch| {
                let queue = names.main.clone();
                let size = p.small_body;
                tokio::spawn(async move {
                    let mut body = Body::new(size);
                    publish_window(&ch, &queue, &mut body, each, window).await?;
                    Ok::<_, crate::scenario::BenchError>(ch)
                })
            })
            .collect();
        let mut channels = Vec::with_capacity(publishers);
        for task in tasks {
            channels.push(task.await??);
        }
        let span = meter.stop();

        expect_count(
            "confirmed messages in the queue",
            total,
            ready(&control, &names.main).await?,
        )?;
        for ch in channels {
            ch.close(200, "bye".into()).await?;
        }
        delete(&control, &names.main).await?;
        control.close(200, "bye".into()).await?;
        close(conn).await?;
        Ok(Outcome {
            messages: total,
            payload_bytes: total * p.small_body as u64,
            span: Some(span),
            ..Outcome::default()
        })
    }
}

impl UnconfirmedClient for Lapin {
    async fn publish_noconfirm(p: &Params, names: &Names) -> Result<Outcome> {
        let conn = connect().await?;
        let ch = conn.create_channel().await?;
        declare(&ch, &names.main).await?;
        let mut body = Body::new(p.small_body);

        let meter = Meter::start();
        for index in 0..p.publish_messages {
            // Without confirm mode the returned PublisherConfirm is already NotRequested.
            publish(
                &ch,
                &names.main,
                body.stamp(index),
                BasicProperties::default(),
            )
            .await?;
        }
        let written_time = meter.elapsed();
        until_held(|| ready(&ch, &names.main), p.publish_messages).await?;
        let span = meter.stop();

        delete(&ch, &names.main).await?;
        ch.close(200, "bye".into()).await?;
        close(conn).await?;
        Ok(Outcome {
            messages: p.publish_messages,
            payload_bytes: p.publish_messages * p.small_body as u64,
            span: Some(span),
            written_time: Some(written_time),
            ..Outcome::default()
        })
    }
}
