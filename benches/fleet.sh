#!/usr/bin/env bash
# Fleet mode's throughput and latency (docs/performance.md, "Fleet"): no-op runs per second
# through 1, 2 and 4 workers (each a machine of its own: its own LORCH_HOME, concurrency 1)
# against a local `run-job` loop, and the time from `lorch submit` to the run's `job.started`
# with one idle worker. A nats-server of its own on a free port. Rewrites its own section of
# docs/performance.md (benches/section.py). Not part of CI; takes a few minutes.
#
#   bash benches/fleet.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$repo/target/bench-fleet
rm -rf "$work" && mkdir -p "$work/plugins"
for tool in nats-server cc; do
  command -v "$tool" >/dev/null || { echo "benches/fleet.sh needs $tool (apt-get install nats-server gcc)" >&2; exit 1; }
done

echo "== building (release)"
cargo build --release --quiet -p lorch
cc -O2 -shared -fPIC -I "$repo/plugin-api/include" -o "$work/plugins/libbench.so" "$repo/benches/noop.c"
unset BQ_EVENTS_DATASET BQ_EVENTS_TABLE LORCH_NOW LORCH_CONFIG LORCH_METRICS_DIR
export LORCH_PLUGIN_PATH=$work/plugins XDG_CACHE_HOME=$work/cache

read -r loop w1 w2 w4 p50 p99 < <(python3 - "$repo/target/release/lorch" "$work" "${RUNS:-200}" <<'PY'
import json, os, socket, statistics, subprocess, sys, time
lorch, work, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def server():
    port = free_port()
    store = f"{work}/nats-{port}"
    proc = subprocess.Popen(["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            socket.create_connection(("127.0.0.1", port)).close(); break
        except OSError:
            time.sleep(0.02)
    return proc, f"nats://127.0.0.1:{port}"

def lorch_run(args, home, url=None, **kw):
    env = dict(os.environ, LORCH_HOME=home)
    if url: env["LORCH_NATS_URL"] = url
    return subprocess.run([lorch] + args, env=env, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, **kw)

def queue_empty(url, home):
    s = json.loads(lorch_run(["queue", "status", "--json"], home, url).stdout)
    return s["in_progress"] == 0 and all(n == 0 for n in s["waiting"].values())

# A local loop, for scale.
start = time.perf_counter()
for n in range(runs):
    lorch_run(["run-job", "bench", "noop", "--account", f"a{n}", "--quiet"], f"{work}/loop")
loop = runs / (time.perf_counter() - start)

rates = []
for workers in (1, 2, 4):
    proc, url = server()
    home = f"{work}/w{workers}"
    for n in range(runs):  # a distinct account each: no lock between them
        lorch_run(["submit", "bench/noop", "--account", f"a{n}", "--quiet"], f"{home}-submit", url)
    start = time.perf_counter()
    procs = [subprocess.Popen([lorch, "worker"], env=dict(os.environ, LORCH_HOME=f"{home}-{i}", LORCH_NATS_URL=url),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(workers)]
    while not queue_empty(url, f"{home}-submit"):
        time.sleep(0.05)
    rates.append(runs / (time.perf_counter() - start))
    for p in procs: p.terminate()
    for p in procs: p.wait()
    proc.terminate(); proc.wait()

# Latency: one idle worker; a request at a time, from submit's instant to job.started's.
proc, url = server()
worker = subprocess.Popen([lorch, "worker"], env=dict(os.environ, LORCH_HOME=f"{work}/lat", LORCH_NATS_URL=url),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
latencies = []
for n in range(50):
    out = json.loads(lorch_run(["submit", "bench/noop", "--json"], f"{work}/lat-submit", url).stdout)
    request, submitted = out["request_id"], out["submitted_at"]
    while True:
        events = json.loads(lorch_run(["events", "list", "--json", "--limit", "1000000"], f"{work}/lat").stdout)["events"]
        started = [e for e in events if e["event_type"] == "job.started" and e["trace_id"] == request]
        if started: break
        time.sleep(0.01)
    from datetime import datetime
    parse = lambda t: datetime.fromisoformat(t.replace("Z", "+00:00"))
    latencies.append((parse(started[0]["created_at"]) - parse(submitted)).total_seconds() * 1000)
worker.terminate(); worker.wait(); proc.terminate(); proc.wait()
latencies.sort()
p50 = statistics.median(latencies); p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
print("%.1f %.1f %.1f %.1f %.0f %.0f" % (loop, *rates, p50, p99))
PY
)
echo "run-job loop: $loop runs/s; workers 1/2/4: $w1 / $w2 / $w4 runs/s; submit -> job.started p50 $p50 ms, p99 $p99 ms"
ratio() { python3 -c "print('%.2f' % (float('$1') / float('$loop')))"; }

python3 "$repo/benches/section.py" "$repo/docs/performance.md" "<!-- benches/fleet.sh -->" <<MD
## Fleet (issue 17)

\`bash benches/fleet.sh\`, release build, $(date -u +%Y-%m-%d), on this 2-core machine with its
own nats-server (JetStream, file storage): ${RUNS:-200} no-op runs (benches/noop.c), each for an
account of its own so no lock is shared; each worker a machine of its own (its own
\`LORCH_HOME\`), concurrency 1, all on this machine.

| how | runs per second | ratio to the local loop |
|---|---|---|
| a local loop of \`lorch run-job\` | $loop | 1.00 |
| 1 worker | $w1 | $(ratio "$w1") |
| 2 workers | $w2 | $(ratio "$w2") |
| 4 workers | $w4 | $(ratio "$w4") |

From \`lorch submit\` to the run's \`job.started\` with one idle worker (50 requests, one at a
time): p50 $p50 ms, p99 $p99 ms. A worker runs each request as a \`lorch run-job\` process of its
own (about the local loop's cost), plus fetching, acknowledging and publishing the run's events,
so one worker does 0.7 of the loop; two workers use both cores, and more add little here.
MD
echo "== wrote docs/performance.md (fleet)"
