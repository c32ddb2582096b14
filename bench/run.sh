#!/usr/bin/env bash
# nexusd benchmarks. Prints the machine, runs each scenario, and writes
# bench/results/latest.md, latest.json and latency.svg. A benchmark, not a
# test: it never fails for being slow. QUICK=1 (`make bench-quick`, under a
# minute) runs fewer repetitions and writes bench/results/quick.*.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-./target/dist/nexusd}
WORK=bench/work
RUNS=${QUICK:+3}
RUNS=${RUNS:-30}
WARMUP=${QUICK:+1}
WARMUP=${WARMUP:-3}
mkdir -p "$WORK" bench/results
# The committed results come from full runs; a quick run's stay local
# (bench/results/quick.*, ignored by git).
if [ -n "${QUICK:-}" ]; then
  OUT=bench/results/quick CHART=bench/results/quick-latency.svg
else
  OUT=bench/results/latest CHART=bench/results/latency.svg
fi
# Seconds each scenario took, on stderr: where a `make bench` spends its time.
stamp() { echo "bench: $1 done at ${SECONDS}s" >&2; }

need() {
  if ! command -v "$1" >/dev/null; then
    echo "bench: installing $2 (Debian package) for $1"
    (apt-get install -y "$2" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y "$2" >/dev/null; })
  fi
}
need hyperfine hyperfine
need inotifywait inotify-tools
need psql postgresql-client
need mkfs.ext4 e2fsprogs

# The peer: watchexec from crates.io, built once into a cache outside the
# repository.
WATCHEXEC_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/nexusd-bench/watchexec
WATCHEXEC=$WATCHEXEC_ROOT/bin/watchexec
if [ ! -x "$WATCHEXEC" ]; then
  echo "bench: installing watchexec-cli from crates.io into $WATCHEXEC_ROOT (once; a few minutes)"
  cargo install --quiet --locked watchexec-cli --root "$WATCHEXEC_ROOT" || WATCHEXEC=
fi

