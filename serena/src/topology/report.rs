//! What [`apply`](super::TopologyExt::apply) and [`verify`](super::TopologyExt::verify) found, entity
//! by entity.

use std::fmt;

use crate::error::Error;
use serena_topology::Entity;

/// A property whose value on the broker differs from the topology's, read back from RabbitMQ's
/// 406 reply (`inequivalent arg 'durable' for queue 'q' in vhost '/': received 'false' but
/// current is 'true'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The property or argument: `durable`, `type`, `x-message-ttl`, ...
    pub property: String,
    /// The topology's value (`none`: not set).
    pub topology: String,
    /// The broker's value (`none`: not set).
    pub broker: String,
}

impl Difference {
    /// Reads the difference out of a 406 reply text, when it names one.
    pub fn from_reply_text(text: &str) -> Option<Difference> {
        let rest = text.split_once("inequivalent arg '")?.1;
        let (property, rest) = rest.split_once('\'')?;
        let rest = rest.split_once(": received ")?.1;
        let (received, current) = rest.split_once(" but current is ")?;
        Some(Difference {
            property: property.to_owned(),
            topology: value_of(received),
            broker: value_of(current),
        })
    }
}

/// `'true'` -> `true`; `the value '5' of type 'long'` -> `5 (long)`; `none` stays.
fn value_of(s: &str) -> String {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("the value '")
        && let Some((value, ty)) = rest.split_once("' of type '")
    {
        return format!("{value} ({})", ty.trim_end_matches('\''));
    }
    s.strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(s)
        .to_owned()
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} differs: the topology has {}, the broker has {}",
            self.property, self.topology, self.broker
        )
    }
}

/// Why an entity could not be applied or checked.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The error the broker (or the connection) gave.
    pub error: Error,
    /// For a 406 on a redeclare: the property that differs, when RabbitMQ's reply names it.
    pub difference: Option<Difference>,
}

impl Failure {
    pub(crate) fn new(error: Error) -> Failure {
        let difference = error
            .unexpected_close()
            .filter(|e| e.reply_code == crate::UnexpectedCloseError::PRECONDITION_FAILED)
            .and_then(|e| Difference::from_reply_text(&e.reply_text));
        Failure { error, difference }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.difference {
            Some(d) => write!(
                f,
                "{d}; change the topology to match, or delete the entity and apply again ({})",
                self.error
            ),
            None => write!(f, "{}", self.error),
        }
    }
}

/// What happened to one entity: [`ApplyStatus`] or [`VerifyStatus`], the statuses a
/// [`Report`] holds.
///
/// Sealed: serena's two reports are the only ones.
pub trait Status: fmt::Display + sealed::Sealed {
    /// True when the entity failed or is missing: what makes [`Report::is_ok`] false.
    fn is_failure(&self) -> bool;
}

mod sealed {
    /// Seals [`Status`](super::Status), and gives [`Report`](super::Report)'s summary line its
    /// counters.
    pub trait Sealed {
        /// The summary line's counters, in its order: `{n} {word}` each, joined with `, `.
        const SUMMARY: &'static [&'static str];

        /// Which of [`SUMMARY`](Self::SUMMARY)'s counters counts this status.
        fn counter(&self) -> usize;
    }
}

/// What [`apply`](super::TopologyExt::apply) did with one entity.
#[derive(Debug, Clone)]
pub enum ApplyStatus {
    /// It did not exist and was declared.
    Created,
    /// It existed with the same properties (or, for `declare = false`, it exists).
    Present,
    /// A binding was declared. AMQP 0-9-1 cannot tell whether it existed before: binding twice
    /// is harmless, so applying twice still changes nothing.
    Bound,
    /// A `declare = false` binding: never created, and AMQP 0-9-1 cannot check it.
    Unchecked,
    /// A `declare = false` exchange or queue that does not exist.
    Missing,
    /// The declaration failed.
    Failed(Failure),
}

