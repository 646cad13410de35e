//! Property tests: the topology loader never panics. The stable-toolchain counterpart of the
//! `topology_loader` fuzz target (`serena/fuzz`), run by `cargo test`.
//!
//! Inputs: arbitrary text, arbitrary bytes read as lossy UTF-8, TOML-shaped noise, documents
//! that are valid by construction, and those documents after a few edits (lines deleted,
//! duplicated or swapped, values of the wrong type, misspelt keys, stray punctuation, a cut).
//! Every input must end in `Ok` or `TopologyError::Invalid` with at least one problem, each
//! naming the file and a line and column inside the text; a valid document must load as
//! written.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serena::topology::{QueueType, Topology, TopologyError};

const FILE: &str = "prop.toml";

/// Loads `text` and checks the outcome; the topology when it loaded.
fn check(text: &str) -> Option<Topology> {
    match Topology::from_toml(text, FILE) {
        Ok(topology) => {
            if let Err(e) = topology.validate() {
                panic!("a loaded topology does not validate again: {e}\n{text}");
            }
            Some(topology)
        }
        Err(TopologyError::Invalid { problems }) => {
            assert!(!problems.is_empty(), "no problems for:\n{text}");
            let lines = text.matches('\n').count() + 1;
            for p in &problems {
                assert_eq!(p.file.as_deref(), Some(FILE), "{p}");
                let at = p.location.unwrap_or_else(|| panic!("no location: {p}"));
                assert!(
                    (1..=lines).contains(&at.line) && at.column >= 1,
                    "{at} is outside a text of {lines} lines: {p}\n{text}"
                );
                assert!(!p.message.is_empty());
            }
            let shown = TopologyError::Invalid {
                problems: problems.clone(),
            }
            .to_string();
            assert!(shown.lines().count() >= problems.len());
            None
        }
        Err(other) => panic!("text gave {other:?}"),
    }
}

/// A TOML basic string holding `s`.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One `[[table]]` (or `[connection]`) of a document: its keys and rendered values.
#[derive(Debug, Clone)]
struct Table {
    header: &'static str,
    keys: Vec<(&'static str, String)>,
}

/// A document and what it must load as.
#[derive(Debug, Clone)]
struct Doc {
    tables: Vec<Table>,
    exchanges: Vec<String>,
    queues: Vec<String>,
    bindings: usize,
}

impl Doc {
    fn render(&self) -> String {
        let mut out = String::from("# generated\n");
        for t in &self.tables {
            out.push_str(t.header);
            out.push('\n');
            for (k, v) in &t.keys {
                out.push_str(&format!("{k} = {v}\n"));
            }
            out.push('\n');
        }
        out
    }
}

/// Names with some variety: dots, spaces, non-ASCII, quotes; made unique by an index.
fn name(prefix: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(".by-header".to_owned()),
        Just(" ünïcödé".to_owned()),
        Just("\"quoted\"\\".to_owned()),
        "[a-z.]{1,12}",
    ]
    .prop_map(move |tail| format!("{prefix}{tail}"))
}

/// An optional `key = value`.
fn opt(
    key: &'static str,
    value: impl Strategy<Value = String> + 'static,
) -> BoxedStrategy<Option<(&'static str, String)>> {
    proptest::option::of(value.prop_map(move |v| (key, v))).boxed()
}

fn int(range: std::ops::RangeInclusive<i64>) -> impl Strategy<Value = String> {
    range.prop_map(|n| n.to_string())
}

fn boolean() -> impl Strategy<Value = String> {
    any::<bool>().prop_map(|b| b.to_string())
}

/// A document valid by construction: exchanges of the standard kinds, queues of every type
/// with only the properties their type takes, bindings between them, and `[connection]`.
fn valid_doc() -> impl Strategy<Value = Doc> {
    let exchange_names = vec(name("x"), 1..4);
    let queue_names = vec(name("q"), 0..4);
    (exchange_names, queue_names)
        .prop_flat_map(|(xs, qs)| {
            let xs: Vec<String> = xs
                .into_iter()
                .enumerate()
                .map(|(i, n)| format!("{n}{i}"))
                .collect();
            let qs: Vec<String> = qs
                .into_iter()
                .enumerate()
                .map(|(i, n)| format!("{n}{i}"))
                .collect();
            let exchanges = xs
                .iter()
                .map(|n| exchange(n.clone(), xs.clone()))
                .collect::<Vec<_>>();
            let queues = qs
                .iter()
                .map(|n| queue(n.clone(), xs.clone()))
                .collect::<Vec<_>>();
            let bindings = vec(binding(xs.clone(), qs.clone()), 0..5);
            let connection = proptest::option::of(connection());
            (exchanges, queues, bindings, connection, Just((xs, qs)))
        })
        .prop_map(|(exchanges, queues, bindings, connection, (xs, qs))| {
            let mut tables = Vec::new();
            tables.extend(connection);
            tables.extend(exchanges);
            tables.extend(queues);
            let count = bindings.len();
            // Routing keys made unique, so no binding is listed twice.
            for (i, mut b) in bindings.into_iter().enumerate() {
                b.keys.push(("routing_key", quoted(&format!("rk.{i}"))));
                tables.push(b);
            }
            Doc {
                tables,
                exchanges: xs,
                queues: qs,
                bindings: count,
            }
        })
}

