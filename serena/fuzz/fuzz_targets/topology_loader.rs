//! Arbitrary bytes, read as UTF-8 (invalid sequences replaced), through the topology loader
//! `Topology::from_toml`: no input may panic, and every input ends in `Ok` or a typed
//! `TopologyError`. Checked on every input:
//!
//! - an error is `TopologyError::Invalid` with at least one problem, each naming the file and a
//!   line and column inside the text, and it displays (one line or more per problem);
//! - a topology that loads validates again, and every entity's declare arguments, options and
//!   name in problems can be built from it (the paths `topology apply` takes).
//!
//! Start it with the seed files and the dictionary (see the README's "Fuzzing" section):
//! `cargo fuzz run topology_loader corpus/topology_loader ../tests/topology/bad -- -dict=topology.dict`

#![no_main]

use libfuzzer_sys::fuzz_target;
use serena::topology::{Topology, TopologyError};
use serena::{ExchangeDeclareOptions, QueueDeclareOptions};

const FILE: &str = "fuzz.toml";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Topology::from_toml(&text, FILE) {
        Ok(topology) => check_loaded(&topology),
        Err(error) => check_error(&text, &error),
    }
});

fn check_loaded(topology: &Topology) {
    if let Err(e) = topology.validate() {
        panic!("a loaded topology does not validate again: {e}");
    }
    for (i, x) in topology.exchanges.iter().enumerate() {
        let _ = x.declare_arguments();
        let _ = ExchangeDeclareOptions::from(x);
        let _ = x.entity(i).to_string();
    }
    for (i, q) in topology.queues.iter().enumerate() {
        let _ = q.declare_arguments();
        let _ = QueueDeclareOptions::from(q);
        let _ = q.entity(i).to_string();
    }
    for (i, b) in topology.bindings.iter().enumerate() {
        let _ = b.entity(i).to_string();
    }
}

fn check_error(text: &str, error: &TopologyError) {
    let TopologyError::Invalid { problems } = error else {
        panic!("parsing text gave a read error: {error}");
    };
    assert!(!problems.is_empty(), "an invalid topology with no problems");
    // Lines are counted from 1; a location may point just past the last line's end.
    let lines = text.matches('\n').count() + 1;
    for p in problems {
        assert_eq!(p.file.as_deref(), Some(FILE), "{p}");
        if let Some(at) = p.location {
            assert!(
                (1..=lines).contains(&at.line) && at.column >= 1,
                "location {at} outside a text of {lines} lines: {p}"
            );
        }
        assert!(!p.message.is_empty(), "a problem without a message: {p:?}");
    }
    let shown = error.to_string();
    assert!(
        shown.lines().count() >= problems.len(),
        "{} problems displayed in {} lines",
        problems.len(),
        shown.lines().count()
    );
}