impl Status for ApplyStatus {
    /// True for [`Missing`](Self::Missing) and [`Failed`](Self::Failed).
    fn is_failure(&self) -> bool {
        matches!(self, ApplyStatus::Missing | ApplyStatus::Failed(_))
    }
}

impl sealed::Sealed for ApplyStatus {
    const SUMMARY: &'static [&'static str] = &[
        "created",
        "already present",
        "bound",
        "unchecked",
        "missing",
        "failed",
    ];

    fn counter(&self) -> usize {
        match self {
            ApplyStatus::Created => 0,
            ApplyStatus::Present => 1,
            ApplyStatus::Bound => 2,
            ApplyStatus::Unchecked => 3,
            ApplyStatus::Missing => 4,
            ApplyStatus::Failed(_) => 5,
        }
    }
}

impl fmt::Display for ApplyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyStatus::Created => f.write_str("created"),
            ApplyStatus::Present => f.write_str("already present"),
            ApplyStatus::Bound => f.write_str("bound"),
            ApplyStatus::Unchecked => {
                f.write_str("not checked (declare = false; AMQP cannot check a binding)")
            }
            ApplyStatus::Missing => f.write_str("missing (declare = false, so not created)"),
            ApplyStatus::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}

/// What [`verify`](super::TopologyExt::verify) found for one entity.
#[derive(Debug, Clone)]
pub enum VerifyStatus {
    /// It exists.
    Present,
    /// It does not exist.
    Missing,
    /// A binding: AMQP 0-9-1 has no passive bind, so it cannot be checked without creating it.
    Unchecked,
    /// The check itself failed (access refused, connection lost, ...).
    Failed(Failure),
}

impl Status for VerifyStatus {
    /// True for [`Missing`](Self::Missing) and [`Failed`](Self::Failed).
    fn is_failure(&self) -> bool {
        matches!(self, VerifyStatus::Missing | VerifyStatus::Failed(_))
    }
}

impl sealed::Sealed for VerifyStatus {
    const SUMMARY: &'static [&'static str] = &[
        "present",
        "missing",
        "failed",
        "bindings not checked (AMQP 0-9-1 has no passive bind)",
    ];

    fn counter(&self) -> usize {
        match self {
            VerifyStatus::Present => 0,
            VerifyStatus::Missing => 1,
            VerifyStatus::Failed(_) => 2,
            VerifyStatus::Unchecked => 3,
        }
    }
}

impl fmt::Display for VerifyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyStatus::Present => f.write_str("present"),
            VerifyStatus::Missing => f.write_str("MISSING"),
            VerifyStatus::Unchecked => {
                f.write_str("not checked (AMQP 0-9-1 cannot check a binding passively)")
            }
            VerifyStatus::Failed(e) => write!(f, "check failed: {e}"),
        }
    }
}

/// One entity and what happened to it.
#[derive(Debug, Clone)]
pub struct EntityReport<S> {
    /// The exchange, queue or binding.
    pub entity: Entity,
    /// What happened.
    pub status: S,
}

/// What [`apply`](super::TopologyExt::apply) ([`ApplyReport`]) or
/// [`verify`](super::TopologyExt::verify) ([`VerifyReport`]) found: exchanges, then queues,
/// then bindings, in the topology's order. Displayed one line per entity, then a summary line.
#[derive(Debug, Clone)]
pub struct Report<S> {
    /// Every entity of the topology.
    pub entries: Vec<EntityReport<S>>,
}

/// The result of [`apply`](super::TopologyExt::apply).
pub type ApplyReport = Report<ApplyStatus>;

/// The result of [`verify`](super::TopologyExt::verify). Bindings are not checked.
pub type VerifyReport = Report<VerifyStatus>;

impl<S> Default for Report<S> {
    fn default() -> Self {
        Report {
            entries: Vec::new(),
        }
    }
}

impl<S: Status> Report<S> {
    /// True when nothing failed or was missing (for verify: every exchange and queue exists;
    /// bindings are not checked).
    pub fn is_ok(&self) -> bool {
        !self.entries.iter().any(|e| e.status.is_failure())
    }

