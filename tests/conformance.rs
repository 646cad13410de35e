//! The conformance suite: each case runs once against RabbitMQ on 127.0.0.1:5672 and once
//! against `serena_testing::MemoryBroker`, and the two outcomes (what each queue ends up
//! holding, in order, with the dead-letter headers; every settlement, confirm, return and close
//! code and text) must be identical. A case writes its outcome as lines; names are written with
//! the case's prefix replaced by `P`, so the unique names RabbitMQ needs do not differ.
//!
//! Cases: the default, direct, fanout, topic (`*`, `#`, overlapping patterns) and headers
//! (`all`, `any`) exchanges, exchange-to-exchange bindings, alternate exchanges, unbinding;
//! mandatory returns, unroutable publishes, confirms; ack, nack and reject with and without
//! requeue (the redelivered flag, the order after requeue), `multiple`; prefetch; basic.get
//! counts, purge and delete counts; the server's cancel when a consumed queue goes;
//! dead-lettering on reject, on `drop-head` and `reject-publish-dlx` overflow, through a
//! dead-letter routing key, twice through the same queue, past a quorum delivery limit;
//! `reject-publish` nacks; priorities; passive declares (404), redeclares (406), publishing to
//! a missing exchange (404), `amq.` names (403), exclusive queues of another connection (405);
//! `multiple` nacks, `basic.recover`, a settlement twice, conditional deletes, auto-delete
//! queues, internal exchanges, durable redeclares, exclusive consumers, `x-expires`.

use std::time::Duration;

use serena::proto::{BasicProperties, FieldTable, FieldValue};
use serena::{
    Channel, CloseScope, Connection, ConnectionConfig, ConsumeOptions, Error,
    ExchangeDeclareOptions, PublishOptions, QueueDeclareOptions, Result, open_connection,
};
use serena_testing::MemoryBroker;
use serena_tests::{config, unique_name, within};

const LIMIT: Duration = Duration::from_secs(20);

/// Runs `case` on both brokers and requires the same outcome.
async fn conform<F>(case: F)
where
    F: AsyncFn(&ConnectionConfig, &str) -> Vec<String>,
{
    let memory = MemoryBroker::new();
    let on_memory = within(
        LIMIT,
        "the in-memory broker",
        case(&memory.config(), "mem-case"),
    )
    .await;
    let prefix = unique_name("conf");
    let on_rabbit = within(LIMIT, "RabbitMQ", case(&config(&prefix), &prefix)).await;
    let normalize = |lines: Vec<String>, p: &str| -> Vec<String> {
        lines.into_iter().map(|l| l.replace(p, "P")).collect()
    };
    let on_memory = normalize(on_memory, "mem-case");
    let on_rabbit = normalize(on_rabbit, &prefix);
    assert!(!on_rabbit.is_empty(), "a case must observe something");
    assert_eq!(
        on_memory, on_rabbit,
        "in-memory (left) and RabbitMQ (right) differ"
    );
}

/// Runs `body` in a connection scope; a failed scope is one outcome line.
async fn session(
    cfg: &ConnectionConfig,
    body: impl AsyncFnOnce(&Connection, &mut Vec<String>) -> Result<()>,
) -> Vec<String> {
    let mut out = Vec::new();
    let result = open_connection(cfg, async |conn| body(conn, &mut out).await).await;
    if let Err(e) = result {
        out.push(format!("scope ended: {}", describe(&e)));
    }
    out
}

/// An error as an outcome line: close codes and texts, nacks, returns.
fn describe(e: &Error) -> String {
    match e {
        Error::UnexpectedClose(c) => {
            let scope = match c.scope {
                CloseScope::Channel(_) => "channel",
                CloseScope::Connection => "connection",
            };
            format!(
                "{scope} closed {} '{}' by {}.{}",
                c.reply_code, c.reply_text, c.class_id, c.method_id
            )
        }
        Error::Nacked => "nacked".to_owned(),
        Error::Returned(r) => format!(
            "returned {} {} body={}",
            r.reply_code,
            r.reply_text,
            String::from_utf8_lossy(&r.body)
        ),
        other => format!("error: {other}"),
    }
}

fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions::default().with_exclusive(true)
}

fn exclusive_with(arguments: FieldTable) -> QueueDeclareOptions {
    QueueDeclareOptions::default()
        .with_exclusive(true)
        .with_arguments(arguments)
}

fn auto_delete() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions::default().with_auto_delete(true)
}

async fn publish(ch: &Channel, exchange: &str, key: &str, body: &str) -> Result<()> {
    ch.basic_publish(exchange, key, body.to_owned(), BasicProperties::default())
        .await
}

