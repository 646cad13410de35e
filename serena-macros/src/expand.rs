//! Expanding `#[consumer(...)] async fn name(args) -> R { body }` into a unit struct `name` that
//! implements `serena::worker::Handler`, with the function kept as `name::handler`.
//!
//! Every path into serena starts with `::serena`, or with the path the `crate` option gives.
//!
//! When the function itself cannot be a handler (not `async`, generic, a method, ...), the
//! function is emitted unchanged next to the errors, so the rest of the crate and the IDE keep
//! working on it. When only the attribute is wrong, the full expansion is emitted next to the
//! errors, so uses of the handler elsewhere do not add errors of their own.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, Ident, Item, ItemFn, LitStr, Pat, ReturnType, Type};

use crate::attr::{ConsumerArgs, Errors, Offset, OnError};
use crate::topology;

/// The whole macro: attribute arguments and the annotated item in, code out.
pub(crate) fn consumer(attr: TokenStream, item: TokenStream) -> TokenStream {
    let (args, args_result) = ConsumerArgs::parse(attr);
    let func = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Fn(func)) => func,
        Ok(other) => {
            let error = syn::Error::new(
                item_keyword_span(&other),
                "`#[consumer]` goes on an `async fn`",
            );
            return with_errors(error, item);
        }
        Err(error) => return with_errors(error, item),
    };

    let mut errors = Errors::default();
    if let Err(e) = args_result {
        errors.push(e);
    }
    check_signature(&func, &mut errors);
    if let Err(e) = errors.into_result() {
        // Attribute errors are reported along with the function's own, but only a sound
        // function is worth expanding.
        if signature_is_sound(&func) {
            return with_errors(e, expand(&args, func, None));
        }
        return with_errors(e, item);
    }

    let queue = args
        .queue
        .clone()
        .expect("a parse without errors has a queue");
    match topology::check(&queue, args.topology.as_ref()) {
        Ok(checked) => expand(&args, func, checked.as_ref().and_then(topology::track)),
        Err(e) => with_errors(e, expand(&args, func, None)),
    }
}

fn with_errors(error: syn::Error, code: TokenStream) -> TokenStream {
    let error = error.to_compile_error();
    quote!(#error #code)
}

/// Where to point when the attribute is on something that is not a function.
fn item_keyword_span(item: &Item) -> Span {
    let tokens = quote!(#item);
    // The first token after the attributes and the visibility: `struct`, `impl`, `mod`, ...
    let mut span = item.span();
    for tree in tokens {
        if let TokenTree::Ident(ident) = tree {
            let text = ident.to_string();
            if text != "pub" {
                span = ident.span();
                break;
            }
        }
    }
    span
}

/// Reports every reason the function cannot be a handler, each on its own token.
fn check_signature(func: &ItemFn, errors: &mut Errors) {
    let sig = &func.sig;
    if let Some(token) = &sig.constness {
        errors.push_at(token.span, "a `#[consumer]` handler cannot be a `const fn`");
    }
    if sig.asyncness.is_none() {
        errors.push_at(
            sig.fn_token.span,
            format!(
                "a `#[consumer]` handler must be an `async fn`: write `async fn {}(...)`",
                sig.ident
            ),
        );
    }
    if let Some(token) = &sig.unsafety {
        errors.push_at(token.span, "a `#[consumer]` handler cannot be `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        errors.push_at(
            abi.span(),
            "a `#[consumer]` handler cannot have an `extern` ABI",
        );
    }
    if let Some(param) = sig.generics.params.first() {
        errors.push_at(
            param.span(),
            "a `#[consumer]` handler cannot be generic: its arguments are built from each \
             delivery, so their types must be concrete; write one handler per type",
        );
    }
    if let Some(clause) = &sig.generics.where_clause {
        errors.push_at(
            clause.span(),
            "a `#[consumer]` handler cannot have a `where` clause",
        );
    }
    if let Some(variadic) = &sig.variadic {
        errors.push_at(
            variadic.span(),
            "a `#[consumer]` handler cannot be variadic",
        );
    }
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(receiver) => errors.push_at(
                receiver.self_token.span,
                "a `#[consumer]` handler is a free function, not a method: take shared values \
                 as a `State<T>` argument instead of `self`",
            ),
            FnArg::Typed(arg) => {
                if let Some(binding) = find_binding(&arg.pat, &sig.ident) {
                    errors.push_at(
                        binding.span(),
                        format!(
                            "this argument has the handler's name: `{0}` becomes a unit struct, \
                             so the pattern `{0}` would match that struct instead of binding \
                             the argument; rename the argument",
                            sig.ident
                        ),
                    );
                }
                let ty = &arg.ty;
                if let Some(span) = find_impl_keyword(quote!(#ty)) {
                    errors.push_at(
                        span,
                        "`impl Trait` cannot be a `#[consumer]` argument type: name the \
                         extractor, e.g. `Json<Order>` or `State<AppState>`",
                    );
                }
            }
        }
    }
    for attr in &func.attrs {
        if attr
            .path()
            .segments
            .last()
            .is_some_and(|s| s.ident == "consumer")
        {
            errors.push_at(
                attr.span(),
                "a function can be only one consumer: remove this second `#[consumer]`",
            );
        }
    }
}

/// True when the function can be expanded even though the attribute had errors.
fn signature_is_sound(func: &ItemFn) -> bool {
    let mut errors = Errors::default();
    check_signature(func, &mut errors);
    errors.into_result().is_ok()
}

/// A binding named `name` anywhere in `pat`.
fn find_binding<'a>(pat: &'a Pat, name: &Ident) -> Option<&'a Ident> {
    match pat {
        Pat::Ident(p) => {
            if p.ident == *name {
                return Some(&p.ident);
            }
            p.subpat
                .as_ref()
                .and_then(|(_, sub)| find_binding(sub, name))
        }
        Pat::Or(p) => p.cases.iter().find_map(|c| find_binding(c, name)),
        Pat::Paren(p) => find_binding(&p.pat, name),
        Pat::Reference(p) => find_binding(&p.pat, name),
        Pat::Slice(p) => p.elems.iter().find_map(|e| find_binding(e, name)),
        Pat::Struct(p) => p.fields.iter().find_map(|f| find_binding(&f.pat, name)),
        Pat::Tuple(p) => p.elems.iter().find_map(|e| find_binding(e, name)),
        Pat::TupleStruct(p) => p.elems.iter().find_map(|e| find_binding(e, name)),
        Pat::Type(p) => find_binding(&p.pat, name),
        _ => None,
    }
}

