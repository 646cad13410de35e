//! Class `queue` (50): declare, bind, unbind, purge and delete.

method! {
    /// Creates a queue, or checks it exists (`passive`). An empty name asks the server to name it.
    Declare = "queue.declare" {
        reserved short,
        /// Queue name; empty for a server-named queue.
        queue: shortstr,
        /// Only check that the queue exists.
        passive: bit,
        /// Survive a broker restart.
        durable: bit,
        /// Used by this connection only, deleted when it closes.
        exclusive: bit,
        /// Delete when the last consumer goes.
        auto_delete: bit,
        /// Do not answer with declare-ok.
        nowait: bit,
        /// Queue arguments: `x-queue-type`, `x-message-ttl`, ...
        arguments: table,
    }
}

method! {
    /// Confirms a declare with the queue's name and counts.
    DeclareOk = "queue.declare-ok" {
        /// The queue's name (the generated one for a server-named queue).
        queue: shortstr,
        /// Messages ready in the queue.
        message_count: long,
        /// Consumers on the queue.
        consumer_count: long,
    }
}

method! {
    /// Binds a queue to an exchange.
    Bind = "queue.bind" {
        reserved short,
        /// Queue name.
        queue: shortstr,
        /// Exchange name.
        exchange: shortstr,
        /// Binding key.
        routing_key: shortstr,
        /// Do not answer with bind-ok.
        nowait: bit,
        /// Binding arguments (headers match).
        arguments: table,
    }
}

method! {
    /// Confirms a bind.
    BindOk = "queue.bind-ok" {}
}

method! {
    /// Removes a queue binding.
    Unbind = "queue.unbind" {
        reserved short,
        /// Queue name.
        queue: shortstr,
        /// Exchange name.
        exchange: shortstr,
        /// Binding key.
        routing_key: shortstr,
        /// Binding arguments.
        arguments: table,
    }
}

method! {
    /// Confirms an unbind.
    UnbindOk = "queue.unbind-ok" {}
}

method! {
    /// Removes every ready message from a queue.
    Purge = "queue.purge" {
        reserved short,
        /// Queue name.
        queue: shortstr,
        /// Do not answer with purge-ok.
        nowait: bit,
    }
}

method! {
    /// Confirms a purge.
    PurgeOk = "queue.purge-ok" {
        /// Messages removed.
        message_count: long,
    }
}

method! {
    /// Deletes a queue.
    Delete = "queue.delete" {
        reserved short,
        /// Queue name.
        queue: shortstr,
        /// Only delete if it has no consumers.
        if_unused: bit,
        /// Only delete if it holds no messages.
        if_empty: bit,
        /// Do not answer with delete-ok.
        nowait: bit,
    }
}

method! {
    /// Confirms a delete.
    DeleteOk = "queue.delete-ok" {
        /// Messages deleted with the queue.
        message_count: long,
    }
}
