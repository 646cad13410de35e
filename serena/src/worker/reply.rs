//! Sending a handler's reply ([`Outcome::Reply`]) before its request is acknowledged.

use bytes::Bytes;

use super::handler::{Outcome, Publisher};
use crate::client::Delivery;
use crate::error::Error;
use crate::proto::BasicProperties;

/// What became of a reply.
#[derive(Debug)]
pub(super) enum Answered {
    /// Published and confirmed by the broker.
    Sent,
    /// The request had no `reply_to`: nothing was sent.
    NoReplyTo,
    /// It could not be published.
    Failed(Error),
}

impl Answered {
    /// What to do with the request now: acknowledge it, unless the reply could not be
    /// published, which puts the request back to be answered again.
    pub(super) fn outcome(&self) -> Outcome {
        match self {
            Answered::Sent | Answered::NoReplyTo => Outcome::Ack,
            Answered::Failed(_) => Outcome::Requeue,
        }
    }
}

/// Publishes `body` (JSON) as the reply to `request` and waits for its confirm; logs what
/// could not be done.
pub(super) async fn answer(publisher: &Publisher, request: &Delivery, body: Bytes) -> Answered {
    let properties = BasicProperties::default().with_content_type("application/json");
    let answered = match publisher.reply(request, body, properties).await {
        Ok(true) => Answered::Sent,
        Ok(false) => Answered::NoReplyTo,
        Err(e) => Answered::Failed(e),
    };
    let correlation_id = request.properties.correlation_id.as_deref();
    match &answered {
        Answered::Sent => {
            tracing::trace!(correlation_id, "reply sent");
        }
        Answered::NoReplyTo => tracing::warn!(
            delivery_tag = request.delivery_tag,
            correlation_id,
            "the handler replied, but the request has no reply_to; reply dropped"
        ),
        Answered::Failed(error) => tracing::error!(
            reply_to = request.properties.reply_to.as_deref(),
            correlation_id,
            %error,
            "could not send the reply; request requeued to be answered again"
        ),
    }
    answered
}
