//! The scenarios with serena, the client under development (by path, this workspace's code).
//!
//! serena opens every channel with publisher confirms on and a QoS prefetch; there is no way to
//! open one without confirms, so its RPC publishes are confirmed by the broker too (the
//! confirmations are dropped, not awaited).

use std::collections::VecDeque;
use std::time::Instant;

use serena::proto::BasicProperties;
use serena::{
    Channel, Confirmation, ConnectionConfig, ConsumeOptions, PublishOptions, QueueDeclareOptions,
    ReliableConfirmation, ReliablePublisher, ReliablePublisherOptions, RpcClient,
    UnconfirmedChannel, open_connection,
};
use tokio::sync::oneshot;

use crate::measure::{Meter, Span, current_rss_bytes};
use crate::scenario::{
    Body, Client, Names, Outcome, Params, Result, Tally, UnconfirmedClient, check_echo,
    check_reply, correlation_id, expect_count, expect_distinct_ids, mismatch, per_item, until_held,
};

/// serena, driven through its public API.
pub struct Serena;

/// Every publish in the benchmark: not mandatory, as for the other clients.
const NOT_MANDATORY: PublishOptions = PublishOptions::new().with_mandatory(false);

fn config() -> ConnectionConfig {
    ConnectionConfig::default().with_connection_name(Some("serena-bench".into()))
}

async fn declare(ch: &Channel, queue: &str) -> Result<()> {
    ch.queue_declare(queue, QueueDeclareOptions::default())
        .await?;
    Ok(())
}

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions::default().with_passive(true)
}

/// Ready messages in `queue`.
async fn ready(ch: &Channel, queue: &str) -> Result<u64> {
    let ok = ch.queue_declare(queue, passive()).await?;
    Ok(u64::from(ok.message_count))
}

/// Publishes `count` stamped bodies from `first` on, at most `window` unconfirmed, and waits
/// for every confirm.
async fn publish_window(
    ch: &Channel,
    queue: &str,
    body: &mut Body,
    first: u64,
    count: u64,
    window: usize,
) -> Result<()> {
    let no_properties = |_| BasicProperties::default();
    publish_window_with(ch, queue, body, first..first + count, window, no_properties).await
}

/// [`publish_window`] with the properties of message `index` from `properties`.
async fn publish_window_with(
    ch: &Channel,
    queue: &str,
    body: &mut Body,
    indexes: std::ops::Range<u64>,
    window: usize,
    mut properties: impl FnMut(u64) -> BasicProperties,
) -> Result<()> {
    let mut pending: VecDeque<Confirmation> = VecDeque::with_capacity(window);
    for index in indexes {
        if pending.len() == window {
            pending.pop_front().expect("window is full").await?;
        }
        let confirm = ch
            .basic_publish_with(
                "",
                queue,
                body.stamp(index),
                properties(index),
                NOT_MANDATORY,
            )
            .await?;
        pending.push_back(confirm);
    }
    while let Some(confirm) = pending.pop_front() {
        confirm.await?;
    }
    Ok(())
}

/// publish_confirm through a `ReliablePublisher`: the same messages, window and checks, the
/// window kept with `publish_queued` from one task, as `publish_window` keeps it on a channel.
/// Measured from the publisher being connected to the last confirm, as publish_confirm is
/// from its channel being open: the publisher's own connection is opened and closed outside.
pub async fn publish_reliable(p: &Params, names: &Names) -> Result<Outcome> {
    confirmed_publishing(p, names, async |_, body| {
        let options = ReliablePublisherOptions::default()
            .with_mandatory(false)
            .with_max_messages(p.publish_window);
        ReliablePublisher::scope(&config(), options, async |rp| -> Result<Span> {
            rp.connected().await?;
            let meter = Meter::start();
            let mut pending = VecDeque::with_capacity(p.publish_window);
            for index in 0..p.publish_messages {
                if pending.len() == p.publish_window {
                    let confirmation: ReliableConfirmation =
                        pending.pop_front().expect("window is full");
                    confirmation.await?;
                }
                let c = rp
                    .publish_queued(
                        "",
                        &names.main,
                        body.stamp(index),
                        BasicProperties::default(),
                    )
                    .await?;
                pending.push_back(c);
            }
            while let Some(confirmation) = pending.pop_front() {
                confirmation.await?;
            }
            Ok(meter.stop())
        })
        .await
    })
    .await
}

