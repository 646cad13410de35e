//! The scenarios with amqprs (2.x from crates.io).
//!
//! amqprs reports publisher confirms through a channel callback (`publish_ack`) rather than a
//! future per publish, so this module keeps a [`Ledger`] per channel that the callback feeds and
//! the publisher waits on; the sliding window has the same shape as for the other clients.
//! `basic_publish` takes the body as an owned `Vec<u8>`, so each publish copies the stamped
//! buffer: that is the cost of its API.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use amqprs::channel::{
    BasicAckArguments, BasicCancelArguments, BasicConsumeArguments, BasicPublishArguments,
    BasicQosArguments, Channel, ConfirmSelectArguments, ConsumerMessage, QueueDeclareArguments,
    QueueDeleteArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::measure::{Meter, current_rss_bytes};
use crate::scenario::{
    Body, Client, Names, Outcome, Params, Result, Tally, UnconfirmedClient, check_reply,
    correlation_id, expect_count, expect_distinct_ids, mismatch, per_item, until_held,
};

/// amqprs, driven through its public API.
pub struct Amqprs;

type Deliveries = mpsc::UnboundedReceiver<ConsumerMessage>;

/// What amqprs' callbacks return.
type CallbackResult<T> = std::result::Result<T, amqprs::error::Error>;

/// Confirms received on one channel, fed by [`LedgerCallback`].
#[derive(Default)]
struct Ledger {
    state: Mutex<LedgerState>,
    changed: Notify,
}

#[derive(Default)]
struct LedgerState {
    /// Every tag up to this one is confirmed.
    through: u64,
    /// Tags above `through` confirmed one by one.
    singles: BTreeSet<u64>,
    /// The first tag the broker nacked, if any.
    nacked: Option<u64>,
    /// A message came back as unroutable.
    returned: bool,
}

impl LedgerState {
    fn confirmed(&self) -> u64 {
        self.through + self.singles.len() as u64
    }

    fn ack(&mut self, tag: u64, multiple: bool) {
        if multiple {
            self.through = self.through.max(tag);
            let through = self.through;
            self.singles.retain(|&t| t > through);
        } else if tag > self.through {
            self.singles.insert(tag);
        }
        while self.singles.remove(&(self.through + 1)) {
            self.through += 1;
        }
    }
}

impl Ledger {
    /// Waits until at most `outstanding` of the first `published` publishes lack a confirm.
    async fn wait(&self, published: u64, outstanding: u64) -> Result<()> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let st = self.state.lock().expect("ledger lock");
                if let Some(tag) = st.nacked {
                    mismatch!("the broker nacked publish {tag}");
                }
                if st.returned {
                    mismatch!("the broker returned a publish");
                }
                if published - st.confirmed().min(published) <= outstanding {
                    return Ok(());
                }
            }
            changed.await;
        }
    }
}

/// The channel callback that records confirms in a [`Ledger`].
struct LedgerCallback(Arc<Ledger>);

#[async_trait::async_trait]
impl amqprs::callbacks::ChannelCallback for LedgerCallback {
    async fn close(&mut self, _channel: &Channel, close: CloseChannel) -> CallbackResult<()> {
        eprintln!("amqprs: the server closed a channel: {close}");
        Ok(())
    }

    async fn cancel(&mut self, _channel: &Channel, _cancel: Cancel) -> CallbackResult<()> {
        Ok(())
    }

    async fn flow(&mut self, _channel: &Channel, active: bool) -> CallbackResult<bool> {
        Ok(active)
    }

    async fn publish_ack(&mut self, _channel: &Channel, ack: Ack) {
        self.0
            .state
            .lock()
            .expect("ledger lock")
            .ack(ack.delivery_tag(), ack.mutiple());
        self.0.changed.notify_waiters();
    }

    async fn publish_nack(&mut self, _channel: &Channel, nack: Nack) {
        let mut st = self.0.state.lock().expect("ledger lock");
        st.nacked.get_or_insert(nack.delivery_tag());
        drop(st);
        self.0.changed.notify_waiters();
    }

    async fn publish_return(
        &mut self,
        _channel: &Channel,
        _ret: Return,
        _properties: BasicProperties,
        _content: Vec<u8>,
    ) {
        self.0.state.lock().expect("ledger lock").returned = true;
        self.0.changed.notify_waiters();
    }
}

async fn connect() -> Result<Connection> {
    let args = OpenConnectionArguments::new("127.0.0.1", 5672, "guest", "guest")
        .connection_name("amqprs-bench")
        .finish();
    Ok(Connection::open(&args).await?)
}

