//! Compile tests of `#[consumer]`: what it accepts (`tests/ui/pass`, built and run) and the
//! errors it gives for misuse (`tests/ui/fail`, each with the expected `.stderr`).
//!
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite cargo test -p serena --test macros`
//! and read the diff: every message should tell the user what to change, at the right token.

use std::path::{Path, PathBuf};

/// trybuild builds the cases as a crate of its own, in `<target>/tests/trybuild/serena`, which
/// is their `CARGO_MANIFEST_DIR`. `topology = "tests/ui/..."` paths in the cases are relative
/// to that, so the topology files are mirrored there, as they sit relative to this crate.
fn mirror_topology_files() {
    let target: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is <target>/tmp")
        .to_owned();
    let mirror = target.join("tests/trybuild/serena/tests/ui");
    std::fs::create_dir_all(&mirror).expect("create the trybuild project's tests/ui");
    for file in [
        "topology.toml",
        "broken-topology.toml",
        "invalid-topology.toml",
    ] {
        let from = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/ui")
            .join(file);
        let text = std::fs::read(&from).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        let to = mirror.join(file);
        // Rewritten only when changed: the cases' builds depend on the file's timestamp.
        if std::fs::read(&to).ok().as_deref() != Some(&text[..]) {
            std::fs::write(&to, text).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
        }
    }
}

#[test]
fn consumer_attribute() {
    mirror_topology_files();
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
