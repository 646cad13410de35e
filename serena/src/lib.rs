//! # serena
//!
//! A structurally concurrent AMQP 0-9-1 client for RabbitMQ on tokio, with declarative topology
//! and a worker framework. This release holds the protocol core; the client, topology and worker
//! layers are built on it.
//!
//! ## Layout
//!
//! - [`proto`]: the sans-IO AMQP 0-9-1 codec: frames, every method of every class with
//!   RabbitMQ's extensions, field tables with every errata type, the content header and its
//!   14 properties, and message (re)assembly. No I/O, no clocks, no panics on any input.

pub mod proto;
