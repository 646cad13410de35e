//! Parsing `#[consumer(...)]` arguments into [`ConsumerArgs`].
//!
//! Every problem is collected rather than stopping at the first, and each one points at the token
//! that caused it: an unknown option at its name (with the list of valid ones), a repeated option
//! at its second use, a wrong value at the value, a missing queue at the whole attribute.

use proc_macro2::{Span, TokenStream};
use serena_topology::suggest::closest;
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ExprUnary, Ident, Lit, LitStr, Token, UnOp};

/// Every option `#[consumer]` understands, in the order the docs list them.
pub(crate) const OPTIONS: &[&str] = &[
    "queue",
    "prefetch",
    "concurrency",
    "tag",
    "exclusive",
    "priority",
    "on_error",
    "topology",
    "crate",
    "offset",
];

/// What an `Err` from the handler does to its message (`on_error = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnError {
    Retry,
    Requeue,
    Park,
    Reject,
}

/// Where a stream consumer starts (`offset = ...`): `x-stream-offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Offset {
    First,
    Last,
    Next,
    Position(u64),
    Timestamp(u64),
    Interval(String),
}

/// The parsed attribute. Values keep the literal they came from where a later check (the
/// topology) needs to point at it.
#[derive(Default)]
pub(crate) struct ConsumerArgs {
    pub(crate) queue: Option<LitStr>,
    pub(crate) prefetch: Option<u16>,
    pub(crate) concurrency: Option<usize>,
    pub(crate) tag: Option<String>,
    pub(crate) exclusive: Option<bool>,
    pub(crate) priority: Option<i32>,
    pub(crate) on_error: Option<OnError>,
    pub(crate) topology: Option<LitStr>,
    /// `crate = "path"`: where serena is, for a crate that re-exports it.
    pub(crate) krate: Option<syn::Path>,
    /// `offset = ...`: the consumer reads a stream from there.
    pub(crate) offset: Option<Offset>,
}

/// Collects errors so that all of them are reported in one compile.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn push_at(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    pub(crate) fn into_result(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

impl ConsumerArgs {
    /// The path the expansion reaches serena by: `::serena`, or the `crate` option's.
    pub(crate) fn crate_path(&self) -> TokenStream {
        match &self.krate {
            Some(path) => quote::quote!(#path),
            None => quote::quote!(::serena),
        }
    }
}

/// One `key` or `key = value` item of the attribute.
struct Item {
    key: Ident,
    value: Option<Expr>,
}

impl ConsumerArgs {
    /// Parses the attribute's tokens. On failure the partial result is still returned, so the
    /// caller can expand as much as it can next to the errors.
    pub(crate) fn parse(tokens: TokenStream) -> (ConsumerArgs, syn::Result<()>) {
        let mut errors = Errors::default();
        let items = match parse_items.parse2(tokens) {
            Ok(items) => items,
            Err(e) => return (ConsumerArgs::default(), Err(e)),
        };
        let mut args = ConsumerArgs::default();
        let mut seen: Vec<String> = Vec::new();
        let mut prefetch_zero = None;
        for item in items {
            let name = item.key.unraw().to_string();
            if !OPTIONS.contains(&name.as_str()) {
                errors.push_at(item.key.span(), unknown_option(&name));
                continue;
            }
            if seen.contains(&name) {
                errors.push_at(
                    item.key.span(),
                    format!("`{name}` is given more than once; keep one"),
                );
                continue;
            }
            seen.push(name.clone());
            if let Err(e) = args.set(&name, &item) {
                errors.push(e);
            } else if name == "prefetch" && args.prefetch == Some(0) {
                prefetch_zero = item.value.as_ref().map(Spanned::span);
            }
        }
        if let (Some(span), Some(_)) = (prefetch_zero, &args.offset) {
            errors.push_at(
                span,
                "a stream consumer (`offset`) needs a prefetch above 0: RabbitMQ refuses to \
                 deliver from a stream without a prefetch limit; write e.g. `prefetch = 100`, or \
                 leave `prefetch` out for the connection's default",
            );
        }
        if args.queue.is_none() && !seen.iter().any(|s| s == "queue") {
            errors.push_at(
                Span::call_site(),
                "`#[consumer]` needs the queue to consume from: `#[consumer(queue = \"orders\")]`",
            );
        }
        (args, errors.into_result())
    }

