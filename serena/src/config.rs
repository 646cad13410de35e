//! Connection settings, from code or from an `amqp://` URI.

use std::{fmt, time::Duration};

use crate::error::{Error, Result};

/// A password that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(p: impl Into<String>) -> Self {
        Password(p.into())
    }

    /// The password itself, for the authentication exchange.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// The SASL mechanism used to log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMechanism {
    /// `PLAIN` (RFC 4616): the default.
    #[default]
    Plain,
    /// `AMQPLAIN`: login and password in a field table.
    AmqPlain,
}

/// Where a broker listens: a host name or IP address and a port, or the absolute path of a
/// Unix domain socket (a `host` that starts with `/`; the port is then unused).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Host name, IP address, or absolute path of a Unix socket.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Endpoint {
    /// A TCP (or TLS) endpoint.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Endpoint {
            host: host.into(),
            port,
        }
    }

    /// True when the host is a path: the connection goes over a Unix domain socket.
    pub fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }
}

impl fmt::Display for Endpoint {
    /// `host:port`, `[v6]:port`, or `unix:/path`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_unix_socket() {
            write!(f, "unix:{}", self.host)
        } else if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Everything needed to open a connection. `Default` is RabbitMQ's out-of-the-box setup:
/// `127.0.0.1:5672`, guest/guest, virtual host `/`.
#[derive(Clone)]
pub struct ConnectionConfig {
    /// Host name or address, or the absolute path of a Unix socket (see [`Endpoint`]).
    pub host: String,
    /// TCP port (5672).
    pub port: u16,
    /// User name (`guest`).
    pub username: String,
    /// Password (`guest`); never printed.
    pub password: Password,
    /// Virtual host (`/`).
    pub virtual_host: String,
    /// Heartbeat interval we ask for; the smaller of ours and the server's wins, and zero turns
    /// heartbeats off (60 s).
    pub heartbeat: Duration,
    /// Deliveries buffered per channel; each channel's prefetch is a third of it (48, so 16).
    pub channel_buffer_size: u16,
    /// Largest frame we want, in bytes; the smaller of ours and the server's wins (131072).
    pub desired_frame_size: u32,
    /// Highest channel id we want; the smaller of ours and the server's wins (2047).
    pub channel_max: u16,
    /// Shown in the RabbitMQ management UI as the connection's name.
    pub connection_name: Option<String>,
    /// Limit for TCP connect plus the AMQP handshake (10 s).
    pub connect_timeout: Duration,
    /// How to log in (PLAIN).
    pub auth_mechanism: AuthMechanism,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            host: "127.0.0.1".into(),
            port: 5672,
            username: "guest".into(),
            password: Password::new("guest"),
            virtual_host: "/".into(),
            heartbeat: Duration::from_secs(60),
            channel_buffer_size: 48,
            desired_frame_size: 131_072,
            channel_max: 2047,
            connection_name: None,
            connect_timeout: Duration::from_secs(10),
            auth_mechanism: AuthMechanism::Plain,
        }
    }
}

impl fmt::Debug for ConnectionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("virtual_host", &self.virtual_host)
            .field("heartbeat", &self.heartbeat)
            .field("channel_buffer_size", &self.channel_buffer_size)
            .field("desired_frame_size", &self.desired_frame_size)
            .field("channel_max", &self.channel_max)
            .field("connection_name", &self.connection_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("auth_mechanism", &self.auth_mechanism)
            .finish()
    }
}

