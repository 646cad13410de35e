//! A picture of a topology's routing, as Mermaid or Graphviz DOT text: what
//! `serena topology graph` prints.
//!
//! See [`GraphFormat`] for what is drawn and how.

use std::collections::HashMap;
use std::fmt::Write as _;

use serena_proto::{FieldTable, FieldValue};

use super::error::Destination;
use super::model::{STANDARD_EXCHANGES, Topology};
use super::retry::DelayText;

/// The text format of a [`Topology::graph`]. What is drawn:
///
/// ```text
///   exchange (hexagon) --binding key / header match--> queue (cylinder) or exchange
///   exchange  - - unrouted - ->  its alternate exchange
///   queue     - - dead letters - ->  its dead-letter exchange (or, through the default
///                                    exchange with a key, straight to the queue of that name)
///   work queue ==attempt n fails==> <queue>.retry.<delay> - - after <delay> - -> work queue
///   work queue ==attempt N fails==> park queue
/// ```
///
/// Every queue apply declares is drawn, the retry queues included; an exchange or queue that a
/// binding or route names but the file does not list is drawn with a dotted outline. Pure: the
/// same topology always gives the same text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    /// A Mermaid flowchart (`flowchart LR`), which GitHub renders in a ```` ```mermaid ```` block.
    Mermaid,
    /// A Graphviz `digraph`, for `dot -Tsvg`.
    Dot,
}

