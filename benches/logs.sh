#!/usr/bin/env bash
# A run's cost with its log and the metrics file on (docs/performance.md, "Run logs"): a
# supervised `run-job` of bench/noop (nothing to keep) and of bench/chat (10 lines on stdout and
# one logged line, kept in the run's log), with `LORCH_METRICS_DIR` set, against the same runs
# by an earlier lorch given as BASE (built from the commit before run logs, say), which had
# neither; medians of 150 runs, each command in a store of its own. Rewrites its own section
# of docs/performance.md (benches/section.py). Not part of CI; takes about a minute.
#
#   BASE=/path/to/earlier/lorch bash benches/logs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$repo/target/bench-logs
rm -rf "$work" && mkdir -p "$work/plugins"
command -v cc >/dev/null || { echo "benches/logs.sh needs a C compiler (apt-get install gcc)" >&2; exit 1; }
[ -x "${BASE:-}" ] || { echo "set BASE to an earlier lorch binary, to compare with" >&2; exit 1; }

echo "== building (release)"
cargo build --release --quiet -p lorch
lorch=$repo/target/release/lorch
cc -O2 -shared -fPIC -I "$repo/plugin-api/include" -o "$work/plugins/libbench.so" "$repo/benches/noop.c"
unset BQ_EVENTS_DATASET BQ_EVENTS_TABLE LORCH_NOW LORCH_CONFIG LORCH_METRICS_DIR
export LORCH_PLUGIN_PATH=$work/plugins XDG_CACHE_HOME=$work/cache
# The five commands take turns, run after run, so that the machine's drift (up to 2x within an
# hour here) falls on each alike; hyperfine runs one command's runs, then the next's.
read -r base_noop noop base_chat chat < <(python3 - "$work" "$BASE" "$lorch" "${RUNS:-150}" <<'PY'
import os, statistics, subprocess, sys, time
work, base, lorch, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
cases = [("base-noop", base, "noop", {}), ("noop", lorch, "noop", {"LORCH_METRICS_DIR": work + "/metrics"}),
         ("base-chat", base, "chat", {}), ("chat", lorch, "chat", {"LORCH_METRICS_DIR": work + "/metrics"})]
times = {name: [] for name, *_ in cases}
for i in range(runs + 5):
    for name, binary, job, extra in cases:
        env = dict(os.environ, LORCH_HOME=f"{work}/{name}", **extra)
        start = time.perf_counter()
        subprocess.run([binary, "run-job", "bench", job, "--quiet"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if i >= 5:  # warm-up
            times[name].append((time.perf_counter() - start) * 1000)
print(" ".join("%.2f" % statistics.median(times[name]) for name, *_ in cases))
PY
)
diff() { python3 -c "print('%+.2f' % (float('$1') - float('$2')))"; }
echo "noop: $base_noop -> $noop ms ($(diff "$noop" "$base_noop")); chat: $base_chat -> $chat ms ($(diff "$chat" "$base_chat"))"
kept=$(env LORCH_HOME=$work/chat "$lorch" runs logs last | wc -l)
[ "$kept" = 11 ] || { echo "the chat run kept $kept lines, not 11" >&2; exit 1; }

python3 "$repo/benches/section.py" "$repo/docs/performance.md" "<!-- benches/logs.sh -->" <<MD
## Run logs (issue 16)

\`BASE=… bash benches/logs.sh\`, release build, $(date -u +%Y-%m-%d): a supervised \`run-job\`
of a C job, each command in a store of its own, medians of ${RUNS:-150} runs; the commands take
turns run after run, so the machine's drift falls on each alike. \`BASE\` is lorch built from the
commit before run logs (d6a18b6), whose worker wrote to lorch's stdout and stderr directly and
which kept nothing.

| what | target | before | now, with the metrics file | difference |
|---|---|---|---|---|
| bench/noop: nothing to keep | ≤ 2 ms more | $base_noop ms | $noop ms | $(diff "$noop" "$base_noop") ms |
| bench/chat: 10 lines on stdout and one logged line, kept | | $base_chat ms | $chat ms | $(diff "$chat" "$base_chat") ms |

Now each run has two more pipes and a thread that reads them; a line costs its JSON encoding and
its share of one \`write\` per read of the pipe.
MD
echo "== wrote docs/performance.md (logs)"