impl ConnectionConfig {
    /// Parses `amqp://user:pass@host:port/vhost?heartbeat=30&frame_max=131072`.
    ///
    /// User, password and virtual host are percent-decoded (`%2f` is `/`). A missing or empty
    /// path means the default virtual host `/`. Query keys: `heartbeat` (seconds), `frame_max`,
    /// `channel_max`, `connection_timeout` (milliseconds), `channel_buffer_size`,
    /// `connection_name`, `auth_mechanism` (`plain` or `amqplain`). Unknown keys are errors.
    pub fn from_uri(uri: &str) -> Result<Self> {
        let bad = |why: &str| Error::Config(format!("{why} in AMQP URI {}", redact(uri)));
        let rest = match uri.split_once("://") {
            Some(("amqp", rest)) => rest,
            Some(("amqps", _)) => return Err(bad("amqps (TLS) is not supported yet")),
            _ => return Err(bad("the scheme must be amqp://")),
        };
        let mut cfg = ConnectionConfig::default();
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (rest, None),
        };
        let host_port = match authority.rsplit_once('@') {
            Some((userinfo, hp)) => {
                let (user, pass) = match userinfo.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (userinfo, None),
                };
                cfg.username = percent_decode(user).ok_or_else(|| bad("bad percent-encoding"))?;
                if let Some(p) = pass {
                    cfg.password = Password::new(
                        percent_decode(p).ok_or_else(|| bad("bad percent-encoding"))?,
                    );
                }
                hp
            }
            None => authority,
        };
        let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in host"))?;
            (h, after.strip_prefix(':'))
        } else {
            match host_port.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (host_port, None),
            }
        };
        if !host.is_empty() {
            cfg.host = percent_decode(host).ok_or_else(|| bad("bad percent-encoding"))?;
        }
        if let Some(p) = port.filter(|p| !p.is_empty()) {
            cfg.port = p.parse().map_err(|_| bad("bad port"))?;
        }
        if let Some(p) = path.filter(|p| !p.is_empty()) {
            if p.contains('/') {
                return Err(bad(
                    "the virtual host must be one path segment (write / as %2f)",
                ));
            }
            cfg.virtual_host = percent_decode(p).ok_or_else(|| bad("bad percent-encoding"))?;
        }
        for pair in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v).ok_or_else(|| bad("bad percent-encoding"))?;
            let num = |what: &str| bad(&format!("{what} must be a number"));
            match k {
                "heartbeat" => {
                    cfg.heartbeat = Duration::from_secs(v.parse().map_err(|_| num(k))?);
                }
                "frame_max" => cfg.desired_frame_size = v.parse().map_err(|_| num(k))?,
                "channel_max" => cfg.channel_max = v.parse().map_err(|_| num(k))?,
                "connection_timeout" => {
                    cfg.connect_timeout = Duration::from_millis(v.parse().map_err(|_| num(k))?);
                }
                "channel_buffer_size" => cfg.channel_buffer_size = v.parse().map_err(|_| num(k))?,
                "connection_name" => cfg.connection_name = Some(v),
                "auth_mechanism" => {
                    cfg.auth_mechanism = match v.to_ascii_lowercase().as_str() {
                        "plain" => AuthMechanism::Plain,
                        "amqplain" => AuthMechanism::AmqPlain,
                        _ => return Err(bad("auth_mechanism must be plain or amqplain")),
                    }
                }
                _ => return Err(bad(&format!("unknown query parameter {k:?}"))),
            }
        }
        Ok(cfg)
    }

    /// `host:port` (or `unix:/path`), for messages.
    pub fn addr(&self) -> String {
        self.endpoint().to_string()
    }

    /// The broker `host` and `port` name.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new(self.host.clone(), self.port)
    }

    /// The prefetch count every channel gets: a third of `channel_buffer_size`, at least 1.
    pub fn prefetch_count(&self) -> u16 {
        (self.channel_buffer_size / 3).max(1)
    }
}

/// The URI with any password replaced, for error messages.
fn redact(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, _)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            let at = rest[..authority_end].rfind('@').unwrap_or(0);
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        _ => uri.to_owned(),
    }
}

/// Decodes `%XX` escapes; `None` for a malformed escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_uri() {
        let c = ConnectionConfig::from_uri(
            "amqp://al%40ice:p%3Ass@rabbit.example:5673/%2f?heartbeat=30&frame_max=8192&channel_max=10&connection_timeout=2500&connection_name=svc",
        )
        .unwrap();
        assert_eq!(c.username, "al@ice");
        assert_eq!(c.password.expose(), "p:ss");
        assert_eq!(c.host, "rabbit.example");
        assert_eq!(c.port, 5673);
        assert_eq!(c.virtual_host, "/");
        assert_eq!(c.heartbeat, Duration::from_secs(30));
        assert_eq!(c.desired_frame_size, 8192);
        assert_eq!(c.channel_max, 10);
        assert_eq!(c.connect_timeout, Duration::from_millis(2500));
        assert_eq!(c.connection_name.as_deref(), Some("svc"));
    }

    #[test]
    fn defaults_and_named_vhost() {
        let c = ConnectionConfig::from_uri("amqp://localhost").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("localhost", 5672));
        assert_eq!(
            (c.username.as_str(), c.password.expose()),
            ("guest", "guest")
        );
        assert_eq!(c.virtual_host, "/");
        let c = ConnectionConfig::from_uri("amqp://u@[::1]:5999/prod").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.virtual_host.as_str()),
            ("::1", 5999, "prod")
        );
        assert_eq!(c.addr(), "[::1]:5999");
    }

    #[test]
    fn bad_uris_are_errors_without_the_password() {
        for uri in [
            "http://h",
            "amqp://h:notaport",
            "amqp://h/a/b",
            "amqp://h?heartbeat=x",
            "amqp://h?bogus=1",
            "amqp://u:secret@h/%zz",
        ] {
            let err = ConnectionConfig::from_uri(uri).unwrap_err().to_string();
            assert!(!err.contains("secret"), "{err}");
        }
    }

    #[test]
    fn password_is_never_in_debug() {
        let c = ConnectionConfig::from_uri("amqp://u:hunter2@h").unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("***"));
    }

    #[test]
    fn prefetch_is_a_third_of_the_buffer() {
        assert_eq!(ConnectionConfig::default().prefetch_count(), 16);
        let c = ConnectionConfig {
            channel_buffer_size: 2,
            ..Default::default()
        };
        assert_eq!(c.prefetch_count(), 1);
    }
}
