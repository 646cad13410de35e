//! "Did you mean": the names nearest to a mistyped one, by [`strsim::osa_distance`] (edits,
//! with a swap of two neighbours counting as one). The topology loader uses it for unknown
//! keys, and serena's `#[consumer]` for unknown options and queues, so both suggest alike.

/// `candidates` nearest to `name` first (the order they came in among equals).
pub fn rank<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut ranked: Vec<(usize, &str)> = candidates
        .into_iter()
        .map(|c| (strsim::osa_distance(name, c), c))
        .collect();
    ranked.sort_by_key(|&(d, _)| d);
    ranked.into_iter().map(|(_, c)| c).collect()
}

/// The candidate nearest to `name`, if it is near enough to be a likely typo: at most a third
/// of the longer name's characters apart (at least one).
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::osa_distance(name, c), c))
        .filter(|&(d, c)| d <= (c.chars().count().max(name.chars().count()) / 3).max(1))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[&str] = &["name", "type", "durable", "park", "queue", "url"];

    #[test]
    fn typos_find_their_name() {
        for (typo, meant) in [
            ("durabel", "durable"),
            ("tpye", "type"),
            ("parked", "park"),
            ("queu", "queue"),
            ("uri", "url"),
            ("name", "name"),
        ] {
            assert_eq!(closest(typo, KEYS.iter().copied()), Some(meant), "{typo}");
        }
        for far in ["dead_letter", "max_attempts", ""] {
            assert_eq!(closest(far, KEYS.iter().copied()), None, "{far}");
        }
    }

    #[test]
    fn ranking_puts_the_nearest_first() {
        assert_eq!(
            rank("payment", ["orders", "payments", "refunds"]),
            ["payments", "orders", "refunds"]
        );
        assert!(rank("x", []).is_empty());
    }
}
