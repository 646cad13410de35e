//! `amqp://` and `amqps://` URIs, alone or in lists, into a [`ConnectionConfig`].
//!
//! ```text
//!  "amqps://u:p@a,b:5673/vh?cacertfile=ca.pem , amqps://u:p@c/vh?cacertfile=ca.pem"
//!   |-------------- URI 1 ---------------------|  |------------ URI 2 ------------|
//!   scheme  userinfo  hosts     path   query
//! ```
//!
//! A list is split before every comma followed by a scheme; inside one URI, the hosts after
//! the `@` are separated by commas. Every URI of a list must say the same apart from hosts.

use std::path::PathBuf;
use std::time::Duration;

use super::{AuthMechanism, ClientCertificate, ConnectionConfig, Endpoint, Password, TlsOptions};
use crate::error::{Error, Result};

/// The schemes a list item may start with.
const SCHEMES: [&str; 2] = ["amqp://", "amqps://"];

/// Parses one URI or a list of them.
pub(super) fn parse(input: &str) -> Result<ConnectionConfig> {
    let bad = |why: &str| Error::Config(format!("{why} in AMQP URI {}", redact(input)));
    let items = split_list(input);
    let mut config = parse_one(items[0], &bad)?;
    for item in &items[1..] {
        let other = parse_one(item, &bad)?;
        let mut other_but_hosts = other.clone();
        other_but_hosts.host.clone_from(&config.host);
        other_but_hosts.port = config.port;
        other_but_hosts.more_hosts.clone_from(&config.more_hosts);
        if other_but_hosts != config {
            return Err(bad(
                "the URIs of a list must differ only in their hosts and ports",
            ));
        }
        config.more_hosts.extend(other.endpoints());
    }
    Ok(config)
}

/// The items of a URI list: split before each comma that a scheme follows.
fn split_list(input: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut start = 0;
    for (i, _) in input.match_indices(',') {
        let next = input[i + 1..].trim_start();
        if SCHEMES.iter().any(|s| next.starts_with(s)) {
            items.push(input[start..i].trim());
            start = i + 1;
        }
    }
    items.push(input[start..].trim());
    items
}

