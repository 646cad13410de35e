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
    let mine = BasicProperties::default().with_message_id("order-7");
    let super::Enqueued {
        id: a, rx: _wait_a, ..
    } = p.enqueue("", "q", "a".into(), mine, true).await.unwrap();
    let super::Enqueued {
        id: b, rx: _wait_b, ..
    } = p
        .enqueue("", "q", "b".into(), Default::default(), true)
        .await
        .unwrap();
    let super::Enqueued {
        id: c, rx: _wait_c, ..
    } = p
        .enqueue("", "q", "c".into(), Default::default(), true)
        .await
        .unwrap();
    let out = p.shared.outbox();
    let id = |n: u64| {
        out.entries[&n]
            .message
            .properties
            .message_id
            .clone()
            .unwrap()
    };
    assert_eq!(&*id(a), "order-7");
    assert_ne!(id(b), id(c));
    assert!(id(b).starts_with(&p.shared.id_prefix), "{:?}", id(b));
    // Another publisher generates other ids.
    let other = unconnected(ReliablePublisherOptions::default());
    assert_ne!(other.shared.id_prefix, p.shared.id_prefix);
}

#[tokio::test]
async fn closing_fails_what_waits_and_refuses_what_comes() {
    let p = unconnected(ReliablePublisherOptions::default().with_max_messages(1));
    let super::Enqueued { rx: waiting, .. } = p
        .enqueue("", "q", "a".into(), Default::default(), true)
        .await
        .unwrap();
    let blocked = p.publish("", "q", "b", BasicProperties::default());
    tokio::pin!(blocked);
    assert!(
        futures_poll_once(blocked.as_mut()).await.is_none(),
        "full: it waits"
    );
    p.shared.close();
    assert!(matches!(waiting.await, Ok(Err(Error::Closed(_)))));
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
