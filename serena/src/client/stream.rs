//! Where a consumer of a stream queue starts reading: the `x-stream-offset` consume argument.

use std::borrow::Cow;
use std::fmt;

use crate::proto::{FieldTable, FieldValue};

/// Where a consumer attaches to a stream queue (`x-stream-offset` in `basic.consume`).
///
/// A stream keeps its messages after they are read; each consumer says where in the log it
/// starts. RabbitMQ keeps no position for an AMQP 0-9-1 consumer: every consume starts from
/// its offset again, so `First` reads the whole retained log after every restart, and `Next`
/// (the broker's default) reads only what is published after the consume.
///
/// RabbitMQ refuses a stream consumer without a prefetch limit: after `basic.qos` 0, the
/// consume gets 406 PRECONDITION_FAILED "consumer prefetch count is not set for 'queue ...'"
/// (watched in the test `worker::streams::rabbitmq_refuses_a_stream_consumer_without_a_prefetch_limit`).
/// Consume with acknowledgements and a prefetch above 0, as serena's worker does (see
/// [`ConsumerSpec::stream_offset`](crate::worker::ConsumerSpec::stream_offset)). An
/// [`Offset`](Self::Offset) delivers from exactly that message: the messages before it in
/// its chunk are skipped (watched too, in `next_reads_only_what_comes_after_and_an_offset_starts_there`).
///
/// ```
/// use serena::{ConsumeOptions, StreamOffset};
///
/// let options = ConsumeOptions::default().with_arguments(StreamOffset::First.arguments());
/// assert_eq!(options.arguments.get("x-stream-offset").and_then(|v| v.as_str()), Some("first"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StreamOffset {
    /// From the first message the stream still holds.
    First,
    /// From the last chunk written (a few of the newest messages, then what follows).
    Last,
    /// Only messages published after the consume (RabbitMQ's default).
    Next,
    /// From this offset in the log (0 is the first message ever written).
    Offset(u64),
    /// From the messages written at or after this time, in seconds since the Unix epoch (sent
    /// as an AMQP timestamp; RabbitMQ starts at the chunk holding it, so a few earlier messages
    /// may come too).
    Timestamp(u64),
    /// From this long ago: digits and one unit of `Y`, `M`, `D`, `h`, `m`, `s` (`"1h"`,
    /// `"7D"`).
    Interval(Cow<'static, str>),
}

impl StreamOffset {
    /// The argument's value as sent: `"first"`, `"last"`, `"next"`, a long integer, a
    /// timestamp, or the interval's text.
    pub fn to_field_value(&self) -> FieldValue {
        match self {
            StreamOffset::First => "first".into(),
            StreamOffset::Last => "last".into(),
            StreamOffset::Next => "next".into(),
            StreamOffset::Offset(n) => FieldValue::I64(i64::try_from(*n).unwrap_or(i64::MAX)),
            StreamOffset::Timestamp(t) => FieldValue::Timestamp(*t),
            StreamOffset::Interval(text) => text.as_ref().into(),
        }
    }

    /// A consume argument table with only `x-stream-offset`.
    pub fn arguments(&self) -> FieldTable {
        FieldTable::new().with(StreamOffset::ARGUMENT, self.to_field_value())
    }

    /// The consume argument's name.
    pub const ARGUMENT: &'static str = "x-stream-offset";

    /// True when an interval's text is digits then one of `Y`, `M`, `D`, `h`, `m`, `s` (what
    /// RabbitMQ accepts); every other offset is always valid.
    pub fn is_valid(&self) -> bool {
        match self {
            StreamOffset::Interval(text) => serena_topology::is_interval(text),
            _ => true,
        }
    }
}

impl fmt::Display for StreamOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamOffset::First => f.write_str("first"),
            StreamOffset::Last => f.write_str("last"),
            StreamOffset::Next => f.write_str("next"),
            StreamOffset::Offset(n) => write!(f, "offset {n}"),
            StreamOffset::Timestamp(t) => write!(f, "timestamp {t}"),
            StreamOffset::Interval(text) => write!(f, "{text} ago"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_offset_has_its_wire_type() {
        assert_eq!(
            StreamOffset::First.to_field_value(),
            FieldValue::from("first")
        );
        assert_eq!(
            StreamOffset::Last.to_field_value(),
            FieldValue::from("last")
        );
        assert_eq!(
            StreamOffset::Next.to_field_value(),
            FieldValue::from("next")
        );
        assert_eq!(
            StreamOffset::Offset(42).to_field_value(),
            FieldValue::I64(42)
        );
        assert_eq!(
            StreamOffset::Offset(u64::MAX).to_field_value(),
            FieldValue::I64(i64::MAX)
        );
        assert_eq!(
            StreamOffset::Timestamp(1_700_000_000).to_field_value(),
            FieldValue::Timestamp(1_700_000_000)
        );
        let hour = StreamOffset::Interval("1h".into());
        assert_eq!(hour.to_field_value(), FieldValue::from("1h"));
        assert!(hour.is_valid());
        for bad in ["", "h", "1", "1d", "1.5h", "-1h"] {
            assert!(!StreamOffset::Interval(bad.into()).is_valid(), "{bad}");
        }
        assert_eq!(StreamOffset::First.arguments().len(), 1);
        assert_eq!(StreamOffset::Timestamp(5).to_string(), "timestamp 5");
    }
}
