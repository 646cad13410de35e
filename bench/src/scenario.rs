//! The seven scenarios, their sizes, the contract every client implements, and the checks that
//! make a run fail loudly when a count or a size is wrong.
//!
//! Every message body carries its index in its first and last eight bytes (little endian), so
//! a consumer can tell a lost, duplicated, truncated or foreign message from a good one.

use std::fmt;
use std::time::{Duration, Instant};

use crate::measure::Span;

/// Any failure of a run: a client error, or a verification that did not hold.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// Result of a run step.
pub type Result<T> = std::result::Result<T, BenchError>;

/// Fails the run with a message naming what was expected and what was seen.
macro_rules! mismatch {
    ($($arg:tt)*) => {
        return Err(format!("verification failed: {}", format!($($arg)*)).into())
    };
}
pub(crate) use mismatch;

/// The scenarios, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// 64-byte messages published with confirms, a sliding window of outstanding confirms.
    PublishConfirm,
    /// 64-byte messages published without confirms, until the queue holds them all.
    PublishNoconfirm,
    /// Prefilled 64-byte messages consumed with a prefetch window and one ack each.
    ConsumeAck,
    /// Sequential request/reply round trips through a responder in the same process.
    RpcLatency,
    /// rpc_latency with the replies over RabbitMQ's direct reply-to instead of a reply queue.
    RpcDirect,
    /// 1 MiB messages published with confirms and consumed back at the same time.
    LargeBody,
    /// Many channels opened on one connection, then one confirmed publish on each.
    ManyChannels,
    /// publish_confirm through serena's `ReliablePublisher` (serena only: the peers have no
    /// such handle), to compare with serena's publish_confirm on a plain channel.
    PublishReliable,
    /// publish_confirm on a plain channel with a `message_id` of the reliable publisher's form
    /// on every message (serena only): the messages publish_reliable sends, so the two differ
    /// by the handle alone and not by what the ids cost the broker.
    PublishConfirmIds,
}

impl Scenario {
    /// All of them, in run order.
    pub const ALL: [Scenario; 9] = [
        Scenario::PublishConfirm,
        Scenario::PublishNoconfirm,
        Scenario::ConsumeAck,
        Scenario::RpcLatency,
        Scenario::RpcDirect,
        Scenario::LargeBody,
        Scenario::ManyChannels,
        Scenario::PublishReliable,
        Scenario::PublishConfirmIds,
    ];

