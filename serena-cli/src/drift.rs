//! `serena topology to-definitions|export|diff`, and `verify` through the management API
//! (feature `management`).

use serena::ConnectionConfig;
use serena::topology::{ConnectionSettings, Topology, TopologyError};
use serena_topology::DriftKind;

use crate::management::{self, Management};
use crate::{Failure, connection_config};

fn is_http(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// The AMQP settings: `--url` unless it names the management API, then the environment, the
/// file, the default.
pub(crate) fn amqp_config(
    url: Option<&str>,
    settings: &ConnectionSettings,
) -> Result<ConnectionConfig, Failure> {
    connection_config(url.filter(|u| !is_http(u)), settings)
}

/// The management API: `--url` when it is http(s), else `SERENA_MANAGEMENT_URL`, else beside
/// the AMQP broker.
fn management(url: Option<&str>, config: &ConnectionConfig) -> Result<Management, Failure> {
    match url.filter(|u| is_http(u)) {
        Some(url) => Management::from_url(url, Some(config)),
        None => match std::env::var(management::ENV) {
            Ok(url) => Management::from_url(&url, Some(config)),
            Err(_) => Ok(Management::beside(config)),
        },
    }
}

fn broker(api: &Management, vhost: &str, prefix: Option<&str>) -> Result<Topology, Failure> {
    let definitions = api.definitions(vhost).map_err(|e| {
        Failure::failed(format!(
            "management API {} (virtual host {vhost:?}): {e}",
            api.base()
        ))
    })?;
    Topology::from_definitions(&definitions, vhost, prefix)
        .map_err(|e| Failure::failed(format!("management API {}: {e}", api.base())))
}

/// `export`: the broker's virtual host as `topology.toml` text, checked to load back.
pub(crate) fn export(
    url: Option<&str>,
    vhost: Option<String>,
    prefix: Option<&str>,
) -> Result<String, Failure> {
    let config = amqp_config(url, &ConnectionSettings::default())?;
    let api = management(url, &config)?;
    let vhost = vhost.unwrap_or(config.virtual_host);
    let t = broker(&api, &vhost, prefix)?;
    let body = t.to_toml().map_err(|e| Failure::failed(e.to_string()))?;
    let scope = match prefix {
        Some(p) => format!(", names starting {p:?}"),
        None => String::new(),
    };
    let text = format!(
        "# Exported by `serena topology export` from virtual host {vhost:?} at {}{scope}.\n\
         # A broker keeps no retry schedules: their queues are listed as plain queues.\n\n{body}",
        api.base()
    );
    // What `check` would say: the export must be a topology serena reads.
    Topology::from_toml(&text, "exported topology").map_err(|e| match e {
        TopologyError::Invalid { problems } => Failure::failed(format!(
            "the broker's definitions do not make a valid topology.toml:\n{}",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )),
        other => Failure::failed(other.to_string()),
    })?;
    Ok(text)
}

/// `diff`: prints every drift; exit 1 when there is any.
pub(crate) fn diff(
    t: &Topology,
    url: Option<&str>,
    vhost: Option<String>,
    prefix: Option<&str>,
) -> Result<(), Failure> {
    let config = amqp_config(url, &t.connection)?;
    let api = management(url, &config)?;
    let vhost = vhost.unwrap_or_else(|| config.virtual_host.clone());
    let theirs = broker(&api, &vhost, prefix)?;
    let drift = t.drift(&theirs, prefix);
    for d in &drift {
        println!("{d}");
    }
    let count = |f: fn(&DriftKind) -> bool| drift.iter().filter(|d| f(&d.kind)).count();
    let (missing, differ, extra) = (
        count(|k| matches!(k, DriftKind::Missing)),
        count(|k| matches!(k, DriftKind::Differs(_))),
        count(|k| matches!(k, DriftKind::Extra)),
    );
    let place = format!("virtual host {vhost:?} at {}", api.base());
    if drift.is_empty() {
        println!("no drift in {place}");
        return Ok(());
    }
    Err(Failure::failed(format!(
        "diff: drift: {missing} missing, {differ} different, {extra} extra in {place}"
    )))
}

/// `verify` through the management API: `None` when the API did not answer (after saying so
/// on stderr), for the caller to fall back to passive declares.
pub(crate) fn verify(t: &Topology, url: Option<&str>) -> Option<Result<(), Failure>> {
    let config = match amqp_config(url, &t.connection) {
        Ok(config) => config,
        Err(e) => return Some(Err(e)),
    };
    let api = match management(url, &config) {
        Ok(api) => api,
        Err(e) => return Some(Err(e)),
    };
    let vhost = config.virtual_host.clone();
    let definitions = match api.definitions(&vhost) {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "note: the management API at {} did not serve the definitions ({e}); checking \
                 with passive declares instead: existence only, bindings and properties not \
                 checked",
                api.base()
            );
            return None;
        }
    };
    let theirs = match Topology::from_definitions(&definitions, &vhost, None) {
        Ok(theirs) => theirs,
        Err(e) => return Some(Err(Failure::failed(e.to_string()))),
    };
    let (extra, drift): (Vec<_>, Vec<_>) = t
        .drift(&theirs, None)
        .into_iter()
        .partition(|d| d.kind == DriftKind::Extra);
    let place = format!("virtual host {vhost:?} at {}", api.base());
    if !extra.is_empty() {
        eprintln!(
            "note: {} entities on the broker are not in the file (`serena topology diff` lists \
             them)",
            extra.len()
        );
    }
    if drift.is_empty() {
        println!(
            "verify: no drift: every exchange, queue and binding is as the file says ({place})"
        );
        return Some(Ok(()));
    }
    let mut lines: Vec<String> = drift.iter().map(ToString::to_string).collect();
    lines.push(format!(
        "verify: drift: {} entities missing or different in {place}; `serena topology diff` \
         shows the whole picture",
        drift.len()
    ));
    Some(Err(Failure::failed(lines.join("\n"))))
}
