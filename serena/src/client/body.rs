//! What a publish takes as its body.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

use crate::proto::connection::Body;
use crate::proto::content::SHARED_BODY_MIN;

/// A message body: anything that is bytes. Borrowed bodies are copied into the connection's
/// write buffer; owned ones ([`Bytes`], `Vec<u8>`, `String`, ...) of
/// [`SHARED_BODY_MIN`] bytes or more are written to the socket from their own memory
/// (vectored writes), so a large message is never copied on its way out. Publishing a clone
/// of a [`Bytes`] costs the same for any size.
///
/// ```no_run
/// # async fn demo(ch: &serena::Channel) -> serena::Result<()> {
/// let big = bytes::Bytes::from(vec![0u8; 4 << 20]);
/// ch.basic_publish("", "images", big.clone(), Default::default()).await?; // not copied
/// ch.basic_publish("", "logs", b"short line", Default::default()).await?; // copied: 10 bytes
/// # Ok(()) }
/// ```
pub trait IntoBody: sealed::Sealed {
    /// Runs `f` on the body as the protocol layer takes it.
    #[doc(hidden)]
    fn with_body<R>(self, f: impl FnOnce(Body<'_>) -> R) -> R;

    /// The body as [`Bytes`] to keep: owned bodies without a copy, borrowed ones copied.
    #[doc(hidden)]
    fn into_bytes(self) -> Bytes;
}

mod sealed {
    pub trait Sealed {}
}

impl<T: AsRef<[u8]> + ?Sized> sealed::Sealed for &T {}
impl<T: AsRef<[u8]> + ?Sized> IntoBody for &T {
    fn with_body<R>(self, f: impl FnOnce(Body<'_>) -> R) -> R {
        f(Body::Borrowed(self.as_ref()))
    }

    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self.as_ref())
    }
}

impl sealed::Sealed for Bytes {}
impl IntoBody for Bytes {
    fn with_body<R>(self, f: impl FnOnce(Body<'_>) -> R) -> R {
        f(Body::Shared(&self))
    }

    fn into_bytes(self) -> Bytes {
        self
    }
}

/// Owned bodies: shared from [`SHARED_BODY_MIN`] bytes on (turning them into [`Bytes`] moves
/// the allocation, it copies nothing), copied below.
macro_rules! owned {
    ($($ty:ty),*) => {$(
        impl sealed::Sealed for $ty {}
        impl IntoBody for $ty {
            fn with_body<R>(self, f: impl FnOnce(Body<'_>) -> R) -> R {
                if self.len() >= SHARED_BODY_MIN {
                    f(Body::Shared(&Bytes::from(self)))
                } else {
                    f(Body::Borrowed(self.as_ref()))
                }
            }

            fn into_bytes(self) -> Bytes {
                Bytes::from(self)
            }
        }
    )*};
}

owned!(Vec<u8>, String, Box<[u8]>, BytesMut);

impl<const N: usize> sealed::Sealed for [u8; N] {}
impl<const N: usize> IntoBody for [u8; N] {
    fn with_body<R>(self, f: impl FnOnce(Body<'_>) -> R) -> R {
        f(Body::Borrowed(&self))
    }

    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(&self)
    }
}

/// A body kept for publishing again (the reliable publisher's): published by reference,
/// without a clone of the [`Bytes`] (the protocol layer copies it below
/// [`SHARED_BODY_MIN`], shares it from there).
pub(crate) struct HeldBody<'a>(pub(crate) &'a Bytes);

impl sealed::Sealed for HeldBody<'_> {}
impl IntoBody for HeldBody<'_> {
    fn with_body<R>(self, f: impl FnOnce(Body<'_>) -> R) -> R {
        f(Body::Shared(self.0))
    }

    fn into_bytes(self) -> Bytes {
        self.0.clone()
    }
}

impl sealed::Sealed for Cow<'_, [u8]> {}
impl IntoBody for Cow<'_, [u8]> {
    fn with_body<R>(self, f: impl FnOnce(Body<'_>) -> R) -> R {
        match self {
            Cow::Borrowed(b) => b.with_body(f),
            Cow::Owned(v) => v.with_body(f),
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Cow::Borrowed(b) => IntoBody::into_bytes(b),
            Cow::Owned(v) => IntoBody::into_bytes(v),
        }
    }
}

impl sealed::Sealed for Cow<'_, str> {}
impl IntoBody for Cow<'_, str> {
    fn with_body<R>(self, f: impl FnOnce(Body<'_>) -> R) -> R {
        match self {
            Cow::Borrowed(s) => s.with_body(f),
            Cow::Owned(s) => s.with_body(f),
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Cow::Borrowed(s) => IntoBody::into_bytes(s),
            Cow::Owned(s) => IntoBody::into_bytes(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared<B: IntoBody>(body: B) -> (bool, usize) {
        body.with_body(|b| (matches!(b, Body::Shared(_)), b.as_slice().len()))
    }

    #[test]
    fn owned_bodies_are_shared_from_the_threshold_on_and_borrowed_ones_never() {
        let big = vec![1u8; SHARED_BODY_MIN];
        assert_eq!(shared(big.clone()), (true, SHARED_BODY_MIN));
        assert_eq!(shared(&big), (false, SHARED_BODY_MIN));
        assert!(!shared(vec![1u8; SHARED_BODY_MIN - 1]).0);
        assert_eq!(shared(Bytes::from_static(b"x")), (true, 1));
        assert!(shared("x".repeat(SHARED_BODY_MIN)).0);
        assert_eq!(shared(*b"abc"), (false, 3));
        assert_eq!(shared(b"abc"), (false, 3));
        assert!(shared(Cow::<str>::Owned("y".repeat(SHARED_BODY_MIN))).0);
    }
}