fn find_impl_keyword(tokens: TokenStream) -> Option<Span> {
    for tree in tokens {
        match tree {
            TokenTree::Ident(ident) if ident == "impl" => return Some(ident.span()),
            TokenTree::Group(group) => {
                if let Some(span) = find_impl_keyword(group.stream()) {
                    return Some(span);
                }
            }
            _ => {}
        }
    }
    None
}

/// Which generated item each of the function's attributes belongs on.
struct SplitAttrs<'a> {
    /// Docs and `#[deprecated]`: what describes the consumer, on the struct.
    on_struct: Vec<&'a Attribute>,
    /// `#[cfg]`: on every generated item, so they come and go together.
    on_all: Vec<&'a Attribute>,
    /// Everything else (lint levels, `#[inline]`, other attribute macros): on `handler`,
    /// where the body is.
    on_fn: Vec<&'a Attribute>,
}

fn split_attrs(attrs: &[Attribute]) -> SplitAttrs<'_> {
    let mut split = SplitAttrs {
        on_struct: Vec::new(),
        on_all: Vec::new(),
        on_fn: Vec::new(),
    };
    for attr in attrs {
        let path = attr.path();
        if path.is_ident("doc") || path.is_ident("deprecated") {
            split.on_struct.push(attr);
        } else if path.is_ident("cfg") {
            split.on_all.push(attr);
        } else {
            split.on_fn.push(attr);
        }
    }
    split
}