fn parse_one(uri: &str, bad: &impl Fn(&str) -> Error) -> Result<ConnectionConfig> {
    let decode = |s: &str| percent_decode(s).ok_or_else(|| bad("bad percent-encoding"));
    let (tls, rest) = match uri.split_once("://") {
        Some(("amqp", rest)) => (false, rest),
        Some(("amqps", rest)) => (true, rest),
        _ => return Err(bad("the scheme must be amqp:// or amqps://")),
    };
    #[cfg(not(feature = "tls"))]
    if tls {
        return Err(bad(
            "amqps:// needs TLS, and serena was built without its `tls` feature",
        ));
    }
    let mut cfg = ConnectionConfig::default();
    if tls {
        cfg.port = 5671;
        cfg.tls = Some(TlsOptions::default());
    }
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (rest, None),
    };
    // `amqp://user:pa/ss@host` or `amqp://user:pa?ss@host`: the password's `/` or `?` cut the
    // URI early, and what is left of it would be read as a host and port, a virtual host or a
    // query key, and shown in messages. A URI with user info has its `@` before the first `/`.
    if !authority.contains('@') && path.into_iter().chain(query).any(|s| s.contains('@')) {
        return Err(bad(
            "an @ after the host: percent-encode a / or ? in the user name or password \
             (%2F, %3F), and an @ in the virtual host or a query value (%40)",
        ));
    }
    let hosts = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, pass) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            cfg.username = decode(user)?;
            if let Some(p) = pass {
                cfg.password = Password::new(decode(p)?);
            }
            hosts
        }
        None => authority,
    };
    let mut endpoints = Vec::new();
    let listed = hosts.contains(',');
    for host_port in hosts.split(',').map(str::trim) {
        let (host, port) = split_host_port(host_port).ok_or_else(|| bad("unclosed [ in host"))?;
        let mut endpoint = Endpoint::new(cfg.host.clone(), cfg.port);
        if !host.is_empty() {
            endpoint.host = decode(host)?;
        } else if listed {
            return Err(bad("empty host in the host list"));
        }
        if let Some(p) = port.filter(|p| !p.is_empty()) {
            endpoint.port = p.parse().map_err(|_| bad("bad port"))?;
        }
        if tls && endpoint.is_unix_socket() {
            return Err(bad("a Unix socket is reached with amqp://, not amqps://"));
        }
        endpoints.push(endpoint);
    }
    let mut endpoints = endpoints.into_iter();
    if let Some(first) = endpoints.next() {
        cfg.host = first.host;
        cfg.port = first.port;
    }
    cfg.more_hosts = endpoints.collect();
    if let Some(p) = path.filter(|p| !p.is_empty()) {
        if p.contains('/') {
            return Err(bad(
                "the virtual host must be one path segment (write / as %2f)",
            ));
        }
        cfg.virtual_host = decode(p)?;
    }
    let (mut cert_file, mut key_file) = (None, None);
    for pair in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = decode(v)?;
        let num = |what: &str| bad(&format!("{what} must be a number"));
        match k {
            "heartbeat" => {
                cfg.heartbeat = Duration::from_secs(v.parse().map_err(|_| num(k))?);
            }
            "frame_max" => cfg.frame_max = v.parse().map_err(|_| num(k))?,
            "channel_max" => cfg.channel_max = v.parse().map_err(|_| num(k))?,
            "connection_timeout" => {
                cfg.connection_timeout = Duration::from_millis(v.parse().map_err(|_| num(k))?);
            }
            "channel_buffer_size" => cfg.channel_buffer_size = v.parse().map_err(|_| num(k))?,
            "connection_name" => cfg.connection_name = Some(v),
            "auth_mechanism" => {
                cfg.auth_mechanism = match v.to_ascii_lowercase().as_str() {
                    "plain" => AuthMechanism::Plain,
                    "amqplain" => AuthMechanism::AmqPlain,
                    "external" => AuthMechanism::External,
                    _ => return Err(bad("auth_mechanism must be plain, amqplain or external")),
                }
            }
            "shuffle_hosts" => {
                cfg.shuffle_hosts = match v.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad("shuffle_hosts must be true or false")),
                }
            }
            "cacertfile" => tls_only(&mut cfg.tls, k, bad)?.ca_file = Some(PathBuf::from(v)),
            "certfile" => {
                tls_only(&mut cfg.tls, k, bad)?;
                cert_file = Some(PathBuf::from(v));
            }
            "keyfile" => {
                tls_only(&mut cfg.tls, k, bad)?;
                key_file = Some(PathBuf::from(v));
            }
            "verify" => {
                tls_only(&mut cfg.tls, k, bad)?.accept_invalid_certificates = match v.as_str() {
                    "verify_peer" => false,
                    "verify_none" => true,
                    _ => return Err(bad("verify must be verify_peer or verify_none")),
                }
            }
            "server_name_indication" => {
                if v.is_empty() || v == "disable" {
                    return Err(bad(
                        "server_name_indication must be the name the server's certificate carries",
                    ));
                }
                tls_only(&mut cfg.tls, k, bad)?.server_name = Some(v);
            }
            _ => return Err(bad(&format!("unknown query parameter {k:?}"))),
        }
    }
    match (cert_file, key_file) {
        (None, None) => {}
        (Some(cert_file), Some(key_file)) => {
            if let Some(tls) = cfg.tls.as_mut() {
                tls.client_cert = Some(ClientCertificate {
                    cert_file,
                    key_file,
                });
            }
        }
        _ => return Err(bad("certfile and keyfile go together")),
    }
    Ok(cfg)
}

