//! Declarative topology: exchanges, queues and bindings in a `topology.toml`, validated with
//! precise errors, applied idempotently and verified without changing the broker.
//!
//! ```toml
//! [connection]                      # optional; SERENA_URL and friends override it
//! url = "amqp://app@rabbit.internal:5672/orders"   # SERENA_PASSWORD supplies the password
//!
//! [[exchanges]]
//! name = "orders"
//! type = "topic"                    # direct, fanout, topic, headers, or a plugin's x-...
//!
//! [[queues]]
//! name = "orders.work"
//! type = "quorum"                   # classic (default), quorum, stream
//! dead_letter_exchange = ""
//! dead_letter_routing_key = "orders.parking"
//! delivery_limit = 5
//! initial_group_size = 3            # replicas on 3 nodes of a cluster
//! retry = { delays = ["1s", "10s", "1m"], park = "orders.parking" }
//!
//! [[queues]]
//! name = "orders.parking"
//!
//! [[bindings]]
//! source = "orders"
//! queue = "orders.work"             # or exchange = "..." for an exchange-to-exchange binding
//! routing_key = "order.*"
//! ```
//!
//! # Keys
//!
//! Every table rejects keys it does not know. Exchanges and queues are durable unless
//! `durable = false`; everything else is off unless set. `declare = false` on any entity makes it
//! expected-only: checked, never created.
//!
//! | table | keys |
//! |---|---|
//! | `[connection]` | `url`, `heartbeat` (s), `frame_max` (bytes), `channel_buffer_size` ([`settings`]) |
//! | `[[exchanges]]` | `name`, `type`, `declare`, `durable`, `auto_delete`, `internal`, `alternate_exchange`, `arguments` |
//! | `[[queues]]` | `name`, `type`, `declare`, `durable`, `exclusive`, `auto_delete`, `dead_letter_exchange`, `dead_letter_routing_key`, `message_ttl` (ms), `expires` (ms), `max_length`, `max_length_bytes`, `overflow`, `single_active_consumer`, `delivery_limit`, `initial_group_size` (quorum replicas), `max_age`, `max_priority`, `arguments`, `retry` |
//! | `retry` of a queue (inline, or `[queues.retry]`) | `delays` (1 to 32 of `"500ms"`, `"10s"`, `"5m"`, `"1h"`), `park` (a queue; default `<queue>.parked`) |
//! | `[[bindings]]` | `source`, `queue` or `exchange`, `routing_key`, `arguments`, `declare` |
//!
//! `arguments` is a table sent as given: TOML strings become long strings, integers signed
//! 64-bit integers, floats doubles, booleans booleans, arrays arrays and tables tables. An
//! argument that has a key of its own (`x-max-priority`) must be set with that key.
//!
//! # Retries
//!
//! `retry` gives a queue a schedule of delayed retries ([`Retry`]), built from plain RabbitMQ
//! features, no plugin. After the queue, apply declares one queue per distinct delay,
//! `<queue>.retry.<delay>` ([`retry_queue_name`]), of the queue's type and durability, with
//! `x-message-ttl` set to the delay and dead-lettering back to the queue through the default
//! exchange; then the park queue, of the same type and durability, unless `[[queues]]` lists it
//! (that declaration is then used as written, e.g. with its own `message_ttl`). With
//! `declare = false` on the queue, they are expected only, like it.
//!
//! ```toml
//! [[queues]]
//! name = "payments.work"
//! type = "quorum"
//!
//! [queues.retry]                    # the same as retry = { delays = [...], park = "..." }
//! delays = ["500ms", "30s", "5m"]   # attempt 2 waits 500 ms, attempt 3 30 s, attempt 4 5 min
//! park = "payments.dead"            # after attempt 4; apply declares it, a quorum queue
//! ```
//!
//! adds `payments.work.retry.500ms`, `payments.work.retry.30s`, `payments.work.retry.5m` and
//! `payments.dead`. The worker reads the same names from [`Queue::retry_schedule`] (or
//! [`Topology::retry_schedule`]): a failed message is published to its next delay queue, waits
//! there, and comes back with an `x-death` header naming that queue.
//!
//! # Checking, applying, verifying
//!
//! [`Topology::load`] parses the file and runs every rule of [`validate`]; the
//! [`TopologyError`] lists every problem as `file:line:column: entity: message`. The
//! `[connection]` block's `url` is parsed when the settings are resolved
//! ([`ConnectionSettingsExt::resolve`]), where `SERENA_URL` may replace it; a bad one is
//! reported there with its place in the file.
//! [`TopologyExt::apply`] declares exchanges, then queues (each followed by the queues its retry
//! schedule adds), then bindings and reports each as created, already present or failed (with
//! the property that differs, for a 406). [`TopologyExt::verify`] checks with passive declares that
//! every exchange and queue exists, the added ones included.
//! Bindings cannot be checked over AMQP 0-9-1 without creating them, so verify lists them as
//! not checked.

//!
//! # Where it lives
//!
//! The model, the loader and the rules are the crate `serena-topology`, re-exported here:
//! `#[consumer]` loads the same file with the same code at compile time, so a topology that
//! builds is one the worker accepts. Applying, verifying and resolving the connection settings
//! ([`ConnectionSettingsExt`]) need a connection or the client's configuration, and are
//! serena's.

mod apply;
mod declare;
mod report;
pub mod settings;

pub use apply::TopologyExt;
pub use report::{
    ApplyReport, ApplyStatus, Difference, EntityReport, Failure, Report, Status, VerifyReport,
    VerifyStatus,
};
pub use serena_topology::validate;
pub use serena_topology::{
    Binding, ConnectionSettings, DelayText, Destination, Entity, EntityName, Exchange,
    ExchangeKind, GraphFormat, Location, MAX_RETRY_DELAY, Origin, Overflow, Problem, Queue,
    QueueType, Retry, RetrySchedule, RetryStep, STANDARD_EXCHANGES, Topology, TopologyError,
    parse_delay, retry_queue_name,
};
pub use settings::{ConnectionSettingsExt, DEFAULT_URL};
