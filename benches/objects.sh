#!/usr/bin/env bash
# Objects throughput: 100,000 objects upserted into the local store by one run, and merged into
# the BigQuery emulator by `lorch events flush`. Rewrites its own section of docs/performance.md
# (benches/section.py; benches/run.sh keeps it).
# Not part of CI. Takes about two minutes; needs the emulator's virtualenv, which `cargo test`
# installs under target/tmp the first time (without it the MERGE figure is left out, loudly).
#
#   bash benches/objects.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$repo/target/bench-objects
rm -rf "$work" && mkdir -p "$work/plugins"

echo "== building (release)"
cargo build --release --quiet -p lorch -p testkit
lorch=$repo/target/release/lorch
cp target/release/libtestkit.so "$work/plugins/"
export XDG_CACHE_HOME=$work/cache XDG_DATA_HOME=$work/data
unset LORCH_PLUGIN_PATH BQ_EVENTS_DATASET BQ_EVENTS_TABLE LORCH_BQ_ENDPOINT

# upsert HOME PARAM...: one run of testkit/upsert; prints objects/s from the run's duration
# (the attempt, storing included) and the counts.
upsert() {
  local home=$1; shift
  local args=() p
  for p in "$@"; do args+=(--param "$p"); done
  LORCH_HOME=$home "$lorch" --plugin-path "$work/plugins" run-job testkit upsert --json --quiet "${args[@]}" |
    python3 -c 'import json,sys; r=json.load(sys.stdin); o=r["objects"]; n=o["inserted"]+o["updated"]+o["unchanged"]; print("%d objects in %.2f s: %.0f objects/s (%d inserted, %d updated, %d unchanged)" % (n, r["duration_ms"]/1000, n/(r["duration_ms"]/1000), o["inserted"], o["updated"], o["unchanged"]))'
}

echo "== local store: 100,000 objects, pages of 1,000 (5 runs, each in a fresh store)"
inserts=()
for i in 1 2 3 4 5; do inserts+=("$(upsert "$work/home-$i" count=100000)"); echo "${inserts[-1]}"; done
echo "== the same 100,000 again with new payloads (updated), then unchanged"
updates=$(upsert "$work/home-1" count=100000 version=v2) && echo "$updates"
unchanged=$(upsert "$work/home-1" count=100000 version=v2) && echo "$unchanged"
echo "== 10,000 objects, one upsert call each"
single=$(upsert "$work/home-single" count=10000 batch=1) && echo "$single"

merge="not measured: no BigQuery emulator under target/tmp (run \`cargo test\` once)"
write_section() {
  local rate
  rate=$(printf '%s\n' "${inserts[@]}" | sed 's/.*: \([0-9]*\) objects\/s.*/\1/' | sort -n | sed -n 3p)
  python3 "$repo/benches/section.py" "$repo/docs/performance.md" "<!-- benches/objects.sh -->" <<MD
## Objects (issue 18)

\`bash benches/objects.sh\`, release build, $(date -u +%Y-%m-%d): the testkit job \`upsert\` stores
100,000 objects (payload \`{"i": N, "version": "v1"}\`, pages of 1,000 per \`upsert_objects\`
call) in one run; objects/s is over the attempt, storing included (\`run-job --json\`'s
\`duration_ms\`).

| what | measured |
|---|---|
| 100,000 objects into a fresh local store, median of 5 runs | $rate objects/s |
| each run | $(printf '%s; ' "${inserts[@]}" | sed 's/; $//') |
| the same 100,000 with new payloads | $updates |
| the same 100,000 unchanged | $unchanged |
| 10,000 objects, one \`upsert\` call each | $single |
| \`lorch events flush\` of 100,000 pending objects to the BigQuery emulator (batches of 5,000, one MERGE each) | $merge |
MD
  echo "== wrote docs/performance.md (objects)"
}

python=$repo/target/tmp/bqemulator-venv/bin/python
if [ ! -x "$python" ]; then
  echo "!! no BigQuery emulator under target/tmp (run cargo test once): MERGE figure left out" >&2
  write_section
  exit 0
fi
echo "== MERGE of 100,000 objects into the emulator (lorch events flush)"
port=19450
(sleep 100000 | "$python" tests/emulator/launch.py start --project bench --log-level warning \
  --rest-port $port --grpc-port $((port + 1)) >/dev/null 2>"$work/emulator.log") &
for _ in $(seq 100); do curl -s "localhost:$port/bigquery/v2/projects/bench/datasets" >/dev/null && break; sleep 0.2; done
export BQ_PROJECT=bench BQ_EVENTS_DATASET=bench BQ_EVENTS_TABLE=event_log
home=$work/home-bq
LORCH_HOME=$home LORCH_BQ_ENDPOINT=http://127.0.0.1:$port "$lorch" events init >/dev/null
# Queued while BigQuery is unreachable (nothing listens on port 9), then delivered in one flush.
LORCH_HOME=$home LORCH_BQ_ENDPOINT=http://127.0.0.1:9 LORCH_BQ_FLUSH_TIMEOUT=1s \
  "$lorch" --plugin-path "$work/plugins" run-job testkit upsert --quiet --param count=100000 2>/dev/null || true
flushed=$(LORCH_HOME=$home LORCH_BQ_ENDPOINT=http://127.0.0.1:$port /usr/bin/time -f "lorch: %e s wall, %U s user, %S s system, %M KiB peak" \
  "$lorch" events flush --timeout 10m 2>&1)
echo "$flushed"
pkill -f "rest-port $port" || true
merge="$(echo "$flushed" | grep '^merged' | sed 's/ into [^ ]*//'); $(echo "$flushed" | grep '^lorch:' | sed 's/^lorch: /lorch: /')"
write_section