/// publish_confirm with a `message_id` on every message, of the form the reliable publisher
/// generates (16 hex digits, `-`, the message's number): the same messages publish_reliable
/// sends, on a plain channel.
pub async fn publish_confirm_ids(p: &Params, names: &Names) -> Result<Outcome> {
    confirmed_publishing(p, names, async |ch, body| {
        let mut id = String::with_capacity(40);
        let with_id = |index| {
            id.clear();
            id.push_str("5e7e4a0c3b1d2f96-");
            push_decimal(&mut id, index);
            BasicProperties::default().with_message_id(id.as_str())
        };
        let meter = Meter::start();
        let all = 0..p.publish_messages;
        publish_window_with(ch, &names.main, body, all, p.publish_window, with_id).await?;
        Ok(meter.stop())
    })
    .await
}

/// Appends `n` in decimal, without the formatting machinery.
fn push_decimal(text: &mut String, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    text.extend(digits[at..].iter().map(|d| char::from(*d)));
}

/// publish_confirm's frame around `publish`: the queue declared, `publish` run (it must get
/// `publish_messages` confirmed into `names.main`, and returns what it measured), the count
/// checked, the queue deleted.
async fn confirmed_publishing(
    p: &Params,
    names: &Names,
    publish: impl AsyncFnOnce(&Channel, &mut Body) -> Result<Span>,
) -> Result<Outcome> {
    open_connection(&config(), async |conn| -> Result<Outcome> {
        let ch = conn.channel().await?;
        declare(&ch, &names.main).await?;
        let mut body = Body::new(p.small_body);
        let span = publish(&ch, &mut body).await?;
        expect_count(
            "confirmed messages in the queue",
            p.publish_messages,
            ready(&ch, &names.main).await?,
        )?;
        ch.queue_delete(&names.main, false, false).await?;
        ch.close().await?;
        Ok(Outcome {
            messages: p.publish_messages,
            payload_bytes: p.publish_messages * p.small_body as u64,
            span: Some(span),
            ..Outcome::default()
        })
    })
    .await
}

/// Fills `queue` (declared here) with `count` small messages, for consume_ack; the runner
/// calls it outside the measured process so every client consumes the same prefill.
pub async fn prefill(p: &Params, queue: &str) -> Result<()> {
    open_connection(&config(), async |conn| -> Result<()> {
        let ch = conn.channel().await?;
        declare(&ch, queue).await?;
        let mut body = Body::new(p.small_body);
        publish_window(
            &ch,
            queue,
            &mut body,
            0,
            p.consume_messages,
            p.publish_window,
        )
        .await?;
        expect_count(
            "prefilled messages in the queue",
            p.consume_messages,
            ready(&ch, queue).await?,
        )?;
        ch.close().await?;
        Ok(())
    })
    .await
}

/// Deletes the queues of a run (missing ones are fine), for the runner's cleanup.
pub async fn delete_queues(names: &Names) -> Result<()> {
    open_connection(&config(), async |conn| -> Result<()> {
        let ch = conn.channel().await?;
        ch.queue_delete(&names.main, false, false).await?;
        ch.queue_delete(&names.reply, false, false).await?;
        ch.close().await?;
        Ok(())
    })
    .await
}

/// The broker's version, from the properties of its connection.start.
pub async fn broker_version() -> Result<Option<String>> {
    open_connection(&config(), async |conn| -> Result<Option<String>> {
        let version = conn.server_properties().get("version");
        Ok(version.and_then(|v| v.as_str()).map(str::to_owned))
    })
    .await
}