PG_URL=${NEXUS_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
pg_setting() { psql -qtA "$PG_URL" -c "SHOW $1" 2>/dev/null || echo "?"; }

machine() {
  echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
  echo "- Kernel: $(uname -r)"
  echo "- Memory: $(free -h | awk '/Mem:/ {print $2}')"
  echo "- Disk: $(df -h "$WORK" 2>/dev/null | awk 'NR==2 {print $1" "$2}') ($(df -T "$WORK" | awk 'NR==2 {print $2}'))"
  echo "- PostgreSQL: $(psql -qtA "$PG_URL" -c 'SHOW server_version' 2>/dev/null || echo 'not reachable'), local socket over TCP; fsync $(pg_setting fsync), synchronous_commit $(pg_setting synchronous_commit), shared_buffers $(pg_setting shared_buffers), wal_level $(pg_setting wal_level)"
  echo "- Peer: $([ -n "$WATCHEXEC" ] && "$WATCHEXEC" --version | head -1 || echo 'watchexec not installed')"
  echo "- Date: $(date -u +%Y-%m-%dT%H:%MZ)"
}

# Scenario 7a: validate 1,000 workflows in 100 files.
gen_definitions() {
  local dir=$1
  rm -rf "$dir" && mkdir -p "$dir"
  for f in $(seq 1 100); do
    for w in $(seq 1 10); do
      cat <<YAML
---
apiVersion: nexus/v1
kind: Workflow
metadata:
  name: wf-$f-$w
  description: generated workflow $f/$w
spec:
  on:
    - event: [file.created, file.updated]
      pattern: /bench/$f/$w/*.txt
      ignore: ["**/*_out.txt"]
  retry: {max_attempts: 3, backoff: 1s, multiplier: 2}
  steps:
    - name: words
      run: wc -w < {{event.abs_path}}
    - name: out
      action: file.write
      with:
        path: "{{event.dir}}/{{event.stem}}_out.txt"
        content: "{{event.path}} has {{steps.words.stdout}} words"
    - name: notify
      if: "{{gt steps.words.stdout 10}}"
      webhook:
        url: http://127.0.0.1:9/hook/{{event.name}}
        body: {file: "{{event.path}}", words: "{{steps.words.stdout}}"}
YAML
    done > "$dir/file-$f.yaml"
  done
}

gen_definitions "$WORK/defs"
"$BIN" validate -f "$WORK/defs" 2>/dev/null >/dev/null || { echo "bench: generated definitions are invalid"; "$BIN" validate -f "$WORK/defs"; exit 1; }

hyperfine --style basic --warmup "$WARMUP" --runs "$RUNS" --export-json "$WORK/validate.json" \
  "$BIN validate -f $WORK/defs" >/dev/null

read -r median mean stddev < <(python3 - "$WORK/validate.json" <<'PY'
import json, statistics, sys
r = json.load(open(sys.argv[1]))["results"][0]
print(f'{statistics.median(r["times"]):.4f} {r["mean"]:.4f} {r["stddev"]:.4f}')
PY
)
meets=$(python3 -c "print('yes' if $median <= 0.3 else 'no')")

stamp validate
PG_UP=
if psql -qtA "$PG_URL" -c 'SELECT 1' >/dev/null 2>&1; then
  PG_UP=1
else
  echo "bench: PostgreSQL at $PG_URL is not reachable; its scenarios are not measured"
fi

# Scenario 1 and 4a: latency from close to a built-in step's result, nexusd
# on SQLite and on PostgreSQL, against the inotifywait + cp floor and
# watchexec (defaults, and --debounce 1ms), alternating rounds; idle RSS.
LAT_FILES=${QUICK:+50}
LAT_FILES=${LAT_FILES:-1000}
LAT_ROUNDS=${QUICK:+1}
LAT_ROUNDS=${LAT_ROUNDS:-4}
python3 bench/latency.py "$BIN" "$PWD/$WORK" "$LAT_FILES" "$LAT_ROUNDS" "${PG_UP:+$PG_URL}" "$WATCHEXEC" > "$WORK/latency.json"
python3 bench/chart.py "$WORK/latency.json" "$CHART"

stamp latency

# Scenario 2 and 4c: a burst of files, one built-in step each, until every
# run is recorded succeeded, SQLite and PostgreSQL alternating round by
# round, each on a new filesystem; peak RSS meanwhile. Scenario 14: the
# same burst with three agents on the one data dir and PostgreSQL, in the
# same rounds.
TP_FILES=${QUICK:+2000}
TP_FILES=${TP_FILES:-10000}
TP_ROUNDS=${QUICK:+1}
TP_ROUNDS=${TP_ROUNDS:-3}
: > "$WORK/throughput.jsonl"
: > "$WORK/throughput-pg.jsonl"
: > "$WORK/throughput-pg3.jsonl"
for _ in $(seq "$TP_ROUNDS"); do
  python3 bench/throughput.py "$BIN" "$PWD/$WORK" "$TP_FILES" >> "$WORK/throughput.jsonl"
  if [ -n "$PG_UP" ]; then
    python3 bench/throughput.py "$BIN" "$PWD/$WORK" "$TP_FILES" "$PG_URL" >> "$WORK/throughput-pg.jsonl"
    python3 bench/throughput.py "$BIN" "$PWD/$WORK" "$TP_FILES" "$PG_URL" 3 >> "$WORK/throughput-pg3.jsonl"
  fi
done
median_round() {
  python3 - "$1" <<'PY'
import json, statistics, sys
rounds = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
if not rounds:
    print(json.dumps({"runs_per_s": 0, "files": 0, "total_s": 0, "peak_rss_kib": 0, "skipped": True}))
    raise SystemExit
by = sorted(rounds, key=lambda r: r["runs_per_s"])
mid = by[len(by) // 2]
mid["rounds"] = len(rounds)
mid["all_runs_per_s"] = [r["runs_per_s"] for r in rounds]
print(json.dumps(mid))
PY
}
median_round "$WORK/throughput.jsonl" > "$WORK/throughput.json"
median_round "$WORK/throughput-pg.jsonl" > "$WORK/throughput-pg.json"
median_round "$WORK/throughput-pg3.jsonl" > "$WORK/throughput-pg3.json"

stamp throughput

# Scenario 3: 5,000 runs of `run: 'true'` against xargs -P2 sh -c true,
# alternating.
SH_FILES=${QUICK:+1000}
SH_FILES=${SH_FILES:-5000}
SH_ROUNDS=${QUICK:+1}
SH_ROUNDS=${SH_ROUNDS:-3}
python3 bench/shell.py "$BIN" "$PWD/$WORK" "$SH_FILES" "$SH_ROUNDS" > "$WORK/shell.json"

stamp shell

# Criterion's report as {"median_ns": {benchmark: ns}}, for the benchmarks
# whose names start with one of $1's prefixes (separated by `|`).
criterion_medians() {
  python3 -c '
import json, re, sys
out, name = {}, None
prefixes = tuple(sys.argv[1].split("|"))
for line in sys.stdin:
    if line.startswith(prefixes):
        name = line.strip()
    m = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line)
    if m and name:
        value, unit = float(m.group(1)), m.group(2)
        out[name] = value * {"ps": 1e-3, "ns": 1, "µs": 1e3, "us": 1e3, "ms": 1e6}[unit]
        name = None
print(json.dumps({"median_ns": out}))' "$1"
}
CRITERION_QUICK=${QUICK:+--warm-up-time 0.5 --measurement-time 1}

# Scenario 6: matching one event against 1,000 workflows (criterion).
cargo bench --quiet --bench matching -- $CRITERION_QUICK 2>/dev/null \
  | criterion_medians "one event" > "$WORK/matching.json"

stamp matching

# Scenario 7: a node's claims while another node of its data dir holds
# 100,000 unfinished runs over 1,000,000 finished ones (criterion; SQLite,
# and PostgreSQL in a database of its own on the server at $PG_URL).
NEXUS_BENCH_QUICK=${QUICK:-} NEXUS_BENCH_DATABASE_URL=$PG_URL cargo bench --quiet --bench claims -- $CRITERION_QUICK 2>/dev/null \
  | criterion_medians "claim|release" > "$WORK/claims.json"

stamp claims

# Scenarios 4b and 5: 100,000 files in 10,000 directories: RSS while
# watching them, a restart with them unchanged, 1,000 changed while stopped.
SC_DIRS=${QUICK:+300}
SC_DIRS=${SC_DIRS:-10000}
python3 bench/scale.py "$BIN" "$PWD/$WORK" "$SC_DIRS" 10 1000 > "$WORK/scale.json"

stamp scale

# Scenario 7b and the API read: apply the 1,000 definitions over HTTP with
# `nexusd apply -f`; `workflows history --limit 100` reads with 100,000 runs.
API_ROUNDS=${QUICK:+2}
API_ROUNDS=${API_ROUNDS:-6}
API_HISTORY=${QUICK:+10000}
API_HISTORY=${API_HISTORY:-100000}
python3 bench/api.py "$BIN" "$PWD/$WORK" "$PWD/$WORK/defs" "$API_ROUNDS" "$API_HISTORY" > "$WORK/api.json"

stamp api

# Scenario 13: kill -9 with 100,000 unfinished runs, then a start: seconds
# until all are recorded succeeded, and peak RSS, on SQLite and PostgreSQL.
RC_RUNS=${QUICK:+5000}
RC_RUNS=${RC_RUNS:-100000}
python3 bench/recovery.py "$BIN" "$PWD/$WORK" "$RC_RUNS" > "$WORK/recovery.json"
if [ -n "$PG_UP" ]; then
  python3 bench/recovery.py "$BIN" "$PWD/$WORK" "$RC_RUNS" "$PG_URL" > "$WORK/recovery-pg.json"
else
  echo '{"skipped": true}' > "$WORK/recovery-pg.json"
fi

stamp recovery

# Scenario 15: a backfill of 100,000 files already there (indexed while no
# workflow took them) through one built-in step: seconds from the request
# until all are recorded succeeded, runs/s, peak RSS; SQLite and PostgreSQL.
BF_FILES=${QUICK:+5000}
BF_FILES=${BF_FILES:-100000}
python3 bench/backfill.py "$BIN" "$PWD/$WORK" "$BF_FILES" > "$WORK/backfill.json"
if [ -n "$PG_UP" ]; then
  python3 bench/backfill.py "$BIN" "$PWD/$WORK" "$BF_FILES" "$PG_URL" > "$WORK/backfill-pg.json"
else
  echo '{"skipped": true}' > "$WORK/backfill-pg.json"
fi

stamp backfill

{
  echo "# nexusd benchmark results"
  echo
  machine
  echo
  echo "Command: \`make bench\` (\`bench/run.sh\`, binary \`target/dist/nexusd\`), $RUNS runs of the validate scenario, $LAT_FILES files per system in $LAT_ROUNDS alternating rounds for latency, $TP_ROUNDS alternating rounds of each throughput backend; the scenarios that write files do so on an ext4 filesystem made for them (a loop-mounted image), so none pays for the files another deleted."
  echo
  echo "| scenario | nexusd median | mean ± stddev | target | meets |"
  echo "|---|---|---|---|---|"
  echo "| validate 1,000 workflows in 100 files | ${median} s | ${mean} ± ${stddev} s | ≤ 0.3 s | $meets |"
  python3 - "$WORK/latency.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
n, f = d["nexusd"], d["floor"]
ratio = n["p50_ms"] / f["p50_ms"] if f["p50_ms"] else float("inf")
rss = d["idle_rss_kib"] / 1024
yes = lambda ok: "yes" if ok else "no"
print(f"| latency close → copy done, p50 ({n['n']} files) | {n['p50_ms']} ms | floor (inotifywait + cp) {f['p50_ms']} ms, ratio {ratio:.2f} | ≤ 2× floor | {yes(ratio <= 2)} |")
print(f"| latency close → copy done, p99 | {n['p99_ms']} ms | floor {f['p99_ms']} ms | ≤ 10 ms | {yes(n['p99_ms'] <= 10)} |")
pg = d.get("nexusd-postgres")
if pg:
    print(f"| latency close → copy done on PostgreSQL, p50 | {pg['p50_ms']} ms | p99 {pg['p99_ms']} ms | ≤ 5 ms | {yes(pg['p50_ms'] <= 5)} |")
else:
    print("| latency on PostgreSQL | not measured: no server | | ≤ 5 ms | |")
w, w1 = d.get("watchexec"), d.get("watchexec-debounce-1ms")
if w:
    faster = w["p50_ms"] / n["p50_ms"]
    print(f"| latency vs watchexec at its defaults (same `cp`), p50 | {n['p50_ms']} ms | watchexec {w['p50_ms']} ms (p99 {w['p99_ms']} ms): nexusd {faster:.1f}× faster | ≥ 10× faster | {yes(faster >= 10)} |")
if w1:
    print(f"| latency vs watchexec `--debounce 1ms`, p50 | {n['p50_ms']} ms | watchexec {w1['p50_ms']} ms (p99 {w1['p99_ms']} ms), ratio {w1['p50_ms'] / n['p50_ms']:.1f} | | |")
if not w:
    print("| latency vs watchexec | not measured: watchexec could not be installed | | ≥ 10× faster | |")
print(f"| idle RSS, examples loaded | {rss:.1f} MB | | ≤ 15 MB | {yes(rss <= 15)} |")
PY
  python3 - "$WORK/throughput.json" "$WORK/throughput-pg.json" <<'PY'
import json, sys
for path, name, target in ((sys.argv[1], "SQLite", 5000), (sys.argv[2], "PostgreSQL", 3000)):
    t = json.load(open(path))
    if t.get("skipped"):
        print(f"| throughput ({name}) | not measured: no server | | ≥ {target:,} runs/s | |")
        continue
    ok = "yes" if t["runs_per_s"] >= target else f"no ({t['runs_per_s'] / target:.0%} of it)"
    rounds = ", ".join(f"{r:,.0f}" for r in t["all_runs_per_s"])
    print(f"| throughput, {t['files']:,} files, one built-in step each ({name}), median of {t['rounds']} | {t['runs_per_s']} runs/s | all recorded in {t['total_s']} s; files written in {t['write_s']} s; rounds {rounds} runs/s | ≥ {target:,} runs/s | {ok} |")
    print(f"| nexusd's CPU time per run in that burst ({name}) | {t['cpu_us_per_run']} µs | | | |")
    print(f"| peak RSS during that burst ({name}) | {t['peak_rss_kib'] / 1024:.1f} MB | | | |")
PY
  python3 - "$WORK/throughput-pg.json" "$WORK/throughput-pg3.json" <<'PY'
import json, sys
one, three = (json.load(open(p)) for p in sys.argv[1:3])
if one.get("skipped") or three.get("skipped"):
    print("| three agents on one data dir (PostgreSQL) | not measured: no server | | ≥ 0.9× one agent | |")
else:
    ratio = three["runs_per_s"] / one["runs_per_s"]
    ok = "yes" if ratio >= 0.9 else f"no ({ratio / 0.9:.0%} of it)"
    rounds = ", ".join(f"{r:,.0f}" for r in three["all_runs_per_s"])
    spread = "/".join(str(n) for n in three.get("attempts_per_node", []))
    print(f"| throughput, same burst, three agents on one data dir and one PostgreSQL, median of {three['rounds']} | {three['runs_per_s']} runs/s | one agent {one['runs_per_s']} runs/s, ratio {ratio:.2f}; rounds {rounds} runs/s; attempts per node {spread}; CPU {three['cpu_us_per_run']} µs per run, all three | ≥ 0.9× one agent | {ok} |")
PY
  python3 - "$WORK/matching.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["median_ns"]
for name, ns in m.items():
    ok = "yes" if ns <= 2000 else "no"
    print(f"| matching: {name} (criterion) | {ns:.0f} ns | | ≤ 2 µs | {ok} |")
PY
  python3 - "$WORK/claims.json" <<'PY'
import json, sys
for name, ns in json.load(open(sys.argv[1]))["median_ns"].items():
    print(f"| {name} (criterion) | {ns / 1e6:.2f} ms | over ten times as many finished runs | | |")
PY
  python3 - "$WORK/scale.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
rss = c["watching_rss_kib"] / 1024
yes = lambda ok: "yes" if ok else "no"
print(f"| RSS watching {c['files']:,} files in {c['dirs']:,} directories, idle | {rss:.1f} MB | | ≤ 60 MB | {yes(rss <= 60)} |")
print(f"| start with {c['files']:,} indexed files unchanged, to ready | {c['restart_unchanged_s']} s | first start (indexing them all) {c['first_start_s']} s | ≤ 1 s | {yes(c['restart_unchanged_s'] <= 1)} |")
print(f"| start with {c['changed']:,} of them changed while stopped, to all runs recorded | {c['catch_up_changed_s']} s | | | |")
PY
  python3 - "$WORK/shell.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
ok = "yes" if s["ratio"] >= 0.8 else f"no ({s['ratio'] / 0.8:.0%} of it)"
print(f"| shell steps, {s['files']:,} runs of `run: 'true'`, median of {s['rounds']} | {s['nexusd_runs_per_s']} runs/s ({s['nexusd_s']} s) | `xargs -P2 sh -c true`: {s['xargs_per_s']}/s ({s['xargs_s']} s), ratio {s['ratio']} | ≥ 0.8× xargs | {ok} |")
PY
  python3 - "$WORK/api.json" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))
