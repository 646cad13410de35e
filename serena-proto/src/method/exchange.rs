//! Class `exchange` (40): declare, delete, and RabbitMQ's exchange-to-exchange bindings.

method! {
    /// Creates an exchange, or checks it exists (`passive`).
    Declare = "exchange.declare" {
        reserved short,
        /// Exchange name.
        exchange: shortstr,
        /// Exchange type: `direct`, `fanout`, `topic`, `headers` or a plugin type.
        kind: shortstr,
        /// Only check that the exchange exists.
        passive: bit,
        /// Survive a broker restart.
        durable: bit,
        /// Delete when the last binding is removed.
        auto_delete: bit,
        /// Publishers may not publish to it directly.
        internal: bit,
        /// Do not answer with declare-ok.
        nowait: bit,
        /// Extra arguments, e.g. `alternate-exchange`.
        arguments: table,
    }
}

method! {
    /// Confirms a declare.
    DeclareOk = "exchange.declare-ok" {}
}

method! {
    /// Deletes an exchange.
    Delete = "exchange.delete" {
        reserved short,
        /// Exchange name.
        exchange: shortstr,
        /// Only delete if it has no bindings.
        if_unused: bit,
        /// Do not answer with delete-ok.
        nowait: bit,
    }
}

method! {
    /// Confirms a delete.
    DeleteOk = "exchange.delete-ok" {}
}

method! {
    /// Binds exchange `destination` to exchange `source` (RabbitMQ extension).
    Bind = "exchange.bind" {
        reserved short,
        /// Exchange that receives the messages.
        destination: shortstr,
        /// Exchange the messages come from.
        source: shortstr,
        /// Binding key.
        routing_key: shortstr,
        /// Do not answer with bind-ok.
        nowait: bit,
        /// Binding arguments (headers match).
        arguments: table,
    }
}

method! {
    /// Confirms an exchange bind.
    BindOk = "exchange.bind-ok" {}
}

method! {
    /// Removes an exchange-to-exchange binding (RabbitMQ extension).
    Unbind = "exchange.unbind" {
        reserved short,
        /// Exchange that received the messages.
        destination: shortstr,
        /// Exchange the messages came from.
        source: shortstr,
        /// Binding key.
        routing_key: shortstr,
        /// Do not answer with unbind-ok.
        nowait: bit,
        /// Binding arguments.
        arguments: table,
    }
}

method! {
    /// Confirms an exchange unbind.
    UnbindOk = "exchange.unbind-ok" {}
}