/// The responder of rpc_latency: echoes each request to its reply_to until told to stop, and
/// returns how many it answered.
async fn respond(queue: String, size: usize, stop: oneshot::Receiver<()>) -> Result<u64> {
    open_connection(&config(), async |conn| -> Result<u64> {
        let ch = conn.channel().await?;
        let mut requests = ch
            .basic_consume(&queue, ConsumeOptions::default().with_no_ack(true))
            .await?;
        let mut answered = 0;
        tokio::pin!(stop);
        loop {
            let request = tokio::select! {
                r = requests.next() => r,
                _ = &mut stop => break,
            };
            let Some(request) = request else {
                mismatch!("the responder's consumer ended");
            };
            let request = request?;
            let props = &request.properties;
            let (Some(reply_to), Some(correlation)) = (&props.reply_to, &props.correlation_id)
            else {
                mismatch!("request without reply_to or correlation_id");
            };
            if request.body.len() != size {
                mismatch!("request of {} bytes, expected {size}", request.body.len());
            }
            let reply = BasicProperties::default().with_correlation_id(correlation.clone());
            // Confirms cannot be turned off on a serena channel; RPC replies do not wait for them.
            let _unawaited: Confirmation = ch
                .basic_publish_with("", reply_to, &request.body, reply, NOT_MANDATORY)
                .await?;
            answered += 1;
        }
        ch.close().await?;
        Ok(answered)
    })
    .await
}

impl Client for Serena {
    const NAME: &'static str = "serena";

    async fn publish_confirm(p: &Params, names: &Names) -> Result<Outcome> {
        confirmed_publishing(p, names, async |ch, body| {
            let meter = Meter::start();
            publish_window(
                ch,
                &names.main,
                body,
                0,
                p.publish_messages,
                p.publish_window,
            )
            .await?;
            Ok(meter.stop())
        })
        .await
    }

    async fn consume_ack(p: &Params, names: &Names) -> Result<Outcome> {
        open_connection(&config(), async |conn| -> Result<Outcome> {
            let ch = conn.channel().await?;
            expect_count(
                "prefilled messages",
                p.consume_messages,
                ready(&ch, &names.main).await?,
            )?;
            ch.basic_qos(p.consume_prefetch, false).await?;
            let mut tally = Tally::new(p.consume_messages);

            let meter = Meter::start();
            let mut consumer = ch
                .basic_consume(&names.main, ConsumeOptions::default())
                .await?;
            while !tally.complete() {
                let Some(delivery) = consumer.next().await else {
                    mismatch!("consumer ended after {} messages", tally.count());
                };
                let delivery = delivery?;
                tally.record_body(&delivery.body, p.small_body)?;
                delivery.ack()?;
            }
            // A round trip on the channel: every ack before it has reached the broker.
            let left = ready(&ch, &names.main).await?;
            let span = meter.stop();

            expect_count("ready messages after consuming", 0, left)?;
            consumer.cancel().await?;
            drop(consumer);
            ch.close().await?;
            // Unacked messages would be back in the queue now that the channel is closed.
            let check = conn.channel().await?;
            expect_count(
                "messages back in the queue",
                0,
                ready(&check, &names.main).await?,
            )?;
            check.queue_delete(&names.main, false, false).await?;
            check.close().await?;
            Ok(Outcome {
                messages: p.consume_messages,
                payload_bytes: p.consume_messages * p.small_body as u64,
                span: Some(span),
                ..Outcome::default()
            })
        })
        .await
    }

