//! Topology files: every file in `tests/topology/bad/` must fail with exactly the text in its
//! sibling `.err` file, every file in `tests/topology/good/` must load, and so must the
//! repository's example `topology.toml`.
//!
//! To write the `.err` files after changing a message, run with `SERENA_BLESS=1` and review the
//! diff.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serena::proto::FieldValue;
use serena::topology::{
    ConnectionSettingsExt, Destination, ExchangeKind, Location, Overflow, QueueType, Retry,
    Topology, TopologyError,
};

fn bad_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/topology/bad")
}

fn bad_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(bad_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn error_text(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path.file_name().unwrap().to_str().unwrap();
    match Topology::from_toml(&text, name) {
        Ok(_) => panic!("{name} loaded, but it is in the bad directory"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_bad_file_gives_its_exact_error() {
    let files = bad_files();
    assert!(files.len() >= 18, "only {} bad files", files.len());
    let bless = std::env::var_os("SERENA_BLESS").is_some();
    let mut mismatches = Vec::new();
    for path in &files {
        let got = error_text(path);
        let expected_path = path.with_extension("err");
        if bless {
            std::fs::write(&expected_path, format!("{got}\n")).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{} has no .err file", path.display()));
        if got != expected.trim_end_matches('\n') {
            mismatches.push(format!(
                "{}:\n--- expected\n{}\n--- got\n{got}\n",
                path.display(),
                expected.trim_end()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn every_err_file_has_its_toml() {
    for entry in std::fs::read_dir(bad_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "err") {
            assert!(
                path.with_extension("toml").exists(),
                "{} has no .toml",
                path.display()
            );
        }
    }
}

#[test]
fn every_problem_names_file_line_column_and_entity() {
    for path in bad_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let err = Topology::from_toml(&text, "f.toml").unwrap_err();
        assert!(!err.problems().is_empty());
        for p in err.problems() {
            assert_eq!(p.file.as_deref(), Some("f.toml"), "{p}");
            let at = p.location.unwrap_or_else(|| panic!("no location: {p}"));
            assert!(at.line >= 1 && at.column >= 1, "{p}");
            assert!(!p.entity.to_string().is_empty(), "{p}");
        }
    }
}

#[test]
fn problems_come_in_file_order() {
    for path in bad_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let err = Topology::from_toml(&text, "f.toml").unwrap_err();
        let locations: Vec<_> = err.problems().iter().map(|p| p.location).collect();
        let mut sorted = locations.clone();
        sorted.sort();
        assert_eq!(locations, sorted, "{}", path.display());
    }
}

fn good_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/topology/good")
}

#[test]
fn every_good_file_loads() {
    let mut loaded = 0;
    for entry in std::fs::read_dir(good_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(e) = Topology::load(&path) {
                panic!("{}:\n{e}", path.display());
            }
            loaded += 1;
        }
    }
    assert!(loaded >= 1);
}

#[test]
fn retry_schedules_load_both_ways_and_name_the_queues_apply_adds() {
    let t = Topology::load(good_dir().join("retry.toml")).unwrap();
    let ms =
        |ms: &[u64]| -> Vec<Duration> { ms.iter().map(|&m| Duration::from_millis(m)).collect() };
    assert_eq!(
        t.queues[0].retry,
        Some(Retry::new(ms(&[1_000, 10_000, 60_000, 10_000])))
    );
    assert_eq!(
        t.queues[1].retry,
        Some(Retry {
            delays: ms(&[500, 90_000, 7_200_000]),
            park: Some("payments.parked".into()),
        })
    );
    assert_eq!(t.queues[2].retry, None);

    let orders = t.retry_schedule("orders.work").unwrap();
    assert_eq!(orders.attempts(), 5);
    assert_eq!(orders.park, "orders.work.parked");
    assert_eq!(
        orders.after_failed(4).unwrap().queue,
        "orders.work.retry.10s"
    );
    assert_eq!(t.retry_schedules().len(), 4);
    assert_eq!(t.retry_schedule("payments.parked"), None);

    let added = t.retry_queues();
    let names: Vec<&str> = added.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "orders.work.retry.1s",
            "orders.work.retry.10s",
            "orders.work.retry.1m",
            "orders.work.parked",
            "payments.work.retry.500ms",
            "payments.work.retry.90s",
            "payments.work.retry.2h",
            "legacy.work.retry.5m",
            "shared.parked",
            "reports.work.retry.1h",
        ]
    );
    let minute = &added[2];
    assert_eq!(minute.kind, QueueType::Quorum);
    assert_eq!(minute.message_ttl, Some(60_000));
    assert_eq!(minute.dead_letter_exchange.as_deref(), Some(""));
    assert_eq!(
        minute.dead_letter_routing_key.as_deref(),
        Some("orders.work")
    );
    assert!(minute.durable && minute.declare);
    let parked = &added[3];
    assert_eq!((parked.kind, parked.message_ttl), (QueueType::Quorum, None));
    assert!(!added[5].durable, "like payments.work");
    assert!(!added[7].declare && !added[8].declare, "like legacy.work");

    let origin = t.queues[1].origin.as_ref().unwrap();
    assert_eq!(
        origin.key_location("retry.delays[1]"),
        Some(Location {
            line: 14,
            column: 20
        })
    );
    assert_eq!(
        origin.key_location("retry.park"),
        Some(Location {
            line: 15,
            column: 1
        })
    );
}

#[test]
fn a_missing_file_is_a_read_error_naming_it() {
    let err = Topology::load("/nonexistent/topology.toml").unwrap_err();
    assert!(matches!(err, TopologyError::Read { .. }));
    assert!(err.problems().is_empty());
    let text = err.to_string();
    assert!(
        text.starts_with("cannot read topology file /nonexistent/topology.toml: "),
        "{text}"
    );
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn the_example_topology_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology.toml");
    let t = Topology::load(&path).unwrap();
    let names = |v: Vec<&str>| v.join(",");
    assert_eq!(
        names(t.exchanges.iter().map(|x| x.name.as_str()).collect()),
        "orders,orders.unrouted,audit,orders.by-header"
    );
    assert_eq!(
        names(t.queues.iter().map(|q| q.name.as_str()).collect()),
        "orders.work,orders.parking,orders.urgent,orders.unrouted,audit.log"
    );
    assert_eq!(t.bindings.len(), 6);

    let orders = &t.exchanges[0];
    assert_eq!(orders.kind, ExchangeKind::Topic);
    assert_eq!(
        orders.alternate_exchange.as_deref(),
        Some("orders.unrouted")
    );
    assert!(t.exchanges[2].internal);
    assert_eq!(t.exchanges[3].kind, ExchangeKind::Headers);

    let work = &t.queues[0];
    assert_eq!(work.kind, QueueType::Quorum);
    assert_eq!(work.dead_letter_exchange.as_deref(), Some(""));
    assert_eq!(
        work.dead_letter_routing_key.as_deref(),
        Some("orders.parking")
    );
    assert_eq!(work.delivery_limit, Some(5));
    let retry = t.retry_schedule("orders.work").unwrap();
    let waits: Vec<&str> = retry.steps.iter().map(|s| s.queue.as_str()).collect();
    assert_eq!(
        waits,
        [
            "orders.work.retry.1s",
            "orders.work.retry.10s",
            "orders.work.retry.1m"
        ]
    );
    assert_eq!(retry.park, "orders.parking");
    assert_eq!(t.retry_queues().len(), 3, "orders.parking is listed");
    assert_eq!(t.queues[2].overflow, Some(Overflow::RejectPublish));
    assert_eq!(t.queues[2].max_priority, Some(10));
    assert_eq!(t.queues[4].kind, QueueType::Stream);
    assert_eq!(t.queues[4].max_age.as_deref(), Some("7D"));

    let e2e = &t.bindings[1];
    assert_eq!(e2e.destination, Destination::Exchange("audit".into()));
    let headers = &t.bindings[4];
    assert_eq!(
        headers
            .arguments
            .get("x-match")
            .and_then(FieldValue::as_str),
        Some("any")
    );
    assert_eq!(t.connection.heartbeat, Some(30));
}

#[test]
fn neither_debug_output_nor_a_problem_shows_the_password() {
    let t = Topology::from_toml(
        "[connection]\nurl = \"amqp://app:s3cret@rabbit.internal/orders\"\n",
        "t.toml",
    )
    .unwrap();
    let shown = format!("{t:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(
        shown.contains("amqp://app:***@rabbit.internal/orders"),
        "{shown}"
    );
}

/// The file's `url` is parsed when the settings are resolved (where `SERENA_URL` may replace
/// it), and a bad one is reported there at its place in the file, never with its password.
#[test]
fn a_bad_url_is_reported_at_its_place_when_resolved() {
    let no_env = |_: &str| None;
    for (url, secrets, why) in [
        (
            "http://guest:s3cret@rabbit.example:15672/",
            &["s3cret"][..],
            "the scheme must be amqp:// or amqps://",
        ),
        ("amqp//user:s3cret@host", &["s3cret"], "the scheme must be"),
        (
            "amqp://user:s3c/ret@host",
            &["s3c", "ret"],
            "an @ after the host",
        ),
        (
            "amqp://user:s3c?ret@host",
            &["s3c", "ret"],
            "an @ after the host",
        ),
    ] {
        let text = format!("# the broker\n[connection]\nurl = {url:?}\n");
        let t = Topology::from_toml(&text, "t.toml").expect(url);
        let err = t.connection.resolve_with(None, no_env).expect_err(url);
        assert!(
            err.to_string()
                .starts_with("invalid configuration: t.toml:3:1: [connection]: url: "),
            "{err}"
        );
        assert!(err.to_string().contains(why), "{err}");
        for shown in [err.to_string(), format!("{err:?}"), format!("{t:?}")] {
            for secret in secrets {
                assert!(!shown.contains(secret), "{url}: {shown}");
            }
        }
        // Replaced by SERENA_URL, the file's url does not matter.
        let env = |name: &str| (name == "SERENA_URL").then(|| "amqp://127.0.0.1".to_owned());
        assert!(t.connection.resolve_with(None, env).is_ok(), "{url}");
    }
}

#[test]
fn declare_false_entities_are_kept_as_expected_only() {
    let t = Topology::from_toml(
        "[[exchanges]]\nname = \"amq.topic\"\ndeclare = false\n\
         [[queues]]\nname = \"legacy\"\ndeclare = false\n\
         [[bindings]]\nsource = \"amq.topic\"\nqueue = \"legacy\"\ndeclare = false\n",
        "t.toml",
    )
    .unwrap();
    assert!(!t.exchanges[0].declare && !t.queues[0].declare && !t.bindings[0].declare);
}

#[test]
fn the_topology_guide_shows_the_example_file_as_it_is() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let guide = std::fs::read_to_string(root.join("docs/topology.md")).unwrap();
    let example = std::fs::read_to_string(root.join("topology.toml")).unwrap();
    assert!(
        guide.contains(&format!("```toml\n{example}```")),
        "docs/topology.md must show topology.toml verbatim"
    );
}

#[test]
fn frame_size_is_still_read_as_frame_max() {
    let old = Topology::from_toml("[connection]\nframe_size = 8192\n", "t.toml").unwrap();
    assert_eq!(old.connection.frame_max, Some(8192));
    let new = Topology::from_toml("[connection]\nframe_max = 16384\n", "t.toml").unwrap();
    assert_eq!(new.connection.frame_max, Some(16384));
}
