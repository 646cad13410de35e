//! The `[connection]` block, as it is written. Turning it into a connection configuration,
//! with the environment's overrides, is serena's (`serena::topology::settings`): that needs the
//! client's configuration and URI parser, which this crate does not have.

use std::fmt;

use super::model::Origin;

/// The `[connection]` block of a topology file. Every field is optional. `Debug` shows the
/// `url` with what could be its password replaced by `***`.
///
/// The `url` is read as text: serena parses it when it resolves the settings
/// (`serena::topology::ConnectionSettingsExt`), where `SERENA_URL` may replace it, and reports
/// a bad one there with its place in the file.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// The broker, as an `amqp://` or `amqps://` URI, or a list of brokers (`url`).
    pub url: Option<String>,
    /// Heartbeat interval in seconds; 0 turns heartbeats off (`heartbeat`).
    pub heartbeat: Option<u16>,
    /// Largest frame we ask for, in bytes, at least 4096 (`frame_max`; `frame_size`, its old
    /// name, is still read).
    pub frame_max: Option<u32>,
    /// Deliveries buffered per channel (`channel_buffer_size`).
    pub channel_buffer_size: Option<u16>,
    /// Where the block was written, when loaded from a file.
    pub origin: Option<Origin>,
}

impl fmt::Debug for ConnectionSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionSettings")
            .field("url", &self.url.as_deref().map(redact))
            .field("heartbeat", &self.heartbeat)
            .field("frame_max", &self.frame_max)
            .field("channel_buffer_size", &self.channel_buffer_size)
            .finish_non_exhaustive()
    }
}

/// `url` with everything that could be a password hidden: from the first `:` after the
/// scheme's `://` (after the start, when the text has no `://`) to the last `@`; a URI without
/// such a `:` has no password. A `@` in a query or a second URI of a list hides more than the
/// password, which is the safe side.
fn redact(url: &str) -> String {
    let Some(at) = url.rfind('@') else {
        return url.to_owned();
    };
    let start = url.find("://").map_or(0, |i| i + 3).min(at);
    match url[start..at].find(':') {
        Some(colon) => format!("{}:***{}", &url[..start + colon], &url[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_password() {
        for (url, secrets) in [
            ("amqp//user:s3cret@host", &["s3cret"][..]),
            ("amqp://user:s3c/ret@host", &["s3c", "ret"]),
            ("amqp://user:s3c?ret@host", &["s3c", "ret"]),
            ("amqp://u:pw1@a/x, amqp://v:pw2@b/y", &["pw1", "pw2"]),
            ("user:s3cret@host", &["s3cret"]),
        ] {
            let settings = ConnectionSettings {
                url: Some(url.into()),
                ..ConnectionSettings::default()
            };
            let shown = format!("{settings:?}");
            for secret in secrets {
                assert!(!shown.contains(secret), "{url}: {shown}");
            }
        }
        assert_eq!(
            redact("amqp://app:s3cret@rabbit.prod/orders"),
            "amqp://app:***@rabbit.prod/orders"
        );
        assert_eq!(redact("amqp://app@rabbit.prod"), "amqp://app@rabbit.prod");
        assert_eq!(redact("amqp://rabbit:5672/%2f"), "amqp://rabbit:5672/%2f");
    }
}