    async fn rpc_latency(p: &Params, names: &Names) -> Result<Outcome> {
        open_connection(&config(), async |conn| -> Result<Outcome> {
            let ch = conn.channel().await?;
            declare(&ch, &names.main).await?;
            declare(&ch, &names.reply).await?;
            let mut replies = ch
                .basic_consume(&names.reply, ConsumeOptions::default().with_no_ack(true))
                .await?;
            let (stop, stopped) = oneshot::channel();
            let responder = tokio::spawn(respond(names.main.clone(), p.small_body, stopped));
            let mut body = Body::new(p.small_body);
            let mut latencies = Vec::with_capacity(p.rpc_round_trips as usize);
            // The responder's consumer is registered once a first request comes back.
            rpc_call(&ch, &mut replies, names, &mut body, u64::MAX, p.small_body).await?;

            let meter = Meter::start();
            for index in 0..p.rpc_round_trips {
                let start = Instant::now();
                rpc_call(&ch, &mut replies, names, &mut body, index, p.small_body).await?;
                latencies.push(start.elapsed());
            }
            let span = meter.stop();

            let _ = stop.send(());
            let answered = responder.await??;
            expect_count("requests answered", p.rpc_round_trips + 1, answered)?;
            drop(replies);
            ch.queue_delete(&names.main, false, false).await?;
            ch.queue_delete(&names.reply, false, false).await?;
            ch.close().await?;
            Ok(Outcome {
                messages: p.rpc_round_trips,
                payload_bytes: 2 * p.rpc_round_trips * p.small_body as u64,
                span: Some(span),
                latencies,
                ..Outcome::default()
            })
        })
        .await
    }

    async fn rpc_direct(p: &Params, names: &Names) -> Result<Outcome> {
        open_connection(&config(), async |conn| -> Result<Outcome> {
            let ch = conn.channel().await?;
            declare(&ch, &names.main).await?;
            let (stop, stopped) = oneshot::channel();
            let responder = tokio::spawn(respond(names.main.clone(), p.small_body, stopped));
            let mut body = Body::new(p.small_body);
            let mut latencies = Vec::with_capacity(p.rpc_round_trips as usize);
            // serena's RpcClient: the reply consumer and the dispatcher run in this scope.
            let span = conn
                .open_rpc(async |rpc| -> Result<Span> {
                    direct_call(rpc, names, &mut body, u64::MAX, p.small_body).await?;
                    let meter = Meter::start();
                    for index in 0..p.rpc_round_trips {
                        let start = Instant::now();
                        direct_call(rpc, names, &mut body, index, p.small_body).await?;
                        latencies.push(start.elapsed());
                    }
                    Ok(meter.stop())
                })
                .await?;

            let _ = stop.send(());
            let answered = responder.await??;
            expect_count("requests answered", p.rpc_round_trips + 1, answered)?;
            ch.queue_delete(&names.main, false, false).await?;
            ch.close().await?;
            Ok(Outcome {
                messages: p.rpc_round_trips,
                payload_bytes: 2 * p.rpc_round_trips * p.small_body as u64,
                span: Some(span),
                latencies,
                ..Outcome::default()
            })
        })
        .await
    }

    async fn large_body(p: &Params, names: &Names) -> Result<Outcome> {
        open_connection(&config(), async |conn| -> Result<Outcome> {
            let publisher = conn.channel().await?;
            declare(&publisher, &names.main).await?;
            let consumer_ch = conn.channel().await?;
            consumer_ch
                .basic_qos(u16::try_from(p.large_window)?, false)
                .await?;
            let mut body = Body::new(p.large_body);
            let (expected, size) = (p.large_messages, p.large_body);

            let meter = Meter::start();
            let mut consumer = consumer_ch
                .basic_consume(&names.main, ConsumeOptions::default())
                .await?;
            let consuming = tokio::spawn(async move {
                let mut tally = Tally::new(expected);
                while !tally.complete() {
                    let Some(delivery) = consumer.next().await else {
                        mismatch!("consumer ended after {} messages", tally.count());
                    };
                    let delivery = delivery?;
                    tally.record_body(&delivery.body, size)?;
                    delivery.ack()?;
                }
                Ok::<_, crate::scenario::BenchError>(consumer)
            });
            publish_window(
                &publisher,
                &names.main,
                &mut body,
                0,
                expected,
                p.large_window,
            )
            .await?;
            let mut consumer = consuming.await??;
            let left = ready(&consumer_ch, &names.main).await?;
            let span = meter.stop();

            expect_count("ready messages after consuming", 0, left)?;
            consumer.cancel().await?;
            drop(consumer);
            consumer_ch.close().await?;
            expect_count(
                "messages back in the queue",
                0,
                ready(&publisher, &names.main).await?,
            )?;
            publisher.queue_delete(&names.main, false, false).await?;
            publisher.close().await?;
            Ok(Outcome {
                messages: expected,
                payload_bytes: expected * size as u64,
                span: Some(span),
                ..Outcome::default()
            })
        })
        .await
    }

