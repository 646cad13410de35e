// Every option, and how each lands in the ConsumerSpec.

use serena::worker::{ConsumerSpec, ErrorPolicy, Handler};

/// Handles orders.
#[serena::consumer(
    queue = "orders",
    prefetch = 65535,
    concurrency = 8,
    tag = "orders-worker",
    exclusive,
    priority = -10,
    on_error = "reject",
)]
#[allow(unused_variables)]
pub async fn all(body: bytes::Bytes) {
    let unused = 1;
}

#[serena::consumer(queue = "q", exclusive = false, on_error = "retry", prefetch = 0, priority = 2147483647)]
pub(crate) async fn explicit_defaults() {}

#[serena::consumer(queue = "q", exclusive = true, priority = -2147483648, concurrency = 1usize, prefetch = 5u16)]
async fn suffixed() {}

#[serena::consumer(queue = "r#raw")]
async fn r#type() {}

#[serena::consumer(queue = "defaults")]
async fn defaults() {}

mod inner {
    #[serena::consumer(queue = "inner")]
    pub(super) async fn scoped() {}
}

fn main() {
    assert_eq!(
        all.spec(),
        ConsumerSpec {
            name: "all".into(),
            queue: "orders".into(),
            prefetch: Some(65535),
            concurrency: Some(8),
            consumer_tag: Some("orders-worker".into()),
            exclusive: true,
            priority: Some(-10),
            on_error: ErrorPolicy::Reject,
            stream_offset: None,
        }
    );
    let spec = explicit_defaults.spec();
    assert!(!spec.exclusive);
    assert_eq!(spec.on_error, ErrorPolicy::Retry);
    assert_eq!(spec.prefetch, Some(0));
    assert_eq!(spec.priority, Some(i32::MAX));
    let spec = suffixed.spec();
    assert!(spec.exclusive);
    assert_eq!((spec.priority, spec.concurrency, spec.prefetch), (Some(i32::MIN), Some(1), Some(5)));
    assert_eq!(r#type.spec().name, "type");
    assert_eq!(r#type.spec().queue, "r#raw");
    assert_eq!(defaults.spec(), ConsumerSpec::new("defaults", "defaults"));
    assert_eq!(inner::scoped.spec().queue, "inner");
    let _ = inner::scoped::handler();
    assert_eq!(format!("{:?}", all), "all");
}
