//! Trace context carried through messages (feature `otel`): one trace from the publisher to the
//! consumer.
//!
//! What a handler publishes through its [`Publisher`](crate::worker::Publisher) carries the
//! context of the handler's span in its headers, and each delivery's `delivery` span continues
//! the context its message carries. Both go through OpenTelemetry's **global propagator**, so
//! the application chooses the format; for W3C Trace Context (`traceparent`, `tracestate`),
//! as OpenTelemetry's other instrumentations expect:
//!
//! ```text
//! opentelemetry::global::set_text_map_propagator(
//!     opentelemetry_sdk::propagation::TraceContextPropagator::new(),
//! );
//! ```
//!
//! and a `tracing` subscriber with `tracing_opentelemetry`'s layer, which turns spans into
//! OpenTelemetry spans. Without a propagator set (OpenTelemetry's default is one that does
//! nothing) no header is written or read; without the layer, spans have no OpenTelemetry
//! context to carry.
//!
//! Outside the worker, [`inject`] and [`extract`] do the same for messages published and
//! consumed with the plain client.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::proto::{BasicProperties, FieldTable, ShortString};

/// Writes `cx` into `headers` with the global propagator (`traceparent` and `tracestate` for
/// W3C Trace Context). A key longer than a header name may be (255 bytes) is left out.
pub fn inject(cx: &Context, headers: &mut FieldTable) {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(cx, &mut HeaderInjector(headers));
    });
}

/// The context `headers` carry, read by the global propagator; the empty context when they
/// carry none (or an invalid one).
pub fn extract(headers: &FieldTable) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    })
}

/// `properties` with the current span's context in their headers.
pub(crate) fn with_current_context(mut properties: BasicProperties) -> BasicProperties {
    let cx = tracing::Span::current().context();
    let mut headers = properties.headers.take().unwrap_or_default();
    inject(&cx, &mut headers);
    if !headers.is_empty() {
        properties.headers = Some(headers);
    }
    properties
}

/// Makes `span` continue the context `properties` carry, when they carry one.
pub(crate) fn continue_trace(span: &tracing::Span, properties: &BasicProperties) {
    let Some(headers) = &properties.headers else {
        return;
    };
    let cx = extract(headers);
    use opentelemetry::trace::TraceContextExt;
    if cx.span().span_context().is_valid() {
        // Fails only when the span is already closed or has no OpenTelemetry layer: then
        // there is nothing to continue.
        let _ = span.set_parent(cx);
    }
}

struct HeaderInjector<'a>(&'a mut FieldTable);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if key.len() <= ShortString::MAX_LEN {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a FieldTable);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.as_str()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_carry_what_the_propagator_writes_and_reads() {
        let mut headers = FieldTable::new();
        HeaderInjector(&mut headers).set("traceparent", "00-ab-cd-01".to_owned());
        HeaderInjector(&mut headers).set(&"k".repeat(256), "dropped".to_owned());
        assert_eq!(headers.len(), 1);
        let extractor = HeaderExtractor(&headers);
        assert_eq!(extractor.get("traceparent"), Some("00-ab-cd-01"));
        assert_eq!(extractor.get("tracestate"), None);
        assert_eq!(extractor.keys(), ["traceparent"]);
        // A header of another type is not a trace context.
        headers.insert("tracestate", 7_i64);
        assert_eq!(HeaderExtractor(&headers).get("tracestate"), None);
    }
}