yes = lambda ok, got, target: "yes" if ok else f"no ({got / target:.1f}× the target)"
print(f"| apply 1,000 workflows over HTTP (`nexusd apply -f`, all changed), median of {a['apply_rounds']} | {a['apply_median_s']} s | first apply (all created) {a['apply_first_s']} s | ≤ 0.5 s | {yes(a['apply_median_s'] <= 0.5, a['apply_median_s'], 0.5)} |")
print(f"| API read `workflows history --limit 100`, {a['history_runs']:,} runs recorded, p99 of {a['history_requests']} | {a['history_p99_ms']} ms | p50 {a['history_p50_ms']} ms | ≤ 20 ms | {yes(a['history_p99_ms'] <= 20, a['history_p99_ms'], 20)} |")
PY
  python3 - "$WORK/recovery.json" "$WORK/recovery-pg.json" <<'PY'
import json, sys
for path, name, target in ((sys.argv[1], "SQLite", 30), (sys.argv[2], "PostgreSQL", 60)):
    r = json.load(open(path))
    if r.get("skipped"):
        print(f"| recovery after kill -9 ({name}) | not measured: no server | | ≤ {target} s | |")
        continue
    rss = r["peak_rss_kib"] / 1024
    ok = "yes" if r["recovery_s"] <= target and rss <= 100 else "no"
    print(f"| kill -9 with {r['runs']:,} unfinished runs, start to all recorded succeeded ({name}) | {r['recovery_s']} s | {r['runs_per_s']:,.0f} runs/s; peak RSS {rss:.1f} MB; runs run twice: {r['succeeded_twice']} | ≤ {target} s, ≤ 100 MB | {ok} |")