fn connection() -> impl Strategy<Value = Table> {
    (
        opt("url", Just(quoted("amqp://guest:guest@localhost:5672/%2f"))),
        opt("heartbeat", int(0..=65_535)),
        opt("frame_max", int(4096..=i64::from(u32::MAX))),
        opt("channel_buffer_size", int(1..=65_535)),
    )
        .prop_map(|(a, b, c, d)| Table {
            header: "[connection]",
            keys: [a, b, c, d].into_iter().flatten().collect(),
        })
}

fn exchange(name: String, all: Vec<String>) -> impl Strategy<Value = Table> {
    let kinds = prop::sample::select(vec!["direct", "fanout", "topic", "headers"]);
    let mut targets: Vec<String> = all.iter().map(|n| quoted(n)).collect();
    targets.push(quoted("amq.fanout"));
    (
        kinds,
        opt("durable", boolean()),
        opt("auto_delete", boolean()),
        opt("internal", boolean()),
        opt("alternate_exchange", prop::sample::select(targets)),
        opt(
            "arguments",
            "[a-z]{1,8}".prop_map(|v| format!("{{ note = {}, n = 5, on = true }}", quoted(&v))),
        ),
    )
        .prop_map(move |(kind, a, b, c, d, e)| {
            let mut keys = vec![("name", quoted(&name)), ("type", quoted(kind))];
            keys.extend([a, b, c, d, e].into_iter().flatten());
            Table {
                header: "[[exchanges]]",
                keys,
            }
        })
}

fn queue(name: String, exchanges: Vec<String>) -> impl Strategy<Value = Table> {
    let types = prop::sample::select(vec![
        QueueType::Classic,
        QueueType::Quorum,
        QueueType::Stream,
    ]);
    let mut dlx: Vec<String> = exchanges.iter().map(|n| quoted(n)).collect();
    dlx.push(quoted(""));
    (
        types,
        prop::sample::select(dlx),
        any::<bool>(),
        vec(any::<u16>(), 14),
    )
        .prop_map(move |(kind, dlx, with_dlx, picks)| {
            let mut keys = vec![("name", quoted(&name)), ("type", quoted(kind.as_str()))];
            let classic = kind == QueueType::Classic;
            // Each optional property, with a value in range, when its pick says so and the
            // type takes it.
            let mut wanted = picks.iter().map(|p| p % 2 == 0);
            let mut add = |key: &'static str, value: String, allowed: bool| {
                if wanted.next().unwrap_or(false) && allowed {
                    keys.push((key, value));
                }
            };
            let n = |i: usize| u64::from(picks[i]);
            add("durable", (!classic || n(0) % 3 != 0).to_string(), true);
            add("exclusive", (n(1) % 2 == 0).to_string(), classic);
            add("auto_delete", (n(2) % 2 == 0).to_string(), classic);
            add(
                "message_ttl",
                (n(3) * 1000).to_string(),
                kind.supports("message_ttl"),
            );
            add("expires", (n(4) + 1).to_string(), kind.supports("expires"));
            add("max_length", n(5).to_string(), kind.supports("max_length"));
            add(
                "max_length_bytes",
                (n(6) << 20).to_string(),
                kind.supports("max_length_bytes"),
            );
            let overflow = if classic { n(7) % 3 } else { n(7) % 2 };
            add(
                "overflow",
                quoted(["drop-head", "reject-publish", "reject-publish-dlx"][overflow as usize]),
                kind.supports("overflow"),
            );
            add(
                "single_active_consumer",
                "true".into(),
                kind.supports("single_active_consumer"),
            );
            add(
                "delivery_limit",
                n(8).to_string(),
                kind.supports("delivery_limit"),
            );
            add(
                "max_age",
                quoted(&format!("{}D", n(9))),
                kind.supports("max_age"),
            );
            add(
                "max_priority",
                (n(10) % 255 + 1).to_string(),
                kind.supports("max_priority"),
            );
            if with_dlx && kind.supports("dead_letter_exchange") {
                keys.push(("dead_letter_exchange", dlx.clone()));
                if kind.supports("dead_letter_routing_key") && n(11) % 2 == 0 {
                    keys.push(("dead_letter_routing_key", quoted("dead")));
                }
            }
            // Retries, on the queues that take them. Names end in a digit, so the queues a
            // schedule adds (ending in a unit, or in "parked" or "dead") are no other queue's.
            let exclusive = keys.contains(&("exclusive", "true".into()));
            if n(12) % 3 == 0 && kind != QueueType::Stream && !exclusive {
                let delays: Vec<String> = (0..=n(13) % 3)
                    .map(|i| {
                        quoted(["500ms", "1s", "10s", "1m", "1h"][((n(13) >> i) % 5) as usize])
                    })
                    .collect();
                let park = if n(12) % 2 == 0 {
                    format!(", park = {}", quoted(&format!("{name}.dead")))
                } else {
                    String::new()
                };
                keys.push((
                    "retry",
                    format!("{{ delays = [{}]{park} }}", delays.join(", ")),
                ));
            }
            Table {
                header: "[[queues]]",
                keys,
            }
        })
}

