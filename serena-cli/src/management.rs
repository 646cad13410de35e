//! RabbitMQ's management HTTP API, for `topology export|diff|verify`: a blocking client
//! (`ureq`: the CLI makes one or two requests per run, so an async HTTP stack would buy nothing).
//!
//! Where the API is: `--url` when it is an `http://` or `https://` URL, else
//! `SERENA_MANAGEMENT_URL`, else the AMQP broker's host on port 15672 with its user and
//! password. Every request has a 10 s deadline and a response is read up to 64 MiB.

use std::time::Duration;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use serde_json::Value;
use serena::ConnectionConfig;

use crate::Failure;

/// The environment variable naming the management API.
pub(crate) const ENV: &str = "SERENA_MANAGEMENT_URL";

/// The management API's default port.
const DEFAULT_PORT: u16 = 15672;

/// The most of a response that is read: a broker's definitions are rarely past a few MiB.
const BODY_LIMIT: u64 = 64 * 1024 * 1024;

/// Everything but unreserved characters, for a virtual host in a path (`/` is `%2F`).
const PATH_SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'@')
    .add(b':')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'&')
    .add(b'+')
    .add(b'=')
    .add(b';')
    .add(b',');

/// The management API of one broker: its base URL (no credentials) and login.
pub(crate) struct Management {
    base: String,
    username: String,
    password: String,
    agent: ureq::Agent,
}

/// Why a request got no usable answer.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// Nothing answered (connection refused, timeout, name not found, TLS).
    Unreachable(String),
    /// An HTTP error status, with the start of the body.
    Status(u16, String),
    /// The answer was not the JSON expected.
    Body(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Unreachable(e) => write!(f, "no answer: {e}"),
            ApiError::Status(401, _) => f.write_str("401: the user name or password was refused"),
            ApiError::Status(code, body) => write!(f, "HTTP {code}: {body}"),
            ApiError::Body(e) => write!(f, "unreadable answer: {e}"),
        }
    }
}

impl Management {
    /// The API named by `url` (`http[s]://[user[:password]@]host[:port][/prefix]`); the login
    /// defaults to `fallback`'s.
    pub(crate) fn from_url(
        url: &str,
        fallback: Option<&ConnectionConfig>,
    ) -> Result<Management, Failure> {
        let (scheme, rest) = url
            .split_once("://")
            .filter(|(s, _)| matches!(*s, "http" | "https"))
            .ok_or_else(|| {
                Failure::usage(format!(
                    "the management API URL must start with http:// or https://, not {:?}",
                    redact(url)
                ))
            })?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (login, host) = match authority.rsplit_once('@') {
            Some((login, host)) => (Some(login), host),
            None => (None, authority),
        };
        if host.is_empty() {
            return Err(Failure::usage(format!(
                "no host in the management API URL {:?}",
                redact(url)
            )));
        }
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let (username, password) = match login {
            Some(login) => match login.split_once(':') {
                Some((u, p)) => (decode(u), decode(p)),
                None => (
                    decode(login),
                    fallback
                        .map(|c| c.password.expose().to_owned())
                        .unwrap_or_default(),
                ),
            },
            None => match fallback {
                Some(c) => (c.username.clone(), c.password.expose().to_owned()),
                None => ("guest".to_owned(), "guest".to_owned()),
            },
        };
        Ok(Management {
            base: format!("{scheme}://{host}{}", path.trim_end_matches('/')),
            username,
            password,
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                .http_status_as_error(false)
                .build()
                .into(),
        })
    }

    /// The API beside the AMQP broker of `config`: its host, port 15672, its login.
    pub(crate) fn beside(config: &ConnectionConfig) -> Management {
        let host = if config.host.contains(':') {
            format!("[{}]", config.host)
        } else {
            config.host.clone()
        };
        Management::from_url(&format!("http://{host}:{DEFAULT_PORT}"), Some(config))
            .expect("an http URL built from a parsed host")
    }

    /// Where requests go, for messages.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    fn authorization(&self) -> String {
        let login = format!("{}:{}", self.username, self.password);
        format!("Basic {}", crate::base64::encode(login.as_bytes()))
    }

    fn definitions_url(&self, vhost: &str) -> String {
        format!(
            "{}/api/definitions/{}",
            self.base,
            utf8_percent_encode(vhost, PATH_SEGMENT)
        )
    }

    /// `GET /api/definitions/{vhost}`: the virtual host's exchanges, queues and bindings.
    pub(crate) fn definitions(&self, vhost: &str) -> Result<Value, ApiError> {
        let response = self
            .agent
            .get(&self.definitions_url(vhost))
            .header("Authorization", &self.authorization())
            .call()
            .map_err(|e| ApiError::Unreachable(e.to_string()))?;
        read_json(response)
    }
}

fn read_json(mut response: ureq::http::Response<ureq::Body>) -> Result<Value, ApiError> {
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(ApiError::Status(status, body_start(response)));
    }
    let text = response
        .body_mut()
        .with_config()
        .limit(BODY_LIMIT)
        .read_to_string()
        .map_err(|e| ApiError::Body(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| ApiError::Body(e.to_string()))
}

/// The first 200 characters of an error response's body.
fn body_start(mut response: ureq::http::Response<ureq::Body>) -> String {
    let text = response
        .body_mut()
        .with_config()
        .limit(4096)
        .read_to_string()
        .unwrap_or_default();
    text.chars().take(200).collect()
}

/// `url` with a password replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
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
    fn urls_give_base_and_login() {
        let m = Management::from_url("http://ops:p%40ss@rabbit:15672/mgmt/", None).unwrap();
        assert_eq!(m.base(), "http://rabbit:15672/mgmt");
        assert_eq!((m.username.as_str(), m.password.as_str()), ("ops", "p@ss"));
        assert_eq!(
            m.definitions_url("/"),
            "http://rabbit:15672/mgmt/api/definitions/%2F"
        );
        assert_eq!(
            m.definitions_url("a b"),
            "http://rabbit:15672/mgmt/api/definitions/a%20b"
        );
        let m = Management::from_url("https://rabbit", None).unwrap();
        assert_eq!((m.base(), m.username.as_str()), ("https://rabbit", "guest"));
        for bad in ["amqp://rabbit", "rabbit:15672", "http://", "http://u:p@"] {
            assert!(Management::from_url(bad, None).is_err(), "{bad}");
        }
        let config = ConnectionConfig::from_uri("amqp://app:s3cret@10.0.0.5:5673/orders").unwrap();
        let m = Management::beside(&config);
        assert_eq!(m.base(), "http://10.0.0.5:15672");
        assert_eq!(
            (m.username.as_str(), m.password.as_str()),
            ("app", "s3cret")
        );
        assert_eq!(redact("http://a:b@h"), "http://a:***@h");
    }
}