    /// Stores one option whose name is known and not yet seen.
    fn set(&mut self, name: &str, item: &Item) -> syn::Result<()> {
        let key = &item.key;
        if name == "exclusive" {
            // The one flag: `exclusive` alone means `exclusive = true`.
            self.exclusive = Some(match &item.value {
                None => true,
                Some(v) => bool_value(v, "exclusive = true")?,
            });
            return Ok(());
        }
        let Some(value) = &item.value else {
            return Err(syn::Error::new(
                key.span(),
                format!("`{name}` needs a value: `{}`", example(name)),
            ));
        };
        match name {
            "queue" => {
                let lit = string_value(value, name)?;
                check_short_string(&lit, "queue name")?;
                self.queue = Some(lit);
            }
            "tag" => {
                let lit = string_value(value, name)?;
                if lit.value().is_empty() {
                    return Err(syn::Error::new(
                        lit.span(),
                        "the consumer tag is empty; leave `tag` out and serena picks one",
                    ));
                }
                check_short_string(&lit, "consumer tag")?;
                self.tag = Some(lit.value());
            }
            "topology" => {
                let lit = string_value(value, name)?;
                if lit.value().is_empty() {
                    return Err(syn::Error::new(
                        lit.span(),
                        "the topology path is empty; give a file relative to the crate's Cargo.toml, \
                         e.g. `topology = \"topology.toml\"`",
                    ));
                }
                self.topology = Some(lit);
            }
            "crate" => {
                let lit = string_value(value, name)?;
                let path = lit.parse::<syn::Path>().map_err(|_| {
                    syn::Error::new(
                        lit.span(),
                        format!(
                            "`crate` takes the path serena is re-exported at, such as \
                             `crate = \"my_framework::serena\"`, not {:?}",
                            lit.value()
                        ),
                    )
                })?;
                self.krate = Some(path);
            }
            "offset" => self.offset = Some(offset_value(value)?),
            "prefetch" => {
                self.prefetch = Some(int_value(value, "prefetch", "0 to 65535", "u16")?);
            }
            "concurrency" => {
                let n: usize = int_value(value, "concurrency", "1 or more", "usize")?;
                if n == 0 {
                    return Err(syn::Error::new(
                        value.span(),
                        "`concurrency` must be at least 1: it is how many deliveries this \
                         consumer handles at once",
                    ));
                }
                self.concurrency = Some(n);
            }
            "priority" => {
                self.priority = Some(int_value(value, "priority", "an i32", "i32")?);
            }
            "on_error" => {
                let lit = string_value(value, name)?;
                self.on_error = Some(match lit.value().as_str() {
                    "retry" => OnError::Retry,
                    "requeue" => OnError::Requeue,
                    "park" => OnError::Park,
                    "reject" => OnError::Reject,
                    other => {
                        return Err(syn::Error::new(
                            lit.span(),
                            format!(
                                "`on_error` is \"retry\" (later, by the queue's retry schedule; \
                                 the default), \"requeue\" (at once), \"park\" (give up now) or \
                                 \"reject\" (dead-letter it), not {other:?}"
                            ),
                        ));
                    }
                });
            }
            _ => unreachable!("`{name}` is in OPTIONS but has no parser"),
        }
        Ok(())
    }
}

/// `key`, `key = value`, ... with an optional trailing comma.
fn parse_items(input: ParseStream<'_>) -> syn::Result<Vec<Item>> {
    let mut items = Vec::new();
    while !input.is_empty() {
        if input.peek(LitStr) {
            let lit: LitStr = input.parse()?;
            return Err(syn::Error::new(
                lit.span(),
                format!(
                    "options are written `name = value`; for the queue write `queue = {:?}`",
                    lit.value()
                ),
            ));
        }
        let key = input.call(Ident::parse_any).map_err(|e| {
            syn::Error::new(
                e.span(),
                format!(
                    "expected an option name: one of {}",
                    OPTIONS
                        .iter()
                        .map(|o| format!("`{o}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Some(input.parse::<Expr>()?)
        } else if !input.is_empty() && !input.peek(Token![,]) {
            let name = key.unraw().to_string();
            let hint = if OPTIONS.contains(&name.as_str()) {
                format!("write `{}`", example(&name))
            } else {
                "options are written `name = value`".to_owned()
            };
            return Err(input.error(format!("expected `=` or `,` after `{name}`; {hint}")));
        } else {
            None
        };
        items.push(Item { key, value });
        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }
    Ok(items)
}

fn unknown_option(name: &str) -> String {
    let valid = OPTIONS
        .iter()
        .map(|o| format!("`{o}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match closest(name, OPTIONS.iter().copied()) {
        Some(guess) => {
            format!(
                "unknown `#[consumer]` option `{name}`; did you mean `{guess}`? valid options: {valid}"
            )
        }
        None => format!("unknown `#[consumer]` option `{name}`; valid options: {valid}"),
    }
}

/// How each option is written, for error messages.
fn example(name: &str) -> &'static str {
    match name {
        "queue" => "queue = \"orders\"",
        "prefetch" => "prefetch = 20",
        "concurrency" => "concurrency = 4",
        "tag" => "tag = \"orders-worker\"",
        "exclusive" => "exclusive = true",
        "priority" => "priority = 10",
        "on_error" => "on_error = \"reject\"",
        "topology" => "topology = \"topology.toml\"",
        "crate" => "crate = \"my_framework::serena\"",
        "offset" => "offset = \"first\"",
        "timestamp" => "offset = timestamp(1700000000)",
        _ => "name = value",
    }
}

/// What `offset` takes, for its error messages.
const OFFSET_FORMS: &str = "`offset` is \"first\", \"last\", \"next\", an interval such as \"1h\" or \
     \"7D\" (digits and one of Y, M, D, h, m, s), an offset in the log such as `offset = 1000`, \
     or a time as `offset = timestamp(1700000000)` (seconds since the Unix epoch)";

/// `offset = "first" | "last" | "next" | "<interval>" | N | timestamp(N)`.
fn offset_value(value: &Expr) -> syn::Result<Offset> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => {
            let text = s.value();
            match text.as_str() {
                "first" => Ok(Offset::First),
                "last" => Ok(Offset::Last),
                "next" => Ok(Offset::Next),
                t if serena_topology::is_interval(t) => Ok(Offset::Interval(text)),
                other => Err(syn::Error::new(
                    s.span(),
                    format!("{other:?} is not a stream offset; {OFFSET_FORMS}"),
                )),
            }
        }
        Expr::Lit(ExprLit {
            lit: Lit::Int(_), ..
        })
        | Expr::Unary(_) => Ok(Offset::Position(int_value(
            value,
            "offset",
            "0 or more",
            "u64",
        )?)),
        Expr::Call(call) if matches!(&*call.func, Expr::Path(p) if p.path.is_ident("timestamp")) => {
            let mut args = call.args.iter();
            match (args.next(), args.next()) {
                (Some(seconds), None) => Ok(Offset::Timestamp(int_value(
                    seconds,
                    "timestamp",
                    "seconds since the Unix epoch, 0 or more",
                    "u64",
                )?)),
                _ => Err(syn::Error::new(
                    call.span(),
                    "`timestamp` takes one number, seconds since the Unix epoch: \
                     `offset = timestamp(1700000000)`",
                )),
            }
        }
        _ => Err(syn::Error::new(value.span(), OFFSET_FORMS)),
    }
}

fn string_value(value: &Expr, name: &str) -> syn::Result<LitStr> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.clone()),
        _ => Err(syn::Error::new(
            value.span(),
            format!("`{name}` takes a string literal: `{}`", example(name)),
        )),
    }
}

fn bool_value(value: &Expr, example: &str) -> syn::Result<bool> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(b), ..
        }) => Ok(b.value),
        _ => Err(syn::Error::new(
            value.span(),
            format!("expected `true` or `false`: `{example}`, or the flag alone"),
        )),
    }
}