/// The TLS options of an `amqps` URI, for a TLS query key (`key`).
fn tls_only<'a>(
    tls: &'a mut Option<TlsOptions>,
    key: &str,
    bad: &impl Fn(&str) -> Error,
) -> Result<&'a mut TlsOptions> {
    tls.as_mut()
        .ok_or_else(|| bad(&format!("{key} is for amqps:// URIs only")))
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; `None` for an unclosed bracket.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(v6) = s.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        Some((h, after.strip_prefix(':')))
    } else {
        Some(match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        })
    }
}

/// The URI (or list) with every password replaced by `***`, for error messages and `Debug`.
pub(super) fn redact(input: &str) -> String {
    split_list(input)
        .into_iter()
        .map(redact_one)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One URI with what could be a password replaced: the text from the first `:` after the
/// scheme up to the *last* `@`. Not the first `@` after the host, because a password with an
/// unencoded `/`, `?` or `@` ends at the last one, and a string that does not parse (no `://`)
/// must be redacted as well. A `@` in the query or the virtual host hides more than the
/// password, which is the safe side. A URI without `:` before its last `@` has no password.
fn redact_one(uri: &str) -> String {
    let Some(at) = uri.rfind('@') else {
        return uri.to_owned();
    };
    let start = credentials_start(uri).filter(|&s| s <= at).unwrap_or(0);
    match uri[start..at].find(':') {
        Some(colon) => format!("{}:***{}", &uri[..start + colon], &uri[at..]),
        None => uri.to_owned(),
    }
}

/// Where the user name would start: after `scheme://`, or after `amqp` / `amqps` and the
/// `:` and `/` a mistyped URI has (`amqp//`, `amqp:/`, `amqps:`); `None` when there is no
/// recognisable scheme (the user name would then start the string).
fn credentials_start(uri: &str) -> Option<usize> {
    if let Some((scheme, _)) = uri.split_once("://") {
        let mut chars = scheme.chars();
        if chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return Some(scheme.len() + 3);
        }
    }
    ["amqps", "amqp"].into_iter().find_map(|scheme| {
        let rest = uri.strip_prefix(scheme)?;
        rest.starts_with([':', '/'])
            .then(|| uri.len() - rest.trim_start_matches([':', '/']).len())
    })
}

