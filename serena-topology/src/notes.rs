//! Advice about a valid topology: what RabbitMQ accepts but makes costly.
//!
//! One note today: names over [`INLINE_NAME_LEN`] bytes. RabbitMQ (Erlang) keeps a binary of
//! up to 64 bytes inside the process that holds it and a longer one as a reference-counted
//! binary off that heap; a queue name used as a routing key travels with every message. Measured
//! on this project's test machine (RabbitMQ 3.10, 64-byte bodies, confirms, window 1,000):
//! queue names (and routing keys) of 60 and 64 bytes cost the broker 24–30 µs of CPU per
//! message, names of 65 and 70 bytes 37–44 µs, about 1.35× (docs/performance.md).

use super::error::Problem;
use super::model::Topology;
use super::validate::Checker;

/// The longest name RabbitMQ handles at its cheapest: 64 bytes.
pub const INLINE_NAME_LEN: usize = 64;

impl Topology {
    /// Advice about a valid topology, in file order: names of exchanges and queues (those a
    /// retry schedule adds included) and binding keys over [`INLINE_NAME_LEN`] bytes, which cost
    /// the broker about 1.35× the CPU per message. Not errors: `serena topology check` prints
    /// them and still succeeds.
    pub fn notes(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let long = |what: &str, len: usize| {
            format!(
                "the {what} is {len} bytes long; past {INLINE_NAME_LEN} bytes RabbitMQ keeps it off \
                 the process heap and each message costs the broker about 1.35x the CPU"
            )
        };
        for (i, x) in self.exchanges.iter().enumerate() {
            if x.name.len() > INLINE_NAME_LEN {
                let mut c = Checker::new(&mut out, x.entity(i), x.origin.as_ref());
                c.at("name", long("name", x.name.len()));
            }
        }
        for (entity, q) in self.queue_plan() {
            if q.name.len() > INLINE_NAME_LEN {
                let mut c = Checker::new(&mut out, entity, q.origin.as_ref());
                c.at("name", long("name", q.name.len()));
            }
        }
        for (i, b) in self.bindings.iter().enumerate() {
            if b.routing_key.len() > INLINE_NAME_LEN {
                let mut c = Checker::new(&mut out, b.entity(i), b.origin.as_ref());
                c.at("routing_key", long("routing key", b.routing_key.len()));
            }
        }
        super::validate::sort_problems(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(text: &str) -> Topology {
        Topology::from_toml(text, "t.toml").expect("a valid topology")
    }

    #[test]
    fn names_up_to_64_bytes_get_no_note() {
        let name = "q".repeat(64);
        let t = topology(&format!(
            "[[exchanges]]\nname = \"{name}\"\ntype = \"direct\"\n\n[[queues]]\nname = \"{name}\"\n\n\
             [[bindings]]\nsource = \"{name}\"\nqueue = \"{name}\"\nrouting_key = \"{name}\"\n"
        ));
        assert!(t.notes().is_empty(), "{:?}", t.notes());
    }

    #[test]
    fn each_long_name_and_key_gets_a_note_at_its_line() {
        let name = "q".repeat(65);
        let t = topology(&format!(
            "[[exchanges]]\nname = \"{name}\"\ntype = \"direct\"\n\n[[queues]]\nname = \"{name}\"\n\n\
             [[bindings]]\nsource = \"{name}\"\nqueue = \"{name}\"\nrouting_key = \"{name}\"\n"
        ));
        let notes: Vec<String> = t.notes().iter().map(ToString::to_string).collect();
        assert_eq!(notes.len(), 3, "{notes:#?}");
        assert!(notes[0].starts_with("t.toml:2:1: exchange"), "{}", notes[0]);
        assert!(notes[1].starts_with("t.toml:6:1: queue"), "{}", notes[1]);
        assert!(notes[2].starts_with("t.toml:11:1: binding"), "{}", notes[2]);
        assert!(
            notes[2].contains("routing key is 65 bytes long"),
            "{}",
            notes[2]
        );
    }

    #[test]
    fn a_retry_schedule_that_makes_a_long_name_gets_a_note() {
        // 58 bytes: fine itself, but its delay queue (+ ".retry.1s") and its park queue
        // (+ ".parked") cross the line.
        let name = "q".repeat(58);
        let t = topology(&format!(
            "[[queues]]\nname = \"{name}\"\nretry = {{ delays = [\"1s\"] }}\n"
        ));
        let notes: Vec<String> = t.notes().iter().map(ToString::to_string).collect();
        assert_eq!(notes.len(), 2, "{notes:#?}");
        assert!(
            notes
                .iter()
                .any(|n| n.contains(".retry.1s") && n.contains("67 bytes")),
            "{notes:#?}"
        );
        assert!(
            notes
                .iter()
                .any(|n| n.contains(".parked") && n.contains("65 bytes")),
            "{notes:#?}"
        );
    }
}