/// An integer literal, possibly negated, that fits `T` (whose name is `ty`; a suffix must
/// match it).
fn int_value<T>(value: &Expr, name: &str, range: &str, ty: &str) -> syn::Result<T>
where
    T: std::str::FromStr,
{
    let bad_type = || {
        syn::Error::new(
            value.span(),
            format!(
                "`{name}` takes an integer literal ({range}): `{}`",
                example(name)
            ),
        )
    };
    let (negative, lit) = match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => (false, i),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr,
            ..
        }) => match &**expr {
            Expr::Lit(ExprLit {
                lit: Lit::Int(i), ..
            }) => (true, i),
            _ => return Err(bad_type()),
        },
        _ => return Err(bad_type()),
    };
    if !lit.suffix().is_empty() && lit.suffix() != ty {
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "`{name}` is {} `{ty}`; drop the `{}` suffix",
                article(ty),
                lit.suffix()
            ),
        ));
    }
    let digits = if negative {
        format!("-{}", lit.base10_digits())
    } else {
        lit.base10_digits().to_owned()
    };
    digits.parse::<T>().map_err(|_| {
        syn::Error::new(
            value.span(),
            format!(
                "`{name}` must be {range} (it is {} `{ty}`), not {digits}",
                article(ty)
            ),
        )
    })
}

/// "a" or "an" before a type name, as it is read aloud.
fn article(ty: &str) -> &'static str {
    if ty.starts_with('i') { "an" } else { "a" }
}

