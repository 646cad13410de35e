//! What a restart can fix: the phases of a life of the worker tree, the error that ends one,
//! and [`is_permanent`], which judges it (its docs have the table).

use std::fmt;

use crate::error::{CloseScope, Error, TlsError, UnexpectedCloseError};

/// Where in one life of the worker tree an error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Connecting: TCP, TLS, the AMQP handshake.
    Connect,
    /// The setup steps (applying the topology) and the publishers' channels.
    Setup,
    /// Opening each consumer's channel, its QoS and its `basic.consume`.
    StartConsumers,
    /// After every consumer started: consuming and handling.
    Running,
}

impl Phase {
    /// True before the tree is up: connecting, setting up or starting consumers.
    pub fn is_startup(self) -> bool {
        self != Phase::Running
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Connect => "connecting",
            Phase::Setup => "setting up",
            Phase::StartConsumers => "starting consumers",
            Phase::Running => "running",
        })
    }
}

/// An error that ended one life of the worker tree, with the phase it happened in.
#[derive(Debug, Clone, thiserror::Error)]
#[error("while {phase}: {error}")]
pub struct TreeError {
    /// Where it happened.
    pub phase: Phase,
    /// What happened.
    #[source]
    pub error: Error,
}

impl TreeError {
    /// `error` in `phase`.
    pub fn new(phase: Phase, error: Error) -> Self {
        TreeError { phase, error }
    }

    /// True when a restart cannot fix it: see [`is_permanent`].
    pub fn is_permanent(&self) -> bool {
        is_permanent(self.phase, &self.error)
    }
}

/// True for an error that a restart cannot fix, given the phase it happened in. Every error
/// that ends a life of the worker tree is judged by what it is and by where in that life it
/// happened ([`Phase`]):
///
/// | error                                                       | connect | setup   | start consumers | running |
/// |-------------------------------------------------------------|---------|---------|-----------------|---------|
/// | connection refused: 403 (credentials), 530 (virtual host)   | stop    | stop    | stop            | restart |
/// | TLS: certificate refused, unusable CA or key file, bad name | stop    | –       | –               | –       |
/// | TLS alert or failed handshake (the other side may change)   | restart | –       | –               | –       |
/// | no common SASL mechanism, no publisher confirms             | stop    | –       | –               | –       |
/// | configuration ([`Config`]), encoding ([`Encode`], [`Json`]) | stop    | stop    | stop            | restart |
/// | channel 403 (permissions), 404 (missing), 406 (mismatch)    | –       | stop    | stop            | restart |
/// | channel 403 "in exclusive use", exclusive consumer          | –       | –       | standby         | –       |
/// | connection 503 / 540 caused by one of our declarations      | –       | stop    | stop            | restart |
/// | `declare = false` entity missing ([`MissingEntity`])        | –       | stop    | –               | –       |
/// | 406 unknown delivery tag, 406 delivery-ack timeout          | –       | –       | –               | restart |
/// | consumer cancelled by the server (its queue was deleted)    | –       | –       | –               | restart |
/// | a consume loop panicked ([`TaskFailed`])                    | –       | –       | –               | restart |
/// | I/O, timeouts, heartbeat loss, 320 forced close, 405, ...   | restart | restart | restart         | restart |
///
/// (– : does not happen in that phase.) At startup, the broker refusing what the worker asks
/// for is deterministic: the same request after a restart meets the same refusal, so the
/// supervisor stops and says why. While running, nothing stops it: the broker requeues every
/// unacknowledged message when a channel or the connection goes, so a restart of the whole
/// tree loses nothing, and a cause that does not go away (a deleted queue nothing declares
/// again, revoked permissions) is met again by the restart's own startup, which stops with
/// that error. Restarting the whole tree rather than only the failed consumer's channel keeps
/// one recovery path, the one the forced-close and cluster tests exercise.
///
/// The exclusive standby is the one case of a refusal at startup that is not an error: see
/// [`is_exclusive_use`].
///
/// [`Config`]: crate::Error::Config
/// [`Encode`]: crate::Error::Encode
/// [`Json`]: crate::Error::Json
/// [`MissingEntity`]: crate::Error::MissingEntity
/// [`TaskFailed`]: crate::Error::TaskFailed
pub fn is_permanent(phase: Phase, error: &Error) -> bool {
    if !phase.is_startup() {
        return false;
    }
    match error {
        Error::UnexpectedClose(close) => refused_at_startup(close),
        Error::ConfirmsNotSupported
        | Error::NoCommonMechanism { .. }
        | Error::Config(_)
        | Error::Encode(_)
        | Error::Json(_)
        | Error::MissingEntity(_) => true,
        Error::Tls(tls) => !matches!(tls, TlsError::AlertReceived(_) | TlsError::Handshake(_)),
        // Every broker of the list refused for good.
        Error::AllHostsFailed(attempts) => attempts
            .iter()
            .all(|a| is_permanent(Phase::Connect, &a.error)),
        _ => false,
    }
}