impl GraphFormat {
    /// The format named `name` (`mermaid` or `dot`), if it is one.
    pub fn from_name(name: &str) -> Option<GraphFormat> {
        match name {
            "mermaid" => Some(GraphFormat::Mermaid),
            "dot" => Some(GraphFormat::Dot),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Exchange,
    Queue,
}

#[derive(Debug)]
struct Node {
    id: String,
    shape: Shape,
    /// Lines of the label: the name, then what it is.
    lines: Vec<String>,
    /// Named by a binding or route but not listed in the file.
    external: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// A binding.
    Binding,
    /// An alternate exchange or a dead-letter route: messages the broker moves on its own.
    Fallback,
    /// A retry or park step, which the worker publishes.
    Retry,
}

#[derive(Debug)]
struct Edge {
    from: usize,
    to: usize,
    label: String,
    route: Route,
}

#[derive(Debug, Default)]
struct Graph {
    nodes: Vec<Node>,
    exchanges: HashMap<String, usize>,
    queues: HashMap<String, usize>,
    edges: Vec<Edge>,
}

impl Graph {
    fn add(&mut self, shape: Shape, name: &str, detail: String, external: bool) -> usize {
        let index = self.nodes.len();
        let (prefix, names) = match shape {
            Shape::Exchange => ("x", &mut self.exchanges),
            Shape::Queue => ("q", &mut self.queues),
        };
        names.insert(name.to_owned(), index);
        let shown = if name.is_empty() {
            "(default exchange)".to_owned()
        } else {
            name.to_owned()
        };
        let mut lines = vec![shown];
        if !detail.is_empty() {
            lines.push(detail);
        }
        self.nodes.push(Node {
            id: format!("{prefix}{index}"),
            shape,
            lines,
            external,
        });
        index
    }

    /// The node of exchange `name`, added with a dotted outline when the file does not list it.
    fn exchange(&mut self, name: &str) -> usize {
        if let Some(&i) = self.exchanges.get(name) {
            return i;
        }
        let standard = name.is_empty() || STANDARD_EXCHANGES.contains(&name);
        self.add(Shape::Exchange, name, String::new(), !standard)
    }

    fn queue(&mut self, name: &str) -> usize {
        match self.queues.get(name) {
            Some(&i) => i,
            None => self.add(Shape::Queue, name, String::new(), true),
        }
    }

    fn edge(&mut self, from: usize, to: usize, label: String, route: Route) {
        self.edges.push(Edge {
            from,
            to,
            label,
            route,
        });
    }
}

impl Topology {
    /// The routing drawn as `format` text: exchanges, every queue apply declares (retry queues
    /// included), bindings with their keys and header matches, alternate exchanges, dead-letter
    /// routes and retry loops (see [`GraphFormat`]).
    pub fn graph(&self, format: GraphFormat) -> String {
        let graph = self.build_graph();
        match format {
            GraphFormat::Mermaid => mermaid(&graph),
            GraphFormat::Dot => dot(&graph),
        }
    }

    fn build_graph(&self) -> Graph {
        let mut g = Graph::default();
        for x in &self.exchanges {
            let mut detail = x.kind.to_string();
            if x.internal {
                detail.push_str(", internal");
            }
            g.add(Shape::Exchange, &x.name, detail, false);
        }
        let plan = self.queue_plan();
        let schedules = self.retry_schedules();
        let delay_queues: HashMap<&str, std::time::Duration> = schedules
            .iter()
            .flat_map(|s| s.steps.iter().map(|step| (step.queue.as_str(), step.delay)))
            .collect();
        for (_, q) in &plan {
            let mut detail = q.kind.to_string();
            if let Some(delay) = delay_queues.get(q.name.as_str()) {
                let _ = write!(detail, ", waits {}", DelayText(*delay));
            }
            g.add(Shape::Queue, &q.name, detail, false);
        }
        for b in &self.bindings {
            let from = g.exchange(&b.source);
            let to = match &b.destination {
                Destination::Queue(n) => g.queue(n),
                Destination::Exchange(n) => g.exchange(n),
            };
            g.edge(
                from,
                to,
                binding_label(&b.routing_key, &b.arguments),
                Route::Binding,
            );
        }
        for x in &self.exchanges {
            if let Some(ae) = &x.alternate_exchange {
                let (from, to) = (g.exchange(&x.name), g.exchange(ae));
                g.edge(from, to, "unrouted".into(), Route::Fallback);
            }
        }
        for (_, q) in &plan {
            let Some(dlx) = &q.dead_letter_exchange else {
                continue;
            };
            let from = g.queue(&q.name);
            let label = match delay_queues.get(q.name.as_str()) {
                Some(delay) => format!("after {}", DelayText(*delay)),
                None => "dead letters".to_owned(),
            };
            match (dlx.as_str(), &q.dead_letter_routing_key) {
                // The default exchange routes a key to the queue of that name.
                ("", Some(key)) => {
                    let to = g.queue(key);
                    g.edge(from, to, label, Route::Fallback);
                }
                (_, key) => {
                    let to = g.exchange(dlx);
                    let label = match key {
                        Some(key) => format!("{label}, key {key}"),
                        None => label,
                    };
                    g.edge(from, to, label, Route::Fallback);
                }
            }
        }
        for s in &schedules {
            let from = g.queue(&s.queue);
            // Steps sharing a delay share a queue: one arrow, every attempt on it.
            let mut attempts: Vec<(&str, Vec<usize>)> = Vec::new();
            for (i, step) in s.steps.iter().enumerate() {
                match attempts.iter_mut().find(|(q, _)| *q == step.queue) {
                    Some((_, list)) => list.push(i + 1),
                    None => attempts.push((&step.queue, vec![i + 1])),
                }
            }
            attempts.push((&s.park, vec![s.steps.len() + 1]));
            for (queue, list) in attempts {
                let to = g.queue(queue);
                let numbers: Vec<String> = list.iter().map(ToString::to_string).collect();
                let label = match numbers.len() {
                    1 => format!("attempt {} fails", numbers[0]),
                    _ => format!("attempts {} fail", numbers.join(", ")),
                };
                g.edge(from, to, label, Route::Retry);
            }
        }
        g
    }
}

/// A binding's label: its key, and for a headers match `x-match` and the headers.
fn binding_label(key: &str, arguments: &FieldTable) -> String {
    let args: Vec<String> = arguments
        .iter()
        .filter(|(k, _)| k.as_str() != "x-match")
        .map(|(k, v)| format!("{k}={}", value_text(v)))
        .collect();
    let matching = arguments.get("x-match").map(value_text);
    let mut label = key.to_owned();
    if !args.is_empty() || matching.is_some() {
        if !label.is_empty() {
            label.push(' ');
        }
        let joiner = match matching.as_deref() {
            Some("any" | "any-with-x") => " or ",
            _ => " and ",
        };
        match &matching {
            Some(m) => {
                let _ = write!(label, "[{m}: {}]", args.join(joiner));
            }
            None => {
                let _ = write!(label, "[{}]", args.join(", "));
            }
        }
    }
    label
}

/// A field value as short text: strings bare, numbers and booleans as written.
pub(crate) fn value_text(v: &FieldValue) -> String {
    if let Some(s) = v.as_str() {
        return s.to_owned();
    }
    if let Some(n) = v.as_i64() {
        return n.to_string();
    }
    match v {
        FieldValue::Bool(b) => b.to_string(),
        FieldValue::U64(n) => n.to_string(),
        FieldValue::F32(f) => f.to_string(),
        FieldValue::F64(f) => f.to_string(),
        FieldValue::Timestamp(t) => t.to_string(),
        FieldValue::Void => "void".to_owned(),
        other => format!("{other:?}"),
    }
}

/// Text inside a quoted Mermaid label: `"`, `#`, `<`, `>` and `&` as entity codes.
fn mermaid_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '#' => out.push_str("#35;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '&' => out.push_str("#amp;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn mermaid(g: &Graph) -> String {
    let mut out = String::from("flowchart LR\n");
    for n in &g.nodes {
        let label: Vec<String> = n.lines.iter().map(|l| mermaid_escape(l)).collect();
        let label = label.join("<br/>");
        let _ = match n.shape {
            Shape::Exchange => writeln!(out, "    {}{{{{\"{label}\"}}}}", n.id),
            Shape::Queue => writeln!(out, "    {}[(\"{label}\")]", n.id),
        };
    }
    for e in &g.edges {
        let (from, to) = (&g.nodes[e.from].id, &g.nodes[e.to].id);
        let arrow = match e.route {
            Route::Binding => "-->",
            Route::Fallback => "-.->",
            Route::Retry => "==>",
        };
        let _ = if e.label.is_empty() {
            writeln!(out, "    {from} {arrow} {to}")
        } else {
            writeln!(
                out,
                "    {from} {arrow}|\"{}\"| {to}",
                mermaid_escape(&e.label)
            )
        };
    }
    let external: Vec<&str> = g
        .nodes
        .iter()
        .filter(|n| n.external)
        .map(|n| n.id.as_str())
        .collect();
    if !external.is_empty() {
        out.push_str("    classDef external stroke-dasharray: 4 4\n");
        let _ = writeln!(out, "    class {} external", external.join(","));
    }
    out
}

/// A DOT string literal's inside: `"` and `\` escaped, line breaks as `\n`.
fn dot_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn dot(g: &Graph) -> String {
    let mut out = String::from(
        "digraph topology {\n    rankdir=LR;\n    node [fontname=\"Helvetica\", fontsize=11];\n    \
         edge [fontname=\"Helvetica\", fontsize=10];\n",
    );
    for n in &g.nodes {
        let label: Vec<String> = n.lines.iter().map(|l| dot_escape(l)).collect();
        let shape = match n.shape {
            Shape::Exchange => "hexagon",
            Shape::Queue => "cylinder",
        };
        let style = if n.external { ", style=dashed" } else { "" };
        let _ = writeln!(
            out,
            "    {} [label=\"{}\", shape={shape}{style}];",
            n.id,
            label.join("\\n")
        );
    }
    for e in &g.edges {
        let style = match e.route {
            Route::Binding => "",
            Route::Fallback => ", style=dashed",
            Route::Retry => ", style=bold",
        };
        let _ = writeln!(
            out,
            "    {} -> {} [label=\"{}\"{style}];",
            g.nodes[e.from].id,
            g.nodes[e.to].id,
            dot_escape(&e.label)
        );
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Binding, Exchange, ExchangeKind, Queue, QueueType, Retry};

    fn example() -> Topology {
        Topology {
            exchanges: vec![
                Exchange {
                    alternate_exchange: Some("lost".into()),
                    ..Exchange::new("orders", ExchangeKind::Topic)
                },
                Exchange::new("lost", ExchangeKind::Fanout),
                Exchange::new("by-header", ExchangeKind::Headers),
            ],
            queues: vec![
                Queue {
                    kind: QueueType::Quorum,
                    dead_letter_exchange: Some(String::new()),
                    dead_letter_routing_key: Some("parked".into()),
                    retry: Some(Retry {
                        park: Some("parked".into()),
                        ..Retry::new([1, 60, 1].map(Duration::from_secs))
                    }),
                    ..Queue::new("work")
                },
                Queue::new("parked"),
                Queue {
                    dead_letter_exchange: Some("dlx \"x\"".into()),
                    dead_letter_routing_key: Some("dead".into()),
                    ..Queue::new("urgent")
                },
            ],
            bindings: vec![
                Binding::new("orders", Destination::Queue("work".into()), "order.#"),
                Binding::new("orders", Destination::Exchange("by-header".into()), ""),
                Binding {
                    arguments: FieldTable::new()
                        .with("x-match", "any")
                        .with("priority", "urgent")
                        .with("tier", 3_i64),
                    ..Binding::new("by-header", Destination::Queue("urgent".into()), "")
                },
                Binding::new("amq.topic", Destination::Queue("elsewhere".into()), "k"),
            ],
            ..Topology::default()
        }
    }

    #[test]
    fn mermaid_draws_every_route() {
        let text = example().graph(GraphFormat::Mermaid);
        let expected = r#"flowchart LR
    x0{{"orders<br/>topic"}}
    x1{{"lost<br/>fanout"}}
    x2{{"by-header<br/>headers"}}
    q3[("work<br/>quorum")]
    q4[("work.retry.1s<br/>quorum, waits 1s")]
    q5[("work.retry.1m<br/>quorum, waits 1m")]
    q6[("parked<br/>classic")]
    q7[("urgent<br/>classic")]
    x8{{"amq.topic"}}
    q9[("elsewhere")]
    x10{{"dlx #quot;x#quot;"}}
    x0 -->|"order.#35;"| q3
    x0 --> x2
    x2 -->|"[any: priority=urgent or tier=3]"| q7
    x8 -->|"k"| q9
    x0 -.->|"unrouted"| x1
    q3 -.->|"dead letters"| q6
    q4 -.->|"after 1s"| q3
    q5 -.->|"after 1m"| q3
    q7 -.->|"dead letters, key dead"| x10
    q3 ==>|"attempts 1, 3 fail"| q4
    q3 ==>|"attempt 2 fails"| q5
    q3 ==>|"attempt 4 fails"| q6
    classDef external stroke-dasharray: 4 4
    class q9,x10 external
"#;
        assert_eq!(text, expected, "{text}");
    }

    #[test]
    fn dot_escapes_and_styles_routes() {
        let text = example().graph(GraphFormat::Dot);
        assert!(text.starts_with("digraph topology {\n"), "{text}");
        assert!(text.ends_with("}\n"));
        for line in [
            "    x0 [label=\"orders\\ntopic\", shape=hexagon];",
            "    q4 [label=\"work.retry.1s\\nquorum, waits 1s\", shape=cylinder];",
            "    x10 [label=\"dlx \\\"x\\\"\", shape=hexagon, style=dashed];",
            "    x0 -> q3 [label=\"order.#\"];",
            "    x0 -> x1 [label=\"unrouted\", style=dashed];",
            "    q3 -> q5 [label=\"attempt 2 fails\", style=bold];",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        // Every edge and node line is one statement: no label breaks out of its quotes.
        for line in text.lines().skip(4).filter(|l| *l != "}") {
            assert!(line.ends_with("];"), "{line}");
        }
    }

    #[test]
    fn labels_cannot_break_the_syntax() {
        let t = Topology {
            queues: vec![Queue::new("a\"]-->b<script>&\nc")],
            bindings: vec![Binding::new(
                "x\\\"",
                Destination::Queue("a\"]-->b<script>&\nc".into()),
                "k\"|",
            )],
            ..Topology::default()
        };
        let m = t.graph(GraphFormat::Mermaid);
        assert_eq!(m.lines().count(), 4 + 2, "{m}");
        assert!(!m.contains("<script>") && !m.contains("\"]-->"), "{m}");
        let d = t.graph(GraphFormat::Dot);
        assert!(
            d.contains(r#"x1 [label="x\\\"", shape=hexagon, style=dashed];"#),
            "{d}"
        );
        assert!(d.contains(r#"[label="k\"|"];"#), "{d}");
    }

    #[test]
    fn binding_labels() {
        let empty = FieldTable::new();
        assert_eq!(binding_label("a.*", &empty), "a.*");
        assert_eq!(binding_label("", &empty), "");
        let all = FieldTable::new()
            .with("x-match", "all")
            .with("a", true)
            .with("b", 1_u8);
        assert_eq!(binding_label("", &all), "[all: a=true and b=1]");
        let plain = FieldTable::new().with("x-opt", "v");
        assert_eq!(binding_label("k", &plain), "k [x-opt=v]");
        assert_eq!(GraphFormat::from_name("dot"), Some(GraphFormat::Dot));
        assert_eq!(GraphFormat::from_name("svg"), None);
    }
}