    async fn many_channels(p: &Params, names: &Names) -> Result<Outcome> {
        open_connection(&config(), async |conn| -> Result<Outcome> {
            let control = conn.channel().await?;
            declare(&control, &names.main).await?;
            let mut body = Body::new(p.small_body);
            let mut channels = Vec::with_capacity(p.channels as usize);
            let rss_before = current_rss_bytes();

            let meter = Meter::start();
            let opening = Instant::now();
            for _ in 0..p.channels {
                channels.push(conn.channel().await?);
            }
            let open_time = opening.elapsed();
            let rss_after = current_rss_bytes();
            let round = Instant::now();
            let mut confirms = Vec::with_capacity(channels.len());
            for (index, ch) in (0..).zip(&channels) {
                confirms.push(
                    ch.basic_publish_with(
                        "",
                        &names.main,
                        body.stamp(index),
                        BasicProperties::default(),
                        NOT_MANDATORY,
                    )
                    .await?,
                );
            }
            for confirm in confirms {
                confirm.await?;
            }
            let round_time = round.elapsed();
            let span = meter.stop();

            expect_distinct_ids(channels.iter().map(Channel::id).collect(), p.channels)?;
            expect_count("open channels", p.channels + 1, conn.open_channels() as u64)?;
            expect_count(
                "messages in the queue",
                p.channels,
                ready(&control, &names.main).await?,
            )?;
            for ch in channels {
                ch.close().await?;
            }
            control.queue_delete(&names.main, false, false).await?;
            control.close().await?;
            Ok(Outcome {
                messages: p.channels,
                payload_bytes: p.channels * p.small_body as u64,
                span: Some(span),
                rss_bytes_per_channel: Some(per_item(rss_before, rss_after, p.channels)),
                open_time: Some(open_time),
                round_time: Some(round_time),
                ..Outcome::default()
            })
        })
        .await
    }