/// AMQP short strings (queue names, consumer tags) are at most 255 bytes.
fn check_short_string(lit: &LitStr, what: &str) -> syn::Result<()> {
    let len = lit.value().len();
    if len > 255 {
        return Err(syn::Error::new(
            lit.span(),
            format!("the {what} is {len} bytes long; AMQP allows at most 255"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse(tokens: TokenStream) -> (ConsumerArgs, Result<(), String>) {
        let (args, result) = ConsumerArgs::parse(tokens);
        (args, result.map_err(|e| e.to_string()))
    }

    #[test]
    fn every_option() {
        let (args, result) = parse(quote! {
            queue = "orders", prefetch = 20, concurrency = 4, tag = "t", exclusive,
            priority = -5, on_error = "reject", topology = "topo.toml",
        });
        result.unwrap();
        assert_eq!(args.queue.unwrap().value(), "orders");
        assert_eq!(args.prefetch, Some(20));
        assert_eq!(args.concurrency, Some(4));
        assert_eq!(args.tag.as_deref(), Some("t"));
        assert_eq!(args.exclusive, Some(true));
        assert_eq!(args.priority, Some(-5));
        assert_eq!(args.on_error, Some(OnError::Reject));
        assert_eq!(args.topology.unwrap().value(), "topo.toml");
    }

    #[test]
    fn exclusive_takes_a_bool_too() {
        let (args, result) = parse(quote!(queue = "q", exclusive = false));
        result.unwrap();
        assert_eq!(args.exclusive, Some(false));
        let (_, result) = parse(quote!(queue = "q", exclusive = 1));
        assert!(result.unwrap_err().contains("`true` or `false`"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let (args, result) = parse(quote!(prefetch = 70000, prefech = 3, prefetch = 1));
        let message = result.unwrap_err();
        assert!(message.contains("must be 0 to 65535"), "{message}");
        let (_, result) = parse(quote!(prefech = 3));
        let message = result.unwrap_err();
        assert!(message.contains("did you mean `prefetch`?"), "{message}");
        assert!(
            message.contains("valid options: `queue`, `prefetch`"),
            "{message}"
        );
        assert!(args.queue.is_none());
    }

    #[test]
    fn value_types_are_checked() {
        for (tokens, expected) in [
            (quote!(queue = 5), "`queue` takes a string literal"),
            (
                quote!(queue = "q", prefetch = "5"),
                "`prefetch` takes an integer literal",
            ),
            (quote!(queue = "q", prefetch = 5u8), "drop the `u8` suffix"),
            (quote!(queue = "q", prefetch = -1), "must be 0 to 65535"),
            (quote!(queue = "q", concurrency = 0), "at least 1"),
            (quote!(queue = "q", priority = 2147483648), "must be an i32"),
            (quote!(queue = "q", on_error = "later"), "not \"later\""),
            (quote!(queue = "q", tag = ""), "tag is empty"),
            (quote!(queue), "`queue` needs a value"),
            (quote!("orders"), "write `queue = \"orders\"`"),
            (quote!(queue "orders"), "expected `=` or `,` after `queue`"),
        ] {
            let (_, result) = parse(tokens.clone());
            let message = result.unwrap_err();
            assert!(message.contains(expected), "{tokens}: {message}");
        }
    }

    #[test]
    fn crate_takes_a_path() {
        let (args, result) = parse(quote!(queue = "q", crate = "my_framework::serena"));
        result.unwrap();
        assert_eq!(args.crate_path().to_string(), "my_framework :: serena");
        let (args, _) = parse(quote!(queue = "q"));
        assert_eq!(args.crate_path().to_string(), ":: serena");
        for (tokens, expected) in [
            (
                quote!(queue = "q", crate = "not a path"),
                "`crate` takes the path",
            ),
            (
                quote!(queue = "q", crate = serena),
                "`crate` takes a string literal",
            ),
            (quote!(queue = "q", krate = "x"), "did you mean `crate`?"),
        ] {
            let (_, result) = parse(tokens.clone());
            let message = result.unwrap_err();
            assert!(message.contains(expected), "{tokens}: {message}");
        }
    }

    #[test]
    fn priority_bounds() {
        let (args, result) = parse(quote!(queue = "q", priority = -2147483648));
        result.unwrap();
        assert_eq!(args.priority, Some(i32::MIN));
    }

    #[test]
    fn long_names_are_refused() {
        let long = "q".repeat(256);
        let (_, result) = parse(quote!(queue = #long));
        assert!(result.unwrap_err().contains("256 bytes long"));
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            closest("on_eror", OPTIONS.iter().copied()),
            Some("on_error")
        );
        assert_eq!(closest("durable", OPTIONS.iter().copied()), None);
    }
}
