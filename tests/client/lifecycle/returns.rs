//! A `basic.return` fails the publish it belongs to. Two mandatory publishes to the same
//! exchange with the same routing key can differ in whether they route (headers exchange: by
//! their headers; direct exchange: by a `CC` header), so the route alone does not say which of
//! the pipelined publishes came back: the returned body must be the failed publish's own.

use serena::proto::{BasicProperties, FieldTable, FieldValue};
use serena::{Channel, Error, ExchangeDeclareOptions, PublishOptions, Result};
use serena_tests::unique_name;

use super::{STEP, counts, exclusive, scope, within};

/// Pipelined pairs per phase of a test (two phases).
const PAIRS: usize = 200;
/// The routing key every publish of a test uses.
const KEY: &str = "same-key";

/// One publish of a pair and what it should come to.
struct Publish {
    body: String,
    properties: BasicProperties,
    routable: bool,
}

/// Which publish of a pair goes out first.
#[derive(Clone, Copy, Debug)]
enum Order {
    RoutableFirst,
    UnroutableFirst,
    Alternating,
}

impl Order {
    fn routable_first(self, pair: usize) -> bool {
        match self {
            Order::RoutableFirst => true,
            Order::UnroutableFirst => false,
            Order::Alternating => pair.is_multiple_of(2),
        }
    }
}

/// The wrong outcome of `publish`, if it got one.
fn misjudged(publish: &Publish, outcome: &Result<()>) -> Option<String> {
    let body = &publish.body;
    match (publish.routable, outcome) {
        (true, Ok(())) => None,
        (false, Err(Error::Returned(r))) if r.body == body.as_bytes() => None,
        (false, Err(Error::Returned(r))) => Some(format!(
            "{body}: returned, but with the body {:?}",
            String::from_utf8_lossy(&r.body)
        )),
        (true, Err(e)) => Some(format!("{body} (routable): failed with {e}")),
        (false, Ok(())) => Some(format!("{body} (unroutable): confirmed, not returned")),
        (false, Err(e)) => Some(format!("{body} (unroutable): failed with {e}")),
    }
}

/// Publishes pairs made by `pair` (routable, unroutable) to `exchange` under [`KEY`], in
/// `order`, and checks each publish got its own outcome: first [`PAIRS`] pairs one at a time,
/// both publishes of a pair sent before either confirmation is awaited; then [`PAIRS`] more
/// all in flight at once. Fails the test listing the publishes that got the other one's
/// outcome; returns how many routable ones were confirmed.
async fn pipelined_pairs(
    ch: &Channel,
    exchange: &str,
    order: Order,
    pair: impl Fn(usize) -> (Publish, Publish),
) -> Result<usize> {
    let mut wrong = Vec::new();
    let mut routed = 0;
    for (phase, in_flight) in [("pair by pair", 2), ("all at once", 4 * PAIRS)] {
        let mut sent = Vec::with_capacity(in_flight);
        for i in 0..PAIRS {
            let (routable, unroutable) = pair(i);
            let (first, second) = if order.routable_first(i) {
                (routable, unroutable)
            } else {
                (unroutable, routable)
            };
            for p in [first, second] {
                let c = ch
                    .basic_publish_with(
                        exchange,
                        KEY,
                        &p.body,
                        p.properties.clone(),
                        PublishOptions::default(),
                    )
                    .await?;
                sent.push((p, c));
            }
            if sent.len() >= in_flight || i + 1 == PAIRS {
                for (p, c) in sent.drain(..) {
                    let outcome = within(STEP, "a confirmation", c).await;
                    routed += usize::from(p.routable && outcome.is_ok());
                    wrong.extend(misjudged(&p, &outcome).map(|w| format!("{phase}: {w}")));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{order:?}: {} of {} publishes got the other publish's outcome, first ones: {:#?}",
        wrong.len(),
        4 * PAIRS,
        &wrong[..wrong.len().min(5)]
    );
    Ok(routed)
}

fn with_headers(headers: FieldTable) -> BasicProperties {
    BasicProperties::default().with_headers(headers)
}

fn auto_delete() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions::default().with_auto_delete(true)
}

/// A headers exchange with one queue bound on `x-match = all, k = v`: a pair is one publish
/// with `k = v` (routed) and one with `k = other` (returned), same routing key.
async fn headers_pairs(order: Order) {
    scope("returns-headers", async |conn| {
        let ch = conn.channel().await?;
        let ex = unique_name("headers");
        ch.exchange_declare(&ex, "headers", auto_delete()).await?;
        let q = ch.queue_declare("", exclusive()).await?.queue;
        let binding = FieldTable::new().with("x-match", "all").with("k", "v");
        ch.queue_bind(&q, &ex, "", binding).await?;
        let routed = pipelined_pairs(&ch, &ex, order, |i| {
            (
                Publish {
                    body: format!("routable-{i}"),
                    properties: with_headers(FieldTable::new().with("k", "v")),
                    routable: true,
                },
                Publish {
                    body: format!("unroutable-{i}"),
                    properties: with_headers(FieldTable::new().with("k", "other")),
                    routable: false,
                },
            )
        })
        .await?;
        assert_eq!(routed, 2 * PAIRS);
        assert_eq!(counts(&ch, &q).await?, (2 * PAIRS as u32, 0));
        ch.queue_delete(&q, false, false).await?;
        ch.exchange_delete(&ex, false).await?;
        ch.close().await
    })
    .await;
}

#[tokio::test]
async fn returns_fail_the_unroutable_publish_of_a_pair_on_a_headers_exchange_routable_first() {
    headers_pairs(Order::RoutableFirst).await;
}

#[tokio::test]
async fn returns_fail_the_unroutable_publish_of_a_pair_on_a_headers_exchange_unroutable_first() {
    headers_pairs(Order::UnroutableFirst).await;
}

/// A direct exchange with one queue bound under another key: a pair is one publish with a
/// `CC` header naming the bound key (routed) and one without (returned), same routing key.
#[tokio::test]
async fn returns_fail_the_unroutable_publish_of_a_pair_routed_by_cc() {
    scope("returns-cc", async |conn| {
        let ch = conn.channel().await?;
        let ex = unique_name("direct");
        ch.exchange_declare(&ex, "direct", auto_delete()).await?;
        let q = ch.queue_declare("", exclusive()).await?.queue;
        ch.queue_bind(&q, &ex, "bound", FieldTable::new()).await?;
        let cc = FieldTable::new().with("CC", vec![FieldValue::from("bound")]);
        let routed = pipelined_pairs(&ch, &ex, Order::Alternating, |i| {
            (
                Publish {
                    body: format!("cc-{i}"),
                    properties: with_headers(cc.clone()),
                    routable: true,
                },
                Publish {
                    body: format!("plain-{i}"),
                    properties: BasicProperties::default(),
                    routable: false,
                },
            )
        })
        .await?;
        assert_eq!(routed, 2 * PAIRS);
        assert_eq!(counts(&ch, &q).await?, (2 * PAIRS as u32, 0));
        ch.queue_delete(&q, false, false).await?;
        ch.exchange_delete(&ex, false).await?;
        ch.close().await
    })
    .await;
}
