#!/usr/bin/env bash
# `lorch status` (docs/performance.md, "Status"): 1,000 jobs with 20 runs each in the store
# (the last of every tenth job failed, every hundredth running), hyperfine median. The runs are
# written into the store directly, as a store of an earlier lorch that the first `status` brings
# up to date: running 20,000 jobs would take minutes and measure nothing more. Rewrites its own section of docs/performance.md (benches/section.py; benches/run.sh
# keeps it). Not part of CI; takes about a minute.
#
#   bash benches/status.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$repo/target/bench-status
rm -rf "$work" && mkdir -p "$work"
command -v hyperfine >/dev/null || { echo "benches/status.sh needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }

echo "== building (release)"
cargo build --release --quiet -p lorch
lorch=$repo/target/release/lorch
export LORCH_HOME=$work/home XDG_CACHE_HOME=$work/cache XDG_DATA_HOME=$work/data
export LORCH_CONFIG=$work/lorch.toml
unset BQ_EVENTS_DATASET BQ_EVENTS_TABLE LORCH_NOW LORCH_PLUGIN_PATH
: > "$LORCH_CONFIG"
"$lorch" runs list >/dev/null 2>&1 # creates the store

python3 - "$LORCH_HOME/events.db" <<'PY'
import sqlite3, sys, uuid, datetime
db = sqlite3.connect(sys.argv[1])
start = datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc)
rows = []
for j in range(1000):
    for r in range(20):
        began = start + datetime.timedelta(hours=r, minutes=j % 60)
        ended = began + datetime.timedelta(seconds=30 + j % 7)
        last = r == 19
        status = "completed"
        if last and j % 10 == 0:
            status = "failed"
        if last and j % 100 == 1:
            status = "running"
        fmt = lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        rows.append((str(uuid.uuid4()), f"pkg{j // 10:03d}", f"job{j % 10}", f"acct{j % 3}",
                     status, "error" if status == "failed" else None, 1, fmt(began),
                     None if status == "running" else fmt(ended), "bench"))
db.executemany("INSERT INTO runs (run_id, package, job, account, status, reason, attempt, started_at, ended_at, host) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
# As a store from an earlier lorch: the next lorch fills job_status from the runs.
db.execute("PRAGMA user_version = 2")
db.commit()
PY
rows=$({ "$lorch" status --json || true; } | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["jobs"]))')
[ "$rows" = 1000 ] || { echo "status shows $rows jobs, not 1000" >&2; exit 1; }

# A run's cost with the metrics file on (LORCH_METRICS_DIR) and off, in a store of its own with
# one job: the no-op job of benches/noop.c.
mkdir -p "$work/plugins" "$work/small"
cc -O2 -shared -fPIC -I "$repo/plugin-api/include" -o "$work/plugins/libbench.so" "$repo/benches/noop.c"
small="env LORCH_HOME=$work/small LORCH_PLUGIN_PATH=$work/plugins"
hyperfine -N --warmup 5 --runs 50 --style none --export-json "$work/run.json" \
  "$small $lorch run-job bench noop --quiet" \
  "$small LORCH_METRICS_DIR=$work/metrics $lorch run-job bench noop --quiet" >/dev/null
read -r plain with_metrics < <(python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results']; print(' '.join('%.2f' % (x['median']*1000) for x in r))" "$work/run.json")
extra=$(python3 -c "print('%+.2f' % (float('$with_metrics') - float('$plain')))")
echo "run-job: $plain ms, with metrics: $with_metrics ms ($extra ms)"

hyperfine -N --warmup 5 --runs 50 --style none --export-json "$work/status.json" \
  -i "$lorch status" "$lorch status --json" "$lorch --version" >/dev/null
read -r table json version < <(python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results']; print(' '.join('%.2f' % (x['median']*1000) for x in r))" "$work/status.json")
echo "status: $table ms, status --json: $json ms, --version: $version ms"

python3 "$repo/benches/section.py" "$repo/docs/performance.md" "<!-- benches/status.sh -->" <<MD
## Status and metrics (issue 16)

\`bash benches/status.sh\`, release build, $(date -u +%Y-%m-%d): 1,000 jobs and accounts with 20
runs each in the store (20,000 runs; every tenth job failing, ten running), hyperfine medians
of 50 runs. It reads the configuration file and the store only: no plugin, no network.

| what | target | measured |
|---|---|---|
| \`lorch status\`, 1,000 jobs' history | ≤ 20 ms | $table ms |
| \`lorch status --json\` | | $json ms |
| \`lorch --version\`, for scale | | $version ms |
| \`lorch run-job\` of a no-op job (benches/noop.c), supervised | | $plain ms |
| the same with the metrics file (\`LORCH_METRICS_DIR\`) | ≤ 2 ms more | $with_metrics ms ($extra ms) |
MD
echo "== wrote docs/performance.md (status)"