/// A channel with publisher confirms on, and the ledger its confirms go to.
async fn confirm_channel(conn: &Connection) -> Result<(Channel, Arc<Ledger>)> {
    let ch = conn.open_channel(None).await?;
    let ledger = Arc::new(Ledger::default());
    ch.register_callback(LedgerCallback(ledger.clone())).await?;
    ch.confirm_select(ConfirmSelectArguments::default()).await?;
    Ok((ch, ledger))
}

async fn declare(ch: &Channel, queue: &str) -> Result<()> {
    ch.queue_declare(QueueDeclareArguments::new(queue)).await?;
    Ok(())
}

/// Ready messages in `queue`.
async fn ready(ch: &Channel, queue: &str) -> Result<u64> {
    let args = QueueDeclareArguments::new(queue).passive(true).finish();
    match ch.queue_declare(args).await? {
        Some((_, count, _)) => Ok(u64::from(count)),
        None => mismatch!("no declare-ok for a passive declare of {queue}"),
    }
}

async fn delete(ch: &Channel, queue: &str) -> Result<()> {
    ch.queue_delete(QueueDeleteArguments::new(queue)).await?;
    Ok(())
}

async fn publish(ch: &Channel, queue: &str, body: &[u8], props: BasicProperties) -> Result<()> {
    ch.basic_publish(props, body.to_vec(), BasicPublishArguments::new("", queue))
        .await?;
    Ok(())
}

/// Publishes `count` stamped bodies, at most `window` unconfirmed, and waits for every confirm.
async fn publish_window(
    ch: &Channel,
    ledger: &Ledger,
    queue: &str,
    body: &mut Body,
    count: u64,
    window: usize,
) -> Result<()> {
    let window = window as u64;
    for index in 0..count {
        // `index` publishes are out; make room for one more.
        ledger.wait(index, window - 1).await?;
        publish(ch, queue, body.stamp(index), BasicProperties::default()).await?;
    }
    ledger.wait(count, 0).await
}

async fn consume(ch: &Channel, queue: &str, no_ack: bool) -> Result<(String, Deliveries)> {
    let args = BasicConsumeArguments::new(queue, "")
        .manual_ack(!no_ack)
        .finish();
    Ok(ch.basic_consume_rx(args).await?)
}

/// The next delivery's tag, properties and body, or a failure if the stream ended.
async fn next(rx: &mut Deliveries, what: &str) -> Result<(u64, BasicProperties, Vec<u8>)> {
    let Some(msg) = rx.recv().await else {
        mismatch!("{what}: the consumer ended");
    };
    match (msg.deliver, msg.basic_properties, msg.content) {
        (Some(deliver), Some(props), Some(body)) => Ok((deliver.delivery_tag(), props, body)),
        _ => mismatch!("{what}: a delivery without method, properties or body"),
    }
}

async fn ack(ch: &Channel, tag: u64) -> Result<()> {
    ch.basic_ack(BasicAckArguments::new(tag, false)).await?;
    Ok(())
}

/// The responder of rpc_latency: echoes each request to its reply_to until told to stop.
async fn respond(queue: String, size: usize, stop: oneshot::Receiver<()>) -> Result<u64> {
    let conn = connect().await?;
    let ch = conn.open_channel(None).await?;
    let (tag, mut requests) = consume(&ch, &queue, true).await?;
    let mut answered = 0;
    tokio::pin!(stop);
    loop {
        let (_, props, body) = tokio::select! {
            r = next(&mut requests, "responder") => r?,
            _ = &mut stop => break,
        };
        let (Some(reply_to), Some(correlation)) = (props.reply_to(), props.correlation_id()) else {
            mismatch!("request without reply_to or correlation_id");
        };
        if body.len() != size {
            mismatch!("request of {} bytes, expected {size}", body.len());
        }
        let reply = BasicProperties::default()
            .with_correlation_id(correlation)
            .finish();
        // The body came in owned; it goes straight back out.
        ch.basic_publish(reply, body, BasicPublishArguments::new("", reply_to))
            .await?;
        answered += 1;
    }
    ch.basic_cancel(BasicCancelArguments::new(&tag)).await?;
    ch.close().await?;
    conn.close().await?;
    Ok(answered)
}

/// RabbitMQ's direct reply-to pseudo-queue (rpc_direct).
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// One request/reply round trip, the reply to `reply_to`; `index` `u64::MAX` is the warm-up
/// call.
async fn rpc_call(
    ch: &Channel,
    replies: &mut Deliveries,
    (names, reply_to): (&Names, &str),
    body: &mut Body,
    index: u64,
    size: usize,
) -> Result<()> {
    let props = BasicProperties::default()
        .with_correlation_id(&correlation_id(index))
        .with_reply_to(reply_to)
        .finish();
    publish(ch, &names.main, body.stamp(index), props).await?;
    let (_, props, reply) = next(replies, "reply consumer").await?;
    check_reply(
        index,
        props.correlation_id().map(String::as_str),
        &reply,
        size,
    )
}