/// The struct, its `handler`, its `Handler` impl and, when a topology was read, the
/// `include_bytes!` that tracks it.
fn expand(args: &ConsumerArgs, func: ItemFn, topology_file: Option<LitStr>) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        mut sig,
        block,
    } = func;
    let SplitAttrs {
        on_struct,
        on_all,
        on_fn,
    } = split_attrs(&attrs);
    let name = sig.ident.clone();
    let serena = args.crate_path();
    let spec = spec_tokens(args, &name);

    // Local names of the generated code resolve at the macro's own site, so they can never
    // meet the user's.
    let ctx = Ident::new("ctx", Span::mixed_site());
    let value = Ident::new("value", Span::mixed_site());
    let rejection = Ident::new("rejection", Span::mixed_site());
    let mut extractions = Vec::new();
    let mut vars = Vec::new();
    let mut required_state = Vec::new();
    for (i, input) in sig.inputs.iter().enumerate() {
        let FnArg::Typed(arg) = input else {
            unreachable!("receivers were refused by check_signature")
        };
        let ty: &Type = &arg.ty;
        if let Some(inner) = state_type(ty) {
            let serena = respan(&serena, inner.span());
            required_state.push(quote_spanned! {inner.span()=>
                #serena::worker::StateRequirement::of::<#inner>()
            });
        }
        let var = format_ident!("arg{}", i, span = Span::mixed_site());
        // Spanned at the type, so "not an extractor" points at the argument's type.
        let extract = {
            let serena = respan(&serena, ty.span());
            quote_spanned! {ty.span()=>
                <#ty as #serena::worker::FromDelivery>::from_delivery(#ctx)
            }
        };
        extractions.push(quote! {
            let #var = match #extract {
                ::core::result::Result::Ok(#value) => #value,
                ::core::result::Result::Err(#rejection) => {
                    return #serena::worker::__private::poison(#ctx, #rejection);
                }
            };
        });
        vars.push(var);
    }
    let ctx_param = if vars.is_empty() {
        quote!(_)
    } else {
        quote!(#ctx)
    };
    // The function's value is named at the return type, so "cannot be returned" points
    // there. (A name of the macro's own hygiene would be reported at the attribute.)
    let (output, at) = match &sig.output {
        ReturnType::Type(_, ty) => (Ident::new("output", ty.span()), ty.span()),
        ReturnType::Default => (Ident::new("output", Span::mixed_site()), Span::call_site()),
    };
    let serena_at = respan(&serena, at);
    let convert = quote_spanned! {at=>
        #serena_at::worker::IntoOutcome::into_outcome(#output, Self::SPEC.on_error)
    };
    // A handler whose future is not `Send` is reported at its name.
    let boxed = quote_spanned! {name.span()=>
        ::std::boxed::Box::pin(async move {
            #(#extractions)*
            let #output = Self::handler(#(#vars),*).await;
            #convert
        })
    };

    sig.ident = Ident::new("handler", name.span());
    let handler_doc = format!(
        " The function behind the [`{}`] consumer, callable directly (from a unit test, \
         say) without a delivery.",
        name.unraw()
    );
    // The generated impls name the struct; a deprecated one would warn at each. (Inside a
    // deprecated handler's own body, other deprecated items then go unreported too.)
    let allow_deprecated = on_struct
        .iter()
        .any(|a| a.path().is_ident("deprecated"))
        .then(|| quote!(#[allow(deprecated)]));
    // Listed so the supervisor can refuse to start without them; without any, the trait's
    // default (none) stands.
    let required_state = (!required_state.is_empty()).then(|| {
        quote! {
            fn required_state(&self) -> ::std::vec::Vec<#serena::worker::StateRequirement> {
                ::std::vec![#(#required_state),*]
            }
        }
    });
    let track = topology_file.map(|path| {
        quote! {
            #(#on_all)*
            const _: &[u8] = ::core::include_bytes!(#path);
        }
    });

    quote! {
        #(#on_struct)*
        #(#on_all)*
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, Default)]
        #vis struct #name;

        #(#on_all)*
        #allow_deprecated
        impl #name {
            const SPEC: #serena::worker::ConsumerSpec = #spec;

            #[doc = #handler_doc]
            // The docs are generated (the user's are on the struct), and `async` is required
            // even of a body that never awaits.
            #[allow(clippy::missing_errors_doc, clippy::missing_panics_doc, clippy::unused_async)]
            #(#on_fn)*
            #vis #sig #block
        }

        #(#on_all)*
        #allow_deprecated
        impl #serena::worker::Handler for #name {
            fn spec(&self) -> #serena::worker::ConsumerSpec {
                Self::SPEC
            }

            fn call<'a>(
                &'a self,
                #ctx_param: &'a #serena::worker::DeliveryContext,
            ) -> #serena::worker::HandlerFuture<'a> {
                #boxed
            }

            #required_state
        }

        #track
    }
}

/// `tokens` with every span set to `span`: the path into serena, placed where an error about
/// the code it starts should point (a path spanned at the attribute would drag the attribute
/// into that error).
fn respan(tokens: &TokenStream, span: Span) -> TokenStream {
    tokens
        .clone()
        .into_iter()
        .map(|mut tree| {
            if let TokenTree::Group(group) = &tree {
                let mut inner =
                    proc_macro2::Group::new(group.delimiter(), respan(&group.stream(), span));
                inner.set_span(span);
                tree = TokenTree::Group(inner);
            } else {
                tree.set_span(span);
            }
            tree
        })
        .collect()
}