    /// The name used on the command line and in the output.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::PublishConfirm => "publish_confirm",
            Scenario::PublishNoconfirm => "publish_noconfirm",
            Scenario::ConsumeAck => "consume_ack",
            Scenario::RpcLatency => "rpc_latency",
            Scenario::RpcDirect => "rpc_direct",
            Scenario::LargeBody => "large_body",
            Scenario::ManyChannels => "many_channels",
            Scenario::PublishReliable => "publish_reliable",
            Scenario::PublishConfirmIds => "publish_confirm_ids",
        }
    }

    /// Parses a name given by [`name`](Self::name).
    pub fn parse(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// True when `client` runs it: every client runs every scenario but publish_reliable and
    /// publish_confirm_ids, which are serena's alone.
    pub fn runs_with(self, client: &str) -> bool {
        !matches!(
            self,
            Scenario::PublishReliable | Scenario::PublishConfirmIds
        ) || client == "serena"
    }

    /// True when the scenario pushes messages as fast as it can, so the machine's CPU bounds
    /// its rate; false for rpc_latency (one round trip at a time) and many_channels (mostly
    /// opening channels).
    pub fn is_throughput(self) -> bool {
        !matches!(
            self,
            Scenario::RpcLatency | Scenario::RpcDirect | Scenario::ManyChannels
        )
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Sizes of every scenario; the same for every client.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Size of the small messages (publish_confirm, consume_ack, rpc_latency, many_channels).
    pub small_body: usize,
    /// publish_confirm and publish_noconfirm: messages published.
    pub publish_messages: u64,
    /// publish_confirm: most publishes awaiting their confirm at once.
    pub publish_window: usize,
    /// consume_ack: messages prefilled and consumed.
    pub consume_messages: u64,
    /// consume_ack: basic.qos prefetch count of the consumer.
    pub consume_prefetch: u16,
    /// rpc_latency: sequential round trips.
    pub rpc_round_trips: u64,
    /// large_body: messages published and consumed back.
    pub large_messages: u64,
    /// large_body: size of each message.
    pub large_body: usize,
    /// large_body: most publishes awaiting their confirm at once, and the consumer's prefetch.
    pub large_window: usize,
    /// many_channels: channels opened on one connection.
    pub channels: u64,
}

impl Params {
    /// The sizes of the issue: the full run.
    pub const FULL: Params = Params {
        small_body: 64,
        publish_messages: 100_000,
        publish_window: 1_000,
        consume_messages: 100_000,
        consume_prefetch: 500,
        rpc_round_trips: 5_000,
        large_messages: 500,
        large_body: 1 << 20,
        large_window: 50,
        channels: 1_000,
    };

    /// A tenth of the work (the windows, body sizes and channel count unchanged), for a check.
    pub const QUICK: Params = Params {
        publish_messages: 10_000,
        consume_messages: 10_000,
        rpc_round_trips: 1_000,
        large_messages: 50,
        ..Params::FULL
    };

    /// Full or quick.
    pub fn new(quick: bool) -> Params {
        if quick { Params::QUICK } else { Params::FULL }
    }
}

/// Queue names of one run, unique to it and short (under 32 bytes, see `runner::base`; they
/// are the routing keys too). `main` is the scenario's queue; `reply` is the reply queue of
/// rpc_latency (unused elsewhere). The runner deletes both after every run.
#[derive(Debug, Clone)]
pub struct Names {
    /// The scenario's queue.
    pub main: String,
    /// rpc_latency's reply queue.
    pub reply: String,
}

/// The `--name-len` values: from above any name's natural length to AMQP's short-string limit.
pub const NAME_LEN: std::ops::RangeInclusive<usize> = 24..=255;

impl Names {
    /// Names built on a unique base; with `len`, each padded with `_` to exactly `len` bytes
    /// (`--name-len`, to see what long queue names and routing keys cost), `len` in
    /// [`NAME_LEN`].
    pub fn new(base: &str, len: Option<usize>) -> Names {
        let pad = |name: String| match len {
            Some(len) => format!("{name}{}", "_".repeat(len.saturating_sub(name.len()))),
            None => name,
        };
        Names {
            main: pad(format!("{base}.main")),
            reply: pad(format!("{base}.reply")),
        }
    }
}

/// What a client measured in one run, after its checks passed.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Messages (or round trips, or channels) the measured part handled.
    pub messages: u64,
    /// Body bytes carried end to end (large_body: published and consumed back).
    pub payload_bytes: u64,
    /// Wall time, CPU time and peak RSS of the measured part.
    pub span: Option<Span>,
    /// One entry per round trip (rpc_latency).
    pub latencies: Vec<Duration>,
    /// many_channels: resident memory gained by opening the channels, per channel.
    pub rss_bytes_per_channel: Option<f64>,
    /// many_channels: time to open all channels.
    pub open_time: Option<Duration>,
    /// many_channels: time of the publish round that followed.
    pub round_time: Option<Duration>,
    /// publish_noconfirm: time until the last publish call returned (the queue may not hold
    /// them all yet; the span ends when it does).
    pub written_time: Option<Duration>,
}

/// One AMQP client under test. Each function connects to 127.0.0.1:5672 as guest, sets up
/// outside the measured part, measures with [`crate::measure::Meter`], checks counts and
/// sizes, deletes its queues and returns what it measured. All run inside a tokio
/// multi-thread runtime with the same number of workers for every client.
pub trait Client {
    /// Name in the output.
    const NAME: &'static str;

    /// Publishes `publish_messages` bodies of `small_body` bytes to `names.main`, at most
    /// `publish_window` unconfirmed at once, not mandatory; checks every confirm is an ack and
    /// the queue then holds exactly that many messages.
    fn publish_confirm(p: &Params, names: &Names) -> impl Future<Output = Result<Outcome>>;

