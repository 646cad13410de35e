//! What loading or validating a topology can report: [`Problem`]s, each naming the file, line,
//! column and entity, gathered into one [`TopologyError`].

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

/// A position in a topology file: 1-based line and column (the column counts characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1, in characters.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `text` (one lookup; see [`LineIndex`] for many).
    #[cfg(test)]
    pub(crate) fn of_offset(text: &str, offset: usize) -> Location {
        LineIndex::new(text).locate(text, offset)
    }
}

/// Where each line of a text starts, built once so that turning byte offsets into locations
/// costs a binary search and one line's characters, not a scan from the start of the text
/// (a file with thousands of problems would otherwise take quadratic time to report).
#[derive(Debug, Clone)]
pub(crate) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    /// Indexes the lines of `text`.
    pub(crate) fn new(text: &str) -> LineIndex {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { starts }
    }

    /// The location of byte `offset` in `text`, the text this index was built from. An offset
    /// past the end is the end; one inside a character counts as that character.
    pub(crate) fn locate(&self, text: &str, offset: usize) -> Location {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&start| start <= offset);
        let line_start = self.starts[line - 1];
        Location {
            line,
            column: text[line_start..offset].chars().count() + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// What a binding leads to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// A queue (`queue.bind`).
    Queue(String),
    /// An exchange (`exchange.bind`).
    Exchange(String),
}

impl Destination {
    /// The destination's name.
    pub fn name(&self) -> &str {
        match self {
            Destination::Queue(n) | Destination::Exchange(n) => n,
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Queue(n) => write!(f, "queue {n:?}"),
            Destination::Exchange(n) => write!(f, "exchange {n:?}"),
        }
    }
}

/// The part of a topology a problem or a report line is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Entity {
    /// The file as a whole (syntax, unknown top-level keys).
    File,
    /// The `[connection]` block.
    Connection,
    /// An exchange, by name; an unnamed one by its 1-based position.
    Exchange(EntityName),
    /// A queue, by name; an unnamed one by its 1-based position.
    Queue(EntityName),
    /// A binding.
    Binding {
        /// Its 1-based position among the bindings.
        index: usize,
        /// The source exchange, when given.
        source: Option<String>,
        /// The destination, when given.
        destination: Option<Destination>,
        /// The routing (binding) key.
        routing_key: String,
    },
}

/// How an entity is named in messages: by name, or by position when it has none.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EntityName {
    /// Its name.
    Named(String),
    /// Its 1-based position in its list, for an entity written without a name.
    Unnamed(usize),
}

impl fmt::Display for EntityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntityName::Named(n) => write!(f, "{n:?}"),
            EntityName::Unnamed(i) => write!(f, "#{i}"),
        }
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entity::File => f.write_str("top level"),
            Entity::Connection => f.write_str("[connection]"),
            Entity::Exchange(n) => write!(f, "exchange {n}"),
            Entity::Queue(n) => write!(f, "queue {n}"),
            Entity::Binding {
                index,
                source,
                destination,
                routing_key,
            } => match (source, destination) {
                (Some(s), Some(d)) => {
                    write!(f, "binding {s:?} -> {d}")?;
                    if !routing_key.is_empty() {
                        write!(f, " (key {routing_key:?})")?;
                    }
                    Ok(())
                }
                _ => write!(f, "binding #{index}"),
            },
        }
    }
}

/// One thing wrong with a topology.
///
/// Displayed as `file:line:column: entity: message`, e.g.
/// `topology.toml:12:9: queue "orders.work": x-max-priority is not supported on quorum queues`;
/// the file and position are left out for a topology built in code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, as it was named when loaded.
    pub file: Option<String>,
    /// Where in the file.
    pub location: Option<Location>,
    /// What it is about.
    pub entity: Entity,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.location) {
            (Some(file), Some(at)) => write!(f, "{file}:{at}: ")?,
            (Some(file), None) => write!(f, "{file}: ")?,
            (None, Some(at)) => write!(f, "{at}: ")?,
            (None, None) => {}
        }
        write!(f, "{}: {}", self.entity, self.message)
    }
}

/// A topology that could not be read or is not valid.
#[derive(Debug, Clone, Error)]
pub enum TopologyError {
    /// The file could not be read.
    #[error("cannot read topology file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// Every problem found, in file order, one per line when displayed.
    #[error("{}", DisplayLines(problems))]
    Invalid {
        /// The problems; never empty.
        problems: Vec<Problem>,
    },
}

impl TopologyError {
    /// The problems found (none for a read error).
    pub fn problems(&self) -> &[Problem] {
        match self {
            TopologyError::Read { .. } => &[],
            TopologyError::Invalid { problems } => problems,
        }
    }
}

struct DisplayLines<'a>(&'a [Problem]);

impl fmt::Display for DisplayLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_count_lines_and_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(
            Location::of_offset(text, 0),
            Location { line: 1, column: 1 }
        );
        assert_eq!(
            Location::of_offset(text, 6),
            Location { line: 2, column: 1 }
        );
        // "bé = " is 6 bytes but 5 characters.
        assert_eq!(
            Location::of_offset(text, 12),
            Location { line: 2, column: 6 }
        );
        assert_eq!(Location::of_offset(text, 999).line, 3);
    }

    #[test]
    fn the_line_index_agrees_with_counting_from_the_start_at_every_offset() {
        let text = "a = 1\n\nnamé = \"x\"\r\n[[queues]]\n  ünïcode\n";
        let index = LineIndex::new(text);
        for offset in 0..=text.len() + 2 {
            let mut at = offset.min(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let before = &text[..at];
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let naive = Location {
                line: before.matches('\n').count() + 1,
                column: before[line_start..].chars().count() + 1,
            };
            assert_eq!(index.locate(text, offset), naive, "offset {offset}");
        }
    }

    #[test]
    fn problems_display_one_per_line() {
        let p = |line, message: &str| Problem {
            file: Some("t.toml".into()),
            location: Some(Location { line, column: 9 }),
            entity: Entity::Queue(EntityName::Named("orders.work".into())),
            message: message.into(),
        };
        let err = TopologyError::Invalid {
            problems: vec![p(12, "first"), p(14, "second")],
        };
        assert_eq!(
            err.to_string(),
            "t.toml:12:9: queue \"orders.work\": first\nt.toml:14:9: queue \"orders.work\": second"
        );
        let binding = Entity::Binding {
            index: 1,
            source: Some("orders".into()),
            destination: Some(Destination::Exchange("audit".into())),
            routing_key: "#".into(),
        };
        assert_eq!(
            binding.to_string(),
            "binding \"orders\" -> exchange \"audit\" (key \"#\")"
        );
        let unnamed = Problem {
            file: None,
            location: None,
            entity: Entity::Exchange(EntityName::Unnamed(2)),
            message: "needs a name".into(),
        };
        assert_eq!(unnamed.to_string(), "exchange #2: needs a name");
    }
}
