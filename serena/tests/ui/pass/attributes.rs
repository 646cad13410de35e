// Attributes on the function stay usable: docs on the struct, lints and other attributes on
// `handler`, `cfg` on everything.

#![deny(missing_docs, unused_variables)]
//! A crate with strict lints.

use serena::consumer;
use serena::worker::Handler;

/// Documented, so `missing_docs` is satisfied by the struct.
#[consumer(queue = "q")]
#[allow(unused_variables)]
#[inline]
pub async fn documented(body: bytes::Bytes) {
    let x = 1;
}

/// Compiled out: neither the struct nor its impls exist (the `cfg` comes after the
/// attribute, so the macro sees it and copies it onto every item).
#[consumer(queue = "q")]
#[cfg(any())]
pub async fn gone(not_even_a_type: DoesNotExist) {}

/// Deprecated consumers still register.
#[deprecated = "use documented"]
#[consumer(queue = "q")]
pub async fn old() {}

/// Runs the checks.
fn main() {
    assert_eq!(documented.spec().name, "documented");
    #[allow(deprecated)]
    let old_name = old.spec().name;
    assert_eq!(old_name, "old");
}
