//! `method!` turns a field list written as in the spec into a struct with `encode_args` and
//! `decode_args`. Fields are written `name: kind` where kind is one of the spec's domain types
//! (`bit octet short long longlong shortstr longstr table timestamp`); `reserved kind` stands for a
//! deprecated field that is always sent as zero or empty and ignored when read.

macro_rules! field_type {
    (bit) => {
        bool
    };
    (octet) => {
        u8
    };
    (short) => {
        u16
    };
    (long) => {
        u32
    };
    (longlong) => {
        u64
    };
    (timestamp) => {
        u64
    };
    (shortstr) => {
        $crate::ShortString
    };
    (longstr) => {
        $crate::LongString
    };
    (table) => {
        $crate::FieldTable
    };
}

macro_rules! method {
    ($(#[$sm:meta])* $name:ident = $amqp:literal { $($body:tt)* }) => {
        method!(@parse [$(#[$sm])* $name $amqp] [] [] $($body)*);
    };
    (@parse $hdr:tt [$($f:tt)*] [$($s:tt)*] reserved $kind:ident $(, $($rest:tt)*)?) => {
        method!(@parse $hdr [$($f)*] [$($s)* (reserved $kind)] $($($rest)*)?);
    };
    (@parse $hdr:tt [$($f:tt)*] [$($s:tt)*]
        $(#[$fm:meta])* $fname:ident : $kind:ident $(, $($rest:tt)*)?) => {
        method!(@parse $hdr [$($f)* ([$(#[$fm])*] $fname $kind)] [$($s)* (field $fname $kind)]
            $($($rest)*)?);
    };
    (@parse [$(#[$sm:meta])* $name:ident $amqp:literal]
        [$(([$(#[$fm:meta])*] $fname:ident $kind:ident))*] [$($step:tt)*]) => {
        $(#[$sm])*
        #[derive(Debug, Clone, PartialEq, Default)]
        pub struct $name {
            $( $(#[$fm])* pub $fname: field_type!($kind), )*
        }

        impl $name {
            /// The method's name in the AMQP spec.
            pub const NAME: &'static str = $amqp;

            #[allow(unused_mut)]
            pub(crate) fn encode_args(
                &self,
                buf: &mut ::bytes::BytesMut,
            ) -> Result<(), $crate::EncodeError> {
                let mut w = $crate::codec::Writer::new(buf);
                $( method!(@enc w self $amqp $step); )*
                w.finish();
                Ok(())
            }

            #[allow(unused_variables)]
            pub(crate) fn decode_args(
                r: &mut $crate::codec::Reader,
            ) -> Result<Self, $crate::DecodeError> {
                $( method!(@dec r $amqp $step); )*
                Ok(Self { $($fname),* })
            }
        }
    };
    (@enc $w:ident $s:ident $amqp:literal (field $fname:ident $kind:ident)) => {
        $w.$kind(&$s.$fname, concat!($amqp, ".", stringify!($fname)))?
    };
    (@enc $w:ident $s:ident $amqp:literal (reserved $kind:ident)) => {
        $w.$kind(&<field_type!($kind)>::default(), concat!($amqp, ".reserved"))?
    };
    (@dec $r:ident $amqp:literal (field $fname:ident $kind:ident)) => {
        let $fname = $r.$kind(concat!($amqp, ".", stringify!($fname)))?;
    };
    (@dec $r:ident $amqp:literal (reserved $kind:ident)) => {
        $r.$kind(concat!($amqp, ".reserved"))?;
    };
}
