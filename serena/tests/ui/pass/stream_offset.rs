// `offset = ...`: a stream consumer, and the `x-stream-offset` each form gives.

use std::borrow::Cow;

use serena::StreamOffset;
use serena::worker::Handler;

#[serena::consumer(queue = "events", offset = "first", prefetch = 100)]
async fn from_first() {}

#[serena::consumer(queue = "events", offset = "last")]
async fn from_last() {}

#[serena::consumer(queue = "events", offset = "next")]
async fn from_next() {}

#[serena::consumer(queue = "events", offset = 1000)]
async fn from_offset() {}

#[serena::consumer(queue = "events", offset = 18446744073709551615u64)]
async fn from_the_end_of_time() {}

#[serena::consumer(queue = "events", offset = timestamp(1700000000))]
async fn from_a_time() {}

#[serena::consumer(queue = "events", offset = "7D")]
async fn from_a_week_ago() {}

fn main() {
    let spec = from_first.spec();
    assert_eq!(spec.stream_offset, Some(StreamOffset::First));
    assert_eq!(spec.prefetch, Some(100));
    assert_eq!(from_last.spec().stream_offset, Some(StreamOffset::Last));
    assert_eq!(from_next.spec().stream_offset, Some(StreamOffset::Next));
    assert_eq!(from_offset.spec().stream_offset, Some(StreamOffset::Offset(1000)));
    assert_eq!(
        from_the_end_of_time.spec().stream_offset,
        Some(StreamOffset::Offset(u64::MAX))
    );
    assert_eq!(
        from_a_time.spec().stream_offset,
        Some(StreamOffset::Timestamp(1_700_000_000))
    );
    assert_eq!(
        from_a_week_ago.spec().stream_offset,
        Some(StreamOffset::Interval(Cow::Borrowed("7D")))
    );
    assert_eq!(from_a_week_ago.spec().queue, "events");
}
