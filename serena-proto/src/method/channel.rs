//! Class `channel` (20): open, flow control and close.

method! {
    /// Client opens a channel.
    Open = "channel.open" {
        reserved shortstr,
    }
}

method! {
    /// Server confirms the channel is open.
    OpenOk = "channel.open-ok" {
        reserved longstr,
    }
}

method! {
    /// Asks the peer to pause (`active = false`) or resume sending content.
    Flow = "channel.flow" {
        /// Whether content may flow.
        active: bit,
    }
}

method! {
    /// Confirms a flow request.
    FlowOk = "channel.flow-ok" {
        /// The flow state now in force.
        active: bit,
    }
}

method! {
    /// Either peer closes the channel, with the reason.
    Close = "channel.close" {
        /// Reply code (e.g. 404 not-found, 406 precondition-failed).
        reply_code: short,
        /// Human-readable reason.
        reply_text: shortstr,
        /// Class of the method that caused the close, or 0.
        class_id: short,
        /// Method that caused the close, or 0.
        method_id: short,
    }
}

method! {
    /// Confirms a channel close; the channel id is free again.
    CloseOk = "channel.close-ok" {}
}
