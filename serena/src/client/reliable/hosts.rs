//! Which broker of the host list a reliable publisher tries first on each (re)connection.
//!
//! ```text
//!   list (shuffled once with shuffle_hosts):  [a, b, c]
//!   connect: try from `first` round the list ─► reached = the one that answered
//!   lost with 320 CONNECTION_FORCED (node shutting down) ─► first = reached + 1
//!   lost any other way (socket, heartbeat, nack)         ─► first = reached
//!   rebalance                                            ─► first = random
//! ```
//!
//! A node that shuts down (`rabbitmqctl stop_app`, a rolling restart) closes its
//! connections with 320 and may still accept TCP for a moment; starting from the next
//! node keeps the publisher from reconnecting to a node on its way down, and keeps the
//! clients of a cluster from all piling onto the first node of their list.

use crate::config::Endpoint;
use crate::error::{Error, UnexpectedCloseError};

/// The host list and where the next connection starts in it.
#[derive(Debug, Clone)]
pub(crate) struct Hosts {
    endpoints: Vec<Endpoint>,
    /// Where the next connection attempt starts.
    first: usize,
    /// The broker of the live (or last) connection.
    reached: usize,
}

impl Hosts {
    /// A list of at least one broker.
    pub(crate) fn new(endpoints: Vec<Endpoint>) -> Self {
        Hosts {
            endpoints,
            first: 0,
            reached: 0,
        }
    }

    /// The brokers in the order the next connection tries them: from `first`, round the list.
    pub(crate) fn order(&self) -> Vec<Endpoint> {
        let n = self.endpoints.len();
        (0..n)
            .map(|i| self.endpoints[(self.first + i) % n].clone())
            .collect()
    }

    /// The connection reached the broker at `index` of [`order`](Self::order).
    pub(crate) fn reached(&mut self, index: usize) {
        self.reached = (self.first + index) % self.endpoints.len().max(1);
    }

    /// The connection was lost with `error`: a node shutting down sends us to the next one.
    pub(crate) fn lost(&mut self, error: &Error) {
        let n = self.endpoints.len().max(1);
        self.first = if is_forced(error) {
            (self.reached + 1) % n
        } else {
            self.reached
        };
    }

    /// The next connection starts from a random broker.
    pub(crate) fn rebalance(&mut self) {
        self.first = fastrand::usize(..self.endpoints.len().max(1));
    }

    /// How many brokers there are.
    pub(crate) fn len(&self) -> usize {
        self.endpoints.len()
    }
}

/// True for the connection close RabbitMQ sends when its node shuts down or an operator
/// closes the connection (320 CONNECTION_FORCED).
pub(crate) fn is_forced(error: &Error) -> bool {
    error.reply_code() == Some(UnexpectedCloseError::CONNECTION_FORCED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CloseScope;

    fn forced() -> Error {
        Error::UnexpectedClose(UnexpectedCloseError {
            scope: CloseScope::Connection,
            reply_code: 320,
            reply_text: "CONNECTION_FORCED - shutdown".into(),
            class_id: 0,
            method_id: 0,
        })
    }

    fn names(h: &Hosts) -> Vec<String> {
        h.order().iter().map(|e| e.host.clone()).collect()
    }

    fn three() -> Hosts {
        Hosts::new(vec![
            Endpoint::new("a", 1),
            Endpoint::new("b", 1),
            Endpoint::new("c", 1),
        ])
    }

    #[test]
    fn a_forced_close_starts_from_the_next_broker() {
        let mut h = three();
        assert_eq!(names(&h), ["a", "b", "c"]);
        h.reached(0);
        h.lost(&forced());
        assert_eq!(names(&h), ["b", "c", "a"]);
        // b was down: c answered (index 1 of that order); c shuts down: a is next.
        h.reached(1);
        h.lost(&forced());
        assert_eq!(names(&h), ["a", "b", "c"]);
    }

    #[test]
    fn other_losses_start_from_the_same_broker() {
        let mut h = three();
        h.reached(0);
        h.lost(&forced());
        h.reached(0);
        h.lost(&Error::Io(std::sync::Arc::new(std::io::Error::other(
            "cut",
        ))));
        assert_eq!(names(&h), ["b", "c", "a"]);
    }

    #[test]
    fn one_broker_is_always_first() {
        let mut h = Hosts::new(vec![Endpoint::new("only", 1)]);
        h.reached(0);
        h.lost(&forced());
        assert_eq!(names(&h), ["only"]);
        h.rebalance();
        assert_eq!(names(&h), ["only"]);
    }

    #[test]
    fn rebalancing_reaches_every_broker() {
        let mut h = three();
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..200 {
            h.rebalance();
            firsts.insert(names(&h)[0].clone());
        }
        assert_eq!(firsts.len(), 3, "{firsts:?}");
    }
}
