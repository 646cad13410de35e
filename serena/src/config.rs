//! Connection settings, from code or from an `amqp://` / `amqps://` URI.
//!
//! A configuration names one broker (`host`, `port`) or several (`more_hosts`), tried in
//! order, or shuffled; TLS is on when [`ConnectionConfig::tls`] is set; a host that is an
//! absolute path is a Unix socket. [`ConnectionConfig::from_uri`] documents the URI forms.

mod builders;
mod connector;
mod uri;

use std::path::PathBuf;
use std::{fmt, time::Duration};

use crate::error::Result;

pub use connector::{ByteStream, ConnectFuture, Connector, SharedConnector};

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
    /// `EXTERNAL` (RFC 4422): the server takes our identity from elsewhere, with RabbitMQ's
    /// `rabbitmq_auth_mechanism_ssl` plugin from the TLS client certificate
    /// ([`TlsOptions::client_cert`]). User name and password are not sent.
    External,
}

/// A client certificate and its private key, both PEM files. `Default` leaves both paths
/// empty: set them with the builders.
///
/// ```
/// use serena::ClientCertificate;
///
/// let cert = ClientCertificate::default()
///     .with_cert_file("/etc/app-tls/tls.crt")
///     .with_key_file("/etc/app-tls/tls.key");
/// # let _ = cert;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientCertificate {
    /// The certificate, followed by any intermediate certificates (`certfile`).
    pub cert_file: PathBuf,
    /// Its private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC), unencrypted (`keyfile`).
    pub key_file: PathBuf,
}

/// TLS settings (`amqps://`). `TlsOptions::default()` verifies the server against the
/// system's trusted roots and the host name connected to, and sends no client certificate.
///
/// The files are read on every connection attempt, so certificates rotated on disk are used
/// from the next (re)connection on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsOptions {
    /// PEM file of the CA certificates the server's certificate must chain to (`cacertfile`);
    /// `None`: the system's trusted roots.
    pub ca_file: Option<PathBuf>,
    /// The name the server's certificate must be valid for, also sent as SNI
    /// (`server_name_indication`); `None`: the host connected to.
    pub server_name: Option<String>,
    /// A certificate to present when the server asks for one; with
    /// [`AuthMechanism::External`] it is also the login.
    pub client_cert: Option<ClientCertificate>,
    /// Accept any server certificate (`verify=verify_none`). The traffic is encrypted but the
    /// server is not authenticated, so anyone in the path can pose as it: for tests only.
    pub accept_invalid_certificates: bool,
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
/// `127.0.0.1:5672`, guest/guest, virtual host `/`, no TLS.
///
/// Three brokers over TLS, logging in with a client certificate:
///
/// ```no_run
/// use std::time::Duration;
/// use serena::{AuthMechanism, ClientCertificate, ConnectionConfig, Endpoint, TlsOptions};
///
/// let config = ConnectionConfig::default()
///     .with_host("rabbit-1.internal")
///     .with_port(5671)
///     .with_more_hosts(vec![
///         Endpoint::new("rabbit-2.internal", 5671),
///         Endpoint::new("rabbit-3.internal", 5671),
///     ])
///     .with_tls(Some(
///         TlsOptions::default()
///             .with_ca_file(Some("/etc/rabbitmq-ca/ca.pem".into()))
///             .with_client_cert(Some(
///                 ClientCertificate::default()
///                     .with_cert_file("/etc/app-tls/tls.crt")
///                     .with_key_file("/etc/app-tls/tls.key"),
///             )),
///     ))
///     .with_auth_mechanism(AuthMechanism::External)
///     .with_virtual_host("orders")
///     .with_connection_name(Some("orders-worker".into()))
///     .with_connection_timeout(Duration::from_secs(5));
/// # let _ = config;
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionConfig {
    /// Host name or address, or the absolute path of a Unix socket (see [`Endpoint`]).
    pub host: String,
    /// TCP port (5672; 5671 is the usual port for TLS).
    pub port: u16,
    /// Further brokers (nodes of the same cluster, say), tried after `host:port` when it
    /// cannot be reached; the supervisor moves on to the next one on each restart.
    pub more_hosts: Vec<Endpoint>,
    /// Try the brokers in a random order (shuffled once per [`open`](crate::Connection::open)
    /// and once per supervisor), spreading clients over a cluster (false).
    pub shuffle_hosts: bool,
    /// TLS for every TCP broker of the list (`None`: plain TCP).
    pub tls: Option<TlsOptions>,
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
    pub frame_max: u32,
    /// Highest channel id we want; the smaller of ours and the server's wins (2047).
    pub channel_max: u16,
    /// Shown in the RabbitMQ management UI as the connection's name.
    pub connection_name: Option<String>,
    /// Limit for connecting (TCP, TLS) plus the AMQP handshake, per broker tried (10 s).
    pub connection_timeout: Duration,
    /// How to log in (PLAIN).
    pub auth_mechanism: AuthMechanism,
    /// Opens the byte streams in place of TCP, TLS or Unix sockets (`None`: those). See
    /// [`Connector`].
    pub connector: Option<SharedConnector>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            host: "127.0.0.1".into(),
            port: 5672,
            more_hosts: Vec::new(),
            shuffle_hosts: false,
            tls: None,
            username: "guest".into(),
            password: Password::new("guest"),
            virtual_host: "/".into(),
            heartbeat: Duration::from_secs(60),
            channel_buffer_size: 48,
            frame_max: 131_072,
            channel_max: 2047,
            connection_name: None,
            connection_timeout: Duration::from_secs(10),
            auth_mechanism: AuthMechanism::Plain,
            connector: None,
        }
    }
}

