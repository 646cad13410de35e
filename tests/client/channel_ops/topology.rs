//! Exchanges of every type, bindings (queue and exchange), queues, QoS, recover and flow,
//! with the errors the broker answers them with.

use super::*;

#[tokio::test]
async fn direct_fanout_and_topic_exchanges_route_by_their_rules() {
    with_connection(&config(), async |conn| {
        let ch = conn.channel().await?;
        let q1 = ch
            .queue_declare(&unique_name("route-1"), exclusive())
            .await?
            .queue;
        let q2 = ch
            .queue_declare(&unique_name("route-2"), exclusive())
            .await?
            .queue;

        // Not auto-delete: the unbind below removes its last binding.
        let direct = unique_name("direct");
        ch.exchange_declare(&direct, "direct", ExchangeDeclareOptions::default())
            .await?;
        ch.queue_bind(&q1, &direct, "k1", no_args()).await?;
        publish(&ch, &direct, "k1", b"d1").await?;
        assert_unroutable(publish(&ch, &direct, "k2", b"d2").await);
        assert_eq!(drain(&ch, &q1).await?, ["d1"]);

        let fanout = unique_name("fanout");
        ch.exchange_declare(&fanout, "fanout", transient()).await?;
        ch.queue_bind(&q1, &fanout, "ignored", no_args()).await?;
        ch.queue_bind(&q2, &fanout, "", no_args()).await?;
        publish(&ch, &fanout, "anything", b"f1").await?;
        assert_eq!(drain(&ch, &q1).await?, ["f1"]);
        assert_eq!(drain(&ch, &q2).await?, ["f1"]);

        let topic = unique_name("topic");
        ch.exchange_declare(&topic, "topic", transient()).await?;
        ch.queue_bind(&q1, &topic, "a.*.c", no_args()).await?;
        ch.queue_bind(&q2, &topic, "a.#", no_args()).await?;
        publish(&ch, &topic, "a.b.c", b"t1").await?;
        publish(&ch, &topic, "a.x", b"t2").await?;
        assert_unroutable(publish(&ch, &topic, "b.c", b"t3").await);
        assert_eq!(drain(&ch, &q1).await?, ["t1"]);
        assert_eq!(drain(&ch, &q2).await?, ["t1", "t2"]);

        // Unbinding stops the routing.
        ch.queue_unbind(&q1, &direct, "k1", no_args()).await?;
        assert_unroutable(publish(&ch, &direct, "k1", b"d3").await);

        for x in [&direct, &fanout, &topic] {
            ch.exchange_delete(x, false).await?;
        }
        ch.close().await
    })
    .await;
}

#[tokio::test]
async fn headers_exchange_matches_all_or_any_and_unbinds_with_the_same_arguments() {
    with_connection(&config(), async |conn| {
        let ch = conn.channel().await?;
        let all = ch
            .queue_declare(&unique_name("hx-all"), exclusive())
            .await?
            .queue;
        let any = ch
            .queue_declare(&unique_name("hx-any"), exclusive())
            .await?
            .queue;
        let x = unique_name("headers");
        ch.exchange_declare(&x, "headers", transient()).await?;
        let all_args = FieldTable::new()
            .with("x-match", "all")
            .with("a", 1i32)
            .with("b", "x");
        let any_args = FieldTable::new()
            .with("x-match", "any")
            .with("a", 1i32)
            .with("c", 2i32);
        ch.queue_bind(&all, &x, "", all_args.clone()).await?;
        ch.queue_bind(&any, &x, "", any_args.clone()).await?;

        let h = |pairs: &[(&str, FieldValue)]| pairs.iter().cloned().collect::<FieldTable>();
        publish_headers(&ch, &x, h(&[("a", 1i32.into()), ("b", "x".into())])).await?;
        publish_headers(&ch, &x, h(&[("c", 2i32.into())])).await?;
        assert_unroutable(publish_headers(&ch, &x, h(&[("b", "x".into())])).await);
        assert_unroutable(publish_headers(&ch, &x, h(&[("a", 2i32.into())])).await);
        assert_eq!(drain(&ch, &all).await?.len(), 1);
        assert_eq!(drain(&ch, &any).await?.len(), 2);

        ch.queue_unbind(&any, &x, "", any_args).await?;
        assert_unroutable(publish_headers(&ch, &x, h(&[("c", 2i32.into())])).await);
        publish_headers(&ch, &x, h(&[("a", 1i32.into()), ("b", "x".into())])).await?;
        assert_eq!(drain(&ch, &all).await?.len(), 1);
        assert_eq!(drain(&ch, &any).await?.len(), 0);

        ch.queue_unbind(&all, &x, "", all_args).await?;
        ch.exchange_delete(&x, false).await?;
        ch.close().await
    })
    .await;
}