fn binding(exchanges: Vec<String>, queues: Vec<String>) -> impl Strategy<Value = Table> {
    let mut destinations: Vec<(&'static str, String)> =
        exchanges.iter().map(|x| ("exchange", quoted(x))).collect();
    destinations.extend(queues.iter().map(|q| ("queue", quoted(q))));
    (
        prop::sample::select(exchanges),
        prop::sample::select(destinations),
        any::<bool>(),
    )
        .prop_map(|(source, destination, x_match)| {
            let mut keys = vec![("source", quoted(&source)), destination];
            if x_match {
                keys.push(("arguments", "{ x-match = \"any\", tier = \"gold\" }".into()));
            }
            Table {
                header: "[[bindings]]",
                keys,
            }
        })
}

/// An edit to a rendered document.
#[derive(Debug, Clone)]
enum Edit {
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    /// Replace the value on a `key = value` line.
    ReplaceValue(usize, &'static str),
    /// Misspell the key on a `key = value` line.
    RenameKey(usize, usize),
    Insert(usize, &'static str),
    Truncate(usize),
}

/// Values of every TOML type, and some no type at all.
const VALUES: &[&str] = &[
    "\"text\"",
    "\"\"",
    "42",
    "-1",
    "0",
    "9223372036854775807",
    "18446744073709551616",
    "0x10",
    "1.5",
    "nan",
    "-inf",
    "true",
    "[1, \"two\"]",
    "[]",
    "{ a = 1 }",
    "{ x-match = 7 }",
    "1979-05-27T07:32:00Z",
    "07:32:00",
    "\"7Q\"",
    "\"amq.direct\"",
    "\"reject-publish-dlx\"",
    "{ delays = [\"0s\", \"1d\", 5], park = \"\" }",
    "{ delays = [] }",
    "[\"50000h\", \"1 s\"]",
    "'''multi\nline'''",
    "",
    "\"unterminated",
];

/// Stray punctuation and text.
const INSERTS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "=",
    "\"",
    "'",
    "\n",
    "#",
    ",",
    ".",
    "\\",
    "\u{0}",
    "ü",
    "[[queues]]\n",
    "[[bindings]]\nsource = \"nowhere\"\n",
    "[connection]\n",
    "x-max-priority = 5\n",
    "type = \"stream\"\n",
    "name = \"amq.x\"\n",
];

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let one = prop_oneof![
        1 => any::<usize>().prop_map(Edit::DeleteLine),
        1 => any::<usize>().prop_map(Edit::DuplicateLine),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        3 => (any::<usize>(), prop::sample::select(VALUES)).prop_map(|(l, v)| Edit::ReplaceValue(l, v)),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(l, c)| Edit::RenameKey(l, c)),
        2 => (any::<usize>(), prop::sample::select(INSERTS)).prop_map(|(at, s)| Edit::Insert(at, s)),
        1 => any::<usize>().prop_map(Edit::Truncate),
    ];
    vec(one, 1..4)
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut cut: Option<usize> = None;
    for edit in edits {
        let n = lines.len().max(1);
        match *edit {
            Edit::DeleteLine(i) if !lines.is_empty() => {
                lines.remove(i % n);
            }
            Edit::DuplicateLine(i) if !lines.is_empty() => {
                let line = lines[i % n].clone();
                lines.insert(i % n, line);
            }
            Edit::SwapLines(a, b) if !lines.is_empty() => lines.swap(a % n, b % n),
            Edit::ReplaceValue(i, v) if !lines.is_empty() => {
                let line = &mut lines[i % n];
                if let Some(eq) = line.find(" = ") {
                    line.truncate(eq + 3);
                    line.push_str(v);
                }
            }
            Edit::RenameKey(i, c) if !lines.is_empty() => {
                let line = &mut lines[i % n];
                if let Some(eq) = line.find(" = ")
                    && eq > 0
                {
                    // Drop one character of the key, or double it.
                    let at = c % eq;
                    if line.is_char_boundary(at) && line.is_char_boundary(at + 1) {
                        if c % 2 == 0 {
                            line.remove(at);
                        } else {
                            let ch = line.as_bytes()[at] as char;
                            line.insert(at, ch);
                        }
                    }
                }
            }
            Edit::Insert(at, s) => {
                let mut joined = lines.join("\n");
                let mut at = at % (joined.len() + 1);
                while !joined.is_char_boundary(at) {
                    at -= 1;
                }
                joined.insert_str(at, s);
                lines = joined.lines().map(str::to_owned).collect();
            }
            Edit::Truncate(at) => cut = Some(at),
            _ => {}
        }
    }
    let mut text = lines.join("\n");
    if let Some(at) = cut {
        let mut at = at % (text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
    }
    text
}

/// One line of TOML-shaped noise: headers, known and unknown keys, values of any type.
fn noise_line() -> impl Strategy<Value = String> {
    let keys = prop::sample::select(vec![
        "name",
        "type",
        "durable",
        "source",
        "queue",
        "exchange",
        "arguments",
        "max_age",
        "max_priority",
        "url",
        "heartbeat",
        "frame_max",
        "nmae",
        "x-expires",
        "routing_key",
        "dead_letter_exchange",
        "overflow",
        "declare",
        "retry",
        "delays",
        "park",
    ]);
    prop_oneof![
        1 => prop::sample::select(vec![
            "[[exchanges]]", "[[queues]]", "[[bindings]]", "[connection]", "[queues]",
            "[[connection]]", "exchanges = 5", "[other]", "[queues.retry]",
            "retry = { delays = [\"1s\"] }",
        ])
        .prop_map(str::to_owned),
        4 => (keys, prop::sample::select(VALUES)).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => "[ -~]{0,30}",
    ]
}

proptest! {
    #![proptest_config(Config { cases: 1000, failure_persistence: None, ..Config::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        check(&text);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn toml_shaped_noise_never_panics(lines in vec(noise_line(), 0..30)) {
        check(&lines.join("\n"));
    }
}

