//! Class `confirm` (85, RabbitMQ extension): publisher confirms.

method! {
    /// Puts the channel in confirm mode: every publish is acked or nacked by the server.
    Select = "confirm.select" {
        /// Do not answer with select-ok.
        nowait: bit,
    }
}

method! {
    /// Confirms confirm mode.
    SelectOk = "confirm.select-ok" {}
}
