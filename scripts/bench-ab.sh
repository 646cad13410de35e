#!/usr/bin/env bash
# Before/after comparison of serena alone: builds the comparison program (bench/) at REV in a
# temporary worktree and at the working tree, then runs the two alternately, REPS times each,
# on the same broker, and prints the medians side by side (after ÷ before).
#
#   bash scripts/bench-ab.sh REV [REPS] [SCENARIOS]
#   bash scripts/bench-ab.sh 33732c6 5 publish_confirm,consume_ack,rpc_latency,large_body
set -euo pipefail
cd "$(dirname "$0")/.."

rev=${1:?usage: bench-ab.sh REV [REPS] [SCENARIOS]}
reps=${2:-5}
only=${3:-publish_confirm,consume_ack,rpc_latency,large_body}
before_dir=$(mktemp -d /tmp/serena-before.XXXXXX)
out=$(mktemp /tmp/serena-ab.XXXXXX.jsonl)
cleanup() { git worktree remove --force "$before_dir" >/dev/null 2>&1 || true; }
trap cleanup EXIT

bash .ci/ensure-broker
git worktree add -q --detach "$before_dir" "$rev"
cargo build -q --release --manifest-path "$before_dir/bench/Cargo.toml"
cargo build -q --release --manifest-path bench/Cargo.toml

run() { # label binary
  "$2" --clients serena --only "$only" --reps 1 --json 2>/dev/null |
    grep '^{' | sed "s/^{/{\"build\":\"$1\",/" >>"$out"
}
for i in $(seq 1 "$reps"); do
  # Alternate which goes first, so neither always meets a warmer broker.
  if (( i % 2 )); then
    run before "$before_dir/bench/target/release/serena-bench"
    run after bench/target/release/serena-bench
  else
    run after bench/target/release/serena-bench
    run before "$before_dir/bench/target/release/serena-bench"
  fi
done

python3 - "$out" "$rev" "$reps" <<'PY'
import json, statistics, sys
path, rev, reps = sys.argv[1:]
rows = [json.loads(l) for l in open(path)]
keys = [("msgs_per_s", "msg/s"), ("mb_per_s", "MB/s"), ("cpu_us_per_msg", "CPU µs/msg"),
        ("p50_us", "p50 µs"), ("p99_us", "p99 µs")]
print(f"medians of {reps} alternating runs; before = {rev}, after = working tree")
print(f"{'scenario':<16} {'measure':<12} {'before':>10} {'after':>10} {'after/before':>13}")
for scenario in dict.fromkeys(r["scenario"] for r in rows):
    for key, name in keys:
        vals = {b: [r[key] for r in rows if r["scenario"] == scenario and r["build"] == b and r.get(key) is not None]
                for b in ("before", "after")}
        if not vals["before"] or not vals["after"]:
            continue
        if key == "mb_per_s" and scenario != "large_body":
            continue
        b, a = statistics.median(vals["before"]), statistics.median(vals["after"])
        print(f"{scenario:<16} {name:<12} {b:>10.1f} {a:>10.1f} {a / b:>12.3f}x")
PY
