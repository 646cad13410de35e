//! Macros the crate's own modules share.

/// The `with_<field>` builders of an option struct, one line per field instead of one
/// seven-line method each. Inside an `impl` block:
///
/// - `copy with_port => port: u16` gives `pub const fn with_port(self, port: u16) -> Self`
///   (for `Copy` fields, usable in `const` contexts);
/// - `owned with_arguments => arguments: FieldTable` gives a plain `pub fn` (a `const fn`
///   cannot drop the value it replaces);
/// - `into with_host => host: String` gives `pub fn with_host(self, host: impl Into<String>)`.
macro_rules! with_fields {
    ($( $kind:ident $method:ident => $field:ident : $ty:ty ),* $(,)?) => {
        $( with_fields!(@$kind $method $field $ty); )*
    };
    (@copy $method:ident $field:ident $ty:ty) => {
        #[doc = concat!("Sets [`", stringify!($field), "`](Self::", stringify!($field), ").")]
        #[must_use]
        pub const fn $method(mut self, $field: $ty) -> Self {
            self.$field = $field;
            self
        }
    };
    (@owned $method:ident $field:ident $ty:ty) => {
        #[doc = concat!("Sets [`", stringify!($field), "`](Self::", stringify!($field), ").")]
        #[must_use]
        pub fn $method(mut self, $field: $ty) -> Self {
            self.$field = $field;
            self
        }
    };
    (@into $method:ident $field:ident $ty:ty) => {
        #[doc = concat!("Sets [`", stringify!($field), "`](Self::", stringify!($field), ").")]
        #[must_use]
        pub fn $method(mut self, $field: impl Into<$ty>) -> Self {
            self.$field = $field.into();
            self
        }
    };
}
