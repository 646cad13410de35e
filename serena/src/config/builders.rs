//! The `with_*` builders of [`ConnectionConfig`], [`TlsOptions`] and [`ClientCertificate`].
//!
//! The three are `#[non_exhaustive]`: start from `Default` and chain these, or set the public
//! fields on a `let mut`. Strings and paths take anything that converts into them.

use std::path::PathBuf;
use std::time::Duration;

use super::{AuthMechanism, ClientCertificate, ConnectionConfig, Endpoint, Password, TlsOptions};

impl ConnectionConfig {
    with_fields! {
        into with_host => host: String,
        copy with_port => port: u16,
        owned with_more_hosts => more_hosts: Vec<Endpoint>,
        copy with_shuffle_hosts => shuffle_hosts: bool,
        owned with_tls => tls: Option<TlsOptions>,
        into with_username => username: String,
        owned with_password => password: Password,
        into with_virtual_host => virtual_host: String,
        copy with_heartbeat => heartbeat: Duration,
        copy with_channel_buffer_size => channel_buffer_size: u16,
        copy with_frame_max => frame_max: u32,
        copy with_channel_max => channel_max: u16,
        owned with_connection_name => connection_name: Option<String>,
        copy with_connection_timeout => connection_timeout: Duration,
        copy with_auth_mechanism => auth_mechanism: AuthMechanism,
    }

    /// Opens every endpoint through `connector` instead of TCP, TLS or a Unix socket.
    pub fn with_connector(mut self, connector: impl super::Connector) -> Self {
        self.connector = Some(super::SharedConnector::new(connector));
        self
    }
}

impl TlsOptions {
    with_fields! {
        owned with_ca_file => ca_file: Option<PathBuf>,
        owned with_server_name => server_name: Option<String>,
        owned with_client_cert => client_cert: Option<ClientCertificate>,
        copy with_accept_invalid_certificates => accept_invalid_certificates: bool,
    }
}

impl ClientCertificate {
    with_fields! {
        into with_cert_file => cert_file: PathBuf,
        into with_key_file => key_file: PathBuf,
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
            connector: None,
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
