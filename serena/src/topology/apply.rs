//! Applying a topology to a broker, and verifying it there.
//!
//! ```text
//!   apply:  exchanges -> queues -> bindings, each exchange or queue:
//!           passive declare --exists--> declare with our properties --ok--> Present
//!                 |                                   \--406--> Failed(difference)
//!                 \--404--> (new channel) declare --ok--> Created, else Failed
//!   verify: passive declare of every exchange and queue: Present or Missing; bindings Unchecked
//! ```
//!
//! The queues a `retry` schedule adds (its delay queues and, unless listed, its park queue)
//! come right after their work queue, in both, and are reported like any other queue.
//!
//! A 404 or 406 closes the channel, so each failure is followed by a fresh channel and the rest
//! is still applied. An error that closes the connection (an unknown exchange type is a 503)
//! leaves the remaining entities failed with that error.

use serena_topology::{Destination, Exchange, Queue, Topology};

use super::declare::{exchange_options, queue_options};
use super::report::{ApplyReport, ApplyStatus, EntityReport, Failure, VerifyReport, VerifyStatus};
use crate::UnexpectedCloseError;
use crate::client::{Channel, Connection};
use crate::error::Result;

/// A channel that is replaced after the server closes it.
struct Session<'c> {
    conn: &'c Connection,
    channel: Option<Channel>,
}

impl Session<'_> {
    async fn channel(&mut self) -> Result<Channel> {
        if let Some(ch) = &self.channel
            && ch.is_open()
        {
            return Ok(ch.clone());
        }
        if let Some(e) = self.conn.error() {
            return Err(e);
        }
        let ch = self.conn.channel().await?;
        self.channel = Some(ch.clone());
        Ok(ch)
    }

    async fn close(self) {
        if let Some(ch) = self.channel {
            let _ = ch.close().await;
        }
    }

    async fn exchange_exists(&mut self, x: &Exchange) -> Result<bool> {
        let ch = self.channel().await?;
        absent_on_404(
            ch.exchange_declare(&x.name, x.kind.as_str(), exchange_options(x, true))
                .await,
        )
    }

    async fn queue_exists(&mut self, q: &Queue) -> Result<bool> {
        let ch = self.channel().await?;
        // An exclusive queue of another connection answers 405: it exists.
        match ch.queue_declare(&q.name, queue_options(q, true)).await {
            Err(e) if e.reply_code() == Some(UnexpectedCloseError::RESOURCE_LOCKED) => Ok(true),
            other => absent_on_404(other),
        }
    }

    async fn apply_exchange(&mut self, x: &Exchange) -> ApplyStatus {
        let existed = match self.exchange_exists(x).await {
            Ok(existed) => existed,
            Err(e) => return ApplyStatus::Failed(Failure::new(e)),
        };
        if !x.declare {
            return if existed {
                ApplyStatus::Present
            } else {
                ApplyStatus::Missing
            };
        }
        let declared = match self.channel().await {
            Ok(ch) => {
                ch.exchange_declare(&x.name, x.kind.as_str(), exchange_options(x, false))
                    .await
            }
            Err(e) => Err(e),
        };
        status(existed, declared)
    }

    async fn apply_queue(&mut self, q: &Queue) -> ApplyStatus {
        let existed = match self.queue_exists(q).await {
            Ok(existed) => existed,
            Err(e) => return ApplyStatus::Failed(Failure::new(e)),
        };
        if !q.declare {
            return if existed {
                ApplyStatus::Present
            } else {
                ApplyStatus::Missing
            };
        }
        let declared = match self.channel().await {
            Ok(ch) => ch
                .queue_declare(&q.name, queue_options(q, false))
                .await
                .map(drop),
            Err(e) => Err(e),
        };
        status(existed, declared)
    }
}

fn absent_on_404<T>(r: Result<T>) -> Result<bool> {
    match r {
        Ok(_) => Ok(true),
        Err(e) if e.reply_code() == Some(UnexpectedCloseError::NOT_FOUND) => Ok(false),
        Err(e) => Err(e),
    }
}

fn status(existed: bool, declared: Result<()>) -> ApplyStatus {
    match declared {
        Ok(()) if existed => ApplyStatus::Present,
        Ok(()) => ApplyStatus::Created,
        Err(e) => ApplyStatus::Failed(Failure::new(e)),
    }
}

fn verify_status(r: Result<bool>) -> VerifyStatus {
    match r {
        Ok(true) => VerifyStatus::Present,
        Ok(false) => VerifyStatus::Missing,
        Err(e) => VerifyStatus::Failed(Failure::new(e)),
    }
}

