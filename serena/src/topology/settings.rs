//! The `[connection]` block and the environment variables that override it.
//!
//! One file serves every environment: the file may name a broker, and each deployment overrides
//! it through the environment, so no password needs to live in the file.
//!
//! | variable | overrides |
//! |---|---|
//! | `SERENA_URL` | `url`: the broker, as an `amqp://` or `amqps://` URI, or several brokers (see [`ConnectionConfig::from_uri`]) |
//! | `SERENA_USERNAME` | the user name in the URI |
//! | `SERENA_PASSWORD` | the password in the URI |
//! | `SERENA_HEARTBEAT` | `heartbeat`, in seconds |
//! | `SERENA_FRAME_MAX` | `frame_max`, in bytes (`SERENA_FRAME_SIZE`, its old name, is still read, with a warning) |
//! | `SERENA_CHANNEL_BUFFER_SIZE` | `channel_buffer_size` |
//!
//! With neither the file nor `SERENA_URL` naming one, the broker is the local one,
//! [`DEFAULT_URL`].
//!
//! The file's `url` is parsed here, when the settings are resolved, not when the file is
//! loaded: whether a URI is good depends on the client (`amqps://` needs the `tls` feature),
//! and `SERENA_URL` may replace it. A bad one is reported with its place in the file.

use std::time::Duration;

use serena_topology::{ConnectionSettings, Entity, Problem};

use crate::config::{ConnectionConfig, Password};
use crate::error::{Error, Result};

/// The broker used when nothing names one.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The environment variables that override the `[connection]` block.
pub const ENV_VARS: &[&str] = &[
    "SERENA_URL",
    "SERENA_USERNAME",
    "SERENA_PASSWORD",
    "SERENA_HEARTBEAT",
    "SERENA_FRAME_MAX",
    "SERENA_FRAME_SIZE",
    "SERENA_CHANNEL_BUFFER_SIZE",
];

/// Turns the `[connection]` block of a topology file ([`ConnectionSettings`]) into a
/// [`ConnectionConfig`], with the environment's overrides.
///
/// ```no_run
/// use serena::topology::{ConnectionSettingsExt, Topology};
///
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let topology = Topology::load("topology.toml")?;
/// let config = topology.connection.resolve()?;
/// # drop(config); Ok(()) }
/// ```
pub trait ConnectionSettingsExt {
    /// The connection configuration from these settings with the process environment's
    /// overrides.
    fn resolve(&self) -> Result<ConnectionConfig>;

    /// The connection configuration, from (weakest first): the defaults, these settings, the
    /// variables `env` gives (see the [module docs](self)), and `url` when given (a command
    /// line's `--url`). `SERENA_USERNAME` and `SERENA_PASSWORD` replace the credentials of
    /// whichever URI wins.
    fn resolve_with(
        &self,
        url: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ConnectionConfig>;
}

impl ConnectionSettingsExt for ConnectionSettings {
    fn resolve(&self) -> Result<ConnectionConfig> {
        self.resolve_with(None, |name| std::env::var(name).ok())
    }

