//! The walk over one TOML table: typed reads that report wrong types and out-of-range numbers
//! at the value, unknown keys at the key, and remember where every key was.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{Entity, LineIndex, Location, Problem, TopologyError};
use super::model::{Origin, QUEUE_ARGUMENT_KEYS};
use super::validate::sort_problems;
use serena_proto::{FieldTable, FieldValue, ShortString};

pub(crate) struct Ctx<'t> {
    pub(crate) text: &'t str,
    pub(crate) lines: LineIndex,
    pub(crate) file: std::sync::Arc<str>,
    pub(crate) problems: Vec<Problem>,
}

impl Ctx<'_> {
    pub(crate) fn location(&self, offset: usize) -> Location {
        self.lines.locate(self.text, offset)
    }

    pub(crate) fn report(&mut self, offset: usize, entity: Entity, message: impl Into<String>) {
        self.problems.push(Problem {
            file: Some(self.file.to_string()),
            location: Some(self.location(offset)),
            entity,
            message: message.into(),
        });
    }

    pub(crate) fn finish(mut self) -> TopologyError {
        sort_problems(&mut self.problems);
        TopologyError::Invalid {
            problems: self.problems,
        }
    }
}

/// "a string", "an integer", ...
pub(crate) fn a(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

pub(crate) fn unknown_key(key: &str, known: &[&str]) -> String {
    match crate::suggest::closest(key, known.iter().copied()) {
        Some(close) => format!("unknown key {key:?}; did you mean {close:?}?"),
        None => format!("unknown key {key:?}; expected one of: {}", known.join(", ")),
    }
}

pub(crate) type Span = std::ops::Range<usize>;

/// A string item of an array, as [`Reader::strings`] found it.
pub(crate) struct Item {
    /// Its position in the array, from 0.
    pub(crate) index: usize,
    /// What it says.
    pub(crate) text: String,
    /// Where its value starts in the file.
    pub(crate) offset: usize,
}

/// The tables of `[[list]]` (or `list = [{...}]`), with their spans.
pub(crate) fn array_of_tables<'d, 'i>(
    ctx: &mut Ctx<'_>,
    list: &str,
    value: &'d Spanned<DeValue<'i>>,
) -> Option<Vec<(Span, &'d DeTable<'i>)>> {
    let DeValue::Array(items) = value.get_ref() else {
        ctx.report(
            value.span().start,
            Entity::File,
            format!(
                "{list} must be an array of tables ([[{list}]]), not {}",
                a(value.get_ref())
            ),
        );
        return None;
    };
    let mut tables = Vec::new();
    for item in items {
        match item.get_ref() {
            DeValue::Table(t) => tables.push((item.span(), t)),
            other => ctx.report(
                item.span().start,
                Entity::File,
                format!("each of {list} must be a table, not {}", a(other)),
            ),
        }
    }
    Some(tables)
}

/// Reads one entity's table, remembering where each key was and which keys were unknown.
pub(crate) struct Reader<'c, 't, 'd, 'i> {
    ctx: &'c mut Ctx<'t>,
    table: &'d DeTable<'i>,
    entity: Entity,
    /// How messages name the table's keys: `""`, or `"retry."` inside a queue's `retry`.
    path: String,
    pub(crate) origin: Origin,
}

impl<'c, 't, 'd, 'i> Reader<'c, 't, 'd, 'i> {
    pub(crate) fn new(
        ctx: &'c mut Ctx<'t>,
        span: Span,
        table: &'d DeTable<'i>,
        entity: Entity,
        known: &[&str],
    ) -> Self {
        let mut origin = Origin {
            file: ctx.file.clone(),
            at: ctx.location(span.start),
            keys: Vec::new(),
            invalid_keys: Vec::new(),
        };
        for (key, _) in table {
            let name = key.get_ref().as_ref();
            origin
                .keys
                .push((name.to_owned(), ctx.location(key.span().start)));
            if !known.contains(&name) {
                let message = match QUEUE_ARGUMENT_KEYS.iter().find(|(arg, _)| *arg == name) {
                    Some((_, own)) if known.contains(own) => {
                        format!("unknown key {name:?}; write {own} = ... instead")
                    }
                    _ if name.starts_with("x-") && known.contains(&"arguments") => format!(
                        "unknown key {name:?}; arguments go in a table: arguments = {{ {name:?} = ... }}"
                    ),
                    _ => unknown_key(name, known),
                };
                ctx.report(key.span().start, entity.clone(), message);
            }
        }
        Reader {
            ctx,
            table,
            entity,
            path: String::new(),
            origin,
        }
    }

    /// Reads the table at `key` with `read`, which gets a reader of it and where it starts: its
    /// keys are checked against `known` and remembered as `key.name`. Another value is reported
    /// (a table is expected, e.g. `example`) and `key` marked invalid.
    pub(crate) fn table<T>(
        &mut self,
        key: &str,
        example: &str,
        known: &[&str],
        read: impl FnOnce(&mut Reader<'_, 't, 'd, 'i>, usize) -> T,
    ) -> Option<T> {
        let v = self.get(key)?;
        let DeValue::Table(t) = v.get_ref() else {
            self.wrong_type(key, &format!("a table, e.g. {example}"), v);
            self.origin.invalid_keys.push(key.to_owned());
            return None;
        };
        let mut sub = Reader::new(self.ctx, v.span(), t, self.entity.clone(), known);
        sub.path = format!("{}{key}.", self.path);
        let out = read(&mut sub, v.span().start);
        let Origin {
            keys, invalid_keys, ..
        } = sub.origin;
        let inner = |k: String| format!("{key}.{k}");
        self.origin
            .keys
            .extend(keys.into_iter().map(|(k, at)| (inner(k), at)));
        self.origin
            .invalid_keys
            .extend(invalid_keys.into_iter().map(inner));
        Some(out)
    }

    /// The strings of the array at `key`, each item remembered as `key[0]`, `key[1]`, ...
    /// Another value, or an item that is not a string, is reported (a string is expected, e.g.
    /// `example`) and `key` marked invalid.
    pub(crate) fn strings(&mut self, key: &str, example: &str) -> Option<Vec<Item>> {
        let v = self.get(key)?;
        let DeValue::Array(items) = v.get_ref() else {
            self.wrong_type(
                key,
                &format!("an array of strings, e.g. {key} = [{example}]"),
                v,
            );
            self.origin.invalid_keys.push(key.to_owned());
            return None;
        };
        let mut strings = Vec::with_capacity(items.len());
        for (n, item) in items.iter().enumerate() {
            let at = item.span().start;
            let item_key = format!("{key}[{n}]");
            self.origin
                .keys
                .push((item_key.clone(), self.ctx.location(at)));
            match item.get_ref() {
                DeValue::String(s) => strings.push(Item {
                    index: n,
                    text: s.to_string(),
                    offset: at,
                }),
                _ => self.wrong_type(&item_key, &format!("a string, e.g. {example}"), item),
            }
        }
        if strings.len() < items.len() {
            self.origin.invalid_keys.push(key.to_owned());
        }
        Some(strings)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&'d Spanned<DeValue<'i>>> {
        self.table.get(key)
    }

    pub(crate) fn report(&mut self, offset: usize, message: impl Into<String>) {
        self.ctx.report(offset, self.entity.clone(), message);
    }

    fn wrong_type(&mut self, key: &str, expected: &str, v: &Spanned<DeValue<'_>>) {
        let message = format!(
            "{}{key} must be {expected}, not {}",
            self.path,
            a(v.get_ref())
        );
        self.report(v.span().start, message);
    }

    pub(crate) fn string(&mut self, key: &'static str) -> Option<String> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                if !self.origin.is_invalid(key) {
                    self.wrong_type(key, "a string", v);
                    self.origin.invalid_keys.push(key.to_owned());
                }
                None
            }
        }
    }

    pub(crate) fn bool(&mut self, key: &str, default: bool) -> bool {
        let Some(v) = self.get(key) else {
            return default;
        };
        match v.get_ref() {
            DeValue::Boolean(b) => *b,
            _ => {
                self.wrong_type(key, "true or false", v);
                default
            }
        }
    }

    /// An integer between `min` and `max`; `unit` is said in the range message.
    pub(crate) fn int<T: TryFrom<i64>>(
        &mut self,
        key: &str,
        min: i64,
        max: i64,
        unit: &str,
    ) -> Option<T> {
        let v = self.get(key)?;
        let DeValue::Integer(i) = v.get_ref() else {
            self.wrong_type(key, "an integer", v);
            return None;
        };
        let n = i64::from_str_radix(i.as_str(), i.radix()).ok();
        match n.filter(|n| (min..=max).contains(n)) {
            Some(n) => T::try_from(n).ok(),
            None => {
                let unit = if unit.is_empty() {
                    String::new()
                } else {
                    format!(" ({unit})")
                };
                let message = format!("{key} must be between {min} and {max}{unit}, not {i}");
                self.report(v.span().start, message);
                None
            }
        }
    }

    pub(crate) fn arguments(&mut self) -> FieldTable {
        let Some(v) = self.get("arguments") else {
            return FieldTable::new();
        };
        let DeValue::Table(t) = v.get_ref() else {
            self.wrong_type("arguments", "a table", v);
            return FieldTable::new();
        };
        let mut args = FieldTable::new();
        for (key, value) in t {
            let name = key.get_ref().as_ref();
            self.origin.keys.push((
                format!("arguments.{name}"),
                self.ctx.location(key.span().start),
            ));
            if name.len() > ShortString::MAX_LEN {
                self.report(
                    key.span().start,
                    format!(
                        "argument names are at most 255 bytes; this one is {}",
                        name.len()
                    ),
                );
                continue;
            }
            if let Some(fv) = self.field_value(&format!("arguments.{name}"), value) {
                args.insert(name, fv);
            }
        }
        args
    }

    fn field_value(&mut self, path: &str, v: &Spanned<DeValue<'_>>) -> Option<FieldValue> {
        Some(match v.get_ref() {
            DeValue::String(s) => FieldValue::from(s.as_ref()),
            DeValue::Boolean(b) => FieldValue::Bool(*b),
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => FieldValue::I64(n),
                Err(_) => {
                    let message = format!("{path} does not fit a signed 64-bit integer");
                    self.report(v.span().start, message);
                    return None;
                }
            },
            DeValue::Float(f) => FieldValue::F64(f.as_str().parse().unwrap_or(f64::NAN)),
            DeValue::Array(items) => FieldValue::Array(
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(n, item)| self.field_value(&format!("{path}[{n}]"), item))
                    .collect(),
            ),
            DeValue::Table(t) => {
                let mut table = FieldTable::new();
                for (k, item) in t {
                    let key = k.get_ref().as_ref();
                    if let Some(fv) = self.field_value(&format!("{path}.{key}"), item) {
                        table.insert(key, fv);
                    }
                }
                FieldValue::Table(table)
            }
            DeValue::Datetime(_) => {
                let message = format!(
                    "{path}: datetimes cannot be arguments; write seconds since the epoch as an \
                     integer"
                );
                self.report(v.span().start, message);
                return None;
            }
        })
    }
}