/// Decodes `%XX` escapes; `None` for a malformed escape (a `%` not followed by two hex
/// digits, which the `percent-encoding` crate would pass through) or a result that is not
/// UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let malformed = bytes.iter().enumerate().any(|(i, &b)| {
        b == b'%'
            && !bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if malformed {
        return None;
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(uri: &str) -> ConnectionConfig {
        ConnectionConfig::from_uri(uri).unwrap_or_else(|e| panic!("{uri}: {e}"))
    }

    fn error(uri: &str) -> String {
        match ConnectionConfig::from_uri(uri) {
            Ok(c) => panic!("{uri} parsed as {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn hosts(c: &ConnectionConfig) -> Vec<String> {
        c.endpoints().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn full_uri() {
        let c = parse(
            "amqp://al%40ice:p%3Ass@rabbit.example:5673/%2f?heartbeat=30&frame_max=8192&channel_max=10&connection_timeout=2500&connection_name=svc",
        );
        assert_eq!(c.username, "al@ice");
        assert_eq!(c.password.expose(), "p:ss");
        assert_eq!(c.host, "rabbit.example");
        assert_eq!(c.port, 5673);
        assert_eq!(c.virtual_host, "/");
        assert_eq!(c.heartbeat, Duration::from_secs(30));
        assert_eq!(c.frame_max, 8192);
        assert_eq!(c.channel_max, 10);
        assert_eq!(c.connection_timeout, Duration::from_millis(2500));
        assert_eq!(c.connection_name.as_deref(), Some("svc"));
        assert_eq!(c.tls, None);
        assert!(c.more_hosts.is_empty());
    }

    #[test]
    fn defaults_and_named_vhost() {
        let c = parse("amqp://localhost");
        assert_eq!((c.host.as_str(), c.port), ("localhost", 5672));
        assert_eq!(
            (c.username.as_str(), c.password.expose()),
            ("guest", "guest")
        );
        assert_eq!(c.virtual_host, "/");
        let c = parse("amqp://u@[::1]:5999/prod");
        assert_eq!(
            (c.host.as_str(), c.port, c.virtual_host.as_str()),
            ("::1", 5999, "prod")
        );
        assert_eq!(c.addr(), "[::1]:5999");
        assert_eq!(parse("amqp://").addr(), "127.0.0.1:5672");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn amqps_verifies_by_default_on_port_5671() {
        let c = parse("amqps://u:p@rabbit.example/prod");
        assert_eq!(c.port, 5671);
        assert_eq!(c.tls, Some(TlsOptions::default()));
        assert!(!c.tls.unwrap().accept_invalid_certificates);
        assert_eq!(parse("amqps://h:5999").port, 5999);
    }

    #[cfg(feature = "tls")]
    #[test]
    fn amqps_query_keys() {
        let c = parse(
            "amqps://rabbit.example?cacertfile=%2Fetc%2Fca.pem&certfile=/etc/client.pem&keyfile=/etc/client.key&verify=verify_peer&server_name_indication=rabbit.internal&auth_mechanism=external",
        );
        assert_eq!(
            c.tls,
            Some(TlsOptions {
                ca_file: Some("/etc/ca.pem".into()),
                server_name: Some("rabbit.internal".into()),
                client_cert: Some(ClientCertificate {
                    cert_file: "/etc/client.pem".into(),
                    key_file: "/etc/client.key".into(),
                }),
                accept_invalid_certificates: false,
            })
        );
        assert_eq!(c.auth_mechanism, AuthMechanism::External);
        let c = parse("amqps://h?verify=verify_none");
        assert!(c.tls.unwrap().accept_invalid_certificates);
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn amqps_needs_the_tls_feature() {
        assert!(error("amqps://h").contains("`tls` feature"));
    }

    #[test]
    fn hosts_in_one_uri() {
        let c = parse("amqp://u:p@a, b:5673,[::1],c:5674/vh?shuffle_hosts=true");
        assert_eq!(hosts(&c), ["a:5672", "b:5673", "[::1]:5672", "c:5674"]);
        assert_eq!((c.username.as_str(), c.virtual_host.as_str()), ("u", "vh"));
        assert!(c.shuffle_hosts);
    }

    #[cfg(feature = "tls")]
    #[test]
    fn a_list_of_uris() {
        let c = parse(
            "amqps://u:p@a/vh?cacertfile=ca.pem, amqps://u:p@b:6000/vh?cacertfile=ca.pem,amqps://u:p@c,d/vh?cacertfile=ca.pem",
        );
        assert_eq!(hosts(&c), ["a:5671", "b:6000", "c:5671", "d:5671"]);
        assert_eq!(c.tls.unwrap().ca_file, Some("ca.pem".into()));
        // A comma inside a password or a query value is not a list separator.
        let c =
            parse("amqp://u:p,q@a/vh?connection_name=x,y,amqp://u:p,q@b/vh?connection_name=x,y");
        assert_eq!(c.password.expose(), "p,q");
        assert_eq!(c.connection_name.as_deref(), Some("x,y"));
        assert_eq!(hosts(&c), ["a:5672", "b:5672"]);
    }

    #[test]
    fn unix_socket_hosts() {
        let c = parse("amqp://u:p@%2Fvar%2Frun%2Frabbitmq.sock/vh");
        assert_eq!(c.host, "/var/run/rabbitmq.sock");
        assert!(c.endpoint().is_unix_socket());
        assert_eq!(c.addr(), "unix:/var/run/rabbitmq.sock");
        assert_eq!(c.virtual_host, "vh");
        let c = parse("amqp://%2Frun%2Fa.sock,127.0.0.1");
        assert_eq!(hosts(&c), ["unix:/run/a.sock", "127.0.0.1:5672"]);
    }

    #[test]
    fn bad_uris_are_errors_without_the_password() {
        for (uri, why) in [
            ("http://h", "scheme"),
            ("amqp://h:notaport", "bad port"),
            ("amqp://h/a/b", "one path segment"),
            ("amqp://h?heartbeat=x", "heartbeat must be a number"),
            (
                "amqp://u:secret@h?bogus=1",
                "unknown query parameter \"bogus\"",
            ),
            ("amqp://u:secret@h/%zz", "percent-encoding"),
            ("amqp://u:secret@a,,b", "empty host"),
            ("amqp://u:secret@[::1", "unclosed ["),
            (
                "amqp://u:secret@h?cacertfile=ca.pem",
                "for amqps:// URIs only",
            ),
            (
                "amqp://u:secret@h?verify=verify_none",
                "for amqps:// URIs only",
            ),
            (
                "amqp://u:secret@h?auth_mechanism=kerberos",
                "auth_mechanism",
            ),
            ("amqp://u:secret@h?shuffle_hosts=yes", "shuffle_hosts"),
            (
                "amqp://u:secret@a/x,amqp://u:secret@b/y",
                "differ only in their hosts",
            ),
        ] {
            let err = error(uri);
            assert!(err.contains(why), "{uri}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }

    #[cfg(feature = "tls")]
    #[test]
    fn bad_tls_uris() {
        for (uri, why) in [
            ("amqps://u:secret@h?certfile=c.pem", "go together"),
            ("amqps://u:secret@h?keyfile=k.pem", "go together"),
            (
                "amqps://u:secret@h?verify=maybe",
                "verify_peer or verify_none",
            ),
            ("amqps://u:secret@h?server_name_indication=disable", "name"),
            ("amqps://u:secret@%2Frun%2Fr.sock", "Unix socket"),
            ("amqps://u:secret@a,amqp://u:secret@b", "differ only"),
            ("amqps://u:secret@a?fail_if_no_peer_cert=true", "unknown"),
        ] {
            let err = error(uri);
            assert!(err.contains(why), "{uri}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }

    /// URIs the parser cannot make sense of because of their credentials: no `://`, or a `/`
    /// or `?` in the password that was not percent-encoded. The error (shown or debugged) must
    /// not contain the password nor a piece of it.
    const MANGLED: [(&str, &[&str]); 7] = [
        ("amqp//user:s3cret@host", &["s3cret"]),
        ("amqp://user:s3c/ret@host", &["s3c", "ret"]),
        ("amqp://user:s3c?ret@host", &["s3c", "ret"]),
        ("amqp://user:s3c?ret@host/vh?heartbeat=5", &["s3c", "ret"]),
        ("user:s3cret@host", &["s3cret"]),
        ("amqps:user:s3cret@host", &["s3cret"]),
        // Parsed as host "user", port 4242 and virtual host "s3cret@host" if nothing checks.
        ("amqp://user:4242/s3cret@host", &["4242", "s3cret"]),
    ];

    #[test]
    fn mangled_uris_are_errors_without_the_password() {
        for (uri, secrets) in MANGLED {
            let err = ConnectionConfig::from_uri(uri).expect_err(uri);
            for shown in [err.to_string(), format!("{err:?}")] {
                for secret in secrets {
                    assert!(!shown.contains(secret), "{uri}: {shown}");
                }
                assert!(shown.contains("user:***@host"), "{uri}: {shown}");
            }
        }
    }

    #[test]
    fn redaction_covers_every_uri_of_a_list() {
        assert_eq!(
            redact("amqp://u:one@a/x, amqp://v:two@b/y"),
            "amqp://u:***@a/x, amqp://v:***@b/y"
        );
        let dbg = format!("{:?}", parse("amqp://u:hunter2@a,b"));
        assert!(!dbg.contains("hunter2"), "{dbg}");
    }
}
