//! The `with_*` builders of [`ConnectionConfig`], [`TlsOptions`] and [`ClientCertificate`].
//!
//! The three are `#[non_exhaustive]`: start from `Default` and chain these, or set the public
//! fields on a `let mut`. Strings and paths take anything that converts into them.

use std::path::PathBuf;
use std::time::Duration;

use super::{AuthMechanism, ClientCertificate, ConnectionConfig, Endpoint, Password, TlsOptions};

impl ConnectionConfig {
    /// Sets [`host`](Self::host).
    #[must_use]
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// Sets [`port`](Self::port).
    #[must_use]
    pub const fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Sets [`more_hosts`](Self::more_hosts).
    #[must_use]
    pub fn with_more_hosts(mut self, more_hosts: Vec<Endpoint>) -> Self {
        self.more_hosts = more_hosts;
        self
    }

    /// Sets [`shuffle_hosts`](Self::shuffle_hosts).
    #[must_use]
    pub const fn with_shuffle_hosts(mut self, shuffle_hosts: bool) -> Self {
        self.shuffle_hosts = shuffle_hosts;
        self
    }

    /// Sets [`tls`](Self::tls).
    #[must_use]
    pub fn with_tls(mut self, tls: Option<TlsOptions>) -> Self {
        self.tls = tls;
        self
    }

    /// Sets [`username`](Self::username).
    #[must_use]
    pub fn with_username(mut self, username: impl Into<String>) -> Self {
        self.username = username.into();
        self
    }

    /// Sets [`password`](Self::password).
    #[must_use]
    pub fn with_password(mut self, password: Password) -> Self {
        self.password = password;
        self
    }

    /// Sets [`virtual_host`](Self::virtual_host).
    #[must_use]
    pub fn with_virtual_host(mut self, virtual_host: impl Into<String>) -> Self {
        self.virtual_host = virtual_host.into();
        self
    }

    /// Sets [`heartbeat`](Self::heartbeat).
    #[must_use]
    pub const fn with_heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// Sets [`channel_buffer_size`](Self::channel_buffer_size).
    #[must_use]
    pub const fn with_channel_buffer_size(mut self, channel_buffer_size: u16) -> Self {
        self.channel_buffer_size = channel_buffer_size;
        self
    }

    /// Sets [`frame_max`](Self::frame_max).
    #[must_use]
    pub const fn with_frame_max(mut self, frame_max: u32) -> Self {
        self.frame_max = frame_max;
        self
    }

    /// Sets [`channel_max`](Self::channel_max).
    #[must_use]
    pub const fn with_channel_max(mut self, channel_max: u16) -> Self {
        self.channel_max = channel_max;
        self
    }

    /// Sets [`connection_name`](Self::connection_name).
    #[must_use]
    pub fn with_connection_name(mut self, connection_name: Option<String>) -> Self {
        self.connection_name = connection_name;
        self
    }

    /// Sets [`connection_timeout`](Self::connection_timeout).
    #[must_use]
    pub const fn with_connection_timeout(mut self, connection_timeout: Duration) -> Self {
        self.connection_timeout = connection_timeout;
        self
    }

    /// Sets [`auth_mechanism`](Self::auth_mechanism).
    #[must_use]
    pub const fn with_auth_mechanism(mut self, auth_mechanism: AuthMechanism) -> Self {
        self.auth_mechanism = auth_mechanism;
        self
    }
}

impl TlsOptions {
    /// Sets [`ca_file`](Self::ca_file).
    #[must_use]
    pub fn with_ca_file(mut self, ca_file: Option<PathBuf>) -> Self {
        self.ca_file = ca_file;
        self
    }

    /// Sets [`server_name`](Self::server_name).
    #[must_use]
    pub fn with_server_name(mut self, server_name: Option<String>) -> Self {
        self.server_name = server_name;
        self
    }