impl fmt::Debug for ConnectionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("more_hosts", &self.more_hosts)
            .field("shuffle_hosts", &self.shuffle_hosts)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("virtual_host", &self.virtual_host)
            .field("heartbeat", &self.heartbeat)
            .field("channel_buffer_size", &self.channel_buffer_size)
            .field("frame_max", &self.frame_max)
            .field("channel_max", &self.channel_max)
            .field("connection_name", &self.connection_name)
            .field("connection_timeout", &self.connection_timeout)
            .field("auth_mechanism", &self.auth_mechanism)
            .field("connector", &self.connector)
            .finish()
    }
}

impl ConnectionConfig {
    /// Parses a URI, or a comma-separated list of URIs, into a configuration.
    ///
    /// ```text
    /// amqp://user:pass@host:port/vhost?heartbeat=30
    /// amqps://user:pass@rabbit.example/prod?cacertfile=/etc/ca.pem     (TLS, port 5671)
    /// amqps://node-a,node-b:5672,[::1]/prod?certfile=c.pem&keyfile=k.pem&auth_mechanism=external
    /// amqp://user:pass@a.example/prod, amqp://user:pass@b.example/prod  (a list of URIs)
    /// amqp://user:pass@%2Fvar%2Frun%2Frabbitmq.sock/prod                 (a Unix socket)
    /// ```
    ///
    /// User, password, host and virtual host are percent-decoded (`%2f` is `/`); a `/`, `?` or
    /// `@` in them must be written encoded (`%2F`, `%3F`, `%40`). A missing or
    /// empty path means the virtual host `/`; the port defaults to 5672 for `amqp` and 5671
    /// for `amqps`. Several brokers are written either as comma-separated hosts in one URI,
    /// or as a comma-separated list of URIs that differ only in host and port. A host that
    /// decodes to an absolute path is a Unix socket.
    ///
    /// Query keys: `heartbeat` (seconds), `frame_max`, `channel_max`, `connection_timeout`
    /// (milliseconds, per broker tried), `channel_buffer_size`, `connection_name`,
    /// `auth_mechanism` (`plain`, `amqplain` or `external`), `shuffle_hosts` (`true` or
    /// `false`), and for `amqps` only: `cacertfile`, `certfile` and `keyfile` (PEM files),
    /// `verify` (`verify_peer`, the default, or `verify_none`), `server_name_indication` (the
    /// name the server's certificate must carry). Unknown keys are errors, and no error
    /// message shows the password.
    pub fn from_uri(uri: &str) -> Result<Self> {
        uri::parse(uri)
    }

    /// Every broker, in the order of the configuration: `host:port`, then `more_hosts`.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let mut all = Vec::with_capacity(1 + self.more_hosts.len());
        all.push(self.endpoint());
        all.extend(self.more_hosts.iter().cloned());
        all
    }

    /// `host:port` (or `unix:/path`) of the first broker, for messages.
    pub fn addr(&self) -> String {
        self.endpoint().to_string()
    }

    /// The first broker: `host` and `port`.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new(self.host.clone(), self.port)
    }

    /// The prefetch count every channel gets: a third of `channel_buffer_size`, at least 1.
    pub fn prefetch_count(&self) -> u16 {
        (self.channel_buffer_size / 3).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn endpoints_list_the_first_host_then_the_others() {
        let c = ConnectionConfig {
            host: "/run/rabbit.sock".into(),
            more_hosts: vec![Endpoint::new("::1", 5673), Endpoint::new("b", 5672)],
            ..Default::default()
        };
        let shown: Vec<String> = c.endpoints().iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["unix:/run/rabbit.sock", "[::1]:5673", "b:5672"]);
        assert!(c.endpoints()[0].is_unix_socket());
        assert!(!c.endpoints()[1].is_unix_socket());
    }
}
