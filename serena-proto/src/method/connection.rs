//! Class `connection` (10): handshake, tuning, close, and RabbitMQ's blocked / update-secret.

method! {
    /// Server opens the handshake: its version, properties and SASL mechanisms.
    Start = "connection.start" {
        /// Protocol major version (0).
        version_major: octet,
        /// Protocol minor version (9).
        version_minor: octet,
        /// Server properties: product, version, capabilities, ...
        server_properties: table,
        /// Space-separated SASL mechanisms, e.g. `PLAIN AMQPLAIN`.
        mechanisms: longstr,
        /// Space-separated message locales, e.g. `en_US`.
        locales: longstr,
    }
}

method! {
    /// Client answers `start`: its properties, the chosen mechanism and its response.
    StartOk = "connection.start-ok" {
        /// Client properties: product, version, capabilities, connection_name, ...
        client_properties: table,
        /// Chosen SASL mechanism.
        mechanism: shortstr,
        /// SASL response (for PLAIN: `\0user\0password`).
        response: longstr,
        /// Chosen locale.
        locale: shortstr,
    }
}

method! {
    /// Server sends a SASL challenge.
    Secure = "connection.secure" {
        /// Challenge data.
        challenge: longstr,
    }
}

method! {
    /// Client answers a SASL challenge.
    SecureOk = "connection.secure-ok" {
        /// Response data.
        response: longstr,
    }
}

method! {
    /// Server proposes limits.
    Tune = "connection.tune" {
        /// Highest channel number the server allows (0: no limit).
        channel_max: short,
        /// Largest frame the server accepts, in bytes (0: no limit).
        frame_max: long,
        /// Heartbeat interval the server wants, in seconds (0: none).
        heartbeat: short,
    }
}

method! {
    /// Client settles the limits.
    TuneOk = "connection.tune-ok" {
        /// Negotiated channel maximum.
        channel_max: short,
        /// Negotiated frame maximum.
        frame_max: long,
        /// Negotiated heartbeat interval, in seconds.
        heartbeat: short,
    }
}

method! {
    /// Client opens a virtual host.
    Open = "connection.open" {
        /// Virtual host name.
        virtual_host: shortstr,
        reserved shortstr,
        reserved bit,
    }
}

method! {
    /// Server confirms the virtual host is open.
    OpenOk = "connection.open-ok" {
        reserved shortstr,
    }
}

method! {
    /// Either peer closes the connection, with the reason.
    Close = "connection.close" {
        /// Reply code (e.g. 320 connection-forced, 403 access-refused).
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
    /// Confirms a close; the socket may be closed after it.
    CloseOk = "connection.close-ok" {}
}

method! {
    /// RabbitMQ: the connection is blocked (a resource alarm); publishing stalls.
    Blocked = "connection.blocked" {
        /// Why, e.g. `low on memory`.
        reason: shortstr,
    }
}

method! {
    /// RabbitMQ: the connection is no longer blocked.
    Unblocked = "connection.unblocked" {}
}

method! {
    /// RabbitMQ: the client replaces its credentials (e.g. a renewed OAuth 2 token).
    UpdateSecret = "connection.update-secret" {
        /// The new secret.
        new_secret: longstr,
        /// Why it changed.
        reason: shortstr,
    }
}

method! {
    /// RabbitMQ: the new secret was accepted.
    UpdateSecretOk = "connection.update-secret-ok" {}
}
