//! A [`Topology`] written as `topology.toml` text: what `serena topology export` writes.

use std::fmt::Write as _;

use serena_proto::{FieldTable, FieldValue};

use super::definitions::{DefinitionsError, field_to_json};
use super::error::Destination;
use super::model::{QueueType, Topology};

impl Topology {
    /// The topology as `topology.toml` text that [`Topology::from_toml`] reads back to the
    /// same exchanges, queues and bindings (without a `[connection]` block, and with the queues
    /// a retry schedule adds written as plain queues: `retry` itself is not stored on a
    /// broker). Keys at their defaults are left out. Fails on an argument value TOML cannot
    /// hold (void, an unsigned integer past `i64::MAX`).
    pub fn to_toml(&self) -> Result<String, DefinitionsError> {
        let mut out = String::new();
        for x in &self.exchanges {
            let who = format!("exchange {:?}", x.name);
            out.push_str("[[exchanges]]\n");
            line(&mut out, "name", &string(&x.name));
            line(&mut out, "type", &string(x.kind.as_str()));
            if !x.declare {
                line(&mut out, "declare", "false");
            }
            if !x.durable {
                line(&mut out, "durable", "false");
            }
            if x.auto_delete {
                line(&mut out, "auto_delete", "true");
            }
            if x.internal {
                line(&mut out, "internal", "true");
            }
            if let Some(ae) = &x.alternate_exchange {
                line(&mut out, "alternate_exchange", &string(ae));
            }
            arguments(&mut out, &x.arguments, &who)?;
            out.push('\n');
        }
        for q in &self.queues {
            let who = format!("queue {:?}", q.name);
            out.push_str("[[queues]]\n");
            line(&mut out, "name", &string(&q.name));
            if q.kind != QueueType::Classic {
                line(&mut out, "type", &string(q.kind.as_str()));
            }
            if !q.declare {
                line(&mut out, "declare", "false");
            }
            if !q.durable {
                line(&mut out, "durable", "false");
            }
            if q.exclusive {
                line(&mut out, "exclusive", "true");
            }
            if q.auto_delete {
                line(&mut out, "auto_delete", "true");
            }
            let strings = [
                ("dead_letter_exchange", &q.dead_letter_exchange),
                ("dead_letter_routing_key", &q.dead_letter_routing_key),
                ("max_age", &q.max_age),
            ];
            for (key, v) in strings {
                if let Some(v) = v {
                    line(&mut out, key, &string(v));
                }
            }
            let numbers = [
                ("message_ttl", q.message_ttl.map(u64::from)),
                ("expires", q.expires.map(u64::from)),
                ("max_length", q.max_length),
                ("max_length_bytes", q.max_length_bytes),
                ("delivery_limit", q.delivery_limit.map(u64::from)),
                ("initial_group_size", q.initial_group_size.map(u64::from)),
                ("max_priority", q.max_priority.map(u64::from)),
            ];
            for (key, v) in numbers {
                if let Some(v) = v {
                    let v = i64::try_from(v).map_err(|_| DefinitionsError::Unrepresentable {
                        entity: who.clone(),
                        argument: key.to_owned(),
                        value: v.to_string(),
                    })?;
                    line(&mut out, key, &v.to_string());
                }
            }
            if let Some(o) = q.overflow {
                line(&mut out, "overflow", &string(o.as_str()));
            }
            if q.single_active_consumer {
                line(&mut out, "single_active_consumer", "true");
            }
            arguments(&mut out, &q.arguments, &who)?;
            out.push('\n');
        }
        for b in &self.bindings {
            let who = format!("binding {:?} -> {}", b.source, b.destination);
            out.push_str("[[bindings]]\n");
            line(&mut out, "source", &string(&b.source));
            match &b.destination {
                Destination::Queue(n) => line(&mut out, "queue", &string(n)),
                Destination::Exchange(n) => line(&mut out, "exchange", &string(n)),
            }
            if !b.routing_key.is_empty() {
                line(&mut out, "routing_key", &string(&b.routing_key));
            }
            if !b.declare {
                line(&mut out, "declare", "false");
            }
            arguments(&mut out, &b.arguments, &who)?;
            out.push('\n');
        }
        Ok(out)
    }
}