#[tokio::test]
async fn auto_delete_exchange_is_redeclarable_and_goes_with_its_last_binding() {
    let x = unique_name("auto-delete");
    with_connection(&config(), async |conn| {
        let ch = conn.channel().await?;
        let q = ch.queue_declare("", exclusive()).await?.queue;
        ch.exchange_declare(&x, "direct", transient()).await?;
        // Same declaration again, and a passive one: both fine.
        ch.exchange_declare(&x, "direct", transient()).await?;
        let check = ExchangeDeclareOptions::default().with_passive(true);
        ch.exchange_declare(&x, "direct", check.clone()).await?;
        ch.queue_bind(&q, &x, "k", no_args()).await?;
        ch.queue_unbind(&q, &x, "k", no_args()).await?;

        let err = ch
            .exchange_declare(&x, "direct", check)
            .await
            .expect_err("the exchange went with its last binding");
        let close = assert_closed(&err, CloseScope::Channel(ch.id()), 404, (40, 10));
        assert!(close.reply_text.contains(&x), "{}", close.reply_text);
        assert!(!ch.is_open());
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn exchange_to_exchange_binding_routes_through_an_internal_exchange() {
    with_connection(&config(), async |conn| {
        let ch = conn.channel().await?;
        let q = ch
            .queue_declare(&unique_name("e2e"), exclusive())
            .await?
            .queue;
        let source = unique_name("e2e-source");
        let inner = unique_name("e2e-internal");
        // Not auto-delete: the exchange unbind below removes its last binding.
        ch.exchange_declare(&source, "direct", ExchangeDeclareOptions::default())
            .await?;
        let internal = transient().with_internal(true);
        ch.exchange_declare(&inner, "fanout", internal).await?;
        ch.queue_bind(&q, &inner, "", no_args()).await?;
        ch.exchange_bind(&inner, &source, "rk", no_args()).await?;

        publish(&ch, &source, "rk", b"via").await?;
        assert_unroutable(publish(&ch, &source, "other", b"nope").await);
        let m = ch.basic_get(&q, true).await?.expect("routed through both");
        assert_eq!(&m.body[..], b"via");
        assert_eq!(
            (m.exchange.as_str(), m.routing_key.as_str()),
            (source.as_str(), "rk")
        );
        assert!(ch.basic_get(&q, true).await?.is_none());

        ch.exchange_unbind(&inner, &source, "rk", no_args()).await?;
        assert_unroutable(publish(&ch, &source, "rk", b"unbound").await);

        // Nobody may publish to an internal exchange directly.
        let direct = conn.channel().await?;
        let err = publish(&direct, &inner, "", b"direct")
            .await
            .expect_err("internal exchanges refuse publishes");
        assert_closed(&err, CloseScope::Channel(direct.id()), 403, (60, 40));

        ch.exchange_delete(&source, false).await?;
        ch.exchange_delete(&inner, false).await?;
        ch.close().await
    })
    .await;
}

#[tokio::test]
async fn alternate_exchange_takes_what_the_exchange_cannot_route() {
    with_connection(&config(), async |conn| {
        let ch = conn.channel().await?;
        let main_q = ch
            .queue_declare(&unique_name("ae-main"), exclusive())
            .await?
            .queue;
        let spill = ch
            .queue_declare(&unique_name("ae-spill"), exclusive())
            .await?
            .queue;
        let ae = unique_name("ae");
        let x = unique_name("with-ae");
        ch.exchange_declare(&ae, "fanout", transient()).await?;
        ch.queue_bind(&spill, &ae, "", no_args()).await?;
        let with_ae =
            transient().with_arguments(FieldTable::new().with("alternate-exchange", ae.as_str()));
        ch.exchange_declare(&x, "direct", with_ae).await?;
        ch.queue_bind(&main_q, &x, "known", no_args()).await?;

        publish(&ch, &x, "known", b"routed").await?;
        // Mandatory, yet not returned: the alternate exchange routed it.
        publish(&ch, &x, "unknown", b"spilled").await?;
        assert_eq!(drain(&ch, &main_q).await?, ["routed"]);
        assert_eq!(drain(&ch, &spill).await?, ["spilled"]);

        ch.exchange_delete(&x, false).await?;
        ch.exchange_delete(&ae, false).await?;
        ch.close().await
    })
    .await;
}

#[tokio::test]
async fn exchange_delete_if_unused_refuses_a_bound_exchange_with_406() {
    let bound = unique_name("in-use");
    let lonely = unique_name("unused");
    with_connection(&config(), async |conn| {
        let ch = conn.channel().await?;
        let q = ch.queue_declare("", exclusive()).await?.queue;
        let plain = ExchangeDeclareOptions::default();
        ch.exchange_declare(&bound, "direct", plain.clone()).await?;
        ch.exchange_declare(&lonely, "direct", plain).await?;
        ch.queue_bind(&q, &bound, "k", no_args()).await?;

        let err = ch
            .exchange_delete(&bound, true)
            .await
            .expect_err("the exchange has a binding");
        assert_closed(&err, CloseScope::Channel(ch.id()), 406, (40, 20));

        let ch = conn.channel().await?;
        ch.exchange_delete(&lonely, true).await?;
        ch.exchange_delete(&bound, false).await?;
        publish(&ch, "", &q, b"the connection is fine").await?;
        ch.close().await
    })
    .await;
}

#[tokio::test]
async fn queue_purge_and_delete_report_counts_and_refuse_with_406() {
    let q = unique_name("purge");
    with_connection(&config(), async |conn| {
        let ch = conn.channel().await?;
        ch.queue_declare(&q, exclusive()).await?;
        for i in 0..5u8 {
            publish(&ch, "", &q, &[i]).await?;
        }
        assert_eq!(ch.queue_purge(&q).await?, 5);
        assert_eq!(ready(&ch, &q).await?, 0);
        assert_eq!(ch.queue_purge(&q).await?, 0);

        // if_unused with a consumer on the queue.
        let consuming = conn.channel().await?;
        let consumer = consuming
            .basic_consume(&q, ConsumeOptions::default())
            .await?;
        let err = ch
            .queue_delete(&q, true, false)
            .await
            .expect_err("the queue has a consumer");
        assert_closed(&err, CloseScope::Channel(ch.id()), 406, (50, 40));
        drop(consumer);
        consuming.close().await?;

        // if_empty with messages in it.
        let ch = conn.channel().await?;
        for i in 0..3u8 {
            publish(&ch, "", &q, &[i]).await?;
        }
        let err = ch
            .queue_delete(&q, false, true)
            .await
            .expect_err("the queue has messages");
        assert_closed(&err, CloseScope::Channel(ch.id()), 406, (50, 40));

        let ch = conn.channel().await?;
        assert_eq!(ch.queue_delete(&q, true, false).await?, 3);
        let gone = ch.queue_declare(&q, passive()).await.expect_err("deleted");
        assert_closed(&gone, CloseScope::Channel(ch.id()), 404, (50, 10));
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn server_named_queue() {
    with_connection(&config(), async |conn| {
        let ch = conn.channel().await?;
        let ok = ch.queue_declare("", exclusive()).await?;
        assert!(ok.queue.starts_with("amq.gen-"), "{}", ok.queue);
        assert_eq!((ok.message_count, ok.consumer_count), (0, 0));
        publish(&ch, "", &ok.queue, b"to a generated name").await?;
        let again = ch.queue_declare(&ok.queue, passive()).await?;
        assert_eq!(
            (again.queue.as_str(), again.message_count),
            (ok.queue.as_str(), 1)
        );
        assert_eq!(ch.queue_delete(&ok.queue, false, false).await?, 1);
        ch.close().await
    })
    .await;
}

#[tokio::test]
async fn basic_qos_limits_a_new_consumer_to_its_prefetch() {
    with_connection(&config(), async |conn| {
        let ch = conn.channel().await?;
        let q = ch.queue_declare("", exclusive()).await?.queue;
        for body in [b"1", b"2", b"3"] {
            publish(&ch, "", &q, body).await?;
        }
        ch.basic_qos(1, false).await?;
        let mut consumer = ch.basic_consume(&q, ConsumeOptions::default()).await?;
        let first = next_delivery(&mut consumer).await;
        assert_eq!(&first.body[..], b"1");
        assert_quiet(&mut consumer, Duration::from_millis(300)).await;
        first.ack()?;
        let second = next_delivery(&mut consumer).await;
        assert_eq!(&second.body[..], b"2");
        second.ack()?;
        let third = next_delivery(&mut consumer).await;
        third.ack()?;
        // Channel-wide (global) prefetch is accepted too.
        ch.basic_qos(10, true).await?;
        drop(consumer);
        ch.close().await
    })
    .await;
}

#[tokio::test]
async fn basic_recover_requeues_unacknowledged_messages() {
    with_connection(&config(), async |conn| {
        let ch = conn.channel().await?;
        let q = ch.queue_declare("", exclusive()).await?.queue;
        publish(&ch, "", &q, b"again").await?;
        let first = ch.basic_get(&q, false).await?.expect("a message");
        assert!(!first.redelivered);
        assert!(ch.basic_get(&q, false).await?.is_none());

        ch.basic_recover(true).await?;
        let second = ch.basic_get(&q, false).await?.expect("requeued");
        assert_eq!(&second.body[..], b"again");
        assert!(second.redelivered);
        second.ack()?;
        ch.close().await
    })
    .await;
}

#[tokio::test]
async fn basic_recover_without_requeue_closes_the_connection_with_540() {
    let err = within(
        TEST_LIMIT,
        "connection scope",
        open_connection(&config(), async |conn| {
            let ch = conn.channel().await?;
            ch.basic_recover(false).await
        }),
    )
    .await
    .expect_err("RabbitMQ does not implement recover without requeue");
    let close = assert_closed(&err, CloseScope::Connection, 540, (60, 110));
    assert_eq!(close.reply_text, "NOT_IMPLEMENTED - requeue=false");
}

#[tokio::test]
async fn channel_flow_true_is_answered_and_false_closes_the_connection_with_540() {
    let err = within(
        TEST_LIMIT,
        "connection scope",
        open_connection(&config(), async |conn| {
            let ch = conn.channel().await?;
            assert!(ch.channel_flow(true).await?);
            ch.channel_flow(false).await
        }),
    )
    .await
    .expect_err("RabbitMQ does not implement flow(false) from a client");
    let close = assert_closed(&err, CloseScope::Connection, 540, (20, 20));
    assert_eq!(close.reply_text, "NOT_IMPLEMENTED - active=false");
}