    async fn spread_publish(
        p: &Params,
        names: &Names,
        channels: usize,
        total: u64,
        window: usize,
    ) -> Result<Outcome> {
        open_connection(&config(), async |conn| -> Result<Outcome> {
            let control = conn.channel().await?;
            declare(&control, &names.main).await?;
            let mut publishers = Vec::with_capacity(channels);
            for _ in 0..channels {
                publishers.push(conn.channel().await?);
            }
            let mut body = Body::new(p.small_body);
            let mut pending: VecDeque<Confirmation> = VecDeque::with_capacity(window);

            let meter = Meter::start();
            for (index, ch) in (0..total).zip(publishers.iter().cycle()) {
                if pending.len() == window {
                    pending.pop_front().expect("window is full").await?;
                }
                pending.push_back(
                    ch.basic_publish_with(
                        "",
                        &names.main,
                        body.stamp(index),
                        BasicProperties::default(),
                        NOT_MANDATORY,
                    )
                    .await?,
                );
            }
            while let Some(confirm) = pending.pop_front() {
                confirm.await?;
            }
            let span = meter.stop();

            expect_count(
                "confirmed messages in the queue",
                total,
                ready(&control, &names.main).await?,
            )?;
            for ch in publishers {
                ch.close().await?;
            }
            control.queue_delete(&names.main, false, false).await?;
            control.close().await?;
            Ok(Outcome {
                messages: total,
                payload_bytes: total * p.small_body as u64,
                span: Some(span),
                ..Outcome::default()
            })
        })
        .await
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
        open_connection(&config(), async |conn| -> Result<Outcome> {
            let control = conn.channel().await?;
            declare(&control, &names.main).await?;
            let mut channels = Vec::with_capacity(publishers);
            for _ in 0..publishers {
                channels.push(conn.channel().await?);
            }

            let meter = Meter::start();
            let tasks: Vec<_> = (0..)
                .zip(channels)
                .map(|(k, ch): (u64, Channel)| {
                    let queue = names.main.clone();
                    let size = p.small_body;
                    tokio::spawn(async move {
                        let mut body = Body::new(size);
                        publish_window(&ch, &queue, &mut body, k * each, each, window).await?;
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
                ch.close().await?;
            }
            control.queue_delete(&names.main, false, false).await?;
            control.close().await?;
            Ok(Outcome {
                messages: total,
                payload_bytes: total * p.small_body as u64,
                span: Some(span),
                ..Outcome::default()
            })
        })
        .await
    }
}

/// One request/reply round trip; `index` `u64::MAX` is the warm-up call.
async fn rpc_call(
    ch: &Channel,
    replies: &mut serena::Consumer,
    names: &Names,
    body: &mut Body,
    index: u64,
    size: usize,
) -> Result<()> {
    let props = BasicProperties::default()
        .with_correlation_id(correlation_id(index))
        .with_reply_to(names.reply.as_str());
    let _unawaited: Confirmation = ch
        .basic_publish_with("", &names.main, body.stamp(index), props, NOT_MANDATORY)
        .await?;
    let Some(reply) = replies.next().await else {
        mismatch!("reply consumer ended at request {index}");
    };
    let reply = reply?;
    let correlation = reply.properties.correlation_id.as_deref();
    check_reply(index, correlation, &reply.body, size)
}

/// One call of rpc_direct through serena's `RpcClient`; `index` `u64::MAX` is the warm-up call.
async fn direct_call(
    rpc: &RpcClient,
    names: &Names,
    body: &mut Body,
    index: u64,
    size: usize,
) -> Result<()> {
    let reply = rpc
        .request(
            "",
            &names.main,
            body.stamp(index),
            BasicProperties::default(),
        )
        .await?;
    check_echo(index, &reply.body, size)
}

impl UnconfirmedClient for Serena {
    async fn publish_noconfirm(p: &Params, names: &Names) -> Result<Outcome> {
        open_connection(&config(), async |conn| -> Result<Outcome> {
            let ch = conn.unconfirmed_channel().await?;
            ch.queue_declare(&names.main, QueueDeclareOptions::default())
                .await?;
            let mut body = Body::new(p.small_body);

            let meter = Meter::start();
            for index in 0..p.publish_messages {
                ch.basic_publish(
                    "",
                    &names.main,
                    body.stamp(index),
                    BasicProperties::default(),
                )
                .await?;
            }
            let written_time = meter.elapsed();
            // The passive declare goes on the publishing channel, after its publishes.
            let held = |ch: &UnconfirmedChannel| {
                let ch = ch.clone();
                let queue = names.main.clone();
                async move {
                    let ok = ch.queue_declare(&queue, passive()).await?;
                    Ok(u64::from(ok.message_count))
                }
            };
            until_held(|| held(&ch), p.publish_messages).await?;
            let span = meter.stop();

            let check = conn.channel().await?;
            check.queue_delete(&names.main, false, false).await?;
            check.close().await?;
            ch.close().await?;
            Ok(Outcome {
                messages: p.publish_messages,
                payload_bytes: p.publish_messages * p.small_body as u64,
                span: Some(span),
                written_time: Some(written_time),
                ..Outcome::default()
            })
        })
        .await
    }
}
