//! Trace context through messages (feature `otel`), against the real broker: a trace started
//! by a publisher arrives in the handler's span, goes on through what that handler publishes
//! with its `Publisher`, and reaches the next handler; a message without one starts a new
//! trace.
//!
//! The process has one global tracing subscriber with the OpenTelemetry layer (an SDK tracer
//! provider, no exporter) and the W3C Trace Context propagator, as a traced service would.

use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
use serena::proto::{BasicProperties, FieldTable};
use serena::worker::{ConsumerSpec, DeliveryContext, Handler, HandlerFuture, Outcome, Supervisor};
use serena::{ConnectionConfig, Error, QueueDeclareOptions, open_connection};
use serena_tests::{config, unique_name, within};
use tokio::sync::Notify;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let tracer = provider.tracer("serena-tests");
        tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(tracer))
            .init();
    });
}

/// What a handler saw: the trace of its span and the message's `traceparent` header.
#[derive(Debug, Clone)]
struct Seen {
    handler: &'static str,
    body: String,
    trace_id: TraceId,
    traceparent: Option<String>,
}

/// Records what it saw; with `forward_to`, publishes the body on to that queue through the
/// handler's `Publisher`.
struct Recording {
    name: &'static str,
    queue: String,
    forward_to: Option<String>,
    seen: Arc<Mutex<Vec<Seen>>>,
    changed: Arc<Notify>,
}

impl Handler for Recording {
    fn spec(&self) -> ConsumerSpec {
        ConsumerSpec::new(self.name, self.queue.clone())
    }

    fn call<'a>(&'a self, ctx: &'a DeliveryContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let trace_id = tracing::Span::current()
                .context()
                .span()
                .span_context()
                .trace_id();
            let traceparent = ctx
                .delivery
                .properties
                .headers
                .as_ref()
                .and_then(|h| h.get("traceparent"))
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            if let Some(next) = &self.forward_to {
                ctx.publisher
                    .publish("", next, ctx.delivery.body.clone(), Default::default())
                    .await
                    .expect("forwarded and confirmed");
            }
            self.seen.lock().expect("lock").push(Seen {
                handler: self.name,
                body: String::from_utf8_lossy(&ctx.delivery.body).into_owned(),
                trace_id,
                traceparent,
            });
            self.changed.notify_one();
            Outcome::Ack
        })
    }
}

async fn declare(queues: &[&str]) {
    let mut arguments = FieldTable::new();
    arguments.insert("x-expires", 60_000_i64);
    open_connection(&ConnectionConfig::default(), async |conn| {
        conn.open_channel(async |ch| {
            for q in queues {
                ch.queue_declare(
                    q,
                    QueueDeclareOptions::default().with_arguments(arguments.clone()),
                )
                .await?;
            }
            Ok::<_, Error>(())
        })
        .await
    })
    .await
    .expect("declare");
}

async fn publish(queue: &str, body: &str, headers: Option<FieldTable>) {
    let mut properties = BasicProperties::default();
    if let Some(h) = headers {
        properties = properties.with_headers(h);
    }
    open_connection(&ConnectionConfig::default(), async |conn| {
        conn.open_channel(async |ch| {
            ch.basic_publish("", queue, body.to_owned(), properties)
                .await
        })
        .await
    })
    .await
    .expect("publish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_trace_continues_in_the_handlers_span_and_through_its_publishes() {
    init_tracing();
    let first = unique_name("otel-first");
    let second = unique_name("otel-second");
    declare(&[&first, &second]).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let changed = Arc::new(Notify::new());
    let stop = Arc::new(Notify::new());
    let supervisor = Supervisor::new(config(&unique_name("otel-worker")))
        .consumer(Recording {
            name: "first",
            queue: first.clone(),
            forward_to: Some(second.clone()),
            seen: seen.clone(),
            changed: changed.clone(),
        })
        .consumer(Recording {
            name: "second",
            queue: second.clone(),
            forward_to: None,
            seen: seen.clone(),
            changed: changed.clone(),
        });
    let mut handle = supervisor.handle();
    let run = tokio::spawn({
        let stop = stop.clone();
        supervisor.run_until(async move { stop.notified().await })
    });
    within(Duration::from_secs(20), "ready", handle.ready()).await;

    // The publisher's span: its context goes into the message's headers.
    let root = tracing::info_span!("place order");
    let root_cx = root.context();
    let trace_id = root_cx.span().span_context().trace_id();
    assert_ne!(
        trace_id,
        TraceId::INVALID,
        "the tracer gives spans real ids"
    );
    let mut headers = FieldTable::new();
    serena::otel::inject(&root_cx, &mut headers);
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.as_str())
        .expect("a traceparent header")
        .to_owned();
    assert!(
        traceparent.starts_with(&format!("00-{trace_id}-")),
        "{traceparent}"
    );
    assert_eq!(
        serena::otel::extract(&headers)
            .span()
            .span_context()
            .trace_id(),
        trace_id
    );
    publish(&first, "traced", Some(headers)).await;
    // And one without a trace context: its handler starts a trace of its own.
    publish(&first, "untraced", None).await;

    let seen = within(Duration::from_secs(20), "four deliveries", async {
        loop {
            let notified = changed.notified();
            let now = seen.lock().expect("lock").clone();
            if now.len() >= 4 {
                return now;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    })
    .await;
    let find = |handler: &str, body: &str| {
        seen.iter()
            .find(|s| s.handler == handler && s.body == body)
            .unwrap_or_else(|| panic!("{handler} saw no {body:?}: {seen:?}"))
            .clone()
    };
    let first_traced = find("first", "traced");
    let second_traced = find("second", "traced");
    assert_eq!(
        first_traced.trace_id, trace_id,
        "the first handler continues the trace"
    );
    assert_eq!(
        second_traced.trace_id, trace_id,
        "the forwarded message carries it to the second handler"
    );
    // The forwarded message's traceparent names the first handler's span, not the root.
    let forwarded = second_traced
        .traceparent
        .expect("the forward has a traceparent");
    assert!(
        forwarded.starts_with(&format!("00-{trace_id}-")),
        "{forwarded}"
    );
    assert_ne!(forwarded, traceparent);

    let first_untraced = find("first", "untraced");
    let second_untraced = find("second", "untraced");
    assert_eq!(first_untraced.traceparent, None);
    assert_ne!(first_untraced.trace_id, TraceId::INVALID);
    assert_ne!(first_untraced.trace_id, trace_id, "a new trace");
    assert_eq!(second_untraced.trace_id, first_untraced.trace_id);

    stop.notify_one();
    within(Duration::from_secs(20), "shutdown", run)
        .await
        .expect("join")
        .expect("clean shutdown");
}