/// `T` of an argument written `State<T>` (any path ending in `State`, such as
/// `serena::worker::State<T>`). Recognised by its name: the macro sees tokens, not types, so a
/// type alias of `State<T>` is not recognised (its state is then only checked per delivery).
fn state_type(ty: &Type) -> Option<&Type> {
    let path = match ty {
        Type::Path(path) => path,
        // A type passed through a `macro_rules!` fragment, or in parentheses.
        Type::Group(group) => return state_type(&group.elem),
        Type::Paren(paren) => return state_type(&paren.elem),
        _ => return None,
    };
    if path.qself.is_some() {
        return None;
    }
    let last = path.path.segments.last()?;
    if last.ident != "State" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|a| match a {
        syn::GenericArgument::Type(t) => Some(t),
        _ => None,
    });
    match (types.next(), types.next()) {
        (Some(inner), None) => Some(inner),
        _ => None,
    }
}

/// The `ConsumerSpec` the attribute describes, as a constant expression.
fn spec_tokens(args: &ConsumerArgs, name: &Ident) -> TokenStream {
    let serena = args.crate_path();
    let name = LitStr::new(&name.unraw().to_string(), name.span());
    let queue = args
        .queue
        .clone()
        .unwrap_or_else(|| LitStr::new("", Span::call_site()));
    let some = |value: Option<TokenStream>| match value {
        Some(value) => quote!(::core::option::Option::Some(#value)),
        None => quote!(::core::option::Option::None),
    };
    let prefetch = some(args.prefetch.map(|n| quote!(#n)));
    let concurrency = some(args.concurrency.map(|n| quote!(#n)));
    let tag = some(args.tag.as_ref().map(|t| quote!(#t)));
    let exclusive = args.exclusive.unwrap_or(false);
    let priority = some(args.priority.map(|n| quote!(#n)));
    let policy = match args.on_error {
        Some(OnError::Retry) | None => quote!(Retry),
        Some(OnError::Requeue) => quote!(Requeue),
        Some(OnError::Park) => quote!(Park),
        Some(OnError::Reject) => quote!(Reject),
    };
    let spec = quote! {
        #serena::worker::__private::spec(
            #name,
            #queue,
            #prefetch,
            #concurrency,
            #tag,
            #exclusive,
            #priority,
            #serena::worker::ErrorPolicy::#policy,
        )
    };
    match &args.offset {
        Some(offset) => {
            let offset = offset_tokens(offset, &serena);
            quote!(#serena::worker::__private::with_stream_offset(#spec, #offset))
        }
        None => spec,
    }
}

/// The `StreamOffset` of `offset = ...`, as a constant expression.
fn offset_tokens(offset: &Offset, serena: &TokenStream) -> TokenStream {
    let path = quote!(#serena::StreamOffset);
    match offset {
        Offset::First => quote!(#path::First),
        Offset::Last => quote!(#path::Last),
        Offset::Next => quote!(#path::Next),
        Offset::Position(n) => quote!(#path::Offset(#n)),
        Offset::Timestamp(t) => quote!(#path::Timestamp(#t)),
        Offset::Interval(text) => {
            quote!(#path::Interval(::std::borrow::Cow::Borrowed(#text)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{consumer, state_type};
    use quote::{ToTokens, quote};
    use syn::Type;

    #[test]
    fn the_crate_option_replaces_every_path_into_serena() {
        let item = quote! {
            async fn handle(body: Json<Order>, state: State<App>) -> Result<(), String> {
                Ok(())
            }
        };
        let default = consumer(quote!(queue = "q"), item.clone()).to_string();
        assert!(
            default.contains(":: serena :: worker :: Handler"),
            "{default}"
        );
        let renamed = consumer(quote!(queue = "q", crate = "engine::amqp"), item).to_string();
        assert!(!renamed.contains(":: serena ::"), "{renamed}");
        for path in [
            "Handler",
            "FromDelivery",
            "StateRequirement",
            "__private :: spec",
        ] {
            let path = format!("engine :: amqp :: worker :: {path}");
            assert!(renamed.contains(&path), "no {path} in {renamed}");
        }
    }

    fn inner(ty: &str) -> Option<String> {
        let ty: Type = syn::parse_str(ty).expect("a type");
        state_type(&ty).map(|t| t.to_token_stream().to_string())
    }

    #[test]
    fn state_arguments_are_found_by_their_last_segment() {
        assert_eq!(inner("State<Arc<Books>>").as_deref(), Some("Arc < Books >"));
        assert_eq!(
            inner("serena::worker::State<AppState>").as_deref(),
            Some("AppState")
        );
        assert_eq!(inner("(State<u8>)").as_deref(), Some("u8"));
    }

    #[test]
    fn other_arguments_need_no_state() {
        for ty in [
            "Json<State<u8>>",
            "MyState<u8>",
            "State",
            "State<'a, u8, u16>",
            "<X as Trait>::State<u8>",
            "&State<u8>",
            "Bytes",
        ] {
            assert_eq!(inner(ty), None, "{ty}");
        }
    }
}