    /// Consumes the `consume_messages` prefilled messages of `names.main` with prefetch
    /// `consume_prefetch`, acking each; checks each body and that every index came once.
    fn consume_ack(p: &Params, names: &Names) -> impl Future<Output = Result<Outcome>>;

    /// Runs a responder on `names.main` (on its own connection and task) and makes
    /// `rpc_round_trips` sequential requests whose replies come to `names.reply`, matched by
    /// correlation id; checks each reply echoes its request.
    fn rpc_latency(p: &Params, names: &Names) -> impl Future<Output = Result<Outcome>>;

    /// rpc_latency over RabbitMQ's direct reply-to: the caller consumes
    /// `amq.rabbitmq.reply-to` with no_ack on the channel it publishes its requests on (no
    /// reply queue), the responder (the same one) replies to the rewritten `reply_to`; checks
    /// each reply echoes its request.
    fn rpc_direct(p: &Params, names: &Names) -> impl Future<Output = Result<Outcome>>;

    /// Publishes `large_messages` bodies of `large_body` bytes with confirms (window
    /// `large_window`) while a consumer on another channel (prefetch `large_window`) takes
    /// them back and acks them; checks sizes and indexes.
    fn large_body(p: &Params, names: &Names) -> impl Future<Output = Result<Outcome>>;

    /// Opens `channels` channels with confirms on one connection, then publishes one
    /// `small_body` message on each and awaits every confirm; checks the channel ids are
    /// distinct and the queue holds one message per channel.
    fn many_channels(p: &Params, names: &Names) -> impl Future<Output = Result<Outcome>>;

    /// Scaling over channels: opens `channels` channels with confirms on one connection
    /// (outside the measured part), then one task publishes `total` bodies of `small_body`
    /// bytes to `names.main`, message `i` on channel `i % channels`, at most `window`
    /// unconfirmed over all channels; checks every confirm is an ack and the queue then holds
    /// exactly `total` messages.
    fn spread_publish(
        p: &Params,
        names: &Names,
        channels: usize,
        total: u64,
        window: usize,
    ) -> impl Future<Output = Result<Outcome>>;

    /// Scaling over publishers: opens `publishers` channels with confirms on one connection
    /// (outside the measured part), then runs one task per channel, each publishing
    /// `total / publishers` bodies of `small_body` bytes to `names.main` with at most `window`
    /// unconfirmed; checks every confirm is an ack and the queue then holds exactly `total`
    /// messages.
    fn concurrent_publish(
        p: &Params,
        names: &Names,
        publishers: usize,
        total: u64,
        window: usize,
    ) -> impl Future<Output = Result<Outcome>>;
}

/// A client that can publish on a channel without publisher confirms.
pub trait UnconfirmedClient: Client {
    /// Publishes `publish_messages` bodies of `small_body` bytes to `names.main` on a channel
    /// without publisher confirms, not mandatory, as fast as the client takes them; records
    /// the time until the last publish call returned as `written_time`, and ends the measured
    /// part only once the queue holds every message ([`until_held`] with a passive declare on
    /// the publishing channel).
    fn publish_noconfirm(p: &Params, names: &Names) -> impl Future<Output = Result<Outcome>>;
}