PY
  python3 - "$WORK/backfill.json" "$WORK/backfill-pg.json" <<'PY'
import json, sys
for path, name in ((sys.argv[1], "SQLite"), (sys.argv[2], "PostgreSQL")):
    r = json.load(open(path))
    if r.get("skipped"):
        print(f"| backfill ({name}) | not measured: no server | | | |")
        continue
    rss, before = r["peak_rss_kib"] / 1024, r["rss_before_kib"] / 1024
    print(f"| backfill of {r['files']:,} existing files, one built-in step, request to all recorded succeeded ({name}) | {r['runs_per_s']:,.0f} runs/s | {r['backfill_s']} s; RSS {before:.1f} MB before, at most {rss:.1f} MB meanwhile; runs {r['runs']:,} | | |")
PY
} > "$OUT.md"

python3 - "$median" "$mean" "$stddev" "$meets" "$WORK/latency.json" "$WORK/throughput.json" "$WORK/api.json" "$WORK/throughput-pg.json" "$WORK/shell.json" "$WORK/scale.json" "$WORK/matching.json" "$WORK/claims.json" "$WORK/backfill.json" "$WORK/backfill-pg.json" > "$OUT.json" <<'PY'
import json, sys
median, mean, stddev, meets, lat, tp, api, tp_pg, sh, sc, mt, cl, bf, bf_pg = sys.argv[1:]
d = json.load(open(lat))
for v in d.values():
    if isinstance(v, dict):
        v.pop("samples_ms", None)
