#!/usr/bin/env bash
# Pipelines (docs/performance.md, "Pipelines"): what a step costs on top of its job. A chain of
# 200 steps of a C job that does nothing (each needs the one before, so they run one after
# another), against a pipeline of one such step and a `run-job` of the job; hyperfine medians.
# Rewrites its own section of docs/performance.md (benches/section.py; benches/run.sh keeps
# it). Not part of CI; takes about two minutes.
#
#   bash benches/pipelines.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$repo/target/bench-pipelines
rm -rf "$work" && mkdir -p "$work/plugins"
for tool in hyperfine cc; do
  command -v "$tool" >/dev/null || { echo "benches/pipelines.sh needs $tool (apt-get install hyperfine gcc)" >&2; exit 1; }
done

echo "== building (release)"
cargo build --release --quiet -p lorch
lorch=$repo/target/release/lorch
export LORCH_HOME=$work/home XDG_CACHE_HOME=$work/cache XDG_DATA_HOME=$work/data
export LORCH_CONFIG=$work/lorch.toml LORCH_PLUGIN_PATH=$work/plugins
unset BQ_EVENTS_DATASET BQ_EVENTS_TABLE LORCH_NOW

cc -O2 -shared -fPIC -I "$repo/plugin-api/include" -o "$work/plugins/libbench.so" "$repo/benches/noop.c"

{
  printf '[[pipeline.one.steps]]\nname = "s1"\njob = "bench/noop"\n\n'
  for i in $(seq 1 200); do
    printf '[[pipeline.chain.steps]]\nname = "s%d"\njob = "bench/noop"\n' "$i"
    [ "$i" -gt 1 ] && printf 'needs = ["s%d"]\n' $((i - 1))
    printf '\n'
  done
} > "$LORCH_CONFIG"
"$lorch" run-pipeline chain --quiet

hyperfine -N --warmup 1 --runs 5 --style none --export-json "$work/chain.json" \
  "$lorch run-pipeline chain --quiet" >/dev/null
hyperfine -N --warmup 3 --runs 30 --style none --export-json "$work/one.json" \
  "$lorch run-pipeline one --quiet" "$lorch run-job bench noop --quiet" >/dev/null
median() { python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results']; print(' '.join('%.2f' % (x['median']*1000) for x in r))" "$1"; }
read -r chain < <(median "$work/chain.json")
read -r one run_job < <(median "$work/one.json")
per_step=$(python3 -c "print('%.2f' % (float('$chain') / 200))")
echo "chain of 200: $chain ms ($per_step ms a step); pipeline of 1: $one ms; run-job: $run_job ms"

python3 "$repo/benches/section.py" "$repo/docs/performance.md" "<!-- benches/pipelines.sh -->" <<MD
## Pipelines (issue 15)

\`bash benches/pipelines.sh\`, release build, $(date -u +%Y-%m-%d): a chain of 200 steps of a C job
that does nothing, each needing the one before (so one runs at a time), local store; hyperfine
medians (5 runs of the chain, 30 of the others).

| what | target | measured |
|---|---|---|
| \`lorch run-pipeline\` of the 200-step chain, per step | ≤ 15 ms | $per_step ms ($chain ms in all) |
| \`lorch run-pipeline\` of a 1-step pipeline | | $one ms |
| \`lorch run-job\` of the same job, for scale | | $run_job ms |

A step is a supervised run like \`run-job\`'s (its worker process, its lock, its two events)
without a lorch process of its own: the pipeline's process loads the plugins, reads the
configuration and opens the store once.
MD
echo "== wrote docs/performance.md (pipelines)"