/// Publishes and writes how the publish ended.
async fn publish_outcome(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &str,
    properties: BasicProperties,
    mandatory: bool,
    out: &mut Vec<String>,
) -> Result<()> {
    let options = PublishOptions::default().with_mandatory(mandatory);
    let confirmation = ch
        .basic_publish_with(exchange, key, body.to_owned(), properties, options)
        .await?;
    match confirmation.await {
        Ok(()) => out.push(format!("publish {body}: acked")),
        Err(e @ (Error::Nacked | Error::Returned(_))) => {
            out.push(format!("publish {body}: {}", describe(&e)));
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// The dead-letter headers as lines: each `x-death` entry (count, reason, queue, exchange,
/// routing-keys, whether it has a time) and the `x-first-death-*` values.
fn death_lines(headers: Option<&FieldTable>) -> Vec<String> {
    let Some(headers) = headers else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    if let Some(FieldValue::Array(deaths)) = headers.get("x-death") {
        for d in deaths {
            let Some(t) = d.as_table() else { continue };
            let s = |k: &str| {
                t.get(k)
                    .and_then(FieldValue::as_str)
                    .unwrap_or("-")
                    .to_owned()
            };
            let keys = match t.get("routing-keys") {
                Some(FieldValue::Array(a)) => a
                    .iter()
                    .filter_map(FieldValue::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
                _ => "-".to_owned(),
            };
            lines.push(format!(
                "  x-death count={:?} reason={} queue={} exchange={} routing-keys={keys} time={} original-expiration={}",
                t.get("count").and_then(FieldValue::as_i64),
                s("reason"),
                s("queue"),
                s("exchange"),
                matches!(t.get("time"), Some(FieldValue::Timestamp(_))),
                s("original-expiration"),
            ));
        }
    }
    for k in [
        "x-first-death-reason",
        "x-first-death-queue",
        "x-first-death-exchange",
    ] {
        if let Some(v) = headers.get(k).and_then(FieldValue::as_str) {
            lines.push(format!("  {k}={v}"));
        }
    }
    if let Some(n) = headers.get("x-delivery-count").and_then(FieldValue::as_i64) {
        lines.push(format!("  x-delivery-count={n}"));
    }
    lines
}

/// Takes everything `queue` holds with `basic.get` and writes it as lines, in order.
async fn drain(ch: &Channel, queue: &str, out: &mut Vec<String>) -> Result<()> {
    let mut n = 0;
    while let Some(got) = ch.basic_get(queue, true).await? {
        let d = &got.delivery;
        out.push(format!(
            "{queue}: {} rk={} x={} redelivered={} left={} expiration={:?}",
            String::from_utf8_lossy(&d.body),
            d.routing_key.as_str(),
            d.exchange.as_str(),
            d.redelivered,
            got.message_count,
            d.properties
                .expiration
                .as_ref()
                .map(|e| e.as_str().to_owned()),
        ));
        out.extend(death_lines(d.properties.headers.as_ref()));
        n += 1;
    }
    out.push(format!("{queue}: {n} in all"));
    Ok(())
}

/// Waits (up to a second) until `queue` holds `n` messages: RabbitMQ dead-letters after the
/// settlement is answered, so a `basic.get` right after could come too early.
async fn await_count(ch: &Channel, queue: &str, n: u32) -> Result<()> {
    for _ in 0..50 {
        if ch.queue_declare(queue, exclusive()).await?.message_count >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn queues(ch: &Channel, p: &str, names: &[&str]) -> Result<Vec<String>> {
    let mut declared = Vec::new();
    for n in names {
        let q = format!("{p}.{n}");
        ch.queue_declare(&q, exclusive()).await?;
        declared.push(q);
    }
    Ok(declared)
}

async fn case_default_exchange(cfg: &ConnectionConfig, p: &str) -> Vec<String> {
    session(cfg, async |conn, out| {
        let ch = conn.channel().await?;
        let q = queues(&ch, p, &["a"]).await?;
        publish(&ch, "", &q[0], "to-a").await?;
        publish(&ch, "", &format!("{p}.nowhere"), "dropped").await?;
        drain(&ch, &q[0], out).await
    })
    .await
}

async fn exchange_case(
    cfg: &ConnectionConfig,
    p: &str,
    kind: &str,
    bindings: &[(&str, &str, FieldTable)],
    publishes: &[(&str, &str, Option<FieldTable>)],
) -> Vec<String> {
    session(cfg, async |conn, out| {
        let ch = conn.channel().await?;
        let x = format!("{p}.x");
        ch.exchange_declare(&x, kind, auto_delete()).await?;
        let mut names: Vec<&str> = bindings.iter().map(|b| b.0).collect();
        names.dedup();
        let qs = queues(&ch, p, &names).await?;
        for (q, key, args) in bindings {
            ch.queue_bind(&format!("{p}.{q}"), &x, key, args.clone())
                .await?;
        }
        for (key, body, headers) in publishes {
            let props = BasicProperties {
                headers: headers.clone(),
                ..BasicProperties::default()
            };
            publish_outcome(&ch, &x, key, body, props, true, out).await?;
        }
        for q in &qs {
            drain(&ch, q, out).await?;
        }
        ch.exchange_delete(&x, false).await
    })
    .await
}

#[tokio::test]
async fn default_exchange_routes_by_queue_name() {
    conform(case_default_exchange).await;
}

#[tokio::test]
async fn direct_exchange() {
    conform(async |cfg: &ConnectionConfig, p: &str| {
        let none = FieldTable::new;
        exchange_case(
            cfg,
            p,
            "direct",
            &[
                ("a", "k1", none()),
                ("b", "k1", none()),
                ("b", "k2", none()),
            ],
            &[
                ("k1", "one", None),
                ("k2", "two", None),
                ("k3", "three", None),
            ],
        )
        .await
    })
    .await;
}

#[tokio::test]
async fn fanout_exchange() {
    conform(async |cfg: &ConnectionConfig, p: &str| {
        let none = FieldTable::new;
        exchange_case(
            cfg,
            p,
            "fanout",
            &[("a", "", none()), ("b", "ignored", none())],
            &[("any", "one", None), ("", "two", None)],
        )
        .await
    })
    .await;
}

#[tokio::test]
async fn topic_exchange() {
    conform(async |cfg: &ConnectionConfig, p: &str| {
        let none = FieldTable::new;
        exchange_case(
            cfg,
            p,
            "topic",
            &[
                ("a", "order.*", none()),
                ("b", "order.#", none()),
                ("b", "#.eu", none()),
                ("c", "*.*.eu", none()),
                ("d", "#", none()),
            ],
            &[
                ("order", "m1", None),
                ("order.created", "m2", None),
                ("order.created.eu", "m3", None),
                ("invoice.paid.eu", "m4", None),
                ("", "m5", None),
                ("order..eu", "m6", None),
            ],
        )
        .await
    })
    .await;
}

#[tokio::test]
async fn headers_exchange_all_and_any() {
    conform(async |cfg: &ConnectionConfig, p: &str| {
        let all = FieldTable::new()
            .with("x-match", "all")
            .with("kind", "order")
            .with("region", "eu");
        let any = FieldTable::new()
            .with("x-match", "any")
            .with("kind", "order")
            .with("region", "eu");
        let h = |kind: &str, region: &str| {
            Some(FieldTable::new().with("kind", kind).with("region", region))
        };
        exchange_case(
            cfg,
            p,
            "headers",
            &[("all", "", all), ("any", "", any)],
            &[
                ("", "both", h("order", "eu")),
                ("", "kind-only", h("order", "us")),
                ("", "neither", h("invoice", "us")),
                ("", "no-headers", None),
            ],
        )
        .await
    })
    .await;
}

#[tokio::test]
async fn exchange_to_exchange_and_alternate_exchange() {
    conform(async |cfg: &ConnectionConfig, p: &str| {
        session(cfg, async |conn, out| {
            let ch = conn.channel().await?;
            let (front, inner, ae) = (
                format!("{p}.front"),
                format!("{p}.inner"),
                format!("{p}.ae"),
            );
            ch.exchange_declare(&ae, "fanout", auto_delete()).await?;
            let front_options = auto_delete()
                .with_arguments(FieldTable::new().with("alternate-exchange", ae.as_str()));
            ch.exchange_declare(&front, "direct", front_options).await?;
            ch.exchange_declare(&inner, "topic", auto_delete()).await?;
            ch.exchange_bind(&inner, &front, "orders", FieldTable::new())
                .await?;
            let qs = queues(&ch, p, &["eu", "unrouted"]).await?;
            ch.queue_bind(&qs[0], &inner, "#", FieldTable::new())
                .await?;
            ch.queue_bind(&qs[1], &ae, "", FieldTable::new()).await?;
            let props = BasicProperties::default;
            publish_outcome(&ch, &front, "orders", "via-inner", props(), true, out).await?;
            publish_outcome(&ch, &front, "other", "via-ae", props(), true, out).await?;
            ch.exchange_unbind(&inner, &front, "orders", FieldTable::new())
                .await?;
            publish_outcome(&ch, &front, "orders", "after-unbind", props(), true, out).await?;
            drain(&ch, &qs[0], out).await?;
            drain(&ch, &qs[1], out).await?;
            for x in [&front, &inner, &ae] {
                ch.exchange_delete(x, false).await?;
            }
            Ok(())
        })
        .await
    })
    .await;
}

#[tokio::test]
async fn mandatory_unroutable_is_returned_before_the_confirm() {
    conform(async |cfg: &ConnectionConfig, p: &str| {
        session(cfg, async |conn, out| {
            let ch = conn.channel().await?;
            let props = BasicProperties::default;
            let key = format!("{p}.nobody");
            publish_outcome(&ch, "", &key, "m1", props(), true, out).await?;
            publish_outcome(&ch, "", &key, "m2", props(), false, out).await?;
            publish_outcome(&ch, "amq.direct", &key, "m3", props(), true, out).await?;
            Ok(())
        })
        .await
    })
    .await;
}

#[tokio::test]
async fn ack_nack_reject_and_requeue_order() {
    conform(async |cfg: &ConnectionConfig, p: &str| {
        session(cfg, async |conn, out| {
            let ch = conn.channel().await?;
            let q = &queues(&ch, p, &["q"]).await?[0];
            for i in 1..=5 {
                publish(&ch, "", q, &format!("m{i}")).await?;
            }
            let mut c = ch.basic_consume(q, ConsumeOptions::default()).await?;
            let mut held = Vec::new();
            for _ in 0..5 {
                held.push(c.next().await.expect("delivery")?);
            }
            held[0].ack()?;
            held[1].nack(true)?;
            held[2].reject(true)?;
            held[3].reject(false)?;
            held[4].nack(true)?;
            for _ in 0..3 {
                let d = c.next().await.expect("redelivery")?;
                out.push(format!(
                    "redelivered {} {}",
                    String::from_utf8_lossy(&d.body),
                    d.redelivered
                ));
                d.ack()?;
            }
            c.cancel().await?;
            drain(&ch, q, out).await
        })
        .await
    })
    .await;
}

#[tokio::test]
async fn prefetch_holds_back_deliveries_until_acked() {
    conform(async |cfg: &ConnectionConfig, p: &str| {
        session(cfg, async |conn, out| {
            let ch = conn.channel().await?;
            let q = &queues(&ch, p, &["q"]).await?[0];
            for i in 1..=5 {
                publish(&ch, "", q, &format!("m{i}")).await?;
            }
            ch.basic_qos(2, false).await?;
            let mut c = ch.basic_consume(q, ConsumeOptions::default()).await?;
            let first = c.next().await.expect("delivery")?;
            let second = c.next().await.expect("delivery")?;
            // The third waits for an ack: nothing arrives within a short wait.
            let third = tokio::time::timeout(Duration::from_millis(200), c.next()).await;
            out.push(format!("third before ack: {}", third.is_ok()));
            let check = ch.queue_declare(q, exclusive()).await?;
            out.push(format!(
                "ready {} consumers {}",
                check.message_count, check.consumer_count
            ));
            first.ack()?;
            second.ack()?;
            let third = c.next().await.expect("delivery")?;
            out.push(format!("then {}", String::from_utf8_lossy(&third.body)));
            third.ack()?;
            c.cancel().await?;
            drain(&ch, q, out).await
        })
        .await
    })
    .await;
}

#[tokio::test]
async fn get_purge_and_delete_counts() {
    conform(async |cfg: &ConnectionConfig, p: &str| {
        session(cfg, async |conn, out| {
            let ch = conn.channel().await?;
            let q = &queues(&ch, p, &["q"]).await?[0];
            for i in 1..=4 {
                publish(&ch, "", q, &format!("m{i}")).await?;
            }
            let got = ch.basic_get(q, false).await?.expect("a message");
            out.push(format!("get left={}", got.message_count));
            got.delivery.nack(true)?;
            let got = ch.basic_get(q, false).await?.expect("a message");
            out.push(format!(
                "get again {} redelivered={}",
                String::from_utf8_lossy(&got.delivery.body),
                got.delivery.redelivered
            ));
            got.delivery.ack()?;
            out.push(format!("purged {}", ch.queue_purge(q).await?));
            publish(&ch, "", q, "m5").await?;
            out.push(format!(
                "deleted {}",
                ch.queue_delete(q, false, false).await?
            ));
            out.push(format!(
                "get empty: {:?}",
                ch.basic_get(q, true)
                    .await
                    .map(|g| g.is_some())
                    .map_err(|e| describe(&e))
            ));
            Ok(())
        })
        .await
    })
    .await;
}

#[tokio::test]
async fn deleting_a_consumed_queue_cancels_its_consumer() {
    conform(async |cfg: &ConnectionConfig, p: &str| {
        session(cfg, async |conn, out| {
            let ch = conn.channel().await?;
            let q = &queues(&ch, p, &["q"]).await?[0];
            let mut c = ch.basic_consume(q, ConsumeOptions::default()).await?;
            let other = conn.channel().await?;
            out.push(format!(
                "deleted {}",
                other.queue_delete(q, false, false).await?
            ));
            match c.next().await {
                Some(Err(e)) => out.push(format!(
                    "consumer: {}",
                    match e {
                        Error::ConsumerCancelled(_) => "cancelled by the server".to_owned(),
                        e => describe(&e),
                    }
                )),
                Some(Ok(_)) => out.push("consumer: a delivery".to_owned()),
                None => out.push("consumer: ended".to_owned()),
            }
            Ok(())
        })
        .await
    })
    .await;
}

fn dlx_arguments(dlx: &str) -> FieldTable {
    FieldTable::new().with("x-dead-letter-exchange", dlx)
}

#[tokio::test]
async fn rejected_messages_are_dead_lettered_with_x_death() {
    conform(async |cfg: &ConnectionConfig, p: &str| {
        session(cfg, async |conn, out| {
            let ch = conn.channel().await?;
            let dlx = format!("{p}.dlx");
            ch.exchange_declare(&dlx, "fanout", auto_delete()).await?;
            let dead = &queues(&ch, p, &["dead"]).await?[0];
            ch.queue_bind(dead, &dlx, "", FieldTable::new()).await?;
            let work = format!("{p}.work");
            ch.queue_declare(&work, exclusive_with(dlx_arguments(&dlx)))
                .await?;
            ch.queue_bind(
                &work,
                "amq.topic",
                &format!("{p}.orders.*"),
                FieldTable::new(),
            )
            .await?;
            publish(&ch, "amq.topic", &format!("{p}.orders.created"), "m1").await?;
            publish(&ch, "", &work, "m2").await?;
            let mut c = ch.basic_consume(&work, ConsumeOptions::default()).await?;
            c.next().await.expect("delivery")?.reject(false)?;
            c.next().await.expect("delivery")?.nack(false)?;
            c.cancel().await?;
            // Round the ring once more: the same queue and reason count up.
            drain_and_requeue_dead(&ch, dead, &work, out).await?;
            let mut c = ch.basic_consume(&work, ConsumeOptions::default()).await?;
            c.next().await.expect("delivery")?.reject(false)?;
            c.cancel().await?;
            drain(&ch, dead, out).await?;
            ch.exchange_delete(&dlx, false).await
        })
        .await
    })
    .await;
}

/// Moves the first dead message back to `work` with its headers (as a retry would).
async fn drain_and_requeue_dead(
    ch: &Channel,
    dead: &str,
    work: &str,
    out: &mut Vec<String>,
) -> Result<()> {
    let got = ch.basic_get(dead, true).await?.expect("a dead message");
    out.push(format!(
        "dead first: {}",
        String::from_utf8_lossy(&got.delivery.body)
    ));
    out.extend(death_lines(got.delivery.properties.headers.as_ref()));
    ch.basic_publish(
        "",
        work,
        got.delivery.body.clone(),
        *got.delivery.properties.clone(),
    )
    .await?;
    drain(ch, dead, out).await
}

#[tokio::test]
async fn dead_letter_routing_key_replaces_the_key() {
    conform(async |cfg: &ConnectionConfig, p: &str| {
        session(cfg, async |conn, out| {
            let ch = conn.channel().await?;
            let dlx = format!("{p}.dlx");
            ch.exchange_declare(&dlx, "direct", auto_delete()).await?;
            let parked = &queues(&ch, p, &["parked"]).await?[0];
            ch.queue_bind(parked, &dlx, "park", FieldTable::new())
                .await?;
            let work = format!("{p}.work");
            let args = dlx_arguments(&dlx).with("x-dead-letter-routing-key", "park");
            ch.queue_declare(&work, exclusive_with(args)).await?;
            publish(&ch, "", &work, "m1").await?;
            let got = ch.basic_get(&work, false).await?.expect("a message");
            got.delivery.reject(false)?;
            await_count(&ch, parked, 1).await?;
            drain(&ch, parked, out).await?;
            ch.exchange_delete(&dlx, false).await
        })
        .await
    })
    .await;
}

#[tokio::test]
async fn max_length_overflow_modes() {
    conform(async |cfg: &ConnectionConfig, p: &str| {
        session(cfg, async |conn, out| {
            let ch = conn.channel().await?;
            let dlx = format!("{p}.dlx");
            ch.exchange_declare(&dlx, "fanout", auto_delete()).await?;
            let dead = &queues(&ch, p, &["dead"]).await?[0];
            ch.queue_bind(dead, &dlx, "", FieldTable::new()).await?;
            let props = BasicProperties::default;
            for mode in ["drop-head", "reject-publish", "reject-publish-dlx"] {
                let q = format!("{p}.{mode}");
                let args = dlx_arguments(&dlx)
                    .with("x-max-length", 2i32)
                    .with("x-overflow", mode);
                ch.queue_declare(&q, exclusive_with(args)).await?;
                for i in 1..=3 {
                    publish_outcome(&ch, "", &q, &format!("{mode}-{i}"), props(), false, out)
                        .await?;
                }
                drain(&ch, &q, out).await?;
            }
            let bytes = format!("{p}.bytes");
            let args = FieldTable::new().with("x-max-length-bytes", 5i32);
            ch.queue_declare(&bytes, exclusive_with(args)).await?;
            for body in ["abc", "de", "fg"] {
                publish_outcome(&ch, "", &bytes, body, props(), false, out).await?;
            }
            drain(&ch, &bytes, out).await?;
            drain(&ch, dead, out).await?;
            ch.exchange_delete(&dlx, false).await
        })
        .await
    })
    .await;
}

#[tokio::test]
async fn quorum_delivery_limit_dead_letters() {
    conform(async |cfg: &ConnectionConfig, p: &str| {
        session(cfg, async |conn, out| {
            let ch = conn.channel().await?;
            let dlx = format!("{p}.dlx");
            ch.exchange_declare(&dlx, "fanout", auto_delete()).await?;
            let dead = &queues(&ch, p, &["dead"]).await?[0];
            ch.queue_bind(dead, &dlx, "", FieldTable::new()).await?;
            let q = format!("{p}.quorum");
            let args = dlx_arguments(&dlx)
                .with("x-queue-type", "quorum")
                .with("x-delivery-limit", 2i32)
                .with("x-expires", 60_000i32);
            let options = QueueDeclareOptions::default()
                .with_durable(true)
                .with_arguments(args);
            ch.queue_declare(&q, options).await?;
            publish(&ch, "", &q, "poison").await?;
            let mut c = ch.basic_consume(&q, ConsumeOptions::default()).await?;
            for attempt in 1..=3 {
                let d = tokio::time::timeout(Duration::from_secs(2), c.next()).await;
                match d {
                    Ok(Some(d)) => {
                        let d = d?;
                        out.push(format!("attempt {attempt} redelivered={}", d.redelivered));
                        out.extend(death_lines(d.properties.headers.as_ref()));
                        d.nack(true)?;
                    }
                    _ => out.push(format!("attempt {attempt}: nothing")),
                }
            }
            c.cancel().await?;
            await_count(&ch, dead, 1).await?;
            drain(&ch, dead, out).await?;
            drain(&ch, &q, out).await?;
            ch.queue_delete(&q, false, false).await?;
            ch.exchange_delete(&dlx, false).await
        })
        .await
    })
    .await;
}

#[tokio::test]
async fn priority_queue_delivers_higher_priorities_first() {
    conform(async |cfg: &ConnectionConfig, p: &str| {
        session(cfg, async |conn, out| {
            let ch = conn.channel().await?;
            let q = format!("{p}.prio");
            let args = FieldTable::new().with("x-max-priority", 5i32);
            ch.queue_declare(&q, exclusive_with(args)).await?;
            for (body, prio) in [
                ("low", 1u8),
                ("high", 5),
                ("mid", 3),
                ("over", 9),
                ("none", 0),
            ] {
                let props = BasicProperties::default().with_priority(prio);
                ch.basic_publish("", &q, body.to_owned(), props).await?;
            }
            drain(&ch, &q, out).await
        })
        .await
    })
    .await;
}

#[tokio::test]
async fn channel_errors_carry_rabbitmq_codes_and_texts() {
    conform(async |cfg: &ConnectionConfig, p: &str| {
        session(cfg, async |conn, out| {
            let q = format!("{p}.q");
            let ch = conn.channel().await?;
            let passive = QueueDeclareOptions::default().with_passive(true);
            let e = ch
                .queue_declare(&q, passive)
                .await
                .expect_err("no such queue");
            out.push(describe(&e));
            let ch = conn.channel().await?;
            let e = ch
                .basic_publish(
                    &format!("{p}.missing"),
                    "k",
                    "m".to_owned(),
                    BasicProperties::default(),
                )
                .await
                .expect_err("no such exchange");
            out.push(describe(&e));
            let ch = conn.channel().await?;
            ch.queue_declare(
                &q,
                exclusive_with(FieldTable::new().with("x-max-length", 10i32)),
            )
            .await?;
            let e = ch
                .queue_declare(
                    &q,
                    exclusive_with(FieldTable::new().with("x-max-length", 20i32)),
                )
                .await
                .expect_err("other arguments");
            out.push(describe(&e));
            let ch = conn.channel().await?;
            let e = ch
                .queue_declare(&format!("amq.{p}"), exclusive())
                .await
                .expect_err("reserved prefix");
            out.push(describe(&e));
            let ch = conn.channel().await?;
            let x = format!("{p}.x");
            ch.exchange_declare(&x, "direct", auto_delete()).await?;
            let e = ch
                .exchange_declare(&x, "fanout", auto_delete())
                .await
                .expect_err("other type");
            out.push(describe(&e));
            let ch = conn.channel().await?;
            ch.exchange_delete(&x, false).await?;
            let e = ch
                .queue_bind(&q, &format!("{p}.missing"), "", FieldTable::new())
                .await
                .expect_err("no such exchange");
            out.push(describe(&e));
            Ok(())
        })
        .await
    })
    .await;
}

#[tokio::test]
async fn exclusive_queues_are_locked_to_their_connection() {
    conform(async |cfg: &ConnectionConfig, p: &str| {
        session(cfg, async |conn, out| {
            let ch = conn.channel().await?;
            let q = &queues(&ch, p, &["mine"]).await?[0];
            let other = open_connection(cfg, async |conn2| {
                let ch2 = conn2.channel().await?;
                ch2.basic_get(q, true).await.map(|_| ())
            })
            .await;
            out.push(format!(
                "other connection: {:?}",
                other.map_err(|e| describe(&e))
            ));
            let server_named = ch.queue_declare("", exclusive()).await?;
            out.push(format!(
                "server-named prefix {}",
                server_named.queue.starts_with("amq.gen-")
            ));
            Ok(())
        })
        .await
    })
    .await;
}

#[tokio::test]
async fn expired_messages_are_dead_lettered() {
    conform(async |cfg: &ConnectionConfig, p: &str| {
        session(cfg, async |conn, out| {
            let ch = conn.channel().await?;
            let dlx = format!("{p}.dlx");
            ch.exchange_declare(&dlx, "fanout", auto_delete()).await?;
            let dead = &queues(&ch, p, &["dead"]).await?[0];
            ch.queue_bind(dead, &dlx, "", FieldTable::new()).await?;
            let delay = format!("{p}.delay");
            let args = dlx_arguments(&dlx).with("x-message-ttl", 100i32);
            ch.queue_declare(&delay, exclusive_with(args)).await?;
            let own = format!("{p}.own");
            ch.queue_declare(&own, exclusive_with(dlx_arguments(&dlx)))
                .await?;
            publish(&ch, "", &delay, "by-queue-ttl").await?;
            let props = BasicProperties::default().with_expiration_ms(50);
            ch.basic_publish("", &own, "by-own-ttl".to_owned(), props.clone())
                .await?;
            // A shorter own TTL than the queue's wins.
            let short = BasicProperties::default().with_expiration_ms(10);
            ch.basic_publish("", &delay, "shorter".to_owned(), short)
                .await?;
            // Not expired yet: the queue still holds it.
            ch.basic_publish(
                "",
                &own,
                "long".to_owned(),
                BasicProperties::default().with_expiration_ms(60_000),
            )
            .await?;
            tokio::time::sleep(Duration::from_millis(400)).await;
            await_count(&ch, dead, 2).await?;
            drain(&ch, dead, out).await?;
            drain(&ch, &own, out).await?;
            ch.exchange_delete(&dlx, false).await
        })
        .await
    })
    .await;
}

#[tokio::test]
async fn settlement_errors_and_multiple() {
    conform(async |cfg: &ConnectionConfig, p: &str| {
        session(cfg, async |conn, out| {
            let ch = conn.channel().await?;
            let q = &queues(&ch, p, &["q"]).await?[0];
            for i in 1..=4 {
                publish(&ch, "", q, &format!("m{i}")).await?;
            }
            let mut tags = Vec::new();
            for _ in 0..4 {
                let got = ch.basic_get(q, false).await?.expect("a message");
                tags.push(got.delivery);
            }
            // nack(multiple) through m3 requeues m1..m3; m4 stays unacknowledged.
            tags[2].nack(true)?;
            let d = ch.basic_get(q, false).await?.expect("requeued");
            out.push(format!(
                "after multiple nack: {} redelivered={}",
                String::from_utf8_lossy(&d.delivery.body),
                d.delivery.redelivered
            ));
            ch.basic_recover(true).await?;
            let d = ch.basic_get(q, true).await?.expect("recovered");
            out.push(format!(
                "after recover: {} redelivered={}",
                String::from_utf8_lossy(&d.delivery.body),
                d.delivery.redelivered
            ));
            drain(&ch, q, out).await?;
            // Settling twice: the second is an unknown tag, 406 on the channel.
            publish(&ch, "", q, "m5").await?;
            let d = ch.basic_get(q, false).await?.expect("m5");
            d.delivery.ack()?;
            let e = ch
                .basic_get(q, false)
                .await
                .err()
                .map(|e| describe(&e))
                .unwrap_or_else(|| "no error yet".to_owned());
            out.push(format!("after one ack: {e}"));
            Ok(())
        })
        .await
    })
    .await;
}

#[tokio::test]
async fn delete_conditions_and_auto_delete() {
    conform(async |cfg: &ConnectionConfig, p: &str| {
        session(cfg, async |conn, out| {
            let ch = conn.channel().await?;
            let q = &queues(&ch, p, &["q"]).await?[0];
            publish(&ch, "", q, "m1").await?;
            let e = ch
                .queue_delete(q, false, true)
                .await
                .expect_err("not empty");
            out.push(describe(&e));
            let ch = conn.channel().await?;
            let c = ch.basic_consume(q, ConsumeOptions::default()).await?;
            let other = conn.channel().await?;
            let e = other
                .queue_delete(q, true, false)
                .await
                .expect_err("in use");
            out.push(describe(&e));
            drop(c);
            let x = format!("{p}.x");
            let ch = conn.channel().await?;
            ch.exchange_declare(&x, "direct", ExchangeDeclareOptions::default())
                .await?;
            ch.queue_bind(q, &x, "k", FieldTable::new()).await?;
            let e = ch.exchange_delete(&x, true).await.expect_err("in use");
            out.push(describe(&e));
            let ch = conn.channel().await?;
            ch.exchange_delete(&x, false).await?;
            let passive = ExchangeDeclareOptions::default().with_passive(true);
            let e = ch
                .exchange_declare(&x, "direct", passive)
                .await
                .expect_err("gone");
            out.push(describe(&e));
            // An auto-delete queue goes with its last consumer.
            let ch = conn.channel().await?;
            let auto = format!("{p}.auto");
            let options = QueueDeclareOptions::default()
                .with_auto_delete(true)
                .with_arguments(FieldTable::new().with("x-expires", 60_000i32));
            ch.queue_declare(&auto, options).await?;
            let mut c = ch.basic_consume(&auto, ConsumeOptions::default()).await?;
            c.cancel().await?;
            let passive = QueueDeclareOptions::default().with_passive(true);
            let e = ch.queue_declare(&auto, passive).await.expect_err("gone");
            out.push(describe(&e));
            Ok(())
        })
        .await
    })
    .await;
}

#[tokio::test]
async fn internal_exchanges_and_redeclares() {
    conform(async |cfg: &ConnectionConfig, p: &str| {
        session(cfg, async |conn, out| {
            let ch = conn.channel().await?;
            let x = format!("{p}.internal");
            let internal = ExchangeDeclareOptions::default()
                .with_internal(true)
                .with_auto_delete(true);
            ch.exchange_declare(&x, "fanout", internal.clone()).await?;
            let e = ch
                .basic_publish(&x, "", "m".to_owned(), BasicProperties::default())
                .await
                .expect_err("internal");
            out.push(describe(&e));
            let ch = conn.channel().await?;
            let e = ch
                .exchange_declare(&x, "fanout", auto_delete())
                .await
                .expect_err("not internal");
            out.push(describe(&e));
            let ch = conn.channel().await?;
            ch.exchange_delete(&x, false).await?;
            let q = format!("{p}.durable");
            let expires = FieldTable::new().with("x-expires", 60_000i32);
            let durable = QueueDeclareOptions::default()
                .with_durable(true)
                .with_arguments(expires.clone());
            ch.queue_declare(&q, durable.clone()).await?;
            // The same declare again is fine and reports the counts.
            let ok = ch.queue_declare(&q, durable).await?;
            out.push(format!(
                "redeclared: {} {}",
                ok.message_count, ok.consumer_count
            ));
            let transient = QueueDeclareOptions::default()
                .with_durable(false)
                .with_arguments(expires);
            let e = ch
                .queue_declare(&q, transient)
                .await
                .expect_err("durable differs");
            out.push(describe(&e));
            let ch = conn.channel().await?;
            out.push(format!(
                "deleted {}",
                ch.queue_delete(&q, false, false).await?
            ));
            Ok(())
        })
        .await
    })
    .await;
}

#[tokio::test]
async fn exclusive_consumers_and_reused_tags() {
    conform(async |cfg: &ConnectionConfig, p: &str| {
        session(cfg, async |conn, out| {
            let ch = conn.channel().await?;
            let q = &queues(&ch, p, &["q"]).await?[0];
            let only = ConsumeOptions::default()
                .with_exclusive(true)
                .with_consumer_tag("only");
            let _c = ch.basic_consume(q, only).await?;
            let other = conn.channel().await?;
            let e = other
                .basic_consume(q, ConsumeOptions::default())
                .await
                .err()
                .map(|e| describe(&e));
            out.push(format!("second consumer: {e:?}"));
            let q2 = &queues(&ch, p, &["q2"]).await?[0];
            let shared = conn.channel().await?;
            let _s = shared.basic_consume(q2, ConsumeOptions::default()).await?;
            let late = conn.channel().await?;
            let e = late
                .basic_consume(q2, ConsumeOptions::default().with_exclusive(true))
                .await
                .err()
                .map(|e| describe(&e));
            out.push(format!("exclusive after another: {e:?}"));
            Ok(())
        })
        .await
    })
    .await;
}

#[tokio::test]
async fn unused_queues_expire_by_x_expires() {
    conform(async |cfg: &ConnectionConfig, p: &str| {
        session(cfg, async |conn, out| {
            let ch = conn.channel().await?;
            let expires = || FieldTable::new().with("x-expires", 300i32);
            let (idle, used) = (format!("{p}.idle"), format!("{p}.used"));
            ch.queue_declare(
                &idle,
                QueueDeclareOptions::default().with_arguments(expires()),
            )
            .await?;
            ch.queue_declare(
                &used,
                QueueDeclareOptions::default().with_arguments(expires()),
            )
            .await?;
            publish(&ch, "", &idle, "lost with its queue").await?;
            // A consumer keeps `used` alive past its expiry.
            let mut c = ch.basic_consume(&used, ConsumeOptions::default()).await?;
            tokio::time::sleep(Duration::from_millis(900)).await;
            let passive = QueueDeclareOptions::default().with_passive(true);
            let idle_state = ch.queue_declare(&idle, passive.clone()).await;
            out.push(format!(
                "idle: {:?}",
                idle_state
                    .map(|ok| ok.message_count)
                    .map_err(|e| describe(&e))
            ));
            let ch = conn.channel().await?;
            let used_state = ch.queue_declare(&used, passive).await;
            out.push(format!(
                "used: {:?}",
                used_state
                    .map(|ok| ok.consumer_count)
                    .map_err(|e| describe(&e))
            ));
            c.cancel().await?;
            ch.queue_delete(&used, false, false).await?;
            Ok(())
        })
        .await
    })
    .await;
}
