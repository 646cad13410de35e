//! Binding matches of the four exchange types, as RabbitMQ defines them.

use serena_proto::{FieldTable, FieldValue};

/// An exchange type the broker routes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl Kind {
    pub(crate) fn parse(kind: &str) -> Option<Kind> {
        match kind {
            "direct" => Some(Kind::Direct),
            "fanout" => Some(Kind::Fanout),
            "topic" => Some(Kind::Topic),
            "headers" => Some(Kind::Headers),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Fanout => "fanout",
            Kind::Topic => "topic",
            Kind::Headers => "headers",
        }
    }

    /// Whether a binding with `key` and `args` takes a message with `routing_key` and `headers`.
    pub(crate) fn matches(
        self,
        key: &str,
        args: &FieldTable,
        routing_key: &str,
        headers: Option<&FieldTable>,
    ) -> bool {
        match self {
            Kind::Direct => key == routing_key,
            Kind::Fanout => true,
            Kind::Topic => topic_matches(key, routing_key),
            Kind::Headers => headers_match(args, headers),
        }
    }
}

/// Topic match: words split on `.`, `*` is exactly one word, `#` zero or more.
pub(crate) fn topic_matches(pattern: &str, key: &str) -> bool {
    // RabbitMQ splits an empty key into no words at all.
    let (pattern, key) = (words(pattern), words(key));
    words_match(&pattern, &key)
}

fn words(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split('.').collect()
    }
}

fn words_match(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|skip| words_match(rest, &key[skip..])),
        Some((&word, rest)) => match key.split_first() {
            Some((&k, key_rest)) => (word == "*" || word == k) && words_match(rest, key_rest),
            None => false,
        },
    }
}

/// Headers match: `x-match` is `all` (default) or `any`, `all-with-x`/`any-with-x` also compare
/// the `x-` keys; a binding argument of type void matches on presence alone.
pub(crate) fn headers_match(args: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let mode = args
        .get("x-match")
        .and_then(FieldValue::as_str)
        .unwrap_or("all");
    let (any, with_x) = match mode {
        "any" => (true, false),
        "any-with-x" => (true, true),
        "all-with-x" => (false, true),
        _ => (false, false),
    };
    let empty = FieldTable::new();
    let headers = headers.unwrap_or(&empty);
    let mut considered = args
        .iter()
        .filter(|(k, _)| with_x || !k.as_str().starts_with("x-"))
        .map(|(k, v)| match (headers.get(k.as_str()), v) {
            (Some(_), FieldValue::Void) => true,
            (Some(h), v) => h == v || same_number(h, v),
            (None, _) => false,
        });
    if any {
        considered.any(|m| m)
    } else {
        considered.all(|m| m)
    }
}

fn same_number(a: &FieldValue, b: &FieldValue) -> bool {
    matches!((a.as_i64(), b.as_i64()), (Some(x), Some(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_words() {
        assert!(topic_matches("order.*", "order.created"));
        assert!(!topic_matches("order.*", "order.created.eu"));
        assert!(topic_matches("order.#", "order"));
        assert!(topic_matches("order.#", "order.created.eu"));
        assert!(topic_matches("#", ""));
        assert!(topic_matches("#.eu", "order.created.eu"));
        assert!(topic_matches("*.*.eu", "order.created.eu"));
        assert!(!topic_matches("*", ""));
        assert!(topic_matches("a.#.b", "a.b"));
        assert!(!topic_matches("a.#.b", "a.c"));
    }

    #[test]
    fn headers_any_and_all() {
        let all = FieldTable::new().with("a", 1i32).with("b", "x");
        let h = FieldTable::new().with("a", 1i32).with("b", "x");
        assert!(headers_match(&all, Some(&h)));
        let only_a = FieldTable::new().with("a", 1i32);
        assert!(!headers_match(&all, Some(&only_a)));
        let any = all.clone().with("x-match", "any");
        assert!(headers_match(&any, Some(&only_a)));
        assert!(!headers_match(&any, None));
        // An all-binding without arguments takes everything.
        assert!(headers_match(&FieldTable::new(), None));
    }
}