print(json.dumps({"scenarios": [
  {"name": "validate_1000_workflows_100_files", "median_s": float(median), "mean_s": float(mean),
   "stddev_s": float(stddev), "target_s": 0.3, "meets": meets == "yes"},
  {"name": "latency_close_to_copy", **{k: v for k, v in d.items() if isinstance(v, dict)}},
  {"name": "idle_rss", "kib": d["idle_rss_kib"], "target_kib": 15 * 1024},
  {"name": "throughput_sqlite", **json.load(open(tp)), "target_runs_per_s": 5000},
  {"name": "throughput_postgres", **json.load(open(tp_pg)), "target_runs_per_s": 3000},
  {"name": "throughput_postgres_three_agents_one_data_dir", **json.load(open(tp_pg.replace("-pg.json", "-pg3.json"))), "target_ratio": 0.9},
  {"name": "shell_true_vs_xargs", **json.load(open(sh)), "target_ratio": 0.8},
  {"name": "scale_100k_files", **json.load(open(sc)), "rss_target_kib": 60 * 1024, "restart_target_s": 1.0},
  {"name": "matching_1000_workflows", **json.load(open(mt)), "target_ns": 2000},
  {"name": "claims_100k_held_elsewhere", **json.load(open(cl))},
  {"name": "api_apply_and_history", **json.load(open(api)), "apply_target_s": 0.5, "history_p99_target_ms": 20},
  {"name": "backfill_sqlite", **json.load(open(bf))},
  {"name": "backfill_postgres", **json.load(open(bf_pg))},
]}, indent=2))
PY


cat "$OUT.md"