    /// The entities that failed or were missing ([`Status::is_failure`]).
    pub fn failures(&self) -> impl Iterator<Item = &EntityReport<S>> {
        self.entries.iter().filter(|e| e.status.is_failure())
    }

    /// The status of `entity`, if the report has it.
    pub fn status_of(&self, entity: &Entity) -> Option<&S> {
        self.entries
            .iter()
            .find(|e| &e.entity == entity)
            .map(|e| &e.status)
    }
}

impl<S: Status> fmt::Display for Report<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.entries {
            writeln!(f, "{}: {}", e.entity, e.status)?;
        }
        let mut counts = vec![0usize; S::SUMMARY.len()];
        for e in &self.entries {
            counts[e.status.counter()] += 1;
        }
        for (i, (word, n)) in S::SUMMARY.iter().zip(counts).enumerate() {
            let comma = if i == 0 { "" } else { ", " };
            write!(f, "{comma}{n} {word}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rabbitmqs_inequivalent_arg_texts() {
        let d = Difference::from_reply_text(
            "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': \
             received 'false' but current is 'true'",
        )
        .unwrap();
        assert_eq!(
            (d.property.as_str(), d.topology.as_str(), d.broker.as_str()),
            ("durable", "false", "true")
        );
        assert_eq!(
            d.to_string(),
            "durable differs: the topology has false, the broker has true"
        );
        let d = Difference::from_reply_text(
            "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': \
             received the value '5' of type 'signedint' but current is none",
        )
        .unwrap();
        assert_eq!(
            (d.property.as_str(), d.topology.as_str(), d.broker.as_str()),
            ("x-message-ttl", "5 (signedint)", "none")
        );
        let d = Difference::from_reply_text(
            "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'q' in vhost '/': \
             received none but current is the value '10' of type 'long'",
        )
        .unwrap();
        assert_eq!(
            (d.topology.as_str(), d.broker.as_str()),
            ("none", "10 (long)")
        );
    }

    fn entry<S>(name: &str, status: S) -> EntityReport<S> {
        EntityReport {
            entity: Entity::Queue(serena_topology::EntityName::Named(name.to_owned())),
            status,
        }
    }

    #[test]
    fn reports_list_each_entity_then_count_them() {
        let apply = ApplyReport {
            entries: vec![
                entry("a", ApplyStatus::Created),
                entry("b", ApplyStatus::Created),
                entry("c", ApplyStatus::Missing),
            ],
        };
        assert!(!apply.is_ok());
        assert_eq!(apply.failures().count(), 1);
        assert_eq!(
            apply.to_string(),
            "queue \"a\": created\nqueue \"b\": created\n\
             queue \"c\": missing (declare = false, so not created)\n\
             2 created, 0 already present, 0 bound, 0 unchecked, 1 missing, 0 failed"
        );
        let verify = VerifyReport {
            entries: vec![
                entry("a", VerifyStatus::Present),
                entry("b", VerifyStatus::Unchecked),
            ],
        };
        assert!(verify.is_ok());
        assert!(matches!(
            verify.status_of(&entry("b", ()).entity),
            Some(VerifyStatus::Unchecked)
        ));
        assert_eq!(
            verify.to_string(),
            "queue \"a\": present\n\
             queue \"b\": not checked (AMQP 0-9-1 cannot check a binding passively)\n\
             1 present, 0 missing, 0 failed, 1 bindings not checked (AMQP 0-9-1 has no passive \
             bind)"
        );
        assert_eq!(
            VerifyReport::default().to_string(),
            "0 present, 0 missing, 0 failed, 0 bindings not checked (AMQP 0-9-1 has no passive \
             bind)"
        );
    }

    #[test]
    fn other_texts_name_no_difference() {
        for text in [
            "PRECONDITION_FAILED - invalid arg 'x-max-age' for queue 'q' in vhost '/'",
            "PRECONDITION_FAILED - inequivalent arg 'durable",
            "",
        ] {
            assert_eq!(Difference::from_reply_text(text), None, "{text}");
        }
    }
}