/// The broker refused, for good, something the worker asks for on every start.
fn refused_at_startup(close: &UnexpectedCloseError) -> bool {
    match close.scope {
        // 403: the login was refused (RabbitMQ: "ACCESS_REFUSED - Login was refused using
        // authentication mechanism PLAIN", class 0); 530: the virtual host ("NOT_ALLOWED -
        // vhost x not found", on connection.open). 503 and 540 close the connection when a
        // declaration asks for what the broker cannot do (an exchange type of a plugin that
        // is not enabled, say): only when a method of ours caused them.
        CloseScope::Connection => match close.reply_code {
            UnexpectedCloseError::ACCESS_REFUSED | UnexpectedCloseError::NOT_ALLOWED => true,
            503 | UnexpectedCloseError::NOT_IMPLEMENTED => close.class_id != 0,
            _ => false,
        },
        // 403 permissions, 404 a missing queue or exchange, 406 a declaration that differs
        // from what exists. The exclusive standby is handled before it reaches here.
        CloseScope::Channel(_) => {
            matches!(
                close.reply_code,
                UnexpectedCloseError::ACCESS_REFUSED
                    | UnexpectedCloseError::NOT_FOUND
                    | UnexpectedCloseError::PRECONDITION_FAILED
            ) && !is_exclusive_use(&Error::UnexpectedClose(close.clone()))
        }
    }
}