/// rpc_latency with the replies to `reply_to`: `names.reply` (a queue declared here) or
/// direct reply-to.
async fn rpc_run(p: &Params, names: &Names, reply_to: &str) -> Result<Outcome> {
    let conn = connect().await?;
    let ch = conn.open_channel(None).await?;
    declare(&ch, &names.main).await?;
    if reply_to == names.reply {
        declare(&ch, &names.reply).await?;
    }
    let (tag, mut replies) = consume(&ch, reply_to, true).await?;
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
    ch.basic_cancel(BasicCancelArguments::new(&tag)).await?;
    delete(&ch, &names.main).await?;
    if reply_to == names.reply {
        delete(&ch, &names.reply).await?;
    }
    ch.close().await?;
    conn.close().await?;
    Ok(Outcome {
        messages: p.rpc_round_trips,
        payload_bytes: 2 * p.rpc_round_trips * p.small_body as u64,
        span: Some(span),
        latencies,
        ..Outcome::default()
    })
}

impl Client for Amqprs {
    const NAME: &'static str = "amqprs";

    async fn publish_confirm(p: &Params, names: &Names) -> Result<Outcome> {
        let conn = connect().await?;
        let (ch, ledger) = confirm_channel(&conn).await?;
        declare(&ch, &names.main).await?;
        let mut body = Body::new(p.small_body);

        let meter = Meter::start();
        publish_window(
            &ch,
            &ledger,
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
        ch.close().await?;
        conn.close().await?;
        Ok(Outcome {
            messages: p.publish_messages,
            payload_bytes: p.publish_messages * p.small_body as u64,
            span: Some(span),
            ..Outcome::default()
        })
    }

    async fn consume_ack(p: &Params, names: &Names) -> Result<Outcome> {
        let conn = connect().await?;
        let ch = conn.open_channel(None).await?;
        expect_count(
            "prefilled messages",
            p.consume_messages,
            ready(&ch, &names.main).await?,
        )?;
        ch.basic_qos(BasicQosArguments::new(0, p.consume_prefetch, false))
            .await?;
        let mut tally = Tally::new(p.consume_messages);

        let meter = Meter::start();
        let (tag, mut deliveries) = consume(&ch, &names.main, false).await?;
        while !tally.complete() {
            let (delivery_tag, _, body) = next(&mut deliveries, "consume_ack").await?;
            tally.record_body(&body, p.small_body)?;
            ack(&ch, delivery_tag).await?;
        }
        // A round trip on the channel: every ack before it has reached the broker.
        let left = ready(&ch, &names.main).await?;
        let span = meter.stop();

        expect_count("ready messages after consuming", 0, left)?;
        ch.basic_cancel(BasicCancelArguments::new(&tag)).await?;
        ch.close().await?;
        // Unacked messages would be back in the queue now that the channel is closed.
        let check = conn.open_channel(None).await?;
        expect_count(
            "messages back in the queue",
            0,
            ready(&check, &names.main).await?,
        )?;
        delete(&check, &names.main).await?;
        check.close().await?;
        conn.close().await?;
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
        let (publisher, ledger) = confirm_channel(&conn).await?;
        declare(&publisher, &names.main).await?;
        let consumer_ch = conn.open_channel(None).await?;
        consumer_ch
            .basic_qos(BasicQosArguments::new(
                0,
                u16::try_from(p.large_window)?,
                false,
            ))
            .await?;
        let mut body = Body::new(p.large_body);
        let (expected, size) = (p.large_messages, p.large_body);

        let meter = Meter::start();
        let (tag, mut deliveries) = consume(&consumer_ch, &names.main, false).await?;
        let acker = consumer_ch.clone();
        let consuming = tokio::spawn(async move {
            let mut tally = Tally::new(expected);
            while !tally.complete() {
                let (delivery_tag, _, body) = next(&mut deliveries, "large_body").await?;
                tally.record_body(&body, size)?;
                ack(&acker, delivery_tag).await?;
            }
            Ok::<_, crate::scenario::BenchError>(())
        });
        publish_window(
            &publisher,
            &ledger,
            &names.main,
            &mut body,
            expected,
            p.large_window,
        )
        .await?;
        consuming.await??;
        let left = ready(&consumer_ch, &names.main).await?;
        let span = meter.stop();

        expect_count("ready messages after consuming", 0, left)?;
        consumer_ch
            .basic_cancel(BasicCancelArguments::new(&tag))
            .await?;
        consumer_ch.close().await?;
        expect_count(
            "messages back in the queue",
            0,
            ready(&publisher, &names.main).await?,
        )?;
        delete(&publisher, &names.main).await?;
        publisher.close().await?;
        conn.close().await?;
        Ok(Outcome {
            messages: expected,
            payload_bytes: expected * size as u64,
            span: Some(span),
            ..Outcome::default()
        })
    }

    async fn many_channels(p: &Params, names: &Names) -> Result<Outcome> {
        let conn = connect().await?;
        let control = conn.open_channel(None).await?;
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
        for (index, (ch, _)) in (0..).zip(&channels) {
            publish(
                ch,
                &names.main,
                body.stamp(index),
                BasicProperties::default(),
            )
            .await?;
        }
        for (_, ledger) in &channels {
            ledger.wait(1, 0).await?;
        }
        let round_time = round.elapsed();
        let span = meter.stop();

        expect_distinct_ids(
            channels.iter().map(|(ch, _)| ch.channel_id()).collect(),
            p.channels,
        )?;
        expect_count(
            "messages in the queue",
            p.channels,
            ready(&control, &names.main).await?,
        )?;
        for (ch, _) in channels {
            ch.close().await?;
        }
        delete(&control, &names.main).await?;
        control.close().await?;
        conn.close().await?;
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
        let control = conn.open_channel(None).await?;
        declare(&control, &names.main).await?;
        let mut publishers = Vec::with_capacity(channels);
        for _ in 0..channels {
            publishers.push(confirm_channel(&conn).await?);
        }
        let mut body = Body::new(p.small_body);
        // Publishes so far per channel; each pending entry is (channel, its publish number).
        let mut published = vec![0u64; channels];
        let mut pending: VecDeque<(usize, u64)> = VecDeque::with_capacity(window);

        let meter = Meter::start();
        for index in 0..total {
            if pending.len() == window {
                let (c, n) = pending.pop_front().expect("window is full");
                publishers[c].1.wait(n, 0).await?;
            }
            let c = (index % channels as u64) as usize;
            publish(
                &publishers[c].0,
                &names.main,
                body.stamp(index),
                BasicProperties::default(),
            )
            .await?;
            published[c] += 1;
            pending.push_back((c, published[c]));
        }
        for ((_, ledger), &n) in publishers.iter().zip(&published) {
            ledger.wait(n, 0).await?;
        }
        let span = meter.stop();

        expect_count(
            "confirmed messages in the queue",
            total,
            ready(&control, &names.main).await?,
        )?;
        for (ch, _) in publishers {
            ch.close().await?;
        }
        delete(&control, &names.main).await?;
        control.close().await?;
        conn.close().await?;
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
        let control = conn.open_channel(None).await?;
        declare(&control, &names.main).await?;
        let mut channels = Vec::with_capacity(publishers);
        for _ in 0..publishers {
            channels.push(confirm_channel(&conn).await?);
        }

        let meter = Meter::start();
        let tasks: Vec<_> = channels
            .into_iter()
            .map(|(ch, ledger)| {
                let queue = names.main.clone();
                let size = p.small_body;
                tokio::spawn(async move {
                    let mut body = Body::new(size);
                    publish_window(&ch, &ledger, &queue, &mut body, each, window).await?;
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
        delete(&control, &names.main).await?;
        control.close().await?;
        conn.close().await?;
        Ok(Outcome {
            messages: total,
            payload_bytes: total * p.small_body as u64,
            span: Some(span),
            ..Outcome::default()
        })
    }
}

impl UnconfirmedClient for Amqprs {
    async fn publish_noconfirm(p: &Params, names: &Names) -> Result<Outcome> {
        let conn = connect().await?;
        // No confirm_select and no ledger: nothing comes back for a publish.
        let ch = conn.open_channel(None).await?;
        declare(&ch, &names.main).await?;
        let mut body = Body::new(p.small_body);

        let meter = Meter::start();
        for index in 0..p.publish_messages {
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
        ch.close().await?;
        conn.close().await?;
        Ok(Outcome {
            messages: p.publish_messages,
            payload_bytes: p.publish_messages * p.small_body as u64,
            span: Some(span),
            written_time: Some(written_time),
            ..Outcome::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::LedgerState;

    #[test]
    fn ledger_counts_single_and_multiple_acks() {
        let mut st = LedgerState::default();
        st.ack(2, false);
        assert_eq!(st.confirmed(), 1);
        st.ack(1, false);
        assert_eq!((st.through, st.confirmed()), (2, 2));
        st.ack(5, false);
        st.ack(4, true);
        assert_eq!((st.through, st.confirmed()), (5, 5));
        st.ack(9, true);
        assert_eq!((st.through, st.confirmed()), (9, 9));
        st.ack(3, false);
        assert_eq!(st.confirmed(), 9, "an old tag counts once");
    }
}