/// Applying a [`Topology`] to a broker and verifying it there: the part of a topology that
/// needs a connection. Bring it into scope to call `topology.apply(&conn)` and
/// `topology.verify(&conn)`.
pub trait TopologyExt {
    /// Declares the exchanges, then the queues, then the bindings, on channels of `conn`. A
    /// queue with [`retry`](Queue::retry) is followed by the queues its schedule adds
    /// ([`Topology::retry_queues`]).
    ///
    /// Every exchange and queue is first checked with a passive declare, which tells
    /// [`Created`](ApplyStatus::Created) from [`Present`](ApplyStatus::Present); one that
    /// exists is redeclared with the topology's properties, so a difference shows up as a
    /// [`Failed`](ApplyStatus::Failed) entity whose [`Failure::difference`] names the property
    /// (RabbitMQ answers 406 PRECONDITION_FAILED and closes the channel; serena opens a new one
    /// and goes on). `declare = false` entities are only checked. Applying twice changes
    /// nothing.
    ///
    /// The report lists every entity; check [`ApplyReport::is_ok`]. The topology is not
    /// validated here: load it with [`Topology::load`] or call [`Topology::validate`] first.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use serena::Connection;
    /// use serena::topology::{ConnectionSettingsExt, Topology, TopologyExt};
    ///
    /// let topology = Topology::load("topology.toml")?;
    /// let conn = Connection::open(&topology.connection.resolve()?).await?;
    /// let report = topology.apply(&conn).await;
    /// conn.close().await?;
    /// println!("{report}");
    /// assert!(report.is_ok());
    /// # Ok(()) }
    /// ```
    ///
    /// Inside [`open_connection`](crate::open_connection) an error that closes the connection
    /// cancels the scope, report and all; with a plain [`Connection`] as here, apply still
    /// returns the report, with the rest of the entities failed.
    fn apply(&self, conn: &Connection) -> impl Future<Output = ApplyReport> + Send;

    /// Checks, with passive declares only, that every exchange and queue exists, the queues
    /// retry schedules add included; it never changes the broker.
    ///
    /// Passive declares check existence, not properties: a queue declared with other arguments
    /// counts as present (apply reports such a difference). Bindings are listed as
    /// [`Unchecked`](VerifyStatus::Unchecked): AMQP 0-9-1 has no passive bind, and binding to
    /// find out would change the broker.
    fn verify(&self, conn: &Connection) -> impl Future<Output = VerifyReport> + Send;
}

impl TopologyExt for Topology {
    async fn apply(&self, conn: &Connection) -> ApplyReport {
        let mut session = Session {
            conn,
            channel: None,
        };
        let mut report = ApplyReport::default();
        for (i, x) in self.exchanges.iter().enumerate() {
            let status = session.apply_exchange(x).await;
            report.entries.push(EntityReport {
                entity: x.entity(i),
                status,
            });
        }
        for (entity, q) in self.queue_plan() {
            let status = session.apply_queue(&q).await;
            report.entries.push(EntityReport { entity, status });
        }
        for (i, b) in self.bindings.iter().enumerate() {
            let status = if b.declare {
                let bound = match session.channel().await {
                    Ok(ch) => match &b.destination {
                        Destination::Queue(q) => {
                            ch.queue_bind(q, &b.source, &b.routing_key, b.arguments.clone())
                                .await
                        }
                        Destination::Exchange(x) => {
                            ch.exchange_bind(x, &b.source, &b.routing_key, b.arguments.clone())
                                .await
                        }
                    },
                    Err(e) => Err(e),
                };
                match bound {
                    Ok(()) => ApplyStatus::Bound,
                    Err(e) => ApplyStatus::Failed(Failure::new(e)),
                }
            } else {
                ApplyStatus::Unchecked
            };
            report.entries.push(EntityReport {
                entity: b.entity(i),
                status,
            });
        }
        session.close().await;
        report
    }

    async fn verify(&self, conn: &Connection) -> VerifyReport {
        let mut session = Session {
            conn,
            channel: None,
        };
        let mut report = VerifyReport::default();
        for (i, x) in self.exchanges.iter().enumerate() {
            let status = verify_status(session.exchange_exists(x).await);
            report.entries.push(EntityReport {
                entity: x.entity(i),
                status,
            });
        }
        for (entity, q) in self.queue_plan() {
            let status = verify_status(session.queue_exists(&q).await);
            report.entries.push(EntityReport { entity, status });
        }
        for (i, b) in self.bindings.iter().enumerate() {
            report.entries.push(EntityReport {
                entity: b.entity(i),
                status: VerifyStatus::Unchecked,
            });
        }
        session.close().await;
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{CloseScope, Error};

    fn close(code: u16, text: &str) -> Error {
        Error::UnexpectedClose(UnexpectedCloseError {
            scope: CloseScope::Channel(1),
            reply_code: code,
            reply_text: text.into(),
            class_id: 50,
            method_id: 10,
        })
    }

    #[test]
    fn not_found_means_absent_and_other_errors_stay() {
        assert!(!absent_on_404::<()>(Err(close(404, "NOT_FOUND - no queue 'q'"))).unwrap());
        assert!(absent_on_404(Ok(())).unwrap());
        assert!(absent_on_404::<()>(Err(close(403, "ACCESS_REFUSED"))).is_err());
    }

    #[test]
    fn a_406_on_redeclare_names_the_difference() {
        let st = status(
            true,
            Err(close(
                406,
                "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': \
                 received 'false' but current is 'true'",
            )),
        );
        let ApplyStatus::Failed(f) = &st else {
            panic!("{st:?}")
        };
        assert_eq!(f.difference.as_ref().unwrap().property, "durable");
        assert!(st.to_string().starts_with(
            "failed: durable differs: the topology has false, the broker has true; change the \
             topology to match"
        ));
        assert!(matches!(status(false, Ok(())), ApplyStatus::Created));
        assert!(matches!(status(true, Ok(())), ApplyStatus::Present));
    }
}