    fn resolve_with(
        &self,
        url: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ConnectionConfig> {
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        let env_url = env("SERENA_URL");
        let mut cfg = match url.or(env_url.as_deref()) {
            Some(uri) => ConnectionConfig::from_uri(uri)?,
            None => match &self.url {
                Some(uri) => ConnectionConfig::from_uri(uri).map_err(|e| bad_url(self, e))?,
                None => ConnectionConfig::from_uri(DEFAULT_URL)?,
            },
        };
        if let Some(v) = self.heartbeat {
            cfg.heartbeat = Duration::from_secs(v.into());
        }
        if let Some(v) = self.frame_max {
            cfg.frame_max = v;
        }
        if let Some(v) = self.channel_buffer_size {
            cfg.channel_buffer_size = v;
        }
        if let Some(v) = env("SERENA_USERNAME") {
            cfg.username = v;
        }
        if let Some(v) = env("SERENA_PASSWORD") {
            cfg.password = Password::new(v);
        }
        if let Some(v) = env("SERENA_HEARTBEAT") {
            let secs: u16 = parse_env("SERENA_HEARTBEAT", &v, "a number of seconds, 0 to 65535")?;
            cfg.heartbeat = Duration::from_secs(secs.into());
        }
        let frame_max = match (env("SERENA_FRAME_MAX"), env("SERENA_FRAME_SIZE")) {
            (Some(v), _) => Some(("SERENA_FRAME_MAX", v)),
            (None, Some(v)) => {
                tracing::warn!("SERENA_FRAME_SIZE is deprecated: set SERENA_FRAME_MAX instead");
                Some(("SERENA_FRAME_SIZE", v))
            }
            (None, None) => None,
        };
        if let Some((name, v)) = frame_max {
            let size: u32 = parse_env(name, &v, "a number of bytes, at least 4096")?;
            if size < crate::proto::FRAME_MIN_SIZE {
                return Err(bad_env(name, &v, "a number of bytes, at least 4096"));
            }
            cfg.frame_max = size;
        }
        if let Some(v) = env("SERENA_CHANNEL_BUFFER_SIZE") {
            let size: u16 = parse_env("SERENA_CHANNEL_BUFFER_SIZE", &v, "a number, 1 to 65535")?;
            if size == 0 {
                return Err(bad_env(
                    "SERENA_CHANNEL_BUFFER_SIZE",
                    &v,
                    "a number, 1 to 65535",
                ));
            }
            cfg.channel_buffer_size = size;
        }
        Ok(cfg)
    }
}

/// `error`, from parsing the `url` of `settings`, with the place in the file it was written
/// in (`topology.toml:2:1: [connection]: url: ...`), when they were loaded from one.
fn bad_url(settings: &ConnectionSettings, error: Error) -> Error {
    let Some(origin) = &settings.origin else {
        return error;
    };
    let message = match error {
        Error::Config(message) => message,
        other => other.to_string(),
    };
    let problem = Problem {
        file: Some(origin.file().to_owned()),
        location: origin.key_location("url"),
        entity: Entity::Connection,
        message: format!("url: {message}"),
    };
    Error::Config(problem.to_string())
}

fn parse_env<T: std::str::FromStr>(name: &str, value: &str, expected: &str) -> Result<T> {
    value
        .trim()
        .parse()
        .map_err(|_| bad_env(name, value, expected))
}

fn bad_env(name: &str, value: &str, expected: &str) -> Error {
    Error::Config(format!("{name}={value:?} must be {expected}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn defaults_to_the_local_broker() {
        let cfg = ConnectionSettings::default()
            .resolve_with(None, env(&[]))
            .unwrap();
        assert_eq!(cfg.addr(), "127.0.0.1:5672");
        assert_eq!(cfg.username, "guest");
        assert_eq!(cfg.virtual_host, "/");
    }

    #[test]
    fn the_environment_overrides_the_file_and_the_flag_overrides_both() {
        let file = ConnectionSettings {
            url: Some("amqp://app@rabbit.prod:5672/orders".into()),
            heartbeat: Some(30),
            frame_max: Some(8192),
            channel_buffer_size: Some(30),
            ..ConnectionSettings::default()
        };
        let cfg = file.resolve_with(None, env(&[])).unwrap();
        assert_eq!(
            (cfg.host.as_str(), cfg.virtual_host.as_str()),
            ("rabbit.prod", "orders")
        );
        assert_eq!(cfg.heartbeat, Duration::from_secs(30));
        assert_eq!((cfg.frame_max, cfg.channel_buffer_size), (8192, 30));

        let vars = [
            ("SERENA_URL", "amqp://u@rabbit.staging/%2f"),
            ("SERENA_PASSWORD", "s3cret"),
            ("SERENA_HEARTBEAT", "5"),
            ("SERENA_FRAME_MAX", "65536"),
            ("SERENA_CHANNEL_BUFFER_SIZE", "9"),
        ];
        let cfg = file.resolve_with(None, env(&vars)).unwrap();
        assert_eq!(cfg.host, "rabbit.staging");
        assert_eq!(
            (cfg.username.as_str(), cfg.password.expose()),
            ("u", "s3cret")
        );
        assert_eq!(cfg.heartbeat, Duration::from_secs(5));
        assert_eq!((cfg.frame_max, cfg.channel_buffer_size), (65536, 9));

        let cfg = file
            .resolve_with(Some("amqp://cli@127.0.0.2"), env(&vars))
            .unwrap();
        assert_eq!(
            (cfg.host.as_str(), cfg.username.as_str()),
            ("127.0.0.2", "cli")
        );
        assert_eq!(cfg.password.expose(), "s3cret");
    }

    #[test]
    fn the_old_name_of_frame_max_still_counts_and_the_new_one_wins() {
        let s = ConnectionSettings::default();
        let old = s
            .resolve_with(None, env(&[("SERENA_FRAME_SIZE", "16384")]))
            .unwrap();
        assert_eq!(old.frame_max, 16384);
        let both = s
            .resolve_with(
                None,
                env(&[
                    ("SERENA_FRAME_SIZE", "16384"),
                    ("SERENA_FRAME_MAX", "32768"),
                ]),
            )
            .unwrap();
        assert_eq!(both.frame_max, 32768);
    }

    #[test]
    fn bad_variables_are_named() {
        let s = ConnectionSettings::default();
        for (name, value) in [
            ("SERENA_HEARTBEAT", "soon"),
            ("SERENA_FRAME_MAX", "100"),
            ("SERENA_FRAME_SIZE", "100"),
            ("SERENA_CHANNEL_BUFFER_SIZE", "0"),
        ] {
            let err = s.resolve_with(None, env(&[(name, value)])).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
        let err = s
            .resolve_with(None, env(&[("SERENA_URL", "http://x")]))
            .unwrap_err();
        assert!(err.to_string().contains("amqp://"), "{err}");
        // An empty variable counts as unset.
        assert!(s.resolve_with(None, env(&[("SERENA_URL", "")])).is_ok());
    }

    #[test]
    fn no_error_and_no_debug_output_shows_the_password() {
        for (uri, secrets) in [
            ("amqp//user:s3cret@host", &["s3cret"][..]),
            ("amqp://user:s3c/ret@host", &["s3c", "ret"]),
            ("amqp://user:s3c?ret@host", &["s3c", "ret"]),
        ] {
            let from_file = ConnectionSettings {
                url: Some(uri.into()),
                ..Default::default()
            };
            let errors = [
                ConnectionSettings::default().resolve_with(None, env(&[("SERENA_URL", uri)])),
                ConnectionSettings::default().resolve_with(Some(uri), env(&[])),
                from_file.resolve_with(None, env(&[])),
            ]
            .map(|r| r.expect_err(uri));
            for err in errors {
                for shown in [err.to_string(), format!("{err:?}")] {
                    for secret in secrets {
                        assert!(!shown.contains(secret), "{uri}: {shown}");
                    }
                }
            }
            let shown = format!("{from_file:?}");
            for secret in secrets {
                assert!(!shown.contains(secret), "{uri}: {shown}");
            }
        }
        let file = ConnectionSettings {
            url: Some("amqp://app:s3cret@rabbit.prod/orders".into()),
            ..Default::default()
        };
        let shown = format!("{file:?}");
        assert!(
            shown.contains("amqp://app:***@rabbit.prod/orders"),
            "{shown}"
        );
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn serena_url_takes_a_host_list() {
        let vars = [
            ("SERENA_URL", "amqp://app@a.example,b.example:5673/prod"),
            ("SERENA_PASSWORD", "s3cret"),
        ];
        let cfg = ConnectionSettings::default()
            .resolve_with(None, env(&vars))
            .unwrap();
        let hosts: Vec<String> = cfg.endpoints().iter().map(ToString::to_string).collect();
        assert_eq!(hosts, ["a.example:5672", "b.example:5673"]);
        assert_eq!(
            (cfg.username.as_str(), cfg.password.expose()),
            ("app", "s3cret")
        );
    }
}