    /// Sets [`client_cert`](Self::client_cert).
    #[must_use]
    pub fn with_client_cert(mut self, client_cert: Option<ClientCertificate>) -> Self {
        self.client_cert = client_cert;
        self
    }

    /// Sets [`accept_invalid_certificates`](Self::accept_invalid_certificates).
    #[must_use]
    pub const fn with_accept_invalid_certificates(
        mut self,
        accept_invalid_certificates: bool,
    ) -> Self {
        self.accept_invalid_certificates = accept_invalid_certificates;
        self
    }
}

impl ClientCertificate {
    /// Sets [`cert_file`](Self::cert_file).
    #[must_use]
    pub fn with_cert_file(mut self, cert_file: impl Into<PathBuf>) -> Self {
        self.cert_file = cert_file.into();
        self
    }

    /// Sets [`key_file`](Self::key_file).
    #[must_use]
    pub fn with_key_file(mut self, key_file: impl Into<PathBuf>) -> Self {
        self.key_file = key_file.into();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_builders_set_their_field() {
        let tls = TlsOptions::default()
            .with_ca_file(Some("/etc/ca.pem".into()))
            .with_server_name(Some("rabbit.internal".into()))
            .with_client_cert(Some(
                ClientCertificate::default()
                    .with_cert_file("/etc/tls.crt")
                    .with_key_file("/etc/tls.key"),
            ))
            .with_accept_invalid_certificates(true);
        let c = ConnectionConfig::default()
            .with_host("rabbit-1")
            .with_port(5671)
            .with_more_hosts(vec![Endpoint::new("rabbit-2", 5671)])
            .with_shuffle_hosts(true)
            .with_tls(Some(tls.clone()))
            .with_username("app")
            .with_password(Password::new("s3cret"))
            .with_virtual_host("orders")
            .with_heartbeat(Duration::from_secs(5))
            .with_channel_buffer_size(30)
            .with_frame_max(4096)
            .with_channel_max(16)
            .with_connection_name(Some("worker".into()))
            .with_connection_timeout(Duration::from_millis(1500))
            .with_auth_mechanism(AuthMechanism::External);

        let expected = ConnectionConfig {
            host: "rabbit-1".into(),
            port: 5671,
            more_hosts: vec![Endpoint::new("rabbit-2", 5671)],
            shuffle_hosts: true,
            tls: Some(TlsOptions {
                ca_file: Some(PathBuf::from("/etc/ca.pem")),
                server_name: Some("rabbit.internal".into()),
                client_cert: Some(ClientCertificate {
                    cert_file: "/etc/tls.crt".into(),
                    key_file: "/etc/tls.key".into(),
                }),
                accept_invalid_certificates: true,
            }),
            username: "app".into(),
            password: Password::new("s3cret"),
            virtual_host: "orders".into(),
            heartbeat: Duration::from_secs(5),
            channel_buffer_size: 30,
            frame_max: 4096,
            channel_max: 16,
            connection_name: Some("worker".into()),
            connection_timeout: Duration::from_millis(1500),
            auth_mechanism: AuthMechanism::External,
        };
        assert_eq!(c, expected);
        assert_eq!(c.tls, Some(tls));
    }

    #[test]
    fn const_builders_compose_in_const_context() {
        const fn tuned(c: ConnectionConfig) -> ConnectionConfig {
            c.with_port(5671)
                .with_heartbeat(Duration::from_secs(10))
                .with_frame_max(8192)
                .with_channel_max(64)
                .with_channel_buffer_size(9)
                .with_shuffle_hosts(true)
                .with_connection_timeout(Duration::from_secs(2))
                .with_auth_mechanism(AuthMechanism::AmqPlain)
        }
        let c = tuned(ConnectionConfig::default());
        assert_eq!((c.port, c.frame_max, c.channel_max), (5671, 8192, 64));
        assert_eq!(c.prefetch_count(), 3);
        assert_eq!(c.host, "127.0.0.1");
    }
}