/// True when `basic.consume` was refused because another consumer holds the queue
/// exclusively, or because we asked for exclusive use of a queue that has consumers.
///
/// RabbitMQ (seen with 3.10) closes the channel with 403 and the same text in all three
/// cases: an exclusive consume while another connection's exclusive consumer holds the
/// queue, a plain consume in that situation, and an exclusive consume of a queue that has
/// plain consumers: `ACCESS_REFUSED - queue 'q' in vhost '/' in exclusive use`, blaming
/// `basic.consume` (class 60, method 20). A missing permission is also a 403 on the same
/// method, so the text is what tells them apart.
pub fn is_exclusive_use(error: &Error) -> bool {
    const BASIC_CONSUME: (u16, u16) = (60, 20);
    error.unexpected_close().is_some_and(|c| {
        matches!(c.scope, CloseScope::Channel(_))
            && c.reply_code == UnexpectedCloseError::ACCESS_REFUSED
            && (c.class_id, c.method_id) == BASIC_CONSUME
            && c.reply_text.ends_with("in exclusive use")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{CertificateProblem, ConnectAttempt};

    const STARTUP: [Phase; 3] = [Phase::Connect, Phase::Setup, Phase::StartConsumers];

    fn close(scope: CloseScope, code: u16, text: &str, method: (u16, u16)) -> Error {
        Error::UnexpectedClose(UnexpectedCloseError {
            scope,
            reply_code: code,
            reply_text: text.into(),
            class_id: method.0,
            method_id: method.1,
        })
    }

    /// The replies RabbitMQ 3.10.8 gave in each situation, word for word (seen against the
    /// broker), except the ack timeout's, whose text is RabbitMQ's documented one.
    fn bad_login() -> Error {
        close(
            CloseScope::Connection,
            403,
            "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. \
             For details see the broker logfile.",
            (0, 0),
        )
    }

    fn unknown_vhost() -> Error {
        close(
            CloseScope::Connection,
            530,
            "NOT_ALLOWED - vhost nope not found",
            (10, 40),
        )
    }

    fn exclusive_use() -> Error {
        close(
            CloseScope::Channel(1),
            403,
            "ACCESS_REFUSED - queue 'q' in vhost '/' in exclusive use",
            (60, 20),
        )
    }

    fn unknown_tag() -> Error {
        close(
            CloseScope::Channel(2),
            406,
            "PRECONDITION_FAILED - unknown delivery tag 1",
            (60, 80),
        )
    }

    fn ack_timeout() -> Error {
        close(
            CloseScope::Channel(1),
            406,
            "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. \
             Timeout value used: 1800000 ms. This timeout value can be configured, see \
             consumers doc guide to learn more",
            (0, 0),
        )
    }

    fn queue_missing() -> Error {
        close(
            CloseScope::Channel(3),
            404,
            "NOT_FOUND - no queue 'q' in vhost '/'",
            (60, 20),
        )
    }

    fn inequivalent() -> Error {
        close(
            CloseScope::Channel(1),
            406,
            "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': \
             received 'false' but current is 'true'",
            (50, 10),
        )
    }

    fn forced() -> Error {
        close(
            CloseScope::Connection,
            320,
            "CONNECTION_FORCED - Closed via management plugin",
            (0, 0),
        )
    }

    fn refused_socket() -> Error {
        Error::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
    }

    fn attempt(error: Error) -> ConnectAttempt {
        ConnectAttempt {
            endpoint: "h:5672".into(),
            error,
        }
    }

    #[test]
    fn connection_refusals_stop_at_startup() {
        for phase in STARTUP {
            assert!(is_permanent(phase, &bad_login()), "{phase}");
            assert!(is_permanent(phase, &unknown_vhost()), "{phase}");
        }
        assert!(is_permanent(Phase::Connect, &Error::ConfirmsNotSupported));
        assert!(is_permanent(
            Phase::Connect,
            &Error::NoCommonMechanism {
                offered: "AMQPLAIN".into()
            }
        ));
        assert!(is_permanent(
            Phase::Connect,
            &Error::Config("bad port in AMQP URI".into())
        ));
    }

    #[test]
    fn topology_mismatches_stop_at_startup() {
        for phase in [Phase::Setup, Phase::StartConsumers] {
            assert!(is_permanent(phase, &inequivalent()), "{phase}");
            assert!(is_permanent(phase, &queue_missing()), "{phase}");
        }
        let missing = Error::MissingEntity(Box::new(crate::topology::Entity::Queue(
            crate::topology::EntityName::Named("q".into()),
        )));
        assert!(is_permanent(Phase::Setup, &missing));
        let unknown_type = close(
            CloseScope::Connection,
            503,
            "COMMAND_INVALID - unknown exchange type 'x-delayed-message'",
            (40, 10),
        );
        assert!(is_permanent(Phase::Setup, &unknown_type));
        // A 503 the broker sends on its own (no method blamed) is not ours to fix.
        let unprompted = close(CloseScope::Connection, 503, "COMMAND_INVALID", (0, 0));
        assert!(!is_permanent(Phase::Setup, &unprompted));
    }

    #[test]
    fn channel_errors_of_a_running_consumer_restart() {
        for error in [
            unknown_tag(),
            ack_timeout(),
            queue_missing(),
            inequivalent(),
            exclusive_use(),
            Error::ConsumerCancelled("serena.1.1".into()),
            Error::TaskFailed {
                task: "the consume loop of consumer \"q\"".into(),
                panicked: true,
                message: Some("bug".into()),
            },
        ] {
            assert!(!is_permanent(Phase::Running, &error), "{error}");
        }
        // Even a refusal: the restart's own startup meets it again, and stops then.
        assert!(!is_permanent(Phase::Running, &bad_login()));
    }

    #[test]
    fn what_comes_and_goes_restarts_in_every_phase() {
        for phase in [
            Phase::Connect,
            Phase::Setup,
            Phase::StartConsumers,
            Phase::Running,
        ] {
            for error in [
                refused_socket(),
                forced(),
                Error::HeartbeatTimeout(std::time::Duration::from_secs(60)),
                Error::Closed("connection"),
                close(
                    CloseScope::Channel(1),
                    405,
                    "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'q'",
                    (50, 10),
                ),
            ] {
                assert!(!is_permanent(phase, &error), "{phase}: {error}");
            }
        }
    }

    #[test]
    fn the_exclusive_use_refusal_is_told_apart_from_a_missing_permission() {
        assert!(is_exclusive_use(&exclusive_use()));
        assert!(!is_permanent(Phase::StartConsumers, &exclusive_use()));
        let no_read_permission = close(
            CloseScope::Channel(1),
            403,
            "ACCESS_REFUSED - access to queue 'q' in vhost '/' refused for user 'u'",
            (60, 20),
        );
        assert!(!is_exclusive_use(&no_read_permission));
        assert!(is_permanent(Phase::StartConsumers, &no_read_permission));
        assert!(!is_exclusive_use(&bad_login()));
        assert!(!is_exclusive_use(&unknown_tag()));
    }

    #[test]
    fn a_host_list_is_given_up_only_when_every_broker_refused_for_good() {
        let all_refused = Error::AllHostsFailed(vec![attempt(bad_login()), attempt(bad_login())]);
        assert!(is_permanent(Phase::Connect, &all_refused));
        let one_unreachable =
            Error::AllHostsFailed(vec![attempt(bad_login()), attempt(refused_socket())]);
        assert!(!is_permanent(Phase::Connect, &one_unreachable));
    }

    #[test]
    fn a_refused_certificate_is_permanent_and_an_alert_is_not() {
        assert!(is_permanent(
            Phase::Connect,
            &Error::Tls(TlsError::InvalidCertificate {
                problem: CertificateProblem::UnknownIssuer,
                detail: "UnknownIssuer".into(),
            })
        ));
        assert!(is_permanent(
            Phase::Connect,
            &Error::Tls(TlsError::NotCompiled)
        ));
        assert!(!is_permanent(
            Phase::Connect,
            &Error::Tls(TlsError::AlertReceived("InternalError".into()))
        ));
    }

    #[test]
    fn a_tree_error_names_its_phase() {
        let e = TreeError::new(Phase::StartConsumers, queue_missing());
        assert!(e.is_permanent());
        assert_eq!(
            e.to_string(),
            "while starting consumers: server closed channel 3: 404 NOT_FOUND - no queue 'q' \
             in vhost '/' (caused by method 60.20)"
        );
        assert!(!TreeError::new(Phase::Running, queue_missing()).is_permanent());
    }
}