fn line(out: &mut String, key: &str, value: &str) {
    let _ = writeln!(out, "{key} = {value}");
}

fn arguments(out: &mut String, t: &FieldTable, who: &str) -> Result<(), DefinitionsError> {
    if !t.is_empty() {
        let text = table(t, who)?;
        line(out, "arguments", &text);
    }
    Ok(())
}

fn table(t: &FieldTable, who: &str) -> Result<String, DefinitionsError> {
    let mut items = Vec::with_capacity(t.len());
    for (k, v) in t.iter() {
        let value = value(v).ok_or_else(|| DefinitionsError::Unrepresentable {
            entity: who.to_owned(),
            argument: k.to_string(),
            value: field_to_json(v).to_string(),
        })?;
        items.push(format!("{} = {value}", string(k)));
    }
    Ok(format!("{{ {} }}", items.join(", ")))
}

/// A field value as a TOML value, when TOML has one for it.
fn value(v: &FieldValue) -> Option<String> {
    if let Some(n) = v.as_i64() {
        return Some(n.to_string());
    }
    Some(match v {
        FieldValue::Bool(b) => b.to_string(),
        FieldValue::F32(f) => float(f64::from(*f))?,
        FieldValue::F64(f) => float(*f)?,
        FieldValue::Timestamp(t) => i64::try_from(*t).ok()?.to_string(),
        FieldValue::LongString(s) => string(&String::from_utf8_lossy(s.as_bytes())),
        FieldValue::Array(items) => {
            let items: Option<Vec<String>> = items.iter().map(value).collect();
            format!("[{}]", items?.join(", "))
        }
        FieldValue::Table(t) => table(t, "").ok()?,
        _ => return None,
    })
}

fn float(f: f64) -> Option<String> {
    // `{:?}` always writes a point or an exponent, as TOML wants.
    f.is_finite().then(|| format!("{f:?}"))
}

/// A TOML basic string.
fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_reads_back_the_same() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../topology.toml"))
                .unwrap();
        let mut t = Topology::from_toml(&text, "topology.toml").unwrap();
        // What a broker holds: the retry queues as plain queues, no retry, no origins.
        let plan: Vec<_> = t
            .queue_plan()
            .into_iter()
            .map(|(_, q)| q.into_owned())
            .collect();
        t.queues = plan;
        for q in &mut t.queues {
            q.retry = None;
            q.origin = None;
        }
        for x in &mut t.exchanges {
            x.origin = None;
        }
        for b in &mut t.bindings {
            b.origin = None;
        }
        t.connection = Default::default();
        let written = t.to_toml().unwrap();
        let mut back = Topology::from_toml(&written, "exported.toml").unwrap();
        for q in &mut back.queues {
            q.origin = None;
        }
        for x in &mut back.exchanges {
            x.origin = None;
        }
        for b in &mut back.bindings {
            b.origin = None;
        }
        assert_eq!(back, t, "{written}");
        assert!(written.contains("type = \"quorum\"\n"), "{written}");
    }

    #[test]
    fn odd_names_and_values_are_escaped_or_refused() {
        assert_eq!(string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
        let t = FieldTable::new()
            .with("x-f", 2.0_f64)
            .with("x-a", vec![FieldValue::Bool(true), FieldValue::I64(-3)])
            .with("x-t", FieldTable::new().with("k", "v"));
        assert_eq!(
            table(&t, "q").unwrap(),
            "{ \"x-f\" = 2.0, \"x-a\" = [true, -3], \"x-t\" = { \"k\" = \"v\" } }"
        );
        let void = FieldTable::new().with("x-v", FieldValue::Void);
        assert!(matches!(
            table(&void, "queue \"q\""),
            Err(DefinitionsError::Unrepresentable { .. })
        ));
        assert_eq!(value(&FieldValue::U64(u64::MAX)), None);
        assert_eq!(value(&FieldValue::F64(f64::NAN)), None);
    }
}