proptest! {
    #![proptest_config(Config { cases: 400, failure_persistence: None, ..Config::default() })]

    #[test]
    fn valid_documents_load_as_written(doc in valid_doc()) {
        let text = doc.render();
        let topology = match Topology::from_toml(&text, FILE) {
            Ok(t) => t,
            Err(e) => panic!("a valid document was refused:\n{e}\n---\n{text}"),
        };
        let exchanges: Vec<&str> = topology.exchanges.iter().map(|x| x.name.as_str()).collect();
        let queues: Vec<&str> = topology.queues.iter().map(|q| q.name.as_str()).collect();
        prop_assert_eq!(exchanges, doc.exchanges.iter().map(String::as_str).collect::<Vec<_>>());
        prop_assert_eq!(queues, doc.queues.iter().map(String::as_str).collect::<Vec<_>>());
        prop_assert_eq!(topology.bindings.len(), doc.bindings);
        let retries = doc
            .tables
            .iter()
            .filter(|t| t.keys.iter().any(|(k, _)| *k == "retry"))
            .count();
        prop_assert_eq!(topology.retry_schedules().len(), retries);
    }
}

proptest! {
    #![proptest_config(Config { cases: 2000, failure_persistence: None, ..Config::default() })]

    #[test]
    fn edited_documents_never_panic(doc in valid_doc(), edits in edits()) {
        check(&apply(&doc.render(), &edits));
    }
}
