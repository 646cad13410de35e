//! Class `basic` (60): QoS, consumers, publishing, delivery, get, and acknowledgements.

method! {
    /// Sets the prefetch window.
    Qos = "basic.qos" {
        /// Prefetch window in bytes (0: no limit; RabbitMQ supports only 0).
        prefetch_size: long,
        /// Prefetch window in messages (0: no limit).
        prefetch_count: short,
        /// RabbitMQ: apply to the whole channel instead of each new consumer.
        global: bit,
    }
}

method! {
    /// Confirms QoS.
    QosOk = "basic.qos-ok" {}
}

method! {
    /// Starts a consumer on a queue.
    Consume = "basic.consume" {
        reserved short,
        /// Queue to consume from.
        queue: shortstr,
        /// Consumer tag; empty asks the server for one.
        consumer_tag: shortstr,
        /// Do not deliver messages published on this connection.
        no_local: bit,
        /// Deliveries need no acknowledgement.
        no_ack: bit,
        /// Only consumer of the queue.
        exclusive: bit,
        /// Do not answer with consume-ok.
        nowait: bit,
        /// Consumer arguments, e.g. `x-priority`.
        arguments: table,
    }
}

method! {
    /// Confirms a consumer with its tag.
    ConsumeOk = "basic.consume-ok" {
        /// The consumer's tag.
        consumer_tag: shortstr,
    }
}

method! {
    /// Ends a consumer. RabbitMQ also sends it to the client when the queue goes away.
    Cancel = "basic.cancel" {
        /// The consumer's tag.
        consumer_tag: shortstr,
        /// Do not answer with cancel-ok.
        nowait: bit,
    }
}

method! {
    /// Confirms a cancel.
    CancelOk = "basic.cancel-ok" {
        /// The cancelled consumer's tag.
        consumer_tag: shortstr,
    }
}

method! {
    /// Publishes a message; a content header and body frames follow.
    Publish = "basic.publish" {
        reserved short,
        /// Exchange to publish to; empty for the default exchange.
        exchange: shortstr,
        /// Routing key.
        routing_key: shortstr,
        /// Return the message if no queue takes it.
        mandatory: bit,
        /// Return the message if no consumer takes it at once (RabbitMQ refuses this with 540).
        immediate: bit,
    }
}

method! {
    /// Server returns an unroutable mandatory message; content follows.
    Return = "basic.return" {
        /// Why (312 no-route).
        reply_code: short,
        /// Human-readable reason.
        reply_text: shortstr,
        /// Exchange the message was published to.
        exchange: shortstr,
        /// Its routing key.
        routing_key: shortstr,
    }
}

method! {
    /// Server delivers a message to a consumer; content follows.
    Deliver = "basic.deliver" {
        /// The consumer's tag.
        consumer_tag: shortstr,
        /// Tag to acknowledge the delivery with.
        delivery_tag: longlong,
        /// The message was delivered before.
        redelivered: bit,
        /// Exchange it was published to.
        exchange: shortstr,
        /// Its routing key.
        routing_key: shortstr,
    }
}

method! {
    /// Fetches one message synchronously.
    Get = "basic.get" {
        reserved short,
        /// Queue to fetch from.
        queue: shortstr,
        /// The message needs no acknowledgement.
        no_ack: bit,
    }
}

method! {
    /// Answers `get` with a message; content follows.
    GetOk = "basic.get-ok" {
        /// Tag to acknowledge the message with.
        delivery_tag: longlong,
        /// The message was delivered before.
        redelivered: bit,
        /// Exchange it was published to.
        exchange: shortstr,
        /// Its routing key.
        routing_key: shortstr,
        /// Messages still ready in the queue.
        message_count: long,
    }
}

method! {
    /// Answers `get` when the queue is empty.
    GetEmpty = "basic.get-empty" {
        reserved shortstr,
    }
}

method! {
    /// Acknowledges one delivery, or all up to the tag (`multiple`). From the server under
    /// publisher confirms, it confirms publishes.
    Ack = "basic.ack" {
        /// Delivery tag (or publish sequence number).
        delivery_tag: longlong,
        /// Also every earlier unacknowledged tag.
        multiple: bit,
    }
}

method! {
    /// Rejects one delivery.
    Reject = "basic.reject" {
        /// Delivery tag.
        delivery_tag: longlong,
        /// Put the message back in the queue; otherwise drop or dead-letter it.
        requeue: bit,
    }
}

method! {
    /// Asks the server to redeliver unacknowledged messages, without a reply (deprecated).
    RecoverAsync = "basic.recover-async" {
        /// Requeue rather than redeliver to the same consumer.
        requeue: bit,
    }
}

method! {
    /// Asks the server to redeliver unacknowledged messages.
    Recover = "basic.recover" {
        /// Requeue rather than redeliver to the same consumer.
        requeue: bit,
    }
}

method! {
    /// Confirms a recover.
    RecoverOk = "basic.recover-ok" {}
}

method! {
    /// RabbitMQ: rejects one delivery or many. From the server under publisher confirms, the
    /// broker could not take the publishes.
    Nack = "basic.nack" {
        /// Delivery tag (or publish sequence number).
        delivery_tag: longlong,
        /// Also every earlier unacknowledged tag.
        multiple: bit,
        /// Put the messages back in the queue.
        requeue: bit,
    }
}
