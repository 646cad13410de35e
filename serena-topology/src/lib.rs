//! The `topology.toml` of [serena](https://docs.rs/serena): the model, the loader that reports
//! every problem with its line and column, the validation rules and the queues a retry
//! schedule adds. Pure: no tokio, no sockets; the only I/O is reading the file in
//! [`Topology::load`].
//!
//! Use it as `serena::topology`, which re-exports all of it and adds what needs a broker
//! (`TopologyExt::apply`, `TopologyExt::verify`) or the client's configuration (resolving
//! [`ConnectionSettings`]). The crate stands alone so that serena's `#[consumer]` macro checks
//! a consumer's queue at compile time with the very loader and rules the library runs.
//!
//! ## Layout
//!
//! - `model`: [`Topology`], [`Exchange`], [`Queue`], [`Binding`], [`Retry`] as plain data, and
//!   the `queue.declare` / `exchange.declare` arguments each maps to.
//! - `load` and `reader`: the walk over toml's spanned document tree.
//! - [`validate`]: the rules, each problem a [`Problem`] with file, line, column and entity.
//! - `retry` and `retry_queues`: [`RetrySchedule`], the names of delay and park queues, and
//!   the queues they add ([`Topology::queue_plan`]).
//! - `connection`: the `[connection]` block as written ([`ConnectionSettings`]).
//! - [`suggest`]: "did you mean" for mistyped names, shared with the macro.
//! - `graph`: the routing as a Mermaid or Graphviz picture ([`Topology::graph`]).
//! - `definitions`, `export`, `drift` (feature `management`): RabbitMQ's definitions JSON to
//!   and from a topology ([`Topology::to_definitions`], [`Topology::from_definitions`]), a
//!   topology as TOML text ([`Topology::to_toml`]), and what differs from a broker's
//!   ([`Topology::drift`]).
//! - `notes`: advice about a valid topology ([`Topology::notes`]): names RabbitMQ makes costly.

mod connection;
#[cfg(feature = "management")]
mod definitions;
#[cfg(feature = "management")]
mod drift;
mod error;
#[cfg(feature = "management")]
mod export;
mod graph;
mod kinds;
mod load;
mod model;
mod notes;
mod reader;
mod retry;
mod retry_queues;
pub mod suggest;
pub mod validate;

use std::path::Path;
use std::sync::Arc;

pub use connection::ConnectionSettings;
#[cfg(feature = "management")]
pub use definitions::{DefinitionsError, field_to_json, json_to_field, table_to_json};
#[cfg(feature = "management")]
pub use drift::{Drift, DriftKind};
pub use error::{Destination, Entity, EntityName, Location, Problem, TopologyError};
pub use graph::GraphFormat;
pub use kinds::is_interval;
pub use model::{
    Binding, Exchange, ExchangeKind, Origin, Overflow, Queue, QueueType, Retry, STANDARD_EXCHANGES,
    Topology,
};
pub use notes::INLINE_NAME_LEN;
pub use retry::{
    DelayText, MAX_RETRY_DELAY, RetrySchedule, RetryStep, parse_delay, retry_queue_name,
};

impl Topology {
    /// Reads, parses and validates the topology file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Topology, TopologyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| TopologyError::Read {
            path: path.to_owned(),
            source: Arc::new(e),
        })?;
        Topology::from_toml(&text, &path.display().to_string())
    }

    /// Parses and validates a topology from TOML text; `file` names it in problems.
    pub fn from_toml(text: &str, file: &str) -> Result<Topology, TopologyError> {
        load::parse(text, file)
    }
}