/// Waits until `count` (a passive queue.declare's message_count on the channel that
/// published) returns `expected`, asking again every millisecond; fails on more than
/// `expected` or after 30 s.
///
/// This is publish_noconfirm's end: without confirms, a returned publish call says only that
/// the client took the message. The broker handles a channel's frames in order and hands each
/// publish to the queue before it handles a later declare on that channel, so the first answer
/// normally counts every message already; asking again covers a queue that lags. Each ask is
/// one round trip, inside the measured part.
pub async fn until_held<F: Future<Output = Result<u64>>>(
    mut count: impl FnMut() -> F,
    expected: u64,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held = count().await?;
        if held == expected {
            return Ok(());
        }
        if held > expected {
            mismatch!("the queue holds {held} messages, {expected} were published");
        }
        if Instant::now() > deadline {
            mismatch!("the queue holds {held} of {expected} messages after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Runs publish_noconfirm with client `C`.
pub async fn run_unconfirmed<C: UnconfirmedClient>(p: &Params, names: &Names) -> Result<Outcome> {
    let outcome = C::publish_noconfirm(p, names).await?;
    if outcome.span.is_none() || outcome.written_time.is_none() {
        return Err(format!("{} publish_noconfirm: the client measured nothing", C::NAME).into());
    }
    Ok(outcome)
}

/// Runs `scenario` with client `C` (publish_noconfirm: see [`run_unconfirmed`]).
pub async fn run<C: Client>(scenario: Scenario, p: &Params, names: &Names) -> Result<Outcome> {
    let outcome = match scenario {
        Scenario::PublishConfirm => C::publish_confirm(p, names).await?,
        Scenario::PublishNoconfirm => {
            return Err(format!("{} has no publish_noconfirm", C::NAME).into());
        }
        Scenario::ConsumeAck => C::consume_ack(p, names).await?,
        Scenario::RpcLatency => C::rpc_latency(p, names).await?,
        Scenario::RpcDirect => C::rpc_direct(p, names).await?,
        Scenario::LargeBody => C::large_body(p, names).await?,
        Scenario::ManyChannels => C::many_channels(p, names).await?,
        Scenario::PublishReliable | Scenario::PublishConfirmIds => {
            return Err(format!("{} has no {scenario}", C::NAME).into());
        }
    };
    if outcome.span.is_none() {
        return Err(format!("{} {scenario}: the client measured nothing", C::NAME).into());
    }
    Ok(outcome)
}

/// A reusable message buffer of `size` bytes (at least 16). [`stamp`](Self::stamp) writes an
/// index into its head and tail; the bytes between are a fixed pattern.
#[derive(Debug, Clone)]
pub struct Body {
    buf: Vec<u8>,
}

impl Body {
    /// A buffer of `size` bytes.
    pub fn new(size: usize) -> Body {
        assert!(size >= 16, "bodies carry their index in 16 bytes");
        Body {
            buf: (0..size).map(|i| (i % 251) as u8).collect(),
        }
    }

    /// Writes `index` into the head and tail and returns the bytes.
    pub fn stamp(&mut self, index: u64) -> &[u8] {
        let tail = self.buf.len() - 8;
        self.buf[..8].copy_from_slice(&index.to_le_bytes());
        self.buf[tail..].copy_from_slice(&index.to_le_bytes());
        &self.buf
    }
}

/// Checks `body` is `size` bytes with the same index in head and tail, and returns the index.
pub fn check_body(body: &[u8], size: usize) -> Result<u64> {
    if body.len() != size {
        mismatch!("body of {} bytes, expected {size}", body.len());
    }
    let head = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
    let tail = u64::from_le_bytes(body[size - 8..].try_into().expect("8 bytes"));
    if head != tail {
        mismatch!("body stamped {head} at the head but {tail} at the tail");
    }
    Ok(head)
}

/// Which of `expected` indexes have been seen; a duplicate or out-of-range index fails.
#[derive(Debug)]
pub struct Tally {
    seen: Vec<bool>,
    count: u64,
}

impl Tally {
    /// Expects indexes `0..expected`, each once.
    pub fn new(expected: u64) -> Tally {
        Tally {
            seen: vec![false; usize::try_from(expected).expect("fits in memory")],
            count: 0,
        }
    }

    /// Records one index.
    pub fn record(&mut self, index: u64) -> Result<()> {
        let Some(slot) = usize::try_from(index)
            .ok()
            .and_then(|i| self.seen.get_mut(i))
        else {
            mismatch!("index {index} out of range 0..{}", self.seen.len());
        };
        if std::mem::replace(slot, true) {
            mismatch!("index {index} delivered twice");
        }
        self.count += 1;
        Ok(())
    }

    /// Checks `body` and records its index.
    pub fn record_body(&mut self, body: &[u8], size: usize) -> Result<()> {
        self.record(check_body(body, size)?)
    }

    /// How many were seen so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// True when every expected index was seen.
    pub fn complete(&self) -> bool {
        self.count == self.seen.len() as u64
    }
}

/// Fails unless `got == expected`.
pub fn expect_count(what: &str, expected: u64, got: u64) -> Result<()> {
    if got != expected {
        mismatch!("{what}: expected {expected}, got {got}");
    }
    Ok(())
}

/// Fails unless all `ids` are distinct and there are `expected` of them.
pub fn expect_distinct_ids(mut ids: Vec<u16>, expected: u64) -> Result<()> {
    ids.sort_unstable();
    ids.dedup();
    expect_count("distinct channel ids", expected, ids.len() as u64)
}

/// The correlation id of request `index`.
pub fn correlation_id(index: u64) -> String {
    format!("req-{index}")
}

/// Checks a reply: its correlation id is the request's and its body echoes the request.
pub fn check_reply(index: u64, correlation: Option<&str>, body: &[u8], size: usize) -> Result<()> {
    let expected = correlation_id(index);
    if correlation != Some(expected.as_str()) {
        mismatch!("reply correlation id {correlation:?}, expected {expected:?}");
    }
    check_echo(index, body, size)
}

/// Checks a reply's body echoes request `index` (for a client that matched the reply to its
/// request by correlation id itself).
pub fn check_echo(index: u64, body: &[u8], size: usize) -> Result<()> {
    let echoed = check_body(body, size)?;
    if echoed != index {
        mismatch!("reply to request {index} carries body of request {echoed}");
    }
    Ok(())
}

/// Resident memory gained between two readings, per item.
pub fn per_item(before: u64, after: u64, items: u64) -> f64 {
    (after as f64 - before as f64) / items as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_their_index() {
        let mut body = Body::new(64);
        assert_eq!(check_body(body.stamp(7), 64).unwrap(), 7);
        assert_eq!(check_body(body.stamp(u64::MAX), 64).unwrap(), u64::MAX);
    }

    #[test]
    fn wrong_sizes_and_torn_bodies_fail() {
        let mut body = Body::new(64);
        let stamped = body.stamp(3).to_vec();
        assert!(check_body(&stamped[..63], 64).is_err());
        assert!(check_body(&stamped, 65).is_err());
        let mut torn = stamped.clone();
        torn[63] ^= 1;
        assert!(check_body(&torn, 64).is_err());
    }

    #[test]
    fn tally_refuses_duplicates_and_strays() {
        let mut tally = Tally::new(3);
        tally.record(0).unwrap();
        assert!(tally.record(0).is_err(), "duplicate");
        assert!(tally.record(3).is_err(), "out of range");
        tally.record(2).unwrap();
        assert!(!tally.complete());
        tally.record(1).unwrap();
        assert!(tally.complete());
        assert_eq!(tally.count(), 3);
    }

    #[test]
    fn replies_must_match_their_request() {
        let mut body = Body::new(64);
        let id = correlation_id(5);
        check_reply(5, Some(&id), body.stamp(5), 64).unwrap();
        assert!(check_reply(5, Some("req-4"), body.stamp(5), 64).is_err());
        assert!(check_reply(5, None, body.stamp(5), 64).is_err());
        assert!(check_reply(5, Some(&id), body.stamp(4), 64).is_err());
    }

    #[test]
    fn until_held_waits_for_every_message_and_no_more() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let answers = std::cell::RefCell::new(vec![5, 3, 0]);
        let next = || {
            let n = answers.borrow_mut().pop().expect("asked too often");
            async move { Ok(n) }
        };
        rt.block_on(until_held(next, 5)).unwrap();
        assert!(
            answers.borrow().is_empty(),
            "asked until the count was reached"
        );
        let too_many = rt.block_on(until_held(|| async { Ok(6) }, 5));
        assert!(too_many.is_err());
    }

    #[test]
    fn every_scenario_parses_from_its_name() {
        for scenario in Scenario::ALL {
            assert_eq!(Scenario::parse(scenario.name()), Some(scenario));
        }
    }

    #[test]
    fn counts_and_channel_ids() {
        assert!(expect_count("x", 2, 2).is_ok());
        assert!(expect_count("x", 2, 1).is_err());
        assert!(expect_distinct_ids(vec![1, 2, 3], 3).is_ok());
        assert!(expect_distinct_ids(vec![1, 2, 2], 3).is_err());
    }
}
