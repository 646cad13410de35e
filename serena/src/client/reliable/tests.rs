//! Unit tests of the outbox, without a broker: a publisher whose driver never runs is one no
//! broker answers.

use super::*;
use std::time::Duration;

/// A publisher with no driver: nothing is ever sent, as while no broker answers.
fn unconnected(options: ReliablePublisherOptions) -> ReliablePublisher {
    ReliablePublisher::new(ConnectionConfig::default(), options)
}

#[tokio::test]
async fn timed_out_publishes_leave_the_send_queue_bounded() {
    let p = unconnected(
        ReliablePublisherOptions::default()
            .with_max_messages(4)
            .with_publish_timeout(Some(Duration::from_millis(1))),
    );
    for n in 0..200u32 {
        let r = p
            .publish("", "q", n.to_string(), BasicProperties::default())
            .await;
        assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    }
    let out = p.shared.outbox();
    assert!(out.entries.is_empty());
    assert!(out.queue.len() <= 8, "{} ids queued", out.queue.len());
    assert_eq!(out.bytes, 0);
    drop(out);
    assert_eq!(p.stats().failed, 200);
}

#[tokio::test]
async fn a_message_keeps_the_callers_message_id_or_gets_a_unique_one() {
    let p = unconnected(ReliablePublisherOptions::default());
    let mut mine = BasicProperties::default().with_message_id("order-7");
    let (a, _wait_a) = p
        .enqueue("", "q", "a".into(), &mut mine, true)
        .await
        .unwrap();
    let (b, _wait_b) = p
        .enqueue("", "q", "b".into(), &mut Default::default(), true)
        .await
        .unwrap();
    let (c, _wait_c) = p
        .enqueue("", "q", "c".into(), &mut Default::default(), true)
        .await
        .unwrap();
    let mut out = p.shared.outbox();
    let mut id = |n: u64| {
        out.entries
            .get_mut(n)
            .unwrap()
            .message
            .properties
            .decode()
            .unwrap()
            .message_id
            .clone()
            .unwrap()
    };
    assert_eq!(&*id(a), "order-7");
    assert_ne!(id(b), id(c));
    let prefix = std::str::from_utf8(&p.shared.id_prefix).unwrap();
    assert!(id(b).starts_with(prefix), "{:?}", id(b));
    assert_eq!(
        &id(c)[prefix.len()..],
        c.to_string(),
        "the id follows the prefix"
    );
    // Another publisher generates other ids.
    let other = unconnected(ReliablePublisherOptions::default());
    assert_ne!(other.shared.id_prefix, p.shared.id_prefix);
}

#[tokio::test]
async fn closing_fails_what_waits_and_refuses_what_comes() {
    let p = unconnected(ReliablePublisherOptions::default().with_max_messages(1));
    let (_, waiting) = p
        .enqueue("", "q", "a".into(), &mut Default::default(), true)
        .await
        .unwrap();
    let blocked = p.publish("", "q", "b", BasicProperties::default());
    tokio::pin!(blocked);
    assert!(
        futures_poll_once(blocked.as_mut()).await.is_none(),
        "full: it waits"
    );
    p.shared.close();
    assert!(matches!(waiting.await, Err(Error::Closed(_))));
    assert!(matches!(blocked.await, Err(Error::Closed(_))));
    assert!(matches!(p.state(), PublisherState::Closed));
}

/// Polls `f` once; its output if it finished.
async fn futures_poll_once<F: std::future::Future + Unpin>(mut f: F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut f).poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

#[test]
fn generated_ids_are_the_prefix_and_the_number_across_batches() {
    let prefix = *b"0123456789abcdef-";
    let mut batch = IdBatch::empty();
    let ids = (0..200).chain(9_990..10_010).chain([63, 64, 1_000, 999]);
    for id in ids.chain([u64::MAX - 100, u64::MAX - 1, u64::MAX]) {
        let text = batch.message_id(&prefix, id);
        assert_eq!(&*text, format!("0123456789abcdef-{id}"), "id {id}");
    }
}
